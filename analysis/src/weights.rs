//! Weights in one canonical layout shared by every architecture, file format and backend.
//!
//! Linear weights are `[out, in]` (HF layout). Quantized GGUF matrices stay quantized here; each
//! backend decides how to hold them (the CPU backend dequantizes to f32 once).

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use crate::error::{backend_err, PrismError, Result};

#[derive(Debug, Clone)]
pub enum WeightData {
    /// F32, F16 or BF16 values.
    Dense(Tensor),
    /// GGUF block-quantized data (also used for GGUF F32/F16 tensors).
    Quantized(Arc<QTensor>),
}

#[derive(Debug, Clone)]
pub struct Weight {
    /// The tensor's name in its file, for error messages.
    pub name: String,
    pub shape: Vec<usize>,
    pub data: WeightData,
}

impl Weight {
    pub fn dtype_name(&self) -> String {
        match &self.data {
            WeightData::Dense(t) => format!("{:?}", t.dtype()).to_uppercase(),
            WeightData::Quantized(q) => ggml_dtype_name(q.dtype()).to_string(),
        }
    }

    pub fn element_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values as an f32 tensor of `self.shape`.
    pub fn to_f32(&self) -> Result<Tensor> {
        let t = match &self.data {
            WeightData::Dense(t) => t.to_dtype(DType::F32).map_err(backend_err)?,
            WeightData::Quantized(q) => q.dequantize(&Device::Cpu).map_err(backend_err)?,
        };
        t.reshape(self.shape.as_slice()).map_err(backend_err)
    }

    /// Transposes a dense 2-D weight (GPT-2 Conv1D `[in, out]` to `[out, in]`).
    pub(crate) fn transposed(self) -> Result<Weight> {
        let t = self
            .to_f32()?
            .t()
            .and_then(|t| t.contiguous())
            .map_err(backend_err)?;
        Ok(Weight {
            name: self.name,
            shape: t.dims().to_vec(),
            data: WeightData::Dense(t),
        })
    }

    /// Rows `start..start+len` of a 2-D weight, or elements of a 1-D one.
    pub(crate) fn narrow_rows(&self, start: usize, len: usize) -> Result<Weight> {
        let t = self
            .to_f32()?
            .narrow(0, start, len)
            .and_then(|t| t.contiguous())
            .map_err(backend_err)?;
        Ok(Weight {
            name: format!("{}[{start}..{}]", self.name, start + len),
            shape: t.dims().to_vec(),
            data: WeightData::Dense(t),
        })
    }
}

pub fn ggml_dtype_name(d: candle_core::quantized::GgmlDType) -> &'static str {
    use candle_core::quantized::GgmlDType as G;
    match d {
        G::F32 => "F32",
        G::F16 => "F16",
        G::BF16 => "BF16",
        G::Q4_0 => "Q4_0",
        G::Q4_1 => "Q4_1",
        G::Q5_0 => "Q5_0",
        G::Q5_1 => "Q5_1",
        G::Q8_0 => "Q8_0",
        G::Q8_1 => "Q8_1",
        G::Q2K => "Q2_K",
        G::Q3K => "Q3_K",
        G::Q4K => "Q4_K",
        G::Q5K => "Q5_K",
        G::Q6K => "Q6_K",
        G::Q8K => "Q8_K",
    }
}

/// What a checkpoint says about one tensor before its data is read.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub shape: Vec<usize>,
    pub dtype: String,
}

/// A file format's view of its tensors, in canonical `[out, in]` order.
pub trait TensorSource {
    fn path(&self) -> &Path;
    fn info(&self, name: &str) -> Option<TensorInfo>;
    fn names(&self) -> Vec<String>;
    /// Reads the tensor's data. Callers go through [`get`], which checks the shape first.
    fn load(&self, name: &str) -> Result<Weight>;
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
    /// Pre-attention norm, or for post-LN models (BERT) the norm after the attention residual.
    pub attn_norm: NormWeights,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    /// Pre-MLP norm, or for post-LN models the norm after the MLP residual.
    pub mlp_norm: NormWeights,
    /// Present for SwiGLU MLPs.
    pub gate: Option<Linear>,
    pub up: Linear,
    pub down: Linear,
}

#[derive(Debug, Clone)]
pub struct ModelWeights {
    /// `[vocab, hidden]`.
    pub token_embedding: Weight,
    pub position_embedding: Option<Weight>,
    pub token_type_embedding: Option<Weight>,
    pub embedding_norm: Option<NormWeights>,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Option<NormWeights>,
    /// `[vocab, hidden]`; `None` when tied to the token embedding (or for encoders).
    pub lm_head: Option<Weight>,
}

impl ModelWeights {
    /// The unembedding matrix `[vocab, hidden]`, if the model has one.
    pub fn unembedding(&self) -> &Weight {
        self.lm_head.as_ref().unwrap_or(&self.token_embedding)
    }

    pub fn all(&self) -> Vec<&Weight> {
        let mut out = vec![&self.token_embedding];
        out.extend(self.position_embedding.iter());
        out.extend(self.token_type_embedding.iter());
        fn norm(n: &Option<NormWeights>) -> Vec<&Weight> {
            n.iter()
                .flat_map(|n| std::iter::once(&n.weight).chain(n.bias.iter()))
                .collect()
        }
        out.extend(norm(&self.embedding_norm));
        for l in &self.layers {
            for n in [&l.attn_norm, &l.mlp_norm] {
                out.push(&n.weight);
                out.extend(n.bias.iter());
            }
            for lin in [&l.q, &l.k, &l.v, &l.o, &l.up, &l.down]
                .into_iter()
                .chain(l.gate.iter())
            {
                out.push(&lin.weight);
                out.extend(lin.bias.iter());
            }
        }
        out.extend(norm(&self.final_norm));
        out.extend(self.lm_head.iter());
        out
    }
}
