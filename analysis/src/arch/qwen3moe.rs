//! Qwen3-MoE (Qwen3-30B-A3B, Qwen3-Coder-30B-A3B, Qwen3-235B-A22B): Qwen3's attention (per-head
//! q/k RMSNorm) with a mixture of experts as the MLP: a softmax router, the top-k experts per
//! token, their probabilities renormalized to sum to one (`norm_topk_prob`), each expert a SwiGLU
//! MLP of `moe_intermediate_size` (reference implementation: transformers'
//! `modeling_qwen3_moe.py`; llama.cpp's `qwen3moe` graph, which always renormalizes).

use serde::Deserialize;

use super::{
    ArchSpec, Architecture, ExpertSpec, GgufConfig, HfConfig, HfDefaults, LayerKind, MlpKind,
    QkNorm, RopePairing,
};
use crate::error::Result;

pub static ARCH: Architecture = Architecture {
    name: "qwen3moe",
    covers: "Qwen3 mixture-of-experts models (30B-A3B, Coder, 235B-A22B)",
    hf_model_types: &["qwen3_moe"],
    gguf_names: &["qwen3moe"],
    spec_from_hf,
    spec_from_gguf,
    load_weights: super::llama::load_unbiased,
    unused_tensor: |n| n.ends_with("rotary_emb.inv_freq"),
    harmless_gguf_keys: &[],
};

/// Qwen3-MoE's fields beyond [`super::HfCommon`].
#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default)]
    use_sliding_window: bool,
    #[serde(default)]
    attention_bias: bool,
    hidden_act: Option<String>,
    /// `num_experts` on the Hub; transformers 5 writes `num_local_experts`.
    #[serde(alias = "num_local_experts")]
    num_experts: usize,
    num_experts_per_tok: usize,
    moe_intermediate_size: usize,
    #[serde(default)]
    norm_topk_prob: bool,
    #[serde(default = "one")]
    decoder_sparse_step: usize,
    #[serde(default)]
    mlp_only_layers: Vec<usize>,
}

fn one() -> usize {
    1
}

fn spec_from_hf(cfg: &HfConfig<'_>) -> Result<ArchSpec> {
    let c: Config = cfg.parse()?;
    if let Some(act) = c.hidden_act.as_deref().filter(|a| *a != "silu") {
        return Err(cfg.err(format!(
            "Qwen3-MoE hidden_act {act:?} is not supported (silu)"
        )));
    }
    if c.attention_bias {
        return Err(cfg.err("Qwen3-MoE with attention_bias is not supported"));
    }
    if c.use_sliding_window {
        return Err(cfg.err("Qwen3-MoE with use_sliding_window is not supported"));
    }
    if c.decoder_sparse_step == 0 {
        return Err(cfg.err("decoder_sparse_step is 0"));
    }
    let mut spec = ArchSpec::base("qwen3moe", cfg.named.clone());
    cfg.common(
        &mut spec,
        HfDefaults {
            rms_norm_eps: 1e-6,
            context: 32768,
            tied: false,
        },
    )?;
    if let Some(&l) = c.mlp_only_layers.iter().find(|&&l| l >= spec.n_layers) {
        return Err(cfg.err(format!(
            "mlp_only_layers names layer {l} of a {}-layer model",
            spec.n_layers
        )));
    }
    spec.qk_norm = QkNorm::PerHead;
    spec.rope = Some(cfg.rope_half(&spec, 1_000_000.0)?);
    spec.experts = Some(ExpertSpec {
        count: c.num_experts,
        top_k: c.num_experts_per_tok,
        width: c.moe_intermediate_size,
        renormalize: c.norm_topk_prob,
        shared: None,
        beside_dense: false,
    });
    spec.layers = (0..spec.n_layers)
        .map(|i| LayerKind {
            mlp: if !c.mlp_only_layers.contains(&i)
                && c.num_experts > 0
                && (i + 1).is_multiple_of(c.decoder_sparse_step)
            {
                MlpKind::Experts
            } else {
                MlpKind::Dense
            },
            ..LayerKind::FULL
        })
        .collect();
    Ok(spec)
}

fn spec_from_gguf(cfg: &GgufConfig<'_>) -> Result<ArchSpec> {
    let mut spec = ArchSpec::base("qwen3moe", cfg.arch.to_string());
    cfg.common(&mut spec)?;
    spec.qk_norm = QkNorm::PerHead;
    spec.rope = Some(cfg.rope(&spec, 1_000_000.0, RopePairing::Half)?);
    spec.experts = Some(ExpertSpec {
        count: cfg.usize("expert_count")?,
        top_k: cfg.usize("expert_used_count")?,
        width: cfg.usize("expert_feed_forward_length")?,
        // llama.cpp's qwen3moe graph always divides by the chosen probabilities' sum.
        renormalize: cfg
            .meta
            .bool_opt(&cfg.key("expert_weights_norm"))?
            .unwrap_or(true),
        shared: None,
        beside_dense: false,
    });
    // A layer without a router is a dense one.
    spec.layers = (0..spec.n_layers)
        .map(|i| LayerKind {
            mlp: if cfg
                .src
                .info(&format!("blk.{i}.ffn_gate_inp.weight"))
                .is_some()
            {
                MlpKind::Experts
            } else {
                MlpKind::Dense
            },
            ..LayerKind::FULL
        })
        .collect();
    spec.tied_embeddings = cfg.src.info("output.weight").is_none();
    Ok(spec)
}
