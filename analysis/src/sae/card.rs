//! One feature of an SAE as a reader looks at it: where it fires on a run (its activation per
//! token, how often, how strongly), what it writes toward (the logit effect: the tokens whose
//! unembedding rows its decoder direction raises and lowers most, `W_dec[j] · W_U` with no final
//! norm, as SAELens and Neuronpedia report it; a hook_z direction goes through the layer's o_proj
//! first), and its nearest features by decoder cosine.

use serde::Serialize;

use super::{FeatureRun, Sae};
use crate::error::{PrismError, Result};
use crate::model::Model;

/// Tokens with a direction's effect on their logit.
pub type TokenEffects = Vec<(u32, f32)>;

/// A feature's card from one run.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureCard {
    pub feature: usize,
    /// Its activation at every token of the run (0 where it is not active).
    pub acts: Vec<f32>,
    /// On how many tokens it is active.
    pub active: usize,
    pub max_act: f32,
    /// The tokens it raises most, largest first: (token id, W_dec[j] · W_U[token]).
    pub logits_up: Vec<(u32, f32)>,
    /// The tokens it lowers most, most negative first.
    pub logits_down: Vec<(u32, f32)>,
    /// The features whose decoder directions are nearest, by cosine, largest first.
    pub neighbours: Vec<(usize, f32)>,
}

/// Feature `j`'s card from `run` (a [`super::features`] run whose per-token lists hold every
/// active feature, i.e. `top` at least the largest L0), with `k` tokens each way and `k` neighbours.
pub fn card(model: &Model, sae: &Sae, run: &FeatureRun, j: usize, k: usize) -> Result<FeatureCard> {
    let direction = sae.direction(j).ok_or_else(|| {
        PrismError::Input(format!(
            "feature {j} is out of range: {} has features 0..{}",
            sae.path.display(),
            sae.d_sae - 1
        ))
    })?;
    let acts: Vec<f32> = run
        .features
        .iter()
        .map(|f| f.iter().find(|(id, _)| *id == j).map_or(0.0, |&(_, a)| a))
        .collect();
    let (logits_up, logits_down) = logit_effect(model, &sae.to_residual(model, direction)?, k)?;
    Ok(FeatureCard {
        feature: j,
        active: acts.iter().filter(|&&a| a != 0.0).count(),
        max_act: acts.iter().fold(0f32, |m, &a| m.max(a)),
        acts,
        logits_up,
        logits_down,
        neighbours: neighbours(sae, j, k),
    })
}

/// The `k` tokens a direction raises most and the `k` it lowers most through the unembedding.
pub fn logit_effect(
    model: &Model,
    direction: &[f32],
    k: usize,
) -> Result<(TokenEffects, TokenEffects)> {
    if !model.spec.causal {
        return Err(PrismError::Input(format!(
            "{} is an encoder: it has no unembedding for a logit effect",
            model.spec.architecture
        )));
    }
    let w = model.weights.unembedding();
    if w.cols() != direction.len() {
        return Err(PrismError::Input(format!(
            "the direction has {} values; the unembedding's rows have {}",
            direction.len(),
            w.cols()
        )));
    }
    let mut row = vec![0f32; w.cols()];
    let mut effect: Vec<(u32, f32)> = (0..w.rows())
        .map(|v| {
            w.decode_row(v, 0, &mut row);
            let dot: f64 = row
                .iter()
                .zip(direction)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            (v as u32, dot as f32)
        })
        .collect();
    effect.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let up = effect.iter().take(k).copied().collect();
    let down = effect.iter().rev().take(k).copied().collect();
    Ok((up, down))
}

/// The `k` features whose decoder rows have the largest cosine with feature `j`'s (itself left
/// out), exactly (every row compared).
pub fn neighbours(sae: &Sae, j: usize, k: usize) -> Vec<(usize, f32)> {
    let n = sae.d_in;
    let norm = |r: &[f32]| r.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    let Some(dj) = sae.direction(j) else {
        return Vec::new();
    };
    let nj = norm(dj);
    let mut cos: Vec<(usize, f32)> = sae
        .w_dec
        .chunks(n)
        .enumerate()
        .filter(|&(i, _)| i != j)
        .map(|(i, r)| {
            let dot: f64 = r.iter().zip(dj).map(|(&a, &b)| a as f64 * b as f64).sum();
            let d = norm(r) * nj;
            (i, if d > 0.0 { (dot / d) as f32 } else { 0.0 })
        })
        .collect();
    cos.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    cos.truncate(k);
    cos
}
