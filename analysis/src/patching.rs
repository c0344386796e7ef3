//! Activation patching (causal tracing): how much of the clean run's answer comes back when one
//! site of the corrupt run takes its clean value. For each layer L and position p (or head h), the
//! corrupt run is repeated from layer L (the layers below are as in the corrupt run, so they are
//! not recomputed) with the site patched, every position (or head) of a layer in one batch.
//!
//! metric m = logit[answer] - logit[wrong] at the last position;
//! effect = (m_patched - m_corrupt) / (m_clean - m_corrupt).

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::backend::{Backend, Capture, Input, LayerStart, LogitRows, Request, RunOutput};
use crate::error::{PrismError, Result};
use crate::intervene::{Intervention, Op, PositionSet, Site};
use crate::model::Model;

#[derive(Debug, Clone, Serialize)]
pub struct PatchResult {
    pub site: Site,
    pub clean_metric: f64,
    pub corrupt_metric: f64,
    /// `[layer][position]`, or `[layer][head]` for the head site (NaN on the rows of
    /// linear-attention layers, which have no heads; JSON writes them as null).
    pub effect: Vec<Vec<f64>>,
    /// The raw metric of every patched run, same shape.
    #[serde(skip)]
    pub patched_metric: Vec<Vec<f64>>,
    /// The top prediction of every patched run at the last position (id, probability).
    #[serde(skip)]
    pub patched_top: Vec<Vec<(u32, f32)>>,
}

/// The answer-minus-wrong logit difference of each sequence's last row.
fn metrics(
    out: &RunOutput,
    vocab: usize,
    answer: u32,
    wrong: u32,
) -> Result<Vec<(f64, (u32, f32))>> {
    let logits = out
        .logits
        .as_ref()
        .ok_or_else(|| PrismError::Backend("no logits".into()))?;
    let full = logits
        .full
        .as_ref()
        .ok_or_else(|| PrismError::Backend("no full logits".into()))?;
    Ok(full
        .chunks(vocab)
        .zip(&logits.stats.top)
        .map(|(row, top)| {
            let m = row[answer as usize] as f64 - row[wrong as usize] as f64;
            let best = top.first().map(|t| (t.id, t.p)).unwrap_or((0, 0.0));
            (m, best)
        })
        .collect())
}

