//! The CPU backend, the reference every other backend is checked against. Weights stay in their
//! stored format (mapped from the file) and are decoded at use, panel by panel, inside Prism's own
//! packed GEMM ([`gemm`]); activations are f32 throughout, as in the PyTorch reference (which runs
//! GGUF weights dequantized to f32). Work is spread over a small thread pool ([`pool`]).

pub mod decode;
mod delta;
pub mod gemm;
mod ops;
pub mod pool;
mod profile;

use std::sync::{Arc, Mutex, MutexGuard};

use self::gemm::{MatA, MatC, Strided, WeightPanel};
use self::pool::Pool;
use self::profile::{OpTimes, Timed};
use super::exec::{
    AttnShape, DeltaBufs, DeltaState, Edit, EditKind, Exec, ExpertScratch, KvCache, LinearIn,
    MlpId, NormSel, Readback, Table,
};
use super::forward;
use super::{Backend, LogitsOut, Request, RowStats, RunOutput, Session};
use crate::arch::ArchSpec;
use crate::error::{PrismError, Result};
use crate::metrics::{row_stats, RowStat};
use crate::model::Model;
use crate::weights::{LinearId, MixerWeights, ModelWeights, NormWeights, Weight};

pub struct CpuBackend {
    spec: ArchSpec,
    /// Views of the checkpoint's bytes (cloning them copies no weight data).
    weights: ModelWeights,
    pool: &'static Pool,
    /// Time per op kind, collected while profiling is on.
    profile: Mutex<Option<OpTimes>>,
}

impl CpuBackend {
    pub fn new(model: &Model) -> Result<Self> {
        Ok(CpuBackend {
            spec: model.spec.clone(),
            weights: model.weights.clone(),
            pool: Pool::global(),
            profile: Mutex::new(None),
        })
    }
}

impl CpuBackend {
    /// Runs the forward pass on `e`, timing every op while profiling is on.
    fn run_exec(
        &self,
        e: &mut CpuExec<'_>,
        req: &Request<'_>,
        cache: Option<&mut KvCache<CpuBuf>>,
    ) -> Result<RunOutput> {
        let profiling = self
            .profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if !profiling {
            return forward::run(e, req, cache);
        }
        let mut timed = Timed {
            inner: e,
            times: OpTimes::default(),
        };
        let out = forward::run(&mut timed, req, cache);
        if let Some(p) = self
            .profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            p.merge(&timed.times);
        }
        out
    }
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        format!("cpu (f32, {} threads)", self.pool.threads())
    }

    fn run(&self, req: &Request<'_>) -> Result<RunOutput> {
        let mut e = CpuExec::new(self);
        self.run_exec(&mut e, req, None)
    }

    fn set_profiling(&self, on: bool) {
        *self.profile.lock().unwrap_or_else(|e| e.into_inner()) = on.then(OpTimes::default);
    }

    fn take_profile(&self) -> Vec<(String, f64, usize)> {
        let mut guard = self.profile.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(times) => std::mem::take(times)
                .0
                .into_iter()
                .map(|(k, (d, n))| (k.to_string(), d.as_secs_f64() * 1e3, n))
                .collect(),
            None => Vec::new(),
        }
    }

    fn session(&self, batch: usize, capacity: usize) -> Result<Box<dyn Session + '_>> {
        Ok(Box::new(CpuSession {
            backend: self,
            cache: KvCache::new(batch, capacity),
        }))
    }
}

struct CpuSession<'a> {
    backend: &'a CpuBackend,
    cache: KvCache<CpuBuf>,
}

impl Session for CpuSession<'_> {
    fn run(&mut self, req: &Request<'_>) -> Result<RunOutput> {
        let mut e = CpuExec::new(self.backend);
        self.backend.run_exec(&mut e, req, Some(&mut self.cache))
    }

    fn len(&self) -> usize {
        self.cache.len
    }

    fn reset(&mut self) {
        self.cache.len = 0;
    }
}

/// A CPU buffer: shared so that the forward pass can hold several handles to it.
#[derive(Clone)]
pub struct CpuBuf(Arc<Mutex<Vec<f32>>>);

impl CpuBuf {
    fn new(v: Vec<f32>) -> CpuBuf {
        CpuBuf(Arc::new(Mutex::new(v)))
    }

