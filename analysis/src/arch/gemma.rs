//! Gemma 2 and Gemma 3 (text): embeddings scaled by sqrt(hidden), RMSNorm with a `1 + w` scale,
//! sandwich norms around both sub-layers, a GELU-tanh gated MLP, sliding-window layers in a fixed
//! pattern, query_pre_attn_scalar; Gemma 2 adds attention and final logit soft-capping, Gemma 3
//! adds q/k norms and a separate RoPE base for its local layers (Gemma Team 2024,
//! <https://arxiv.org/abs/2408.00118>, <https://arxiv.org/abs/2503.19786>; reference
//! implementations: transformers' `modeling_gemma2.py`, `modeling_gemma3.py`).
//!
//! HF checkpoints store each norm's offset w; GGUF files store fl(1 + w) already.

use serde::Deserialize;

use super::rope::plain_inv_freq;
use super::{
    Activation, ArchSpec, Architecture, Bias, Block, Format, GgufConfig, HfConfig, HfDefaults,
    LayerKind, LayerRope, QkNorm, Rope, RopePairing, RopeScaling,
};
use crate::error::Result;
use crate::gguf::Value;
use crate::weights::{ModelWeights, TensorSource};

use super::llama::NormNames;

pub static GEMMA2: Architecture = Architecture {
    name: "gemma2",
    covers: "Gemma 2",
    hf_model_types: &["gemma2"],
    gguf_names: &["gemma2"],
    spec_from_hf: |c| spec_from_hf(c, Version::Two),
    spec_from_gguf: |c| spec_from_gguf(c, Version::Two),
    load_weights,
    unused_tensor: |n| n.ends_with("rotary_emb.inv_freq"),
    harmless_gguf_keys: &[],
};

pub static GEMMA3: Architecture = Architecture {
    name: "gemma3",
    covers: "Gemma 3 text models",
    hf_model_types: &["gemma3_text"],
    gguf_names: &["gemma3"],
    spec_from_hf: |c| spec_from_hf(c, Version::Three),
    spec_from_gguf: |c| spec_from_gguf(c, Version::Three),
    load_weights,
    unused_tensor: |n| {
        n.ends_with("rotary_emb.inv_freq") || n.ends_with("rotary_emb_local.inv_freq")
    },
    harmless_gguf_keys: &[],
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    Two,
    Three,
}

/// Gemma's fields beyond [`super::HfCommon`].
#[derive(Debug, Deserialize)]
struct Config {
    hidden_activation: Option<String>,
    hidden_act: Option<String>,
    query_pre_attn_scalar: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    final_logit_softcapping: Option<f64>,
    sliding_window_pattern: Option<usize>,
    #[serde(rename = "_sliding_window_pattern")]
    sliding_window_pattern_private: Option<usize>,
    rope_local_base_freq: Option<f64>,
    #[serde(default)]
    attention_bias: bool,
}

fn positive(x: f64, what: &str, cfg: &HfConfig<'_>) -> Result<f32> {
    if x.is_finite() && x > 0.0 {
        Ok(x as f32)
    } else {
        Err(cfg.err(format!("{what} {x} is not a positive number")))
    }
}

