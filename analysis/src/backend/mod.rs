//! Backends execute an [`ArchSpec`] on token ids. The CPU backend (candle-core) is the reference;
//! the GPU backend (wgpu) fills the same [`ForwardOutput`].

pub mod cpu;
pub mod gpu;

use std::sync::{Arc, OnceLock};

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
    /// How many next-token predictions to keep per position (0 means 5).
    pub top_k: usize,
}

impl Capture {
    pub fn all() -> Self {
        Capture {
            attention: true,
            residual: true,
            logits: true,
            logit_lens: true,
            top_k: 5,
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

/// Per-position statistics a backend may compute itself instead of returning the logits
/// (row i describes the distribution predicted at position i for token i + 1).
#[derive(Debug, Clone)]
pub struct RowStats {
    pub entropy_bits: Vec<f64>,
    /// Surprisal of the actual next token (meaningless on the last row).
    pub surprisal_bits: Vec<f64>,
    pub rank: Vec<usize>,
    pub top: Vec<Vec<IdProb>>,
}

/// RoPE cos and sin tables `[seq][head_dim / 2]`, computed in f32 as transformers does; both
/// backends use these exact numbers.
pub fn rope_tables(seq: usize, head_dim: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let dim = head_dim as f32;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / dim))
        .collect();
    let mut cos = Vec::with_capacity(seq * half);
    let mut sin = Vec::with_capacity(seq * half);
    for p in 0..seq {
        for f in &inv_freq {
            let angle = p as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// What a backend computes for one sequence.
#[derive(Debug, Clone)]
pub struct ForwardOutput {
    pub seq: usize,
    pub hidden: usize,
    /// `[seq, vocab]` logits for decoders (the GPU returns them only when captured).
    pub logits: Option<Vec<f32>>,
    /// Statistics computed by the backend (the GPU's way of not shipping logits back).
    pub row_stats: Option<RowStats>,
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
    /// The GPU adapter, for GPU backends.
    fn adapter(&self) -> Option<gpu::context::AdapterDescription> {
        None
    }
    /// For GPU backends: (bytes of weights held, bytes allocated by the last run).
    fn gpu_bytes(&self) -> Option<(u64, u64)> {
        None
    }
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
///
/// `gpu` takes any adapter, software ones included; `auto` takes a hardware GPU when there is one
/// and otherwise the CPU, and falls back to the CPU when a GPU run fails.
pub fn create(
    model: &Arc<Model>,
    choice: BackendChoice,
) -> Result<(Box<dyn Backend>, Vec<String>)> {
    match choice {
        BackendChoice::Cpu => Ok((Box::new(cpu::CpuBackend::new(model)?), Vec::new())),
        BackendChoice::Gpu => {
            let ctx = Arc::new(gpu::context::GpuContext::new(true)?);
            Ok((Box::new(gpu::GpuBackend::new(model, ctx)?), Vec::new()))
        }
        BackendChoice::Auto => {
            match gpu::context::GpuContext::new(false)
                .and_then(|ctx| gpu::GpuBackend::new(model, Arc::new(ctx)))
            {
                Ok(g) => Ok((
                    Box::new(Fallback {
                        gpu: g,
                        model: model.clone(),
                        cpu: OnceLock::new(),
                    }),
                    Vec::new(),
                )),
                Err(e) => Ok((
                    Box::new(cpu::CpuBackend::new(model)?),
                    vec![format!("backend auto: using the CPU ({e})")],
                )),
            }
        }
    }
}

/// Like [`create`], with a GPU device that already exists (the app's, when eframe renders with
/// wgpu): `gpu` uses it whatever its kind, `auto` uses it when it is a hardware GPU.
pub fn create_with_device(
    model: &Arc<Model>,
    choice: BackendChoice,
    ctx: Arc<gpu::context::GpuContext>,
) -> Result<(Box<dyn Backend>, Vec<String>)> {
    match choice {
        BackendChoice::Cpu => create(model, choice),
        BackendChoice::Gpu => Ok((
            Box::new(gpu::GpuBackend::new(model, ctx)?),
            vec!["sharing the window's GPU device".into()],
        )),
        BackendChoice::Auto if !ctx.adapter.is_software() => {
            let g = gpu::GpuBackend::new(model, ctx)?;
            Ok((
                Box::new(Fallback {
                    gpu: g,
                    model: model.clone(),
                    cpu: OnceLock::new(),
                }),
                vec!["sharing the window's GPU device".into()],
            ))
        }
        BackendChoice::Auto => create(model, choice),
    }
}

/// Wraps a GPU backend so that a failed run (device lost, out of memory, a limit) is retried on the
/// CPU, as `auto` does.
pub fn with_cpu_fallback(gpu: gpu::GpuBackend, model: Arc<Model>) -> Box<dyn Backend> {
    Box::new(Fallback {
        gpu,
        model,
        cpu: OnceLock::new(),
    })
}

/// `auto` on a GPU: a failed GPU run (device lost, out of memory) is retried on the CPU.
struct Fallback {
    gpu: gpu::GpuBackend,
    model: Arc<Model>,
    cpu: OnceLock<std::result::Result<cpu::CpuBackend, String>>,
}

impl Backend for Fallback {
    fn describe(&self) -> String {
        match self.cpu.get() {
            Some(Ok(c)) => format!("{} (fell back from the GPU)", c.describe()),
            _ => self.gpu.describe(),
        }
    }

    fn adapter(&self) -> Option<gpu::context::AdapterDescription> {
        self.gpu.adapter()
    }

    fn gpu_bytes(&self) -> Option<(u64, u64)> {
        self.gpu.gpu_bytes()
    }

    fn forward(&self, ids: &[u32], capture: Capture) -> Result<ForwardOutput> {
        if let Some(Ok(c)) = self.cpu.get() {
            return c.forward(ids, capture);
        }
        match self.gpu.forward(ids, capture) {
            Ok(out) => Ok(out),
            Err(PrismError::Backend(msg)) => {
                eprintln!("prism: the GPU run failed ({msg}); retrying on the CPU");
                let cpu = self
                    .cpu
                    .get_or_init(|| cpu::CpuBackend::new(&self.model).map_err(|e| e.to_string()));
                match cpu {
                    Ok(c) => c.forward(ids, capture),
                    Err(e) => Err(PrismError::Backend(format!(
                        "GPU failed ({msg}) and the CPU backend could not start ({e})"
                    ))),
                }
            }
            Err(e) => Err(e),
        }
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