    fn get(&self) -> MutexGuard<'_, Vec<f32>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Locked<'b> = MutexGuard<'b, Vec<f32>>;

/// Two distinct buffers, locked (the forward pass never aliases an input with an output).
fn two<'b>(a: &'b CpuBuf, b: &'b CpuBuf) -> Result<(Locked<'b>, Locked<'b>)> {
    if Arc::ptr_eq(&a.0, &b.0) {
        return Err(PrismError::Backend(
            "an op read and wrote the same buffer (a bug in Prism)".into(),
        ));
    }
    Ok((a.get(), b.get()))
}

fn short(what: &str) -> PrismError {
    PrismError::Backend(format!("{what}: buffer too short (a bug in Prism)"))
}

struct CpuExec<'a> {
    b: &'a CpuBackend,
    back: Readback,
}

impl<'a> CpuExec<'a> {
    fn new(b: &'a CpuBackend) -> Self {
        CpuExec {
            b,
            back: Readback::default(),
        }
    }

    fn experts_spec(&self) -> Result<crate::arch::ExpertSpec> {
        self.b
            .spec
            .experts
            .ok_or_else(|| PrismError::Backend("the model has no experts".into()))
    }

    fn norm_weights(&self, which: NormSel) -> Result<&'a NormWeights> {
        let w = &self.b.weights;
        let found = match which {
            NormSel::Layer(l, id) => w.layers.get(l).and_then(|layer| layer.norm(id)),
            NormSel::Final => w.final_norm.as_ref(),
            NormSel::Embedding => w.embedding_norm.as_ref(),
        };
        found.ok_or_else(|| PrismError::Backend(format!("the model has no {which:?} norm")))
    }
}

/// A small weight (a norm, a bias) as f32.
fn vector(w: &Weight) -> Vec<f32> {
    w.to_f32()
}

