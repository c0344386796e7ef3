//! GPT-NeoX and Pythia: LayerNorm with biases, biases everywhere, partial rotary embeddings (the
//! first `rotary_pct` of each head), exact-erf GELU, and the parallel residual
//! h = h + attn(ln1(h)) + mlp(ln2(h)) (Black et al. 2022, <https://arxiv.org/abs/2204.06745>;
//! Biderman et al. 2023, <https://arxiv.org/abs/2304.01373>; reference implementation:
//! transformers' `modeling_gpt_neox.py`).
//!
//! HF stores `query_key_value` rows per head ([q | k | v] for head 0, then head 1, ...); llama.cpp's
//! converter reorders them to [Q | K | V], which are plain row ranges.

use serde::Deserialize;

use super::{
    Activation, ArchSpec, Architecture, Bias, Block, Format, GgufConfig, HfConfig, Loader, Names,
    NormKind, Positions, Rope, RopePairing,
};
use crate::error::Result;
use crate::weights::{get, LayerWeights, Linear, MixerWeights, Mlp, ModelWeights, TensorSource};

pub static ARCH: Architecture = Architecture {
    name: "gptneox",
    covers: "GPT-NeoX, Pythia",
    hf_model_types: &["gpt_neox"],
    gguf_names: &["gptneox"],
    spec_from_hf,
    spec_from_gguf,
    load_weights,
    unused_tensor: |n| {
        n.ends_with("attention.bias")
            || n.ends_with("attention.masked_bias")
            || n.ends_with("rotary_emb.inv_freq")
    },
    harmless_gguf_keys: &[],
};

#[derive(Debug, Deserialize)]
struct Config {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_context")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default = "default_true")]
    use_parallel_residual: bool,
    rotary_pct: Option<f64>,
    rotary_emb_base: Option<f64>,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_true")]
    attention_bias: bool,
}

fn default_eps() -> f64 {
    1e-5
}

fn default_context() -> usize {
    2048
}

fn default_true() -> bool {
    true
}

fn default_act() -> String {
    "gelu".into()
}

fn activation(name: &str, cfg: &HfConfig<'_>) -> Result<Activation> {
    match name {
        "gelu" => Ok(Activation::GeluErf),
        "gelu_new" | "gelu_fast" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
        other => Err(cfg.err(format!(
            "GPT-NeoX hidden_act {other:?} is not supported (gelu, gelu_new)"
        ))),
    }
}

fn spec_from_hf(cfg: &HfConfig<'_>) -> Result<ArchSpec> {
    let c: Config = cfg.parse()?;
    if !c.attention_bias {
        return Err(cfg.err("GPT-NeoX without attention biases is not supported"));
    }
    let mut spec = ArchSpec::base("gptneox", cfg.named.clone());
    spec.n_layers = c.num_hidden_layers;
    spec.hidden = c.hidden_size;
    spec.n_heads = c.num_attention_heads;
    spec.n_kv_heads = c.num_attention_heads;
    spec.head_dim = c.hidden_size / c.num_attention_heads.max(1);
    spec.intermediate = c.intermediate_size;
    spec.vocab = c.vocab_size;
    spec.context_length = c.max_position_embeddings;
    spec.norm = NormKind::LayerNorm;
    spec.norm_eps = c.layer_norm_eps;
    spec.tied_embeddings = c.tie_word_embeddings;
    spec.activation = activation(&c.hidden_act, cfg)?;
    spec.block = if c.use_parallel_residual {
        Block::PARALLEL
    } else {
        Block::PRE_NORM
    };
    spec.check_sizes(cfg.path)?;
    let params = cfg.get("rope_parameters");
    let pct = c
        .rotary_pct
        .or_else(|| {
            params
                .and_then(|p| p.get("partial_rotary_factor"))
                .and_then(|v| v.as_f64())
        })
        .unwrap_or(1.0);
    if !(pct > 0.0 && pct <= 1.0) {
        return Err(cfg.err(format!("rotary_pct {pct} is out of range")));
    }
    let theta = c
        .rotary_emb_base
        .unwrap_or_else(|| cfg.rope_theta(10_000.0));
    spec.rope = Some(Rope::from_hf(
        theta,
        (spec.head_dim as f64 * pct) as usize,
        RopePairing::Half,
        &cfg.rope_scaling()?,
        c.max_position_embeddings,
        cfg,
    )?);
    spec.positions = Positions::Rope;
    spec.uniform_layers(None);
    Ok(spec)
}

