//! The ops a backend implements for the forward pass ([`Exec`]), and the shapes they take:
//! linear inputs with folded norms, attention shapes, edits, the readback and the KV cache.

use crate::arch::ArchSpec;
use crate::backend::LogitsOut;
use crate::error::Result;
use crate::weights::{LinearId, NormId};

/// A norm of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormSel {
    Layer(usize, NormId),
    Final,
    Embedding,
}

/// The input of a linear layer: a buffer, possibly with a norm that the backend folds into the
/// matmul (see [`Exec::norm_input`]).
#[derive(Debug)]
pub struct LinearIn<'a, B> {
    pub x: &'a B,
    pub norm: Option<NormSel>,
}

impl<B> Clone for LinearIn<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B> Copy for LinearIn<'_, B> {}

impl<'a, B> LinearIn<'a, B> {
    pub fn plain(x: &'a B) -> Self {
        LinearIn { x, norm: None }
    }
}

/// Which gated MLP of a layer [`Exec::linear_gated`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpId {
    Dense,
    Expert(u32),
    /// The shared expert of a mixture of experts.
    Shared,
}

impl MlpId {
    /// Its gate, up and down projections.
    pub fn ids(self) -> [LinearId; 3] {
        match self {
            MlpId::Dense => [LinearId::Gate, LinearId::Up, LinearId::Down],
            MlpId::Expert(e) => [
                LinearId::ExpertGate(e),
                LinearId::ExpertUp(e),
                LinearId::ExpertDown(e),
            ],
            MlpId::Shared => [
                LinearId::SharedGate,
                LinearId::SharedUp,
                LinearId::SharedDown,
            ],
        }
    }

    /// Its intermediate width in layer `layer`.
    pub fn width(self, spec: &ArchSpec, layer: usize) -> usize {
        match self {
            MlpId::Dense => spec.mlp_width_at(layer),
            MlpId::Expert(_) => spec.experts.map_or(0, |x| x.width),
            MlpId::Shared => spec.experts.and_then(|x| x.shared).unwrap_or(0),
        }
    }
}

/// Scratch buffers of [`Exec::experts`]: `gate` and `up` `[rows, expert width]`, `out`
/// `[rows, hidden]`.
pub struct ExpertScratch<B> {
    pub gate: B,
    pub up: B,
    pub out: B,
}

/// The buffers of a Gated DeltaNet layer ([`crate::arch::DeltaNetSpec`]) for `rows` tokens: the
/// projections `qkv` `[rows, conv_dim]`, `z` `[rows, v_heads * v_dim]`, `b` and `a`
/// `[rows, v_heads]`; `conv` `[rows, conv_dim]` scratch; the output `core` `[rows, v_heads * v_dim]`.
pub struct DeltaBufs<B> {
    pub qkv: B,
    pub conv: B,
    pub z: B,
    pub b: B,
    pub a: B,
    pub core: B,
}

/// What a Gated DeltaNet layer carries from one token to the next, per sequence: the last
/// `kernel - 1` convolution inputs `[batch, kernel - 1, conv_dim]` (oldest first) and the
/// recurrent state `[batch, v_heads, k_dim, v_dim]`. Zero at the start of a text.
#[derive(Clone)]
pub struct DeltaState<B> {
    pub conv: B,
    pub rec: B,
}

/// A learned table added row by row to the embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Positions,
    TokenType,
    /// Layer l's columns of the per-layer token table ([`crate::weights::ModelWeights::per_layer_embedding`]).
    PerLayer(usize),
}

/// Shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub batch: usize,
    /// Queries per sequence (rows of q per sequence).
    pub seq: usize,
    /// Keys before the first query (its position); queries sit at past..past+seq.
    pub past: usize,
    /// Keys per sequence (past + seq).
    pub keys: usize,
    /// Rows reserved per sequence in the key and value buffers (the cache capacity).
    pub key_stride: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub softcap: Option<f32>,
    pub window: Option<usize>,
    pub causal: bool,
    /// The layer, whose attention sinks join the softmax when `sinks` is set.
    pub layer: usize,
    pub sinks: bool,
}

/// A change to some rows (and a column range) of a buffer `[rows, width]`.
#[derive(Debug, Clone)]
pub struct Edit<'a> {
    pub rows: Vec<usize>,
    pub col0: usize,
    pub ncols: usize,
    pub kind: EditKind<'a>,
}

