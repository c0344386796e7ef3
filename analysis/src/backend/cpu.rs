//! The CPU backend on candle-core: the reference every other backend is checked against.
//!
//! All weights are dequantized to f32 once at construction; activations are f32 throughout, as in
//! the PyTorch reference (which runs GGUF weights dequantized to f32).

use candle_core::{DType, Device, Tensor, D};

use super::{AttentionMaps, Backend, Capture, ForwardOutput, IdProb};
use crate::arch::{Activation, ArchSpec, NormKind, Positions, RopePairing};
use crate::checkpoint::Model;
use crate::error::{backend_err, Result};
use crate::metrics::top_k_softmax;
use crate::weights::{Linear, NormWeights, Weight};

struct CpuLinear {
    /// `[in, out]`, contiguous, so that `x @ w_t` is a plain GEMM.
    w_t: Tensor,
    bias: Option<Tensor>,
}

struct CpuNorm {
    weight: Tensor,
    bias: Option<Tensor>,
}

struct CpuLayer {
    attn_norm: CpuNorm,
    q: CpuLinear,
    k: CpuLinear,
    v: CpuLinear,
    o: CpuLinear,
    mlp_norm: CpuNorm,
    gate: Option<CpuLinear>,
    up: CpuLinear,
    down: CpuLinear,
}

pub struct CpuBackend {
    spec: ArchSpec,
    token_embedding: Tensor,
    position_embedding: Option<Tensor>,
    token_type_row: Option<Tensor>,
    embedding_norm: Option<CpuNorm>,
    layers: Vec<CpuLayer>,
    final_norm: Option<CpuNorm>,
    /// `[hidden, vocab]` for decoders.
    unembedding_t: Option<Tensor>,
}

type CResult<T> = candle_core::Result<T>;

fn f32_of(w: &Weight) -> Result<Tensor> {
    w.to_f32()
}

fn linear(l: &Linear) -> Result<CpuLinear> {
    Ok(CpuLinear {
        w_t: f32_of(&l.weight)?
            .t()
            .and_then(|t| t.contiguous())
            .map_err(backend_err)?,
        bias: l.bias.as_ref().map(f32_of).transpose()?,
    })
}

fn norm(n: &NormWeights) -> Result<CpuNorm> {
    Ok(CpuNorm {
        weight: f32_of(&n.weight)?,
        bias: n.bias.as_ref().map(f32_of).transpose()?,
    })
}

