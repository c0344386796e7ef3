//! Weights in one canonical layout shared by every architecture, file format and backend.
//!
//! A [`Weight`] is a view of bytes in its stored format (F32, F16, BF16 or a ggml block format):
//! memory-mapped from the checkpoint, or owned when the loader had to build it (a Gemma norm
//! stored as `w`, used as `1 + w`). Nothing is expanded to f32 at load; each backend decodes at
//! use. Linear weights are viewed as `[out, in]` (HF layout) whatever the storage: a dense view
//! may be strided (GPT-2's Conv1D `[in, out]`, a slice of a fused `c_attn`), a block-format view is
//! a range of whole rows.

use std::path::Path;
use std::sync::Arc;

use crate::error::{PrismError, Result};
use crate::quant::{dequantize, GgmlType};

/// Where a weight's bytes live.
#[derive(Clone)]
pub enum Bytes {
    Mapped(Arc<memmap2::Mmap>),
    Owned(Arc<Vec<u8>>),
}

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bytes::Mapped(m) => write!(f, "Mapped({} bytes)", m.len()),
            Bytes::Owned(v) => write!(f, "Owned({} bytes)", v.len()),
        }
    }
}

/// A weight: a 1-D vector or a 2-D `[rows, cols]` matrix in its stored format.
#[derive(Debug, Clone)]
pub struct Weight {
    /// The tensor's name in its file, for error messages.
    pub name: String,
    /// `[n]` or `[rows, cols]`.
    pub shape: Vec<usize>,
    pub dtype: GgmlType,
    bytes: Bytes,
    /// Byte offset of element (0, 0) in `bytes`.
    start: usize,
    /// Elements between consecutive rows and between consecutive columns of the view. For block
    /// formats `col_stride` is 1 and `row_stride` is a whole number of blocks.
    row_stride: usize,
    col_stride: usize,
}

