//! The GPU backend: the forward pass of [`super::forward`] recorded as Prism's WGSL shaders through
//! wgpu. Every op of a run goes into one command buffer, and everything asked for comes back in
//! one readback at the end.

pub mod context;
pub mod ops;
mod paths;
mod profiler;
pub mod upload;

use std::sync::Arc;

use self::context::{f32s_from, u32_bytes, u32s_from, GpuContext};
use self::ops::matmul::{Epilogue, FoldedNorm, Linear};
use self::upload::{upload_vector, GpuMatrix};
use super::exec::{
    AttnShape, DeltaBufs, DeltaState, Edit, Exec, ExpertScratch, KvCache, LinearIn, MlpId, NormSel,
    Readback, Table,
};
use super::forward;
use super::{Backend, IdProb, LogitsOut, Request, RowStats, RunOutput, Session};
use crate::arch::{ArchSpec, NormKind};
use crate::error::{PrismError, Result};
use crate::model::Model;
use crate::weights::{LinearId, MixerWeights, NormId, NormWeights};

struct GpuLinear {
    w: GpuMatrix,
    bias: Option<wgpu::Buffer>,
}

struct GpuNorm {
    w: wgpu::Buffer,
    b: Option<wgpu::Buffer>,
    width: usize,
}

struct GpuLayer {
    linears: Vec<(LinearId, GpuLinear)>,
    norms: Vec<(NormId, GpuNorm)>,
    /// A Gated DeltaNet layer's convolution taps `[channels, kernel]` and its vectors (A,
    /// dt_bias, the gated norm's weight, in `delta_rule.wgsl`'s order).
    delta: Option<(wgpu::Buffer, wgpu::Buffer)>,
    /// The attention sinks `[heads]`.
    sinks: Option<wgpu::Buffer>,
    /// Gemma 4's per-expert scales `[experts]`.
    expert_scale: Option<wgpu::Buffer>,
}

pub struct GpuBackend {
    ctx: Arc<GpuContext>,
    spec: ArchSpec,
    embed: GpuMatrix,
    positions: Option<GpuMatrix>,
    token_type: Option<GpuMatrix>,
    per_layer: Option<GpuMatrix>,
    embedding_norm: Option<GpuNorm>,
    layers: Vec<GpuLayer>,
    final_norm: Option<GpuNorm>,
    /// `None` when tied to `embed`.
    unembed: Option<GpuMatrix>,
    lm_head_bias: Option<wgpu::Buffer>,
    /// Bytes of weights held on the GPU.
    pub weight_bytes: u64,
    /// Bytes the same weights take in the checkpoint.
    pub stored_bytes: u64,
}

/// Bytes of one scratch matrix Prism allows itself, whatever the adapter's limit.
const SCRATCH_LIMIT: u64 = 256 << 20;