impl CpuBackend {
    pub fn new(model: &Model) -> Result<Self> {
        let w = &model.weights;
        let layers = w
            .layers
            .iter()
            .map(|l| {
                Ok(CpuLayer {
                    attn_norm: norm(&l.attn_norm)?,
                    q: linear(&l.q)?,
                    k: linear(&l.k)?,
                    v: linear(&l.v)?,
                    o: linear(&l.o)?,
                    mlp_norm: norm(&l.mlp_norm)?,
                    gate: l.gate.as_ref().map(linear).transpose()?,
                    up: linear(&l.up)?,
                    down: linear(&l.down)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let token_embedding = f32_of(&w.token_embedding)?;
        let unembedding_t = if model.spec.causal {
            let u = match &w.lm_head {
                Some(h) => f32_of(h)?,
                None => token_embedding.clone(),
            };
            Some(u.t().and_then(|t| t.contiguous()).map_err(backend_err)?)
        } else {
            None
        };
        let token_type_row = match &w.token_type_embedding {
            Some(t) => Some(f32_of(t)?.get(0).map_err(backend_err)?),
            None => None,
        };
        Ok(CpuBackend {
            spec: model.spec.clone(),
            token_embedding,
            position_embedding: w.position_embedding.as_ref().map(f32_of).transpose()?,
            token_type_row,
            embedding_norm: w.embedding_norm.as_ref().map(norm).transpose()?,
            layers,
            final_norm: w.final_norm.as_ref().map(norm).transpose()?,
            unembedding_t,
        })
    }

    fn apply_norm(&self, x: &Tensor, n: &CpuNorm) -> CResult<Tensor> {
        let eps = self.spec.norm_eps;
        let y = match self.spec.norm {
            NormKind::RmsNorm => {
                let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
                x.broadcast_div(&(ms + eps)?.sqrt()?)?
            }
            NormKind::LayerNorm => {
                let mean = x.mean_keepdim(D::Minus1)?;
                let xc = x.broadcast_sub(&mean)?;
                let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
                xc.broadcast_div(&(var + eps)?.sqrt()?)?
            }
        };
        let y = y.broadcast_mul(&n.weight)?;
        match &n.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    fn apply_linear(x: &Tensor, l: &CpuLinear) -> CResult<Tensor> {
        let y = x.matmul(&l.w_t)?;
        match &l.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// cos and sin tables `[seq, head_dim / 2]`.
    fn rope_tables(&self, seq: usize, theta: f64) -> CResult<(Tensor, Tensor)> {
        let half = self.spec.head_dim / 2;
        let (cos, sin) = super::rope_tables(seq, self.spec.head_dim, theta);
        Ok((
            Tensor::from_vec(cos, (seq, half), &Device::Cpu)?,
            Tensor::from_vec(sin, (seq, half), &Device::Cpu)?,
        ))
    }

    /// Rotates `x` `[heads, seq, head_dim]`.
    fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, pairing: RopePairing) -> CResult<Tensor> {
        let (heads, seq, d) = x.dims3()?;
        let half = d / 2;
        match pairing {
            RopePairing::Half => {
                let x1 = x.narrow(D::Minus1, 0, half)?;
                let x2 = x.narrow(D::Minus1, half, half)?;
                let o1 = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
                let o2 = (x1.broadcast_mul(sin)? + x2.broadcast_mul(cos)?)?;
                Tensor::cat(&[&o1, &o2], D::Minus1)
            }
            RopePairing::Interleaved => {
                let pairs = x.reshape((heads, seq, half, 2))?;
                let x0 = pairs.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?;
                let x1 = pairs.narrow(D::Minus1, 1, 1)?.squeeze(D::Minus1)?;
                let o0 = (x0.broadcast_mul(cos)? - x1.broadcast_mul(sin)?)?;
                let o1 = (x0.broadcast_mul(sin)? + x1.broadcast_mul(cos)?)?;
                Tensor::stack(&[&o0, &o1], D::Minus1)?.reshape((heads, seq, d))
            }
        }
    }

    /// Additive mask `[seq, seq]`: -inf where a query may not see a key.
    fn mask(&self, seq: usize) -> CResult<Option<Tensor>> {
        if !self.spec.causal {
            return Ok(None);
        }
        let window = self.spec.sliding_window.unwrap_or(usize::MAX);
        let mut m = vec![0f32; seq * seq];
        for q in 0..seq {
            for k in 0..seq {
                if k > q || q - k >= window {
                    m[q * seq + k] = f32::NEG_INFINITY;
                }
            }
        }
        Ok(Some(Tensor::from_vec(m, (seq, seq), &Device::Cpu)?))
    }

    fn heads(x: &Tensor, n: usize, d: usize) -> CResult<Tensor> {
        let seq = x.dim(0)?;
        x.reshape((seq, n, d))?.transpose(0, 1)?.contiguous()
    }

    /// Returns the attention output `[seq, hidden]` and the probabilities `[heads, seq, seq]`.
    fn attention(
        &self,
        h: &Tensor,
        l: &CpuLayer,
        rope: Option<&(Tensor, Tensor, RopePairing)>,
        mask: Option<&Tensor>,
    ) -> CResult<(Tensor, Tensor)> {
        let s = &self.spec;
        let seq = h.dim(0)?;
        let mut q = Self::heads(&Self::apply_linear(h, &l.q)?, s.n_heads, s.head_dim)?;
        let mut k = Self::heads(&Self::apply_linear(h, &l.k)?, s.n_kv_heads, s.head_dim)?;
        let mut v = Self::heads(&Self::apply_linear(h, &l.v)?, s.n_kv_heads, s.head_dim)?;
        if let Some((cos, sin, pairing)) = rope {
            q = Self::rope(&q, cos, sin, *pairing)?;
            k = Self::rope(&k, cos, sin, *pairing)?;
        }
        if s.n_kv_heads != s.n_heads {
            // Query head h reads kv head h / (n_heads / n_kv_heads).
            let rep = s.n_heads / s.n_kv_heads;
            let expand = |t: &Tensor| -> CResult<Tensor> {
                t.unsqueeze(1)?
                    .expand((s.n_kv_heads, rep, seq, s.head_dim))?
                    .reshape((s.n_heads, seq, s.head_dim))
            };
            k = expand(&k)?;
            v = expand(&v)?;
        }
        let scale = 1.0 / (s.head_dim as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        let max = scores.max_keepdim(D::Minus1)?;
        let e = scores.broadcast_sub(&max)?.exp()?;
        let probs = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
        let ctx = probs
            .matmul(&v.contiguous()?)?
            .transpose(0, 1)?
            .reshape((seq, s.q_dim()))?;
        Ok((Self::apply_linear(&ctx, &l.o)?, probs))
    }

    fn mlp(&self, h: &Tensor, l: &CpuLayer) -> CResult<Tensor> {
        let up = Self::apply_linear(h, &l.up)?;
        let act = match (self.spec.activation, &l.gate) {
            (Activation::SwiGlu, Some(g)) => (Self::apply_linear(h, g)?.silu()? * up)?,
            (Activation::GeluTanh, _) => up.gelu()?,
            (Activation::GeluErf, _) => up.gelu_erf()?,
            (Activation::SwiGlu, None) => candle_core::bail!("SwiGLU MLP without a gate weight"),
        };
        Self::apply_linear(&act, &l.down)
    }

    fn embed(&self, ids: &[u32]) -> CResult<Tensor> {
        let seq = ids.len();
        let idx = Tensor::new(ids, &Device::Cpu)?;
        let mut x = self.token_embedding.index_select(&idx, 0)?;
        if let Some(p) = &self.position_embedding {
            x = (x + p.narrow(0, 0, seq)?)?;
        }
        if let Some(tt) = &self.token_type_row {
            x = x.broadcast_add(tt)?;
        }
        if let Some(n) = &self.embedding_norm {
            x = self.apply_norm(&x, n)?;
        }
        Ok(x)
    }

    fn run(&self, ids: &[u32], capture: Capture) -> CResult<ForwardOutput> {
        let s = &self.spec;
        let seq = ids.len();
        let mut x = self.embed(ids)?;
        let rope = match s.positions {
            Positions::Rope { theta, pairing } => {
                let (c, sn) = self.rope_tables(seq, theta)?;
                Some((c, sn, pairing))
            }
            _ => None,
        };
        let mask = self.mask(seq)?;
        let keep_residual = capture.residual || capture.logit_lens;
        let mut residual = Vec::new();
        if keep_residual {
            residual.push(x.clone());
        }
        let mut attention = Vec::new();
        for l in &self.layers {
            if s.post_norm {
                let (a, probs) = self.attention(&x, l, rope.as_ref(), mask.as_ref())?;
                x = self.apply_norm(&(x + a)?, &l.attn_norm)?;
                let m = self.mlp(&x, l)?;
                x = self.apply_norm(&(x + m)?, &l.mlp_norm)?;
                if capture.attention {
                    attention.push(probs);
                }
            } else {
                let h = self.apply_norm(&x, &l.attn_norm)?;
                let (a, probs) = self.attention(&h, l, rope.as_ref(), mask.as_ref())?;
                x = (x + a)?;
                let h = self.apply_norm(&x, &l.mlp_norm)?;
                x = (&x + self.mlp(&h, l)?)?;
                if capture.attention {
                    attention.push(probs);
                }
            }
            if keep_residual {
                residual.push(x.clone());
            }
        }
        let final_hidden = match &self.final_norm {
            Some(n) => self.apply_norm(&x, n)?,
            None => x,
        };
        let logits = match &self.unembedding_t {
            Some(u) => Some(final_hidden.matmul(u)?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        let logit_lens = match (&self.unembedding_t, capture.logit_lens) {
            (Some(u), true) => {
                let mut lens = Vec::with_capacity(residual.len());
                for r in &residual {
                    let normed = match &self.final_norm {
                        Some(n) => self.apply_norm(r, n)?,
                        None => r.clone(),
                    };
                    let layer_logits = normed.matmul(u)?.to_vec2::<f32>()?;
                    lens.push(
                        layer_logits
                            .iter()
                            .map(|row| top_k_softmax(row, 5))
                            .collect::<Vec<Vec<IdProb>>>(),
                    );
                }
                Some(lens)
            }
            _ => None,
        };
        let attention = if capture.attention {
            let mut data = Vec::with_capacity(self.layers.len() * s.n_heads * seq * seq);
            for p in &attention {
                data.extend(p.flatten_all()?.to_vec1::<f32>()?);
            }
            Some(AttentionMaps {
                layers: self.layers.len(),
                heads: s.n_heads,
                seq,
                data,
            })
        } else {
            None
        };
        let residual = if capture.residual {
            Some(
                residual
                    .iter()
                    .map(|r| r.flatten_all().and_then(|t| t.to_vec1::<f32>()))
                    .collect::<CResult<Vec<_>>>()?,
            )
        } else {
            None
        };
        Ok(ForwardOutput {
            seq,
            hidden: s.hidden,
            logits,
            row_stats: None,
            final_hidden: final_hidden
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
            residual,
            attention,
            logit_lens,
        })
    }
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        format!("cpu (candle-core, f32, {threads} threads)")
    }

    fn forward(&self, ids: &[u32], capture: Capture) -> Result<ForwardOutput> {
        self.run(ids, capture).map_err(backend_err)
    }
}