impl Weight {
    /// A contiguous row-major weight over `bytes[start..]`.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<usize>,
        dtype: GgmlType,
        bytes: Bytes,
        start: usize,
    ) -> Result<Weight> {
        let name = name.into();
        let n: usize = shape.iter().product();
        let cols = *shape.last().unwrap_or(&1);
        if shape.is_empty() || shape.len() > 2 || n == 0 {
            return Err(PrismError::Input(format!(
                "{name}: shape {shape:?} is not a vector or a matrix"
            )));
        }
        if !cols.is_multiple_of(dtype.block_values()) {
            return Err(PrismError::Input(format!(
                "{name}: rows of {cols} values are not whole {} blocks",
                dtype.name()
            )));
        }
        let len = dtype.bytes_for(n);
        if start
            .checked_add(len)
            .is_none_or(|e| e > bytes.as_slice().len())
        {
            return Err(PrismError::Input(format!(
                "{name}: {len} bytes at {start} run past the end of the data"
            )));
        }
        Ok(Weight {
            name,
            shape,
            dtype,
            bytes,
            start,
            row_stride: cols,
            col_stride: 1,
        })
    }

    /// An owned f32 weight.
    pub fn from_f32(name: impl Into<String>, shape: Vec<usize>, values: &[f32]) -> Result<Weight> {
        let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        Weight::new(name, shape, GgmlType::F32, Bytes::Owned(Arc::new(bytes)), 0)
    }

    pub fn rows(&self) -> usize {
        if self.shape.len() == 2 {
            self.shape[0]
        } else {
            1
        }
    }

    pub fn cols(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }

    pub fn element_count(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn dtype_name(&self) -> &'static str {
        self.dtype.name()
    }

    /// True when rows are contiguous and back to back (every block-format view, and dense views
    /// that are not transposed or sliced by column).
    pub fn is_contiguous(&self) -> bool {
        self.col_stride == 1 && self.row_stride == self.cols()
    }

    /// Bytes the weight occupies in its stored format.
    pub fn stored_bytes(&self) -> usize {
        self.dtype.bytes_for(self.element_count())
    }

    /// The stored bytes of rows `r0..r0+n` (contiguous views only).
    pub fn row_bytes(&self, r0: usize, n: usize) -> &[u8] {
        debug_assert!(self.col_stride == 1);
        let row = self.dtype.bytes_for(self.row_stride);
        let cols = self.dtype.bytes_for(self.cols());
        let s = self.start + r0 * row;
        &self.bytes.as_slice()[s..s + (n.saturating_sub(1)) * row + if n > 0 { cols } else { 0 }]
    }

    /// Decodes row `r`, columns `c0..c0+out.len()` (`c0` and the length whole blocks for block formats).
    #[inline(always)]
    pub fn decode_row(&self, r: usize, c0: usize, out: &mut [f32]) {
        let data = self.bytes.as_slice();
        if self.col_stride == 1 {
            let elem = r * self.row_stride + c0;
            let s = self.start + self.dtype.bytes_for(elem);
            let e = s + self.dtype.bytes_for(out.len());
            dequantize(self.dtype, &data[s..e], out);
        } else {
            let size = self.dtype.block_bytes();
            for (j, o) in out.iter_mut().enumerate() {
                let at = self.start + (r * self.row_stride + (c0 + j) * self.col_stride) * size;
                dequantize(self.dtype, &data[at..at + size], std::slice::from_mut(o));
            }
        }
    }

    /// Element (r, c) of a dense weight, decoded (for strided packing).
    #[inline]
    pub fn dense_at(&self, r: usize, c: usize) -> f32 {
        let size = self.dtype.block_bytes();
        let at = self.start + (r * self.row_stride + c * self.col_stride) * size;
        let b = &self.bytes.as_slice()[at..at + size];
        match self.dtype {
            GgmlType::F16 => half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
            GgmlType::BF16 => half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
            _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    }

    /// Strides in elements (row, column), for backends that read dense views directly.
    pub fn strides(&self) -> (usize, usize) {
        (self.row_stride, self.col_stride)
    }

    /// All values as f32, row-major in the view's `[rows, cols]` order.
    pub fn to_f32(&self) -> Vec<f32> {
        let (rows, cols) = (self.rows(), self.cols());
        let mut out = vec![0f32; rows * cols];
        for (r, row) in out.chunks_mut(cols).enumerate() {
            self.decode_row(r, 0, row);
        }
        out
    }

    /// The view as a candle tensor of `self.shape` (for geometry and tests).
    pub fn to_tensor(&self) -> Result<candle_core::Tensor> {
        candle_core::Tensor::from_vec(
            self.to_f32(),
            self.shape.as_slice(),
            &candle_core::Device::Cpu,
        )
        .map_err(crate::error::backend_err)
    }

    /// The transpose of a dense 2-D weight, as a strided view (GPT-2's Conv1D `[in, out]`).
    pub fn transposed(&self) -> Result<Weight> {
        if !self.dtype.is_dense() || self.shape.len() != 2 {
            return Err(PrismError::Input(format!(
                "{}: only dense matrices can be transposed ({} {:?})",
                self.name,
                self.dtype.name(),
                self.shape
            )));
        }
        Ok(Weight {
            shape: vec![self.shape[1], self.shape[0]],
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self.clone()
        })
    }

    /// Rows `start..start+len` of a matrix, or elements of a vector (a view, nothing copied).
    pub fn narrow_rows(&self, start: usize, len: usize) -> Result<Weight> {
        let name = format!("{}[{start}..{}]", self.name, start + len);
        if self.shape.len() == 1 {
            if start + len > self.shape[0] || !start.is_multiple_of(self.dtype.block_values()) {
                return Err(PrismError::Input(format!("{name}: out of range")));
            }
            let mut w = self.clone();
            w.start += self.dtype.bytes_for(start * w.col_stride);
            w.shape = vec![len];
            w.name = name;
            return Ok(w);
        }
        if start + len > self.shape[0] {
            return Err(PrismError::Input(format!(
                "{name}: the matrix has {} rows",
                self.shape[0]
            )));
        }
        let mut w = self.clone();
        if self.dtype.is_dense() {
            w.start += start * self.row_stride * self.dtype.block_bytes();
        } else {
            w.start += self.dtype.bytes_for(start * self.row_stride);
        }
        w.shape[0] = len;
        w.name = name;
        Ok(w)
    }

    /// A new owned weight whose rows are `rows` of this one, in that order (a reordering of
    /// fused projections); the stored format is kept.
    pub fn gather_rows(&self, rows: &[usize]) -> Result<Weight> {
        if self.shape.len() != 2 {
            let v: Vec<f32> = {
                let all = self.to_f32();
                rows.iter().map(|&r| all[r]).collect()
            };
            return Weight::from_f32(self.name.clone(), vec![rows.len()], &v);
        }
        if !self.is_contiguous() {
            let cols = self.cols();
            let mut v = vec![0f32; rows.len() * cols];
            for (o, &r) in v.chunks_mut(cols).zip(rows) {
                self.decode_row(r, 0, o);
            }
            return Weight::from_f32(self.name.clone(), vec![rows.len(), cols], &v);
        }
        let mut bytes = Vec::with_capacity(rows.len() * self.dtype.bytes_for(self.cols()));
        for &r in rows {
            if r >= self.shape[0] {
                return Err(PrismError::Input(format!("{}: no row {r}", self.name)));
            }
            bytes.extend_from_slice(self.row_bytes(r, 1));
        }
        Weight::new(
            self.name.clone(),
            vec![rows.len(), self.cols()],
            self.dtype,
            Bytes::Owned(Arc::new(bytes)),
            0,
        )
    }

    /// A new owned f32 weight with `f` applied to every value (Gemma's `1 + w` norms).
    pub fn map_f32(&self, f: impl Fn(f32) -> f32) -> Result<Weight> {
        let v: Vec<f32> = self.to_f32().into_iter().map(f).collect();
        Weight::from_f32(self.name.clone(), self.shape.clone(), &v)
    }
}