fn spec_from_gguf(cfg: &GgufConfig<'_>) -> Result<ArchSpec> {
    let mut spec = ArchSpec::base("gptneox", cfg.arch.to_string());
    cfg.common(&mut spec)?;
    if spec.norm != NormKind::LayerNorm {
        return Err(cfg.err("GPT-NeoX GGUF without attention.layer_norm_epsilon"));
    }
    // The reference (transformers) uses the exact GELU; llama.cpp approximates it with tanh.
    spec.activation = Activation::GeluErf;
    spec.block = match cfg.meta.bool_opt(&cfg.key("use_parallel_residual"))? {
        Some(false) => Block::PRE_NORM,
        _ => Block::PARALLEL,
    };
    spec.rope = Some(cfg.rope(&spec, 10_000.0, RopePairing::Half)?);
    spec.uniform_layers(None);
    spec.tied_embeddings = cfg.src.info("output.weight").is_none();
    Ok(spec)
}

fn load_weights(src: &dyn TensorSource, spec: &ArchSpec, format: Format) -> Result<ModelWeights> {
    let l = Loader { src, spec };
    let (h, v, f, hd, nh) = (
        spec.hidden,
        spec.vocab,
        spec.intermediate,
        spec.head_dim,
        spec.n_heads,
    );
    let gguf = format == Format::Gguf;
    let names = Names {
        gguf,
        layers: "gpt_neox.layers",
    };
    let mut layers = Vec::with_capacity(spec.n_layers);
    for i in 0..spec.n_layers {
        let n = |hf: &str, gg: &str| names.layer(i, hf, gg);
        let qkv = l.linear(
            &n("attention.query_key_value", "attn_qkv"),
            3 * h,
            h,
            Bias::Yes,
        )?;
        let (q, k, vv) = if gguf {
            let mut parts = l.split(&qkv, &[h, h, h])?.into_iter();
            let mut next = || {
                parts
                    .next()
                    .ok_or_else(|| crate::PrismError::Input("qkv split".into()))
            };
            (next()?, next()?, next()?)
        } else {
            // Rows per head [q | k | v]: gather each projection's rows into a matrix of its own.
            let part = |j: usize| -> Result<Linear> {
                let rows: Vec<usize> = (0..nh)
                    .flat_map(|head| (0..hd).map(move |d| head * 3 * hd + j * hd + d))
                    .collect();
                Ok(Linear {
                    weight: qkv.weight.gather_rows(&rows)?,
                    bias: qkv
                        .bias
                        .as_ref()
                        .map(|b| b.gather_rows(&rows))
                        .transpose()?,
                })
            };
            (part(0)?, part(1)?, part(2)?)
        };
        layers.push(LayerWeights {
            extras: Default::default(),
            attn_norm: Some(l.norm(&n("input_layernorm", "attn_norm"), h, false)?),
            mixer: MixerWeights::attention(
                q,
                k,
                vv,
                l.linear(&n("attention.dense", "attn_output"), h, h, Bias::Yes)?,
            ),
            q_norm: None,
            k_norm: None,
            post_attn_norm: None,
            mlp_norm: Some(l.norm(&n("post_attention_layernorm", "ffn_norm"), h, false)?),
            mlp: Mlp::dense(
                None,
                l.linear(&n("mlp.dense_h_to_4h", "ffn_up"), f, h, Bias::Yes)?,
                l.linear(&n("mlp.dense_4h_to_h", "ffn_down"), h, f, Bias::Yes)?,
            ),
            post_mlp_norm: None,
        });
    }
    let [embed, final_norm, head] = names.top([
        "gpt_neox.embed_in.weight",
        "gpt_neox.final_layer_norm",
        "embed_out.weight",
    ]);
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
