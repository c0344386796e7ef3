//! The GPU backend: the same `ArchSpec` as the CPU backend, executed by Prism's WGSL shaders
//! through wgpu. Every op of a forward pass is recorded into one command buffer, and everything
//! asked for comes back in one readback at the end.

pub mod context;
pub mod upload;

use std::sync::Arc;

use prism_shaders::Shader;

use self::context::{f32s_from, u32_bytes, u32s_from, GpuContext};
use self::upload::{upload_vector, GpuMatrix};
use super::{rope_tables, AttentionMaps, Backend, Capture, ForwardOutput, IdProb, RowStats};
use crate::arch::{Activation, ArchSpec, NormKind, Positions, RopePairing};
use crate::checkpoint::Model;
use crate::error::{PrismError, Result};
use crate::weights::{Linear, NormWeights};

struct GpuLinear {
    w: GpuMatrix,
    bias: Option<wgpu::Buffer>,
}

struct GpuNorm {
    w: wgpu::Buffer,
    b: Option<wgpu::Buffer>,
}

struct GpuLayer {
    attn_norm: GpuNorm,
    q: GpuLinear,
    k: GpuLinear,
    v: GpuLinear,
    o: GpuLinear,
    mlp_norm: GpuNorm,
    gate: Option<GpuLinear>,
    up: GpuLinear,
    down: GpuLinear,
}

pub struct GpuBackend {
    ctx: Arc<GpuContext>,
    spec: ArchSpec,
    embed: GpuMatrix,
    positions: Option<wgpu::Buffer>,
    token_type: Option<wgpu::Buffer>,
    embedding_norm: Option<GpuNorm>,
    layers: Vec<GpuLayer>,
    final_norm: Option<GpuNorm>,
    /// `None` when tied to `embed` (or for encoders).
    unembed: Option<GpuMatrix>,
    /// Bytes of weights held on the GPU.
    pub weight_bytes: u64,
    /// Matrices whose stored format has no shader decoder and were widened to f16 at upload.
    pub converted_matrices: usize,
}

/// Bytes of one scratch matrix Prism allows itself, whatever the adapter's limit.
const SCRATCH_LIMIT: u64 = 256 << 20;

