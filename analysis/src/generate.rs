//! Generation with a KV cache on either backend: greedy or sampled (temperature, top-k, top-p, a
//! seed), stopping at an end-of-sequence token or a maximum, cancellable between tokens. Every
//! token carries its probability and the entropy of the model's distribution it came from (the
//! model's own, temperature 1, before any truncation: the model's confidence). Interventions
//! apply at every step; one that is not causal (`mean`) makes every step a full pass, because a
//! cache would keep values the intervention has since changed.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::backend::{Backend, Capture, Input, LogitRows, Request, Session};
use crate::error::{PrismError, Result};
use crate::intervene::{Intervention, Op, PositionSet};
use crate::metrics::row_stats;
use crate::model::Model;
use crate::rng::Rng;
use crate::trace::Prediction;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sampling {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most probable tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1: all).
    pub top_p: f32,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl Sampling {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(PrismError::Input(format!(
                "temperature {} must be 0 (greedy) or positive",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(PrismError::Input(format!(
                "top-p {} must be in (0, 1]",
                self.top_p
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GenToken {
    pub id: u32,
    pub text: String,
    /// The token's probability under the model.
    pub p: f32,
    /// Entropy (bits) of the model's next-token distribution at this step.
    pub entropy_bits: f64,
    /// The ten most probable tokens at this step.
    #[serde(skip)]
    pub top: Vec<Prediction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Eos,
    MaxTokens,
    /// The sequence filled the model's context (the positions it was trained for).
    Context,
    Cancelled,
}

impl StopReason {
    /// How the generation ended, in words.
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::Eos => "stopped at an end-of-sequence token",
            StopReason::MaxTokens => "stopped at the token limit",
            StopReason::Context => "stopped at the end of the model's context",
            StopReason::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub tokens: Vec<GenToken>,
    /// Every generated token decoded together.
    pub text: String,
    pub stop_reason: StopReason,
    #[serde(skip)]
    pub interventions: Vec<Intervention>,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenSettings {
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// Tokens that end the generation (they are kept as its last token).
    pub stop: Vec<u32>,
}

impl GenSettings {
    /// The model's own end tokens: its EOS (and end-of-turn, where the tokenizer names one).
    pub fn for_model(model: &Model, max_tokens: usize, sampling: Sampling) -> GenSettings {
        let stop = model.info.end_ids.clone();
        GenSettings {
            max_tokens,
            sampling,
            stop,
        }
    }
}

/// The next token from one logit row.
fn choose(row: &[f32], s: &Sampling, rng: &mut Rng) -> u32 {
    if s.temperature == 0.0 {
        // argmax; ties go to the smaller id, as torch.argmax does.
        let mut best = 0usize;
        for (i, &x) in row.iter().enumerate() {
            if x > row[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let mut order: Vec<u32> = (0..row.len() as u32).collect();
    order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
    if s.top_k > 0 {
        order.truncate(s.top_k.max(1));
    }
    let t = s.temperature as f64;
    let max = row[order[0] as usize] as f64;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((row[i as usize] as f64 - max) / t).exp())
        .collect();
    let z: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= z);
    if s.top_p < 1.0 {
        let mut cumulative = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cumulative += p;
            if cumulative >= s.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        let z: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= z);
    }
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut cumulative = 0.0;
    for (i, p) in probs.iter().enumerate() {
        cumulative += p;
        if u < cumulative {
            return order[i];
        }
    }
    order[probs.len() - 1]
}

/// Generates from `prompt` (ids), calling `on_token` as each token arrives.
#[allow(clippy::too_many_arguments)]
pub fn generate(
    model: &Model,
    backend: &dyn Backend,
    prompt: &[u32],
    settings: &GenSettings,
    interventions: &[Intervention],
    cancel: &AtomicBool,
    on_token: &mut dyn FnMut(&GenToken),
) -> Result<Generation> {
    let s = &model.spec;
    crate::backend::require_causal(model, "generation")?;
    crate::backend::check_ids(model, prompt)?;
    settings.sampling.validate()?;
    let capacity = (prompt.len() + settings.max_tokens).min(s.context_length);
    for iv in interventions {
        iv.validate(s, capacity)?;
    }
    let full_passes = interventions
        .iter()
        .any(|iv| iv.op == Op::Mean || (iv.op == Op::Patch && iv.positions == PositionSet::All));
    let text = |id: u32| model.token_text(id);
    let mut rng = Rng::new(settings.sampling.seed);
    let mut ids = prompt.to_vec();
    let mut tokens = Vec::new();
    let mut session: Option<Box<dyn Session + '_>> = if full_passes {
        None
    } else {
        Some(backend.session(1, capacity.max(1))?)
    };
    let mut fed = 0usize;
    let stop_reason = loop {
        if tokens.len() >= settings.max_tokens {
            break StopReason::MaxTokens;
        }
        if ids.len() >= s.context_length {
            break StopReason::Context;
        }
        if cancel.load(Ordering::Relaxed) {
            break StopReason::Cancelled;
        }
        let capture = Capture {
            logits: true,
            top_k: 10,
            ..Capture::default()
        };
        let new = match &session {
            Some(_) => &ids[fed..],
            None => &ids[..],
        };
        let req = Request {
            batch: 1,
            seq: new.len(),
            input: Input::Ids(new),
            interventions,
            per_sequence: &[],
            capture,
            logits: LogitRows::Last,
            targets: None,
        };
        let out = match session.as_mut() {
            Some(sess) => sess.run(&req)?,
            None => backend.run(&req)?,
        };
        fed = ids.len();
        let logits = out
            .logits
            .and_then(|l| l.full)
            .ok_or_else(|| PrismError::Backend("the backend returned no logits".into()))?;
        let row = &logits[logits.len() - s.vocab..];
        let id = choose(row, &settings.sampling, &mut rng);
        let st = row_stats(row, Some(id), 10);
        let token = GenToken {
            id,
            text: text(id),
            p: (st
                .surprisal_bits
                .map(|b| (-b * std::f64::consts::LN_2).exp())
                .unwrap_or(0.0)) as f32,
            entropy_bits: st.entropy_bits,
            top: st
                .top
                .iter()
                .map(|t| Prediction {
                    id: t.id,
                    text: text(t.id),
                    p: t.p,
                })
                .collect(),
        };
        on_token(&token);
        ids.push(id);
        tokens.push(token);
        if settings.stop.contains(&id) {
            break StopReason::Eos;
        }
    };
    let generated: Vec<u32> = tokens.iter().map(|t| t.id).collect();
    let text = match &model.tokenizer {
        Some(t) => t.decode(&generated)?,
        None => tokens.iter().map(|t| t.text.clone()).collect(),
    };
    Ok(Generation {
        prompt_ids: prompt.to_vec(),
        tokens,
        text,
        stop_reason,
        interventions: interventions.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_seeded_sampling() {
        let row = [0.1f32, 2.0, 2.0, -1.0, 0.5];
        let mut rng = Rng::new(1);
        assert_eq!(choose(&row, &Sampling::default(), &mut rng), 1);
        let s = Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 7,
        };
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..20)
                .map(|_| choose(&row, &s, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // top-k 1 and a tiny top-p are greedy whatever the temperature.
        let mut rng = Rng::new(3);
        for _ in 0..20 {
            let id = choose(
                &row,
                &Sampling {
                    temperature: 5.0,
                    top_k: 1,
                    ..s
                },
                &mut rng,
            );
            assert_eq!(id, 1);
            let id = choose(
                &row,
                &Sampling {
                    temperature: 5.0,
                    top_p: 0.01,
                    ..s
                },
                &mut rng,
            );
            assert_eq!(id, 1);
        }
    }
}