/// What a checkpoint says about one tensor before its data is read.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub shape: Vec<usize>,
    pub dtype: String,
}

/// A file format's view of its tensors, in canonical row-major `[rows, cols]` order.
pub trait TensorSource {
    fn path(&self) -> &Path;
    fn info(&self, name: &str) -> Option<TensorInfo>;
    fn names(&self) -> Vec<String>;
    /// The tensor as a weight view. Callers go through [`get`], which checks the shape first.
    fn load(&self, name: &str) -> Result<Weight>;
    /// A tensor of any rank as a matrix `[product of the leading dims, last dim]` (a stack of
    /// expert matrices). Callers go through [`get_stacked`].
    fn load_rows(&self, name: &str) -> Result<Weight>;
    /// The stored bytes of a `U8` tensor (the blocks and scales of an HF MXFP4 checkpoint), by
    /// [`get_bytes`]; sources without such tensors refuse.
    fn load_u8(&self, name: &str) -> Result<&[u8]> {
        Err(PrismError::format(
            self.path(),
            format!("tensor {name:?}: this file format has no byte tensors"),
        ))
    }
}

/// The bytes of the `U8` tensor `name`, refused unless its shape is `expected`.
pub fn get_bytes<'a>(
    src: &'a dyn TensorSource,
    name: &str,
    expected: &[usize],
) -> Result<&'a [u8]> {
    let info = src.info(name).ok_or_else(|| PrismError::MissingTensor {
        path: src.path().to_path_buf(),
        tensor: name.to_string(),
    })?;
    if info.shape != expected || info.dtype != "U8" {
        return Err(PrismError::Shape {
            path: src.path().to_path_buf(),
            tensor: name.to_string(),
            expected: expected.to_vec(),
            found: info.shape,
            found_dtype: info.dtype,
        });
    }
    src.load_u8(name)
}

/// Loads `name`, refusing it unless its shape is `expected`.
pub fn get(src: &dyn TensorSource, name: &str, expected: &[usize]) -> Result<Weight> {
    let info = src.info(name).ok_or_else(|| PrismError::MissingTensor {
        path: src.path().to_path_buf(),
        tensor: name.to_string(),
    })?;
    if info.shape != expected {
        return Err(PrismError::Shape {
            path: src.path().to_path_buf(),
            tensor: name.to_string(),
            expected: expected.to_vec(),
            found: info.shape,
            found_dtype: info.dtype,
        });
    }
    src.load(name)
}

/// A stack `[n, rows, cols]` (experts stored as one tensor) as `n` matrix views `[rows, cols]`,
/// refused unless its shape is exactly that.
pub fn get_stacked(
    src: &dyn TensorSource,
    name: &str,
    n: usize,
    rows: usize,
    cols: usize,
) -> Result<Vec<Weight>> {
    let info = src.info(name).ok_or_else(|| PrismError::MissingTensor {
        path: src.path().to_path_buf(),
        tensor: name.to_string(),
    })?;
    let expected = vec![n, rows, cols];
    if info.shape != expected {
        return Err(PrismError::Shape {
            path: src.path().to_path_buf(),
            tensor: name.to_string(),
            expected,
            found: info.shape,
            found_dtype: info.dtype,
        });
    }
    let all = src.load_rows(name)?;
    (0..n)
        .map(|i| {
            let mut w = all.narrow_rows(i * rows, rows)?;
            w.name = format!("{name}[{i}]");
            Ok(w)
        })
        .collect()
}

