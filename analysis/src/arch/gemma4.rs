//! Gemma 4 text models (dense): Gemma 3's sandwich norms, q/k norms, local and global layers and
//! GELU-tanh gated MLPs, plus
//! - global layers with their own head size and key/value heads (`global_head_dim`,
//!   `num_global_key_value_heads`), whose keys double as values (`attention_k_eq_v`);
//! - values RMS-normalized per head without a weight, attention scores not scaled (1.0);
//! - proportional RoPE on the global layers: a fraction of the pairs rotate, over the whole head;
//! - KV sharing: the last `num_kv_shared_layers` layers reuse the keys and values of the last
//!   earlier layer of their kind, and their MLPs may be twice as wide (`use_double_wide_mlp`);
//! - per-layer input embeddings (PLE), each layer's output scaled by its `layer_scalar`;
//! - plain RMSNorm weights (x * w, not Gemma 3's x * (1 + w)), a final logit soft-cap;
//! - in the mixture-of-experts models (`enable_moe_block`, 26B-A4B), experts beside every layer's
//!   dense MLP: a router on the residual stream (its weightless norm times `scale` and
//!   hidden^-0.5), softmax, top-k renormalized, times `per_expert_scale`; the experts on their own
//!   norm (`pre_feedforward_layernorm_2`), both outputs normed (`post_feedforward_layernorm_1/2`)
//!   and summed before the layer's post-MLP norm ([`crate::weights::BesideDense`]).
//!
//! Reference implementation: transformers' `modeling_gemma4.py` (`Gemma4TextDecoderLayer`,
//! `Gemma4TextRouter`); llama.cpp's `convert_hf_to_gguf.py` (`Gemma4Model`) for the GGUF layout.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::rope::plain_inv_freq;
use super::{
    Activation, ArchSpec, Architecture, Bias, Block, Format, GgufConfig, HfConfig, HfDefaults,
    KvSource, LayerHeads, LayerKind, LayerRope, Loader, Names, QkNorm, Rope, RopePairing,
};
use crate::error::{PrismError, Result};
use crate::gguf::Value;
use crate::weights::{
    get, get_opt, get_stacked, BesideDense, Expert, Experts, LayerExtras, LayerWeights, Linear,
    MixerWeights, Mlp, ModelWeights, NormWeights, PerLayerInput, TensorSource, Weight,
};

pub static ARCH: Architecture = Architecture {
    name: "gemma4",
    covers: "Gemma 4 text models, dense and mixture of experts",
    hf_model_types: &["gemma4_text", "gemma4"],
    gguf_names: &["gemma4"],
    spec_from_hf,
    spec_from_gguf,
    load_weights,
    // The image-text checkpoints' vision and audio towers are not run.
    unused_tensor: |n| {
        n.ends_with("inv_freq")
            || [
                "model.vision_tower.",
                "model.audio_tower.",
                "model.embed_vision.",
                "model.embed_audio.",
            ]
            .iter()
            .any(|p| n.starts_with(p))
    },
    harmless_gguf_keys: &[],
};

