//! Gemma 2 and Gemma 3 (text): embeddings scaled by sqrt(hidden), RMSNorm with a `1 + w` scale,
//! sandwich norms around both sub-layers, a GELU-tanh gated MLP, sliding-window layers in a fixed
//! pattern, query_pre_attn_scalar; Gemma 2 adds attention and final logit soft-capping, Gemma 3
//! adds q/k norms and a separate RoPE base for its local layers (Gemma Team 2024,
//! <https://arxiv.org/abs/2408.00118>, <https://arxiv.org/abs/2503.19786>; reference
//! implementations: transformers' `modeling_gemma2.py`, `modeling_gemma3.py`).
//!
//! HF checkpoints store each norm's offset w; GGUF files store fl(1 + w) already.

use serde::Deserialize;

use super::rope::plain_inv_freq;
use super::{
    Activation, ArchSpec, Architecture, Bias, BlockKind, Format, GgufConfig, HfConfig, LayerKind,
    Loader, Names, Rope, RopePairing, RopeScaling,
};
use crate::error::Result;
use crate::gguf::Value;
use crate::weights::{get, LayerWeights, ModelWeights, TensorSource};

pub static GEMMA2: Architecture = Architecture {
    name: "gemma2",
    covers: "Gemma 2",
    hf_model_types: &["gemma2"],
    gguf_names: &["gemma2"],
    spec_from_hf: |c| spec_from_hf(c, Version::Two),
    spec_from_gguf: |c| spec_from_gguf(c, Version::Two),
    load_weights,
    unused_tensor: |n| n.ends_with("rotary_emb.inv_freq"),
    harmless_gguf_keys: &[],
};

pub static GEMMA3: Architecture = Architecture {
    name: "gemma3",
    covers: "Gemma 3 text models",
    hf_model_types: &["gemma3_text"],
    gguf_names: &["gemma3"],
    spec_from_hf: |c| spec_from_hf(c, Version::Three),
    spec_from_gguf: |c| spec_from_gguf(c, Version::Three),
    load_weights,
    unused_tensor: |n| {
        n.ends_with("rotary_emb.inv_freq") || n.ends_with("rotary_emb_local.inv_freq")
    },
    harmless_gguf_keys: &[],
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    Two,
    Three,
}

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
    #[serde(default = "default_true")]
    tie_word_embeddings: bool,
    hidden_activation: Option<String>,
    hidden_act: Option<String>,
    query_pre_attn_scalar: Option<f64>,
    attn_logit_softcapping: Option<f64>,
    final_logit_softcapping: Option<f64>,
    sliding_window: Option<usize>,
    sliding_window_pattern: Option<usize>,
    #[serde(rename = "_sliding_window_pattern")]
    sliding_window_pattern_private: Option<usize>,
    rope_local_base_freq: Option<f64>,
    #[serde(default)]
    attention_bias: bool,
}

fn default_rms_eps() -> f64 {
    1e-6
}

fn default_context() -> usize {
    8192
}

fn default_true() -> bool {
    true
}

fn positive(x: f64, what: &str, cfg: &HfConfig<'_>) -> Result<f32> {
    if x.is_finite() && x > 0.0 {
        Ok(x as f32)
    } else {
        Err(cfg.err(format!("{what} {x} is not a positive number")))
    }
}