impl Exec for CpuExec<'_> {
    type Buf = CpuBuf;

    fn spec(&self) -> &ArchSpec {
        &self.b.spec
    }

    fn alloc(&mut self, len: usize, _what: &'static str) -> Result<CpuBuf> {
        Ok(CpuBuf::new(vec![0.0; len]))
    }

    fn upload(&mut self, data: &[f32], _what: &'static str) -> Result<CpuBuf> {
        Ok(CpuBuf::new(data.to_vec()))
    }

    fn embed(&mut self, ids: &[u32], out: &CpuBuf) -> Result<()> {
        let w = &self.b.weights.token_embedding;
        let h = w.cols();
        let mut o = out.get();
        for (r, &id) in ids.iter().enumerate() {
            let row = o
                .get_mut(r * h..(r + 1) * h)
                .ok_or_else(|| short("embed"))?;
            w.decode_row(id as usize, 0, row);
        }
        Ok(())
    }

    fn add_table_rows(&mut self, table: Table, rows: &[u32], out: &CpuBuf) -> Result<()> {
        let weights = &self.b.weights;
        let w = match table {
            Table::Positions => weights.position_embedding.as_ref(),
            Table::TokenType => weights.token_type_embedding.as_ref(),
            Table::PerLayer(_) => weights.per_layer_embedding.as_ref(),
        }
        .ok_or_else(|| PrismError::Backend(format!("the model has no {table:?} table")))?;
        // A layer's share of the per-layer table: its columns l*p..(l+1)*p.
        let (h, c0) = match (table, self.spec().per_layer_input) {
            (Table::PerLayer(l), Some(p)) => (p, l * p),
            _ => (w.cols(), 0),
        };
        let mut tmp = vec![0f32; h];
        let mut o = out.get();
        for (r, &i) in rows.iter().enumerate() {
            if i as usize >= w.rows() {
                return Err(PrismError::Input(format!(
                    "position {i} is beyond the model's {} learned positions",
                    w.rows()
                )));
            }
            w.decode_row(i as usize, c0, &mut tmp);
            let row = o
                .get_mut(r * h..(r + 1) * h)
                .ok_or_else(|| short("table"))?;
            row.iter_mut().zip(&tmp).for_each(|(a, b)| *a += b);
        }
        Ok(())
    }

    fn linear(
        &mut self,
        x: LinearIn<'_, CpuBuf>,
        layer: usize,
        which: LinearId,
        out: &CpuBuf,
        rows: usize,
        accumulate: bool,
    ) -> Result<()> {
        // The CPU normalizes in `norm_input` (the default), so no input carries a norm here.
        if let Some(n) = x.norm {
            return Err(PrismError::Backend(format!(
                "the CPU backend was handed the {n:?} norm to fold into a matmul"
            )));
        }
        let x = x.x;
        let lin = self
            .b
            .weights
            .layers
            .get(layer)
            .and_then(|l| l.linear(which))
            .ok_or_else(|| PrismError::Backend(format!("layer {layer} has no {which:?} weight")))?;
        let (n, k) = (lin.weight.rows(), lin.weight.cols());
        let (xg, mut og) = two(x, out)?;
        if xg.len() < rows * k || og.len() < rows * n {
            return Err(short("linear"));
        }
        gemm::gemm(
            MatA {
                data: &xg,
                rows,
                cols: k,
                stride: k,
            },
            &WeightPanel(&lin.weight),
            MatC::new(&mut og, n),
            accumulate,
            Some(self.b.pool),
        );
        if let Some(bias) = &lin.bias {
            let bias = vector(bias);
            for row in og.chunks_mut(n).take(rows) {
                row.iter_mut().zip(&bias).for_each(|(a, b)| *a += b);
            }
        }
        Ok(())
    }

    fn norm(&mut self, x: &CpuBuf, which: NormSel, out: &CpuBuf, rows: usize) -> Result<()> {
        let nw = self.norm_weights(which)?;
        let w = vector(&nw.weight);
        let b = nw.bias.as_ref().map(vector);
        let width = w.len();
        let (kind, eps) = (self.spec().norm, self.spec().norm_eps);
        let (xg, mut og) = two(x, out)?;
        if xg.len() < rows * width || og.len() < rows * width {
            return Err(short("norm"));
        }
        for (xr, or) in xg.chunks(width).zip(og.chunks_mut(width)).take(rows) {
            ops::norm_row(kind, eps, xr, &w, b.as_deref(), or);
        }
        Ok(())
    }

    fn rope(
        &mut self,
        x: &CpuBuf,
        rows: usize,
        heads: usize,
        head_dim: usize,
        dims: usize,
        cos: &CpuBuf,
        sin: &CpuBuf,
    ) -> Result<()> {
        let (cos, sin) = (cos.get(), sin.get());
        let s = self.spec();
        let rope = s
            .rope
            .as_ref()
            .ok_or_else(|| PrismError::Backend("RoPE without frequencies".into()))?;
        let (hd, pairing) = (head_dim, rope.pairing);
        if dims > hd {
            return Err(short("rope"));
        }
        let half = dims / 2;
        let mut xg = x.get();
        let width = heads * hd;
        if xg.len() < rows * width || cos.len() < rows * half || sin.len() < rows * half {
            return Err(short("rope"));
        }
        for (r, row) in xg.chunks_mut(width).take(rows).enumerate() {
            ops::rope_row(
                row,
                heads,
                hd,
                dims,
                pairing,
                &cos[r * half..(r + 1) * half],
                &sin[r * half..(r + 1) * half],
            );
        }
        Ok(())
    }

    fn attention(
        &mut self,
        q: &CpuBuf,
        k: &CpuBuf,
        v: &CpuBuf,
        out: &CpuBuf,
        sh: &AttnShape,
        probs: Option<&CpuBuf>,
    ) -> Result<()> {
        let (qd, kvd) = (sh.heads * sh.head_dim, sh.kv_heads * sh.head_dim);
        let qg = q.get();
        let kg = k.get();
        let vg = if Arc::ptr_eq(&k.0, &v.0) {
            return Err(short("attention"));
        } else {
            v.get()
        };
        let mut og = out.get();
        let mut pg = probs.map(|p| p.get());
        let rows = sh.batch * sh.seq;
        if qg.len() < rows * qd
            || og.len() < rows * qd
            || kg.len() < sh.batch * sh.key_stride * kvd
            || vg.len() < sh.batch * sh.key_stride * kvd
            || pg
                .as_ref()
                .is_some_and(|p| p.len() < sh.batch * sh.heads * sh.seq * sh.keys)
        {
            return Err(short("attention"));
        }
        let out_c = MatC::new(&mut og, qd);
        let probs_c = pg.as_mut().map(|p| MatC::new(p, sh.keys));
        let group = sh.heads / sh.kv_heads;
        let (qs, ks, vs) = (&qg[..], &kg[..], &vg[..]);
        let sinks: Option<Vec<f32>> = if sh.sinks {
            let w = self
                .b
                .weights
                .layers
                .get(sh.layer)
                .and_then(|l| l.mixer.sinks());
            Some(
                w.ok_or_else(|| {
                    PrismError::Backend(format!("layer {} has no attention sinks", sh.layer))
                })?
                .to_f32(),
            )
        } else {
            None
        };
        let sinks = sinks.as_deref();
        let task = |pair: usize| {
            let (bi, h) = (pair / sh.heads, pair % sh.heads);
            let sink = sinks.map(|s| s[h]);
            attend_head(
                qs,
                ks,
                vs,
                out_c,
                probs_c,
                sh,
                bi,
                h,
                h / group,
                qd,
                kvd,
                sink,
            );
        };
        self.b.pool.run(sh.batch * sh.heads, &task);
        Ok(())
    }

    fn linear_gated(
        &mut self,
        x: LinearIn<'_, CpuBuf>,
        layer: usize,
        mlp: MlpId,
        gate: &CpuBuf,
        up: &CpuBuf,
        rows: usize,
    ) -> Result<()> {
        let [g_id, u_id, _] = mlp.ids();
        self.linear(x, layer, g_id, gate, rows, false)?;
        self.linear(x, layer, u_id, up, rows, false)?;
        let n = rows * mlp.width(self.spec(), layer);
        let act = self.spec().activation;
        let (mut g, u) = two(gate, up)?;
        if g.len() < n || u.len() < n {
            return Err(short("gated"));
        }
        parallel_zip(self.b.pool, &mut g[..n], &u[..n], |g, u| {
            ops::gated(act, g, u)
        });
        Ok(())
    }

    fn route(
        &mut self,
        x: LinearIn<'_, CpuBuf>,
        layer: usize,
        probs: &CpuBuf,
        weights: &CpuBuf,
        rows: usize,
    ) -> Result<()> {
        let xs = self.experts_spec()?;
        self.linear(x, layer, LinearId::Router, probs, rows, false)?;
        let (mut p, mut w) = two(probs, weights)?;
        let n = rows * xs.count;
        if p.len() < n || w.len() < n {
            return Err(short("route"));
        }
        // Gemma 4's per-expert scales, after the renormalization.
        let scale = match self.b.weights.layers.get(layer).map(|l| &l.mlp) {
            Some(crate::weights::Mlp::Experts(x)) => x.expert_scale.as_ref().map(|s| s.to_f32()),
            _ => None,
        };
        for (p, w) in p[..n].chunks_mut(xs.count).zip(w[..n].chunks_mut(xs.count)) {
            xs.route(p, w);
            if let Some(s) = &scale {
                w.iter_mut().zip(s).for_each(|(w, s)| *w *= s);
            }
        }
        Ok(())
    }

    fn experts(
        &mut self,
        x: LinearIn<'_, CpuBuf>,
        layer: usize,
        weights: &CpuBuf,
        _scratch: &ExpertScratch<CpuBuf>,
        out: &CpuBuf,
        rows: usize,
        accumulate: bool,
    ) -> Result<()> {
        let xs = self.experts_spec()?;
        let (h, n) = (self.spec().hidden, xs.count);
        let w: Vec<f32> = weights
            .get()
            .get(..rows * n)
            .ok_or_else(|| short("experts"))?
            .to_vec();
        let input: Vec<f32> =
            x.x.get()
                .get(..rows * h)
                .ok_or_else(|| short("experts"))?
                .to_vec();
        // Summed apart and then added, in ascending expert order, as transformers does.
        let mut sum = vec![0f32; rows * h];
        for e in 0..n {
            // Only the rows routed to this expert: the others never read its weights.
            let mine: Vec<usize> = (0..rows).filter(|&r| w[r * n + e] != 0.0).collect();
            if mine.is_empty() {
                continue;
            }
            let m = mine.len();
            let mut gathered = Vec::with_capacity(m * h);
            for &r in &mine {
                gathered.extend_from_slice(&input[r * h..(r + 1) * h]);
            }
            let xa = CpuBuf::new(gathered);
            let gate = CpuBuf::new(vec![0.0; m * xs.width]);
            let up = CpuBuf::new(vec![0.0; m * xs.width]);
            let down = CpuBuf::new(vec![0.0; m * h]);
            let id = MlpId::Expert(e as u32);
            self.linear_gated(LinearIn::plain(&xa), layer, id, &gate, &up, m)?;
            self.linear(LinearIn::plain(&gate), layer, id.ids()[2], &down, m, false)?;
            let d = down.get();
            for (i, &r) in mine.iter().enumerate() {
                let wt = w[r * n + e];
                for (s, v) in sum[r * h..(r + 1) * h]
                    .iter_mut()
                    .zip(&d[i * h..(i + 1) * h])
                {
                    *s += v * wt;
                }
            }
        }
        let mut o = out.get();
        let o = o.get_mut(..rows * h).ok_or_else(|| short("experts"))?;
        if accumulate {
            o.iter_mut().zip(&sum).for_each(|(a, b)| *a += b);
        } else {
            o.copy_from_slice(&sum);
        }
        Ok(())
    }

    fn delta_net(
        &mut self,
        layer: usize,
        bufs: &DeltaBufs<CpuBuf>,
        state: &DeltaState<CpuBuf>,
        batch: usize,
        seq: usize,
        mixing: Option<&CpuBuf>,
    ) -> Result<()> {
        let s = self.spec();
        let d = s
            .delta_net
            .ok_or_else(|| PrismError::Backend("the model has no linear attention".into()))?;
        let Some(MixerWeights::DeltaNet(w)) = self.b.weights.layers.get(layer).map(|l| &l.mixer)
        else {
            return Err(PrismError::Backend(format!(
                "layer {layer} is not a linear-attention layer"
            )));
        };
        let vectors = delta::LayerVectors {
            conv: vector(&w.conv),
            a_neg: vector(&w.a_neg),
            dt_bias: vector(&w.dt_bias),
            norm: vector(&w.norm.weight),
            eps: s.norm_eps as f32,
        };
        let (c, nv, dv) = (d.conv_dim(), d.v_heads, d.v_dim);
        let rows = batch * seq;
        let qkv = bufs.qkv.get();
        let (z, bb, aa) = (bufs.z.get(), bufs.b.get(), bufs.a.get());
        let mut conv_state = state.conv.get();
        let mut rec = state.rec.get();
        let mut core = bufs.core.get();
        let mut mix = mixing.map(|m| m.get());
        if qkv.len() < rows * c
            || z.len() < rows * nv * dv
            || bb.len() < rows * nv
            || aa.len() < rows * nv
            || conv_state.len() < batch * d.conv_state_len()
            || rec.len() < batch * d.state_len()
            || core.len() < rows * nv * dv
            || mix
                .as_ref()
                .is_some_and(|m| m.len() < batch * nv * seq * seq)
        {
            return Err(short("linear attention"));
        }
        let (sl, cl) = (d.k_dim * dv, d.conv_state_len());
        for bi in 0..batch {
            let r0 = bi * seq;
            let mut y = vec![0f32; seq * c];
            delta::conv(
                &d,
                &vectors.conv,
                &qkv[r0 * c..(r0 + seq) * c],
                &mut conv_state[bi * cl..(bi + 1) * cl],
                &mut y,
            );
            // One task per value head, each with its own state and output.
            let states: Vec<Mutex<Vec<f32>>> = (0..nv)
                .map(|h| {
                    let off = (bi * nv + h) * sl;
                    Mutex::new(rec[off..off + sl].to_vec())
                })
                .collect();
            let outs: Vec<Mutex<(Vec<f32>, Vec<f32>)>> = (0..nv)
                .map(|_| {
                    let m = if mix.is_some() { seq * seq } else { 0 };
                    Mutex::new((vec![0f32; seq * dv], vec![0f32; m]))
                })
                .collect();
            let (zs, bs, as_) = (
                &z[r0 * nv * dv..(r0 + seq) * nv * dv],
                &bb[r0 * nv..(r0 + seq) * nv],
                &aa[r0 * nv..(r0 + seq) * nv],
            );
            let want_mix = mix.is_some();
            let task = |h: usize| {
                let mut st = states[h].lock().unwrap_or_else(|e| e.into_inner());
                let mut o = outs[h].lock().unwrap_or_else(|e| e.into_inner());
                let (out, m) = &mut *o;
                let m = want_mix.then_some(&mut m[..]);
                delta::head(&d, &vectors, h, &y, zs, bs, as_, &mut st, out, m);
            };
            self.b.pool.run(nv, &task);
            for h in 0..nv {
                let off = (bi * nv + h) * sl;
                let st = states[h].lock().unwrap_or_else(|e| e.into_inner());
                rec[off..off + sl].copy_from_slice(&st);
                let o = outs[h].lock().unwrap_or_else(|e| e.into_inner());
                for t in 0..seq {
                    let dst = ((r0 + t) * nv + h) * dv;
                    core[dst..dst + dv].copy_from_slice(&o.0[t * dv..(t + 1) * dv]);
                }
                if let Some(mx) = mix.as_mut() {
                    let dst = (bi * nv + h) * seq * seq;
                    mx[dst..dst + seq * seq].copy_from_slice(&o.1);
                }
            }
        }
        Ok(())
    }

    fn sigmoid_gate(&mut self, x: &CpuBuf, gate: &CpuBuf, n: usize, per: usize) -> Result<()> {
        let (mut xg, g) = two(x, gate)?;
        let per = per.max(1);
        if xg.len() < n || g.len() < n.div_ceil(per) {
            return Err(short("sigmoid gate"));
        }
        for (i, x) in xg[..n].iter_mut().enumerate() {
            *x *= 1.0 / (1.0 + (-g[i / per]).exp());
        }
        Ok(())
    }

    fn activate(&mut self, x: &CpuBuf, n: usize) -> Result<()> {
        let act = self.spec().activation;
        let mut g = x.get();
        let g = g.get_mut(..n).ok_or_else(|| short("activate"))?;
        parallel_zip(self.b.pool, g, &[], |x, _| ops::activate(act, x));
        Ok(())
    }

    fn add(&mut self, src: &CpuBuf, dst: &CpuBuf, n: usize) -> Result<()> {
        let (s, mut d) = two(src, dst)?;
        if s.len() < n || d.len() < n {
            return Err(short("add"));
        }
        d[..n].iter_mut().zip(&s[..n]).for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn mul(&mut self, src: &CpuBuf, dst: &CpuBuf, n: usize) -> Result<()> {
        let (s, mut d) = two(src, dst)?;
        if s.len() < n || d.len() < n {
            return Err(short("mul"));
        }
        d[..n].iter_mut().zip(&s[..n]).for_each(|(a, b)| *a *= b);
        Ok(())
    }

    fn scale(&mut self, x: &CpuBuf, n: usize, s: f32) -> Result<()> {
        let mut g = x.get();
        g.get_mut(..n)
            .ok_or_else(|| short("scale"))?
            .iter_mut()
            .for_each(|v| *v *= s);
        Ok(())
    }

    fn copy(
        &mut self,
        src: &CpuBuf,
        src_off: usize,
        dst: &CpuBuf,
        dst_off: usize,
        n: usize,
    ) -> Result<()> {
        let (s, mut d) = two(src, dst)?;
        let from = s.get(src_off..src_off + n).ok_or_else(|| short("copy"))?;
        d.get_mut(dst_off..dst_off + n)
            .ok_or_else(|| short("copy"))?
            .copy_from_slice(from);
        Ok(())
    }

    fn edit(
        &mut self,
        x: &CpuBuf,
        width: usize,
        e: &Edit<'_>,
        source: Option<&CpuBuf>,
    ) -> Result<()> {
        // The source's lock, unless it is x's own.
        let src = source.filter(|s| !Arc::ptr_eq(&s.0, &x.0)).map(|s| s.get());
        let mut g = x.get();
        let cols = e.col0..e.col0 + e.ncols;
        if e.rows.iter().any(|&r| (r + 1) * width > g.len()) || cols.end > width {
            return Err(short("edit"));
        }
        match &e.kind {
            EditKind::Add { vector, scale } => {
                for &r in &e.rows {
                    let row = &mut g[r * width..][cols.clone()];
                    row.iter_mut()
                        .zip(vector.iter())
                        .for_each(|(x, v)| *x += scale * v);
                }
            }
            EditKind::Set(values) => {
                for (i, &r) in e.rows.iter().enumerate() {
                    g[r * width..][cols.clone()]
                        .copy_from_slice(&values[i * e.ncols..(i + 1) * e.ncols]);
                }
            }
            EditKind::Zero => {
                for &r in &e.rows {
                    g[r * width..][cols.clone()]
                        .iter_mut()
                        .for_each(|x| *x = 0.0);
                }
            }
            EditKind::Mean { over } => {
                let mut mean = vec![0f64; e.ncols];
                for &r in over {
                    for (m, &v) in mean.iter_mut().zip(&g[r * width..][cols.clone()]) {
                        *m += v as f64;
                    }
                }
                let mean: Vec<f32> = mean
                    .iter()
                    .map(|m| (m / over.len().max(1) as f64) as f32)
                    .collect();
                for &r in &e.rows {
                    g[r * width..][cols.clone()].copy_from_slice(&mean);
                }
            }
            EditKind::Feature { encoder, target } => {
                let n = encoder.d_in();
                if encoder.direction.len() != e.ncols || (src.is_none() && n != e.ncols) {
                    return Err(short("feature edit"));
                }
                for &r in &e.rows {
                    let f = match &src {
                        Some(s) => {
                            let row = s.get(r * n..(r + 1) * n);
                            encoder.activations(row.ok_or_else(|| short("feature source"))?)[0]
                        }
                        None => encoder.activations(&g[r * width..][cols.clone()])[0],
                    };
                    let row = &mut g[r * width..][cols.clone()];
                    let d = target - f;
                    row.iter_mut()
                        .zip(&encoder.direction)
                        .for_each(|(x, w)| *x += d * w);
                }
            }
        }
        Ok(())
    }

    fn read(&mut self, x: &CpuBuf, off: usize, n: usize) -> Result<usize> {
        let g = x.get();
        let data = g.get(off..off + n).ok_or_else(|| short("read"))?.to_vec();
        self.back.data.push(data);
        Ok(self.back.data.len() - 1)
    }

    fn logits(
        &mut self,
        hidden: &CpuBuf,
        rows: &[usize],
        targets: &[u32],
        top_k: usize,
        keep: bool,
    ) -> Result<usize> {
        let s = &self.b.spec;
        let (h, vocab) = (s.hidden, s.vocab);
        let u = self.b.weights.unembedding();
        let bias = self.b.weights.lm_head_bias.as_ref().map(vector);
        let hg = hidden.get();
        if rows.iter().any(|&r| (r + 1) * h > hg.len()) {
            return Err(short("logits"));
        }
        let mut stats = RowStats::default();
        let mut full = if keep {
            Some(Vec::with_capacity(rows.len() * vocab))
        } else {
            None
        };
        // A few rows at a time, so that a long text never holds all its logits at once.
        const CHUNK: usize = 128;
        let mut a = Vec::with_capacity(CHUNK.min(rows.len()) * h);
        // Rows padded past a multiple of 4 KiB: a stride of exactly 2^k bytes would put every row
        // of a tile in the same cache set.
        let stride = vocab + 16;
        let mut logits = vec![0f32; CHUNK.min(rows.len()) * stride];
        for (chunk_rows, chunk_targets) in rows.chunks(CHUNK).zip(targets.chunks(CHUNK)) {
            let c = chunk_rows.len();
            a.clear();
            for &r in chunk_rows {
                a.extend_from_slice(&hg[r * h..(r + 1) * h]);
            }
            gemm::gemm(
                MatA {
                    data: &a,
                    rows: c,
                    cols: h,
                    stride: h,
                },
                &WeightPanel(u),
                MatC::new(&mut logits[..c * stride], stride),
                false,
                Some(self.b.pool),
            );
            let block = &mut logits[..c * stride];
            for row in block.chunks_mut(stride) {
                let row = &mut row[..vocab];
                if let Some(b) = &bias {
                    row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
                }
                if let Some(cap) = s.final_softcap {
                    ops::softcap(row, cap);
                }
            }
            let per_row: Vec<Mutex<Option<RowStat>>> = (0..c).map(|_| Mutex::new(None)).collect();
            let block_ref = &*block;
            self.b.pool.run(c, &|i| {
                let row = &block_ref[i * stride..i * stride + vocab];
                let target = Some(chunk_targets[i]).filter(|&t| t != u32::MAX);
                *per_row[i].lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(row_stats(row, target, top_k));
            });
            for cell in per_row {
                let st = cell
                    .into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .ok_or_else(|| PrismError::Backend("a logit row was not computed".into()))?;
                stats.entropy_bits.push(st.entropy_bits);
                stats
                    .surprisal_bits
                    .push(st.surprisal_bits.unwrap_or(f64::NAN));
                stats.rank.push(st.rank.unwrap_or(0));
                stats.top.push(st.top);
            }
            if let Some(f) = &mut full {
                for row in block.chunks(stride) {
                    f.extend_from_slice(&row[..vocab]);
                }
            }
        }
        self.back.logits.push(LogitsOut {
            rows: rows.to_vec(),
            stats,
            full,
        });
        Ok(self.back.logits.len() - 1)
    }

    fn finish(&mut self) -> Result<Readback> {
        Ok(std::mem::take(&mut self.back))
    }
}