/// Gemma 4's fields beyond [`super::HfCommon`].
#[derive(Debug, Deserialize)]
struct Config {
    hidden_activation: Option<String>,
    final_logit_softcapping: Option<f64>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    attention_k_eq_v: bool,
    #[serde(default)]
    num_kv_shared_layers: usize,
    #[serde(default)]
    use_double_wide_mlp: bool,
    hidden_size_per_layer_input: Option<usize>,
    vocab_size_per_layer_input: Option<usize>,
    #[serde(default)]
    enable_moe_block: bool,
    num_experts: Option<usize>,
    top_k_experts: Option<usize>,
    moe_intermediate_size: Option<usize>,
    global_head_dim: Option<usize>,
    num_global_key_value_heads: Option<usize>,
    per_layer_config: Option<BTreeMap<String, LayerOverride>>,
    use_bidirectional_attention: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LayerOverride {
    head_dim: Option<usize>,
    num_key_value_heads: Option<usize>,
}

/// The layers sharing keys and values: from `n - shared` on, each reads the last earlier layer
/// of its kind (sliding or not), as transformers' `kv_sharing_modes` and llama.cpp pick them.
fn share_kv(layers: &mut [LayerKind], shared: usize) -> std::result::Result<(), String> {
    let n = layers.len();
    if shared == 0 {
        return Ok(());
    }
    if shared >= n {
        return Err(format!(
            "{shared} KV-shared layers of {n}: no layer computes the keys they share"
        ));
    }
    let first = n - shared;
    for l in first..n {
        let sliding = layers[l].window.is_some();
        let src = (0..first)
            .rev()
            .find(|&j| layers[j].window.is_some() == sliding)
            .ok_or_else(|| {
                format!(
                    "layer {l} shares keys and values, but no layer below {first} is of its kind"
                )
            })?;
        layers[l].kv = KvSource::Shared(src);
    }
    Ok(())
}

/// Gemma 4's mixture of experts: every layer's experts beside its dense MLP, top-k renormalized.
fn experts_beside(
    layers: &mut [LayerKind],
    count: usize,
    top_k: usize,
    width: usize,
) -> super::ExpertSpec {
    for k in layers.iter_mut() {
        k.mlp = super::MlpKind::Experts;
    }
    super::ExpertSpec {
        count,
        top_k,
        width,
        renormalize: true,
        shared: None,
        beside_dense: true,
    }
}

/// Transformers' proportional RoPE (`_compute_proportional_rope_parameters`): the first
/// `int(factor * head_dim) / 2` pairs rotate at base^(-2i / head_dim), the rest not at all.
fn proportional(theta: f64, head_dim: usize, factor: f64) -> Vec<f32> {
    let angles = ((factor * head_dim as f64) / 2.0).floor() as usize;
    let mut f = plain_inv_freq(theta, head_dim);
    f.iter_mut().skip(angles).for_each(|x| *x = 0.0);
    f
}

fn spec_from_hf(cfg: &HfConfig<'_>) -> Result<ArchSpec> {
    // The image-text checkpoints nest the language model's config under `text_config`.
    let value = match cfg.get("text_config") {
        Some(v) if cfg.model_type == "gemma4" => v.clone(),
        _ => cfg.value.clone(),
    };
    let text = HfConfig {
        value: &value,
        path: cfg.path,
        model_type: cfg.model_type,
        named: cfg.named.clone(),
    };
    let cfg = &text;
    let c: Config = cfg.parse()?;
    let act = c
        .hidden_activation
        .as_deref()
        .unwrap_or("gelu_pytorch_tanh");
    if !matches!(act, "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast") {
        return Err(cfg.err(format!(
            "Gemma 4 hidden_activation {act:?} is not supported (gelu_pytorch_tanh)"
        )));
    }
    if c.attention_bias {
        return Err(cfg.err("Gemma 4 with attention_bias is not supported"));
    }
    if c.use_bidirectional_attention.as_deref() == Some("all") {
        return Err(cfg.err(
            "Gemma 4 with use_bidirectional_attention \"all\" is an encoder; Prism runs the causal models",
        ));
    }
    let mut spec = ArchSpec::base("gemma4", cfg.named.clone());
    let common = cfg.common(
        &mut spec,
        HfDefaults {
            rms_norm_eps: 1e-6,
            context: 131_072,
            tied: true,
        },
    )?;
    spec.activation = Activation::GeGluTanh;
    spec.block = Block::SANDWICH;
    spec.qk_norm = QkNorm::PerHead;
    spec.v_norm = true;
    spec.attn_scale = 1.0;
    spec.embed_scale = Some((spec.hidden as f64).sqrt() as f32);
    spec.final_softcap = match c.final_logit_softcapping {
        None => None,
        Some(x) if x.is_finite() && x > 0.0 => Some(x as f32),
        Some(x) => {
            return Err(cfg.err(format!(
                "final_logit_softcapping {x} is not a positive number"
            )))
        }
    };
    let window = common.sliding_window;
    let mut layers = match cfg.layer_types(spec.n_layers, window)? {
        Some(kinds) => kinds,
        None => {
            // transformers' default: five sliding layers to one global.
            let window = window.ok_or_else(|| cfg.err("Gemma 4 needs sliding_window"))?;
            (0..spec.n_layers)
                .map(|i| {
                    if (i + 1) % 6 != 0 {
                        LayerKind {
                            window: Some(window),
                            rope: LayerRope::Local,
                            ..LayerKind::FULL
                        }
                    } else {
                        LayerKind::FULL
                    }
                })
                .collect()
        }
    };
    // transformers forces the last layer to full attention.
    if let Some(last) = layers.last_mut() {
        *last = LayerKind::FULL;
    }
    // Per-layer head sizes: per_layer_config, else the global layers' global_head_dim (512 by
    // transformers' default) and, with attention_k_eq_v, num_global_key_value_heads.
    let overrides: BTreeMap<usize, LayerOverride> = match c.per_layer_config {
        Some(map) => map
            .into_iter()
            .map(|(k, v)| {
                k.parse::<usize>()
                    .ok()
                    .filter(|&i| i < spec.n_layers)
                    .map(|i| (i, v))
                    .ok_or_else(|| {
                        cfg.err(format!("per_layer_config key {k:?} is not a layer index"))
                    })
            })
            .collect::<Result<_>>()?,
        None => layers
            .iter()
            .enumerate()
            .filter(|(_, k)| k.window.is_none())
            .map(|(i, _)| {
                let kv = c.num_global_key_value_heads.filter(|_| c.attention_k_eq_v);
                (
                    i,
                    LayerOverride {
                        head_dim: Some(c.global_head_dim.unwrap_or(512)),
                        num_key_value_heads: kv,
                    },
                )
            })
            .collect(),
    };
    for (&i, o) in &overrides {
        let heads = LayerHeads {
            head_dim: o.head_dim.unwrap_or(spec.head_dim),
            kv_heads: o.num_key_value_heads.unwrap_or(spec.n_kv_heads),
        };
        if heads.head_dim != spec.head_dim || heads.kv_heads != spec.n_kv_heads {
            layers[i].heads = Some(heads);
        }
    }
    if c.attention_k_eq_v {
        for k in layers.iter_mut().filter(|k| k.window.is_none()) {
            k.kv = KvSource::KeysAsValues;
        }
    }
    share_kv(&mut layers, c.num_kv_shared_layers).map_err(|e| cfg.err(e))?;
    if c.use_double_wide_mlp {
        for k in layers
            .iter_mut()
            .filter(|k| matches!(k.kv, KvSource::Shared(_)))
        {
            k.mlp_width = Some(2 * spec.intermediate);
        }
    }
    if c.enable_moe_block {
        let need = |v: Option<usize>, key: &str| {
            v.filter(|&v| v > 0)
                .ok_or_else(|| cfg.err(format!("enable_moe_block without {key}")))
        };
        spec.experts = Some(experts_beside(
            &mut layers,
            need(c.num_experts, "num_experts")?,
            need(c.top_k_experts, "top_k_experts")?,
            need(c.moe_intermediate_size, "moe_intermediate_size")?,
        ));
    }
    spec.layers = layers;
    spec.per_layer_input = c.hidden_size_per_layer_input.filter(|&p| p > 0);
    if let (Some(_), Some(v)) = (spec.per_layer_input, c.vocab_size_per_layer_input) {
        if v != spec.vocab {
            return Err(cfg.err(format!(
                "vocab_size_per_layer_input {v} differs from vocab_size {}; Prism needs one table row per token",
                spec.vocab
            )));
        }
    }
    spec.rope = Some(hf_rope(cfg, &spec)?);
    Ok(spec)
}

/// RoPE per layer type from `rope_parameters`: the sliding layers' plain RoPE (local), the global
/// layers' proportional or plain RoPE over their own head size.
fn hf_rope(cfg: &HfConfig<'_>, spec: &ArchSpec) -> Result<Rope> {
    let params = cfg.get("rope_parameters");
    let of = |kind: &str| params.and_then(|p| p.get(kind));
    let num = |p: Option<&serde_json::Value>, key: &str| {
        p.and_then(|p| p.get(key)).and_then(|v| v.as_f64())
    };
    let kind = |p: Option<&serde_json::Value>, default: &'static str| -> String {
        p.and_then(|p| p.get("rope_type"))
            .and_then(|v| v.as_str())
            .unwrap_or(default)
            .to_string()
    };
    let (sliding, full) = (of("sliding_attention"), of("full_attention"));
    let local_theta = num(sliding, "rope_theta").unwrap_or(10_000.0);
    if kind(sliding, "default") != "default" {
        return Err(cfg.err(format!(
            "RoPE type {:?} on Gemma 4's sliding layers is not supported (default)",
            kind(sliding, "default")
        )));
    }
    let global = (0..spec.n_layers)
        .find(|&l| spec.layers[l].window.is_none())
        .unwrap_or(0);
    let hd = spec.head_dim_at(global);
    let theta = num(full, "rope_theta").unwrap_or(1_000_000.0);
    let (inv_freq, scaling) = match kind(full, "proportional").as_str() {
        "proportional" => {
            let factor = num(full, "partial_rotary_factor").unwrap_or(1.0);
            if !(factor > 0.0 && factor <= 1.0) {
                return Err(cfg.err(format!(
                    "partial_rotary_factor {factor} of the global layers is out of range (0, 1]"
                )));
            }
            let f = proportional(theta, hd, factor);
            let rotating = f.iter().filter(|&&x| x > 0.0).count();
            (f, format!("proportional on global layers ({rotating} of {} pairs rotate)", hd / 2))
        }
        "default" => (plain_inv_freq(theta, hd), "none".to_string()),
        other => {
            return Err(cfg.err(format!(
                "RoPE type {other:?} on Gemma 4's global layers is not supported (proportional, default)"
            )))
        }
    };
    let local_dims = spec.head_dim;
    Ok(Rope {
        dims: hd,
        pairing: RopePairing::Half,
        theta,
        inv_freq,
        theta_local: Some(local_theta),
        inv_freq_local: Some(plain_inv_freq(local_theta, local_dims)),
        attention_factor: 1.0,
        long: None,
        scaling,
    })
}

