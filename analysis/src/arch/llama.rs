//! The Llama family: Llama, SmolLM/SmolLM2, TinyLlama, Mistral and Qwen2 (which adds q/k/v biases).
//!
//! Pre-norm decoder blocks with RMSNorm, rotary positions, grouped-query attention and a SwiGLU MLP
//! (Touvron et al. 2023, <https://arxiv.org/abs/2302.13971>; reference implementation:
//! transformers' `modeling_llama.py`).

use std::path::Path;

use serde::Deserialize;

use super::{
    check_rope_scaling, parse_config, rope_theta_from_hf, Activation, ArchSpec, Family, NormKind,
    Positions, RopePairing,
};
use crate::checkpoint::gguf::GgufMeta;
use crate::error::{PrismError, Result};
use crate::weights::{get, get_opt, LayerWeights, Linear, ModelWeights, NormWeights, TensorSource};

/// Mirrors the fields of HF `LlamaConfig` / `MistralConfig` / `Qwen2Config` that change the computation.
#[derive(Debug, Deserialize)]
struct HfConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_context")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    #[serde(default)]
    hidden_act: Option<String>,
}

fn default_rms_eps() -> f64 {
    1e-6
}

fn default_context() -> usize {
    2048
}

pub fn spec_from_hf(
    config: &serde_json::Value,
    model_type: &str,
    named: &str,
    path: &Path,
) -> Result<ArchSpec> {
    let c: HfConfig = parse_config(config, path)?;
    check_rope_scaling(config, path)?;
    if let Some(act) = c.hidden_act.as_deref().filter(|a| *a != "silu") {
        return Err(PrismError::format(
            path,
            format!("hidden_act {act:?} in a Llama-family model; only \"silu\" is supported"),
        ));
    }
    let head_dim = c
        .head_dim
        .unwrap_or(c.hidden_size / c.num_attention_heads.max(1));
    // Qwen2 only applies its window when `use_sliding_window` is true; Mistral always does.
    let sliding_window = match model_type {
        "qwen2" if c.use_sliding_window != Some(true) => None,
        _ => c.sliding_window,
    };
    Ok(ArchSpec {
        family: Family::Llama,
        architecture: named.to_string(),
        n_layers: c.num_hidden_layers,
        hidden: c.hidden_size,
        n_heads: c.num_attention_heads,
        n_kv_heads: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
        head_dim,
        intermediate: c.intermediate_size,
        vocab: c.vocab_size,
        context_length: c.max_position_embeddings,
        norm: NormKind::RmsNorm,
        norm_eps: c.rms_norm_eps,
        positions: Positions::Rope {
            theta: rope_theta_from_hf(config, 10_000.0),
            pairing: RopePairing::Half,
        },
        activation: Activation::SwiGlu,
        causal: true,
        post_norm: false,
        final_norm: true,
        tied_embeddings: c.tie_word_embeddings,
        sliding_window,
        type_vocab: 0,
    })
}

/// GGUF architectures served by this file.
pub const GGUF_ARCHES: &[&str] = &["llama", "mistral", "qwen2"];

