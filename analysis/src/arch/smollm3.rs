//! SmolLM3: the Llama block with rotary positions left out of some layers (NoPE: by default every
//! fourth), optionally sliding windows on those layers (reference implementation: transformers'
//! `modeling_smollm3.py`; llama.cpp's `smollm3` graph, which fixes the NoPE step at 4).

use serde::Deserialize;

use super::{
    ArchSpec, Architecture, GgufConfig, HfConfig, HfDefaults, LayerKind, LayerRope, RopePairing,
};
use crate::error::Result;

pub static ARCH: Architecture = Architecture {
    name: "smollm3",
    covers: "SmolLM3",
    hf_model_types: &["smollm3"],
    gguf_names: &["smollm3"],
    spec_from_hf,
    spec_from_gguf,
    load_weights: super::llama::load_unbiased,
    unused_tensor: |n| n.ends_with("rotary_emb.inv_freq"),
    harmless_gguf_keys: &[],
};

/// SmolLM3's fields beyond [`super::HfCommon`].
#[derive(Debug, Deserialize)]
struct Config {
    no_rope_layers: Option<Vec<u8>>,
    #[serde(default = "default_interval")]
    no_rope_layer_interval: usize,
    #[serde(default)]
    use_sliding_window: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    hidden_act: Option<String>,
}

fn default_interval() -> usize {
    4
}

/// llama.cpp's fixed NoPE step, and transformers' default interval.
const GGUF_NOPE_STEP: usize = 4;

/// Whether layer `i` rotates q and k, when every `step`-th layer has no positions.
fn every(step: usize, i: usize) -> bool {
    !(i + 1).is_multiple_of(step)
}

fn spec_from_hf(cfg: &HfConfig<'_>) -> Result<ArchSpec> {
    let c: Config = cfg.parse()?;
    if let Some(act) = c.hidden_act.as_deref().filter(|a| *a != "silu") {
        return Err(cfg.err(format!(
            "SmolLM3 hidden_act {act:?} is not supported (silu)"
        )));
    }
    if c.attention_bias || c.mlp_bias {
        return Err(cfg.err("SmolLM3 with attention_bias or mlp_bias is not supported"));
    }
    let mut spec = ArchSpec::base("smollm3", cfg.named.clone());
    let common = cfg.common(
        &mut spec,
        HfDefaults {
            rms_norm_eps: 1e-6,
            context: 32768,
            tied: true,
        },
    )?;
    spec.rope = Some(cfg.rope_half(&spec, 2_000_000.0)?);
    let n = spec.n_layers;
    let uses_rope: Vec<bool> = match c.no_rope_layers {
        Some(flags) if flags.len() >= n => flags[..n].iter().map(|&f| f != 0).collect(),
        Some(flags) => {
            return Err(cfg.err(format!(
                "no_rope_layers lists {} layers for num_hidden_layers {n}",
                flags.len()
            )))
        }
        None if c.no_rope_layer_interval == 0 => return Err(cfg.err("no_rope_layer_interval is 0")),
        None => (0..n).map(|i| every(c.no_rope_layer_interval, i)).collect(),
    };
    // Sliding windows only with use_sliding_window, on the layers layer_types (or, without it,
    // the NoPE layers) name.
    let window = common.sliding_window.filter(|_| c.use_sliding_window);
    let windows: Vec<Option<usize>> = match cfg.layer_types(n, common.sliding_window)? {
        Some(kinds) if window.is_some() => kinds.iter().map(|k| k.window).collect(),
        Some(_) => vec![None; n],
        None => uses_rope.iter().map(|&r| window.filter(|_| !r)).collect(),
    };
    spec.layers = uses_rope
        .iter()
        .zip(windows)
        .map(|(&rope, window)| LayerKind {
            window,
            rope: if rope {
                LayerRope::Global
            } else {
                LayerRope::None
            },
            ..LayerKind::FULL
        })
        .collect();
    Ok(spec)
}

fn spec_from_gguf(cfg: &GgufConfig<'_>) -> Result<ArchSpec> {
    let mut spec = ArchSpec::base("smollm3", cfg.arch.to_string());
    cfg.common(&mut spec)?;
    // The converter permutes q/k as for Llama (interleaved pairs).
    spec.rope = Some(cfg.rope(&spec, 2_000_000.0, RopePairing::Interleaved)?);
    spec.layers = (0..spec.n_layers)
        .map(|i| LayerKind {
            rope: if every(GGUF_NOPE_STEP, i) {
                LayerRope::Global
            } else {
                LayerRope::None
            },
            ..LayerKind::FULL
        })
        .collect();
    spec.tied_embeddings = cfg.src.info("output.weight").is_none();
    Ok(spec)
}
