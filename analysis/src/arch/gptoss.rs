//! gpt-oss (gpt-oss-20b, gpt-oss-120b): pre-norm blocks with biases on q, k, v and o, a learned
//! attention sink per head (a key of that score and no value in every softmax), sliding-window
//! layers (128 keys) alternating with full ones, YaRN RoPE, and every MLP a mixture of experts:
//! a router with a bias, softmax over the top-k logits, experts with biases and a clamped SwiGLU
//! (g = min(gate, limit), u = clamp(up, +-limit), (u + 1) g sigmoid(1.702 g)). Reference
//! implementation: transformers' `modeling_gpt_oss.py`; llama.cpp's `gpt-oss` graph, whose
//! converter splits the interleaved gate/up and whose graph always clamps at 7.0.

use serde::Deserialize;

use super::{
    Activation, ArchSpec, Architecture, Bias, ExpertSpec, Format, GgufConfig, HfConfig, HfDefaults,
    LayerKind, Loader, MlpKind, Names, RopePairing,
};
use crate::error::{PrismError, Result};
use crate::weights::{
    get, get_stacked, Expert, Experts, LayerWeights, Linear, MixerWeights, Mlp, ModelWeights,
    TensorSource, Weight,
};

pub static ARCH: Architecture = Architecture {
    name: "gptoss",
    covers: "gpt-oss (20b, 120b)",
    hf_model_types: &["gpt_oss"],
    gguf_names: &["gpt-oss"],
    spec_from_hf,
    spec_from_gguf,
    load_weights,
    unused_tensor: |n| n.ends_with("rotary_emb.inv_freq"),
    harmless_gguf_keys: &[],
};

/// llama.cpp's gpt-oss graph: alpha and limit of the clamped SwiGLU (GGUF files carry neither).
const GGUF_ALPHA: f32 = 1.702;
const GGUF_LIMIT: f32 = 7.0;

/// gpt-oss's fields beyond [`super::HfCommon`].
#[derive(Debug, Deserialize)]
struct Config {
    num_local_experts: usize,
    num_experts_per_tok: usize,
    #[serde(default = "alpha")]
    swiglu_alpha: f32,
    #[serde(default = "limit")]
    swiglu_limit: f32,
    #[serde(default = "yes")]
    attention_bias: bool,
    hidden_act: Option<String>,
}

fn alpha() -> f32 {
    GGUF_ALPHA
}

fn limit() -> f32 {
    GGUF_LIMIT
}

fn yes() -> bool {
    true
}

fn experts_everywhere(spec: &mut ArchSpec, count: usize, top_k: usize) {
    spec.experts = Some(ExpertSpec {
        count,
        top_k,
        width: spec.intermediate,
        // Softmax over the top-k logits is the renormalized top-k of the softmax over all.
        renormalize: true,
        shared: None,
        beside_dense: false,
    });
    spec.layers
        .iter_mut()
        .for_each(|k| k.mlp = MlpKind::Experts);
    spec.attn_sinks = true;
}

fn spec_from_hf(cfg: &HfConfig<'_>) -> Result<ArchSpec> {
    let c: Config = cfg.parse()?;
    if let Some(act) = c.hidden_act.as_deref().filter(|a| *a != "silu") {
        return Err(cfg.err(format!(
            "gpt-oss hidden_act {act:?} is not supported (silu)"
        )));
    }
    if !c.attention_bias {
        return Err(cfg.err("gpt-oss without attention_bias is not supported"));
    }
    if !(c.swiglu_limit.is_finite() && c.swiglu_limit > 0.0 && c.swiglu_alpha.is_finite()) {
        return Err(cfg.err(format!(
            "swiglu_limit {} / swiglu_alpha {} are out of range",
            c.swiglu_limit, c.swiglu_alpha
        )));
    }
    let mut spec = ArchSpec::base("gptoss", cfg.named.clone());
    let common = cfg.common(
        &mut spec,
        HfDefaults {
            rms_norm_eps: 1e-5,
            context: 131072,
            tied: false,
        },
    )?;
    spec.rope = Some(cfg.rope_half(&spec, 150_000.0)?);
    spec.activation = Activation::SwiGluClamped {
        alpha: c.swiglu_alpha,
        limit: c.swiglu_limit,
    };
    spec.layers = match cfg.layer_types(spec.n_layers, common.sliding_window)? {
        Some(kinds) => super::llama::global_rope(kinds),
        None => alternating(spec.n_layers, common.sliding_window),
    };
    experts_everywhere(&mut spec, c.num_local_experts, c.num_experts_per_tok);
    Ok(spec)
}

