//! OLMo 2: the Llama block with its norms moved after the sub-layers (`h += norm(attn(h))`,
//! `h += norm(mlp(h))`, no input norms) and RMSNorm of q and k over the whole projection, before
//! RoPE (OLMo Team 2024, <https://arxiv.org/abs/2501.00656>; reference implementation:
//! transformers' `modeling_olmo2.py`; llama.cpp's `olmo2` graph).

use serde::Deserialize;

use super::{ArchSpec, Architecture, Block, GgufConfig, HfConfig, HfDefaults, QkNorm, RopePairing};
use crate::error::Result;

pub static ARCH: Architecture = Architecture {
    name: "olmo2",
    covers: "OLMo 2",
    hf_model_types: &["olmo2"],
    gguf_names: &["olmo2"],
    spec_from_hf,
    spec_from_gguf,
    load_weights: super::llama::load_unbiased,
    unused_tensor: |n| n.ends_with("rotary_emb.inv_freq"),
    harmless_gguf_keys: &[],
};

/// OLMo 2's fields beyond [`super::HfCommon`].
#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default)]
    attention_bias: bool,
    hidden_act: Option<String>,
}

fn spec_from_hf(cfg: &HfConfig<'_>) -> Result<ArchSpec> {
    let c: Config = cfg.parse()?;
    if let Some(act) = c.hidden_act.as_deref().filter(|a| *a != "silu") {
        return Err(cfg.err(format!("OLMo 2 hidden_act {act:?} is not supported (silu)")));
    }
    if c.attention_bias {
        return Err(cfg.err("OLMo 2 with attention_bias is not supported"));
    }
    let mut spec = ArchSpec::base("olmo2", cfg.named.clone());
    cfg.common(
        &mut spec,
        HfDefaults {
            rms_norm_eps: 1e-5,
            context: 2048,
            tied: false,
        },
    )?;
    shape(&mut spec);
    spec.rope = Some(cfg.rope_half(&spec, 10_000.0)?);
    spec.uniform_layers(None);
    Ok(spec)
}

fn shape(spec: &mut ArchSpec) {
    spec.block = Block::OUTPUT_NORM;
    spec.qk_norm = QkNorm::Whole;
}

fn spec_from_gguf(cfg: &GgufConfig<'_>) -> Result<ArchSpec> {
    let mut spec = ArchSpec::base("olmo2", cfg.arch.to_string());
    cfg.common(&mut spec)?;
    shape(&mut spec);
    // llama.cpp runs OLMo 2 with NeoX RoPE, and its converter does not permute q/k. A sliding
    // window (OLMo 3) is left unread, so such a file is refused by name.
    spec.rope = Some(cfg.rope(&spec, 10_000.0, RopePairing::Half)?);
    spec.uniform_layers(None);
    spec.tied_embeddings = cfg.src.info("output.weight").is_none();
    Ok(spec)
}
