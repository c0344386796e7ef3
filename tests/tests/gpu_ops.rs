//! Every GPU op against a plain CPU reference on seeded random inputs of ragged sizes (not
//! multiples of the workgroup size), with the output buffer poisoned (NaN) first.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use prism_analysis::backend::gpu::context::{f32s_from, u32_bytes, u32s_from, GpuContext};
use prism_analysis::backend::gpu::upload::GpuMatrix;
use prism_analysis::backend::rope_tables;
use prism_analysis::weights::{Weight, WeightData};
use prism_shaders::Shader;
use prism_tests::synth::Rng;
use prism_tests::*;

fn poisoned(ctx: &GpuContext, len: usize) -> wgpu::Buffer {
    ctx.upload_f32("poisoned output", &vec![f32::NAN; len])
}

/// Runs one dispatch and reads `out` back.
fn run(
    ctx: &GpuContext,
    shader: Shader,
    params: &[u32],
    buffers: &[&wgpu::Buffer],
    groups: (u32, u32, u32),
    out: &wgpu::Buffer,
) -> Vec<u8> {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    ctx.dispatch(&mut enc, shader, params, buffers, groups);
    let staging = ctx.staging("out", out.size()).unwrap();
    enc.copy_buffer_to_buffer(out, 0, &staging, 0, None);
    ctx.finish(enc, &[&staging]).unwrap().remove(0)
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

fn weight(rows: usize, cols: usize, ty: GgmlDType, seed: u64) -> Weight {
    let data = Rng::new(seed).vec(rows * cols, 0.5, 0.0);
    let t = Tensor::from_vec(data, (rows, cols), &Device::Cpu).unwrap();
    let wd = match ty {
        GgmlDType::F32 => WeightData::Dense(t),
        GgmlDType::F16 => WeightData::Dense(t.to_dtype(candle_core::DType::F16).unwrap()),
        GgmlDType::BF16 => WeightData::Dense(t.to_dtype(candle_core::DType::BF16).unwrap()),
        q => WeightData::Quantized(std::sync::Arc::new(QTensor::quantize(&t, q).unwrap())),
    };
    Weight {
        name: format!("w{ty:?}"),
        shape: vec![rows, cols],
        data: wd,
    }
}

fn f32_matrix(w: &Weight) -> Vec<f32> {
    w.to_f32()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn matmul_every_format_ragged_with_bias_and_accumulate() {
    let ctx = gpu();
    for (ty, cols) in [
        (GgmlDType::F32, 70),
        (GgmlDType::F16, 70),
        (GgmlDType::BF16, 38),
        (GgmlDType::Q8_0, 96),
        (GgmlDType::Q4_0, 96),
        (GgmlDType::Q4_1, 160),
    ] {
        for (tokens, out, accumulate) in [(1usize, 67usize, false), (13, 67, true), (9, 130, false)]
        {
            let w = weight(out, cols, ty, 7 + tokens as u64);
            let wf = f32_matrix(&w);
            let x = Rng::new(99).vec(tokens * cols, 1.0, 0.0);
            let bias = Rng::new(5).vec(out, 0.3, 0.0);
            let y0 = Rng::new(6).vec(tokens * out, 1.0, 0.0);
            let m = GpuMatrix::upload(&ctx, &w).unwrap();
            let xb = ctx.upload_f32("x", &x);
            let bb = ctx.upload_f32("bias", &bias);
            let yb = if accumulate {
                ctx.upload_f32("y", &y0)
            } else {
                poisoned(&ctx, tokens * out)
            };
            let mut want = vec![0f64; tokens * out];
            for t in 0..tokens {
                for o in 0..out {
                    let dot: f64 = (0..cols)
                        .map(|i| x[t * cols + i] as f64 * wf[o * cols + i] as f64)
                        .sum();
                    want[t * out + o] = dot
                        + bias[o] as f64
                        + if accumulate {
                            y0[t * out + o] as f64
                        } else {
                            0.0
                        };
                }
            }
            let c = &m.chunks[0];
            let params = [
                tokens as u32,
                cols as u32,
                out as u32,
                c.rows as u32,
                0,
                m.fmt,
                c.nblocks,
                1,
                accumulate as u32,
            ];
            let got = f32s_from(&run(
                &ctx,
                Shader::Matmul,
                &params,
                &[&c.buffer, &xb, &bb, &yb],
                (out.div_ceil(64) as u32, tokens.div_ceil(8) as u32, 1),
                &yb,
            ));
            assert_close(
                &got,
                &want,
                &format!("matmul {ty:?} {tokens}x{cols}->{out}"),
            );
        }
    }
}

#[test]
fn embedding_gather_decodes_rows() {
    let ctx = gpu();
    for ty in [GgmlDType::Q8_0, GgmlDType::F16, GgmlDType::Q4_1] {
        let (vocab, width) = (37, 64);
        let w = weight(vocab, width, ty, 3);
        let wf = f32_matrix(&w);
        let m = GpuMatrix::upload(&ctx, &w).unwrap();
        let ids: Vec<u32> = vec![5, 0, 36, 5, 17];
        let idb = ctx.upload("ids", &u32_bytes(&ids));
        let y = poisoned(&ctx, ids.len() * width);
        let c = &m.chunks[0];
        let params = [
            ids.len() as u32,
            width as u32,
            m.fmt,
            c.nblocks,
            0,
            vocab as u32,
        ];
        let got = f32s_from(&run(
            &ctx,
            Shader::Embed,
            &params,
            &[&c.buffer, &idb, &y],
            (1, ids.len() as u32, 1),
            &y,
        ));
        let want: Vec<f64> = ids
            .iter()
            .flat_map(|&id| {
                wf[id as usize * width..(id as usize + 1) * width]
                    .iter()
                    .map(|&v| v as f64)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_close(&got, &want, &format!("embed {ty:?}"));
    }
}

#[test]
fn norms_ragged_widths() {
    let ctx = gpu();
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
        let params = [rows as u32, width as u32, eps.to_bits(), 0];
        let got = f32s_from(&run(
            &ctx,
            Shader::RmsNorm,
            &params,
            &[&xb, &wb, &y],
            (rows as u32, 1, 1),
            &y,
        ));
        let mut want = Vec::new();
        for r in x.chunks(width) {
            let ms = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / width as f64;
            want.extend(
                r.iter()
                    .zip(&w)
                    .map(|(&v, &g)| v as f64 / (ms + eps as f64).sqrt() * g as f64),
            );
        }
        assert_close(&got, &want, &format!("rms_norm width {width}"));
        let y = poisoned(&ctx, rows * width);
        let got = f32s_from(&run(
            &ctx,
            Shader::LayerNorm,
            &params,
            &[&xb, &wb, &bb, &y],
            (rows as u32, 1, 1),
            &y,
        ));
        let mut want = Vec::new();
        for r in x.chunks(width) {
            let mean = r.iter().map(|&v| v as f64).sum::<f64>() / width as f64;
            let var = r.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / width as f64;
            want.extend(r.iter().zip(w.iter().zip(&b)).map(|(&v, (&g, &bb))| {
                (v as f64 - mean) / (var + eps as f64).sqrt() * g as f64 + bb as f64
            }));
        }
        assert_close(&got, &want, &format!("layer_norm width {width}"));
    }
}

#[test]
fn rope_both_pairings() {
    let ctx = gpu();
    let (t, heads, hd) = (9usize, 3usize, 16usize);
    let x = Rng::new(4).vec(t * heads * hd, 1.0, 0.0);
    let (cos, sin) = rope_tables(t, hd, 10000.0);
    let (cb, sb) = (ctx.upload_f32("cos", &cos), ctx.upload_f32("sin", &sin));
    for pairing in [0u32, 1] {
        let xb = ctx.upload_f32("x", &x);
        let got = f32s_from(&run(
            &ctx,
            Shader::Rope,
            &[t as u32, heads as u32, hd as u32, pairing],
            &[&cb, &sb, &xb],
            (1, heads as u32, t as u32),
            &xb,
        ));
        let mut want: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let half = hd / 2;
        for p in 0..t {
            for h in 0..heads {
                let base = (p * heads + h) * hd;
                for i in 0..half {
                    let (a, b) = if pairing == 0 {
                        (base + i, base + i + half)
                    } else {
                        (base + 2 * i, base + 2 * i + 1)
                    };
                    let (c, s) = (cos[p * half + i] as f64, sin[p * half + i] as f64);
                    let (x0, x1) = (x[a] as f64, x[b] as f64);
                    want[a] = x0 * c - x1 * s;
                    want[b] = x0 * s + x1 * c;
                }
            }
        }
        assert_close(&got, &want, &format!("rope pairing {pairing}"));
    }
}

#[test]
fn attention_scores_softmax_and_values_in_query_blocks() {
    let ctx = gpu();
    let (t, nh, nkv, hd) = (13usize, 4usize, 2usize, 16usize);
    let q = Rng::new(10).vec(t * nh * hd, 1.0, 0.0);
    let k = Rng::new(11).vec(t * nkv * hd, 1.0, 0.0);
    let v = Rng::new(12).vec(t * nkv * hd, 1.0, 0.0);
    let scale = 0.25f32;
    let (qb, kb, vb) = (
        ctx.upload_f32("q", &q),
        ctx.upload_f32("k", &k),
        ctx.upload_f32("v", &v),
    );
    for (causal, window) in [(true, u32::MAX), (false, u32::MAX), (true, 4)] {
        // Reference probabilities [h][q][k] and context [q][h][d].
        let mut probs = vec![0f64; nh * t * t];
        let mut ctx_ref = vec![0f64; t * nh * hd];
        for h in 0..nh {
            let kvh = h / (nh / nkv);
            for qi in 0..t {
                let allowed = |key: usize| !causal || (key <= qi && ((qi - key) as u32) < window);
                let scores: Vec<f64> = (0..t)
                    .map(|key| {
                        if allowed(key) {
                            (0..hd)
                                .map(|d| {
                                    q[(qi * nh + h) * hd + d] as f64
                                        * k[(key * nkv + kvh) * hd + d] as f64
                                })
                                .sum::<f64>()
                                * scale as f64
                        } else {
                            f64::NEG_INFINITY
                        }
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                for key in 0..t {
                    let p = (scores[key] - m).exp() / z;
                    probs[(h * t + qi) * t + key] = p;
                    for d in 0..hd {
                        ctx_ref[(qi * nh + h) * hd + d] += p * v[(key * nkv + kvh) * hd + d] as f64;
                    }
                }
            }
        }
        // Two query blocks: rows 0..8 and 8..13.
        let out = poisoned(&ctx, t * nh * hd);
        let mut got_probs = vec![0f32; nh * t * t];
        for (q0, qr) in [(0usize, 8usize), (8, 5)] {
            let s = poisoned(&ctx, nh * qr * t);
            let params = [
                qr as u32,
                q0 as u32,
                t as u32,
                nh as u32,
                nkv as u32,
                hd as u32,
                causal as u32,
                window,
                scale.to_bits(),
            ];
            run(
                &ctx,
                Shader::AttentionScores,
                &params,
                &[&qb, &kb, &s],
                (1, qr as u32, nh as u32),
                &s,
            );
            let p = f32s_from(&run(
                &ctx,
                Shader::Softmax,
                &[(nh * qr) as u32, t as u32],
                &[&s],
                ((nh * qr) as u32, 1, 1),
                &s,
            ));
            for h in 0..nh {
                for r in 0..qr {
                    got_probs[(h * t + q0 + r) * t..(h * t + q0 + r + 1) * t]
                        .copy_from_slice(&p[(h * qr + r) * t..(h * qr + r + 1) * t]);
                }
            }
            run(
                &ctx,
                Shader::AttentionValues,
                &[
                    qr as u32, q0 as u32, t as u32, nh as u32, nkv as u32, hd as u32,
                ],
                &[&s, &vb, &out],
                (1, qr as u32, nh as u32),
                &out,
            );
        }
        assert_close(
            &got_probs,
            &probs,
            &format!("attention probabilities causal={causal} window={window}"),
        );
        let staging = ctx.staging("ctx", out.size()).unwrap();
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&out, 0, &staging, 0, None);
        let got = f32s_from(&ctx.finish(enc, &[&staging]).unwrap()[0]);
        assert_close(&got, &ctx_ref, &format!("attention values causal={causal}"));
    }
}

#[test]
fn elementwise_ops() {
    let ctx = gpu();
    let n = 1000;
    let x = Rng::new(20).vec(n, 2.0, 0.0);
    let up = Rng::new(21).vec(n, 1.0, 0.0);
    for mode in [0u32, 1] {
        let xb = ctx.upload_f32("x", &x);
        let got = f32s_from(&run(
            &ctx,
            Shader::Gelu,
            &[n as u32, mode],
            &[&xb],
            ctx.linear_groups(n, 256),
            &xb,
        ));
        let want: Vec<f64> = x
            .iter()
            .map(|&v| {
                let v = v as f64;
                if mode == 0 {
                    0.5 * v * (1.0 + (0.7978845608028654 * (v + 0.044715 * v.powi(3))).tanh())
                } else {
                    0.5 * v * (1.0 + libm_erf(v / std::f64::consts::SQRT_2))
                }
            })
            .collect();
        assert_close(&got, &want, &format!("gelu mode {mode}"));
    }
    let gb = ctx.upload_f32("gate", &x);
    let ub = ctx.upload_f32("up", &up);
    let got = f32s_from(&run(
        &ctx,
        Shader::SiluGate,
        &[n as u32],
        &[&gb, &ub],
        ctx.linear_groups(n, 256),
        &gb,
    ));
    let want: Vec<f64> = x
        .iter()
        .zip(&up)
        .map(|(&g, &u)| g as f64 / (1.0 + (-g as f64).exp()) * u as f64)
        .collect();
    assert_close(&got, &want, "silu_gate");
    for x_len in [n, 10] {
        let yb = ctx.upload_f32("y", &up);
        let xb = ctx.upload_f32("x", &x);
        let got = f32s_from(&run(
            &ctx,
            Shader::Add,
            &[n as u32, x_len as u32],
            &[&xb, &yb],
            ctx.linear_groups(n, 256),
            &yb,
        ));
        let want: Vec<f64> = (0..n).map(|i| up[i] as f64 + x[i % x_len] as f64).collect();
        assert_close(&got, &want, &format!("add x_len {x_len}"));
    }
}

/// erf by its series / continued fraction, in f64, as the reference for the shader's approximation.
fn libm_erf(x: f64) -> f64 {
    // Abramowitz-Stegun 7.1.26 is what the shader uses; the reference must be independent:
    // the Taylor series converges fast for |x| < 3, and erf is 1 to double precision beyond 6.
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

#[test]
fn logit_stats_match_f64() {
    let ctx = gpu();
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
    ctx.dispatch(
        &mut enc,
        Shader::LogitStats,
        &[rows as u32, vocab as u32, k as u32, 0],
        &[&lb, &tb, &stats, &ids, &ps],
        (rows as u32, 1, 1),
    );
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
            "entropy row {r}"
        );
        assert!(
            (stats[r * 4 + 2] as f64 - s.surprisal_bits).abs() < 1e-4,
            "surprisal row {r}"
        );
        assert_eq!(stats[r * 4 + 3] as usize, s.rank, "rank row {r}");
        assert_eq!(
            ids[r * k..(r + 1) * k].to_vec(),
            top.iter().map(|t| t.id).collect::<Vec<_>>(),
            "top ids row {r}"
        );
        for (g, w) in ps[r * k..(r + 1) * k].iter().zip(&top) {
            assert!((g - w.p).abs() < 1e-5, "top p row {r}");
        }
    }
}
