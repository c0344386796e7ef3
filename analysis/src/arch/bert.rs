//! BERT encoders (all-MiniLM-L6-v2 and friends): post-LN blocks, learned absolute positions plus
//! token types, exact-erf GELU, bidirectional attention (Devlin et al. 2018,
//! <https://arxiv.org/abs/1810.04805>; reference implementation: transformers' `modeling_bert.py`).

use std::path::Path;

use serde::Deserialize;

use super::{parse_config, Activation, ArchSpec, Family, NormKind, Positions};
use crate::error::{PrismError, Result};
use crate::weights::{get, get_opt, LayerWeights, Linear, ModelWeights, NormWeights, TensorSource};

#[derive(Debug, Deserialize)]
struct HfConfig {
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

pub fn spec_from_hf(config: &serde_json::Value, named: &str, path: &Path) -> Result<ArchSpec> {
    let c: HfConfig = parse_config(config, path)?;
    let activation = match c.hidden_act.as_str() {
        "gelu" => Activation::GeluErf,
        "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
        other => {
            return Err(PrismError::format(
                path,
                format!("BERT hidden_act {other:?} is not supported (gelu, gelu_new)"),
            ))
        }
    };
    if let Some(p) = c
        .position_embedding_type
        .as_deref()
        .filter(|p| *p != "absolute")
    {
        return Err(PrismError::format(
            path,
            format!("BERT position_embedding_type {p:?} is not supported (absolute)"),
        ));
    }
    Ok(ArchSpec {
        family: Family::Bert,
        architecture: named.to_string(),
        n_layers: c.num_hidden_layers,
        hidden: c.hidden_size,
        n_heads: c.num_attention_heads,
        n_kv_heads: c.num_attention_heads,
        head_dim: c.hidden_size / c.num_attention_heads.max(1),
        intermediate: c.intermediate_size,
        vocab: c.vocab_size,
        context_length: c.max_position_embeddings,
        norm: NormKind::LayerNorm,
        norm_eps: c.layer_norm_eps,
        positions: Positions::LearnedWithTokenType,
        activation,
        causal: false,
        post_norm: true,
        final_norm: false,
        tied_embeddings: false,
        sliding_window: None,
        type_vocab: c.type_vocab_size.max(1),
    })
}

pub fn load_weights(src: &dyn TensorSource, spec: &ArchSpec) -> Result<ModelWeights> {
    let prefix = if src.info("bert.embeddings.word_embeddings.weight").is_some() {
        "bert."
    } else {
        ""
    };
    let (h, f) = (spec.hidden, spec.intermediate);
    if spec.n_heads * spec.head_dim != h {
        return Err(PrismError::format(
            src.path(),
            format!("hidden size {h} is not divisible by {} heads", spec.n_heads),
        ));
    }
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
        Ok(Linear {
            weight: get(src, &format!("{base}.weight"), &[out, inp])?,
            bias: Some(get(src, &format!("{base}.bias"), &[out])?),
        })
    };
    let mut layers = Vec::with_capacity(spec.n_layers);
    for i in 0..spec.n_layers {
        let b = format!("{prefix}encoder.layer.{i}");
        layers.push(LayerWeights {
            attn_norm: norm(format!("{b}.attention.output.LayerNorm"))?,
            q: linear(format!("{b}.attention.self.query"), h, h)?,
            k: linear(format!("{b}.attention.self.key"), h, h)?,
            v: linear(format!("{b}.attention.self.value"), h, h)?,
            o: linear(format!("{b}.attention.output.dense"), h, h)?,
            mlp_norm: norm(format!("{b}.output.LayerNorm"))?,
            gate: None,
            up: linear(format!("{b}.intermediate.dense"), f, h)?,
            down: linear(format!("{b}.output.dense"), h, f)?,
        });
    }
    let e = format!("{prefix}embeddings");
    Ok(ModelWeights {
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
    })
}
