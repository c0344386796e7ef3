//! Backends execute an [`ArchSpec`] on token ids. The CPU backend (candle-core) is the reference;
//! the GPU backend (wgpu) fills the same [`ForwardOutput`].

pub mod cpu;

use serde::Serialize;

use crate::checkpoint::Model;
use crate::error::{PrismError, Result};

/// What the caller wants back besides the final hidden states and logits. Everything is opt-in
/// because attention maps and residual streams are large.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capture {
    /// Attention probabilities for every layer and head.
    pub attention: bool,
    /// The residual stream after the embeddings and after every block.
    pub residual: bool,
    /// The full `[seq, vocab]` logits (the metrics are always computed).
    pub logits: bool,
    /// Top predictions of every layer's residual stream through the final norm and unembedding.
    pub logit_lens: bool,
}

impl Capture {
    pub fn all() -> Self {
        Capture {
            attention: true,
            residual: true,
            logits: true,
            logit_lens: true,
        }
    }
}

/// Attention probabilities `[layer][head][query][key]`, stored flat.
#[derive(Debug, Clone, Serialize)]
pub struct AttentionMaps {
    pub layers: usize,
    pub heads: usize,
    pub seq: usize,
    #[serde(skip)]
    pub data: Vec<f32>,
}

impl AttentionMaps {
    pub fn get(&self, layer: usize, head: usize, query: usize, key: usize) -> f32 {
        self.data[((layer * self.heads + head) * self.seq + query) * self.seq + key]
    }

    /// One head's `[query][key]` matrix as a flat slice.
    pub fn head(&self, layer: usize, head: usize) -> &[f32] {
        let n = self.seq * self.seq;
        let start = (layer * self.heads + head) * n;
        &self.data[start..start + n]
    }

    pub fn to_nested(&self) -> Vec<Vec<Vec<Vec<f32>>>> {
        (0..self.layers)
            .map(|l| {
                (0..self.heads)
                    .map(|h| {
                        self.head(l, h)
                            .chunks(self.seq)
                            .map(|r| r.to_vec())
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }
}

/// One prediction: a token id and its probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IdProb {
    pub id: u32,
    pub p: f32,
}

/// What a backend computes for one sequence.
#[derive(Debug, Clone)]
pub struct ForwardOutput {
    pub seq: usize,
    pub hidden: usize,
    /// `[seq, vocab]` logits for decoders; `None` for encoders.
    pub logits: Option<Vec<f32>>,
    /// `[seq, hidden]`: after the final norm for decoders, the last block's output for encoders.
    pub final_hidden: Vec<f32>,
    /// `n_layers + 1` entries of `[seq, hidden]`: the embedding output, then after each block.
    pub residual: Option<Vec<Vec<f32>>>,
    pub attention: Option<AttentionMaps>,
    /// `[n_layers + 1][seq]` top-5 of each residual entry through the final norm and unembedding.
    pub logit_lens: Option<Vec<Vec<Vec<IdProb>>>>,
}

pub trait Backend: Send {
    /// A short description for reports ("cpu (candle, 2 threads)").
    fn describe(&self) -> String;
    fn forward(&self, ids: &[u32], capture: Capture) -> Result<ForwardOutput>;
}

/// Which backend the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Cpu,
    Gpu,
    Auto,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(BackendChoice::Cpu),
            "gpu" => Ok(BackendChoice::Gpu),
            "auto" => Ok(BackendChoice::Auto),
            other => Err(format!("unknown backend {other:?} (cpu, gpu, auto)")),
        }
    }
}

/// Builds the requested backend. Returns the backend and notes to show the user (such as a fallback).
pub fn create(model: &Model, choice: BackendChoice) -> Result<(Box<dyn Backend>, Vec<String>)> {
    match choice {
        BackendChoice::Cpu => Ok((Box::new(cpu::CpuBackend::new(model)?), Vec::new())),
        BackendChoice::Gpu => Err(PrismError::Backend(
            "the GPU backend is not built yet in this version of Prism; use --backend cpu or auto"
                .into(),
        )),
        BackendChoice::Auto => Ok((
            Box::new(cpu::CpuBackend::new(model)?),
            vec!["backend auto: using the CPU (no GPU backend in this build)".into()],
        )),
    }
}

/// Refuses sequences a model cannot take, with a message that says why.
pub fn check_ids(model: &Model, ids: &[u32]) -> Result<()> {
    if ids.is_empty() {
        return Err(PrismError::Input(
            "the text is empty: there is nothing to run".into(),
        ));
    }
    if ids.len() > model.spec.context_length {
        return Err(PrismError::Input(format!(
            "the text is {} tokens long, but the model's context is {} tokens",
            ids.len(),
            model.spec.context_length
        )));
    }
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= model.spec.vocab) {
        return Err(PrismError::Input(format!(
            "token id {bad} is outside the model's vocabulary of {}",
            model.spec.vocab
        )));
    }
    Ok(())
}
