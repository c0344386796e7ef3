//! Mixture-of-experts weights in the layouts checkpoints store them: llama.cpp's stacks
//! (`ffn_gate_exps` `[experts, width, hidden]`, one tensor per projection), the Hub's one tensor
//! per expert (`mlp.experts.E.gate_proj.weight`), and transformers 5's fused stacks
//! (`mlp.experts.gate_up_proj` `[experts, 2 * width, hidden]`, `mlp.experts.down_proj`). Each
//! expert becomes a view of the stored bytes; nothing is copied.

use super::{ArchSpec, Bias, Loader, Names};
use crate::error::{PrismError, Result};
use crate::weights::{get_stacked, Expert, Experts, Linear, SharedExpert, Weight};

/// Layer `i`'s router and experts, with every shape checked against the spec.
pub(crate) fn load(l: &Loader<'_>, names: &Names, i: usize) -> Result<Experts> {
    let spec: &ArchSpec = l.spec;
    let x = spec.experts.ok_or_else(|| {
        PrismError::format(
            l.src.path(),
            format!("layer {i} has experts but the model has no expert count"),
        )
    })?;
    let (h, w, n) = (spec.hidden, x.width, x.count);
    let router = l.linear(&names.layer(i, "mlp.gate", "ffn_gate_inp"), n, h, Bias::No)?;
    let plain = |w: Weight| Linear {
        weight: w,
        bias: None,
    };
    let experts: Vec<Expert> = if names.gguf {
        let stack = |name: &str, rows, cols| {
            get_stacked(l.src, &format!("blk.{i}.{name}.weight"), n, rows, cols)
        };
        let (g, u, d) = (
            stack("ffn_gate_exps", w, h)?,
            stack("ffn_up_exps", w, h)?,
            stack("ffn_down_exps", h, w)?,
        );
        g.into_iter()
            .zip(u)
            .zip(d)
            .map(|((g, u), d)| Expert {
                gate: plain(g),
                up: plain(u),
                down: plain(d),
            })
            .collect()
    } else {
        let fused = names.layer(i, "mlp.experts.gate_up_proj", "");
        if l.src.info(&fused).is_some() {
            let gate_up = get_stacked(l.src, &fused, n, 2 * w, h)?;
            let down = get_stacked(l.src, &names.layer(i, "mlp.experts.down_proj", ""), n, h, w)?;
            split_gate_up(gate_up, down, w)?
        } else {
            (0..n)
                .map(|e| {
                    let p = |what: &str| names.layer(i, &format!("mlp.experts.{e}.{what}"), "");
                    Ok(Expert {
                        gate: l.linear(&p("gate_proj"), w, h, Bias::No)?,
                        up: l.linear(&p("up_proj"), w, h, Bias::No)?,
                        down: l.linear(&p("down_proj"), h, w, Bias::No)?,
                    })
                })
                .collect::<Result<_>>()?
        }
    };
    let shared = match x.shared {
        None => None,
        Some(sw) => {
            let n = |hf: &str, gg: &str| names.layer(i, hf, gg);
            let lin = |hf: &str, gg: &str, out, inp| l.linear(&n(hf, gg), out, inp, Bias::No);
            // GGUF stores the shared expert's gate as a vector `[hidden]`, HF as `[1, hidden]`.
            let gate = if names.gguf {
                let v = crate::weights::get(l.src, &n("", "ffn_gate_inp_shexp.weight"), &[h])?;
                plain(Weight::from_f32(v.name.clone(), vec![1, h], &v.to_f32())?)
            } else {
                lin("mlp.shared_expert_gate", "", 1, h)?
            };
            Some(SharedExpert {
                mlp: Expert {
                    gate: lin("mlp.shared_expert.gate_proj", "ffn_gate_shexp", sw, h)?,
                    up: lin("mlp.shared_expert.up_proj", "ffn_up_shexp", sw, h)?,
                    down: lin("mlp.shared_expert.down_proj", "ffn_down_shexp", h, sw)?,
                },
                gate,
            })
        }
    };
    Ok(Experts {
        router,
        experts,
        shared,
        expert_scale: None,
        beside: None,
    })
}

/// Experts from fused stacks: each `gate_up` `[2 * width, hidden]` (gate rows first) split into
/// views, with its `down`.
pub(crate) fn split_gate_up(
    gate_up: Vec<Weight>,
    down: Vec<Weight>,
    width: usize,
) -> Result<Vec<Expert>> {
    let plain = |weight: Weight| Linear { weight, bias: None };
    gate_up
        .into_iter()
        .zip(down)
        .map(|(gu, d)| {
            Ok(Expert {
                gate: plain(gu.narrow_rows(0, width)?),
                up: plain(gu.narrow_rows(width, width)?),
                down: plain(d),
            })
        })
        .collect()
}