/// Like [`get`], for tensors an architecture may or may not have (biases, a separate LM head).
pub fn get_opt(src: &dyn TensorSource, name: &str, expected: &[usize]) -> Result<Option<Weight>> {
    if src.info(name).is_some() {
        get(src, name, expected).map(Some)
    } else {
        Ok(None)
    }
}

#[derive(Debug, Clone)]
pub struct NormWeights {
    pub weight: Weight,
    pub bias: Option<Weight>,
}

#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Weight,
    pub bias: Option<Weight>,
}

#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// The attention sub-layer's input norm, or its residual norm ([`SublayerNorms`]).
    pub attn_norm: Option<NormWeights>,
    /// What mixes the tokens: attention's projections, or a Gated DeltaNet.
    pub mixer: MixerWeights,
    /// Norms of q and k ([`crate::arch::QkNorm`]): `[head_dim]` per head or the whole projection.
    pub q_norm: Option<NormWeights>,
    pub k_norm: Option<NormWeights>,
    /// Norm of the attention output before the residual add.
    pub post_attn_norm: Option<NormWeights>,
    /// The MLP's input norm, or its residual norm.
    pub mlp_norm: Option<NormWeights>,
    pub mlp: Mlp,
    /// Norm of the MLP output before the residual add.
    pub post_mlp_norm: Option<NormWeights>,
    /// What only some families have (Gemma 4's value norm, per-layer input, layer scale).
    pub extras: LayerExtras,
}

/// Parts of a layer only some families have.
#[derive(Debug, Clone, Default)]
pub struct LayerExtras {
    /// The values' weightless RMSNorm ([`crate::arch::ArchSpec::v_norm`]): ones `[head_dim]`.
    pub v_norm: Option<NormWeights>,
    pub per_layer: Option<PerLayerInput>,
    /// The factor the layer's output is multiplied by (Gemma 4's `layer_scalar`).
    pub out_scale: Option<f32>,
}

/// A layer's share of Gemma 4's per-layer input embeddings
/// ([`crate::arch::ArchSpec::per_layer_input`], width `p`).
#[derive(Debug, Clone)]
pub struct PerLayerInput {
    /// `[p, hidden]`: this layer's rows of `per_layer_model_projection` (of the embedding).
    pub model_proj: Linear,
    /// `per_layer_projection_norm` `[p]` (one for the model, held by every layer).
    pub proj_norm: NormWeights,
    /// `[p, hidden]` and `[hidden, p]`: the gate of the residual stream and the projection back.
    pub gate: Linear,
    pub proj: Linear,
    /// `post_per_layer_input_norm` `[hidden]`.
    pub post_norm: NormWeights,
}

/// A layer's token mixer.
// One per layer: the size difference of the variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum MixerWeights {
    /// Softmax attention: q (and, with [`crate::arch::ArchSpec::attn_gate`], its output gate),
    /// k, v and the output projection.
    Attention {
        q: Linear,
        gate: Option<Linear>,
        /// None on layers that share an earlier layer's keys and values
        /// ([`crate::arch::KvSource`]); `v` also where the keys are the values.
        k: Option<Linear>,
        v: Option<Linear>,
        o: Linear,
        /// Per head, the sink logit `[heads]` ([`crate::arch::ArchSpec::attn_sinks`]).
        sinks: Option<Weight>,
    },
    DeltaNet(DeltaNet),
}

impl MixerWeights {
    /// Attention without an output gate.
    pub fn attention(q: Linear, k: Linear, v: Linear, o: Linear) -> MixerWeights {
        MixerWeights::Attention {
            q,
            gate: None,
            k: Some(k),
            v: Some(v),
            o,
            sinks: None,
        }
    }

    /// The attention sinks, when the layer has them.
    pub fn sinks(&self) -> Option<&Weight> {
        match self {
            MixerWeights::Attention { sinks, .. } => sinks.as_ref(),
            MixerWeights::DeltaNet(_) => None,
        }
    }
}