impl GpuBackend {
    pub fn new(model: &Model, ctx: Arc<GpuContext>) -> Result<GpuBackend> {
        let w = &model.weights;
        let bytes = std::cell::Cell::new(0u64);
        let stored = std::cell::Cell::new(0u64);
        let matrix = |m: &crate::weights::Weight| -> Result<GpuMatrix> {
            let g = GpuMatrix::upload(&ctx, m)?;
            bytes.set(bytes.get() + g.bytes);
            stored.set(stored.get() + g.stored_bytes);
            Ok(g)
        };
        let vector = |v: &crate::weights::Weight| -> wgpu::Buffer {
            let (b, n) = upload_vector(&ctx, v);
            bytes.set(bytes.get() + n);
            stored.set(stored.get() + v.stored_bytes() as u64);
            b
        };
        let norm = |n: &NormWeights| GpuNorm {
            w: vector(&n.weight),
            b: n.bias.as_ref().map(vector),
            width: n.weight.element_count(),
        };
        let embedding_norm = w.embedding_norm.as_ref().map(norm);
        let final_norm = w.final_norm.as_ref().map(norm);
        let mut layer_norms = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            let norms: Vec<(NormId, GpuNorm)> = NormId::ALL
                .iter()
                .filter_map(|&id| l.norm(id).map(|n| (id, norm(n))))
                .collect();
            layer_norms.push(norms);
        }
        let mut biases = Vec::new();
        for l in &w.layers {
            let per: Vec<_> = l
                .linears()
                .into_iter()
                .map(|(id, lin)| (id, lin.bias.as_ref().map(vector)))
                .collect();
            biases.push(per);
        }
        let lm_head_bias = w.lm_head_bias.as_ref().map(vector);
        let embed = matrix(&w.token_embedding)?;
        let positions = w.position_embedding.as_ref().map(matrix).transpose()?;
        let token_type = w.token_type_embedding.as_ref().map(matrix).transpose()?;
        let per_layer = w.per_layer_embedding.as_ref().map(matrix).transpose()?;
        let mut layers = Vec::with_capacity(w.layers.len());
        for ((l, norms), per_bias) in w.layers.iter().zip(layer_norms).zip(biases) {
            let mut linears = Vec::new();
            for (id, bias) in per_bias {
                if let Some(lin) = l.linear(id) {
                    linears.push((
                        id,
                        GpuLinear {
                            w: matrix(&lin.weight)?,
                            bias,
                        },
                    ));
                }
            }
            let delta = match &l.mixer {
                MixerWeights::DeltaNet(d) => {
                    let mut vecs = d.a_neg.to_f32();
                    vecs.extend(d.dt_bias.to_f32());
                    vecs.extend(d.norm.weight.to_f32());
                    bytes.set(bytes.get() + 4 * vecs.len() as u64);
                    Some((
                        vector(&d.conv),
                        ctx.upload_f32("linear attention vectors", &vecs),
                    ))
                }
                MixerWeights::Attention { .. } => None,
            };
            let sinks = l.mixer.sinks().map(vector);
            let expert_scale = match &l.mlp {
                crate::weights::Mlp::Experts(x) => x.expert_scale.as_ref().map(vector),
                crate::weights::Mlp::Dense { .. } => None,
            };
            layers.push(GpuLayer {
                linears,
                norms,
                delta,
                sinks,
                expert_scale,
            });
        }
        let unembed = match (&w.lm_head, model.spec.causal) {
            (Some(h), true) => Some(matrix(h)?),
            _ => None,
        };
        Ok(GpuBackend {
            spec: model.spec.clone(),
            embed,
            positions,
            token_type,
            per_layer,
            embedding_norm,
            layers,
            final_norm,
            unembed,
            lm_head_bias,
            weight_bytes: bytes.get(),
            stored_bytes: stored.get(),
            ctx,
        })
    }

    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    fn unembedding(&self) -> &GpuMatrix {
        self.unembed.as_ref().unwrap_or(&self.embed)
    }
}