fn spec_from_hf(cfg: &HfConfig<'_>, version: Version) -> Result<ArchSpec> {
    let c: Config = cfg.parse()?;
    let act = c
        .hidden_activation
        .as_deref()
        .or(c.hidden_act.as_deref())
        .unwrap_or("gelu_pytorch_tanh");
    if !matches!(act, "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast") {
        return Err(cfg.err(format!(
            "Gemma activation {act:?} is not supported (gelu_pytorch_tanh)"
        )));
    }
    if c.attention_bias {
        return Err(cfg.err("Gemma with attention_bias is not supported"));
    }
    let family = match version {
        Version::Two => "gemma2",
        Version::Three => "gemma3",
    };
    let mut spec = ArchSpec::base(family, cfg.named.clone());
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
    spec.activation = Activation::GeGluTanh;
    spec.block = BlockKind::Sandwich;
    spec.qk_norm = version == Version::Three;
    spec.embed_scale = Some((c.hidden_size as f64).sqrt() as f32);
    spec.check_sizes(cfg.path)?;
    let scalar = c.query_pre_attn_scalar.unwrap_or(spec.head_dim as f64);
    spec.attn_scale = positive(scalar, "query_pre_attn_scalar", cfg)?.powf(-0.5);
    if version == Version::Two {
        spec.attn_softcap = c
            .attn_logit_softcapping
            .map(|x| positive(x, "attn_logit_softcapping", cfg))
            .transpose()?;
        spec.final_softcap = c
            .final_logit_softcapping
            .map(|x| positive(x, "final_logit_softcapping", cfg))
            .transpose()?;
    } else if c.attn_logit_softcapping.is_some() || c.final_logit_softcapping.is_some() {
        return Err(cfg.err("Gemma 3 with logit soft-capping is not supported"));
    }
    // Layer pattern: layer_types (transformers 5), else Gemma 2 alternates starting with a sliding
    // layer and Gemma 3 has one global layer in every `sliding_window_pattern`.
    spec.layers = match cfg.layer_types(spec.n_layers, c.sliding_window)? {
        Some(kinds) => kinds,
        None => {
            let window = c
                .sliding_window
                .ok_or_else(|| cfg.err("Gemma needs sliding_window"))?;
            let pattern = match version {
                Version::Two => 2,
                Version::Three => c
                    .sliding_window_pattern
                    .or(c.sliding_window_pattern_private)
                    .unwrap_or(6),
            };
            if pattern == 0 {
                return Err(cfg.err("sliding_window_pattern is 0"));
            }
            (0..spec.n_layers)
                .map(|i| {
                    let sliding = (i + 1) % pattern != 0;
                    LayerKind {
                        window: sliding.then_some(window),
                        local_rope: sliding,
                    }
                })
                .collect()
        }
    };
    if version == Version::Two {
        spec.layers.iter_mut().for_each(|k| k.local_rope = false);
    }
    // RoPE: Gemma 3 has a base (and possibly a scaling) per layer type.
    let per_type = cfg
        .get("rope_parameters")
        .filter(|p| p.get("full_attention").is_some());
    let (global_theta, global_scaling, local_theta) = match per_type {
        Some(p) => {
            let full = p.get("full_attention");
            let theta = full
                .and_then(|f| f.get("rope_theta"))
                .and_then(|v| v.as_f64())
                .unwrap_or(1_000_000.0);
            let local = p
                .get("sliding_attention")
                .and_then(|s| s.get("rope_theta"))
                .and_then(|v| v.as_f64());
            if let Some(kind) = p
                .get("sliding_attention")
                .and_then(|s| s.get("rope_type"))
                .and_then(|v| v.as_str())
                .filter(|k| *k != "default")
            {
                return Err(cfg.err(format!(
                    "RoPE scaling {kind:?} on sliding layers is not supported"
                )));
            }
            (theta, super::rope::scaling_from_hf(full, cfg)?, local)
        }
        None => (
            cfg.rope_theta(10_000.0),
            cfg.rope_scaling()?,
            c.rope_local_base_freq,
        ),
    };
    let mut rope = Rope::from_hf(
        global_theta,
        spec.head_dim,
        RopePairing::Half,
        &global_scaling,
        c.max_position_embeddings,
        cfg,
    )?;
    if version == Version::Three {
        let local = local_theta.unwrap_or(10_000.0);
        rope.theta_local = Some(local);
        rope.inv_freq_local = Some(plain_inv_freq(local, spec.head_dim));
    } else if !matches!(global_scaling, RopeScaling::None) {
        return Err(cfg.err("RoPE scaling in Gemma 2 is not supported"));
    }
    spec.rope = Some(rope);
    Ok(spec)
}

