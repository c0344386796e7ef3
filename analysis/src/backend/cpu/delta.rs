//! The Gated DeltaNet core on the CPU, token by token as transformers'
//! `torch_recurrent_gated_delta_rule` (its chunked prefill computes the same sums in another
//! order): the causal depthwise convolution with SiLU, L2-normalized q and k, beta and the
//! decay, the delta rule per value head, the gated RMSNorm. One task per (sequence, value head).

use crate::arch::DeltaNetSpec;

/// The per-layer vectors of one layer, as f32.
pub(super) struct LayerVectors {
    /// `[conv_dim, kernel]`.
    pub conv: Vec<f32>,
    pub a_neg: Vec<f32>,
    pub dt_bias: Vec<f32>,
    pub norm: Vec<f32>,
    pub eps: f32,
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// torch's softplus (beta 1, threshold 20).
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// The convolution of `seq` tokens of one sequence: `x` `[seq, c]` in, `y` `[seq, c]` out, with
/// the previous `kernel - 1` inputs in `state` `[kernel - 1, c]`, which becomes the last ones.
pub(super) fn conv(d: &DeltaNetSpec, w: &[f32], x: &[f32], state: &mut [f32], y: &mut [f32]) {
    let (c, k) = (d.conv_dim(), d.kernel);
    let seq = x.len() / c;
    let past = k - 1;
    // Input of position p (p < 0 in the state).
    let at = |state: &[f32], p: isize, ch: usize| -> f32 {
        if p >= 0 {
            x[p as usize * c + ch]
        } else {
            state[(past as isize + p) as usize * c + ch]
        }
    };
    for t in 0..seq {
        for ch in 0..c {
            let mut acc = 0f32;
            for j in 0..k {
                acc += w[ch * k + j] * at(state, t as isize + j as isize - past as isize, ch);
            }
            y[t * c + ch] = silu(acc);
        }
    }
    // The last kernel - 1 inputs, oldest first (from the state when the run is shorter).
    let mut next = vec![0f32; past * c];
    for i in 0..past {
        let p = seq as isize - past as isize + i as isize;
        for ch in 0..c {
            next[i * c + ch] = at(state, p, ch);
        }
    }
    state.copy_from_slice(&next);
}

/// One value head of one sequence. `y` `[seq, conv_dim]` is the convolution's output, `z`, `b`,
/// `a` the sequence's rows of the projections; `s` `[k_dim, v_dim]` is the head's state (updated);
/// `out` `[seq, v_dim]` gets the gated-normalized output; `mix` `[seq, seq]` the unrolled rule.
#[allow(clippy::too_many_arguments)]
pub(super) fn head(
    d: &DeltaNetSpec,
    v: &LayerVectors,
    hv: usize,
    y: &[f32],
    z: &[f32],
    b: &[f32],
    a: &[f32],
    s: &mut [f32],
    out: &mut [f32],
    mix: Option<&mut [f32]>,
) {
    let (dk, dv, c, nv) = (d.k_dim, d.v_dim, d.conv_dim(), d.v_heads);
    let kh = d.key_head(hv);
    let seq = y.len() / c;
    let qk_len = d.k_heads * dk;
    let scale = 1.0 / (dk as f32).sqrt();
    let mut q = vec![0f32; seq * dk];
    let mut k = vec![0f32; seq * dk];
    let mut beta = vec![0f32; seq];
    let mut decay = vec![0f32; seq];
    for t in 0..seq {
        let row = &y[t * c..(t + 1) * c];
        let l2 = |x: &[f32], dst: &mut [f32], extra: f32| {
            let ss: f32 = x.iter().map(|v| v * v).sum();
            let inv = 1.0 / (ss + 1e-6).sqrt();
            dst.iter_mut()
                .zip(x)
                .for_each(|(o, v)| *o = v * inv * extra);
        };
        l2(
            &row[kh * dk..(kh + 1) * dk],
            &mut q[t * dk..(t + 1) * dk],
            scale,
        );
        l2(
            &row[qk_len + kh * dk..qk_len + (kh + 1) * dk],
            &mut k[t * dk..(t + 1) * dk],
            1.0,
        );
        beta[t] = sigmoid(b[t * nv + hv]);
        decay[t] = (v.a_neg[hv] * softplus(a[t * nv + hv] + v.dt_bias[hv])).exp();
    }
    let v0 = 2 * qk_len + hv * dv;
    let mut o = vec![0f32; dv];
    let mut kv = vec![0f32; dv];
    for t in 0..seq {
        let (qt, kt) = (&q[t * dk..(t + 1) * dk], &k[t * dk..(t + 1) * dk]);
        let vt = &y[t * c + v0..t * c + v0 + dv];
        s.iter_mut().for_each(|x| *x *= decay[t]);
        kv.fill(0.0);
        for (i, &ki) in kt.iter().enumerate() {
            let srow = &s[i * dv..(i + 1) * dv];
            kv.iter_mut()
                .zip(srow)
                .for_each(|(acc, sv)| *acc += sv * ki);
        }
        // delta = beta (v - S^T k), then S += k delta^T.
        for (j, kvj) in kv.iter_mut().enumerate() {
            *kvj = (vt[j] - *kvj) * beta[t];
        }
        o.fill(0.0);
        for i in 0..dk {
            let srow = &mut s[i * dv..(i + 1) * dv];
            let (ki, qi) = (kt[i], qt[i]);
            for j in 0..dv {
                srow[j] += ki * kv[j];
                o[j] += srow[j] * qi;
            }
        }
        // The gated RMSNorm: o / rms(o) * w * silu(z).
        let ms: f32 = o.iter().map(|x| x * x).sum::<f32>() / dv as f32;
        let inv = 1.0 / (ms + v.eps).sqrt();
        let zt = &z[t * nv * dv + hv * dv..t * nv * dv + (hv + 1) * dv];
        let dst = &mut out[t * dv..(t + 1) * dv];
        for j in 0..dv {
            dst[j] = v.norm[j] * (o[j] * inv) * silu(zt[j]);
        }
    }
    if let Some(mix) = mix {
        unroll(&q, &k, &beta, &decay, dk, seq, mix);
    }
}

/// The rule with one-hot values: M[t][s] is the weight of token s's value in token t's output.
fn unroll(
    q: &[f32],
    k: &[f32],
    beta: &[f32],
    decay: &[f32],
    dk: usize,
    seq: usize,
    mix: &mut [f32],
) {
    // The state over one-hot values: [dk][seq].
    let mut s = vec![0f32; dk * seq];
    let mut kv = vec![0f32; seq];
    for t in 0..seq {
        let (qt, kt) = (&q[t * dk..(t + 1) * dk], &k[t * dk..(t + 1) * dk]);
        s.iter_mut().for_each(|x| *x *= decay[t]);
        kv.fill(0.0);
        for (i, &ki) in kt.iter().enumerate() {
            kv[..=t]
                .iter_mut()
                .zip(&s[i * seq..i * seq + t + 1])
                .for_each(|(acc, sv)| *acc += sv * ki);
        }
        for (col, kvc) in kv[..=t].iter_mut().enumerate() {
            let value = if col == t { 1.0 } else { 0.0 };
            *kvc = (value - *kvc) * beta[t];
        }
        let row = &mut mix[t * seq..(t + 1) * seq];
        row.fill(0.0);
        for i in 0..dk {
            let srow = &mut s[i * seq..i * seq + t + 1];
            for (col, sv) in srow.iter_mut().enumerate() {
                *sv += kt[i] * kv[col];
                row[col] += *sv * qt[i];
            }
        }
    }
}
