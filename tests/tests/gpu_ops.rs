//! Every GPU op against a plain CPU reference on seeded random inputs of ragged sizes (not
//! multiples of the workgroup size), with the output buffer poisoned (NaN) first. The ops are
//! recorded through the same functions the backend uses (`backend::gpu::ops`).

use prism_analysis::arch::{Activation, RopePairing};
use prism_analysis::backend::exec::{AttnShape, Edit, EditKind};
use prism_analysis::backend::gpu::context::{f32s_from, u32_bytes, u32s_from, GpuContext};
use prism_analysis::backend::gpu::ops;
use prism_analysis::backend::gpu::upload::GpuMatrix;
use prism_analysis::quant::GgmlType;
use prism_tests::synth::{weight_of_type, Rng};
use prism_tests::*;

fn poisoned(ctx: &GpuContext, len: usize) -> wgpu::Buffer {
    ctx.upload_f32("poisoned output", &vec![f32::NAN; len])
}

/// Records with `f`, runs, and reads `out` back.
fn run(
    ctx: &GpuContext,
    out: &wgpu::Buffer,
    f: impl FnOnce(&mut wgpu::CommandEncoder),
) -> Vec<f32> {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    f(&mut enc);
    let staging = ctx.staging("out", out.size()).unwrap();
    enc.copy_buffer_to_buffer(out, 0, &staging, 0, None);
    f32s_from(&ctx.finish(enc, &[&staging]).unwrap().remove(0))
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs() / w.abs().max(1.0);
        assert!(
            err <= 1e-5,
            "{what}[{i}]: gpu {g} vs reference {w} (relative error {err:e})"
        );
    }
}

fn silu(g: f64) -> f64 {
    g / (1.0 + (-g).exp())
}

/// Both matmul kernels (tiled and matrix-vector), every stored format, ragged sizes (tiles cut in
/// both directions), with a bias, each epilogue (store, add, SiLU and GELU gates) and with and
/// without a norm folded in (RMSNorm, LayerNorm), against f64.
#[test]
fn matmul_kernels_every_format_epilogue_and_folded_norm() {
    use ops::matmul::{matmul_with, Epilogue, Kernel, Linear};
    for (path, ctx) in gpu_paths() {
        let epilogues = [
            Epilogue::Store,
            Epilogue::Accumulate,
            Epilogue::Gated(Activation::SwiGlu),
            Epilogue::Gated(Activation::GeGluTanh),
        ];
        let mut case = 0usize;
        for ty in GgmlType::ALL {
            let cols = match ty.block_values() {
                256 => 512,
                128 => 384,
                64 => 192,
                32 => 96,
                _ if ty == GgmlType::BF16 => 38,
                _ => 70,
            };
            for (tokens, out, kernel) in [
                (1usize, 67usize, Kernel::Vector),
                (8, 130, Kernel::Vector),
                (3, 67, Kernel::Tiled),
                (13, 67, Kernel::Auto),
                (70, 130, Kernel::Tiled),
                (9, 40, Kernel::TiledSmall),
                (45, 67, Kernel::TiledSmall),
            ] {
                case += 1;
                let epilogue = epilogues[case % 4];
                // 0: no norm, 1: RMSNorm, 2: LayerNorm, folded into the matmul.
                let folded = case % 3;
                let nb = Rng::new(8).vec(cols, 0.2, 0.0);
                let w = weight_of_type(out, cols, ty, 7 + tokens as u64);
                let wf = w.to_f32();
                let x = Rng::new(99).vec(tokens * cols, 1.0, 0.0);
                let g = Rng::new(3).vec(cols, 0.5, 1.0);
                let bias = Rng::new(5).vec(out, 0.3, 0.0);
                let y0 = Rng::new(6).vec(tokens * out, 1.0, 0.0);
                let m = GpuMatrix::upload(&ctx, &w).unwrap();
                assert!(
                    m.bytes as f64 <= 1.12 * m.stored_bytes as f64 + 4.0,
                    "{ty:?}: {} GPU bytes for {} stored",
                    m.bytes,
                    m.stored_bytes
                );
                let xb = ctx.upload_f32("x", &x);
                let gb = ctx.upload_f32("norm weight", &g);
                let bb = ctx.upload_f32("bias", &bias);
                let yb = if epilogue == Epilogue::Store {
                    poisoned(&ctx, tokens * out)
                } else {
                    ctx.upload_f32("y", &y0)
                };
                // The input the matrix sees: x, RMSNorm(x) * g or LayerNorm(x) * g + b.
                let eps = 1e-5;
                let xin: Vec<f64> = (0..tokens * cols)
                    .map(|k| {
                        let t = k / cols;
                        let v = x[k] as f64;
                        let row: Vec<f64> = x[t * cols..(t + 1) * cols]
                            .iter()
                            .map(|&a| a as f64)
                            .collect();
                        let mean = row.iter().sum::<f64>() / cols as f64;
                        let (gi, bi) = (g[k % cols] as f64, nb[k % cols] as f64);
                        match folded {
                            1 => {
                                let ms = row.iter().map(|a| a * a).sum::<f64>() / cols as f64;
                                v / (ms + eps).sqrt() * gi
                            }
                            2 => {
                                let var = row.iter().map(|a| (a - mean).powi(2)).sum::<f64>()
                                    / cols as f64;
                                (v - mean) / (var + eps).sqrt() * gi + bi
                            }
                            _ => v,
                        }
                    })
                    .collect();
                let mut want = vec![0f64; tokens * out];
                // f32 accumulation error grows with the sum of |x w|: the tolerance follows it.
                let mut magnitude = vec![0f64; tokens * out];
                for t in 0..tokens {
                    for o in 0..out {
                        let i = t * out + o;
                        let terms = (0..cols).map(|c| xin[t * cols + c] * wf[o * cols + c] as f64);
                        magnitude[i] = terms.clone().map(f64::abs).sum();
                        let r = terms.sum::<f64>() + bias[o] as f64;
                        let y = y0[i] as f64;
                        want[i] = match epilogue {
                            Epilogue::Store => r,
                            Epilogue::Accumulate => r + y,
                            Epilogue::Gated(Activation::SwiGlu) => silu(y) * r,
                            Epilogue::Gated(_) => gelu_tanh(y) * r,
                        };
                        if let Epilogue::Gated(_) = epilogue {
                            magnitude[i] *= y.abs().max(1.0);
                        }
                    }
                }
                let mut l = Linear::new(&xb, &m, &yb, tokens);
                l.bias = Some(&bb);
                l.epilogue = epilogue;
                let nbb = ctx.upload_f32("norm bias", &nb);
                l.norm = (folded > 0).then_some(ops::matmul::FoldedNorm {
                    weight: &gb,
                    bias: (folded == 2).then_some(&nbb),
                    eps: eps as f32,
                });
                let got = run(&ctx, &yb, |enc| matmul_with(&ctx, enc, &l, kernel).unwrap());
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    let err = (g as f64 - w).abs();
                    // The fast path rounds each weight to f16 (half an ulp, 2^-12, to nearest;
                    // 2^-11 allows either neighbour).
                    let rounding = if path == "fast" { 2f64.powi(-11) } else { 0.0 };
                    assert!(
                        err <= 2e-6 * (magnitude[i] + 1.0) + rounding * magnitude[i],
                        "[{path}] matmul {kernel:?} {epilogue:?} norm {folded} {ty:?} {tokens}x{cols}->{out} [{i}]: gpu {g} vs reference {w} (error {err:e}, sum |xw| {})",
                        magnitude[i]
                    );
                }
            }
        }
    }
}

