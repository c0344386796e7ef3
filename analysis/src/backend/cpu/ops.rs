//! The CPU backend's element-wise and row-wise ops, in f32 as transformers computes them (with
//! sums of squares and means accumulated in f64). Each is compiled for AVX2 as well
//! ([`crate::simd::multiversion!`]); their loops are plain `for` loops so that it applies.

// The loops index several slices with one counter, as the formulas do.
#![allow(clippy::needless_range_loop)]

use crate::arch::{Activation, NormKind, RopePairing};
use crate::metrics::exp_f32;
use crate::simd::multiversion;

multiversion! {
    /// RMSNorm or LayerNorm of one row: `out = norm(x) * w (+ b)`.
    pub fn norm_row(kind: NormKind, eps: f64, x: &[f32], w: &[f32], b: Option<&[f32]>, out: &mut [f32]) {
        let n = x.len();
        match kind {
            NormKind::RmsNorm => {
                let mut lanes = [0f64; 8];
                for i in 0..n {
                    lanes[i % 8] += (x[i] as f64) * (x[i] as f64);
                }
                let ms = lanes.iter().sum::<f64>() / n as f64;
                let inv = 1.0 / (ms as f32 + eps as f32).sqrt();
                for i in 0..n {
                    out[i] = w[i] * (x[i] * inv);
                }
            }
            NormKind::LayerNorm => {
                let mut sum = 0f64;
                for i in 0..n {
                    sum += x[i] as f64;
                }
                let mean = sum / n as f64;
                let mut var = 0f64;
                for i in 0..n {
                    let d = x[i] as f64 - mean;
                    var += d * d;
                }
                let var = var / n as f64;
                let mean = mean as f32;
                let inv = 1.0 / (var as f32 + eps as f32).sqrt();
                match b {
                    Some(b) => {
                        for i in 0..n {
                            out[i] = (x[i] - mean) * inv * w[i] + b[i];
                        }
                    }
                    None => {
                        for i in 0..n {
                            out[i] = (x[i] - mean) * inv * w[i];
                        }
                    }
                }
            }
        }
    }
}

/// Rotates the first `dims` dims of each head of one row in place.
#[inline]
pub fn rope_row(
    x: &mut [f32],
    heads: usize,
    head_dim: usize,
    dims: usize,
    pairing: RopePairing,
    cos: &[f32],
    sin: &[f32],
) {
    let half = dims / 2;
    for h in 0..heads {
        let base = h * head_dim;
        for i in 0..half {
            let (a, b) = match pairing {
                RopePairing::Half => (base + i, base + i + half),
                RopePairing::Interleaved => (base + 2 * i, base + 2 * i + 1),
            };
            let (x0, x1) = (x[a], x[b]);
            x[a] = x0 * cos[i] - x1 * sin[i];
            x[b] = x1 * cos[i] + x0 * sin[i];
        }
    }
}

#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp_f32(-x))
}

#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    // tanh(u) = 1 - 2 / (e^{2u} + 1), with the vectorizable exponential.
    let c = (2.0f32 / std::f32::consts::PI).sqrt();
    let u = c * (x + 0.044715 * x * x * x);
    let t = 1.0 - 2.0 / (exp_f32(2.0 * u) + 1.0);
    0.5 * x * (1.0 + t)
}

pub fn gelu_erf(x: f32) -> f32 {
    (0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2))) as f32
}

multiversion! {
    /// gate = act(gate) * up.
    pub fn gated(act: Activation, gate: &mut [f32], up: &[f32]) {
        let n = gate.len().min(up.len());
        match act {
            Activation::SwiGluClamped { alpha, limit } => {
                for i in 0..n {
                    let g = gate[i].min(limit);
                    let u = up[i].clamp(-limit, limit);
                    gate[i] = (u + 1.0) * (g * (1.0 / (1.0 + (-(g * alpha)).exp())));
                }
            }
            Activation::GeGluTanh => {
                for i in 0..n {
                    gate[i] = gelu_tanh(gate[i]) * up[i];
                }
            }
            _ => {
                for i in 0..n {
                    gate[i] = silu(gate[i]) * up[i];
                }
            }
        }
    }
}

/// Softmax over a row and a sink logit (a key of that score with no value, gpt-oss's attention
/// sinks): the row's probabilities, which sum to less than one.
pub fn softmax_with_sink(row: &mut [f32], sink: f32) {
    let max = row.iter().fold(sink, |m, &x| m.max(x));
    let mut sum = (sink - max).exp();
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

multiversion! {
    /// x = act(x) for the ungated activations.
    pub fn activate(act: Activation, x: &mut [f32]) {
        match act {
            Activation::GeluErf => {
                for i in 0..x.len() {
                    x[i] = gelu_erf(x[i]);
                }
            }
            _ => {
                for i in 0..x.len() {
                    x[i] = gelu_tanh(x[i]);
                }
            }
        }
    }
}

multiversion! {
    /// cap * tanh(x / cap).
    pub fn softcap(x: &mut [f32], cap: f32) {
        for i in 0..x.len() {
            let t = 1.0 - 2.0 / (exp_f32(2.0 * x[i] / cap) + 1.0);
            x[i] = t * cap;
        }
    }
}

multiversion! {
    /// Softmax of one row in place; entries that are -inf become exactly 0.
    pub fn softmax(row: &mut [f32]) {
        let mut lanes = [f32::NEG_INFINITY; 8];
        for i in 0..row.len() {
            lanes[i % 8] = lanes[i % 8].max(row[i]);
        }
        let mut max = f32::NEG_INFINITY;
        for l in lanes {
            max = max.max(l);
        }
        if max == f32::NEG_INFINITY {
            for v in row.iter_mut() {
                *v = 0.0;
            }
            return;
        }
        for v in row.iter_mut() {
            *v = exp_f32(*v - max);
        }
        let mut lanes = [0f32; 8];
        for i in 0..row.len() {
            lanes[i % 8] += row[i];
        }
        let inv = 1.0 / lanes.iter().sum::<f32>();
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_forms_agree_where_they_should() {
        for x in [-3.0f32, -0.5, 0.0, 0.7, 2.5] {
            assert!((gelu_tanh(x) - gelu_erf(x)).abs() < 2e-3);
            let exact = 0.5
                * x
                * (1.0
                    + ((2.0f32 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh());
            assert!((gelu_tanh(x) - exact).abs() < 1e-6, "{x}");
        }
        assert!((gelu_erf(1.0) - 0.841_344_7).abs() < 1e-6);
    }

    #[test]
    fn softmax_masks_to_exact_zero() {
        let mut r = [1.0, f32::NEG_INFINITY, 1.0];
        softmax(&mut r);
        assert_eq!(r, [0.5, 0.0, 0.5]);
    }

    #[test]
    fn softcap_is_cap_times_tanh() {
        let mut x = [-100.0f32, -3.0, 0.0, 2.0, 60.0];
        let want: Vec<f32> = x.iter().map(|v| (v / 30.0).tanh() * 30.0).collect();
        softcap(&mut x, 30.0);
        for (a, b) in x.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
