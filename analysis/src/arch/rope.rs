//! Rotary position embeddings: the frequencies each family asks for (plain, linear, Llama 3,
//! LongRoPE; local and global bases), computed in f32 exactly as transformers computes them, and
//! the cos/sin tables both backends use.

use std::path::Path;

use serde::Serialize;

use super::{ArchSpec, GgufConfig, HfConfig, RopePairing};
use crate::error::{PrismError, Result};

/// LongRoPE's second set of frequencies, used once a sequence is longer than `after` tokens.
#[derive(Debug, Clone, Serialize)]
pub struct LongRope {
    pub after: usize,
    pub inv_freq: Vec<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rope {
    /// Dims of each head that rotate (the first `dims`; fewer than head_dim for partial RoPE).
    pub dims: usize,
    pub pairing: RopePairing,
    pub theta: f64,
    /// One frequency per rotated pair (`dims / 2`), scaling applied.
    pub inv_freq: Vec<f32>,
    /// Sliding-window layers with a base of their own (Gemma 3).
    pub theta_local: Option<f64>,
    pub inv_freq_local: Option<Vec<f32>>,
    /// cos and sin are multiplied by this (LongRoPE's attention factor; 1 otherwise).
    pub attention_factor: f32,
    pub long: Option<LongRope>,
    /// The scaling, as a reader would name it ("llama3 (factor 8)").
    pub scaling: String,
}

/// RoPE scaling as an HF config states it.
#[derive(Debug, Clone)]
pub enum RopeScaling {
    None,
    Linear(f64),
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original: f64,
    },
    LongRope {
        short: Vec<f64>,
        long: Vec<f64>,
        original: usize,
        attention_factor: Option<f64>,
    },
    /// YaRN (Peng et al. 2023, <https://arxiv.org/abs/2309.00071>), as transformers'
    /// `_compute_yarn_parameters` computes it.
    Yarn(Yarn),
}

/// YaRN's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Yarn {
    pub factor: f64,
    pub original: f64,
    pub beta_fast: f64,
    pub beta_slow: f64,
    /// The cos/sin scale; by default `0.1 ln(factor) + 1` (or the mscale ratio).
    pub attention_factor: Option<f64>,
    pub mscale: Option<f64>,
    pub mscale_all_dim: Option<f64>,
    /// Round the correction range outwards to whole dimensions (transformers' default).
    pub truncate: bool,
}

impl Yarn {
    /// YaRN's `mscale`: `0.1 * m * ln(s) + 1`, 1 for s <= 1.
    fn get_mscale(s: f64, m: f64) -> f64 {
        if s <= 1.0 {
            1.0
        } else {
            0.1 * m * s.ln() + 1.0
        }
    }

    pub fn attention(&self) -> f64 {
        match (self.attention_factor, self.mscale, self.mscale_all_dim) {
            (Some(a), _, _) => a,
            (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                Self::get_mscale(self.factor, m) / Self::get_mscale(self.factor, all)
            }
            _ => Self::get_mscale(self.factor, 1.0),
        }
    }

    /// The frequencies: interpolated (divided by the factor) below the correction range,
    /// extrapolated (unchanged) above it, a linear ramp between; in torch's f32 order.
    pub fn inv_freq(&self, theta: f64, dims: usize) -> Vec<f32> {
        let d = dims as f64;
        let corr = |rot: f64| {
            (d * (self.original / (rot * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * theta.ln())
        };
        let (mut low, mut high) = (corr(self.beta_fast), corr(self.beta_slow));
        if self.truncate {
            low = low.floor();
            high = high.ceil();
        }
        let (low, mut high) = (low.max(0.0), high.min(d - 1.0));
        if low == high {
            high += 0.001;
        }
        let factor = self.factor as f32;
        let denom = (high - low) as f32;
        (0..dims / 2)
            .map(|i| {
                let pos = (theta as f32).powf((2 * i) as f32 / dims as f32);
                let extrapolation = 1.0f32 / pos;
                let interpolation = 1.0f32 / (factor * pos);
                let ramp = ((i as f32 - low as f32) / denom).clamp(0.0, 1.0);
                let extra = 1.0 - ramp;
                interpolation * (1.0 - extra) + extrapolation * extra
            })
            .collect()
    }

    /// Why these numbers cannot be used, naming where they came from.
    pub fn problem(&self, from: &str) -> Option<String> {
        let checks = [
            ("factor", Some(self.factor)),
            ("original_max_position_embeddings", Some(self.original)),
            ("beta_fast", Some(self.beta_fast)),
            ("beta_slow", Some(self.beta_slow)),
            ("attention_factor", self.attention_factor),
        ];
        for (name, v) in checks {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0 && *v < 1e9)) {
                return Some(format!("{from}: YaRN {name} {v} is out of range"));
            }
        }
        None
    }
}

