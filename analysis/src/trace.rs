//! A [`Trace`] is everything one forward pass showed: tokens, per-token metrics, and whatever was
//! captured (attention, residual stream, logit lens). Views and the CLI read only this.

use serde::Serialize;

use crate::backend::{check_ids, run_one, AttentionMaps, Backend, Capture, IdProb, RunOutput};
use crate::error::{PrismError, Result};
use crate::intervene::{Intervention, Site};
use crate::metrics::per_token;
use crate::model::Model;

#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: u32,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub id: u32,
    pub text: String,
    pub p: f32,
}

#[derive(Debug, Clone)]
pub struct Trace {
    pub tokens: Vec<TokenInfo>,
    /// `-log2 p(token_i | tokens before i)`; `None` for the first token and for encoders.
    pub surprisal_bits: Vec<Option<f64>>,
    /// Entropy of the distribution that predicted token i.
    pub entropy_bits: Vec<Option<f64>>,
    /// Rank of token i under that distribution (1 = top choice).
    pub rank: Vec<Option<usize>>,
    /// At position i: the top-k predictions for token i + 1.
    pub top: Vec<Vec<Prediction>>,
    /// The run itself: one sequence, its rows, their statistics and whatever was captured.
    pub output: RunOutput,
    pub backend: String,
    /// The interventions this run had (empty for a plain run).
    pub interventions: Vec<Intervention>,
}

impl Trace {
    /// Runs `backend` on `ids` and computes the metrics.
    pub fn run(
        model: &Model,
        backend: &dyn Backend,
        ids: &[u32],
        capture: Capture,
        top_k: usize,
    ) -> Result<Trace> {
        Trace::run_with(model, backend, ids, capture, top_k, &[])
    }

    /// [`Trace::run`] with interventions, which the trace records.
    pub fn run_with(
        model: &Model,
        backend: &dyn Backend,
        ids: &[u32],
        capture: Capture,
        top_k: usize,
        interventions: &[Intervention],
    ) -> Result<Trace> {
        check_ids(model, ids)?;
        for iv in interventions {
            iv.validate(&model.spec, ids.len())?;
        }
        let output = run_one(backend, ids, capture, interventions)?;
        Trace::from_output(model, backend, ids, output, capture, top_k, interventions)
    }

    /// Several sequences of the same length in one pass (`batch` sequences of the backend's
    /// request), one trace each, as [`Trace::run`] gives it for that sequence alone.
    pub fn run_batch(
        model: &Model,
        backend: &dyn Backend,
        seqs: &[&[u32]],
        capture: Capture,
        top_k: usize,
    ) -> Result<Vec<Trace>> {
        let Some(first) = seqs.first() else {
            return Ok(Vec::new());
        };
        let seq = first.len();
        if seqs.iter().any(|s| s.len() != seq) {
            return Err(PrismError::Input(
                "a batch of sequences must have one length".into(),
            ));
        }
        let mut ids = Vec::with_capacity(seqs.len() * seq);
        let mut targets = Vec::with_capacity(seqs.len() * seq);
        for s in seqs {
            check_ids(model, s)?;
            ids.extend_from_slice(s);
            targets.extend(crate::metrics::next_token_targets(s));
        }
        let mut req = crate::backend::Request::ids(&ids);
        req.batch = seqs.len();
        req.seq = seq;
        req.capture = Capture {
            top_k: capture.top_k.max(1),
            ..capture
        };
        req.targets = Some(&targets);
        let output = backend.run(&req)?;
        seqs.iter()
            .enumerate()
            .map(|(b, s)| {
                Trace::from_output(model, backend, s, output.sequence(b), capture, top_k, &[])
            })
            .collect()
    }