impl GpuBackend {
    pub fn new(model: &Model, ctx: Arc<GpuContext>) -> Result<GpuBackend> {
        let w = &model.weights;
        let mut bytes = 0u64;
        let mut converted = 0usize;
        let mut matrix = |m: &crate::weights::Weight| -> Result<GpuMatrix> {
            let g = GpuMatrix::upload(&ctx, m)?;
            bytes += g.bytes;
            converted += g.converted as usize;
            Ok(g)
        };
        let mut vectors = 0u64;
        let mut vector = |v: &crate::weights::Weight| -> Result<wgpu::Buffer> {
            let (b, n) = upload_vector(&ctx, v)?;
            vectors += n;
            Ok(b)
        };
        let embed = matrix(&w.token_embedding)?;
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            let mut linear = |lin: &Linear| -> Result<GpuLinear> {
                Ok(GpuLinear {
                    w: matrix(&lin.weight)?,
                    bias: lin.bias.as_ref().map(&mut vector).transpose()?,
                })
            };
            let q = linear(&l.q)?;
            let k = linear(&l.k)?;
            let v = linear(&l.v)?;
            let o = linear(&l.o)?;
            let gate = l.gate.as_ref().map(&mut linear).transpose()?;
            let up = linear(&l.up)?;
            let down = linear(&l.down)?;
            let mut norm = |n: &NormWeights| -> Result<GpuNorm> {
                Ok(GpuNorm {
                    w: vector(&n.weight)?,
                    b: n.bias.as_ref().map(&mut vector).transpose()?,
                })
            };
            layers.push(GpuLayer {
                attn_norm: norm(&l.attn_norm)?,
                q,
                k,
                v,
                o,
                mlp_norm: norm(&l.mlp_norm)?,
                gate,
                up,
                down,
            });
        }
        let mut norm = |n: &NormWeights| -> Result<GpuNorm> {
            Ok(GpuNorm {
                w: vector(&n.weight)?,
                b: n.bias.as_ref().map(&mut vector).transpose()?,
            })
        };
        let embedding_norm = w.embedding_norm.as_ref().map(&mut norm).transpose()?;
        let final_norm = w.final_norm.as_ref().map(&mut norm).transpose()?;
        let positions = w.position_embedding.as_ref().map(&mut vector).transpose()?;
        let token_type = match &w.token_type_embedding {
            Some(t) => Some(t.narrow_rows(0, 1).and_then(|row| vector(&row))?),
            None => None,
        };
        let unembed = match (&w.lm_head, model.spec.causal) {
            (Some(h), true) => Some(matrix(h)?),
            _ => None,
        };
        Ok(GpuBackend {
            spec: model.spec.clone(),
            embed,
            positions,
            token_type,
            embedding_norm,
            layers,
            final_norm,
            unembed,
            weight_bytes: bytes + vectors,
            converted_matrices: converted,
            ctx,
        })
    }

    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    fn norm(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        n: &GpuNorm,
        y: &wgpu::Buffer,
        rows: usize,
    ) {
        let eps = (self.spec.norm_eps as f32).to_bits();
        let params = [rows as u32, self.spec.hidden as u32, eps, 0];
        match (self.spec.norm, &n.b) {
            (NormKind::RmsNorm, _) => self.ctx.dispatch(
                enc,
                Shader::RmsNorm,
                &params,
                &[x, &n.w, y],
                (rows as u32, 1, 1),
            ),
            (NormKind::LayerNorm, Some(b)) => self.ctx.dispatch(
                enc,
                Shader::LayerNorm,
                &params,
                &[x, &n.w, b, y],
                (rows as u32, 1, 1),
            ),
            (NormKind::LayerNorm, None) => {
                let zeros = self
                    .ctx
                    .upload_f32("zero bias", &vec![0.0; self.spec.hidden]);
                self.ctx.dispatch(
                    enc,
                    Shader::LayerNorm,
                    &params,
                    &[x, &n.w, &zeros, y],
                    (rows as u32, 1, 1),
                )
            }
        }
    }

    /// y[rows][out] (+)= x[rows][in] W^T + b, over every row chunk of W.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        w: &GpuMatrix,
        bias: Option<&wgpu::Buffer>,
        y: &wgpu::Buffer,
        rows: usize,
        accumulate: bool,
    ) {
        for c in &w.chunks {
            let params = [
                rows as u32,
                w.cols as u32,
                w.rows as u32,
                c.rows as u32,
                c.row0 as u32,
                w.fmt,
                c.nblocks,
                bias.is_some() as u32,
                accumulate as u32,
            ];
            let groups = (c.rows.div_ceil(64) as u32, rows.div_ceil(8) as u32, 1);
            self.ctx.dispatch(
                enc,
                Shader::Matmul,
                &params,
                &[&c.buffer, x, bias.unwrap_or(&self.ctx.dummy), y],
                groups,
            );
        }
    }

    fn linear(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        l: &GpuLinear,
        y: &wgpu::Buffer,
        rows: usize,
        accumulate: bool,
    ) {
        self.matmul(enc, x, &l.w, l.bias.as_ref(), y, rows, accumulate);
    }

    fn elementwise_groups(&self, n: usize) -> (u32, u32, u32) {
        self.ctx.linear_groups(n, 256)
    }

    fn unembedding(&self) -> &GpuMatrix {
        self.unembed.as_ref().unwrap_or(&self.embed)
    }

    /// Logits of `rows` rows of `src` in chunks, reduced on the GPU to per-row statistics and top-k.
    #[allow(clippy::too_many_arguments)]
    fn unembed_stats(
        &self,
        enc: &mut wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        rows: usize,
        out_row0: usize,
        targets: &wgpu::Buffer,
        outs: (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
        k: usize,
        logits_staging: Option<&wgpu::Buffer>,
    ) -> Result<()> {
        let (h, v) = (self.spec.hidden, self.spec.vocab);
        let limit = self.ctx.max_binding().min(SCRATCH_LIMIT) as usize;
        let chunk = (limit / (v * 4)).clamp(1, rows);
        let logits = self.ctx.scratch("logits", chunk * v)?;
        let tmp = self.ctx.scratch("unembedding input", chunk * h)?;
        let mut r0 = 0;
        while r0 < rows {
            let n = chunk.min(rows - r0);
            enc.copy_buffer_to_buffer(src, (r0 * h * 4) as u64, &tmp, 0, Some((n * h * 4) as u64));
            self.matmul(enc, &tmp, self.unembedding(), None, &logits, n, false);
            let params = [n as u32, v as u32, k as u32, (out_row0 + r0) as u32];
            self.ctx.dispatch(
                enc,
                Shader::LogitStats,
                &params,
                &[&logits, targets, outs.0, outs.1, outs.2],
                (n as u32, 1, 1),
            );
            if let Some(st) = logits_staging {
                enc.copy_buffer_to_buffer(
                    &logits,
                    0,
                    st,
                    (r0 * v * 4) as u64,
                    Some((n * v * 4) as u64),
                );
            }
            r0 += n;
        }
        Ok(())
    }

    fn run(&self, ids: &[u32], capture: Capture) -> Result<ForwardOutput> {
        let s = &self.spec;
        let ctx = &self.ctx;
        let t = ids.len();
        let (h, nh, nkv, hd) = (s.hidden, s.n_heads, s.n_kv_heads, s.head_dim);
        let n_layers = self.layers.len();
        let k = capture.top_k.max(1);
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("forward"),
            });
        let ids_buf = ctx.upload("ids", &u32_bytes(ids));
        let mut x = ctx.scratch("residual", t * h)?;
        let mut hb = ctx.scratch("normed", t * h)?;
        let qb = ctx.scratch("q", t * s.q_dim())?;
        let kb = ctx.scratch("k", t * s.kv_dim())?;
        let vb = ctx.scratch("v", t * s.kv_dim())?;
        let ctxb = ctx.scratch("attention output", t * s.q_dim())?;
        let up = ctx.scratch("mlp up", t * s.intermediate)?;
        let gate = match s.activation {
            Activation::SwiGlu => Some(ctx.scratch("mlp gate", t * s.intermediate)?),
            _ => None,
        };

        // Embeddings.
        for c in &self.embed.chunks {
            let params = [
                t as u32,
                h as u32,
                self.embed.fmt,
                c.nblocks,
                c.row0 as u32,
                c.rows as u32,
            ];
            ctx.dispatch(
                &mut enc,
                Shader::Embed,
                &params,
                &[&c.buffer, &ids_buf, &x],
                (h.div_ceil(64) as u32, t as u32, 1),
            );
        }
        if let Some(p) = &self.positions {
            ctx.dispatch(
                &mut enc,
                Shader::Add,
                &[(t * h) as u32, (t * h) as u32],
                &[p, &x],
                self.elementwise_groups(t * h),
            );
        }
        if let Some(tt) = &self.token_type {
            ctx.dispatch(
                &mut enc,
                Shader::Add,
                &[(t * h) as u32, h as u32],
                &[tt, &x],
                self.elementwise_groups(t * h),
            );
        }
        if let Some(n) = &self.embedding_norm {
            self.norm(&mut enc, &x, n, &hb, t);
            std::mem::swap(&mut x, &mut hb);
        }

        // Capture and logit-lens buffers.
        let residual_staging = if capture.residual {
            Some(ctx.staging("residual stream", ((n_layers + 1) * t * h * 4) as u64)?)
        } else {
            None
        };
        let decoder = s.causal;
        let lens = if capture.logit_lens && decoder {
            let rows = (n_layers + 1) * t;
            Some((
                ctx.upload("lens targets", &vec![0u8; rows * 4]),
                ctx.scratch("lens stats", rows * 4)?,
                ctx.scratch("lens top ids", rows * 5)?,
                ctx.scratch("lens top p", rows * 5)?,
            ))
        } else {
            None
        };
        let lens_step = |enc: &mut wgpu::CommandEncoder,
                         x: &wgpu::Buffer,
                         hb: &wgpu::Buffer,
                         entry: usize|
         -> Result<()> {
            if let Some(st) = &residual_staging {
                enc.copy_buffer_to_buffer(
                    x,
                    0,
                    st,
                    (entry * t * h * 4) as u64,
                    Some((t * h * 4) as u64),
                );
            }
            if let Some((targets, stats, ids_out, p_out)) = &lens {
                let src = match &self.final_norm {
                    Some(n) => {
                        self.norm(enc, x, n, hb, t);
                        hb
                    }
                    None => x,
                };
                self.unembed_stats(
                    enc,
                    src,
                    t,
                    entry * t,
                    targets,
                    (stats, ids_out, p_out),
                    5,
                    None,
                )?;
            }
            Ok(())
        };
        lens_step(&mut enc, &x, &hb, 0)?;

        // Attention scratch: queries in blocks so that one block of scores fits a binding.
        let limit = ctx.max_binding().min(SCRATCH_LIMIT) as usize;
        let q_block = (limit / (nh * t * 4)).clamp(1, t);
        let scores = ctx.scratch("attention scores", nh * q_block * t)?;
        let attention_staging: Vec<wgpu::Buffer> = if capture.attention {
            (0..n_layers)
                .map(|_| ctx.staging("attention", (nh * t * t * 4) as u64))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let rope = match s.positions {
            Positions::Rope { theta, pairing } => {
                let (cos, sin) = rope_tables(t, hd, theta);
                Some((
                    ctx.upload_f32("rope cos", &cos),
                    ctx.upload_f32("rope sin", &sin),
                    (pairing == RopePairing::Interleaved) as u32,
                ))
            }
            _ => None,
        };
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        let window = s
            .sliding_window
            .unwrap_or(u32::MAX as usize)
            .min(u32::MAX as usize) as u32;

        for (li, l) in self.layers.iter().enumerate() {
            let src = if s.post_norm {
                &x
            } else {
                self.norm(&mut enc, &x, &l.attn_norm, &hb, t);
                &hb
            };
            self.linear(&mut enc, src, &l.q, &qb, t, false);
            self.linear(&mut enc, src, &l.k, &kb, t, false);
            self.linear(&mut enc, src, &l.v, &vb, t, false);
            if let Some((cos, sin, pairing)) = &rope {
                let half = (hd / 2) as u32;
                ctx.dispatch(
                    &mut enc,
                    Shader::Rope,
                    &[t as u32, nh as u32, hd as u32, *pairing],
                    &[cos, sin, &qb],
                    (half.div_ceil(64), nh as u32, t as u32),
                );
                ctx.dispatch(
                    &mut enc,
                    Shader::Rope,
                    &[t as u32, nkv as u32, hd as u32, *pairing],
                    &[cos, sin, &kb],
                    (half.div_ceil(64), nkv as u32, t as u32),
                );
            }
            let mut q0 = 0;
            while q0 < t {
                let qr = q_block.min(t - q0);
                let params = [
                    qr as u32,
                    q0 as u32,
                    t as u32,
                    nh as u32,
                    nkv as u32,
                    hd as u32,
                    s.causal as u32,
                    window,
                    scale.to_bits(),
                ];
                ctx.dispatch(
                    &mut enc,
                    Shader::AttentionScores,
                    &params,
                    &[&qb, &kb, &scores],
                    (t.div_ceil(64) as u32, qr as u32, nh as u32),
                );
                let rows = nh * qr;
                let groups = (rows.min(65535) as u32, rows.div_ceil(65535) as u32, 1);
                ctx.dispatch(
                    &mut enc,
                    Shader::Softmax,
                    &[rows as u32, t as u32],
                    &[&scores],
                    groups,
                );
                if let Some(st) = attention_staging.get(li) {
                    for head in 0..nh {
                        enc.copy_buffer_to_buffer(
                            &scores,
                            (head * qr * t * 4) as u64,
                            st,
                            ((head * t + q0) * t * 4) as u64,
                            Some((qr * t * 4) as u64),
                        );
                    }
                }
                let params = [
                    qr as u32, q0 as u32, t as u32, nh as u32, nkv as u32, hd as u32,
                ];
                ctx.dispatch(
                    &mut enc,
                    Shader::AttentionValues,
                    &params,
                    &[&scores, &vb, &ctxb],
                    (hd.div_ceil(64) as u32, qr as u32, nh as u32),
                );
                q0 += qr;
            }
            self.linear(&mut enc, &ctxb, &l.o, &x, t, true);
            if s.post_norm {
                self.norm(&mut enc, &x, &l.attn_norm, &hb, t);
                std::mem::swap(&mut x, &mut hb);
            }
            let src = if s.post_norm {
                &x
            } else {
                self.norm(&mut enc, &x, &l.mlp_norm, &hb, t);
                &hb
            };
            let n_inter = t * s.intermediate;
            match (&gate, &l.gate) {
                (Some(gb), Some(gw)) => {
                    self.linear(&mut enc, src, gw, gb, t, false);
                    self.linear(&mut enc, src, &l.up, &up, t, false);
                    ctx.dispatch(
                        &mut enc,
                        Shader::SiluGate,
                        &[n_inter as u32],
                        &[gb, &up],
                        self.elementwise_groups(n_inter),
                    );
                    self.linear(&mut enc, gb, &l.down, &x, t, true);
                }
                _ => {
                    self.linear(&mut enc, src, &l.up, &up, t, false);
                    let mode = (s.activation == Activation::GeluErf) as u32;
                    ctx.dispatch(
                        &mut enc,
                        Shader::Gelu,
                        &[n_inter as u32, mode],
                        &[&up],
                        self.elementwise_groups(n_inter),
                    );
                    self.linear(&mut enc, &up, &l.down, &x, t, true);
                }
            }
            if s.post_norm {
                self.norm(&mut enc, &x, &l.mlp_norm, &hb, t);
                std::mem::swap(&mut x, &mut hb);
            }
            lens_step(&mut enc, &x, &hb, li + 1)?;
        }

        let final_buf = match &self.final_norm {
            Some(n) => {
                self.norm(&mut enc, &x, n, &hb, t);
                &hb
            }
            None => &x,
        };
        let final_staging = ctx.staging("final hidden", (t * h * 4) as u64)?;
        enc.copy_buffer_to_buffer(final_buf, 0, &final_staging, 0, Some((t * h * 4) as u64));

        let mut stats_bufs = None;
        let mut logits_staging = None;
        if decoder {
            let mut targets: Vec<u32> = ids[1..].to_vec();
            targets.push(u32::MAX);
            let targets = ctx.upload("targets", &u32_bytes(&targets));
            let stats = ctx.scratch("stats", t * 4)?;
            let top_ids = ctx.scratch("top ids", t * k)?;
            let top_p = ctx.scratch("top p", t * k)?;
            if capture.logits {
                logits_staging = Some(ctx.staging("logits", (t * s.vocab * 4) as u64)?);
            }
            self.unembed_stats(
                &mut enc,
                final_buf,
                t,
                0,
                &targets,
                (&stats, &top_ids, &top_p),
                k,
                logits_staging.as_ref(),
            )?;
            let st = (
                ctx.staging("stats", (t * 4 * 4) as u64)?,
                ctx.staging("top ids", (t * k * 4) as u64)?,
                ctx.staging("top p", (t * k * 4) as u64)?,
            );
            enc.copy_buffer_to_buffer(&stats, 0, &st.0, 0, None);
            enc.copy_buffer_to_buffer(&top_ids, 0, &st.1, 0, None);
            enc.copy_buffer_to_buffer(&top_p, 0, &st.2, 0, None);
            stats_bufs = Some(st);
        }
        let lens_staging = match &lens {
            Some((_, stats, ids_out, p_out)) => {
                let rows = (n_layers + 1) * t;
                let a = ctx.staging("lens ids", (rows * 5 * 4) as u64)?;
                let b = ctx.staging("lens p", (rows * 5 * 4) as u64)?;
                let _ = stats;
                enc.copy_buffer_to_buffer(ids_out, 0, &a, 0, None);
                enc.copy_buffer_to_buffer(p_out, 0, &b, 0, None);
                Some((a, b))
            }
            None => None,
        };

        // The one readback.
        let mut staging: Vec<&wgpu::Buffer> = vec![&final_staging];
        if let Some((a, b, c)) = &stats_bufs {
            staging.extend([a, b, c]);
        }
        if let Some(l) = &logits_staging {
            staging.push(l);
        }
        if let Some(r) = &residual_staging {
            staging.push(r);
        }
        staging.extend(attention_staging.iter());
        if let Some((a, b)) = &lens_staging {
            staging.extend([a, b]);
        }
        let mut data = ctx.finish(enc, &staging)?.into_iter();
        let mut next = || {
            data.next()
                .ok_or_else(|| PrismError::Backend("readback came back short".into()))
        };
        let final_hidden = f32s_from(&next()?);
        let row_stats = if stats_bufs.is_some() {
            let stats = f32s_from(&next()?);
            let top_ids = u32s_from(&next()?);
            let top_p = f32s_from(&next()?);
            Some(RowStats {
                entropy_bits: stats.chunks(4).map(|r| r[1] as f64).collect(),
                surprisal_bits: stats.chunks(4).map(|r| r[2] as f64).collect(),
                rank: stats.chunks(4).map(|r| r[3] as usize).collect(),
                top: top_ids
                    .chunks(k)
                    .zip(top_p.chunks(k))
                    .map(|(i, p)| i.iter().zip(p).map(|(&id, &p)| IdProb { id, p }).collect())
                    .collect(),
            })
        } else {
            None
        };
        let logits = if logits_staging.is_some() {
            Some(f32s_from(&next()?))
        } else {
            None
        };
        let residual = if residual_staging.is_some() {
            let all = f32s_from(&next()?);
            Some(all.chunks(t * h).map(|c| c.to_vec()).collect())
        } else {
            None
        };
        let attention = if capture.attention {
            let mut all = Vec::with_capacity(n_layers * nh * t * t);
            for _ in 0..n_layers {
                all.extend(f32s_from(&next()?));
            }
            Some(AttentionMaps {
                layers: n_layers,
                heads: nh,
                seq: t,
                data: all,
            })
        } else {
            None
        };
        let logit_lens = if lens_staging.is_some() {
            let ids = u32s_from(&next()?);
            let ps = f32s_from(&next()?);
            let rows: Vec<Vec<IdProb>> = ids
                .chunks(5)
                .zip(ps.chunks(5))
                .map(|(i, p)| i.iter().zip(p).map(|(&id, &p)| IdProb { id, p }).collect())
                .collect();
            Some(rows.chunks(t).map(|c| c.to_vec()).collect())
        } else {
            None
        };
        Ok(ForwardOutput {
            seq: t,
            hidden: h,
            logits,
            row_stats,
            final_hidden,
            residual,
            attention,
            logit_lens,
        })
    }
}

impl Backend for GpuBackend {
    fn describe(&self) -> String {
        let a = &self.ctx.adapter;
        format!(
            "gpu ({}, {}, {}; {:.1} MB of weights)",
            a.name,
            a.backend,
            a.device_type,
            self.weight_bytes as f64 / 1e6
        )
    }

    fn adapter(&self) -> Option<context::AdapterDescription> {
        Some(self.ctx.adapter.clone())
    }

    fn gpu_bytes(&self) -> Option<(u64, u64)> {
        Some((self.weight_bytes, self.ctx.run_bytes()))
    }

    fn forward(&self, ids: &[u32], capture: Capture) -> Result<ForwardOutput> {
        if self.ctx.is_lost() {
            return Err(PrismError::Backend("the GPU device was lost".into()));
        }
        self.ctx.reset_run_bytes();
        self.run(ids, capture)
    }
}