/// A Gated DeltaNet layer's weights ([`crate::arch::DeltaNetSpec`]).
#[derive(Debug, Clone)]
pub struct DeltaNet {
    /// `[2 * k_heads * k_dim + v_heads * v_dim, hidden]`: queries, keys, values.
    pub qkv: Linear,
    /// `[v_heads * v_dim, hidden]`: the output gate.
    pub z: Linear,
    /// `[v_heads, hidden]` each: beta's and the decay's inputs.
    pub b: Linear,
    pub a: Linear,
    /// `[conv_dim, kernel]`, f32.
    pub conv: Weight,
    /// `[v_heads]`, f32: A = -exp(A_log), and the decay's bias.
    pub a_neg: Weight,
    pub dt_bias: Weight,
    /// The gated RMSNorm `[v_dim]` ([`NormId::Delta`]).
    pub norm: NormWeights,
    /// `[hidden, v_heads * v_dim]`.
    pub out: Linear,
}

/// A block's MLP: one dense MLP, or a mixture of experts.
// One per layer: the size difference of the variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Mlp {
    /// `down(act(gate(x)) * up(x))`, or `down(act(up(x)))` without a gate.
    Dense {
        gate: Option<Linear>,
        up: Linear,
        down: Linear,
    },
    Experts(Experts),
}

impl Mlp {
    /// A dense MLP.
    pub fn dense(gate: Option<Linear>, up: Linear, down: Linear) -> Mlp {
        Mlp::Dense { gate, up, down }
    }
}

/// A mixture of experts: a router `[experts, hidden]` and gated experts of their own width.
#[derive(Debug, Clone)]
pub struct Experts {
    pub router: Linear,
    pub experts: Vec<Expert>,
    pub shared: Option<SharedExpert>,
    /// Each expert's routing weight is multiplied by its entry `[experts]` (Gemma 4's
    /// `per_expert_scale`), after the renormalization.
    pub expert_scale: Option<Weight>,
    /// The dense MLP the experts run beside, and the four norms ([`crate::arch::ExpertSpec::beside_dense`]).
    pub beside: Option<BesideDense>,
}

/// Gemma 4's mixture-of-experts block: out = post_dense(dense(mlp_norm(h))) +
/// post_experts(experts(pre_experts(h))), routed by router(router_norm(h)).
#[derive(Debug, Clone)]
pub struct BesideDense {
    pub mlp: Expert,
    /// The router's input norm: no weight of its own, times the router's `scale` and
    /// hidden^-0.5, folded into one weight `[hidden]`.
    pub router_norm: NormWeights,
    pub pre_experts: NormWeights,
    pub post_dense: NormWeights,
    pub post_experts: NormWeights,
}

/// The expert every token goes through ([`crate::arch::ExpertSpec::shared`]): its MLP, and the
/// gate `[1, hidden]` whose sigmoid scales its output.
#[derive(Debug, Clone)]
pub struct SharedExpert {
    pub mlp: Expert,
    pub gate: Linear,
}