fn spec_from_gguf(cfg: &GgufConfig<'_>, version: Version) -> Result<ArchSpec> {
    let family = match version {
        Version::Two => "gemma2",
        Version::Three => "gemma3",
    };
    let mut spec = ArchSpec::base(family, cfg.arch.to_string());
    cfg.common(&mut spec)?;
    spec.activation = Activation::GeGluTanh;
    spec.block = BlockKind::Sandwich;
    spec.qk_norm = version == Version::Three;
    spec.tied_embeddings = cfg.src.info("output.weight").is_none();
    spec.embed_scale = Some((spec.hidden as f64).sqrt() as f32);
    // llama.cpp: 1/sqrt(head_dim), except the 27B models, which use 1/sqrt(hidden / heads).
    let big = match version {
        Version::Two => spec.n_layers == 46,
        Version::Three => spec.n_layers == 62,
    };
    let scalar = if big {
        (spec.hidden / spec.n_heads.max(1)) as f32
    } else {
        spec.head_dim as f32
    };
    spec.attn_scale = 1.0 / scalar.sqrt();
    let cap = |name: &str| -> Result<Option<f32>> {
        match cfg.f64_opt(name)? {
            None => Ok(None),
            Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x as f32)),
            Some(x) => Err(cfg.err(format!("{} {x} is not a positive number", cfg.key(name)))),
        }
    };
    spec.attn_softcap = cap("attn_logit_softcapping")?;
    spec.final_softcap = cap("final_logit_softcapping")?;
    if version == Version::Three && spec.attn_softcap.is_some() {
        return Err(cfg.err("Gemma 3 with attention soft-capping is not supported"));
    }
    let window = cfg.usize_opt("attention.sliding_window")?;
    let window = match version {
        Version::Two => Some(window.unwrap_or(4096)),
        Version::Three => window.filter(|&w| w > 0),
    };
    let pattern_key = cfg.key("attention.sliding_window_pattern");
    let sliding: Vec<bool> = match cfg.meta.get(&pattern_key) {
        Some(Value::Array(flags)) => {
            if flags.len() != spec.n_layers {
                return Err(cfg.err(format!(
                    "{pattern_key} has {} entries for {} layers",
                    flags.len(),
                    spec.n_layers
                )));
            }
            flags
                .iter()
                .map(|f| match f {
                    Value::Bool(b) => Ok(*b),
                    other => Err(cfg.err(format!("{pattern_key} holds {}", other.type_name()))),
                })
                .collect::<Result<_>>()?
        }
        _ => {
            let n = match cfg.usize_opt("attention.sliding_window_pattern")? {
                Some(n) => n,
                None if version == Version::Two => 2,
                None => 6,
            };
            (0..spec.n_layers)
                .map(|il| n == 0 || il % n < n - 1)
                .collect()
        }
    };
    spec.layers = sliding
        .iter()
        .map(|&s| LayerKind {
            window: if s { window } else { None },
            local_rope: s && version == Version::Three && window.is_some(),
        })
        .collect();
    let mut rope = cfg.rope(&spec, 10_000.0, RopePairing::Half)?;
    let local = cfg.f64_opt("rope.freq_base_swa")?;
    match version {
        Version::Three => {
            let local = local.unwrap_or(10_000.0);
            rope.theta_local = Some(local);
            rope.inv_freq_local = Some(plain_inv_freq(local, rope.dims));
        }
        Version::Two => {
            if let Some(l) = local.filter(|&l| l != rope.theta) {
                rope.theta_local = Some(l);
                rope.inv_freq_local = Some(plain_inv_freq(l, rope.dims));
                spec.layers
                    .iter_mut()
                    .for_each(|k| k.local_rope = k.window.is_some());
            }
        }
    }
    spec.rope = Some(rope);
    Ok(spec)
}

fn load_weights(src: &dyn TensorSource, spec: &ArchSpec, format: Format) -> Result<ModelWeights> {
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
    // HF stores w and the model scales by 1 + w; GGUF stores 1 + w.
    let plus_one = !gguf;
    let mut layers = Vec::with_capacity(spec.n_layers);
    for i in 0..spec.n_layers {
        let n = |hf: &str, gg: &str| names.layer(i, hf, gg);
        let qk = |hf: &str, gg: &str| -> Result<Option<crate::weights::NormWeights>> {
            match spec.qk_norm {
                true => l.norm(&n(hf, gg), hd, plus_one).map(Some),
                false => Ok(None),
            }
        };
        layers.push(LayerWeights {
            attn_norm: l.norm(&n("input_layernorm", "attn_norm"), h, plus_one)?,
            q: l.linear(&n("self_attn.q_proj", "attn_q"), q, h, Bias::No)?,
            k: l.linear(&n("self_attn.k_proj", "attn_k"), kv, h, Bias::No)?,
            v: l.linear(&n("self_attn.v_proj", "attn_v"), kv, h, Bias::No)?,
            o: l.linear(&n("self_attn.o_proj", "attn_output"), h, q, Bias::No)?,
            q_norm: qk("self_attn.q_norm", "attn_q_norm")?,
            k_norm: qk("self_attn.k_norm", "attn_k_norm")?,
            post_attn_norm: Some(l.norm(
                &n("post_attention_layernorm", "post_attention_norm"),
                h,
                plus_one,
            )?),
            mlp_norm: l.norm(&n("pre_feedforward_layernorm", "ffn_norm"), h, plus_one)?,
            gate: Some(l.linear(&n("mlp.gate_proj", "ffn_gate"), f, h, Bias::No)?),
            up: l.linear(&n("mlp.up_proj", "ffn_up"), f, h, Bias::No)?,
            down: l.linear(&n("mlp.down_proj", "ffn_down"), h, f, Bias::No)?,
            post_mlp_norm: Some(l.norm(
                &n("post_feedforward_layernorm", "post_ffw_norm"),
                h,
                plus_one,
            )?),
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
        final_norm: Some(l.norm(final_norm, h, plus_one)?),
        lm_head: l.lm_head(head)?,
        lm_head_bias: None,
    })
}
