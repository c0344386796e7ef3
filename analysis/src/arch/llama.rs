//! The Llama family: Llama 1-3 (with Llama 3's RoPE scaling), SmolLM/SmolLM2, TinyLlama, Mistral
//! (sliding window) and Qwen2 (q/k/v biases).
//!
//! Pre-norm decoder blocks with RMSNorm, rotary positions, grouped-query attention and a SwiGLU MLP
//! (Touvron et al. 2023, <https://arxiv.org/abs/2302.13971>; reference implementation:
//! transformers' `modeling_llama.py`, `modeling_mistral.py`, `modeling_qwen2.py`).

use serde::Deserialize;

use super::{
    ArchSpec, Architecture, Bias, Format, GgufConfig, HfConfig, HfDefaults, LayerKind, LayerRope,
    Loader, MlpKind, Names, RopePairing,
};
use crate::error::Result;
use crate::weights::{get, LayerWeights, MixerWeights, Mlp, ModelWeights, TensorSource};

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

/// The fields of HF `LlamaConfig` / `MistralConfig` / `Qwen2Config` beyond [`HfCommon`] that
/// change the computation.
#[derive(Debug, Deserialize)]
struct Config {
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    hidden_act: Option<String>,
    #[serde(default)]
    mlp_bias: bool,
}

/// Llama's defaults for fields a config may leave out.
pub(super) const DEFAULTS: HfDefaults = HfDefaults {
    rms_norm_eps: 1e-6,
    context: 2048,
    tied: false,
};

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
    let common = cfg.common(&mut spec, DEFAULTS)?;
    spec.rope = Some(cfg.rope_half(&spec, 10_000.0)?);
    // Mistral slides on every layer; Qwen2 only with use_sliding_window, from max_window_layers on.
    let window = match cfg.model_type {
        "qwen2" if c.use_sliding_window != Some(true) => None,
        _ => common.sliding_window,
    };
    spec.layers = match cfg.layer_types(spec.n_layers, window)? {
        Some(kinds) => global_rope(kinds),
        None => (0..spec.n_layers)
            .map(|i| LayerKind {
                window: match (cfg.model_type, c.max_window_layers) {
                    ("qwen2", Some(m)) if i < m => None,
                    _ => window,
                },
                ..LayerKind::FULL
            })
            .collect(),
    };
    Ok(spec)
}

/// Sliding layers of families whose every layer uses the model's one RoPE table.
pub(super) fn global_rope(mut kinds: Vec<LayerKind>) -> Vec<LayerKind> {
    kinds.iter_mut().for_each(|k| k.rope = LayerRope::Global);
    kinds
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
    load_decoder(src, spec, format, qkv_bias, o_bias, &NORM_NAMES)
}

/// A layer's norm tensors: (HF name under the layer, GGUF name under `blk.N`), per slot. Which
/// of them a layer has comes from the spec's block shape and q/k norm kind.
pub(super) struct NormNames {
    pub attn: [&'static str; 2],
    pub post_attn: [&'static str; 2],
    pub mlp: [&'static str; 2],
    pub post_mlp: [&'static str; 2],
    pub q: [&'static str; 2],
    pub k: [&'static str; 2],
    /// HF folders store the norm weight as an offset w and scale by 1 + w (Gemma); GGUF files
    /// store 1 + w.
    pub hf_offset: bool,
}

/// Llama's names, and llama.cpp's for the post norms (Gemma, OLMo 2).
pub(super) const NORM_NAMES: NormNames = NormNames {
    attn: ["input_layernorm", "attn_norm"],
    post_attn: ["post_attention_layernorm", "post_attention_norm"],
    mlp: ["post_attention_layernorm", "ffn_norm"],
    post_mlp: ["post_feedforward_layernorm", "post_ffw_norm"],
    q: ["self_attn.q_norm", "attn_q_norm"],
    k: ["self_attn.k_norm", "attn_k_norm"],
    hf_offset: false,
};

/// [`load_decoder`] without biases and with Llama's norm names (Qwen3, OLMo 2, SmolLM3): an
/// `Architecture::load_weights` as it is.
pub(super) fn load_unbiased(
    src: &dyn TensorSource,
    spec: &ArchSpec,
    format: Format,
) -> Result<ModelWeights> {
    load_decoder(src, spec, format, Bias::No, Bias::No, &NORM_NAMES)
}

/// Weights of a Llama-shaped decoder (q, k, v, o and a gated MLP, or experts where the spec's
/// layer kind says so) in HF or GGUF naming, with the norms the spec's block shape names (shared
/// with Qwen3, Qwen3-MoE, OLMo 2, SmolLM3).
pub(super) fn load_decoder(
    src: &dyn TensorSource,
    spec: &ArchSpec,
    format: Format,
    qkv_bias: Bias,
    o_bias: Bias,
    norms: &NormNames,
) -> Result<ModelWeights> {
    let l = Loader { src, spec };
    let (h, v, q, kv, f) = (
        spec.hidden,
        spec.vocab,
        spec.q_dim(),
        spec.kv_dim(),
        spec.intermediate,
    );
    let gguf = format == Format::Gguf;
    let names = Names {
        gguf,
        layers: "model.layers",
    };
    let (b, hd) = (spec.block, spec.head_dim);
    let plus_one = norms.hf_offset && !gguf;
    let qk = |heads| spec.qk_norm.width(heads, hd);
    let mut layers = Vec::with_capacity(spec.n_layers);
    for i in 0..spec.n_layers {
        let n = |[hf, gg]: [&str; 2]| names.layer(i, hf, gg);
        let norm = |width: Option<usize>, which| {
            l.norm_if(width.is_some(), &n(which), width.unwrap_or(h), plus_one)
        };
        layers.push(LayerWeights {
            extras: Default::default(),
            attn_norm: norm(b.attn.has_main().then_some(h), norms.attn)?,
            mixer: MixerWeights::attention(
                l.linear(&n(["self_attn.q_proj", "attn_q"]), q, h, qkv_bias)?,
                l.linear(&n(["self_attn.k_proj", "attn_k"]), kv, h, qkv_bias)?,
                l.linear(&n(["self_attn.v_proj", "attn_v"]), kv, h, qkv_bias)?,
                l.linear(&n(["self_attn.o_proj", "attn_output"]), h, q, o_bias)?,
            ),
            q_norm: norm(qk(spec.n_heads), norms.q)?,
            k_norm: norm(qk(spec.n_kv_heads), norms.k)?,
            post_attn_norm: norm(b.attn.output.then_some(h), norms.post_attn)?,
            mlp_norm: norm(b.mlp.has_main().then_some(h), norms.mlp)?,
            mlp: match spec.layers[i].mlp {
                MlpKind::Experts => Mlp::Experts(super::experts::load(&l, &names, i)?),
                MlpKind::Dense => Mlp::dense(
                    Some(l.linear(&n(["mlp.gate_proj", "ffn_gate"]), f, h, Bias::No)?),
                    l.linear(&n(["mlp.up_proj", "ffn_up"]), f, h, Bias::No)?,
                    l.linear(&n(["mlp.down_proj", "ffn_down"]), h, f, Bias::No)?,
                ),
            },
            post_mlp_norm: norm(b.mlp.output.then_some(h), norms.post_mlp)?,
        });
    }
    let [embed, final_norm, head] =
        names.top(["model.embed_tokens.weight", "model.norm", "lm_head.weight"]);
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
