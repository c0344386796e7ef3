//! Qwen3.5 (Qwen3.5-9B, 27B and their Qwen3.6 successors): a hybrid of Gated DeltaNet
//! linear-attention layers and gated full-attention layers, three to one by default
//! (`full_attention_interval` 4). Full attention has per-head q/k RMSNorm, partial RoPE (a quarter
//! of the head) and an output gate: q_proj holds, per head, the queries and as many gate values,
//! and the attention output is multiplied by their sigmoid. Every RMSNorm but the DeltaNet's own
//! is zero-centred (scale 1 + w, GGUF stores 1 + w). Multi-section RoPE (`mrope_section`) only
//! differs from plain RoPE for image positions: for text all three position rows are equal.
//! Reference implementation: transformers' `modeling_qwen3_5.py`; llama.cpp's `qwen35` graph,
//! whose converter stores A as -exp(A_log) and reorders the value heads into tiled order.

use serde::Deserialize;

use super::{
    ArchSpec, Architecture, Bias, DeltaNetSpec, ExpertSpec, Format, GgufConfig, HeadGrouping,
    HfConfig, HfDefaults, LayerKind, Loader, Mixer, MlpKind, Names, QkNorm, Rope, RopePairing,
};
use crate::error::Result;
use crate::weights::{
    get, get_stacked, DeltaNet, LayerWeights, Linear, MixerWeights, Mlp, ModelWeights, TensorSource,
};

pub static ARCH: Architecture = Architecture {
    name: "qwen35",
    covers: "Qwen3.5 and Qwen3.6 hybrid models (Gated DeltaNet and gated attention)",
    hf_model_types: &["qwen3_5_text", "qwen3_5"],
    gguf_names: &["qwen35"],
    spec_from_hf,
    spec_from_gguf,
    load_weights,
    unused_tensor,
    harmless_gguf_keys: &["rope.dimension_sections", "full_attention_interval"],
};

/// Qwen3.5's mixture of experts (Qwen3.5-35B-A3B, 122B-A10B, 397B-A17B): the same hybrid layers,
/// every MLP a softmax router over top-k SwiGLU experts (always renormalized) plus a shared expert
/// scaled by sigmoid(x . shared_expert_gate).
pub static MOE: Architecture = Architecture {
    name: "qwen35moe",
    covers: "Qwen3.5 and Qwen3.6 mixture-of-experts hybrids (35B-A3B and larger)",
    hf_model_types: &["qwen3_5_moe_text", "qwen3_5_moe"],
    gguf_names: &["qwen35moe"],
    spec_from_hf,
    spec_from_gguf,
    load_weights,
    unused_tensor,
    harmless_gguf_keys: &["rope.dimension_sections", "full_attention_interval"],
};

/// The vision tower of the image-text checkpoints, and the multi-token-prediction head (a draft
/// model for speculative decoding; it does not change the next-token distribution).
fn unused_tensor(n: &str) -> bool {
    n.ends_with("rotary_emb.inv_freq") || n.starts_with("model.visual.") || n.starts_with("mtp.")
}

/// Qwen3.5's fields beyond [`super::HfCommon`] (of the text config).
#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default)]
    attention_bias: bool,
    hidden_act: Option<String>,
    linear_conv_kernel_dim: usize,
    linear_key_head_dim: usize,
    linear_value_head_dim: usize,
    linear_num_key_heads: usize,
    linear_num_value_heads: usize,
    layer_types: Option<Vec<String>>,
    full_attention_interval: Option<usize>,
    partial_rotary_factor: Option<f64>,
    /// The mixture of experts (`qwen3_5_moe`).
    #[serde(alias = "num_local_experts")]
    num_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
    moe_intermediate_size: Option<usize>,
    shared_expert_intermediate_size: Option<usize>,
}

