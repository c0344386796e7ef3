//! Phi-3 and Phi-3.5: the Llama block with fused projections (`qkv_proj` rows q | k | v and
//! `gate_up_proj` rows gate | up), optional partial RoPE and LongRoPE scaling, and an optional
//! sliding window (reference implementation: transformers' `modeling_phi3.py`; llama.cpp's `phi3`).
//! The fused matrices are split into row ranges at load: views, nothing is copied.

use serde::Deserialize;

use super::{
    ArchSpec, Architecture, Bias, Format, GgufConfig, HfConfig, Loader, Names, Rope, RopePairing,
};
use crate::error::Result;
use crate::weights::{get, LayerWeights, MixerWeights, Mlp, ModelWeights, TensorSource};

pub static ARCH: Architecture = Architecture {
    name: "phi3",
    covers: "Phi-3, Phi-3.5 (text)",
    hf_model_types: &["phi3"],
    gguf_names: &["phi3"],
    spec_from_hf,
    spec_from_gguf,
    load_weights,
    unused_tensor: |n| n.ends_with("rotary_emb.inv_freq"),
    harmless_gguf_keys: &["rope.scaling.original_context_length"],
};

#[derive(Debug, Deserialize)]
struct Config {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_context")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    sliding_window: Option<usize>,
    partial_rotary_factor: Option<f64>,
    hidden_act: Option<String>,
}

fn default_rms_eps() -> f64 {
    1e-5
}

fn default_context() -> usize {
    4096
}

fn spec_from_hf(cfg: &HfConfig<'_>) -> Result<ArchSpec> {
    let c: Config = cfg.parse()?;
    if let Some(act) = c.hidden_act.as_deref().filter(|a| *a != "silu") {
        return Err(cfg.err(format!("Phi-3 hidden_act {act:?} is not supported (silu)")));
    }
    let mut spec = ArchSpec::base("phi3", cfg.named.clone());
    spec.n_layers = c.num_hidden_layers;
    spec.hidden = c.hidden_size;
    spec.n_heads = c.num_attention_heads;
    spec.n_kv_heads = c.num_key_value_heads.unwrap_or(c.num_attention_heads);
    spec.head_dim = c.hidden_size / c.num_attention_heads.max(1);
    spec.intermediate = c.intermediate_size;
    spec.vocab = c.vocab_size;
    spec.context_length = c.max_position_embeddings;
    spec.norm_eps = c.rms_norm_eps;
    spec.tied_embeddings = c.tie_word_embeddings;
    spec.check_sizes(cfg.path)?;
    let partial = c
        .partial_rotary_factor
        .or_else(|| {
            cfg.get("rope_parameters")
                .and_then(|p| p.get("partial_rotary_factor"))
                .and_then(|v| v.as_f64())
        })
        .unwrap_or(1.0);
    if !(partial > 0.0 && partial <= 1.0) {
        return Err(cfg.err(format!("partial_rotary_factor {partial} is out of range")));
    }
    let dims = (spec.head_dim as f64 * partial) as usize;
    spec.rope = Some(Rope::from_hf(
        cfg.rope_theta(10_000.0),
        dims,
        RopePairing::Half,
        &cfg.rope_scaling()?,
        c.max_position_embeddings,
        cfg,
    )?);
    spec.uniform_layers(c.sliding_window.filter(|&w| w > 0));
    Ok(spec)
}

fn spec_from_gguf(cfg: &GgufConfig<'_>) -> Result<ArchSpec> {
    let mut spec = ArchSpec::base("phi3", cfg.arch.to_string());
    cfg.common(&mut spec)?;
    // The converter does not permute the fused q/k rows: llama.cpp runs Phi-3 with NeoX RoPE.
    spec.rope = Some(cfg.rope(&spec, 10_000.0, RopePairing::Half)?);
    let window = cfg
        .usize_opt("attention.sliding_window")?
        .filter(|&w| w > 0);
    spec.uniform_layers(window);
    spec.tied_embeddings = cfg.src.info("output.weight").is_none();
    Ok(spec)
}

fn load_weights(src: &dyn TensorSource, spec: &ArchSpec, format: Format) -> Result<ModelWeights> {
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
    let mut layers = Vec::with_capacity(spec.n_layers);
    for i in 0..spec.n_layers {
        let n = |hf: &str, gg: &str| names.layer(i, hf, gg);
        let qkv = l.linear(
            &n("self_attn.qkv_proj", "attn_qkv"),
            q + 2 * kv,
            h,
            Bias::No,
        )?;
        let [wq, wk, wv]: [_; 3] = l
            .split(&qkv, &[q, kv, kv])?
            .try_into()
            .map_err(|_| crate::PrismError::Input("qkv split".into()))?;
        let gate_up = l.linear(&n("mlp.gate_up_proj", "ffn_up"), 2 * f, h, Bias::No)?;
        let [gate, up]: [_; 2] = l
            .split(&gate_up, &[f, f])?
            .try_into()
            .map_err(|_| crate::PrismError::Input("gate_up split".into()))?;
        layers.push(LayerWeights {
            extras: Default::default(),
            attn_norm: Some(l.norm(&n("input_layernorm", "attn_norm"), h, false)?),
            mixer: MixerWeights::attention(
                wq,
                wk,
                wv,
                l.linear(&n("self_attn.o_proj", "attn_output"), h, q, Bias::No)?,
            ),
            q_norm: None,
            k_norm: None,
            post_attn_norm: None,
            mlp_norm: Some(l.norm(&n("post_attention_layernorm", "ffn_norm"), h, false)?),
            mlp: Mlp::dense(
                Some(gate),
                up,
                l.linear(&n("mlp.down_proj", "ffn_down"), h, f, Bias::No)?,
            ),
            post_mlp_norm: None,
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
        final_norm: Some(l.norm(final_norm, h, false)?),
        lm_head: l.lm_head(head)?,
        lm_head_bias: None,
    })
}
