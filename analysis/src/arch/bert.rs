//! BERT encoders (all-MiniLM-L6-v2 and friends): post-LN blocks, learned absolute positions plus
//! token types, exact-erf GELU, bidirectional attention (Devlin et al. 2018,
//! <https://arxiv.org/abs/1810.04805>; reference implementation: transformers' `modeling_bert.py`).

use serde::Deserialize;

use super::{
    Activation, ArchSpec, Architecture, Bias, Block, Format, GgufConfig, HfConfig, Loader,
    NormKind, Positions,
};
use crate::error::{PrismError, Result};
use crate::weights::{
    get, get_opt, LayerWeights, Linear, MixerWeights, Mlp, ModelWeights, NormWeights, TensorSource,
};

pub static ARCH: Architecture = Architecture {
    name: "bert",
    covers: "BERT encoders such as MiniLM",
    hf_model_types: &["bert"],
    gguf_names: &["bert"],
    spec_from_hf,
    spec_from_gguf,
    load_weights,
    unused_tensor: |n| {
        n.contains("pooler.") || n.starts_with("cls.") || n.ends_with("position_ids")
    },
    // Pooling is not part of the forward pass (`prism embed` states how it pools).
    harmless_gguf_keys: &["pooling_type"],
};

#[derive(Debug, Deserialize)]
struct Config {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_context")]
    max_position_embeddings: usize,
    #[serde(default = "default_types")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    position_embedding_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_context() -> usize {
    512
}
fn default_types() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

fn base(spec: &mut ArchSpec) {
    spec.norm = NormKind::LayerNorm;
    spec.positions = Positions::LearnedWithTokenType;
    spec.activation = Activation::GeluErf;
    spec.block = Block::POST_NORM;
    spec.causal = false;
    spec.final_norm = false;
}

fn spec_from_hf(cfg: &HfConfig<'_>) -> Result<ArchSpec> {
    let c: Config = cfg.parse()?;
    let mut spec = ArchSpec::base("bert", cfg.named.clone());
    base(&mut spec);
    spec.activation = match c.hidden_act.as_str() {
        "gelu" => Activation::GeluErf,
        "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
        other => {
            return Err(cfg.err(format!(
                "BERT hidden_act {other:?} is not supported (gelu, gelu_new)"
            )))
        }
    };
    if let Some(p) = c
        .position_embedding_type
        .as_deref()
        .filter(|p| *p != "absolute")
    {
        return Err(cfg.err(format!(
            "BERT position_embedding_type {p:?} is not supported (absolute)"
        )));
    }
    spec.n_layers = c.num_hidden_layers;
    spec.hidden = c.hidden_size;
    spec.n_heads = c.num_attention_heads;
    spec.n_kv_heads = c.num_attention_heads;
    spec.head_dim = c.hidden_size / c.num_attention_heads.max(1);
    spec.intermediate = c.intermediate_size;
    spec.vocab = c.vocab_size;
    spec.context_length = c.max_position_embeddings;
    spec.norm_eps = c.layer_norm_eps;
    spec.type_vocab = c.type_vocab_size.max(1);
    spec.check_sizes(cfg.path)?;
    spec.uniform_layers(None);
    Ok(spec)
}

fn spec_from_gguf(cfg: &GgufConfig<'_>) -> Result<ArchSpec> {
    let mut spec = ArchSpec::base("bert", cfg.arch.to_string());
    cfg.common(&mut spec)?;
    base(&mut spec);
    spec.n_kv_heads = spec.n_heads;
    if cfg.meta.bool_opt(&cfg.key("attention.causal"))? == Some(true) {
        return Err(cfg.err("a causal BERT is not supported"));
    }
    spec.type_vocab = match cfg.usize_opt("token_type_count")? {
        Some(n) => n.max(1),
        None => cfg
            .src
            .info("token_types.weight")
            .and_then(|i| i.shape.first().copied())
            .unwrap_or(1),
    };
    spec.uniform_layers(None);
    Ok(spec)
}