#[derive(Debug, Clone)]
pub enum EditKind<'a> {
    /// x += scale * vector (one vector for every row).
    Add {
        vector: &'a [f32],
        scale: f32,
    },
    /// x = values, `rows.len() * ncols` of them.
    Set(Vec<f32>),
    Zero,
    /// x = the mean of x over rows `over` (taken before any row changes).
    Mean {
        over: Vec<usize>,
    },
    /// x += (target - f(x)) * direction, f the SAE feature's activation on the row: the feature
    /// becomes `target`, the SAE's error term stays.
    Feature {
        encoder: &'a crate::intervene::FeatureEncoder,
        target: f32,
    },
}

/// The ops a backend implements. Buffers are cheap handles (`Clone`); results come back from
/// [`Exec::finish`] in the slots [`Exec::read`] and [`Exec::logits`] hand out.
pub trait Exec {
    type Buf: Clone;

    fn spec(&self) -> &ArchSpec;
    /// A zeroed buffer of `len` floats.
    fn alloc(&mut self, len: usize, what: &'static str) -> Result<Self::Buf>;
    fn upload(&mut self, data: &[f32], what: &'static str) -> Result<Self::Buf>;
    /// out[r] = token_embedding[ids[r]].
    fn embed(&mut self, ids: &[u32], out: &Self::Buf) -> Result<()>;
    /// out[r] += table[rows[r]].
    fn add_table_rows(&mut self, table: Table, rows: &[u32], out: &Self::Buf) -> Result<()>;
    /// out[rows, out_dim] (+)= x[rows, in_dim] W^T + b, with x normalized first when the input
    /// carries a norm (only backends whose `norm_input` attaches one see that).
    fn linear(
        &mut self,
        x: LinearIn<'_, Self::Buf>,
        layer: usize,
        which: LinearId,
        out: &Self::Buf,
        rows: usize,
        accumulate: bool,
    ) -> Result<()>;
    /// out = norm(x) over rows of the norm weight's width (`rows` of them).
    fn norm(&mut self, x: &Self::Buf, which: NormSel, out: &Self::Buf, rows: usize) -> Result<()>;
    /// norm(x) as the input of the linear layers that follow: by default normalized into `out`; a
    /// backend that folds the norm into its matmuls returns x with the norm attached instead.
    fn norm_input<'b>(
        &mut self,
        x: &'b Self::Buf,
        which: NormSel,
        out: &'b Self::Buf,
        rows: usize,
    ) -> Result<LinearIn<'b, Self::Buf>> {
        self.norm(x, which, out, rows)?;
        Ok(LinearIn::plain(out))
    }
    /// Whether the output projections may add straight into the residual stream (`linear` with
    /// `accumulate`) when nothing needs the sub-layer's output on its own. The CPU, the reference,
    /// keeps the separate add.
    fn fuses_residual(&self) -> bool {
        false
    }
    /// gate = act(x W_gate^T) * (x W_up^T) with the spec's gated activation, the first half of the
    /// layer's dense MLP or of one expert (`up` is scratch).
    fn linear_gated(
        &mut self,
        x: LinearIn<'_, Self::Buf>,
        layer: usize,
        mlp: MlpId,
        gate: &Self::Buf,
        up: &Self::Buf,
        rows: usize,
    ) -> Result<()>;
    /// Routes `rows` tokens through layer `layer`'s router ([`crate::arch::ExpertSpec`]): `probs`
    /// `[rows, experts]` gets the softmax of the router's logits, `weights` `[rows, experts]` the
    /// chosen experts' weights and zero for the others.
    fn route(
        &mut self,
        x: LinearIn<'_, Self::Buf>,
        layer: usize,
        probs: &Self::Buf,
        weights: &Self::Buf,
        rows: usize,
    ) -> Result<()>;
    /// out `[rows, hidden]` (+)= sum over experts e of weights[r, e] * expert_e(x[r]), experts in
    /// ascending order. A backend that knows the weights on the host (the CPU) runs each expert
    /// only on its rows of non-zero weight; one that does not (the GPU) runs every expert on every
    /// row and multiplies by the weight, zero included.
    #[allow(clippy::too_many_arguments)]
    fn experts(
        &mut self,
        x: LinearIn<'_, Self::Buf>,
        layer: usize,
        weights: &Self::Buf,
        scratch: &ExpertScratch<Self::Buf>,
        out: &Self::Buf,
        rows: usize,
        accumulate: bool,
    ) -> Result<()>;
    /// Rotates the first `dims` of every head of x `[rows, heads * head_dim]` in place, with cos and
    /// sin tables `[rows][dims / 2]` (uploaded once per run).
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &mut self,
        x: &Self::Buf,
        rows: usize,
        heads: usize,
        head_dim: usize,
        dims: usize,
        cos: &Self::Buf,
        sin: &Self::Buf,
    ) -> Result<()>;
    /// out `[batch*seq, heads*head_dim]` = softmax(mask(cap(scale q k^T))) v; the probabilities
    /// `[batch][heads][seq][keys]` go to `probs` when given.
    fn attention(
        &mut self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        out: &Self::Buf,
        shape: &AttnShape,
        probs: Option<&Self::Buf>,
    ) -> Result<()>;
    /// The Gated DeltaNet core of layer `layer` on the projections in `bufs` (`batch` sequences of
    /// `seq` tokens, continuing `state`, which it updates): `bufs.core` gets the gated-normalized
    /// output per value head. With `mixing` `[batch, v_heads, seq, seq]` (a fresh state only), it
    /// also gets the rule unrolled: row t holds the weights of the values of tokens 0..=t in
    /// token t's output before the norm (the rule is linear in the values given q, k and the gates).
    #[allow(clippy::too_many_arguments)]
    fn delta_net(
        &mut self,
        layer: usize,
        bufs: &DeltaBufs<Self::Buf>,
        state: &DeltaState<Self::Buf>,
        batch: usize,
        seq: usize,
        mixing: Option<&Self::Buf>,
    ) -> Result<()>;
    /// x[i] *= sigmoid(gate[i / per]), `n` values: the output gate of gated attention (`per` 1),
    /// a shared expert's gate per row (`per` hidden).
    fn sigmoid_gate(&mut self, x: &Self::Buf, gate: &Self::Buf, n: usize, per: usize)
        -> Result<()>;
    /// x = act(x) in place (the spec's plain activation), `n` values.
    fn activate(&mut self, x: &Self::Buf, n: usize) -> Result<()>;
    /// dst += src, `n` values.
    fn add(&mut self, src: &Self::Buf, dst: &Self::Buf, n: usize) -> Result<()>;
    /// dst *= src, `n` values (the per-layer input's gate).
    fn mul(&mut self, src: &Self::Buf, dst: &Self::Buf, n: usize) -> Result<()>;
    fn scale(&mut self, x: &Self::Buf, n: usize, s: f32) -> Result<()>;
    fn copy(
        &mut self,
        src: &Self::Buf,
        src_off: usize,
        dst: &Self::Buf,
        dst_off: usize,
        n: usize,
    ) -> Result<()>;
    /// Edits rows of `x` `[.., width]`. A feature edit reads its feature from `source`
    /// `[.., d_in]` when it is given (a transcoder's input), else from `x` itself.
    fn edit(
        &mut self,
        x: &Self::Buf,
        width: usize,
        edit: &Edit<'_>,
        source: Option<&Self::Buf>,
    ) -> Result<()>;
    /// Schedules `n` values at `off` for the readback; returns their slot.
    fn read(&mut self, x: &Self::Buf, off: usize, n: usize) -> Result<usize>;
    /// Logits of `rows` of `hidden` `[.., hidden]` through the unembedding (and the final
    /// soft-cap), reduced to statistics against `targets`; returns a slot.
    fn logits(
        &mut self,
        hidden: &Self::Buf,
        rows: &[usize],
        targets: &[u32],
        top_k: usize,
        keep: bool,
    ) -> Result<usize>;
    /// Runs what was scheduled and returns every slot.
    fn finish(&mut self) -> Result<Readback>;
}

/// What [`Exec::finish`] returns.
#[derive(Default)]
pub struct Readback {
    pub data: Vec<Vec<f32>>,
    pub logits: Vec<LogitsOut>,
}

/// Keys and values of every layer, `[batch][capacity][kv_dim]` each (a placeholder for the
/// linear-attention layers, whose state is in `delta`).
pub struct KvCache<B> {
    pub k: Vec<B>,
    pub v: Vec<B>,
    /// Per layer, the Gated DeltaNet state of the linear-attention layers.
    pub delta: Vec<Option<DeltaState<B>>>,
    pub batch: usize,
    pub capacity: usize,
    pub len: usize,
}

impl<B> KvCache<B> {
    pub fn new(batch: usize, capacity: usize) -> Self {
        KvCache {
            k: Vec::new(),
            v: Vec::new(),
            delta: Vec::new(),
            batch,
            capacity,
            len: 0,
        }
    }
}
