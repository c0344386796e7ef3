//! Qwen3: the Llama block with per-head RMSNorm on q and k after the projections and before RoPE,
//! and an explicit head_dim (often larger than hidden / heads) (reference implementation:
//! transformers' `modeling_qwen3.py`; llama.cpp's `qwen3` graph).

use serde::Deserialize;

use super::{ArchSpec, Architecture, Bias, Format, GgufConfig, HfConfig, Rope, RopePairing};
use crate::error::Result;
use crate::weights::{ModelWeights, TensorSource};

pub static ARCH: Architecture = Architecture {
    name: "qwen3",
    covers: "Qwen3 dense models",
    hf_model_types: &["qwen3"],
    gguf_names: &["qwen3"],
    spec_from_hf,
    spec_from_gguf,
    load_weights,
    unused_tensor: |n| n.ends_with("rotary_emb.inv_freq"),
    harmless_gguf_keys: &[],
};

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
    #[serde(default)]
    use_sliding_window: bool,
    #[serde(default)]
    attention_bias: bool,
    hidden_act: Option<String>,
}

fn default_rms_eps() -> f64 {
    1e-6
}

fn default_context() -> usize {
    32768
}

fn spec_from_hf(cfg: &HfConfig<'_>) -> Result<ArchSpec> {
    let c: Config = cfg.parse()?;
    if let Some(act) = c.hidden_act.as_deref().filter(|a| *a != "silu") {
        return Err(cfg.err(format!("Qwen3 hidden_act {act:?} is not supported (silu)")));
    }
    if c.attention_bias {
        return Err(cfg.err("Qwen3 with attention_bias is not supported"));
    }
    let mut spec = ArchSpec::base("qwen3", cfg.named.clone());
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
    spec.qk_norm = true;
    spec.check_sizes(cfg.path)?;
    spec.rope = Some(Rope::from_hf(
        cfg.rope_theta(1_000_000.0),
        spec.head_dim,
        RopePairing::Half,
        &cfg.rope_scaling()?,
        c.max_position_embeddings,
        cfg,
    )?);
    let window = if c.use_sliding_window {
        c.sliding_window
    } else {
        None
    };
    match cfg.layer_types(spec.n_layers, c.sliding_window)? {
        Some(mut kinds) if c.use_sliding_window => {
            kinds.iter_mut().for_each(|k| k.local_rope = false);
            spec.layers = kinds;
        }
        _ => spec.uniform_layers(window),
    }
    Ok(spec)
}

fn spec_from_gguf(cfg: &GgufConfig<'_>) -> Result<ArchSpec> {
    let mut spec = ArchSpec::base("qwen3", cfg.arch.to_string());
    cfg.common(&mut spec)?;
    spec.qk_norm = true;
    // llama.cpp runs Qwen3 with NeoX RoPE, and its converter does not permute q/k.
    spec.rope = Some(cfg.rope(&spec, 1_000_000.0, RopePairing::Half)?);
    spec.uniform_layers(None);
    spec.tied_embeddings = cfg.src.info("output.weight").is_none();
    Ok(spec)
}

fn load_weights(src: &dyn TensorSource, spec: &ArchSpec, format: Format) -> Result<ModelWeights> {
    super::llama::load_decoder(src, spec, format, Bias::No, Bias::No)
}