fn load_weights(src: &dyn TensorSource, spec: &ArchSpec, format: Format) -> Result<ModelWeights> {
    let l = Loader { src, spec };
    let (h, f) = (spec.hidden, spec.intermediate);
    if spec.n_heads * spec.head_dim != h {
        return Err(PrismError::format(
            src.path(),
            format!("hidden size {h} is not divisible by {} heads", spec.n_heads),
        ));
    }
    if format == Format::Gguf {
        let mut layers = Vec::with_capacity(spec.n_layers);
        for i in 0..spec.n_layers {
            let b = format!("blk.{i}");
            let lin = |name: &str, out, inp| l.linear(&format!("{b}.{name}"), out, inp, Bias::Yes);
            let (q, k, v) = if src.info(&format!("{b}.attn_qkv.weight")).is_some() {
                let mut parts = l
                    .split(&lin("attn_qkv", 3 * h, h)?, &[h, h, h])?
                    .into_iter();
                let mut next = || {
                    parts
                        .next()
                        .ok_or_else(|| PrismError::Input("qkv split".into()))
                };
                (next()?, next()?, next()?)
            } else {
                (
                    lin("attn_q", h, h)?,
                    lin("attn_k", h, h)?,
                    lin("attn_v", h, h)?,
                )
            };
            layers.push(LayerWeights {
                extras: Default::default(),
                attn_norm: Some(l.norm(&format!("{b}.attn_output_norm"), h, false)?),
                mixer: MixerWeights::attention(q, k, v, lin("attn_output", h, h)?),
                q_norm: None,
                k_norm: None,
                post_attn_norm: None,
                mlp_norm: Some(l.norm(&format!("{b}.layer_output_norm"), h, false)?),
                mlp: Mlp::dense(None, lin("ffn_up", f, h)?, lin("ffn_down", h, f)?),
                post_mlp_norm: None,
            });
        }
        return Ok(ModelWeights {
            per_layer_embedding: None,
            token_embedding: get(src, "token_embd.weight", &[spec.vocab, h])?,
            position_embedding: Some(get(src, "position_embd.weight", &[spec.context_length, h])?),
            token_type_embedding: Some(get(src, "token_types.weight", &[spec.type_vocab, h])?),
            embedding_norm: Some(l.norm("token_embd_norm", h, false)?),
            layers,
            final_norm: None,
            lm_head: None,
            lm_head_bias: None,
        });
    }
    let prefix = if src.info("bert.embeddings.word_embeddings.weight").is_some() {
        "bert."
    } else {
        ""
    };
    // Old checkpoints call LayerNorm parameters gamma/beta.
    let norm = |base: String| -> Result<NormWeights> {
        let weight = match get_opt(src, &format!("{base}.weight"), &[h])? {
            Some(w) => w,
            None => get(src, &format!("{base}.gamma"), &[h])?,
        };
        let bias = match get_opt(src, &format!("{base}.bias"), &[h])? {
            Some(b) => b,
            None => get(src, &format!("{base}.beta"), &[h])?,
        };
        Ok(NormWeights {
            weight,
            bias: Some(bias),
        })
    };
    let linear = |base: String, out: usize, inp: usize| -> Result<Linear> {
        l.linear(&base, out, inp, Bias::Yes)
    };
    let mut layers = Vec::with_capacity(spec.n_layers);
    for i in 0..spec.n_layers {
        let b = format!("{prefix}encoder.layer.{i}");
        layers.push(LayerWeights {
            extras: Default::default(),
            attn_norm: Some(norm(format!("{b}.attention.output.LayerNorm"))?),
            mixer: MixerWeights::attention(
                linear(format!("{b}.attention.self.query"), h, h)?,
                linear(format!("{b}.attention.self.key"), h, h)?,
                linear(format!("{b}.attention.self.value"), h, h)?,
                linear(format!("{b}.attention.output.dense"), h, h)?,
            ),
            q_norm: None,
            k_norm: None,
            post_attn_norm: None,
            mlp_norm: Some(norm(format!("{b}.output.LayerNorm"))?),
            mlp: Mlp::dense(
                None,
                linear(format!("{b}.intermediate.dense"), f, h)?,
                linear(format!("{b}.output.dense"), h, f)?,
            ),
            post_mlp_norm: None,
        });
    }
    let e = format!("{prefix}embeddings");
    Ok(ModelWeights {
        per_layer_embedding: None,
        token_embedding: get(
            src,
            &format!("{e}.word_embeddings.weight"),
            &[spec.vocab, h],
        )?,
        position_embedding: Some(get(
            src,
            &format!("{e}.position_embeddings.weight"),
            &[spec.context_length, h],
        )?),
        token_type_embedding: Some(get(
            src,
            &format!("{e}.token_type_embeddings.weight"),
            &[spec.type_vocab, h],
        )?),
        embedding_norm: Some(norm(format!("{e}.LayerNorm"))?),
        layers,
        final_norm: None,
        lm_head: None,
        lm_head_bias: None,
    })
}