/// Even layers slide, odd ones attend to everything (transformers' default, llama.cpp's pattern 2).
fn alternating(n: usize, window: Option<usize>) -> Vec<LayerKind> {
    (0..n)
        .map(|i| LayerKind {
            window: window.filter(|_| i % 2 == 0),
            ..LayerKind::FULL
        })
        .collect()
}

fn spec_from_gguf(cfg: &GgufConfig<'_>) -> Result<ArchSpec> {
    let mut spec = ArchSpec::base("gptoss", cfg.arch.to_string());
    cfg.common(&mut spec)?;
    spec.intermediate = cfg.usize("expert_feed_forward_length")?;
    // llama.cpp runs gpt-oss with NeoX RoPE; the converter does not permute q/k.
    spec.rope = Some(cfg.rope(&spec, 150_000.0, RopePairing::Half)?);
    spec.activation = Activation::SwiGluClamped {
        alpha: GGUF_ALPHA,
        limit: GGUF_LIMIT,
    };
    let window = cfg
        .usize_opt("attention.sliding_window")?
        .filter(|&w| w > 0);
    let key = cfg.key("attention.sliding_window_pattern");
    spec.layers = match cfg.meta.array(&key) {
        Some(flags) => {
            if flags.len() < spec.n_layers {
                return Err(cfg.err(format!("{key} lists {} layers", flags.len())));
            }
            flags
                .iter()
                .take(spec.n_layers)
                .map(|f| match f {
                    crate::gguf::Value::Bool(b) => Ok(LayerKind {
                        window: window.filter(|_| *b),
                        ..LayerKind::FULL
                    }),
                    other => Err(cfg.err(format!("{key} holds a {}", other.type_name()))),
                })
                .collect::<Result<_>>()?
        }
        None => {
            let every = cfg
                .usize_opt("attention.sliding_window_pattern")?
                .unwrap_or(2);
            (0..spec.n_layers)
                .map(|i| LayerKind {
                    window: window.filter(|_| every == 0 || i % every < every - 1),
                    ..LayerKind::FULL
                })
                .collect()
        }
    };
    experts_everywhere(
        &mut spec,
        cfg.usize("expert_count")?,
        cfg.usize("expert_used_count")?,
    );
    spec.tied_embeddings = cfg.src.info("output.weight").is_none();
    Ok(spec)
}