fn spec_from_hf(cfg: &HfConfig<'_>, version: Version) -> Result<ArchSpec> {
    let c: Config = cfg.parse()?;
    let act = c
        .hidden_activation
        .as_deref()
        .or(c.hidden_act.as_deref())
        .unwrap_or("gelu_pytorch_tanh");
    if !matches!(act, "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast") {
        return Err(cfg.err(format!(
            "Gemma activation {act:?} is not supported (gelu_pytorch_tanh)"
        )));
    }
    if c.attention_bias {
        return Err(cfg.err("Gemma with attention_bias is not supported"));
    }
    let family = match version {
        Version::Two => "gemma2",
        Version::Three => "gemma3",
    };
    let mut spec = ArchSpec::base(family, cfg.named.clone());
    let common = cfg.common(
        &mut spec,
        HfDefaults {
            rms_norm_eps: 1e-6,
            context: 8192,
            tied: true,
        },
    )?;
    let sliding_window = common.sliding_window;
    spec.activation = Activation::GeGluTanh;
    spec.block = Block::SANDWICH;
    if version == Version::Three {
        spec.qk_norm = QkNorm::PerHead;
    }
    spec.embed_scale = Some((spec.hidden as f64).sqrt() as f32);
    let scalar = c.query_pre_attn_scalar.unwrap_or(spec.head_dim as f64);
    spec.attn_scale = positive(scalar, "query_pre_attn_scalar", cfg)?.powf(-0.5);
    if version == Version::Two {
        spec.attn_softcap = c
            .attn_logit_softcapping
            .map(|x| positive(x, "attn_logit_softcapping", cfg))
            .transpose()?;
        spec.final_softcap = c
            .final_logit_softcapping
            .map(|x| positive(x, "final_logit_softcapping", cfg))
            .transpose()?;
    } else if c.attn_logit_softcapping.is_some() || c.final_logit_softcapping.is_some() {
        return Err(cfg.err("Gemma 3 with logit soft-capping is not supported"));
    }
    // Layer pattern: layer_types (transformers 5), else Gemma 2 alternates starting with a sliding
    // layer and Gemma 3 has one global layer in every `sliding_window_pattern`.
    spec.layers = match cfg.layer_types(spec.n_layers, sliding_window)? {
        Some(kinds) => kinds,
        None => {
            let window = sliding_window.ok_or_else(|| cfg.err("Gemma needs sliding_window"))?;
            let pattern = match version {
                Version::Two => 2,
                Version::Three => c
                    .sliding_window_pattern
                    .or(c.sliding_window_pattern_private)
                    .unwrap_or(6),
            };
            if pattern == 0 {
                return Err(cfg.err("sliding_window_pattern is 0"));
            }
            (0..spec.n_layers)
                .map(|i| {
                    let sliding = (i + 1) % pattern != 0;
                    LayerKind {
                        window: sliding.then_some(window),
                        rope: if sliding {
                            LayerRope::Local
                        } else {
                            LayerRope::Global
                        },
                        ..LayerKind::FULL
                    }
                })
                .collect()
        }
    };
    if version == Version::Two {
        spec.layers = super::llama::global_rope(std::mem::take(&mut spec.layers));
    }
    // RoPE: Gemma 3 has a base (and possibly a scaling) per layer type.
    let per_type = cfg
        .get("rope_parameters")
        .filter(|p| p.get("full_attention").is_some());
    let (global_theta, global_scaling, local_theta) = match per_type {
        Some(p) => {
            let full = p.get("full_attention");
            let theta = full
                .and_then(|f| f.get("rope_theta"))
                .and_then(|v| v.as_f64())
                .unwrap_or(1_000_000.0);
            let local = p
                .get("sliding_attention")
                .and_then(|s| s.get("rope_theta"))
                .and_then(|v| v.as_f64());
            if let Some(kind) = p
                .get("sliding_attention")
                .and_then(|s| s.get("rope_type"))
                .and_then(|v| v.as_str())
                .filter(|k| *k != "default")
            {
                return Err(cfg.err(format!(
                    "RoPE scaling {kind:?} on sliding layers is not supported"
                )));
            }
            (theta, super::rope::scaling_from_hf(full, cfg)?, local)
        }
        None => (
            cfg.rope_theta(10_000.0),
            cfg.rope_scaling()?,
            c.rope_local_base_freq,
        ),
    };
    let mut rope = Rope::from_hf(
        global_theta,
        spec.head_dim,
        RopePairing::Half,
        &global_scaling,
        spec.context_length,
        cfg,
    )?;
    if version == Version::Three {
        let local = local_theta.unwrap_or(10_000.0);
        rope.theta_local = Some(local);
        rope.inv_freq_local = Some(plain_inv_freq(local, spec.head_dim));
    } else if !matches!(global_scaling, RopeScaling::None) {
        return Err(cfg.err("RoPE scaling in Gemma 2 is not supported"));
    }
    spec.rope = Some(rope);
    Ok(spec)
}