/// `1 / theta^(2i/d)` for i < d/2, in f32 as torch computes it.
pub fn plain_inv_freq(theta: f64, dims: usize) -> Vec<f32> {
    let d = dims as f32;
    (0..dims / 2)
        .map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / d))
        .collect()
}

fn f(v: Option<&serde_json::Value>) -> Option<f64> {
    v.and_then(|v| v.as_f64())
}

pub(super) fn scaling_from_hf(
    params: Option<&serde_json::Value>,
    cfg: &HfConfig<'_>,
) -> Result<RopeScaling> {
    let Some(p) = params else {
        return Ok(RopeScaling::None);
    };
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let factor = f(p.get("factor"));
    let need = |name: &str, v: Option<f64>| -> Result<f64> {
        match v {
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            Some(x) => Err(cfg.err(format!("RoPE scaling {kind:?}: {name} {x} is out of range"))),
            None => Err(cfg.err(format!("RoPE scaling {kind:?} has no {name}"))),
        }
    };
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear(need("factor", factor)?),
        "llama3" => {
            let s = RopeScaling::Llama3 {
                factor: need("factor", factor)?,
                low_freq_factor: need("low_freq_factor", f(p.get("low_freq_factor")))?,
                high_freq_factor: need("high_freq_factor", f(p.get("high_freq_factor")))?,
                original: need(
                    "original_max_position_embeddings",
                    f(p.get("original_max_position_embeddings")),
                )?,
            };
            if let RopeScaling::Llama3 {
                low_freq_factor,
                high_freq_factor,
                ..
            } = s
            {
                if high_freq_factor <= low_freq_factor {
                    return Err(cfg.err(format!(
                        "RoPE scaling llama3: high_freq_factor {high_freq_factor} must exceed low_freq_factor {low_freq_factor}"
                    )));
                }
            }
            s
        }
        "yarn" => {
            let original = f(p.get("original_max_position_embeddings"))
                .or_else(|| f(cfg.get("original_max_position_embeddings")))
                .ok_or_else(|| cfg.err("RoPE scaling yarn has no original_max_position_embeddings"))?;
            let factor = match factor {
                Some(x) => x,
                None => {
                    let max = f(cfg.get("max_position_embeddings")).ok_or_else(|| {
                        cfg.err("RoPE scaling yarn has neither factor nor max_position_embeddings")
                    })?;
                    max / original
                }
            };
            let positive = |name: &str| f(p.get(name)).filter(|&x| x != 0.0);
            let y = Yarn {
                factor,
                original,
                beta_fast: positive("beta_fast").unwrap_or(32.0),
                beta_slow: positive("beta_slow").unwrap_or(1.0),
                attention_factor: f(p.get("attention_factor")),
                mscale: f(p.get("mscale")),
                mscale_all_dim: f(p.get("mscale_all_dim")),
                truncate: p.get("truncate").and_then(|v| v.as_bool()).unwrap_or(true),
            };
            if let Some(e) = y.problem("config.json rope_scaling") {
                return Err(cfg.err(e));
            }
            RopeScaling::Yarn(y)
        }
        "longrope" | "su" => {
            let list = |name: &str| -> Result<Vec<f64>> {
                p.get(name)
                    .and_then(|v| v.as_array())
                    .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                    .ok_or_else(|| cfg.err(format!("RoPE scaling longrope has no {name}")))
            };
            let original = cfg
                .get("original_max_position_embeddings")
                .or_else(|| p.get("original_max_position_embeddings"))
                .and_then(|v| v.as_u64())
                .ok_or_else(|| {
                    cfg.err("RoPE scaling longrope needs original_max_position_embeddings")
                })? as usize;
            RopeScaling::LongRope {
                short: list("short_factor")?,
                long: list("long_factor")?,
                original,
                attention_factor: f(p.get("attention_factor")),
            }
        }
        other => {
            return Err(cfg.err(format!(
                "RoPE scaling {other:?} is not supported (Prism implements default, linear, llama3, longrope and yarn); refusing rather than computing other positions"
            )))
        }
    })
}

