//! GPT-2: pre-LN decoder blocks with learned positions, LayerNorm, `gelu_new` and a tied LM head
//! (Radford et al. 2019; reference implementation: transformers' `modeling_gpt2.py`).
//!
//! HF checkpoints store Conv1D weights as `[in, out]` and q/k/v side by side in `c_attn`; they are
//! viewed as `[out, in]` row ranges (strided views, nothing copied). llama.cpp's converter stores
//! them transposed already, as `attn_qkv`.

use serde::Deserialize;

use super::{
    Activation, ArchSpec, Architecture, Bias, Format, GgufConfig, HfConfig, Loader, NormKind,
    Positions,
};
use crate::error::{PrismError, Result};
use crate::weights::{get, LayerWeights, Linear, MixerWeights, Mlp, ModelWeights, TensorSource};

pub static ARCH: Architecture = Architecture {
    name: "gpt2",
    covers: "GPT-2",
    hf_model_types: &["gpt2"],
    gguf_names: &["gpt2"],
    spec_from_hf,
    spec_from_gguf,
    load_weights,
    unused_tensor: |n| n.ends_with(".attn.bias") || n.ends_with(".attn.masked_bias"),
    harmless_gguf_keys: &[],
};

#[derive(Debug, Deserialize)]
struct Config {
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

fn base(spec: &mut ArchSpec) {
    spec.norm = NormKind::LayerNorm;
    spec.positions = Positions::Learned;
    spec.activation = Activation::GeluTanh;
    spec.tied_embeddings = true;
}

fn spec_from_hf(cfg: &HfConfig<'_>) -> Result<ArchSpec> {
    let c: Config = cfg.parse()?;
    let mut spec = ArchSpec::base("gpt2", cfg.named.clone());
    base(&mut spec);
    spec.activation = match c.activation_function.as_str() {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "gelu" => Activation::GeluErf,
        other => {
            return Err(cfg.err(format!(
                "GPT-2 activation {other:?} is not supported (gelu_new, gelu)"
            )))
        }
    };
    spec.n_layers = c.n_layer;
    spec.hidden = c.n_embd;
    spec.n_heads = c.n_head;
    spec.n_kv_heads = c.n_head;
    spec.head_dim = c.n_embd / c.n_head.max(1);
    spec.intermediate = c.n_inner.unwrap_or(4 * c.n_embd);
    spec.vocab = c.vocab_size;
    spec.context_length = c.n_positions;
    spec.norm_eps = c.layer_norm_epsilon;
    spec.check_sizes(cfg.path)?;
    spec.uniform_layers(None);
    Ok(spec)
}

fn spec_from_gguf(cfg: &GgufConfig<'_>) -> Result<ArchSpec> {
    let mut spec = ArchSpec::base("gpt2", cfg.arch.to_string());
    cfg.common(&mut spec)?;
    base(&mut spec);
    if cfg.f64_opt("attention.layer_norm_epsilon")?.is_none() {
        return Err(cfg.err("GPT-2 GGUF without attention.layer_norm_epsilon"));
    }
    spec.n_kv_heads = spec.n_heads;
    spec.uniform_layers(None);
    // GPT-2 is tied; a separate output matrix, when the converter wrote one, is a copy of it.
    spec.tied_embeddings = cfg.src.info("output.weight").is_none();
    Ok(spec)
}

fn load_weights(src: &dyn TensorSource, spec: &ArchSpec, format: Format) -> Result<ModelWeights> {
    let l = Loader { src, spec };
    let (h, f) = (spec.hidden, spec.intermediate);
    if spec.n_heads * spec.head_dim != h {
        return Err(PrismError::format(
            src.path(),
            format!("n_embd {h} is not divisible by n_head {}", spec.n_heads),
        ));
    }
    let gguf = format == Format::Gguf;
    let prefix = if !gguf && src.info("transformer.wte.weight").is_some() {
        "transformer."
    } else {
        ""
    };
    // Conv1D: y = x @ W + b with W stored [in, out], viewed as [out, in].
    let conv1d = |base: String, inp: usize, out: usize| -> Result<Linear> {
        Ok(Linear {
            weight: get(src, &format!("{base}.weight"), &[inp, out])?.transposed()?,
            bias: Some(get(src, &format!("{base}.bias"), &[out])?),
        })
    };
    let mut layers = Vec::with_capacity(spec.n_layers);
    for i in 0..spec.n_layers {
        let (attn_norm, qkv, o, mlp_norm, up, down) = if gguf {
            let b = format!("blk.{i}");
            (
                l.norm(&format!("{b}.attn_norm"), h, false)?,
                l.linear(&format!("{b}.attn_qkv"), 3 * h, h, Bias::Yes)?,
                l.linear(&format!("{b}.attn_output"), h, h, Bias::Yes)?,
                l.norm(&format!("{b}.ffn_norm"), h, false)?,
                l.linear(&format!("{b}.ffn_up"), f, h, Bias::Yes)?,
                l.linear(&format!("{b}.ffn_down"), h, f, Bias::Yes)?,
            )
        } else {
            let b = format!("{prefix}h.{i}");
            (
                l.norm(&format!("{b}.ln_1"), h, false)?,
                conv1d(format!("{b}.attn.c_attn"), h, 3 * h)?,
                conv1d(format!("{b}.attn.c_proj"), h, h)?,
                l.norm(&format!("{b}.ln_2"), h, false)?,
                conv1d(format!("{b}.mlp.c_fc"), h, f)?,
                conv1d(format!("{b}.mlp.c_proj"), f, h)?,
            )
        };
        let mut parts = l.split(&qkv, &[h, h, h])?.into_iter();
        let mut next = || {
            parts
                .next()
                .ok_or_else(|| PrismError::Input("qkv split".into()))
        };
        layers.push(LayerWeights {
            extras: Default::default(),
            attn_norm: Some(attn_norm),
            mixer: MixerWeights::attention(next()?, next()?, next()?, o),
            q_norm: None,
            k_norm: None,
            post_attn_norm: None,
            mlp_norm: Some(mlp_norm),
            mlp: Mlp::dense(None, up, down),
            post_mlp_norm: None,
        });
    }
    let (embed, positions, final_norm) = if gguf {
        (
            "token_embd.weight".to_string(),
            "position_embd.weight".to_string(),
            "output_norm".to_string(),
        )
    } else {
        (
            format!("{prefix}wte.weight"),
            format!("{prefix}wpe.weight"),
            format!("{prefix}ln_f"),
        )
    };
    Ok(ModelWeights {
        per_layer_embedding: None,
        token_embedding: get(src, &embed, &[spec.vocab, h])?,
        position_embedding: Some(get(src, &positions, &[spec.context_length, h])?),
        token_type_embedding: None,
        embedding_norm: None,
        layers,
        final_norm: Some(l.norm(&final_norm, h, false)?),
        lm_head: if gguf {
            l.lm_head("output.weight")?
        } else {
            None
        },
        lm_head_bias: None,
    })
}