impl Backend for GpuBackend {
    fn describe(&self) -> String {
        let a = &self.ctx.adapter;
        let paths = self.ctx.paths;
        let mode = match (paths.f16_weights, paths.subgroups) {
            (false, false) => "exact",
            (false, true) => "exact, subgroups",
            (true, false) => "fast: f16 weights",
            (true, true) => "fast: f16 weights, subgroups",
        };
        format!(
            "gpu ({}, {}, {}; {mode}; {:.1} MB of weights)",
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

    fn run(&self, req: &Request<'_>) -> Result<RunOutput> {
        if self.ctx.is_lost() {
            return Err(PrismError::Backend("the GPU device was lost".into()));
        }
        self.ctx.reset_run_bytes();
        let mut e = GpuExec::new(self);
        forward::run(&mut e, req, None)
    }

    /// The matmul kernels on `w` uploaded for the call, rows in chunks that fit one binding.
    fn project(&self, x: &[f32], rows: usize, w: &crate::weights::Weight) -> Result<Vec<f32>> {
        if self.ctx.is_lost() {
            return Err(PrismError::Backend("the GPU device was lost".into()));
        }
        let (n, k) = (w.rows(), w.cols());
        if x.len() != rows * k {
            return Err(PrismError::Input(format!(
                "project: {} values are not {rows} rows of {k}",
                x.len()
            )));
        }
        let ctx = &self.ctx;
        let m = GpuMatrix::upload(ctx, w)?;
        let limit = (ctx.max_binding().min(SCRATCH_LIMIT) / 4) as usize;
        let chunk = (limit / n.max(k).max(1)).clamp(1, rows.max(1));
        let mut out = Vec::with_capacity(rows * n);
        for r0 in (0..rows).step_by(chunk) {
            let c = chunk.min(rows - r0);
            let xb = ctx.upload_f32("project input", &x[r0 * k..(r0 + c) * k]);
            let yb = ctx.buffer("project output", c * n)?;
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            ops::matmul::matmul(ctx, &mut enc, &Linear::new(&xb, &m, &yb, c))?;
            let st = ctx.staging("project readback", (c * n * 4) as u64)?;
            enc.copy_buffer_to_buffer(&yb, 0, &st, 0, Some((c * n * 4) as u64));
            let bytes = ctx.finish(enc, &[&st])?;
            out.extend(f32s_from(&bytes[0]));
        }
        Ok(out)
    }

    fn set_profiling(&self, on: bool) {
        self.ctx.set_profiling(on);
    }

    /// GPU time per shader from timestamp queries (empty where the adapter has none).
    fn take_profile(&self) -> Vec<(String, f64, usize)> {
        self.ctx.take_profile()
    }

    fn session(&self, batch: usize, capacity: usize) -> Result<Box<dyn Session + '_>> {
        Ok(Box::new(GpuSession {
            backend: self,
            cache: KvCache::new(batch, capacity),
        }))
    }
}

struct GpuSession<'a> {
    backend: &'a GpuBackend,
    cache: KvCache<wgpu::Buffer>,
}

impl Session for GpuSession<'_> {
    fn run(&mut self, req: &Request<'_>) -> Result<RunOutput> {
        if self.backend.ctx.is_lost() {
            return Err(PrismError::Backend("the GPU device was lost".into()));
        }
        let mut e = GpuExec::new(self.backend);
        forward::run(&mut e, req, Some(&mut self.cache))
    }

    fn len(&self) -> usize {
        self.cache.len
    }

    fn reset(&mut self) {
        self.cache.len = 0;
    }
}

/// Where the statistics of one `logits` call land.
struct LogitJob {
    rows: Vec<usize>,
    targets: Vec<u32>,
    k: usize,
    stats: wgpu::Buffer,
    top_ids: wgpu::Buffer,
    top_p: wgpu::Buffer,
    full: Option<wgpu::Buffer>,
}

struct GpuExec<'a> {
    g: &'a GpuBackend,
    enc: Option<wgpu::CommandEncoder>,
    /// Staging buffers, each with the number of floats it holds.
    staging: Vec<wgpu::Buffer>,
    jobs: Vec<LogitJob>,
}