/// transformers' Llama 3 frequency adjustment, in its f32 operation order.
fn llama3(
    inv: &[f32],
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    original: f64,
) -> Vec<f32> {
    let factor = factor as f32;
    let low_wavelen = (original / low_freq_factor) as f32;
    let high_wavelen = (original / high_freq_factor) as f32;
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    inv.iter()
        .map(|&f| {
            let wavelen = two_pi / f;
            let scaled = if wavelen > low_wavelen { f / factor } else { f };
            let smooth = ((original as f32) / wavelen - low_freq_factor as f32)
                / (high_freq_factor - low_freq_factor) as f32;
            let smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
            let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
            if medium {
                smoothed
            } else {
                scaled
            }
        })
        .collect()
}

/// `1 / (factor_i * theta^(2i/d))`, LongRoPE's frequencies in torch's f32 order.
fn with_factors(theta: f64, dims: usize, factors: &[f32]) -> Vec<f32> {
    let d = dims as f32;
    (0..dims / 2)
        .map(|i| 1.0f32 / (factors[i] * (theta as f32).powf((2 * i) as f32 / d)))
        .collect()
}

impl Rope {
    /// RoPE over `dims` dims with base `theta` and an HF scaling.
    pub fn from_hf(
        theta: f64,
        dims: usize,
        pairing: RopePairing,
        scaling: &RopeScaling,
        max_positions: usize,
        cfg: &HfConfig<'_>,
    ) -> Result<Rope> {
        let plain = plain_inv_freq(theta, dims);
        let mut rope = Rope {
            dims,
            pairing,
            theta,
            inv_freq: plain.clone(),
            theta_local: None,
            inv_freq_local: None,
            attention_factor: 1.0,
            long: None,
            scaling: "none".into(),
        };
        match scaling {
            RopeScaling::None => {}
            RopeScaling::Linear(factor) => {
                rope.inv_freq = plain.iter().map(|&x| x / *factor as f32).collect();
                rope.scaling = format!("linear (factor {factor})");
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original,
            } => {
                rope.inv_freq = llama3(
                    &plain,
                    *factor,
                    *low_freq_factor,
                    *high_freq_factor,
                    *original,
                );
                rope.scaling = format!("llama3 (factor {factor}, original context {original})");
            }
            RopeScaling::Yarn(y) => {
                rope.inv_freq = y.inv_freq(theta, dims);
                rope.attention_factor = y.attention() as f32;
                rope.scaling = format!(
                    "yarn (factor {}, original context {}, attention factor {:.4})",
                    y.factor,
                    y.original,
                    y.attention()
                );
            }
            RopeScaling::LongRope {
                short,
                long,
                original,
                attention_factor,
            } => {
                if short.len() != dims / 2 || long.len() != dims / 2 {
                    return Err(cfg.err(format!(
                        "RoPE scaling longrope: {} short and {} long factors for {} frequencies",
                        short.len(),
                        long.len(),
                        dims / 2
                    )));
                }
                let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
                let factor = max_positions as f64 / *original as f64;
                let attention = attention_factor.unwrap_or(if factor <= 1.0 {
                    1.0
                } else {
                    (1.0 + factor.ln() / (*original as f64).ln()).sqrt()
                });
                rope.inv_freq = with_factors(theta, dims, &to32(short));
                rope.long = Some(LongRope {
                    after: *original,
                    inv_freq: with_factors(theta, dims, &to32(long)),
                });
                rope.attention_factor = attention as f32;
                rope.scaling = format!(
                    "longrope (original context {original}, attention factor {attention:.4})"
                );
            }
        }
        Ok(rope)
    }