    /// The trace of `ids` from the output of their run.
    fn from_output(
        model: &Model,
        backend: &dyn Backend,
        ids: &[u32],
        mut output: RunOutput,
        capture: Capture,
        top_k: usize,
        interventions: &[Intervention],
    ) -> Result<Trace> {
        let text = |id: u32| model.token_text(id);
        let n = ids.len();
        let (mut surprisal_bits, mut entropy_bits, mut rank) =
            (vec![None; n], vec![None; n], vec![None; n]);
        let mut top = vec![Vec::new(); n];
        if let Some(stats) = output.stats() {
            if stats.top.len() != n {
                return Err(PrismError::Backend(format!(
                    "the backend returned statistics of {} rows for {n} tokens",
                    stats.top.len()
                )));
            }
            surprisal_bits = per_token(&stats.surprisal_bits, n);
            entropy_bits = per_token(&stats.entropy_bits, n);
            rank = per_token(&stats.rank, n);
            top = stats
                .top
                .iter()
                .map(|row| {
                    row.iter()
                        .take(top_k)
                        .map(|&IdProb { id, p }| Prediction {
                            id,
                            text: text(id),
                            p,
                        })
                        .collect()
                })
                .collect();
        }
        if !capture.logits {
            if let Some(l) = output.logits.as_mut() {
                l.full = None;
            }
        }
        Ok(Trace {
            tokens: ids
                .iter()
                .map(|&id| TokenInfo { id, text: text(id) })
                .collect(),
            surprisal_bits,
            entropy_bits,
            rank,
            top,
            output,
            backend: backend.describe(),
            interventions: interventions.to_vec(),
        })
    }

    /// Per mixture-of-experts layer, the fraction of the run's tokens routed to each expert (a
    /// row sums to top-k, less where an intervention removed experts), when the routing was
    /// captured: (layers, `[row][expert]`).
    pub fn expert_usage(&self) -> Option<(Vec<usize>, Vec<Vec<f64>>)> {
        let routing = self.output.routing.as_ref()?;
        let t = self.tokens.len().max(1);
        let mut layers = Vec::new();
        let mut rows = Vec::new();
        for (l, r) in routing.iter().enumerate() {
            let Some(r) = r else { continue };
            let mut row = vec![0f64; r.experts];
            for p in 0..self.tokens.len() {
                for (e, _) in r.chosen(p) {
                    row[e] += 1.0 / t as f64;
                }
            }
            layers.push(l);
            rows.push(row);
        }
        Some((layers, rows))
    }

    /// Sum of the surprisal over every predicted token.
    /// A captured site's values `[rows, width]` (a run with the residual stream, and the
    /// sub-layer sites where the site is one of them): what SAEs read and activation caches hold.
    pub fn site_values(&self, site: Site, layer: usize) -> Result<Vec<f32>> {
        let out = &self.output;
        let v = match site {
            Site::ResidPre => out.residual.as_ref().and_then(|r| r.get(layer)),
            Site::ResidPost => out.residual.as_ref().and_then(|r| r.get(layer + 1)),
            Site::MlpOut => out.sites.as_ref().and_then(|s| s.mlp_out.get(layer)),
            Site::AttnOut => out.sites.as_ref().and_then(|s| s.attn_out.get(layer)),
            Site::MlpAdded => out.sites.as_ref().and_then(|s| s.added(true, layer)),
            Site::AttnAdded => out.sites.as_ref().and_then(|s| s.added(false, layer)),
            Site::Head => out.sites.as_ref().and_then(|s| s.head_z.get(layer)),
            Site::Expert | Site::Feature => None,
        };
        v.cloned().filter(|v| !v.is_empty()).ok_or_else(|| {
            PrismError::Backend(format!(
                "the run did not capture {}@{layer} (a layer without that site?)",
                site.name()
            ))
        })
    }

    pub fn total_bits(&self) -> f64 {
        self.surprisal_bits.iter().flatten().sum()
    }

    /// UTF-8 bytes of the predicted tokens' text (every token but the first).
    pub fn predicted_bytes(&self) -> usize {
        self.tokens
            .iter()
            .zip(&self.surprisal_bits)
            .filter(|(_, s)| s.is_some())
            .map(|(t, _)| t.text.len())
            .sum()
    }