fn spec_from_hf(cfg: &HfConfig<'_>) -> Result<ArchSpec> {
    // The image-text checkpoints nest the language model's config under `text_config`.
    let nested = matches!(cfg.model_type, "qwen3_5" | "qwen3_5_moe");
    let mut value = match cfg.get("text_config") {
        Some(v) if nested => v.clone(),
        _ => cfg.value.clone(),
    };
    // A mixture-of-experts config has no dense MLP width: every layer's MLP is experts.
    if value.get("intermediate_size").is_none() {
        if let Some(w) = value.get("moe_intermediate_size").cloned() {
            value["intermediate_size"] = w;
        }
    }
    let text = HfConfig {
        value: &value,
        path: cfg.path,
        model_type: cfg.model_type,
        named: cfg.named.clone(),
    };
    let cfg = &text;
    let c: Config = cfg.parse()?;
    let moe = cfg.model_type.starts_with("qwen3_5_moe");
    if let Some(act) = c.hidden_act.as_deref().filter(|a| *a != "silu") {
        return Err(cfg.err(format!(
            "Qwen3.5 hidden_act {act:?} is not supported (silu)"
        )));
    }
    if c.attention_bias {
        return Err(cfg.err("Qwen3.5 with attention_bias is not supported"));
    }
    let mut spec = ArchSpec::base(if moe { "qwen35moe" } else { "qwen35" }, cfg.named.clone());
    cfg.common(
        &mut spec,
        HfDefaults {
            rms_norm_eps: 1e-6,
            context: 32768,
            tied: false,
        },
    )?;
    let n = spec.n_layers;
    let linear: Vec<bool> = match &c.layer_types {
        Some(types) => {
            if types.len() != n {
                return Err(cfg.err(format!(
                    "layer_types lists {} layers for num_hidden_layers {n}",
                    types.len()
                )));
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    "linear_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    other => Err(cfg.err(format!("layer_types entry {other:?} is not supported"))),
                })
                .collect::<Result<_>>()?
        }
        None => {
            let every = c.full_attention_interval.unwrap_or(4);
            if every == 0 {
                return Err(cfg.err("full_attention_interval is 0"));
            }
            (0..n).map(|i| !(i + 1).is_multiple_of(every)).collect()
        }
    };
    let factor = c
        .partial_rotary_factor
        .or_else(|| {
            cfg.get("rope_parameters")
                .and_then(|p| p.get("partial_rotary_factor"))
                .and_then(|v| v.as_f64())
        })
        .unwrap_or(0.25);
    if !(factor > 0.0 && factor <= 1.0) {
        return Err(cfg.err(format!("partial_rotary_factor {factor} is out of range")));
    }
    spec.rope = Some(Rope::from_hf(
        cfg.rope_theta(10_000_000.0),
        (spec.head_dim as f64 * factor) as usize,
        RopePairing::Half,
        &cfg.rope_scaling()?,
        spec.context_length,
        cfg,
    )?);
    finish(
        &mut spec,
        &linear,
        DeltaNetSpec {
            k_heads: c.linear_num_key_heads,
            v_heads: c.linear_num_value_heads,
            k_dim: c.linear_key_head_dim,
            v_dim: c.linear_value_head_dim,
            kernel: c.linear_conv_kernel_dim,
            grouping: HeadGrouping::Grouped,
        },
    );
    if moe {
        let need = |v: Option<usize>, key: &str| {
            v.ok_or_else(|| cfg.err(format!("a Qwen3.5 mixture of experts without {key}")))
        };
        spec.experts = Some(ExpertSpec {
            count: need(c.num_experts, "num_experts")?,
            top_k: need(c.num_experts_per_tok, "num_experts_per_tok")?,
            width: need(c.moe_intermediate_size, "moe_intermediate_size")?,
            renormalize: true,
            shared: c.shared_expert_intermediate_size.filter(|&w| w > 0),
            beside_dense: false,
        });
        spec.layers
            .iter_mut()
            .for_each(|k| k.mlp = MlpKind::Experts);
    }
    Ok(spec)
}

/// What both formats share once the sizes are read.
fn finish(spec: &mut ArchSpec, linear: &[bool], delta: DeltaNetSpec) {
    spec.qk_norm = QkNorm::PerHead;
    spec.attn_gate = true;
    spec.delta_net = Some(delta);
    spec.layers = linear
        .iter()
        .map(|&lin| LayerKind {
            mixer: if lin {
                Mixer::DeltaNet
            } else {
                Mixer::Attention
            },
            ..LayerKind::FULL
        })
        .collect();
}