    /// The frequencies for a layer, given how long the sequence is.
    pub fn frequencies(&self, local: bool, total_len: usize) -> &[f32] {
        if local {
            if let Some(l) = &self.inv_freq_local {
                return l;
            }
        }
        match &self.long {
            Some(l) if total_len > l.after => &l.inv_freq,
            _ => &self.inv_freq,
        }
    }

    /// The dims a layer's rotation covers (the local table may be shorter: Gemma 4's sliding
    /// layers have smaller heads).
    pub fn dims_for(&self, local: bool) -> usize {
        match (&self.inv_freq_local, local) {
            (Some(l), true) => 2 * l.len(),
            _ => self.dims,
        }
    }

    /// cos and sin tables `[positions][dims / 2]`, in f32 as transformers computes them.
    pub fn tables(&self, positions: &[u32], local: bool, total_len: usize) -> (Vec<f32>, Vec<f32>) {
        let freqs = self.frequencies(local, total_len);
        let mut cos = Vec::with_capacity(positions.len() * freqs.len());
        let mut sin = Vec::with_capacity(positions.len() * freqs.len());
        for &p in positions {
            for &f in freqs {
                let angle = p as f32 * f;
                cos.push(angle.cos() * self.attention_factor);
                sin.push(angle.sin() * self.attention_factor);
            }
        }
        (cos, sin)
    }

    pub(super) fn validate(&self, head_dim: usize, path: &Path) -> Result<()> {
        let bad = |m: String| Err(PrismError::format(path, m));
        if self.dims == 0 || self.dims > head_dim || !self.dims.is_multiple_of(2) {
            return bad(format!(
                "RoPE over {} dims does not fit a head of {head_dim}",
                self.dims
            ));
        }
        for t in std::iter::once(self.theta).chain(self.theta_local) {
            if !(t.is_finite() && t > 1.0) {
                return bad(format!(
                    "RoPE base {t} (config rope_theta, GGUF rope.freq_base) is not a usable base: it must be a finite number above 1"
                ));
            }
        }
        let lists = std::iter::once(&self.inv_freq).chain(self.long.iter().map(|l| &l.inv_freq));
        // Zero frequencies are pairs that do not rotate (Gemma 4's proportional RoPE).
        let usable =
            |l: &[f32]| l.iter().all(|f| f.is_finite() && *f >= 0.0) && l.iter().any(|f| *f > 0.0);
        for l in lists {
            if l.len() != self.dims / 2 || !usable(l) {
                return bad("RoPE frequencies are not finite positive numbers (scaling factors out of range?)".into());
            }
        }
        if let Some(l) = &self.inv_freq_local {
            if l.is_empty() || 2 * l.len() > head_dim || !usable(l) {
                return bad("local RoPE frequencies are not finite positive numbers, or more than a head holds".into());
            }
        }
        if !(self.attention_factor.is_finite() && self.attention_factor > 0.0) {
            return bad(format!(
                "RoPE attention factor {} is out of range",
                self.attention_factor
            ));
        }
        Ok(())
    }
}

