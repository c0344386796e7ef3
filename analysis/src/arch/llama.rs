//! The Llama family: Llama 1-3 (with Llama 3's RoPE scaling), SmolLM/SmolLM2, TinyLlama, Mistral
//! (sliding window) and Qwen2 (q/k/v biases).
//!
//! Pre-norm decoder blocks with RMSNorm, rotary positions, grouped-query attention and a SwiGLU MLP
//! (Touvron et al. 2023, <https://arxiv.org/abs/2302.13971>; reference implementation:
//! transformers' `modeling_llama.py`, `modeling_mistral.py`, `modeling_qwen2.py`).

use serde::Deserialize;

use super::{
    ArchSpec, Architecture, Bias, Format, GgufConfig, HfConfig, LayerKind, Loader, Names, Rope,
    RopePairing,
};
use crate::error::Result;
use crate::weights::{get, LayerWeights, ModelWeights, TensorSource};

pub static ARCH: Architecture = Architecture {
    name: "llama",
    covers: "Llama 1-3, SmolLM, TinyLlama, Mistral, Qwen2",
    hf_model_types: &["llama", "mistral", "qwen2", "smollm", "smollm2"],
    gguf_names: &["llama", "mistral", "qwen2"],
    spec_from_hf,
    spec_from_gguf,
    load_weights,
    unused_tensor: |n| n.ends_with("rotary_emb.inv_freq"),
    harmless_gguf_keys: &["rope.scaling.original_context_length"],
};

/// The fields of HF `LlamaConfig` / `MistralConfig` / `Qwen2Config` that change the computation.
#[derive(Debug, Deserialize)]
struct Config {
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
    max_window_layers: Option<usize>,
    hidden_act: Option<String>,
    #[serde(default)]
    mlp_bias: bool,
}

fn default_rms_eps() -> f64 {
    1e-6
}

fn default_context() -> usize {
    2048
}

fn spec_from_hf(cfg: &HfConfig<'_>) -> Result<ArchSpec> {
    let c: Config = cfg.parse()?;
    if let Some(act) = c.hidden_act.as_deref().filter(|a| *a != "silu") {
        return Err(cfg.err(format!(
            "hidden_act {act:?} in a Llama-family model; only \"silu\" is supported"
        )));
    }
    if c.mlp_bias {
        return Err(cfg.err("mlp_bias is not supported in the Llama family"));
    }
    let mut spec = ArchSpec::base("llama", cfg.named.clone());
    spec.n_layers = c.num_hidden_layers;
    spec.hidden = c.hidden_size;
    spec.n_heads = c.num_attention_heads;
    spec.n_kv_heads = c.num_key_value_heads.unwrap_or(c.num_attention_heads);
    spec.head_dim = c
        .head_dim
        .unwrap_or(c.hidden_size / c.num_attention_heads.max(1));
    spec.intermediate = c.intermediate_size;
    spec.vocab = c.vocab_size;
    spec.context_length = c.max_position_embeddings;
    spec.norm_eps = c.rms_norm_eps;
    spec.tied_embeddings = c.tie_word_embeddings;
    spec.check_sizes(cfg.path)?;
    spec.rope = Some(Rope::from_hf(
        cfg.rope_theta(10_000.0),
        spec.head_dim,
        RopePairing::Half,
        &cfg.rope_scaling()?,
        c.max_position_embeddings,
        cfg,
    )?);
    // Mistral slides on every layer; Qwen2 only with use_sliding_window, from max_window_layers on.
    let window = match cfg.model_type {
        "qwen2" if c.use_sliding_window != Some(true) => None,
        _ => c.sliding_window,
    };
    spec.layers = match cfg.layer_types(spec.n_layers, window)? {
        Some(mut kinds) => {
            kinds.iter_mut().for_each(|k| k.local_rope = false);
            kinds
        }
        None => (0..spec.n_layers)
            .map(|i| LayerKind {
                window: match (cfg.model_type, c.max_window_layers) {
                    ("qwen2", Some(m)) if i < m => None,
                    _ => window,
                },
                local_rope: false,
            })
            .collect(),
    };
    Ok(spec)
}

