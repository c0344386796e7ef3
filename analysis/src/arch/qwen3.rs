//! Qwen3: the Llama block with per-head RMSNorm on q and k after the projections and before RoPE,
//! and an explicit head_dim (often larger than hidden / heads) (reference implementation:
//! transformers' `modeling_qwen3.py`; llama.cpp's `qwen3` graph).

use serde::Deserialize;

use super::{ArchSpec, Architecture, GgufConfig, HfConfig, HfDefaults, QkNorm, RopePairing};
use crate::error::Result;

pub static ARCH: Architecture = Architecture {
    name: "qwen3",
    covers: "Qwen3 dense models",
    hf_model_types: &["qwen3"],
    gguf_names: &["qwen3"],
    spec_from_hf,
    spec_from_gguf,
    load_weights: super::llama::load_unbiased,
    unused_tensor: |n| n.ends_with("rotary_emb.inv_freq"),
    harmless_gguf_keys: &[],
};

/// Qwen3's fields beyond [`super::HfCommon`].
#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default)]
    use_sliding_window: bool,
    #[serde(default)]
    attention_bias: bool,
    hidden_act: Option<String>,
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
    let common = cfg.common(
        &mut spec,
        HfDefaults {
            rms_norm_eps: 1e-6,
            context: 32768,
            tied: false,
        },
    )?;
    spec.qk_norm = QkNorm::PerHead;
    spec.rope = Some(cfg.rope_half(&spec, 1_000_000.0)?);
    let window = common.sliding_window.filter(|_| c.use_sliding_window);
    match cfg.layer_types(spec.n_layers, common.sliding_window)? {
        Some(kinds) if c.use_sliding_window => spec.layers = super::llama::global_rope(kinds),
        _ => spec.uniform_layers(window),
    }
    Ok(spec)
}

fn spec_from_gguf(cfg: &GgufConfig<'_>) -> Result<ArchSpec> {
    let mut spec = ArchSpec::base("qwen3", cfg.arch.to_string());
    cfg.common(&mut spec)?;
    spec.qk_norm = QkNorm::PerHead;
    // llama.cpp runs Qwen3 with NeoX RoPE, and its converter does not permute q/k.
    spec.rope = Some(cfg.rope(&spec, 1_000_000.0, RopePairing::Half)?);
    spec.uniform_layers(None);
    spec.tied_embeddings = cfg.src.info("output.weight").is_none();
    Ok(spec)
}