fn load_weights(src: &dyn TensorSource, spec: &ArchSpec, format: Format) -> Result<ModelWeights> {
    let l = Loader { src, spec };
    let gguf = format == Format::Gguf;
    let names = Names {
        gguf,
        layers: "model.layers",
    };
    let (h, v, q, kv) = (spec.hidden, spec.vocab, spec.q_dim(), spec.kv_dim());
    let x = spec
        .experts
        .ok_or_else(|| PrismError::format(src.path(), "gpt-oss without an expert count"))?;
    let mut layers = Vec::with_capacity(spec.n_layers);
    for i in 0..spec.n_layers {
        let n = |hf: &str, gg: &str| names.layer(i, hf, gg);
        let sinks = get(
            src,
            &n("self_attn.sinks", "attn_sinks.weight"),
            &[spec.n_heads],
        )?;
        let mixer = MixerWeights::Attention {
            q: l.linear(&n("self_attn.q_proj", "attn_q"), q, h, Bias::Yes)?,
            gate: None,
            k: Some(l.linear(&n("self_attn.k_proj", "attn_k"), kv, h, Bias::Yes)?),
            v: Some(l.linear(&n("self_attn.v_proj", "attn_v"), kv, h, Bias::Yes)?),
            o: l.linear(&n("self_attn.o_proj", "attn_output"), h, q, Bias::Yes)?,
            sinks: Some(sinks),
        };
        let router = l.linear(&n("mlp.router", "ffn_gate_inp"), x.count, h, Bias::Yes)?;
        let experts = if gguf {
            gguf_experts(&l, i, &x)?
        } else {
            hf_experts(&l, &n, &x)?
        };
        layers.push(LayerWeights {
            extras: Default::default(),
            attn_norm: Some(l.norm(&n("input_layernorm", "attn_norm"), h, false)?),
            mixer,
            q_norm: None,
            k_norm: None,
            post_attn_norm: None,
            mlp_norm: Some(l.norm(
                &n("post_attention_layernorm", "post_attention_norm"),
                h,
                false,
            )?),
            mlp: Mlp::Experts(Experts {
                router,
                experts,
                shared: None,
                expert_scale: None,
                beside: None,
            }),
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

/// Row `e` of a `[experts, width]` bias stack as a vector.
fn bias_row(stack: &Weight, e: usize) -> Result<Weight> {
    let row = stack.narrow_rows(e, 1)?;
    Weight::from_f32(
        format!("{}[{e}]", stack.name),
        vec![stack.cols()],
        &row.to_f32(),
    )
}

/// The Hub's gpt-oss checkpoints: experts in MXFP4 as `*_blocks` `[experts, rows, cols / 32, 16]`
/// (two values per byte, the even one in the low nibble) and `*_scales` `[experts, rows, cols /
/// 32]` (e8m0), `gate_up` rows interleaved. Each expert becomes ggml's MXFP4 blocks (the scale
/// byte, then byte j holding values j and j + 16), as llama.cpp's converter repacks them: the
/// same values, 4.25 bits each, in memory (the repacking needs a copy, not a mapping).
fn hf_mxfp4_experts(
    l: &Loader<'_>,
    n: &dyn Fn(&str, &str) -> String,
    x: &ExpertSpec,
) -> Result<Vec<Expert>> {
    let (h, w, count) = (l.spec.hidden, x.width, x.count);
    let path = l.src.path();
    if !h.is_multiple_of(32) || !w.is_multiple_of(32) {
        return Err(PrismError::format(
            path,
            format!("MXFP4 experts need widths that are whole 32-value blocks, not {h} and {w}"),
        ));
    }
    // (blocks, scales) of one projection, shapes checked.
    let load = |what: &str, rows: usize, cols: usize| -> Result<(&[u8], &[u8])> {
        let b = crate::weights::get_bytes(
            l.src,
            &n(&format!("mlp.experts.{what}_blocks"), ""),
            &[count, rows, cols / 32, 16],
        )?;
        let s = crate::weights::get_bytes(
            l.src,
            &n(&format!("mlp.experts.{what}_scales"), ""),
            &[count, rows, cols / 32],
        )?;
        Ok((b, s))
    };
    let (gu_b, gu_s) = load("gate_up_proj", 2 * w, h)?;
    let (d_b, d_s) = load("down_proj", h, w)?;
    // Rows `rows` of expert e as one ggml MXFP4 matrix.
    let repack = |(b, s): (&[u8], &[u8]), e: usize, rows: &[usize], total: usize, cols: usize| {
        let nb = cols / 32;
        let mut out = Vec::with_capacity(rows.len() * nb * 17);
        for &r in rows {
            for blk in 0..nb {
                let at = (e * total + r) * nb + blk;
                out.push(s[at]);
                let q = &b[at * 16..at * 16 + 16];
                let nib = |v: usize| (q[v / 2] >> (4 * (v % 2))) & 0xf;
                out.extend((0..16).map(|j| nib(j) | (nib(j + 16) << 4)));
            }
        }
        out
    };
    let gu_bias = get(
        l.src,
        &n("mlp.experts.gate_up_proj_bias", ""),
        &[count, 2 * w],
    )?;
    let down_bias = get(l.src, &n("mlp.experts.down_proj_bias", ""), &[count, h])?;
    let even: Vec<usize> = (0..w).map(|j| 2 * j).collect();
    let odd: Vec<usize> = (0..w).map(|j| 2 * j + 1).collect();
    let all: Vec<usize> = (0..h).collect();
    let matrix = |name: String, bytes: Vec<u8>, rows: usize, cols: usize| {
        Weight::new(
            name,
            vec![rows, cols],
            crate::quant::GgmlType::MXFP4,
            crate::weights::Bytes::Owned(std::sync::Arc::new(bytes)),
            0,
        )
        .map_err(|e| PrismError::format(path, e.to_string()))
    };
    (0..count)
        .map(|e| {
            let b = bias_row(&gu_bias, e)?;
            let part = |rows: &[usize], what: &str| -> Result<Linear> {
                Ok(Linear {
                    weight: matrix(
                        n(&format!("mlp.experts.{what}[{e}]"), ""),
                        repack((gu_b, gu_s), e, rows, 2 * w, h),
                        w,
                        h,
                    )?,
                    bias: Some(b.gather_rows(rows)?),
                })
            };
            Ok(Expert {
                gate: part(&even, "gate")?,
                up: part(&odd, "up")?,
                down: Linear {
                    weight: matrix(
                        n(&format!("mlp.experts.down[{e}]"), ""),
                        repack((d_b, d_s), e, &all, h, w),
                        h,
                        w,
                    )?,
                    bias: Some(bias_row(&down_bias, e)?),
                },
            })
        })
        .collect()
}

/// llama.cpp's stacks: `ffn_{gate,up,down}_exps` with their `.bias` stacks `[experts, width]`.
fn gguf_experts(l: &Loader<'_>, i: usize, x: &ExpertSpec) -> Result<Vec<Expert>> {
    let (h, w, n) = (l.spec.hidden, x.width, x.count);
    let stack = |name: &str, rows, cols| {
        get_stacked(l.src, &format!("blk.{i}.{name}.weight"), n, rows, cols)
    };
    let bias = |name: &str, width| get(l.src, &format!("blk.{i}.{name}.bias"), &[n, width]);
    let (g, u, d) = (
        stack("ffn_gate_exps", w, h)?,
        stack("ffn_up_exps", w, h)?,
        stack("ffn_down_exps", h, w)?,
    );
    let (gb, ub, db) = (
        bias("ffn_gate_exps", w)?,
        bias("ffn_up_exps", w)?,
        bias("ffn_down_exps", h)?,
    );
    g.into_iter()
        .zip(u)
        .zip(d)
        .enumerate()
        .map(|(e, ((g, u), d))| {
            Ok(Expert {
                gate: Linear {
                    weight: g,
                    bias: Some(bias_row(&gb, e)?),
                },
                up: Linear {
                    weight: u,
                    bias: Some(bias_row(&ub, e)?),
                },
                down: Linear {
                    weight: d,
                    bias: Some(bias_row(&db, e)?),
                },
            })
        })
        .collect()
}

/// transformers 5's stacks: `gate_up_proj` `[experts, hidden, 2 * width]` (x @ W, gate and up
/// interleaved column by column), `down_proj` `[experts, width, hidden]`, and their biases.
fn hf_experts(
    l: &Loader<'_>,
    n: &dyn Fn(&str, &str) -> String,
    x: &ExpertSpec,
) -> Result<Vec<Expert>> {
    let (h, w, count) = (l.spec.hidden, x.width, x.count);
    if l.src
        .info(&n("mlp.experts.gate_up_proj_blocks", ""))
        .is_some()
    {
        return hf_mxfp4_experts(l, n, x);
    }
    let gate_up = get_stacked(l.src, &n("mlp.experts.gate_up_proj", ""), count, h, 2 * w)?;
    let down = get_stacked(l.src, &n("mlp.experts.down_proj", ""), count, w, h)?;
    let gu_bias = get(
        l.src,
        &n("mlp.experts.gate_up_proj_bias", ""),
        &[count, 2 * w],
    )?;
    let down_bias = get(l.src, &n("mlp.experts.down_proj_bias", ""), &[count, h])?;
    let even: Vec<usize> = (0..w).map(|j| 2 * j).collect();
    let odd: Vec<usize> = (0..w).map(|j| 2 * j + 1).collect();
    gate_up
        .into_iter()
        .zip(down)
        .enumerate()
        .map(|(e, (gu, d))| {
            // [hidden, 2w] transposed is [2w, hidden]: gate rows are the even ones.
            let t = gu.transposed()?;
            let b = bias_row(&gu_bias, e)?;
            let part = |rows: &[usize]| -> Result<Linear> {
                Ok(Linear {
                    weight: t.gather_rows(rows)?,
                    bias: Some(b.gather_rows(rows)?),
                })
            };
            Ok(Expert {
                gate: part(&even)?,
                up: part(&odd)?,
                down: Linear {
                    weight: d.transposed()?,
                    bias: Some(bias_row(&down_bias, e)?),
                },
            })
        })
        .collect()
}