    pub fn attention(&self) -> Option<AttentionMaps<'_>> {
        self.output.attention_maps()
    }

    /// L2 norm of the residual stream at `[entry][position]` (entry 0 = embeddings).
    pub fn residual_norms(&self) -> Option<Vec<Vec<f64>>> {
        let h = self.output.hidden;
        self.output.residual.as_ref().map(|layers| {
            layers
                .iter()
                .map(|r| {
                    r.chunks(h)
                        .map(|row| {
                            row.iter()
                                .map(|&x| (x as f64) * (x as f64))
                                .sum::<f64>()
                                .sqrt()
                        })
                        .collect()
                })
                .collect()
        })
    }

    /// The sentence embedding: mean over tokens of the final hidden states, L2-normalized
    /// (the sentence-transformers recipe for encoders; for decoders, the final-norm hidden states).
    pub fn mean_pooled_embedding(&self) -> Vec<f32> {
        let h = self.output.hidden;
        let n = self.output.seq.max(1);
        let mut mean = vec![0f64; h];
        for row in self.output.final_hidden.chunks(h) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += x as f64;
            }
        }
        let norm = mean
            .iter()
            .map(|m| (m / n as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        mean.iter().map(|m| (m / n as f64 / norm) as f32).collect()
    }
}

/// What a run amounts to, computed once where the run is made (zstd -19 is the costly part): the
/// model's bits beside zstd's for the same text. The CLI prints it, the app shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub tokens: usize,
    /// Tokens with a surprisal (all but the first).
    pub predicted: usize,
    pub total_bits: f64,
    /// Bytes of the predicted tokens' text.
    pub predicted_bytes: usize,
    /// `total_bits / predicted_bytes` (0 when nothing was predicted).
    pub bits_per_byte: f64,
    pub text_bytes: Option<usize>,
    pub zstd_bytes: Option<usize>,
    pub zstd_bits_per_byte: Option<f64>,
}

impl RunSummary {
    pub fn of(trace: &Trace, text: Option<&str>) -> RunSummary {
        RunSummary::from_parts(
            trace.tokens.len(),
            trace.surprisal_bits.iter().flatten().count(),
            trace.total_bits(),
            trace.predicted_bytes(),
            text,
        )
    }

    /// The summary of `tokens` tokens of which `predicted` had a surprisal, `total_bits` in all
    /// over `predicted_bytes` bytes of their text; zstd's baseline on `text`.
    pub fn from_parts(
        tokens: usize,
        predicted: usize,
        total_bits: f64,
        predicted_bytes: usize,
        text: Option<&str>,
    ) -> RunSummary {
        let text_bytes = text.map(str::len);
        let zstd_bytes = text.map(crate::metrics::zstd_bytes);
        RunSummary {
            tokens,
            predicted,
            total_bits,
            predicted_bytes,
            bits_per_byte: if predicted_bytes > 0 {
                total_bits / predicted_bytes as f64
            } else {
                0.0
            },
            text_bytes,
            zstd_bytes,
            zstd_bits_per_byte: match (zstd_bytes, text_bytes) {
                (Some(z), Some(t)) if t > 0 => Some(z as f64 * 8.0 / t as f64),
                _ => None,
            },
        }
    }

    /// One line: tokens, the model's bits and bits per byte, and zstd's when there was a text.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} tokens · {:.1} bits for {} predicted tokens · {:.3} bits/byte",
            self.tokens, self.total_bits, self.predicted, self.bits_per_byte
        );
        if let (Some(z), Some(bpb)) = (self.zstd_bytes, self.zstd_bits_per_byte) {
            s.push_str(&format!(" · zstd -19: {} bits, {bpb:.3} bits/byte", z * 8));
        }
        s
    }
}