/// A per-layer GGUF value: an array of one entry per layer, or one number for every layer.
fn per_layer(cfg: &GgufConfig<'_>, name: &str, n: usize) -> Result<Option<Vec<usize>>> {
    let key = cfg.key(name);
    match cfg.meta.get(&key) {
        None => Ok(None),
        Some(Value::Array(items)) => {
            if items.len() != n {
                return Err(cfg.err(format!("{key} has {} entries for {n} layers", items.len())));
            }
            items
                .iter()
                .map(|v| {
                    v.as_i64()
                        .and_then(|x| usize::try_from(x).ok())
                        .ok_or_else(|| cfg.err(format!("{key} holds {}", v.type_name())))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some)
        }
        Some(_) => Ok(cfg.usize_opt(name)?.map(|v| vec![v; n])),
    }
}

fn spec_from_gguf(cfg: &GgufConfig<'_>) -> Result<ArchSpec> {
    let mut spec = ArchSpec::base("gemma4", cfg.arch.to_string());
    let n = cfg.usize("block_count")?;
    // Checked before the per-layer arrays are read or made from it.
    if n == 0 || n > 1024 {
        return Err(cfg.err(format!(
            "{} is {n}, expected 1..=1024",
            cfg.key("block_count")
        )));
    }
    spec.n_layers = n;
    spec.hidden = cfg.usize("embedding_length")?;
    spec.context_length = cfg.usize("context_length")?;
    spec.n_heads = cfg.usize("attention.head_count")?;
    let kv = per_layer(cfg, "attention.head_count_kv", n)?.unwrap_or_else(|| vec![spec.n_heads; n]);
    let ff = per_layer(cfg, "feed_forward_length", n)?
        .ok_or_else(|| cfg.err(format!("no {}", cfg.key("feed_forward_length"))))?;
    let sliding_key = cfg.key("attention.sliding_window_pattern");
    let sliding: Vec<bool> = match cfg.meta.get(&sliding_key) {
        Some(Value::Array(flags)) if flags.len() == n => flags
            .iter()
            .map(|f| match f {
                Value::Bool(b) => Ok(*b),
                other => Err(cfg.err(format!("{sliding_key} holds {}", other.type_name()))),
            })
            .collect::<Result<_>>()?,
        Some(v) => {
            return Err(cfg.err(format!(
                "{sliding_key} must list one flag per layer ({n}), not {}",
                v.type_name()
            )))
        }
        None => return Err(cfg.err(format!("no {sliding_key}"))),
    };
    let length = |k: &str, v: &str| -> Result<usize> {
        let key = cfg.usize(k)?;
        match cfg.usize_opt(v)? {
            Some(val) if val != key => Err(cfg.err(format!(
                "{} {val} differs from {} {key}; Prism needs them equal",
                cfg.key(v),
                cfg.key(k)
            ))),
            _ => Ok(key),
        }
    };
    let hd_full = length("attention.key_length", "attention.value_length")?;
    let hd_swa = length("attention.key_length_swa", "attention.value_length_swa")?;
    spec.head_dim = if sliding.iter().any(|&s| s) {
        hd_swa
    } else {
        hd_full
    };
    let first = sliding
        .iter()
        .position(|&s| s == (spec.head_dim == hd_swa))
        .unwrap_or(0);
    spec.n_kv_heads = kv[first];
    spec.intermediate = ff[0];
    spec.vocab = cfg
        .src
        .info("token_embd.weight")
        .and_then(|i| i.shape.first().copied())
        .unwrap_or(0);
    spec.check_sizes(cfg.meta.path())?;
    spec.norm_eps = cfg
        .f64_opt("attention.layer_norm_rms_epsilon")?
        .unwrap_or(1e-6);
    spec.activation = Activation::GeGluTanh;
    spec.block = Block::SANDWICH;
    spec.qk_norm = QkNorm::PerHead;
    spec.v_norm = true;
    spec.attn_scale = 1.0;
    spec.embed_scale = Some((spec.hidden as f64).sqrt() as f32);
    spec.tied_embeddings = cfg.src.info("output.weight").is_none();
    spec.final_softcap = match cfg.f64_opt("final_logit_softcapping")? {
        None => None,
        Some(x) if x.is_finite() && x > 0.0 => Some(x as f32),
        Some(x) => {
            return Err(cfg.err(format!(
                "{} {x} is not a positive number",
                cfg.key("final_logit_softcapping")
            )))
        }
    };
    let window = cfg.usize("attention.sliding_window")?;
    let shared = cfg.usize_opt("attention.shared_kv_layers")?.unwrap_or(0);
    let mut layers: Vec<LayerKind> = (0..n)
        .map(|l| {
            let (hd, local) = if sliding[l] {
                (hd_swa, true)
            } else {
                (hd_full, false)
            };
            LayerKind {
                window: local.then_some(window),
                rope: if local {
                    LayerRope::Local
                } else {
                    LayerRope::Global
                },
                heads: (hd != spec.head_dim || kv[l] != spec.n_kv_heads).then_some(LayerHeads {
                    head_dim: hd,
                    kv_heads: kv[l],
                }),
                mlp_width: (ff[l] != spec.intermediate).then_some(ff[l]),
                // llama.cpp: a layer without attn_v uses its keys as values.
                kv: if cfg.src.info(&format!("blk.{l}.attn_v.weight")).is_none() {
                    KvSource::KeysAsValues
                } else {
                    KvSource::Own
                },
                ..LayerKind::FULL
            }
        })
        .collect();
    share_kv(&mut layers, shared)
        .map_err(|e| cfg.err(format!("{}: {e}", cfg.key("attention.shared_kv_layers"))))?;
    if let Some(count) = cfg.usize_opt("expert_count")?.filter(|&e| e > 0) {
        let need = |key: &str| -> Result<usize> {
            cfg.usize_opt(key)?.filter(|&v| v > 0).ok_or_else(|| {
                cfg.err(format!(
                    "{} without {}",
                    cfg.key("expert_count"),
                    cfg.key(key)
                ))
            })
        };
        spec.experts = Some(experts_beside(
            &mut layers,
            count,
            need("expert_used_count")?,
            need("expert_feed_forward_length")?,
        ));
    }
    spec.layers = layers;
    spec.per_layer_input = cfg
        .usize_opt("embedding_length_per_layer_input")?
        .filter(|&p| p > 0);
    // The global layers' RoPE: rope.dimension_count over their heads, with llama.cpp's
    // rope_freqs factors (1 for a rotating pair, 1e30 for one that does not: proportional RoPE).
    let mut rope = cfg.rope(&spec, 1_000_000.0, RopePairing::Half)?;
    if rope.scaling.contains("rope_freqs") {
        for f in rope.inv_freq.iter_mut().filter(|f| **f < 1e-20) {
            *f = 0.0;
        }
        let rotating = rope.inv_freq.iter().filter(|&&x| x > 0.0).count();
        rope.scaling = format!(
            "proportional on global layers ({rotating} of {} pairs rotate; rope_freqs)",
            rope.inv_freq.len()
        );
    }
    let local_theta = cfg.f64_opt("rope.freq_base_swa")?.unwrap_or(10_000.0);
    let local_dims = cfg.usize_opt("rope.dimension_count_swa")?.unwrap_or(hd_swa);
    rope.theta_local = Some(local_theta);
    rope.inv_freq_local = Some(plain_inv_freq(local_theta, local_dims));
    spec.rope = Some(rope);
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
    let prefix = if nested {
        "model.language_model"
    } else {
        "model"
    };
    let names = Names {
        gguf,
        layers: if nested {
            "model.language_model.layers"
        } else {
            "model.layers"
        },
    };
    let top = |hf: &str, gg: &str| {
        if gguf {
            gg.to_string()
        } else {
            format!("{prefix}.{hf}")
        }
    };
    let (h, v, nh) = (spec.hidden, spec.vocab, spec.n_heads);
    let bad = |m: String| PrismError::format(src.path(), m);
    // The per-layer inputs: one token table and one projection for all layers, split per layer.
    let ple = match spec.per_layer_input {
        Some(p) => {
            let rows = spec.n_layers * p;
            let table = get(
                src,
                &top(
                    "embed_tokens_per_layer.weight",
                    "per_layer_token_embd.weight",
                ),
                &[v, rows],
            )?;
            if !p.is_multiple_of(table.dtype.block_values()) {
                return Err(bad(format!(
                    "a per-layer input width of {p} does not split the {} table into whole blocks",
                    table.dtype_name()
                )));
            }
            let model_proj = l.linear(
                &top("per_layer_model_projection", "per_layer_model_proj"),
                rows,
                h,
                Bias::No,
            )?;
            let proj_norm = l.norm(
                &top("per_layer_projection_norm", "per_layer_proj_norm"),
                p,
                false,
            )?;
            Some((p, table, model_proj, proj_norm))
        }
        None => None,
    };
    let mut layers = Vec::with_capacity(spec.n_layers);
    for i in 0..spec.n_layers {
        let kind = spec.layers[i];
        let n = |hf: &str, gg: &str| names.layer(i, hf, gg);
        let norm = |hf: &str, gg: &str, width: usize| l.norm(&n(hf, gg), width, false);
        let (hd, nkv) = (spec.head_dim_at(i), spec.kv_heads_at(i));
        let (q, kv, f) = (nh * hd, nkv * hd, spec.mlp_width_at(i));
        let own = !matches!(kind.kv, KvSource::Shared(_));
        let k = own
            .then(|| l.linear(&n("self_attn.k_proj", "attn_k"), kv, h, Bias::No))
            .transpose()?;
        let vp = (kind.kv == KvSource::Own)
            .then(|| l.linear(&n("self_attn.v_proj", "attn_v"), kv, h, Bias::No))
            .transpose()?;
        let ones = || -> Result<NormWeights> {
            Ok(NormWeights {
                weight: Weight::from_f32(
                    format!("layer {i} value norm (no weight)"),
                    vec![hd],
                    &vec![1.0; hd],
                )?,
                bias: None,
            })
        };
        let scale_name = if gguf {
            format!("blk.{i}.layer_output_scale.weight")
        } else {
            format!("{}.{i}.layer_scalar", names.layers)
        };
        let out_scale = match get_opt(src, &scale_name, &[1])? {
            Some(w) => {
                let s = w.to_f32()[0];
                if !s.is_finite() {
                    return Err(bad(format!("{scale_name} is {s}")));
                }
                Some(s)
            }
            None => None,
        };
        let per_layer = match &ple {
            Some((p, _, model_proj, proj_norm)) => Some(PerLayerInput {
                model_proj: l
                    .split(model_proj, &vec![*p; spec.n_layers])?
                    .swap_remove(i),
                proj_norm: proj_norm.clone(),
                gate: l.linear(&n("per_layer_input_gate", "inp_gate"), *p, h, Bias::No)?,
                proj: l.linear(&n("per_layer_projection", "proj"), h, *p, Bias::No)?,
                post_norm: norm("post_per_layer_input_norm", "post_norm", h)?,
            }),
            None => None,
        };
        layers.push(LayerWeights {
            attn_norm: Some(norm("input_layernorm", "attn_norm", h)?),
            mixer: MixerWeights::Attention {
                q: l.linear(&n("self_attn.q_proj", "attn_q"), q, h, Bias::No)?,
                gate: None,
                k,
                v: vp,
                o: l.linear(&n("self_attn.o_proj", "attn_output"), h, q, Bias::No)?,
                sinks: None,
            },
            q_norm: Some(norm("self_attn.q_norm", "attn_q_norm", hd)?),
            k_norm: own
                .then(|| norm("self_attn.k_norm", "attn_k_norm", hd))
                .transpose()?,
            post_attn_norm: Some(norm("post_attention_layernorm", "post_attention_norm", h)?),
            mlp_norm: Some(norm("pre_feedforward_layernorm", "ffn_norm", h)?),
            mlp: {
                let dense = Expert {
                    gate: l.linear(&n("mlp.gate_proj", "ffn_gate"), f, h, Bias::No)?,
                    up: l.linear(&n("mlp.up_proj", "ffn_up"), f, h, Bias::No)?,
                    down: l.linear(&n("mlp.down_proj", "ffn_down"), h, f, Bias::No)?,
                };
                match spec.experts {
                    Some(_) => Mlp::Experts(experts(&l, &names, i, dense)?),
                    None => Mlp::dense(Some(dense.gate), dense.up, dense.down),
                }
            },
            post_mlp_norm: Some(norm("post_feedforward_layernorm", "post_ffw_norm", h)?),
            extras: LayerExtras {
                v_norm: own.then(ones).transpose()?,
                per_layer,
                out_scale,
            },
        });
    }
    let final_norm = l.norm(&top("norm", "output_norm"), h, false)?;
    Ok(ModelWeights {
        token_embedding: get(
            src,
            &top("embed_tokens.weight", "token_embd.weight"),
            &[v, h],
        )?,
        position_embedding: None,
        token_type_embedding: None,
        per_layer_embedding: ple.map(|(_, t, _, _)| t),
        embedding_norm: None,
        layers,
        final_norm: Some(final_norm),
        lm_head: l.lm_head(if gguf {
            "output.weight"
        } else {
            "lm_head.weight"
        })?,
        lm_head_bias: None,
    })
}

/// Layer `i`'s router, experts and norms beside its `dense` MLP: HF `router.proj`, `router.scale`,
/// `router.per_expert_scale`, `experts.gate_up_proj` `[experts, 2 * width, hidden]` (gate rows
/// first) and `experts.down_proj`; GGUF `ffn_gate_inp` (`.weight`, `.scale`), `ffn_gate_up_exps`
/// (or `ffn_gate_exps` and `ffn_up_exps`), `ffn_down_exps` (`.weight`, `.scale`: the per-expert
/// scales), `pre_ffw_norm_2`, `post_ffw_norm_1`, `post_ffw_norm_2`.
fn experts(l: &Loader<'_>, names: &Names, i: usize, dense: Expert) -> Result<Experts> {
    let spec = l.spec;
    let x = spec
        .experts
        .ok_or_else(|| PrismError::format(l.src.path(), "no expert count"))?;
    let (h, w, count) = (spec.hidden, x.width, x.count);
    let n = |hf: &str, gg: &str| names.layer(i, hf, gg);
    let plain = |weight: Weight| Linear { weight, bias: None };
    let router = l.linear(&n("router.proj", "ffn_gate_inp"), count, h, Bias::No)?;
    let scale = get(l.src, &n("router.scale", "ffn_gate_inp.scale"), &[h])?;
    let expert_scale = get(
        l.src,
        &n("router.per_expert_scale", "ffn_down_exps.scale"),
        &[count],
    )?;
    let gate_up = n("experts.gate_up_proj", "ffn_gate_up_exps.weight");
    let down = n("experts.down_proj", "ffn_down_exps.weight");
    let down = get_stacked(l.src, &down, count, h, w)?;
    let experts: Vec<Expert> = if !names.gguf || l.src.info(&gate_up).is_some() {
        let gu = get_stacked(l.src, &gate_up, count, 2 * w, h)?;
        super::experts::split_gate_up(gu, down, w)?
    } else {
        let g = get_stacked(l.src, &n("", "ffn_gate_exps.weight"), count, w, h)?;
        let u = get_stacked(l.src, &n("", "ffn_up_exps.weight"), count, w, h)?;
        g.into_iter()
            .zip(u)
            .zip(down)
            .map(|((g, u), d)| Expert {
                gate: plain(g),
                up: plain(u),
                down: plain(d),
            })
            .collect()
    };
    // The router's norm has no weight: its scale and hidden^-0.5 become the weight.
    let root = (1.0 / (h as f64).sqrt()) as f32;
    let folded: Vec<f32> = scale.to_f32().iter().map(|s| s * root).collect();
    let router_norm = NormWeights {
        weight: Weight::from_f32(format!("{} x hidden^-0.5", scale.name), vec![h], &folded)?,
        bias: None,
    };
    let norm = |hf: &str, gg: &str| l.norm(&n(hf, gg), h, false);
    Ok(Experts {
        router,
        experts,
        shared: None,
        expert_scale: Some(expert_scale),
        beside: Some(BesideDense {
            mlp: dense,
            router_norm,
            pre_experts: norm("pre_feedforward_layernorm_2", "pre_ffw_norm_2")?,
            post_dense: norm("post_feedforward_layernorm_1", "post_ffw_norm_1")?,
            post_experts: norm("post_feedforward_layernorm_2", "post_ffw_norm_2")?,
        }),
    })
}
