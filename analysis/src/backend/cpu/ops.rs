//! The CPU backend's element-wise and row-wise ops, in f32 as transformers computes them (with
//! sums of squares and means accumulated in f64).

use crate::arch::{Activation, NormKind, RopePairing};

/// RMSNorm or LayerNorm of one row: `out = norm(x) * w (+ b)`.
#[inline]
pub fn norm_row(
    kind: NormKind,
    eps: f64,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    out: &mut [f32],
) {
    let n = x.len() as f64;
    match kind {
        NormKind::RmsNorm => {
            let ms = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / n;
            let inv = 1.0 / (ms as f32 + eps as f32).sqrt();
            for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
                *o = g * (v * inv);
            }
        }
        NormKind::LayerNorm => {
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let mean = mean as f32;
            let inv = 1.0 / (var as f32 + eps as f32).sqrt();
            for (i, ((o, &v), &g)) in out.iter_mut().zip(x).zip(w).enumerate() {
                let y = (v - mean) * inv * g;
                *o = match b {
                    Some(b) => y + b[i],
                    None => y,
                };
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

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn gelu_tanh(x: f32) -> f32 {
    let c = (2.0f32 / std::f32::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

pub fn gelu_erf(x: f32) -> f32 {
    (0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2))) as f32
}

/// gate = act(gate) * up.
pub fn gated(act: Activation, gate: &mut [f32], up: &[f32]) {
    match act {
        Activation::GeGluTanh => gate
            .iter_mut()
            .zip(up)
            .for_each(|(g, &u)| *g = gelu_tanh(*g) * u),
        _ => gate
            .iter_mut()
            .zip(up)
            .for_each(|(g, &u)| *g = silu(*g) * u),
    }
}

/// x = act(x) for the ungated activations.
pub fn activate(act: Activation, x: &mut [f32]) {
    match act {
        Activation::GeluErf => x.iter_mut().for_each(|v| *v = gelu_erf(*v)),
        _ => x.iter_mut().for_each(|v| *v = gelu_tanh(*v)),
    }
}

/// cap * tanh(x / cap).
pub fn softcap(x: &mut [f32], cap: f32) {
    x.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
}

/// Softmax of one row in place; entries that are -inf become exactly 0.
pub fn softmax(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if max == f32::NEG_INFINITY {
        row.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_forms_agree_where_they_should() {
        for x in [-3.0f32, -0.5, 0.0, 0.7, 2.5] {
            assert!((gelu_tanh(x) - gelu_erf(x)).abs() < 2e-3);
        }
        assert!((gelu_erf(1.0) - 0.841_344_7).abs() < 1e-6);
    }

    #[test]
    fn softmax_masks_to_exact_zero() {
        let mut r = [1.0, f32::NEG_INFINITY, 1.0];
        softmax(&mut r);
        assert_eq!(r, [0.5, 0.0, 0.5]);
    }
}