fn spec_from_gguf(cfg: &GgufConfig<'_>, version: Version) -> Result<ArchSpec> {
    let family = match version {
        Version::Two => "gemma2",
        Version::Three => "gemma3",
    };
    let mut spec = ArchSpec::base(family, cfg.arch.to_string());
    cfg.common(&mut spec)?;
    spec.activation = Activation::GeGluTanh;
    spec.block = Block::SANDWICH;
    if version == Version::Three {
        spec.qk_norm = QkNorm::PerHead;
    }
    spec.tied_embeddings = cfg.src.info("output.weight").is_none();
    spec.embed_scale = Some((spec.hidden as f64).sqrt() as f32);
    // llama.cpp: 1/sqrt(head_dim), except the 27B models, which use 1/sqrt(hidden / heads).
    let big = match version {
        Version::Two => spec.n_layers == 46,
        Version::Three => spec.n_layers == 62,
    };
    let scalar = if big {
        (spec.hidden / spec.n_heads.max(1)) as f32
    } else {
        spec.head_dim as f32
    };
    spec.attn_scale = 1.0 / scalar.sqrt();
    let cap = |name: &str| -> Result<Option<f32>> {
        match cfg.f64_opt(name)? {
            None => Ok(None),
            Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x as f32)),
            Some(x) => Err(cfg.err(format!("{} {x} is not a positive number", cfg.key(name)))),
        }
    };
    spec.attn_softcap = cap("attn_logit_softcapping")?;
    spec.final_softcap = cap("final_logit_softcapping")?;
    if version == Version::Three && spec.attn_softcap.is_some() {
        return Err(cfg.err("Gemma 3 with attention soft-capping is not supported"));
    }
    let window = cfg.usize_opt("attention.sliding_window")?;
    let window = match version {
        Version::Two => Some(window.unwrap_or(4096)),
        Version::Three => window.filter(|&w| w > 0),
    };
    let pattern_key = cfg.key("attention.sliding_window_pattern");
    let sliding: Vec<bool> = match cfg.meta.get(&pattern_key) {
        Some(Value::Array(flags)) => {
            if flags.len() != spec.n_layers {
                return Err(cfg.err(format!(
                    "{pattern_key} has {} entries for {} layers",
                    flags.len(),
                    spec.n_layers
                )));
            }
            flags
                .iter()
                .map(|f| match f {
                    Value::Bool(b) => Ok(*b),
                    other => Err(cfg.err(format!("{pattern_key} holds {}", other.type_name()))),
                })
                .collect::<Result<_>>()?
        }
        _ => {
            let n = match cfg.usize_opt("attention.sliding_window_pattern")? {
                Some(n) => n,
                None if version == Version::Two => 2,
                None => 6,
            };
            (0..spec.n_layers)
                .map(|il| n == 0 || il % n < n - 1)
                .collect()
        }
    };
    spec.layers = sliding
        .iter()
        .map(|&s| LayerKind {
            window: if s { window } else { None },
            rope: if s && version == Version::Three && window.is_some() {
                LayerRope::Local
            } else {
                LayerRope::Global
            },
            ..LayerKind::FULL
        })
        .collect();
    let mut rope = cfg.rope(&spec, 10_000.0, RopePairing::Half)?;
    let local = cfg.f64_opt("rope.freq_base_swa")?;
    match version {
        Version::Three => {
            let local = local.unwrap_or(10_000.0);
            rope.theta_local = Some(local);
            rope.inv_freq_local = Some(plain_inv_freq(local, rope.dims));
        }
        Version::Two => {
            if let Some(l) = local.filter(|&l| l != rope.theta) {
                rope.theta_local = Some(l);
                rope.inv_freq_local = Some(plain_inv_freq(l, rope.dims));
                spec.layers
                    .iter_mut()
                    .filter(|k| k.window.is_some())
                    .for_each(|k| k.rope = LayerRope::Local);
            }
        }
    }
    spec.rope = Some(rope);
    Ok(spec)
}

/// Gemma's pre-MLP norm is `pre_feedforward_layernorm`; its post norms are llama.cpp's.
const NORM_NAMES: NormNames = NormNames {
    mlp: ["pre_feedforward_layernorm", "ffn_norm"],
    hf_offset: true,
    ..super::llama::NORM_NAMES
};

fn load_weights(src: &dyn TensorSource, spec: &ArchSpec, format: Format) -> Result<ModelWeights> {
    super::llama::load_decoder(src, spec, format, Bias::No, Bias::No, &NORM_NAMES)
}