/// `f` over chunks of `x` (and the matching chunks of `y`, when given) across the pool.
fn parallel_zip(pool: &Pool, x: &mut [f32], y: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    const CHUNK: usize = 1 << 15;
    if x.len() <= CHUNK {
        return f(x, y);
    }
    let c = MatC::new(x, 0);
    let n = x.len();
    pool.run(n.div_ceil(CHUNK), &|i| {
        let (s, e) = (i * CHUNK, ((i + 1) * CHUNK).min(n));
        // SAFETY: every task owns the disjoint range s..e of x.
        let part = unsafe { c.slice_mut(s, e) };
        let other = if y.is_empty() { y } else { &y[s..e] };
        f(part, other);
    });
}

/// One (sequence, head) of attention: query blocks against the keys they can see.
#[allow(clippy::too_many_arguments)]
fn attend_head(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: MatC,
    probs: Option<MatC>,
    sh: &AttnShape,
    bi: usize,
    h: usize,
    kvh: usize,
    qd: usize,
    kvd: usize,
    sink: Option<f32>,
) {
    const QB: usize = 64;
    let hd = sh.head_dim;
    let key_base = bi * sh.key_stride;
    let mut scores = Vec::new();
    let mut i0 = 0;
    while i0 < sh.seq {
        let i1 = (i0 + QB).min(sh.seq);
        let nq = i1 - i0;
        let hi = if sh.causal { sh.past + i1 } else { sh.keys };
        let lo = match (sh.window, sh.causal) {
            (Some(w), true) => (sh.past + i0 + 1).saturating_sub(w),
            _ => 0,
        };
        let nk = hi - lo;
        scores.clear();
        scores.resize(nq * nk, 0.0);
        let q_rows = &q[(bi * sh.seq + i0) * qd + h * hd..];
        gemm::gemm(
            MatA {
                data: q_rows,
                rows: nq,
                cols: hd,
                stride: qd,
            },
            &Strided {
                data: &k[(key_base + lo) * kvd + kvh * hd..],
                n: nk,
                k: hd,
                row_stride: kvd,
                col_stride: 1,
            },
            MatC::new(&mut scores, nk),
            false,
            None,
        );
        for (i, row) in scores.chunks_mut(nk).enumerate() {
            let pos = sh.past + i0 + i;
            for (j, s) in row.iter_mut().enumerate() {
                let key = lo + j;
                *s *= sh.scale;
                if let Some(cap) = sh.softcap {
                    *s = (*s / cap).tanh() * cap;
                }
                let masked = sh.causal && (key > pos || sh.window.is_some_and(|w| pos - key >= w));
                if masked {
                    *s = f32::NEG_INFINITY;
                }
            }
            match sink {
                Some(s) => ops::softmax_with_sink(row, s),
                None => ops::softmax(row),
            }
            if let Some(p) = probs {
                let r = (bi * sh.heads + h) * sh.seq + i0 + i;
                // SAFETY: row r of the probabilities belongs to this (sequence, head) alone.
                let dst = unsafe { p.row_mut(r, sh.keys) };
                dst.iter_mut().for_each(|x| *x = 0.0);
                dst[lo..hi].copy_from_slice(row);
            }
        }
        gemm::gemm(
            MatA {
                data: &scores,
                rows: nq,
                cols: nk,
                stride: nk,
            },
            &Strided {
                data: &v[(key_base + lo) * kvd + kvh * hd..],
                n: hd,
                k: nk,
                row_stride: 1,
                col_stride: kvd,
            },
            // SAFETY: columns h*hd..(h+1)*hd of these rows belong to this (sequence, head).
            unsafe { out.offset((bi * sh.seq + i0) * qd + h * hd) },
            false,
            None,
        );
        i0 = i1;
    }
}