#[test]
fn the_matrix_vector_kernel_refuses_more_than_eight_tokens() {
    use ops::matmul::{matmul_with, Kernel, Linear};
    let ctx = gpu();
    let w = weight_of_type(16, 32, GgmlType::F32, 1);
    let m = GpuMatrix::upload(&ctx, &w).unwrap();
    let xb = ctx.upload_f32("x", &[0.0; 9 * 32]);
    let yb = poisoned(&ctx, 9 * 16);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    let err = matmul_with(
        &ctx,
        &mut enc,
        &Linear::new(&xb, &m, &yb, 9),
        Kernel::Vector,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("at most 8 tokens"), "{err}");
}

#[test]
fn embedding_gather_decodes_rows_and_accumulates() {
    let ctx = gpu();
    for ty in [
        GgmlType::Q8_0,
        GgmlType::F16,
        GgmlType::Q4_1,
        GgmlType::Q6K,
        GgmlType::IQ4XS,
        GgmlType::MXFP4,
    ] {
        let vocab = 37;
        let width = if ty.block_values() == 256 { 256 } else { 64 };
        let w = weight_of_type(vocab, width, ty, 3);
        let wf = w.to_f32();
        let m = GpuMatrix::upload(&ctx, &w).unwrap();
        let ids: Vec<u32> = vec![5, 0, 36, 5, 17];
        let idb = ctx.upload("ids", &u32_bytes(&ids));
        let base = Rng::new(8).vec(ids.len() * width, 1.0, 0.0);
        // Whole rows, and a column range (a layer's share of Gemma 4's per-layer table).
        let block = ty.block_values();
        let mut cases = vec![(false, None), (true, None)];
        if width > block {
            cases.push((true, Some((block, width - block))));
        }
        for (accumulate, cols) in cases {
            let (c0, n) = cols.unwrap_or((0, width));
            let y = if accumulate {
                ctx.upload_f32("y", &base[..ids.len() * n])
            } else {
                poisoned(&ctx, ids.len() * n)
            };
            let got = run(&ctx, &y, |enc| {
                ops::embed::embed(&ctx, enc, &m, &idb, &y, ids.len(), accumulate, cols).unwrap()
            });
            let want: Vec<f64> = ids
                .iter()
                .enumerate()
                .flat_map(|(r, &id)| {
                    let row = &wf[id as usize * width + c0..id as usize * width + c0 + n];
                    row.iter()
                        .enumerate()
                        .map(|(j, &v)| {
                            v as f64
                                + if accumulate {
                                    base[r * n + j] as f64
                                } else {
                                    0.0
                                }
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            assert_close(
                &got,
                &want,
                &format!("embed {ty:?} accumulate={accumulate} columns {cols:?}"),
            );
        }
    }
}

#[test]
fn norms_ragged_widths() {
    for (path, ctx) in gpu_paths() {
        for width in [70usize, 300, 577] {
            let rows = 5;
            let x = Rng::new(1).vec(rows * width, 2.0, 0.5);
            let w = Rng::new(2).vec(width, 0.2, 1.0);
            let b = Rng::new(3).vec(width, 0.2, 0.0);
            let eps = 1e-5f32;
            let (xb, wb, bb) = (
                ctx.upload_f32("x", &x),
                ctx.upload_f32("w", &w),
                ctx.upload_f32("b", &b),
            );
            let y = poisoned(&ctx, rows * width);
            let got = run(&ctx, &y, |enc| {
                ops::norm::norm(&ctx, enc, &xb, &wb, None, &y, rows, width, eps).unwrap()
            });
            let mut want = Vec::new();
            for r in x.chunks(width) {
                let ms = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / width as f64;
                want.extend(
                    r.iter()
                        .zip(&w)
                        .map(|(&v, &g)| v as f64 / (ms + eps as f64).sqrt() * g as f64),
                );
            }
            assert_close(&got, &want, &format!("[{path}] rms_norm width {width}"));
            let y = poisoned(&ctx, rows * width);
            let got = run(&ctx, &y, |enc| {
                ops::norm::norm(&ctx, enc, &xb, &wb, Some(&bb), &y, rows, width, eps).unwrap()
            });
            let mut want = Vec::new();
            for r in x.chunks(width) {
                let mean = r.iter().map(|&v| v as f64).sum::<f64>() / width as f64;
                let var = r.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / width as f64;
                want.extend(r.iter().zip(w.iter().zip(&b)).map(|(&v, (&g, &bb))| {
                    (v as f64 - mean) / (var + eps as f64).sqrt() * g as f64 + bb as f64
                }));
            }
            assert_close(&got, &want, &format!("[{path}] layer_norm width {width}"));
        }
    }
}

#[test]
fn rope_both_pairings_and_partial() {
    let ctx = gpu();
    let (t, heads, hd) = (9usize, 3usize, 16usize);
    let x = Rng::new(4).vec(t * heads * hd, 1.0, 0.0);
    for dims in [16usize, 4] {
        let half = dims / 2;
        let freqs: Vec<f32> = (0..half)
            .map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / dims as f32))
            .collect();
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for p in 0..t {
            for f in &freqs {
                cos.push((p as f32 * f).cos());
                sin.push((p as f32 * f).sin());
            }
        }
        let (cb, sb) = (ctx.upload_f32("cos", &cos), ctx.upload_f32("sin", &sin));
        for pairing in [RopePairing::Half, RopePairing::Interleaved] {
            let xb = ctx.upload_f32("x", &x);
            let got = run(&ctx, &xb, |enc| {
                ops::rope::rope(&ctx, enc, &xb, &cb, &sb, t, heads, hd, dims, pairing).unwrap()
            });
            let mut want: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            for p in 0..t {
                for h in 0..heads {
                    let base = (p * heads + h) * hd;
                    for i in 0..half {
                        let (a, b) = match pairing {
                            RopePairing::Half => (base + i, base + i + half),
                            RopePairing::Interleaved => (base + 2 * i, base + 2 * i + 1),
                        };
                        let (c, s) = (cos[p * half + i] as f64, sin[p * half + i] as f64);
                        let (x0, x1) = (x[a] as f64, x[b] as f64);
                        want[a] = x0 * c - x1 * s;
                        want[b] = x0 * s + x1 * c;
                    }
                }
            }
            assert_close(&got, &want, &format!("rope {pairing:?} over {dims} dims"));
        }
    }
}

/// Reference attention for one sequence: probabilities [h][q][key] and values [q][h][d].
#[allow(clippy::too_many_arguments)]
fn attention_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    sh: &AttnShape,
    q_row: usize,
    k_row: usize,
    sinks: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let (t, nh, nkv, hd, keys) = (sh.seq, sh.heads, sh.kv_heads, sh.head_dim, sh.keys);
    let mut probs = vec![0f64; nh * t * keys];
    let mut out = vec![0f64; t * nh * hd];
    for h in 0..nh {
        let kvh = h / (nh / nkv);
        for qi in 0..t {
            let pos = sh.past + qi;
            let allowed =
                |key: usize| !sh.causal || (key <= pos && sh.window.is_none_or(|w| pos - key < w));
            let scores: Vec<f64> = (0..keys)
                .map(|key| {
                    if !allowed(key) {
                        return f64::NEG_INFINITY;
                    }
                    let s = (0..hd)
                        .map(|d| {
                            q[((q_row + qi) * nh + h) * hd + d] as f64
                                * k[((k_row + key) * nkv + kvh) * hd + d] as f64
                        })
                        .sum::<f64>()
                        * sh.scale as f64;
                    match sh.softcap {
                        Some(c) => c as f64 * (s / c as f64).tanh(),
                        None => s,
                    }
                })
                .collect();
            // A sink is a key of that score and no value.
            let sink = sinks.map_or(f64::NEG_INFINITY, |s| s[h] as f64);
            let m = scores.iter().cloned().fold(sink, f64::max);
            let z: f64 = scores.iter().map(|s| (s - m).exp()).sum::<f64>() + (sink - m).exp();
            for key in 0..keys {
                let p = (scores[key] - m).exp() / z;
                probs[(h * t + qi) * keys + key] = p;
                for d in 0..hd {
                    out[(qi * nh + h) * hd + d] +=
                        p * v[((k_row + key) * nkv + kvh) * hd + d] as f64;
                }
            }
        }
    }
    (probs, out)
}

/// The fused kernel, with and without the probabilities written, over several key tiles, two
/// sequences whose cache rows are strided, cache offsets, windows, soft-caps, grouped heads and head
/// sizes up to the largest (256).
#[test]
fn fused_attention_with_and_without_probabilities() {
    for (path, ctx) in gpu_paths() {
        // (queries, past keys, causal, window, softcap, heads, kv heads, head dim)
        for (t, past, causal, window, softcap, nh, nkv, hd) in [
            (13usize, 0usize, true, None, None, 4usize, 2usize, 16usize),
            (13, 0, false, None, None, 4, 2, 16),
            (13, 0, true, Some(4), Some(5.0f32), 4, 2, 16),
            (3, 6, true, Some(5), None, 4, 2, 16),
            (70, 80, true, None, None, 2, 1, 80),
            (67, 0, true, Some(40), None, 3, 3, 64),
            (2, 130, true, None, Some(30.0), 2, 1, 256),
            (1, 200, true, None, None, 6, 2, 8),
            // Gemma 4's global heads (512) and an odd size past one slot's multiple.
            (3, 9, true, None, None, 2, 1, 512),
            (2, 5, true, Some(4), None, 2, 2, 328),
        ] {
            let keys = past + t;
            let batch = 2;
            let stride = keys + 2;
            let q = Rng::new(10).vec(batch * t * nh * hd, 1.0, 0.0);
            let k = Rng::new(11).vec(batch * stride * nkv * hd, 1.0, 0.0);
            let v = Rng::new(12).vec(batch * stride * nkv * hd, 1.0, 0.0);
            let sh = AttnShape {
                batch,
                seq: t,
                past,
                keys,
                key_stride: stride,
                heads: nh,
                kv_heads: nkv,
                head_dim: hd,
                scale: 0.25,
                softcap,
                window,
                causal,
                layer: 0,
                sinks: false,
            };
            let (qb, kb, vb) = (
                ctx.upload_f32("q", &q),
                ctx.upload_f32("k", &k),
                ctx.upload_f32("v", &v),
            );
            let what = format!(
                "[{path}] attention t={t} past={past} causal={causal} window={window:?} softcap={softcap:?} heads {nh}/{nkv}x{hd}"
            );
            use ops::attention::AttnKernel;
            let mut kernels = vec![AttnKernel::PerQuery];
            if hd <= ops::attention::TILED_HEAD_DIM {
                kernels.push(AttnKernel::Tiled);
            }
            // Split keys (decoding over many keys) only without probabilities.
            let runs = kernels
                .iter()
                .flat_map(|&k| [(false, k), (true, k)])
                .chain([(false, AttnKernel::Split(3)), (false, AttnKernel::Split(7))]);
            // Every kernel with and without attention sinks (gpt-oss).
            let sink_values: Vec<f32> = (0..nh).map(|h| h as f32 * 0.7 - 1.0).collect();
            let sink_buf = ctx.upload_f32("sinks", &sink_values);
            let runs = runs.flat_map(|r| [(r, false), (r, true)]);
            for ((with_probs, kernel), with_sinks) in runs {
                let sinks = with_sinks.then_some(&sink_buf);
                let want_sinks = with_sinks.then_some(&sink_values[..]);
                let out = poisoned(&ctx, batch * t * nh * hd);
                let probs = poisoned(&ctx, batch * nh * t * keys);
                let got = run(&ctx, &out, |enc| {
                    let p = with_probs.then_some(&probs);
                    let bufs = [&qb, &kb, &vb, &out];
                    ops::attention::attention_with(&ctx, enc, bufs, p, sinks, &sh, kernel).unwrap()
                });
                let got_p = run(&ctx, &probs, |_| {});
                let what = format!("{what} {kernel:?} sinks {with_sinks}");
                for b in 0..batch {
                    let (want_p, want) =
                        attention_reference(&q, &k, &v, &sh, b * t, b * stride, want_sinks);
                    let span = b * t * nh * hd..(b + 1) * t * nh * hd;
                    assert_close(
                        &got[span],
                        &want,
                        &format!("{what} probs {with_probs} batch {b}"),
                    );
                    let span = b * nh * t * keys..(b + 1) * nh * t * keys;
                    if with_probs {
                        assert_close(
                            &got_p[span],
                            &want_p,
                            &format!("{what} probabilities batch {b}"),
                        );
                    } else {
                        assert!(
                            got_p[span].iter().all(|p| p.is_nan()),
                            "{what}: probabilities written"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn attention_refuses_heads_larger_than_the_kernel() {
    let ctx = gpu();
    let sh = AttnShape {
        batch: 1,
        seq: 1,
        past: 0,
        keys: 1,
        key_stride: 1,
        heads: 1,
        kv_heads: 1,
        head_dim: 576,
        scale: 1.0,
        softcap: None,
        window: None,
        layer: 0,
        sinks: false,
        causal: true,
    };
    let b = ctx.upload_f32("x", &[0.0; 576]);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    let err = ops::attention::attention(&ctx, &mut enc, &b, &b, &b, &b, None, None, &sh)
        .unwrap_err()
        .to_string();
    assert!(err.contains("up to 512"), "{err}");
}

fn erf_series(x: f64) -> f64 {
    if x.abs() > 6.0 {
        return x.signum();
    }
    let mut sum = 0.0f64;
    let mut term = x;
    let mut n = 0.0f64;
    while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 3.0 {
        sum += term / (2.0 * n + 1.0);
        n += 1.0;
        term *= -x * x / n;
        if n > 200.0 {
            break;
        }
    }
    2.0 / std::f64::consts::PI.sqrt() * sum
}

fn gelu_tanh(v: f64) -> f64 {
    0.5 * v * (1.0 + (0.7978845608028654 * (v + 0.044715 * v.powi(3))).tanh())
}

#[test]
fn elementwise_ops() {
    let ctx = gpu();
    let n = 1000;
    let x = Rng::new(20).vec(n, 2.0, 0.0);
    let up = Rng::new(21).vec(n, 1.0, 0.0);
    for act in [Activation::GeluTanh, Activation::GeluErf] {
        let xb = ctx.upload_f32("x", &x);
        let got = run(&ctx, &xb, |enc| {
            ops::elementwise::gelu(&ctx, enc, &xb, n, act).unwrap()
        });
        let want: Vec<f64> = x
            .iter()
            .map(|&v| {
                let v = v as f64;
                match act {
                    Activation::GeluTanh => gelu_tanh(v),
                    _ => 0.5 * v * (1.0 + erf_series(v / std::f64::consts::SQRT_2)),
                }
            })
            .collect();
        assert_close(&got, &want, &format!("gelu {act:?}"));
    }
    for x_len in [n, 10] {
        let yb = ctx.upload_f32("y", &up);
        let xb = ctx.upload_f32("x", &x);
        let got = run(&ctx, &yb, |enc| {
            ops::elementwise::add(&ctx, enc, &xb, &yb, n, x_len).unwrap()
        });
        let want: Vec<f64> = (0..n).map(|i| up[i] as f64 + x[i % x_len] as f64).collect();
        assert_close(&got, &want, &format!("add x_len {x_len}"));
    }
    for x_len in [n, 8] {
        let yb = ctx.upload_f32("y", &up);
        let xb = ctx.upload_f32("x", &x);
        let got = run(&ctx, &yb, |enc| {
            ops::elementwise::mul(&ctx, enc, &xb, &yb, n, x_len).unwrap()
        });
        let want: Vec<f64> = (0..n).map(|i| up[i] as f64 * x[i % x_len] as f64).collect();
        assert_close(&got, &want, &format!("mul x_len {x_len}"));
    }
    for softcap in [false, true] {
        let xb = ctx.upload_f32("x", &x);
        let got = run(&ctx, &xb, |enc| {
            ops::elementwise::scale(&ctx, enc, &xb, n, 1.5, softcap).unwrap()
        });
        let want: Vec<f64> = x
            .iter()
            .map(|&v| {
                if softcap {
                    1.5 * (v as f64 / 1.5).tanh()
                } else {
                    v as f64 * 1.5
                }
            })
            .collect();
        assert_close(&got, &want, &format!("scale softcap={softcap}"));
    }
}

#[test]
fn edits_add_set_zero_mean_on_rows_and_columns() {
    let ctx = gpu();
    let (rows, width) = (7usize, 10usize);
    let x = Rng::new(40).vec(rows * width, 1.0, 0.0);
    let vector: Vec<f32> = (0..4).map(|i| i as f32 - 1.5).collect();
    let set_values: Vec<f32> = (0..8).map(|i| i as f32 * 0.5).collect();
    let cases: Vec<(&str, EditKind<'_>)> = vec![
        (
            "add",
            EditKind::Add {
                vector: &vector,
                scale: -2.0,
            },
        ),
        ("set", EditKind::Set(set_values.clone())),
        ("zero", EditKind::Zero),
        (
            "mean",
            EditKind::Mean {
                over: vec![0, 1, 2, 3, 4],
            },
        ),
    ];
    for (name, kind) in cases {
        let e = Edit {
            rows: vec![1, 4],
            col0: 3,
            ncols: 4,
            kind,
        };
        let mut want: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        for (i, &r) in e.rows.iter().enumerate() {
            for c in 0..4 {
                let at = r * width + 3 + c;
                want[at] = match &e.kind {
                    EditKind::Add { vector, scale } => x[at] as f64 + (*scale * vector[c]) as f64,
                    EditKind::Set(v) => v[i * 4 + c] as f64,
                    EditKind::Zero => 0.0,
                    EditKind::Mean { over } => {
                        over.iter()
                            .map(|&o| x[o * width + 3 + c] as f64)
                            .sum::<f64>()
                            / over.len() as f64
                    }
                    EditKind::Feature { .. } => unreachable!("not among these cases"),
                };
            }
        }
        let xb = ctx.upload_f32("x", &x);
        let got = run(&ctx, &xb, |enc| {
            ops::edit::edit(&ctx, enc, &xb, width, &e, None).unwrap()
        });
        assert_close(&got, &want, &format!("edit {name}"));
    }
}

/// An SAE feature clamped on some rows, the error term kept (`feature_edit.wgsl`): ReLU, JumpReLU
/// and TopK (the feature ranked first, k-th and just outside the top k on row 0), with and
/// without b_dec subtracted, d_in and d_sae ragged, against f64; and each as a transcoder's, read
/// from another buffer and written into a site of another width.
#[test]
fn feature_clamps_relu_jumprelu_topk_against_f64() {
    use prism_analysis::intervene::{FeatureEncoder, FeatureRule, FeatureSource};
    use std::sync::Arc;
    let ctx = gpu();
    let (rows, n, m, k) = (6usize, 300usize, 700usize, 20usize);
    let mut rng = Rng::new(41);
    let x = rng.vec(rows * n, 1.0, 0.0);
    let w_enc = rng.vec(n * m, 0.1, 0.0);
    let b_enc = rng.vec(m, 0.3, 0.0);
    let b_dec = rng.vec(n, 0.2, 0.0);
    let direction = rng.vec(n, 1.0, 0.0);
    let edit_rows = vec![0usize, 2, 5];
    let input = |r: usize, i: usize, sub: bool| {
        x[r * n + i] as f64 - if sub { b_dec[i] as f64 } else { 0.0 }
    };
    let pre = |r: usize, f: usize, sub: bool| {
        b_enc[f] as f64
            + (0..n)
                .map(|i| input(r, i, sub) * w_enc[i * m + f] as f64)
                .sum::<f64>()
    };
    // Features of row 0 by pre-activation, largest first.
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| pre(0, b, true).total_cmp(&pre(0, a, true)));
    let target = 2.5f32;
    for (rule, j, sub) in [
        (FeatureRule::Relu, order[0], true),
        (FeatureRule::Relu, order[m - 1], false),
        (FeatureRule::JumpRelu(0.05), order[3], true),
        (FeatureRule::TopK(k), order[0], true),
        (FeatureRule::TopK(k), order[k - 1], true),
        (FeatureRule::TopK(k), order[k], true),
        (FeatureRule::TopK(k), order[k + 5], false),
    ] {
        let (we, be) = match rule {
            FeatureRule::TopK(_) => (w_enc.clone(), b_enc.clone()),
            _ => ((0..n).map(|i| w_enc[i * m + j]).collect(), vec![b_enc[j]]),
        };
        let encoder = FeatureEncoder {
            site: prism_analysis::intervene::Site::ResidPost,
            layer: 0,
            feature: j,
            d_sae: m,
            w_enc: Arc::new(we),
            b_enc: Arc::new(be),
            b_dec_in: sub.then(|| Arc::new(b_dec.clone())),
            rule,
            direction: direction.clone(),
            source: FeatureSource::Site,
        };
        let mut want: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mut f_of = vec![0f64; rows];
        for &r in &edit_rows {
            let p = pre(r, j, sub);
            let f = match rule {
                FeatureRule::Relu => p.max(0.0),
                FeatureRule::JumpRelu(t) => {
                    if p > t as f64 {
                        p
                    } else {
                        0.0
                    }
                }
                FeatureRule::TopK(k) => {
                    let above = (0..m).filter(|&g| g != j && pre(r, g, sub) > p).count();
                    if above < k {
                        p.max(0.0)
                    } else {
                        0.0
                    }
                }
            };
            f_of[r] = f;
            for i in 0..n {
                want[r * n + i] += (target as f64 - f) * direction[i] as f64;
            }
        }
        let e = Edit {
            rows: edit_rows.clone(),
            col0: 0,
            ncols: n,
            kind: EditKind::Feature {
                encoder: &encoder,
                target,
            },
        };
        let xb = ctx.upload_f32("x", &x);
        let got = run(&ctx, &xb, |enc| {
            ops::edit::edit(&ctx, enc, &xb, n, &e, None).unwrap()
        });
        let what = format!("feature clamp {rule:?} feature {j} (b_dec {sub})");
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-4 * w.abs().max(1.0),
                "{what}[{i}]: gpu {g} vs {w}"
            );
        }
        // As a transcoder: read from x, written into y `[rows, 170]` along a 170-wide direction.
        let width = 170;
        let y = rng.vec(rows * width, 1.0, 0.0);
        let out_dir = rng.vec(width, 1.0, 0.0);
        let tc = FeatureEncoder {
            direction: out_dir.clone(),
            source: FeatureSource::MlpIn,
            ..encoder.clone()
        };
        let e = Edit {
            rows: edit_rows.clone(),
            col0: 0,
            ncols: width,
            kind: EditKind::Feature {
                encoder: &tc,
                target,
            },
        };
        let yb = ctx.upload_f32("y", &y);
        // The SAE's edit above changed xb: the source is x afresh.
        let sb = ctx.upload_f32("source", &x);
        let got = run(&ctx, &yb, |enc| {
            ops::edit::edit(&ctx, enc, &yb, width, &e, Some(&sb)).unwrap()
        });
        for (i, &g) in got.iter().enumerate() {
            let (r, c) = (i / width, i % width);
            let mut w = y[i] as f64;
            if edit_rows.contains(&r) {
                w += (target as f64 - f_of[r]) * out_dir[c] as f64;
            }
            assert!(
                (g as f64 - w).abs() <= 1e-4 * w.abs().max(1.0),
                "transcoder {what}[{i}]: gpu {g} vs {w}"
            );
        }
        // The CPU's encoder of one feature gives the same activation.
        let row0: Vec<f32> = x[..n].to_vec();
        let cpu = encoder.activations(&row0)[0] as f64;
        let p = pre(0, j, sub);
        let expect0 = match rule {
            FeatureRule::TopK(_) if order.iter().position(|&g| g == j).unwrap() >= k => 0.0,
            FeatureRule::JumpRelu(t) if p <= t as f64 => 0.0,
            _ => p.max(0.0),
        };
        assert!(
            (cpu - expect0).abs() <= 1e-4,
            "{what}: cpu activation {cpu} vs {expect0}"
        );
    }
}

#[test]
fn logit_stats_match_f64() {
    for (path, ctx) in gpu_paths() {
        let (rows, vocab, k) = (6usize, 1001usize, 5usize);
        let mut logits = Rng::new(30).vec(rows * vocab, 3.0, 0.0);
        logits[2 * vocab + 7] = logits[2 * vocab + 9]; // a tie, resolved by the smaller id
        let targets: Vec<u32> = vec![3, 500, 9, 1000, 0, 77];
        let lb = ctx.upload_f32("logits", &logits);
        let tb = ctx.upload("targets", &u32_bytes(&targets));
        let stats = poisoned(&ctx, rows * 4);
        let ids = ctx.upload("ids", &vec![0xffu8; rows * k * 4]);
        let ps = poisoned(&ctx, rows * k);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        ops::logits::logit_stats(
            &ctx,
            &mut enc,
            &lb,
            &tb,
            (&stats, &ids, &ps),
            rows,
            vocab,
            k,
            0,
        )
        .unwrap();
        let st: Vec<wgpu::Buffer> = [&stats, &ids, &ps]
            .iter()
            .map(|b| ctx.staging("s", b.size()).unwrap())
            .collect();
        for (src, dst) in [&stats, &ids, &ps].iter().zip(&st) {
            enc.copy_buffer_to_buffer(src, 0, dst, 0, None);
        }
        let out = ctx.finish(enc, &[&st[0], &st[1], &st[2]]).unwrap();
        let (stats, ids, ps) = (f32s_from(&out[0]), u32s_from(&out[1]), f32s_from(&out[2]));
        for r in 0..rows {
            let row = &logits[r * vocab..(r + 1) * vocab];
            let s = prism_analysis::metrics::position_stats(row, targets[r]);
            let top = prism_analysis::metrics::top_k_softmax(row, k);
            assert!(
                (stats[r * 4 + 1] as f64 - s.entropy_bits).abs() < 1e-4,
                "[{path}] entropy row {r}"
            );
            assert!(
                (stats[r * 4 + 2] as f64 - s.surprisal_bits).abs() < 1e-4,
                "[{path}] surprisal row {r}"
            );
            assert_eq!(stats[r * 4 + 3] as usize, s.rank, "[{path}] rank row {r}");
            assert_eq!(
                ids[r * k..(r + 1) * k].to_vec(),
                top.iter().map(|t| t.id).collect::<Vec<_>>(),
                "[{path}] top ids row {r}"
            );
            for (g, w) in ps[r * k..(r + 1) * k].iter().zip(&top) {
                assert!((g - w.p).abs() < 1e-5, "[{path}] top p row {r}");
            }
        }
    }
}

#[test]
fn a_binding_too_large_is_refused_with_a_message() {
    let ctx = gpu();
    let big = ctx.buffer("big", (ctx.max_binding() / 4 + 16) as usize);
    let Ok(big) = big else {
        return; // the adapter cannot even allocate it: nothing to dispatch
    };
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    let err = ops::elementwise::scale(&ctx, &mut enc, &big, 16, 2.0, false).unwrap_err();
    assert!(err.to_string().contains("binds at once"), "{err}");
}

/// The fast path really stages f16: its result is the matmul with every weight rounded to f16
/// (within f32 accumulation), and not the exact one.
#[test]
fn the_fast_path_rounds_weights_to_f16_and_the_exact_path_does_not() {
    use ops::matmul::{matmul_with, Kernel, Linear};
    let (tokens, out, cols) = (20usize, 70usize, 96usize);
    let w = weight_of_type(out, cols, GgmlType::F32, 3);
    let wf = w.to_f32();
    let x = Rng::new(4).vec(tokens * cols, 1.0, 0.0);
    let reference = |round: bool| -> Vec<f64> {
        let mut y = vec![0f64; tokens * out];
        for t in 0..tokens {
            for o in 0..out {
                y[t * out + o] = (0..cols)
                    .map(|c| {
                        let wv = wf[o * cols + c];
                        let wv = if round {
                            half::f16::from_f32(wv).to_f64()
                        } else {
                            wv as f64
                        };
                        x[t * cols + c] as f64 * wv
                    })
                    .sum();
            }
        }
        y
    };
    let (exact, rounded) = (reference(false), reference(true));
    let mut seen = Vec::new();
    for (path, ctx) in gpu_paths() {
        seen.push(path);
        let m = GpuMatrix::upload(&ctx, &w).unwrap();
        let xb = ctx.upload_f32("x", &x);
        let yb = poisoned(&ctx, tokens * out);
        let l = Linear::new(&xb, &m, &yb, tokens);
        let got = run(&ctx, &yb, |enc| {
            matmul_with(&ctx, enc, &l, Kernel::Tiled).unwrap()
        });
        let dist = |want: &[f64]| {
            got.iter()
                .zip(want)
                .map(|(&g, &w)| (g as f64 - w).abs())
                .fold(0f64, f64::max)
        };
        let (to_exact, to_rounded) = (dist(&exact), dist(&rounded));
        if path == "fast" {
            assert!(
                to_rounded < 1e-5,
                "fast: {to_rounded} from the f16-rounded product"
            );
            assert!(
                to_exact > 1e-4,
                "fast: {to_exact} from the exact product (no rounding?)"
            );
        } else {
            assert!(to_exact < 1e-5, "{path}: {to_exact} from the exact product");
        }
    }
    eprintln!("paths on this adapter: {seen:?}");
}

/// The choice of paths, for devices this machine does not have: a path is taken only when its
/// feature is enabled, asked for and (subgroups) probed, and `prism info` says why not otherwise.
#[test]
fn feature_paths_are_never_chosen_without_their_feature() {
    use prism_analysis::backend::gpu::context::{choose_paths, PathRequest};
    use wgpu::Features as F;
    let all = F::SUBGROUP | F::SHADER_F16 | F::TIMESTAMP_QUERY;
    let fast = PathRequest {
        subgroups: true,
        fast: true,
    };
    // Everything there, asked for, probe passed.
    let (p, lines) = choose_paths(all, all, fast, Some(true), false);
    assert!(p.subgroups && p.f16_weights, "{lines:?}");
    // No f16 on the device: the exact mode, and the line says so.
    let (p, lines) = choose_paths(F::SUBGROUP, F::SUBGROUP, fast, Some(true), false);
    assert!(!p.f16_weights && p.subgroups);
    assert!(lines[2].contains("running the exact mode"), "{lines:?}");
    // Subgroups present but laid out differently from what the reductions assume.
    let (p, lines) = choose_paths(all, all, fast, Some(false), false);
    assert!(!p.subgroups);
    assert!(lines[1].contains("not runs of consecutive"), "{lines:?}");
    // Available on the adapter but not enabled on the device (not asked for).
    let (p, lines) = choose_paths(all, F::TIMESTAMP_QUERY, PathRequest::PLAIN, None, false);
    assert!(!p.subgroups && !p.f16_weights);
    assert!(lines[1].contains("PRISM_GPU_SUBGROUPS=off"), "{lines:?}");
    assert!(lines[2].contains("exact mode"), "{lines:?}");
    // Nothing at all.
    let (p, lines) = choose_paths(F::empty(), F::empty(), fast, None, false);
    assert!(!p.subgroups && !p.f16_weights);
    assert!(
        lines.iter().skip(1).all(|l| l.contains("absent")),
        "{lines:?}"
    );
    // Cooperative matrices: reported, never used (no kernel).
    let coop = F::EXPERIMENTAL_COOPERATIVE_MATRIX;
    let (_, lines) = choose_paths(coop, coop, fast, None, true);
    assert!(
        lines[3].contains("16x16x16 f16 available, not used"),
        "{lines:?}"
    );
}

#[test]
fn the_cooperative_matrix_probe_wants_16x16x16_f16_with_f32_accumulation() {
    use prism_analysis::backend::gpu::context::has_coop_16x16x16_f16;
    use wgpu::{CooperativeMatrixProperties as P, CooperativeScalarType as T};
    let shape = |m, ab, cr| P {
        m_size: m,
        n_size: 16,
        k_size: 16,
        ab_type: ab,
        cr_type: cr,
        saturating_accumulation: false,
    };
    assert!(has_coop_16x16x16_f16(&[
        shape(8, T::F16, T::F32),
        shape(16, T::F16, T::F32)
    ]));
    assert!(!has_coop_16x16x16_f16(&[shape(16, T::F16, T::F16)]));
    assert!(!has_coop_16x16x16_f16(&[shape(8, T::F16, T::F32)]));
    assert!(!has_coop_16x16x16_f16(&[]));
}

/// The path variables: their values, and bad ones refused by name.
#[test]
fn path_variables_are_checked() {
    use prism_analysis::backend::gpu::context::PathRequest;
    let r = PathRequest::from_values(None, None).unwrap();
    assert!(
        r.subgroups && !r.fast,
        "defaults: subgroups where probed, exact mode"
    );
    let r = PathRequest::from_values(Some("fast"), Some("off")).unwrap();
    assert!(!r.subgroups && r.fast);
    let err = PathRequest::from_values(Some("fastest"), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("PRISM_GPU_MODE") && err.contains("exact or fast"),
        "{err}"
    );
    let err = PathRequest::from_values(None, Some("maybe"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("PRISM_GPU_SUBGROUPS"), "{err}");
}

/// The automatic kernel choices, which on this machine (a software adapter) only partly run.
#[test]
fn automatic_kernel_choices() {
    use ops::attention::auto_parts;
    use ops::matmul::{auto_kernel, Kernel};
    // Decoding: the matrix-vector kernel, on any adapter.
    assert_eq!(auto_kernel(576, 1, false), Kernel::Vector);
    assert_eq!(auto_kernel(576, 8, true), Kernel::Vector);
    // SmolLM2's 576 x 576 at 512 tokens: 72 large tiles, too few for a GPU; a software adapter
    // keeps them.
    assert_eq!(auto_kernel(576, 512, false), Kernel::TiledSmall);
    assert_eq!(auto_kernel(576, 512, true), Kernel::Tiled);
    // A 1B model's 8192-wide MLP at 512 tokens: 1024 large tiles.
    assert_eq!(auto_kernel(8192, 512, false), Kernel::Tiled);
    let sh = |seq, keys, batch| AttnShape {
        batch,
        seq,
        past: keys - seq,
        keys,
        key_stride: keys,
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
        scale: 0.125,
        softcap: None,
        window: None,
        causal: true,
        layer: 0,
        sinks: false,
    };
    assert_eq!(auto_parts(&sh(1, 100, 1), false), 1, "short context");
    assert_eq!(auto_parts(&sh(1, 520, 1), false), 2);
    assert_eq!(auto_parts(&sh(1, 8192, 1), false), 32, "at most 32 parts");
    assert_eq!(
        auto_parts(&sh(1, 8192, 1), true),
        1,
        "never with probabilities"
    );
    assert_eq!(
        auto_parts(&sh(1, 8192, 30), false),
        1,
        "enough workgroups already"
    );
}