fn spec_from_gguf(cfg: &GgufConfig<'_>) -> Result<ArchSpec> {
    let moe = cfg.arch == "qwen35moe";
    let mut spec = ArchSpec::base(
        if moe { "qwen35moe" } else { "qwen35" },
        cfg.arch.to_string(),
    );
    if moe && cfg.usize_opt("feed_forward_length")?.is_none() {
        // No dense MLP: the experts' width stands in for the sizes check.
        spec.intermediate = cfg.usize("expert_feed_forward_length")?;
    }
    cfg.common_with(&mut spec, moe)?;
    // The multi-token-prediction layers are counted in block_count; Prism does not run them.
    let mtp = cfg.usize_opt("nextn_predict_layers")?.unwrap_or(0);
    if mtp >= spec.n_layers {
        return Err(cfg.err(format!(
            "nextn_predict_layers {mtp} of block_count {}",
            spec.n_layers
        )));
    }
    spec.n_layers -= mtp;
    let n = spec.n_layers;
    let key = cfg.key("attention.recurrent_layers");
    let linear: Vec<bool> = match cfg.meta.array(&key) {
        Some(a) => {
            if a.len() < n {
                return Err(cfg.err(format!("{key} lists {} layers of {n}", a.len())));
            }
            a.iter()
                .take(n)
                .map(|v| match v {
                    crate::gguf::Value::Bool(b) => Ok(*b),
                    other => Err(cfg.err(format!("{key} holds a {}", other.type_name()))),
                })
                .collect::<Result<_>>()?
        }
        None => {
            let every = cfg.usize_opt("full_attention_interval")?.unwrap_or(4);
            if every == 0 {
                return Err(cfg.err("full_attention_interval is 0"));
            }
            (0..n).map(|i| !(i + 1).is_multiple_of(every)).collect()
        }
    };
    let k_heads = cfg.usize("ssm.group_count")?;
    let v_heads = cfg.usize("ssm.time_step_rank")?;
    let inner = cfg.usize("ssm.inner_size")?;
    if v_heads == 0 || !inner.is_multiple_of(v_heads) {
        return Err(cfg.err(format!(
            "ssm.inner_size {inner} is not a multiple of ssm.time_step_rank {v_heads}"
        )));
    }
    spec.rope = Some(cfg.rope(&spec, 10_000_000.0, RopePairing::Half)?);
    finish(
        &mut spec,
        &linear,
        DeltaNetSpec {
            k_heads,
            v_heads,
            k_dim: cfg.usize("ssm.state_size")?,
            v_dim: inner / v_heads,
            kernel: cfg.usize("ssm.conv_kernel")?,
            grouping: HeadGrouping::Tiled,
        },
    );
    if moe {
        spec.experts = Some(ExpertSpec {
            count: cfg.usize("expert_count")?,
            top_k: cfg.usize("expert_used_count")?,
            width: cfg.usize("expert_feed_forward_length")?,
            renormalize: true,
            shared: cfg
                .usize_opt("expert_shared_feed_forward_length")?
                .filter(|&w| w > 0),
            beside_dense: false,
        });
        spec.layers
            .iter_mut()
            .for_each(|k| k.mlp = MlpKind::Experts);
    }
    spec.tied_embeddings = cfg.src.info("output.weight").is_none();
    Ok(spec)
}