/// RoPE from GGUF: `rope.freq_base`, `rope.dimension_count`, `rope.scaling.*`, and the frequency
/// factors llama.cpp's converter stores as tensors (`rope_freqs` for Llama 3, `rope_factors_*`
/// for LongRoPE).
pub(super) fn from_gguf(
    cfg: &GgufConfig<'_>,
    spec: &ArchSpec,
    default_theta: f64,
    pairing: RopePairing,
) -> Result<Rope> {
    let theta = cfg.f64_opt("rope.freq_base")?.unwrap_or(default_theta);
    let dims = cfg
        .usize_opt("rope.dimension_count")?
        .unwrap_or(spec.head_dim);
    let plain = plain_inv_freq(theta, dims);
    let mut rope = Rope {
        dims,
        pairing,
        theta,
        inv_freq: plain.clone(),
        theta_local: None,
        inv_freq_local: None,
        attention_factor: 1.0,
        long: None,
        scaling: "none".into(),
    };
    let kind = cfg.meta.str(&cfg.key("rope.scaling.type"));
    let factor = cfg.f64_opt("rope.scaling.factor")?;
    let original = cfg.usize_opt("rope.scaling.original_context_length")?;
    let attn_factor = cfg.f64_opt("rope.scaling.attn_factor")?;
    let factors = |name: &str| -> Result<Option<Vec<f32>>> {
        match cfg.src.info(name) {
            None => Ok(None),
            Some(_) => {
                let w = crate::weights::get(cfg.src, name, &[dims / 2])?;
                Ok(Some(w.to_f32()))
            }
        }
    };
    match kind {
        None | Some("none") => {}
        Some("linear") => {
            let f = factor
                .filter(|f| f.is_finite() && *f > 0.0)
                .ok_or_else(|| cfg.err("rope.scaling.type linear without a usable rope.scaling.factor"))?;
            rope.inv_freq = plain.iter().map(|&x| x / f as f32).collect();
            rope.scaling = format!("linear (factor {f})");
        }
        Some("yarn") => {
            let y = Yarn {
                factor: factor.ok_or_else(|| {
                    cfg.err(format!("rope.scaling.type yarn without {}", cfg.key("rope.scaling.factor")))
                })?,
                original: original.ok_or_else(|| {
                    cfg.err(format!(
                        "rope.scaling.type yarn without {}",
                        cfg.key("rope.scaling.original_context_length")
                    ))
                })? as f64,
                beta_fast: cfg.f64_opt("rope.scaling.yarn_beta_fast")?.unwrap_or(32.0),
                beta_slow: cfg.f64_opt("rope.scaling.yarn_beta_slow")?.unwrap_or(1.0),
                attention_factor: attn_factor,
                mscale: None,
                mscale_all_dim: None,
                truncate: true,
            };
            if let Some(e) = y.problem(&cfg.key("rope.scaling")) {
                return Err(cfg.err(e));
            }
            rope.inv_freq = y.inv_freq(theta, dims);
            rope.attention_factor = y.attention() as f32;
            rope.scaling = format!(
                "yarn (factor {}, original context {}, attention factor {:.4})",
                y.factor,
                y.original,
                y.attention()
            );
        }
        Some(other) => {
            return Err(cfg.err(format!(
                "{} {other:?} is not supported (Prism implements none, linear, yarn, llama3 factors and longrope factors); refusing rather than computing other positions",
                cfg.key("rope.scaling.type")
            )))
        }
    }
    if let Some(div) = factors("rope_freqs.weight")? {
        // llama.cpp divides each frequency by the stored factor (Llama 3 scaling).
        rope.inv_freq = rope
            .inv_freq
            .iter()
            .zip(&div)
            .map(|(&f, &d)| f / d)
            .collect();
        rope.scaling = "llama3 (rope_freqs factors)".into();
    }
    match (
        factors("rope_factors_short.weight")?,
        factors("rope_factors_long.weight")?,
    ) {
        (None, None) => {}
        (Some(short), Some(long)) => {
            let after = original.ok_or_else(|| {
                cfg.err("LongRoPE factors without rope.scaling.original_context_length")
            })?;
            rope.inv_freq = with_factors(theta, dims, &short);
            rope.long = Some(LongRope {
                after,
                inv_freq: with_factors(theta, dims, &long),
            });
            rope.attention_factor = attn_factor.unwrap_or(1.0) as f32;
            rope.scaling = format!("longrope (original context {after})");
        }
        _ => return Err(cfg.err("only one of rope_factors_short and rope_factors_long is present")),
    }
    Ok(rope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_divisors_match_the_reference() {
        // The reference README: d = 64, theta 500000, factor 8, low 1, high 4, original 64.
        let plain = plain_inv_freq(500000.0, 64);
        let scaled = llama3(&plain, 8.0, 1.0, 4.0, 64.0);
        let div: Vec<f32> = plain.iter().zip(&scaled).map(|(a, b)| a / b).collect();
        let want = [1.0, 1.0, 1.0, 1.4255, 2.4423, 4.6372, 8.0, 8.0];
        for (d, w) in div.iter().zip(want) {
            assert!((d - w).abs() < 1e-3, "{div:?}");
        }
        assert!(div[6..].iter().all(|&d| (d - 8.0).abs() < 1e-5));
    }
}