pub fn spec_from_gguf(
    meta: GgufMeta<'_>,
    arch: &str,
    vocab_from_tensors: usize,
) -> Result<ArchSpec> {
    let k = |s: &str| format!("{arch}.{s}");
    let hidden = meta.usize(&k("embedding_length"))?;
    let n_heads = meta.usize(&k("attention.head_count"))?;
    let n_kv_heads = meta
        .u64_opt(&k("attention.head_count_kv"))?
        .map(|v| v as usize)
        .unwrap_or(n_heads);
    let head_dim = match meta.u64_opt(&k("attention.key_length"))? {
        Some(d) => d as usize,
        None => hidden / n_heads.max(1),
    };
    if let Some(rot) = meta.u64_opt(&k("rope.dimension_count"))? {
        if rot as usize != head_dim {
            return Err(PrismError::format(
                meta.path(),
                format!("partial RoPE ({rot} of {head_dim} dims) is not supported yet"),
            ));
        }
    }
    if let Some(kind) = meta.str(&k("rope.scaling.type")).filter(|s| *s != "none") {
        return Err(PrismError::format(
            meta.path(),
            format!("RoPE scaling {kind:?} is not supported yet (only plain RoPE)"),
        ));
    }
    let vocab = match meta.u64_opt(&k("vocab_size"))? {
        Some(v) => v as usize,
        None => vocab_from_tensors,
    };
    // llama.cpp's converter permutes q/k rows for "llama" (interleaved-pair RoPE) but not for qwen2 (NeoX RoPE).
    let pairing = if arch == "qwen2" {
        RopePairing::Half
    } else {
        RopePairing::Interleaved
    };
    Ok(ArchSpec {
        family: Family::Llama,
        architecture: arch.to_string(),
        n_layers: meta.usize(&k("block_count"))?,
        hidden,
        n_heads,
        n_kv_heads,
        head_dim,
        intermediate: meta.usize(&k("feed_forward_length"))?,
        vocab,
        context_length: meta.usize(&k("context_length"))?,
        norm: NormKind::RmsNorm,
        norm_eps: meta
            .f64_opt(&k("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5),
        positions: Positions::Rope {
            theta: meta.f64_opt(&k("rope.freq_base"))?.unwrap_or(10_000.0),
            pairing,
        },
        activation: Activation::SwiGlu,
        causal: true,
        post_norm: false,
        final_norm: true,
        tied_embeddings: false,
        sliding_window: None,
        type_vocab: 0,
    })
}

/// Tensor names, in HF and GGUF spelling.
struct Names {
    embed: &'static str,
    final_norm: &'static str,
    lm_head: &'static str,
    layer: fn(usize, &str) -> String,
}

const HF: Names = Names {
    embed: "model.embed_tokens.weight",
    final_norm: "model.norm.weight",
    lm_head: "lm_head.weight",
    layer: |i, part| {
        let p = match part {
            "attn_norm" => "input_layernorm",
            "mlp_norm" => "post_attention_layernorm",
            "q" => "self_attn.q_proj",
            "k" => "self_attn.k_proj",
            "v" => "self_attn.v_proj",
            "o" => "self_attn.o_proj",
            "gate" => "mlp.gate_proj",
            "up" => "mlp.up_proj",
            _ => "mlp.down_proj",
        };
        format!("model.layers.{i}.{p}")
    },
};

const GGUF: Names = Names {
    embed: "token_embd.weight",
    final_norm: "output_norm.weight",
    lm_head: "output.weight",
    layer: |i, part| {
        let p = match part {
            "attn_norm" => "attn_norm",
            "mlp_norm" => "ffn_norm",
            "q" => "attn_q",
            "k" => "attn_k",
            "v" => "attn_v",
            "o" => "attn_output",
            "gate" => "ffn_gate",
            "up" => "ffn_up",
            _ => "ffn_down",
        };
        format!("blk.{i}.{p}")
    },
};

pub fn load_weights(
    src: &dyn TensorSource,
    spec: &mut ArchSpec,
    gguf: bool,
) -> Result<ModelWeights> {
    let n = if gguf { &GGUF } else { &HF };
    let (h, v, q, kv, f) = (
        spec.hidden,
        spec.vocab,
        spec.q_dim(),
        spec.kv_dim(),
        spec.intermediate,
    );
    let linear = |i: usize, part: &str, out: usize, inp: usize| -> Result<Linear> {
        let base = (n.layer)(i, part);
        Ok(Linear {
            weight: get(src, &format!("{base}.weight"), &[out, inp])?,
            bias: get_opt(src, &format!("{base}.bias"), &[out])?,
        })
    };
    let norm = |name: String| -> Result<NormWeights> {
        Ok(NormWeights {
            weight: get(src, &name, &[h])?,
            bias: None,
        })
    };
    let mut layers = Vec::with_capacity(spec.n_layers);
    for i in 0..spec.n_layers {
        layers.push(LayerWeights {
            attn_norm: norm(format!("{}.weight", (n.layer)(i, "attn_norm")))?,
            q: linear(i, "q", q, h)?,
            k: linear(i, "k", kv, h)?,
            v: linear(i, "v", kv, h)?,
            o: linear(i, "o", h, q)?,
            mlp_norm: norm(format!("{}.weight", (n.layer)(i, "mlp_norm")))?,
            gate: Some(linear(i, "gate", f, h)?),
            up: linear(i, "up", f, h)?,
            down: linear(i, "down", h, f)?,
        });
    }
    let lm_head = if spec.tied_embeddings {
        None
    } else {
        get_opt(src, n.lm_head, &[v, h])?
    };
    if lm_head.is_none() && !spec.tied_embeddings {
        if gguf {
            // GGUF has no tie flag: a missing output matrix means the embedding doubles as it (SmolLM2).
            spec.tied_embeddings = true;
        } else {
            return Err(PrismError::MissingTensor {
                path: src.path().to_path_buf(),
                tensor: format!(
                    "{} (config.json says the embeddings are not tied)",
                    n.lm_head
                ),
            });
        }
    }
    Ok(ModelWeights {
        token_embedding: get(src, n.embed, &[v, h])?,
        position_embedding: None,
        token_type_embedding: None,
        embedding_norm: None,
        layers,
        final_norm: Some(norm(n.final_norm.to_string())?),
        lm_head,
    })
}