impl<'a> GpuExec<'a> {
    fn new(g: &'a GpuBackend) -> Self {
        GpuExec {
            enc: Some(
                g.ctx
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("forward"),
                    }),
            ),
            g,
            staging: Vec::new(),
            jobs: Vec::new(),
        }
    }

    fn ctx(&self) -> &'a GpuContext {
        &self.g.ctx
    }

    fn enc(&mut self) -> Result<&mut wgpu::CommandEncoder> {
        self.enc
            .as_mut()
            .ok_or_else(|| PrismError::Backend("the GPU run already finished".into()))
    }

    fn norm_of(&self, which: NormSel) -> Result<&'a GpuNorm> {
        let found = match which {
            NormSel::Layer(l, id) => self
                .g
                .layers
                .get(l)
                .and_then(|layer| layer.norms.iter().find(|(i, _)| *i == id))
                .map(|(_, n)| n),
            NormSel::Final => self.g.final_norm.as_ref(),
            NormSel::Embedding => self.g.embedding_norm.as_ref(),
        };
        found.ok_or_else(|| PrismError::Backend(format!("the model has no {which:?} norm")))
    }

    fn matmul(
        &mut self,
        x: LinearIn<'_, wgpu::Buffer>,
        layer: usize,
        which: LinearId,
        out: &wgpu::Buffer,
        rows: usize,
        epilogue: Epilogue,
    ) -> Result<()> {
        let ctx = self.ctx();
        let lin = self
            .g
            .layers
            .get(layer)
            .and_then(|l| l.linears.iter().find(|(i, _)| *i == which))
            .map(|(_, l)| l)
            .ok_or_else(|| PrismError::Backend(format!("layer {layer} has no {which:?} weight")))?;
        let norm = match x.norm {
            Some(sel) => {
                let n = self.norm_of(sel)?;
                Some(FoldedNorm {
                    weight: &n.w,
                    bias: match self.g.spec.norm {
                        NormKind::RmsNorm => None,
                        NormKind::LayerNorm => Some(n.b.as_ref().ok_or_else(|| {
                            PrismError::Backend(format!("the LayerNorm {sel:?} has no bias"))
                        })?),
                    },
                    eps: self.g.spec.norm_eps as f32,
                })
            }
            None => None,
        };
        let l = Linear {
            x: x.x,
            w: &lin.w,
            bias: lin.bias.as_ref(),
            y: out,
            rows,
            epilogue,
            norm,
        };
        ops::matmul::matmul(ctx, self.enc()?, &l)
    }

    fn experts_spec(&self) -> Result<crate::arch::ExpertSpec> {
        self.g
            .spec
            .experts
            .ok_or_else(|| PrismError::Backend("the model has no experts".into()))
    }

    fn stage(&mut self, src: &wgpu::Buffer, off: usize, n: usize, label: &str) -> Result<usize> {
        let st = self.ctx().staging(label, (n * 4) as u64)?;
        self.enc()?
            .copy_buffer_to_buffer(src, (off * 4) as u64, &st, 0, Some((n * 4) as u64));
        self.staging.push(st);
        Ok(self.staging.len() - 1)
    }
}