fn spec_from_gguf(cfg: &GgufConfig<'_>) -> Result<ArchSpec> {
    let mut spec = ArchSpec::base("llama", cfg.arch.to_string());
    cfg.common(&mut spec)?;
    // llama.cpp's converter permutes q/k rows for "llama" (interleaved-pair RoPE), not for qwen2.
    let pairing = if cfg.arch == "qwen2" {
        RopePairing::Half
    } else {
        RopePairing::Interleaved
    };
    spec.rope = Some(cfg.rope(&spec, 10_000.0, pairing)?);
    let window = cfg
        .usize_opt("attention.sliding_window")?
        .filter(|&w| w > 0);
    spec.uniform_layers(window);
    // GGUF has no tie flag: a missing output matrix means the embedding doubles as it.
    spec.tied_embeddings = cfg.src.info("output.weight").is_none();
    Ok(spec)
}

fn load_weights(src: &dyn TensorSource, spec: &ArchSpec, format: Format) -> Result<ModelWeights> {
    // In GGUF, biases are there or not; in HF folders Qwen2 always has q/k/v biases, and
    // `attention_bias` models have them on o as well.
    let (qkv_bias, o_bias) = if format == Format::Gguf {
        (Bias::Maybe, Bias::Maybe)
    } else {
        let attention_bias = src.info("model.layers.0.self_attn.o_proj.bias").is_some();
        let qwen = spec.architecture.contains("Qwen2");
        match (qwen, attention_bias) {
            (_, true) => (Bias::Yes, Bias::Yes),
            (true, false) => (Bias::Yes, Bias::No),
            _ => (Bias::No, Bias::No),
        }
    };
    load_decoder(src, spec, format, qkv_bias, o_bias)
}

/// Weights of a Llama-shaped decoder in HF or GGUF naming, with q/k norms when the spec has them
/// (shared with Qwen3).
pub(super) fn load_decoder(
    src: &dyn TensorSource,
    spec: &ArchSpec,
    format: Format,
    qkv_bias: Bias,
    o_bias: Bias,
) -> Result<ModelWeights> {
    let l = Loader { src, spec };
    let (h, v, q, kv, f, hd) = (
        spec.hidden,
        spec.vocab,
        spec.q_dim(),
        spec.kv_dim(),
        spec.intermediate,
        spec.head_dim,
    );
    let gguf = format == Format::Gguf;
    let names = Names {
        gguf,
        layers: "model.layers",
    };
    let mut layers = Vec::with_capacity(spec.n_layers);
    for i in 0..spec.n_layers {
        let n = |hf: &str, gg: &str| names.layer(i, hf, gg);
        let qk_norm = |hf: &str, gg: &str| -> Result<Option<crate::weights::NormWeights>> {
            match spec.qk_norm {
                true => l.norm(&n(hf, gg), hd, false).map(Some),
                false => Ok(None),
            }
        };
        layers.push(LayerWeights {
            attn_norm: l.norm(&n("input_layernorm", "attn_norm"), h, false)?,
            q: l.linear(&n("self_attn.q_proj", "attn_q"), q, h, qkv_bias)?,
            k: l.linear(&n("self_attn.k_proj", "attn_k"), kv, h, qkv_bias)?,
            v: l.linear(&n("self_attn.v_proj", "attn_v"), kv, h, qkv_bias)?,
            o: l.linear(&n("self_attn.o_proj", "attn_output"), h, q, o_bias)?,
            q_norm: qk_norm("self_attn.q_norm", "attn_q_norm")?,
            k_norm: qk_norm("self_attn.k_norm", "attn_k_norm")?,
            post_attn_norm: None,
            mlp_norm: l.norm(&n("post_attention_layernorm", "ffn_norm"), h, false)?,
            gate: Some(l.linear(&n("mlp.gate_proj", "ffn_gate"), f, h, Bias::No)?),
            up: l.linear(&n("mlp.up_proj", "ffn_up"), f, h, Bias::No)?,
            down: l.linear(&n("mlp.down_proj", "ffn_down"), h, f, Bias::No)?,
            post_mlp_norm: None,
        });
    }
    let [embed, final_norm, head] =
        names.top(["model.embed_tokens.weight", "model.norm", "lm_head.weight"]);
    Ok(ModelWeights {
        token_embedding: get(src, embed, &[v, h])?,
        position_embedding: None,
        token_type_embedding: None,
        embedding_norm: None,
        layers,
        final_norm: Some(l.norm(final_norm, h, false)?),
        lm_head: l.lm_head(head)?,
        lm_head_bias: None,
    })
}
