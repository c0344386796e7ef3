//! Head ablation: the change in a text's total surprisal when one head (or a set of heads) is
//! zeroed or replaced by its mean over the text's positions. The per-head table runs each layer's
//! heads as one batch, starting at that layer from the baseline's residual stream.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::backend::{Backend, Capture, Input, LogitRows, Request};
use crate::error::{PrismError, Result};
use crate::intervene::{Intervention, Op, Site};
use crate::model::Model;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AblationMode {
    Zero,
    Mean,
}

impl AblationMode {
    pub fn op(self) -> Op {
        match self {
            AblationMode::Zero => Op::Zero,
            AblationMode::Mean => Op::Mean,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AblationResult {
    pub baseline_bits: f64,
    /// `[layer][head]`: total bits with the head ablated minus without.
    pub delta_bits: Vec<Vec<f64>>,
    #[serde(skip)]
    pub baseline_surprisal: Vec<f64>,
}

/// The intervention that ablates one head at every position.
pub fn head_ablation(layer: usize, head: usize, mode: AblationMode) -> Intervention {
    Intervention::new(Site::Head, layer, mode.op()).head(head)
}

/// The per-head table of Δ total bits for `ids`. `progress(done, total, row)` after each layer,
/// with that layer's Δ bits.
pub fn ablate(
    model: &Model,
    backend: &dyn Backend,
    ids: &[u32],
    mode: AblationMode,
    progress: &mut dyn FnMut(usize, usize, &[f64]),
    cancel: &AtomicBool,
) -> Result<AblationResult> {
    let s = &model.spec;
    crate::backend::require_causal(model, "head ablation")?;
    crate::backend::check_ids(model, ids)?;
    if ids.len() < 2 {
        return Err(PrismError::Input(
            "the text needs at least two tokens: the first one is not predicted".into(),
        ));
    }
    let t = ids.len();
    let targets: Vec<u32> = ids[1..].iter().copied().chain([u32::MAX]).collect();
    let total = |stats: &[f64]| -> f64 { stats.iter().filter(|x| x.is_finite()).sum() };
    let base = backend.run(&Request {
        batch: 1,
        seq: t,
        input: Input::Ids(ids),
        interventions: &[],
        per_sequence: &[],
        capture: Capture {
            residual: true,
            top_k: 1,
            ..Capture::default()
        },
        logits: LogitRows::All,
        targets: Some(&targets),
    })?;
    let base_surprisal = base
        .logits
        .as_ref()
        .map(|l| l.stats.surprisal_bits.clone())
        .unwrap_or_default();
    let baseline_bits = total(&base_surprisal);
    let residual = base.residual.unwrap_or_default();
    let mut delta_bits = Vec::with_capacity(s.n_layers);
    let per_batch = (2048 / t).clamp(1, s.n_heads);
    for layer in 0..s.n_layers {
        if cancel.load(Ordering::Relaxed) {
            return Err(PrismError::Cancelled);
        }
        let mut row = Vec::with_capacity(s.n_heads);
        for h0 in (0..s.n_heads).step_by(per_batch) {
            let n = per_batch.min(s.n_heads - h0);
            let per_sequence: Vec<Vec<Intervention>> = (h0..h0 + n)
                .map(|h| vec![head_ablation(layer, h, mode)])
                .collect();
            let data: Vec<f32> = (0..n)
                .flat_map(|_| residual[layer].iter().copied())
                .collect();
            let all_targets: Vec<u32> = (0..n).flat_map(|_| targets.iter().copied()).collect();
            let out = backend.run(&Request {
                batch: n,
                seq: t,
                input: Input::Residual { layer, data: &data },
                interventions: &[],
                per_sequence: &per_sequence,
                capture: Capture {
                    top_k: 1,
                    ..Capture::default()
                },
                logits: LogitRows::All,
                targets: Some(&all_targets),
            })?;
            let bits = out
                .logits
                .map(|l| l.stats.surprisal_bits)
                .unwrap_or_default();
            for chunk in bits.chunks(t) {
                row.push(total(chunk) - baseline_bits);
            }
        }
        delta_bits.push(row);
        progress(layer + 1, s.n_layers, &delta_bits[layer]);
    }
    Ok(AblationResult {
        baseline_bits,
        delta_bits,
        baseline_surprisal: base_surprisal[..t - 1].to_vec(),
    })
}