/// One expert: `down(act(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Expert {
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl LayerWeights {
    pub fn linear(&self, which: LinearId) -> Option<&Linear> {
        let experts = match &self.mlp {
            Mlp::Experts(x) => Some(x),
            Mlp::Dense { .. } => None,
        };
        let expert = |e: u32| experts.and_then(|x| x.experts.get(e as usize));
        let shared = experts.and_then(|x| x.shared.as_ref());
        let beside = experts.and_then(|x| x.beside.as_ref());
        if let MixerWeights::DeltaNet(d) = &self.mixer {
            match which {
                LinearId::DeltaQkv => return Some(&d.qkv),
                LinearId::DeltaZ => return Some(&d.z),
                LinearId::DeltaB => return Some(&d.b),
                LinearId::DeltaA => return Some(&d.a),
                LinearId::DeltaOut => return Some(&d.out),
                _ => {}
            }
        }
        let attn = match &self.mixer {
            MixerWeights::Attention {
                q, gate, k, v, o, ..
            } => Some((q, gate, k, v, o)),
            MixerWeights::DeltaNet(_) => None,
        };
        match (which, &self.mlp) {
            (LinearId::Q, _) => attn.map(|a| a.0),
            (LinearId::AttnGate, _) => attn.and_then(|a| a.1.as_ref()),
            (LinearId::K, _) => attn.and_then(|a| a.2.as_ref()),
            (LinearId::V, _) => attn.and_then(|a| a.3.as_ref()),
            (LinearId::O, _) => attn.map(|a| a.4),
            (LinearId::Gate, Mlp::Dense { gate, .. }) => gate.as_ref(),
            (LinearId::Up, Mlp::Dense { up, .. }) => Some(up),
            (LinearId::Down, Mlp::Dense { down, .. }) => Some(down),
            (LinearId::Gate, Mlp::Experts(_)) => beside.map(|b| &b.mlp.gate),
            (LinearId::Up, Mlp::Experts(_)) => beside.map(|b| &b.mlp.up),
            (LinearId::Down, Mlp::Experts(_)) => beside.map(|b| &b.mlp.down),
            (LinearId::Router, _) => experts.map(|x| &x.router),
            (LinearId::ExpertGate(e), _) => expert(e).map(|x| &x.gate),
            (LinearId::ExpertUp(e), _) => expert(e).map(|x| &x.up),
            (LinearId::ExpertDown(e), _) => expert(e).map(|x| &x.down),
            (LinearId::SharedGate, _) => shared.map(|s| &s.mlp.gate),
            (LinearId::SharedUp, _) => shared.map(|s| &s.mlp.up),
            (LinearId::SharedDown, _) => shared.map(|s| &s.mlp.down),
            (LinearId::SharedScale, _) => shared.map(|s| &s.gate),
            (LinearId::PleModel, _) => self.extras.per_layer.as_ref().map(|p| &p.model_proj),
            (LinearId::PleGate, _) => self.extras.per_layer.as_ref().map(|p| &p.gate),
            (LinearId::PleProj, _) => self.extras.per_layer.as_ref().map(|p| &p.proj),
            _ => None,
        }
    }

    /// Every linear map of the layer with its role, experts included.
    pub fn linears(&self) -> Vec<(LinearId, &Linear)> {
        let mut ids = LinearId::ALL.to_vec();
        ids.extend(LinearId::MIXER);
        if let Mlp::Experts(x) = &self.mlp {
            ids.push(LinearId::Router);
            ids.extend([
                LinearId::SharedGate,
                LinearId::SharedUp,
                LinearId::SharedDown,
                LinearId::SharedScale,
            ]);
            for e in 0..x.experts.len() as u32 {
                ids.extend([
                    LinearId::ExpertGate(e),
                    LinearId::ExpertUp(e),
                    LinearId::ExpertDown(e),
                ]);
            }
        }
        ids.into_iter()
            .filter_map(|id| self.linear(id).map(|l| (id, l)))
            .collect()
    }

    pub fn norm(&self, which: NormId) -> Option<&NormWeights> {
        match which {
            NormId::Attn => self.attn_norm.as_ref(),
            NormId::Mlp => self.mlp_norm.as_ref(),
            NormId::Q => self.q_norm.as_ref(),
            NormId::K => self.k_norm.as_ref(),
            NormId::PostAttn => self.post_attn_norm.as_ref(),
            NormId::PostMlp => self.post_mlp_norm.as_ref(),
            NormId::Delta => match &self.mixer {
                MixerWeights::DeltaNet(d) => Some(&d.norm),
                MixerWeights::Attention { .. } => None,
            },
            NormId::V => self.extras.v_norm.as_ref(),
            NormId::Router | NormId::PreExperts | NormId::PostDense | NormId::PostExperts => {
                let beside = match &self.mlp {
                    Mlp::Experts(x) => x.beside.as_ref(),
                    Mlp::Dense { .. } => None,
                }?;
                Some(match which {
                    NormId::Router => &beside.router_norm,
                    NormId::PreExperts => &beside.pre_experts,
                    NormId::PostDense => &beside.post_dense,
                    _ => &beside.post_experts,
                })
            }
            NormId::PleProj => self.extras.per_layer.as_ref().map(|p| &p.proj_norm),
            NormId::PlePost => self.extras.per_layer.as_ref().map(|p| &p.post_norm),
        }
    }
}

/// The linear maps of a block, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinearId {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
    /// The router of a mixture of experts `[experts, hidden]`.
    Router,
    ExpertGate(u32),
    ExpertUp(u32),
    ExpertDown(u32),
    /// The shared expert's projections and its gate `[1, hidden]` ([`SharedExpert`]).
    SharedGate,
    SharedUp,
    SharedDown,
    SharedScale,
    /// The attention output gate (Qwen3.5's gated attention) `[heads * head_dim, hidden]`.
    AttnGate,
    /// A Gated DeltaNet layer's projections ([`DeltaNet`]).
    DeltaQkv,
    DeltaZ,
    DeltaB,
    DeltaA,
    DeltaOut,
    /// Gemma 4's per-layer input ([`PerLayerInput`]): the embedding's projection, the gate and
    /// the projection back.
    PleModel,
    PleGate,
    PleProj,
}