fn load_weights(src: &dyn TensorSource, spec: &ArchSpec, format: Format) -> Result<ModelWeights> {
    let l = Loader { src, spec };
    let gguf = format == Format::Gguf;
    // The image-text checkpoints keep the language model under `model.language_model`.
    let nested = !gguf
        && src
            .info("model.language_model.embed_tokens.weight")
            .is_some();
    let names = Names {
        gguf,
        layers: if nested {
            "model.language_model.layers"
        } else {
            "model.layers"
        },
    };
    let d = spec
        .delta_net
        .ok_or_else(|| crate::error::PrismError::format(src.path(), "no linear-attention sizes"))?;
    let (h, v, q, kv, f, hd) = (
        spec.hidden,
        spec.vocab,
        spec.q_dim(),
        spec.kv_dim(),
        spec.intermediate,
        spec.head_dim,
    );
    // HF stores the zero-centred norms' w; GGUF stores 1 + w.
    let plus_one = !gguf;
    let mut layers = Vec::with_capacity(spec.n_layers);
    for i in 0..spec.n_layers {
        let n = |hf: &str, gg: &str| names.layer(i, hf, gg);
        let mixer = match spec.layers[i].mixer {
            Mixer::Attention => {
                // Per head: head_dim queries, then head_dim gate values.
                let both = l.linear(&n("self_attn.q_proj", "attn_q"), 2 * q, h, Bias::No)?;
                let rows = |part: usize| -> Vec<usize> {
                    (0..spec.n_heads)
                        .flat_map(|head| (0..hd).map(move |j| head * 2 * hd + part * hd + j))
                        .collect()
                };
                let split = |part| -> Result<Linear> {
                    Ok(Linear {
                        weight: both.weight.gather_rows(&rows(part))?,
                        bias: None,
                    })
                };
                MixerWeights::Attention {
                    q: split(0)?,
                    gate: Some(split(1)?),
                    k: Some(l.linear(&n("self_attn.k_proj", "attn_k"), kv, h, Bias::No)?),
                    v: Some(l.linear(&n("self_attn.v_proj", "attn_v"), kv, h, Bias::No)?),
                    o: l.linear(&n("self_attn.o_proj", "attn_output"), h, q, Bias::No)?,
                    sinks: None,
                }
            }
            Mixer::DeltaNet => MixerWeights::DeltaNet(delta_weights(&l, &n, &d, gguf)?),
        };
        let attn = spec.layers[i].mixer == Mixer::Attention;
        let qk =
            |hf: &str, gg: &str| -> Result<Option<_>> { l.norm_if(attn, &n(hf, gg), hd, plus_one) };
        layers.push(LayerWeights {
            extras: Default::default(),
            attn_norm: Some(l.norm(&n("input_layernorm", "attn_norm"), h, plus_one)?),
            mixer,
            q_norm: qk("self_attn.q_norm", "attn_q_norm")?,
            k_norm: qk("self_attn.k_norm", "attn_k_norm")?,
            post_attn_norm: None,
            mlp_norm: Some(l.norm(
                &n("post_attention_layernorm", "post_attention_norm"),
                h,
                plus_one,
            )?),
            mlp: match spec.layers[i].mlp {
                MlpKind::Experts => Mlp::Experts(super::experts::load(&l, &names, i)?),
                MlpKind::Dense => Mlp::dense(
                    Some(l.linear(&n("mlp.gate_proj", "ffn_gate"), f, h, Bias::No)?),
                    l.linear(&n("mlp.up_proj", "ffn_up"), f, h, Bias::No)?,
                    l.linear(&n("mlp.down_proj", "ffn_down"), h, f, Bias::No)?,
                ),
            },
            post_mlp_norm: None,
        });
    }
    if gguf {
        // The multi-token-prediction layers after the last block: looked at, not run.
        for name in src.names() {
            let layer = name
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').next())
                .and_then(|i| i.parse::<usize>().ok());
            if layer.is_some_and(|i| i >= spec.n_layers) {
                let _ = src.info(&name);
            }
        }
    }
    let top = if nested {
        [
            "model.language_model.embed_tokens.weight",
            "model.language_model.norm",
            "lm_head.weight",
        ]
    } else {
        ["model.embed_tokens.weight", "model.norm", "lm_head.weight"]
    };
    let [embed, final_norm, head] = names.top(top);
    Ok(ModelWeights {
        per_layer_embedding: None,
        token_embedding: get(src, embed, &[v, h])?,
        position_embedding: None,
        token_type_embedding: None,
        embedding_norm: None,
        layers,
        final_norm: Some(l.norm(final_norm, h, plus_one)?),
        lm_head: l.lm_head(head)?,
        lm_head_bias: None,
    })
}

/// One Gated DeltaNet layer's weights, A as -exp(A_log) and the conv kernel `[channels, taps]`.
fn delta_weights(
    l: &Loader<'_>,
    n: &dyn Fn(&str, &str) -> String,
    d: &DeltaNetSpec,
    gguf: bool,
) -> Result<DeltaNet> {
    let (h, nv, c, k) = (l.spec.hidden, d.v_heads, d.conv_dim(), d.kernel);
    let lin = |hf: &str, gg: &str, out: usize, inp: usize| {
        l.linear(&n(&format!("linear_attn.{hf}"), gg), out, inp, Bias::No)
    };
    let (conv, a_neg, dt_bias) = if gguf {
        (
            get(l.src, &n("", "ssm_conv1d.weight"), &[c, k])?,
            get(l.src, &n("", "ssm_a"), &[nv])?,
            get(l.src, &n("", "ssm_dt.bias"), &[nv])?,
        )
    } else {
        // `[channels, 1, kernel]`: its rows are the channels' taps.
        let conv = get_stacked(l.src, &n("linear_attn.conv1d.weight", ""), c, 1, k)?;
        let taps: Vec<f32> = conv.iter().flat_map(|w| w.to_f32()).collect();
        (
            crate::weights::Weight::from_f32(
                n("linear_attn.conv1d.weight", ""),
                vec![c, k],
                &taps,
            )?,
            get(l.src, &n("linear_attn.A_log", ""), &[nv])?.map_f32(|x| -x.exp())?,
            get(l.src, &n("linear_attn.dt_bias", ""), &[nv])?,
        )
    };
    Ok(DeltaNet {
        qkv: lin("in_proj_qkv", "attn_qkv", c, h)?,
        z: lin("in_proj_z", "attn_gate", d.value_dim(), h)?,
        b: lin("in_proj_b", "ssm_beta", nv, h)?,
        a: lin("in_proj_a", "ssm_alpha", nv, h)?,
        conv,
        a_neg,
        dt_bias,
        norm: l.norm(&n("linear_attn.norm", "ssm_norm"), d.v_dim, false)?,
        out: lin("out_proj", "ssm_out", h, d.value_dim())?,
    })
}