/// The checks a pair of patching prompts must pass, in one place for the CLI, the app and
/// [`patch`]: valid ids, and equal lengths (both tokenizations shown when they differ).
pub fn check_prompts(model: &Model, clean: &[u32], corrupt: &[u32]) -> Result<()> {
    crate::backend::check_ids(model, clean)?;
    crate::backend::check_ids(model, corrupt)?;
    if clean.len() != corrupt.len() {
        let show = |ids: &[u32]| {
            ids.iter()
                .map(|&i| match &model.tokenizer {
                    Some(t) => format!("{:?}", crate::tokenizer::show_token(&t.token_text(i))),
                    None => i.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        return Err(PrismError::Input(format!(
            "the clean prompt is {} tokens ({}) and the corrupt one {} ({}): patching needs prompts of equal length",
            clean.len(),
            show(clean),
            corrupt.len(),
            show(corrupt)
        )));
    }
    Ok(())
}

/// The one token of `text` (an answer such as " Paris"), or an error that shows its tokens.
/// `what` names it in the message ("answer", "wrong answer").
pub fn single_token(model: &Model, what: &str, text: &str) -> Result<u32> {
    let tok = model.tokenizer.as_ref().ok_or_else(|| {
        PrismError::Input(format!(
            "{} has no tokenizer: give the {what} as a token id",
            model.info.path.display()
        ))
    })?;
    let ids = tok.encode_plain(text)?;
    match ids.as_slice() {
        [one] => Ok(*one),
        _ => Err(PrismError::Input(format!(
            "the {what} {text:?} is {} tokens ({}), not one; pick a text that is a single token, with its leading space (e.g. \" Paris\")",
            ids.len(),
            ids.iter()
                .map(|&i| format!("{:?}", crate::tokenizer::show_token(&tok.token_text(i))))
                .collect::<Vec<_>>()
                .join(" ")
        ))),
    }
}

/// Runs the whole patching grid for `site`. `progress(done, total, row)` is called after each
/// layer with that layer's effects, so that a view can fill the grid in as it goes.
#[allow(clippy::too_many_arguments)]
pub fn patch(
    model: &Model,
    backend: &dyn Backend,
    clean: &[u32],
    corrupt: &[u32],
    answer: u32,
    wrong: u32,
    site: Site,
    progress: &mut dyn FnMut(usize, usize, &[f64]),
    cancel: &AtomicBool,
) -> Result<PatchResult> {
    let s = &model.spec;
    crate::backend::require_causal(model, "activation patching")?;
    if site == Site::Expert {
        return Err(PrismError::Input(
            "a patching grid patches activations; the expert routing is not one (patch mlp_out, or ablate experts)".into(),
        ));
    }
    if site == Site::Feature {
        return Err(PrismError::Input(
            "a patching grid patches activations; an SAE feature is not one (patch its SAE's site, or clamp the feature)".into(),
        ));
    }
    check_prompts(model, clean, corrupt)?;
    for (what, id) in [("answer", answer), ("wrong", wrong)] {
        if id as usize >= s.vocab {
            return Err(PrismError::Input(format!(
                "the {what} token id {id} is outside the vocabulary of {}",
                s.vocab
            )));
        }
    }
    let (t, h, vocab) = (clean.len(), s.hidden, s.vocab);
    let run = |ids: &[u32], sites: bool| -> Result<RunOutput> {
        backend.run(&Request {
            batch: 1,
            seq: ids.len(),
            input: Input::Ids(ids),
            interventions: &[],
            per_sequence: &[],
            capture: Capture {
                residual: true,
                logits: true,
                sites,
                top_k: 1,
                ..Capture::default()
            },
            logits: LogitRows::Last,
            targets: None,
        })
    };
    let clean_run = run(clean, true)?;
    let corrupt_run = run(corrupt, false)?;
    let clean_metric = metrics(&clean_run, vocab, answer, wrong)?[0].0;
    let corrupt_metric = metrics(&corrupt_run, vocab, answer, wrong)?[0].0;
    if (clean_metric - corrupt_metric).abs() < 1e-9 {
        return Err(PrismError::Input(format!(
            "the clean and corrupt runs give the same metric ({clean_metric:.4}): there is no effect to recover"
        )));
    }
    let clean_res = clean_run.residual.unwrap_or_default();
    let corrupt_res = corrupt_run.residual.unwrap_or_default();
    let sites = clean_run.sites.unwrap_or_default();
    let cols = if site == Site::Head { s.n_heads } else { t };
    let mut effect: Vec<Vec<f64>> = Vec::with_capacity(s.n_layers);
    let mut patched_metric = Vec::with_capacity(s.n_layers);
    let mut patched_top = Vec::with_capacity(s.n_layers);
    // Columns per batch, so that one batch stays near a thousand rows.
    let per_batch = (1024 / t).clamp(1, cols);
    for layer in 0..s.n_layers {
        if cancel.load(Ordering::Relaxed) {
            return Err(PrismError::Cancelled);
        }
        if site == Site::Head && s.layers[layer].mixer != crate::arch::Mixer::Attention {
            // A linear-attention layer has no heads: its row is not applicable (NaN).
            effect.push(vec![f64::NAN; cols]);
            patched_metric.push(vec![f64::NAN; cols]);
            patched_top.push(vec![(u32::MAX, f32::NAN); cols]);
            progress(layer + 1, s.n_layers, &effect[layer]);
            continue;
        }
        let start = &corrupt_res[layer];
        let mut row_m = Vec::with_capacity(cols);
        let mut row_top = Vec::with_capacity(cols);
        for c0 in (0..cols).step_by(per_batch) {
            let n = per_batch.min(cols - c0);
            let per_sequence: Vec<Vec<Intervention>> = (c0..c0 + n)
                .map(|c| {
                    let row = |v: &[f32], p: usize| v[p * h..(p + 1) * h].to_vec();
                    let iv = match site {
                        Site::ResidPre => Intervention::new(Site::ResidPre, layer, Op::Set)
                            .at(vec![c])
                            .with_vector(row(&clean_res[layer], c), None),
                        Site::AttnOut => Intervention::new(Site::AttnOut, layer, Op::Set)
                            .at(vec![c])
                            .with_vector(row(&sites.attn_out[layer], c), None),
                        Site::MlpOut => Intervention::new(Site::MlpOut, layer, Op::Set)
                            .at(vec![c])
                            .with_vector(row(&sites.mlp_out[layer], c), None),
                        Site::AttnAdded | Site::MlpAdded => {
                            let mlp = site == Site::MlpAdded;
                            let v = sites.added(mlp, layer).map_or(&[][..], |v| v);
                            Intervention::new(site, layer, Op::Set)
                                .at(vec![c])
                                .with_vector(row(v, c), None)
                        }
                        Site::ResidPost => Intervention::new(Site::ResidPost, layer, Op::Set)
                            .at(vec![c])
                            .with_vector(row(&clean_res[layer + 1], c), None),
                        // Refused above: a zero routing stands in, never reached.
                        Site::Expert | Site::Feature => {
                            Intervention::new(Site::Expert, layer, Op::Zero)
                        }
                        Site::Head => {
                            let z = &sites.head_z[layer];
                            let hd = s.head_dim_at(layer);
                            let width = s.n_heads * hd;
                            let values = (0..t)
                                .map(|p| z[p * width + c * hd..p * width + (c + 1) * hd].to_vec())
                                .collect();
                            Intervention {
                                positions: PositionSet::All,
                                values: Some(values),
                                ..Intervention::new(Site::Head, layer, Op::Patch).head(c)
                            }
                        }
                    };
                    vec![iv]
                })
                .collect();
            let start = LayerStart::new(s, layer, start, corrupt, n);
            let out = backend.run(&Request {
                batch: n,
                seq: t,
                input: start.input(),
                interventions: &[],
                per_sequence: &per_sequence,
                capture: Capture {
                    logits: true,
                    top_k: 1,
                    ..Capture::default()
                },
                logits: LogitRows::Last,
                targets: None,
            })?;
            for (m, top) in metrics(&out, vocab, answer, wrong)? {
                row_m.push(m);
                row_top.push(top);
            }
        }
        effect.push(
            row_m
                .iter()
                .map(|m| (m - corrupt_metric) / (clean_metric - corrupt_metric))
                .collect(),
        );
        patched_metric.push(row_m);
        patched_top.push(row_top);
        progress(layer + 1, s.n_layers, &effect[layer]);
    }
    Ok(PatchResult {
        site,
        clean_metric,
        corrupt_metric,
        effect,
        patched_metric,
        patched_top,
    })
}

/// The values of `iv`'s site in a run of `ids` (the source of a `patch`), one vector per position
/// of that run.
pub fn source_values(
    model: &Model,
    backend: &dyn Backend,
    ids: &[u32],
    iv: &Intervention,
) -> Result<Vec<Vec<f32>>> {
    crate::backend::check_ids(model, ids)?;
    let s = &model.spec;
    if iv.layer >= s.n_layers {
        return Err(PrismError::Input(format!(
            "intervention ({}): layer {} is out of range: the model has layers 0..{}",
            iv.describe(),
            iv.layer,
            s.n_layers - 1
        )));
    }
    let out = backend.run(&Request {
        batch: 1,
        seq: ids.len(),
        input: Input::Ids(ids),
        interventions: &[],
        per_sequence: &[],
        capture: Capture {
            residual: true,
            sites: true,
            ..Capture::default()
        },
        logits: LogitRows::None,
        targets: None,
    })?;
    let (h, hd) = (s.hidden, s.head_dim_at(iv.layer.min(s.n_layers - 1)));
    let residual = out.residual.unwrap_or_default();
    let sites = out.sites.unwrap_or_default();
    let l = iv.layer;
    let rows = |m: &[f32], width: usize, c0: usize, n: usize| -> Vec<Vec<f32>> {
        (0..ids.len())
            .map(|p| m[p * width + c0..p * width + c0 + n].to_vec())
            .collect()
    };
    Ok(match iv.site {
        Site::ResidPre => rows(&residual[l], h, 0, h),
        Site::ResidPost => rows(&residual[l + 1], h, 0, h),
        Site::AttnOut => rows(&sites.attn_out[l], h, 0, h),
        Site::MlpOut => rows(&sites.mlp_out[l], h, 0, h),
        Site::AttnAdded | Site::MlpAdded => {
            let v = sites.added(iv.site == Site::MlpAdded, l);
            rows(v.map_or(&[][..], |v| v), h, 0, h)
        }
        Site::Head => {
            let head = iv.head.unwrap_or(0).min(s.n_heads - 1);
            rows(&sites.head_z[l], s.n_heads * hd, head * hd, hd)
        }
        Site::Expert => {
            return Err(PrismError::Input(format!(
                "intervention ({}): the routing cannot be patched from another run; patch mlp_out instead",
                iv.describe()
            )))
        }
        Site::Feature => {
            return Err(PrismError::Input(format!(
                "intervention ({}): a feature is clamped, steered or ablated, not patched",
                iv.describe()
            )))
        }
    })
}
