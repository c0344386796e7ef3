//! GPT-2: pre-LN decoder blocks with learned positions, LayerNorm, `gelu_new` and a tied LM head
//! (Radford et al. 2019; reference implementation: transformers' `modeling_gpt2.py`).
//!
//! Checkpoints store Conv1D weights as `[in, out]`, and q/k/v side by side in `c_attn`; both are
//! brought to the canonical `[out, in]` layout here, so the backends never see them.

use std::path::Path;

use serde::Deserialize;

use super::{parse_config, Activation, ArchSpec, Family, NormKind, Positions};
use crate::error::{PrismError, Result};
use crate::weights::{get, LayerWeights, Linear, ModelWeights, NormWeights, TensorSource};

#[derive(Debug, Deserialize)]
struct HfConfig {
    vocab_size: usize,
    n_positions: usize,
    n_embd: usize,
    n_layer: usize,
    n_head: usize,
    n_inner: Option<usize>,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_act")]
    activation_function: String,
}

fn default_eps() -> f64 {
    1e-5
}

fn default_act() -> String {
    "gelu_new".into()
}

pub fn spec_from_hf(config: &serde_json::Value, named: &str, path: &Path) -> Result<ArchSpec> {
    let c: HfConfig = parse_config(config, path)?;
    let activation = match c.activation_function.as_str() {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "gelu" => Activation::GeluErf,
        other => {
            return Err(PrismError::format(
                path,
                format!("GPT-2 activation {other:?} is not supported (gelu_new, gelu)"),
            ))
        }
    };
    Ok(ArchSpec {
        family: Family::Gpt2,
        architecture: named.to_string(),
        n_layers: c.n_layer,
        hidden: c.n_embd,
        n_heads: c.n_head,
        n_kv_heads: c.n_head,
        head_dim: c.n_embd / c.n_head.max(1),
        intermediate: c.n_inner.unwrap_or(4 * c.n_embd),
        vocab: c.vocab_size,
        context_length: c.n_positions,
        norm: NormKind::LayerNorm,
        norm_eps: c.layer_norm_epsilon,
        positions: Positions::Learned,
        activation,
        causal: true,
        post_norm: false,
        final_norm: true,
        tied_embeddings: true,
        sliding_window: None,
        type_vocab: 0,
    })
}

pub fn load_weights(src: &dyn TensorSource, spec: &ArchSpec) -> Result<ModelWeights> {
    let prefix = if src.info("transformer.wte.weight").is_some() {
        "transformer."
    } else {
        ""
    };
    let (h, f) = (spec.hidden, spec.intermediate);
    if spec.n_heads * spec.head_dim != h {
        return Err(PrismError::format(
            src.path(),
            format!("n_embd {h} is not divisible by n_head {}", spec.n_heads),
        ));
    }
    let norm = |base: String| -> Result<NormWeights> {
        Ok(NormWeights {
            weight: get(src, &format!("{base}.weight"), &[h])?,
            bias: Some(get(src, &format!("{base}.bias"), &[h])?),
        })
    };
    // Conv1D: y = x @ W + b with W stored [in, out].
    let conv1d = |base: String, inp: usize, out: usize| -> Result<Linear> {
        Ok(Linear {
            weight: get(src, &format!("{base}.weight"), &[inp, out])?.transposed()?,
            bias: Some(get(src, &format!("{base}.bias"), &[out])?),
        })
    };
    let mut layers = Vec::with_capacity(spec.n_layers);
    for i in 0..spec.n_layers {
        let b = format!("{prefix}h.{i}");
        let qkv = conv1d(format!("{b}.attn.c_attn"), h, 3 * h)?;
        let part = |k: usize| -> Result<Linear> {
            Ok(Linear {
                weight: qkv.weight.narrow_rows(k * h, h)?,
                bias: match &qkv.bias {
                    Some(bias) => Some(bias.narrow_rows(k * h, h)?),
                    None => None,
                },
            })
        };
        layers.push(LayerWeights {
            attn_norm: norm(format!("{b}.ln_1"))?,
            q: part(0)?,
            k: part(1)?,
            v: part(2)?,
            o: conv1d(format!("{b}.attn.c_proj"), h, h)?,
            mlp_norm: norm(format!("{b}.ln_2"))?,
            gate: None,
            up: conv1d(format!("{b}.mlp.c_fc"), h, f)?,
            down: conv1d(format!("{b}.mlp.c_proj"), f, h)?,
        });
    }
    Ok(ModelWeights {
        token_embedding: get(src, &format!("{prefix}wte.weight"), &[spec.vocab, h])?,
        position_embedding: Some(get(
            src,
            &format!("{prefix}wpe.weight"),
            &[spec.context_length, h],
        )?),
        token_type_embedding: None,
        embedding_norm: None,
        layers,
        final_norm: Some(norm(format!("{prefix}ln_f"))?),
        lm_head: None,
    })
}