impl LinearId {
    /// The maps of a dense block (experts are listed by [`LayerWeights::linears`]).
    pub const ALL: [LinearId; 7] = [
        LinearId::Q,
        LinearId::K,
        LinearId::V,
        LinearId::O,
        LinearId::Gate,
        LinearId::Up,
        LinearId::Down,
    ];
    /// The maps a layer may have beyond a dense block's: the attention gate, a DeltaNet's.
    pub const MIXER: [LinearId; 9] = [
        LinearId::AttnGate,
        LinearId::DeltaQkv,
        LinearId::DeltaZ,
        LinearId::DeltaB,
        LinearId::DeltaA,
        LinearId::DeltaOut,
        LinearId::PleModel,
        LinearId::PleGate,
        LinearId::PleProj,
    ];
}

/// The norms of a block, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NormId {
    Attn,
    Mlp,
    Q,
    K,
    PostAttn,
    PostMlp,
    /// A Gated DeltaNet layer's gated RMSNorm `[v_dim]`, shared by its value heads.
    Delta,
    /// The values' weightless norm (Gemma 4) `[head_dim]`.
    V,
    /// The per-layer input's norms ([`PerLayerInput`]): of the embedding's projection `[p]`, and
    /// of what the layer adds `[hidden]`.
    PleProj,
    PlePost,
    /// The norms of a mixture of experts beside a dense MLP ([`BesideDense`]) `[hidden]`.
    Router,
    PreExperts,
    PostDense,
    PostExperts,
}

impl NormId {
    pub const ALL: [NormId; 14] = [
        NormId::Attn,
        NormId::Mlp,
        NormId::Q,
        NormId::K,
        NormId::PostAttn,
        NormId::PostMlp,
        NormId::Delta,
        NormId::V,
        NormId::PleProj,
        NormId::PlePost,
        NormId::Router,
        NormId::PreExperts,
        NormId::PostDense,
        NormId::PostExperts,
    ];
}

#[derive(Debug, Clone)]
pub struct ModelWeights {
    /// `[vocab, hidden]`.
    pub token_embedding: Weight,
    pub position_embedding: Option<Weight>,
    pub token_type_embedding: Option<Weight>,
    /// Gemma 4's per-layer token table `[vocab, layers * p]` (layer l's columns l*p..(l+1)*p).
    pub per_layer_embedding: Option<Weight>,
    pub embedding_norm: Option<NormWeights>,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Option<NormWeights>,
    /// `[vocab, hidden]`; `None` when tied to the token embedding (or for encoders).
    pub lm_head: Option<Weight>,
    /// `[vocab]` output bias (GPT-2 GGUF files may carry none; some checkpoints do).
    pub lm_head_bias: Option<Weight>,
}

impl ModelWeights {
    /// The unembedding matrix `[vocab, hidden]`.
    pub fn unembedding(&self) -> &Weight {
        self.lm_head.as_ref().unwrap_or(&self.token_embedding)
    }

    pub fn all(&self) -> Vec<&Weight> {
        let mut out = vec![&self.token_embedding];
        out.extend(self.position_embedding.iter());
        out.extend(self.token_type_embedding.iter());
        out.extend(self.per_layer_embedding.iter());
        fn norm(n: Option<&NormWeights>) -> Vec<&Weight> {
            n.iter()
                .flat_map(|n| std::iter::once(&n.weight).chain(n.bias.iter()))
                .collect()
        }
        out.extend(norm(self.embedding_norm.as_ref()));
        for l in &self.layers {
            for id in NormId::ALL {
                out.extend(norm(l.norm(id)));
            }
            for (_, lin) in l.linears() {
                out.push(&lin.weight);
                out.extend(lin.bias.iter());
            }
            if let MixerWeights::DeltaNet(d) = &l.mixer {
                out.extend([&d.conv, &d.a_neg, &d.dt_bias]);
            }
            out.extend(l.mixer.sinks());
            if let Mlp::Experts(x) = &l.mlp {
                out.extend(x.expert_scale.iter());
            }
        }
        out.extend(norm(self.final_norm.as_ref()));
        out.extend(self.lm_head.iter());
        out.extend(self.lm_head_bias.iter());
        out
    }
}
