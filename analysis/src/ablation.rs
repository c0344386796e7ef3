//! Head and expert ablation: the change in a text's total surprisal when one head (or a set of
//! heads) is zeroed or replaced by its mean over the text's positions, or when one expert of a
//! mixture-of-experts layer is (its routing weight zeroed, or replaced by its mean; the other
//! experts keep theirs). The table runs each layer's heads or experts as one batch, starting at
//! that layer from the baseline's residual stream.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::backend::{Backend, Capture, Input, LayerStart, LogitRows, Request};
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

/// What a table ablates, one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AblationUnit {
    Heads,
    /// The experts of every mixture-of-experts layer.
    Experts,
}

impl AblationUnit {
    /// "head" or "expert".
    pub fn name(self) -> &'static str {
        match self {
            AblationUnit::Heads => "head",
            AblationUnit::Experts => "expert",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AblationResult {
    pub unit: AblationUnit,
    pub baseline_bits: f64,
    /// The layer of each row: every layer for heads, the mixture-of-experts layers for experts.
    pub layers: Vec<usize>,
    /// `[row][head or expert]`: total bits with it ablated minus without.
    pub delta_bits: Vec<Vec<f64>>,
    #[serde(skip)]
    pub baseline_surprisal: Vec<f64>,
}

/// The intervention that ablates one head at every position.
pub fn head_ablation(layer: usize, head: usize, mode: AblationMode) -> Intervention {
    Intervention::new(Site::Head, layer, mode.op()).head(head)
}

/// The intervention that ablates one expert at every position: its routing weight zeroed (or
/// replaced by its mean over the positions), the other experts' weights kept.
pub fn expert_ablation(layer: usize, expert: usize, mode: AblationMode) -> Intervention {
    Intervention::new(Site::Expert, layer, mode.op()).expert(expert)
}

/// The per-head table of Δ total bits for `ids` ([`ablate_units`] with heads).
pub fn ablate(
    model: &Model,
    backend: &dyn Backend,
    ids: &[u32],
    mode: AblationMode,
    progress: &mut dyn FnMut(usize, usize, &[f64]),
    cancel: &AtomicBool,
) -> Result<AblationResult> {
    ablate_units(
        model,
        backend,
        ids,
        AblationUnit::Heads,
        mode,
        progress,
        cancel,
    )
}

/// The per-head or per-expert table of Δ total bits for `ids`. `progress(done, total, row)` after
/// each layer, with that layer's Δ bits.
pub fn ablate_units(
    model: &Model,
    backend: &dyn Backend,
    ids: &[u32],
    unit: AblationUnit,
    mode: AblationMode,
    progress: &mut dyn FnMut(usize, usize, &[f64]),
    cancel: &AtomicBool,
) -> Result<AblationResult> {
    let s = &model.spec;
    crate::backend::require_causal(model, &format!("{} ablation", unit.name()))?;
    let (layers, cols): (Vec<usize>, usize) = match (unit, s.experts) {
        // Linear-attention layers have no heads to ablate.
        (AblationUnit::Heads, _) => (
            (0..s.n_layers)
                .filter(|&l| s.layers[l].mixer == crate::arch::Mixer::Attention)
                .collect(),
            s.n_heads,
        ),
        (AblationUnit::Experts, Some(x)) => (
            (0..s.n_layers)
                .filter(|&l| s.layers[l].mlp == crate::arch::MlpKind::Experts)
                .collect(),
            x.count,
        ),
        (AblationUnit::Experts, None) => {
            return Err(PrismError::Input(format!(
                "expert ablation: {} has no mixture-of-experts layer",
                s.architecture
            )))
        }
    };
    let one = |layer, c| match unit {
        AblationUnit::Heads => head_ablation(layer, c, mode),
        AblationUnit::Experts => expert_ablation(layer, c, mode),
    };
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
    let mut delta_bits = Vec::with_capacity(layers.len());
    let per_batch = (2048 / t).clamp(1, cols);
    for (done, &layer) in layers.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(PrismError::Cancelled);
        }
        let mut row = Vec::with_capacity(cols);
        for h0 in (0..cols).step_by(per_batch) {
            let n = per_batch.min(cols - h0);
            let per_sequence: Vec<Vec<Intervention>> =
                (h0..h0 + n).map(|h| vec![one(layer, h)]).collect();
            let start = LayerStart::new(&model.spec, layer, &residual[layer], ids, n);
            let all_targets: Vec<u32> = (0..n).flat_map(|_| targets.iter().copied()).collect();
            let out = backend.run(&Request {
                batch: n,
                seq: t,
                input: start.input(),
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
        progress(done + 1, layers.len(), &delta_bits[done]);
    }
    Ok(AblationResult {
        unit,
        baseline_bits,
        layers,
        delta_bits,
        baseline_surprisal: base_surprisal[..t - 1].to_vec(),
    })
}
