//! Time per op kind on the CPU (`prism bench --profile`): an [`Exec`] that wraps another and
//! times each call. The CPU runs ops as they are called, so wall time per call is meaningful; the
//! GPU has its timestamp queries instead.

use crate::arch::ArchSpec;
use crate::backend::exec::{
    AttnShape, DeltaBufs, DeltaState, Edit, Exec, ExpertScratch, LinearIn, MlpId, NormSel,
    Readback, Table,
};
use crate::error::Result;
use crate::weights::LinearId;

/// Wall time per op kind, for `prism bench --profile` on backends that run ops as they are
/// called (the CPU).
#[derive(Debug, Clone, Default)]
pub struct OpTimes(pub std::collections::BTreeMap<&'static str, (std::time::Duration, usize)>);

impl OpTimes {
    fn add(&mut self, op: &'static str, t: std::time::Instant) {
        let e = self.0.entry(op).or_default();
        e.0 += t.elapsed();
        e.1 += 1;
    }

    pub fn merge(&mut self, other: &OpTimes) {
        for (k, (d, n)) in &other.0 {
            let e = self.0.entry(k).or_default();
            e.0 += *d;
            e.1 += n;
        }
    }
}

/// An [`Exec`] that times every op of the one it wraps.
pub struct Timed<'e, E: Exec> {
    pub inner: &'e mut E,
    pub times: OpTimes,
}

macro_rules! timed {
    ($self:ident, $name:literal, $call:expr) => {{
        let t = std::time::Instant::now();
        let r = $call;
        $self.times.add($name, t);
        r
    }};
}

impl<E: Exec> Exec for Timed<'_, E> {
    type Buf = E::Buf;

    fn spec(&self) -> &ArchSpec {
        self.inner.spec()
    }
    fn fuses_residual(&self) -> bool {
        self.inner.fuses_residual()
    }
    fn alloc(&mut self, len: usize, what: &'static str) -> Result<E::Buf> {
        timed!(self, "alloc", self.inner.alloc(len, what))
    }
    fn upload(&mut self, data: &[f32], what: &'static str) -> Result<E::Buf> {
        timed!(self, "upload", self.inner.upload(data, what))
    }
    fn embed(&mut self, ids: &[u32], out: &E::Buf) -> Result<()> {
        timed!(self, "embed", self.inner.embed(ids, out))
    }
    fn add_table_rows(&mut self, table: Table, rows: &[u32], out: &E::Buf) -> Result<()> {
        timed!(self, "embed", self.inner.add_table_rows(table, rows, out))
    }
    fn linear(
        &mut self,
        x: LinearIn<'_, E::Buf>,
        layer: usize,
        which: LinearId,
        out: &E::Buf,
        rows: usize,
        accumulate: bool,
    ) -> Result<()> {
        timed!(
            self,
            "linear",
            self.inner.linear(x, layer, which, out, rows, accumulate)
        )
    }
    fn norm(&mut self, x: &E::Buf, which: NormSel, out: &E::Buf, rows: usize) -> Result<()> {
        timed!(self, "norm", self.inner.norm(x, which, out, rows))
    }
    fn norm_input<'b>(
        &mut self,
        x: &'b E::Buf,
        which: NormSel,
        out: &'b E::Buf,
        rows: usize,
    ) -> Result<LinearIn<'b, E::Buf>> {
        timed!(self, "norm", self.inner.norm_input(x, which, out, rows))
    }
    fn linear_gated(
        &mut self,
        x: LinearIn<'_, E::Buf>,
        layer: usize,
        mlp: MlpId,
        gate: &E::Buf,
        up: &E::Buf,
        rows: usize,
    ) -> Result<()> {
        timed!(
            self,
            "linear",
            self.inner.linear_gated(x, layer, mlp, gate, up, rows)
        )
    }
    fn route(
        &mut self,
        x: LinearIn<'_, E::Buf>,
        layer: usize,
        probs: &E::Buf,
        weights: &E::Buf,
        rows: usize,
    ) -> Result<()> {
        timed!(
            self,
            "route",
            self.inner.route(x, layer, probs, weights, rows)
        )
    }
    fn experts(
        &mut self,
        x: LinearIn<'_, E::Buf>,
        layer: usize,
        weights: &E::Buf,
        scratch: &ExpertScratch<E::Buf>,
        out: &E::Buf,
        rows: usize,
        accumulate: bool,
    ) -> Result<()> {
        timed!(
            self,
            "experts",
            self.inner
                .experts(x, layer, weights, scratch, out, rows, accumulate)
        )
    }
    fn delta_net(
        &mut self,
        layer: usize,
        bufs: &DeltaBufs<E::Buf>,
        state: &DeltaState<E::Buf>,
        batch: usize,
        seq: usize,
        mixing: Option<&E::Buf>,
    ) -> Result<()> {
        timed!(
            self,
            "linear attention",
            self.inner.delta_net(layer, bufs, state, batch, seq, mixing)
        )
    }
    fn sigmoid_gate(&mut self, x: &E::Buf, gate: &E::Buf, n: usize, per: usize) -> Result<()> {
        timed!(
            self,
            "elementwise",
            self.inner.sigmoid_gate(x, gate, n, per)
        )
    }
    fn rope(
        &mut self,
        x: &E::Buf,
        rows: usize,
        heads: usize,
        head_dim: usize,
        dims: usize,
        cos: &E::Buf,
        sin: &E::Buf,
    ) -> Result<()> {
        let r = self.inner.rope(x, rows, heads, head_dim, dims, cos, sin);
        timed!(self, "rope", r)
    }
    fn attention(
        &mut self,
        q: &E::Buf,
        k: &E::Buf,
        v: &E::Buf,
        out: &E::Buf,
        shape: &AttnShape,
        probs: Option<&E::Buf>,
    ) -> Result<()> {
        timed!(
            self,
            "attention",
            self.inner.attention(q, k, v, out, shape, probs)
        )
    }
    fn activate(&mut self, x: &E::Buf, n: usize) -> Result<()> {
        timed!(self, "activation", self.inner.activate(x, n))
    }
    fn add(&mut self, src: &E::Buf, dst: &E::Buf, n: usize) -> Result<()> {
        timed!(self, "add", self.inner.add(src, dst, n))
    }
    fn mul(&mut self, src: &E::Buf, dst: &E::Buf, n: usize) -> Result<()> {
        timed!(self, "elementwise", self.inner.mul(src, dst, n))
    }
    fn scale(&mut self, x: &E::Buf, n: usize, s: f32) -> Result<()> {
        timed!(self, "scale", self.inner.scale(x, n, s))
    }
    fn copy(&mut self, src: &E::Buf, so: usize, dst: &E::Buf, d: usize, n: usize) -> Result<()> {
        timed!(self, "copy", self.inner.copy(src, so, dst, d, n))
    }
    fn edit(&mut self, x: &E::Buf, w: usize, edit: &Edit<'_>, src: Option<&E::Buf>) -> Result<()> {
        timed!(self, "edit", self.inner.edit(x, w, edit, src))
    }
    fn read(&mut self, x: &E::Buf, off: usize, n: usize) -> Result<usize> {
        timed!(self, "read", self.inner.read(x, off, n))
    }
    fn logits(
        &mut self,
        hidden: &E::Buf,
        rows: &[usize],
        targets: &[u32],
        top_k: usize,
        keep: bool,
    ) -> Result<usize> {
        timed!(
            self,
            "logits",
            self.inner.logits(hidden, rows, targets, top_k, keep)
        )
    }
    fn finish(&mut self) -> Result<Readback> {
        timed!(self, "finish", self.inner.finish())
    }
}