impl Exec for GpuExec<'_> {
    type Buf = wgpu::Buffer;

    fn spec(&self) -> &ArchSpec {
        &self.g.spec
    }

    /// The output projections add into the residual in their epilogue (`linear.wgsl`).
    fn fuses_residual(&self) -> bool {
        true
    }

    fn alloc(&mut self, len: usize, what: &'static str) -> Result<wgpu::Buffer> {
        self.ctx().buffer(what, len)
    }

    fn upload(&mut self, data: &[f32], what: &'static str) -> Result<wgpu::Buffer> {
        Ok(self.ctx().upload_f32(what, data))
    }

    fn embed(&mut self, ids: &[u32], out: &wgpu::Buffer) -> Result<()> {
        let ctx = self.ctx();
        let ids_buf = ctx.upload("ids", &u32_bytes(ids));
        let table = &self.g.embed;
        ops::embed::embed(
            ctx,
            self.enc()?,
            table,
            &ids_buf,
            out,
            ids.len(),
            false,
            None,
        )
    }

    fn add_table_rows(&mut self, table: Table, rows: &[u32], out: &wgpu::Buffer) -> Result<()> {
        let ctx = self.ctx();
        let t = match table {
            Table::Positions => self.g.positions.as_ref(),
            Table::TokenType => self.g.token_type.as_ref(),
            Table::PerLayer(_) => self.g.per_layer.as_ref(),
        }
        .ok_or_else(|| PrismError::Backend(format!("the model has no {table:?} table")))?;
        // A layer's share of the per-layer table: its columns l*p..(l+1)*p.
        let cols = match (table, self.g.spec.per_layer_input) {
            (Table::PerLayer(l), Some(p)) => Some((l * p, p)),
            _ => None,
        };
        if let Some(&bad) = rows.iter().find(|&&r| r as usize >= t.rows) {
            return Err(PrismError::Input(format!(
                "position {bad} is beyond the model's {} learned positions",
                t.rows
            )));
        }
        let ids = ctx.upload("table rows", &u32_bytes(rows));
        ops::embed::embed(ctx, self.enc()?, t, &ids, out, rows.len(), true, cols)
    }

    fn linear(
        &mut self,
        x: LinearIn<'_, wgpu::Buffer>,
        layer: usize,
        which: LinearId,
        out: &wgpu::Buffer,
        rows: usize,
        accumulate: bool,
    ) -> Result<()> {
        let epilogue = if accumulate {
            Epilogue::Accumulate
        } else {
            Epilogue::Store
        };
        self.matmul(x, layer, which, out, rows, epilogue)
    }

    /// Norms of the hidden width (RMSNorm and LayerNorm) are folded into the matmuls that read
    /// them (`linear.wgsl`): the normalized activations are never written.
    fn norm_input<'b>(
        &mut self,
        x: &'b wgpu::Buffer,
        which: NormSel,
        out: &'b wgpu::Buffer,
        rows: usize,
    ) -> Result<LinearIn<'b, wgpu::Buffer>> {
        let n = self.norm_of(which)?;
        if n.width == self.g.spec.hidden {
            return Ok(LinearIn {
                x,
                norm: Some(which),
            });
        }
        self.norm(x, which, out, rows)?;
        Ok(LinearIn::plain(out))
    }

    /// The up projection's epilogue applies the activation to the gate and multiplies.
    fn linear_gated(
        &mut self,
        x: LinearIn<'_, wgpu::Buffer>,
        layer: usize,
        mlp: MlpId,
        gate: &wgpu::Buffer,
        _up: &wgpu::Buffer,
        rows: usize,
    ) -> Result<()> {
        let [g, u, _] = mlp.ids();
        self.matmul(x, layer, g, gate, rows, Epilogue::Store)?;
        let act = self.g.spec.activation;
        self.matmul(x, layer, u, gate, rows, Epilogue::Gated(act))
    }

    fn route(
        &mut self,
        x: LinearIn<'_, wgpu::Buffer>,
        layer: usize,
        probs: &wgpu::Buffer,
        weights: &wgpu::Buffer,
        rows: usize,
    ) -> Result<()> {
        let xs = self.experts_spec()?;
        self.matmul(x, layer, LinearId::Router, probs, rows, Epilogue::Store)?;
        let ctx = self.ctx();
        ops::experts::route(ctx, self.enc()?, probs, weights, rows, &xs)?;
        // Gemma 4's per-expert scales, after the renormalization.
        match self
            .g
            .layers
            .get(layer)
            .and_then(|l| l.expert_scale.as_ref())
        {
            Some(s) => {
                ops::elementwise::mul(ctx, self.enc()?, s, weights, rows * xs.count, xs.count)
            }
            None => Ok(()),
        }
    }

    /// Every expert on every row (the routing stays on the device), each output times its weight
    /// (zero for the experts a row was not routed to) into the sum, in ascending expert order.
    fn experts(
        &mut self,
        x: LinearIn<'_, wgpu::Buffer>,
        layer: usize,
        weights: &wgpu::Buffer,
        scratch: &ExpertScratch<wgpu::Buffer>,
        out: &wgpu::Buffer,
        rows: usize,
        accumulate: bool,
    ) -> Result<()> {
        let xs = self.experts_spec()?;
        let h = self.g.spec.hidden;
        for e in 0..xs.count {
            let id = MlpId::Expert(e as u32);
            self.linear_gated(x, layer, id, &scratch.gate, &scratch.up, rows)?;
            let plain = LinearIn::plain(&scratch.gate);
            self.matmul(
                plain,
                layer,
                id.ids()[2],
                &scratch.out,
                rows,
                Epilogue::Store,
            )?;
            let add = accumulate || e > 0;
            let ctx = self.ctx();
            ops::experts::expert_add(
                ctx,
                self.enc()?,
                &scratch.out,
                weights,
                out,
                rows,
                h,
                xs.count,
                e,
                add,
            )?;
        }
        Ok(())
    }

    fn norm(
        &mut self,
        x: &wgpu::Buffer,
        which: NormSel,
        out: &wgpu::Buffer,
        rows: usize,
    ) -> Result<()> {
        let ctx = self.ctx();
        let n = self.norm_of(which)?;
        let eps = self.g.spec.norm_eps as f32;
        let bias = match self.g.spec.norm {
            NormKind::LayerNorm => Some(n.b.as_ref().ok_or_else(|| {
                PrismError::Backend(format!("the LayerNorm {which:?} has no bias"))
            })?),
            NormKind::RmsNorm => None,
        };
        ops::norm::norm(ctx, self.enc()?, x, &n.w, bias, out, rows, n.width, eps)
    }

    fn rope(
        &mut self,
        x: &wgpu::Buffer,
        rows: usize,
        heads: usize,
        head_dim: usize,
        dims: usize,
        cos: &wgpu::Buffer,
        sin: &wgpu::Buffer,
    ) -> Result<()> {
        let ctx = self.ctx();
        let s = &self.g.spec;
        let r = s
            .rope
            .as_ref()
            .ok_or_else(|| PrismError::Backend("RoPE without frequencies".into()))?;
        let (hd, pairing) = (head_dim, r.pairing);
        ops::rope::rope(
            ctx,
            self.enc()?,
            x,
            cos,
            sin,
            rows,
            heads,
            hd,
            dims,
            pairing,
        )
    }

    fn attention(
        &mut self,
        q: &wgpu::Buffer,
        k: &wgpu::Buffer,
        v: &wgpu::Buffer,
        out: &wgpu::Buffer,
        sh: &AttnShape,
        probs: Option<&wgpu::Buffer>,
    ) -> Result<()> {
        let ctx = self.ctx();
        let sinks = if sh.sinks {
            let s = self.g.layers.get(sh.layer).and_then(|l| l.sinks.as_ref());
            Some(s.ok_or_else(|| {
                PrismError::Backend(format!("layer {} has no attention sinks", sh.layer))
            })?)
        } else {
            None
        };
        ops::attention::attention(ctx, self.enc()?, q, k, v, out, probs, sinks, sh)
    }

    fn activate(&mut self, x: &wgpu::Buffer, n: usize) -> Result<()> {
        let (ctx, act) = (self.ctx(), self.g.spec.activation);
        ops::elementwise::gelu(ctx, self.enc()?, x, n, act)
    }

    fn add(&mut self, src: &wgpu::Buffer, dst: &wgpu::Buffer, n: usize) -> Result<()> {
        let ctx = self.ctx();
        ops::elementwise::add(ctx, self.enc()?, src, dst, n, n)
    }

    fn mul(&mut self, src: &wgpu::Buffer, dst: &wgpu::Buffer, n: usize) -> Result<()> {
        let ctx = self.ctx();
        ops::elementwise::mul(ctx, self.enc()?, src, dst, n, n)
    }

    fn sigmoid_gate(
        &mut self,
        x: &wgpu::Buffer,
        gate: &wgpu::Buffer,
        n: usize,
        per: usize,
    ) -> Result<()> {
        let ctx = self.ctx();
        ops::elementwise::sigmoid_gate(ctx, self.enc()?, gate, x, n, per)
    }

    fn delta_net(
        &mut self,
        layer: usize,
        bufs: &DeltaBufs<wgpu::Buffer>,
        state: &DeltaState<wgpu::Buffer>,
        batch: usize,
        seq: usize,
        mixing: Option<&wgpu::Buffer>,
    ) -> Result<()> {
        let g = self.g;
        let d = g
            .spec
            .delta_net
            .ok_or_else(|| PrismError::Backend("the model has no linear attention".into()))?;
        let (conv, vecs) = g
            .layers
            .get(layer)
            .and_then(|l| l.delta.as_ref())
            .ok_or_else(|| {
                PrismError::Backend(format!("layer {layer} is not a linear-attention layer"))
            })?;
        let eps = g.spec.norm_eps as f32;
        let scratch = match mixing {
            Some(_) => Some(self.ctx().buffer(
                "linear attention mixing state",
                batch * d.v_heads * d.k_dim * seq,
            )?),
            None => None,
        };
        let ctx = self.ctx();
        let enc = self.enc()?;
        ops::delta::conv(
            ctx,
            enc,
            &d,
            &bufs.qkv,
            conv,
            &state.conv,
            &bufs.conv,
            batch,
            seq,
        )?;
        let inputs = ops::delta::RuleInputs {
            y: &bufs.conv,
            z: &bufs.z,
            b: &bufs.b,
            a: &bufs.a,
            vecs,
        };
        if let (Some(m), Some(s)) = (mixing, &scratch) {
            ops::delta::rule(ctx, enc, &d, &inputs, s, m, batch, seq, eps, true)?;
        }
        ops::delta::rule(
            ctx, enc, &d, &inputs, &state.rec, &bufs.core, batch, seq, eps, false,
        )
    }

    fn scale(&mut self, x: &wgpu::Buffer, n: usize, s: f32) -> Result<()> {
        let ctx = self.ctx();
        ops::elementwise::scale(ctx, self.enc()?, x, n, s, false)
    }

    fn copy(
        &mut self,
        src: &wgpu::Buffer,
        src_off: usize,
        dst: &wgpu::Buffer,
        dst_off: usize,
        n: usize,
    ) -> Result<()> {
        self.enc()?.copy_buffer_to_buffer(
            src,
            (src_off * 4) as u64,
            dst,
            (dst_off * 4) as u64,
            Some((n * 4) as u64),
        );
        Ok(())
    }

    fn edit(
        &mut self,
        x: &wgpu::Buffer,
        width: usize,
        e: &Edit<'_>,
        source: Option<&wgpu::Buffer>,
    ) -> Result<()> {
        let ctx = self.ctx();
        ops::edit::edit(ctx, self.enc()?, x, width, e, source)
    }

    fn read(&mut self, x: &wgpu::Buffer, off: usize, n: usize) -> Result<usize> {
        self.stage(x, off, n, "readback")
    }

    fn logits(
        &mut self,
        hidden: &wgpu::Buffer,
        rows: &[usize],
        targets: &[u32],
        top_k: usize,
        keep: bool,
    ) -> Result<usize> {
        let ctx = self.ctx();
        let s = &self.g.spec;
        let (h, v) = (s.hidden, s.vocab);
        let n = rows.len();
        let limit = ctx.max_binding().min(SCRATCH_LIMIT) as usize;
        let chunk = (limit / (v * 4)).clamp(1, n.max(1));
        let logits = ctx.buffer("logits", chunk * v)?;
        let input = ctx.buffer("unembedding input", chunk * h)?;
        let targets_buf = ctx.upload("targets", &u32_bytes(targets));
        let stats = ctx.buffer("logit stats", n * 4)?;
        let top_ids = ctx.buffer("top ids", n * top_k)?;
        let top_p = ctx.buffer("top p", n * top_k)?;
        let full = if keep {
            Some(ctx.staging("logits", (n * v * 4) as u64)?)
        } else {
            None
        };
        let unembed = self.g.unembedding();
        let bias = self.g.lm_head_bias.as_ref();
        let softcap = s.final_softcap;
        let enc = self.enc()?;
        let mut r0 = 0;
        while r0 < n {
            let c = chunk.min(n - r0);
            // Gather the rows (consecutive runs in one copy).
            let mut i = 0;
            while i < c {
                let start = rows[r0 + i];
                let mut len = 1;
                while i + len < c && rows[r0 + i + len] == start + len {
                    len += 1;
                }
                enc.copy_buffer_to_buffer(
                    hidden,
                    (start * h * 4) as u64,
                    &input,
                    (i * h * 4) as u64,
                    Some((len * h * 4) as u64),
                );
                i += len;
            }
            ops::matmul::matmul(ctx, enc, &Linear::new(&input, unembed, &logits, c))?;
            if let Some(b) = bias {
                ops::elementwise::add(ctx, enc, b, &logits, c * v, v)?;
            }
            if let Some(cap) = softcap {
                ops::elementwise::scale(ctx, enc, &logits, c * v, cap, true)?;
            }
            ops::logits::logit_stats(
                ctx,
                enc,
                &logits,
                &targets_buf,
                (&stats, &top_ids, &top_p),
                c,
                v,
                top_k,
                r0,
            )?;
            if let Some(f) = &full {
                enc.copy_buffer_to_buffer(
                    &logits,
                    0,
                    f,
                    (r0 * v * 4) as u64,
                    Some((c * v * 4) as u64),
                );
            }
            r0 += c;
        }
        let st = |label: &str, len: usize| ctx.staging(label, (len * 4) as u64);
        let (stats_st, ids_st, p_st) = (
            st("stats", n * 4)?,
            st("top ids", n * top_k)?,
            st("top p", n * top_k)?,
        );
        enc.copy_buffer_to_buffer(&stats, 0, &stats_st, 0, None);
        enc.copy_buffer_to_buffer(&top_ids, 0, &ids_st, 0, None);
        enc.copy_buffer_to_buffer(&top_p, 0, &p_st, 0, None);
        self.jobs.push(LogitJob {
            rows: rows.to_vec(),
            targets: targets.to_vec(),
            k: top_k,
            stats: stats_st,
            top_ids: ids_st,
            top_p: p_st,
            full,
        });
        Ok(self.jobs.len() - 1)
    }

    fn finish(&mut self) -> Result<Readback> {
        let enc = self
            .enc
            .take()
            .ok_or_else(|| PrismError::Backend("the GPU run already finished".into()))?;
        let mut all: Vec<&wgpu::Buffer> = self.staging.iter().collect();
        for j in &self.jobs {
            all.extend([&j.stats, &j.top_ids, &j.top_p]);
            all.extend(j.full.iter());
        }
        let mut data = self.ctx().finish(enc, &all)?.into_iter();
        let mut next = || {
            data.next()
                .ok_or_else(|| PrismError::Backend("the readback came back short".into()))
        };
        let mut back = Readback::default();
        for _ in 0..self.staging.len() {
            back.data.push(f32s_from(&next()?));
        }
        let vocab = self.g.spec.vocab;
        for j in &self.jobs {
            let stats = f32s_from(&next()?);
            let ids = u32s_from(&next()?);
            let ps = f32s_from(&next()?);
            let full = match &j.full {
                Some(_) => Some(f32s_from(&next()?)),
                None => None,
            };
            let mut rs = RowStats::default();
            for (i, row) in stats.chunks(4).enumerate() {
                let has_target = j.targets.get(i).is_some_and(|&t| (t as usize) < vocab);
                rs.entropy_bits.push(row[1] as f64);
                rs.surprisal_bits
                    .push(if has_target { row[2] as f64 } else { f64::NAN });
                rs.rank.push(if has_target { row[3] as usize } else { 0 });
            }
            rs.top = ids
                .chunks(j.k)
                .zip(ps.chunks(j.k))
                .map(|(i, p)| i.iter().zip(p).map(|(&id, &p)| IdProb { id, p }).collect())
                .collect();
            back.logits.push(LogitsOut {
                rows: j.rows.clone(),
                stats: rs,
                full,
            });
        }
        Ok(back)
    }
}
