//! Backends execute an [`ArchSpec`](crate::arch::ArchSpec) on token ids. The forward pass is
//! written once ([`forward`]) over a small set of ops ([`exec::Exec`]); the CPU backend
//! (Prism's own packed GEMM over weights decoded at use, the reference) and the GPU backend (WGSL
//! through wgpu) implement those ops. Interventions, captures, batches of sequences, runs that
//! start at a layer, and KV-cached sessions therefore behave identically on both.

pub mod cpu;
mod edits;
pub mod exec;
pub mod forward;
pub mod gpu;

use std::sync::{Arc, OnceLock};

use crate::error::{PrismError, Result};
use crate::intervene::Intervention;
use crate::model::Model;

/// What the caller wants back besides the final hidden states. Everything is opt-in because
/// attention maps and residual streams are large.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capture {
    /// Attention probabilities for every layer and head.
    pub attention: bool,
    /// The residual stream after the embeddings and after every block.
    pub residual: bool,
    /// The full logits of the logit rows (the metrics are always computed).
    pub logits: bool,
    /// Top predictions of every residual entry through the final norm and unembedding.
    pub logit_lens: bool,
    /// How many next-token predictions to keep per position (0 means 5).
    pub top_k: usize,
    /// The attention output, MLP output and per-head attention values of every layer.
    pub sites: bool,
}

impl Capture {
    pub fn all() -> Self {
        Capture {
            attention: true,
            residual: true,
            logits: true,
            logit_lens: true,
            top_k: 5,
            sites: false,
        }
    }
}

/// One sequence's attention probabilities `[layer][head][query][key]`, a view of a run's
/// per-layer maps (no copy).
#[derive(Debug, Clone, Copy)]
pub struct AttentionMaps<'a> {
    pub layers: usize,
    pub heads: usize,
    pub seq: usize,
    per_layer: &'a [Vec<f32>],
}

impl<'a> AttentionMaps<'a> {
    pub fn get(&self, layer: usize, head: usize, query: usize, key: usize) -> f32 {
        self.head(layer, head)[query * self.seq + key]
    }

    /// One head's `[query][key]` matrix as a flat slice.
    pub fn head(&self, layer: usize, head: usize) -> &'a [f32] {
        let n = self.seq * self.seq;
        &self.per_layer[layer][head * n..(head + 1) * n]
    }

    /// Every map, `[layer][head][query][key]` flat.
    pub fn flat(&self) -> Vec<f32> {
        self.per_layer.concat()
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

pub use crate::metrics::{IdProb, RowStats};

/// Where a run starts.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Token ids, `batch * seq` of them.
    Ids(&'a [u32]),
    /// The residual stream entering block `layer` (`layer == n_layers`: after the last block),
    /// `batch * seq * hidden` values. Blocks below `layer` are not run.
    Residual { layer: usize, data: &'a [f32] },
}

/// Which rows get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows {
    None,
    /// The last row of each sequence.
    Last,
    All,
}

/// One run of the model over `batch` sequences of `seq` new tokens each.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub batch: usize,
    pub seq: usize,
    pub input: Input<'a>,
    /// Applied to every sequence.
    pub interventions: &'a [Intervention],
    /// Applied to sequence b only (empty, or one list per sequence), after the shared ones.
    pub per_sequence: &'a [Vec<Intervention>],
    pub capture: Capture,
    pub logits: LogitRows,
    /// Next-token targets of the logit rows, for surprisal and rank (`u32::MAX`: none).
    pub targets: Option<&'a [u32]>,
}

impl<'a> Request<'a> {
    /// The residual stream of one sequence of ids (no logits).
    pub fn residual(ids: &'a [u32]) -> Request<'a> {
        Request {
            capture: Capture {
                residual: true,
                ..Capture::default()
            },
            logits: LogitRows::None,
            ..Request::ids(ids)
        }
    }

    /// A plain run of one sequence of ids.
    pub fn ids(ids: &'a [u32]) -> Request<'a> {
        Request {
            batch: 1,
            seq: ids.len(),
            input: Input::Ids(ids),
            interventions: &[],
            per_sequence: &[],
            capture: Capture::default(),
            logits: LogitRows::All,
            targets: None,
        }
    }
}

/// Per-layer site values `[rows, width]`, captured when [`Capture::sites`] is set.
#[derive(Debug, Clone, Default)]
pub struct Sites {
    pub attn_out: Vec<Vec<f32>>,
    pub mlp_out: Vec<Vec<f32>>,
    /// The input of o_proj: every head's attention-weighted values, `[rows, heads * head_dim]`.
    pub head_z: Vec<Vec<f32>>,
}

/// The logits of the requested rows.
#[derive(Debug, Clone, Default)]
pub struct LogitsOut {
    /// Row indices (into `batch * seq`).
    pub rows: Vec<usize>,
    pub stats: RowStats,
    /// `[rows.len(), vocab]`, when [`Capture::logits`] is set.
    pub full: Option<Vec<f32>>,
}

/// What a run computed.
#[derive(Debug, Clone, Default)]
pub struct RunOutput {
    pub batch: usize,
    pub seq: usize,
    /// Positions that were already in the KV cache before this run.
    pub past: usize,
    pub hidden: usize,
    /// `[rows, hidden]`: after the final norm for decoders, the last block's output for encoders.
    pub final_hidden: Vec<f32>,
    /// Entry l is the residual stream entering block l, `[rows, hidden]`; entry n_layers is after
    /// the last block. Entries below the run's start layer are empty.
    pub residual: Option<Vec<Vec<f32>>>,
    pub sites: Option<Sites>,
    /// Per layer `[batch][heads][seq][keys]` (keys = past + seq); empty below the start layer.
    pub attention: Option<Vec<Vec<f32>>>,
    pub logits: Option<LogitsOut>,
    /// `[entry][row]` top-5 of each residual entry through the final norm and unembedding.
    pub logit_lens: Option<Vec<Vec<Vec<IdProb>>>>,
}

impl RunOutput {
    /// The full logit rows `[rows, vocab]`, when captured.
    pub fn full_logits(&self) -> Option<&[f32]> {
        self.logits.as_ref().and_then(|l| l.full.as_deref())
    }

    /// The statistics of the logit rows (decoders).
    pub fn stats(&self) -> Option<&RowStats> {
        self.logits.as_ref().map(|l| &l.stats)
    }

    /// The attention maps of a one-sequence run from an empty cache, when captured.
    pub fn attention_maps(&self) -> Option<AttentionMaps<'_>> {
        let per_layer = self.attention.as_deref()?;
        if self.batch != 1 || self.past != 0 {
            return None;
        }
        let n = self.seq * self.seq;
        let heads = per_layer.iter().map(Vec::len).max().unwrap_or(0) / n.max(1);
        if heads == 0 || per_layer.iter().any(|l| l.len() != heads * n) {
            return None;
        }
        Some(AttentionMaps {
            layers: per_layer.len(),
            heads,
            seq: self.seq,
            per_layer,
        })
    }
}

/// A sequence being extended: the KV cache of everything run so far.
pub trait Session {
    /// Runs `req` as the continuation of what the session holds (positions start at `len()`).
    fn run(&mut self, req: &Request<'_>) -> Result<RunOutput>;
    /// Positions held.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Forgets everything.
    fn reset(&mut self);
}

pub trait Backend: Send + Sync {
    /// A short description for reports ("cpu (avx2, 2 threads)").
    fn describe(&self) -> String;
    /// The GPU adapter, for GPU backends.
    fn adapter(&self) -> Option<gpu::context::AdapterDescription> {
        None
    }
    /// For GPU backends: (bytes of weights held, bytes allocated by the last run).
    fn gpu_bytes(&self) -> Option<(u64, u64)> {
        None
    }
    /// One run (no KV cache).
    fn run(&self, req: &Request<'_>) -> Result<RunOutput>;
    /// A KV-cached session for `batch` sequences of up to `capacity` positions.
    fn session(&self, batch: usize, capacity: usize) -> Result<Box<dyn Session + '_>>;

    /// Starts (or stops) collecting time per op kind.
    fn set_profiling(&self, _on: bool) {}

    /// (op kind, milliseconds, calls) since the last call, while profiling is on.
    fn take_profile(&self) -> Vec<(String, f64, usize)> {
        Vec::new()
    }
}

/// One sequence of ids through `backend` with `interventions`: logits of every row with their
/// statistics against the next token ([`crate::metrics::next_token_targets`]).
pub fn run_one<B: Backend + ?Sized>(
    backend: &B,
    ids: &[u32],
    capture: Capture,
    interventions: &[Intervention],
) -> Result<RunOutput> {
    let targets = crate::metrics::next_token_targets(ids);
    let mut req = Request::ids(ids);
    req.capture = Capture {
        top_k: capture.top_k.max(1),
        ..capture
    };
    req.interventions = interventions;
    req.targets = Some(&targets);
    backend.run(&req)
}

/// The logit lens of residual entries computed earlier (`entries[i]` is `[rows, hidden]`): each
/// through the final norm and the unembedding, top-5 per row. The app uses it to fill the lens
/// lazily, visible layers first.
pub fn lens<B: Backend + ?Sized>(
    backend: &B,
    n_layers: usize,
    entries: &[&[f32]],
    hidden: usize,
) -> Result<Vec<Vec<Vec<IdProb>>>> {
    let rows = entries
        .first()
        .map(|e| e.len() / hidden.max(1))
        .unwrap_or(0);
    if entries.is_empty() || rows == 0 {
        return Ok(Vec::new());
    }
    let data: Vec<f32> = entries.concat();
    let req = Request {
        batch: entries.len(),
        seq: rows,
        input: Input::Residual {
            layer: n_layers,
            data: &data,
        },
        interventions: &[],
        per_sequence: &[],
        capture: Capture {
            top_k: 5,
            ..Capture::default()
        },
        logits: LogitRows::All,
        targets: None,
    };
    let out = backend.run(&req)?;
    let top = out.logits.map(|l| l.stats.top).unwrap_or_default();
    Ok(top.chunks(rows).map(|c| c.to_vec()).collect())
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
            let ctx = gpu::context::GpuContext::shared(true)?;
            Ok((Box::new(gpu::GpuBackend::new(model, ctx)?), Vec::new()))
        }
        BackendChoice::Auto => {
            match gpu::context::GpuContext::shared(false)
                .and_then(|ctx| gpu::GpuBackend::new(model, ctx))
            {
                Ok(g) => Ok((with_cpu_fallback(g, model.clone()), Vec::new())),
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
        BackendChoice::Auto if !ctx.adapter.is_software() => Ok((
            with_cpu_fallback(gpu::GpuBackend::new(model, ctx)?, model.clone()),
            vec!["sharing the window's GPU device".into()],
        )),
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

impl Fallback {
    fn cpu(&self, why: &str) -> Result<&cpu::CpuBackend> {
        eprintln!("prism: the GPU run failed ({why}); retrying on the CPU");
        match self
            .cpu
            .get_or_init(|| cpu::CpuBackend::new(&self.model).map_err(|e| e.to_string()))
        {
            Ok(c) => Ok(c),
            Err(e) => Err(PrismError::Backend(format!(
                "GPU failed ({why}) and the CPU backend could not start ({e})"
            ))),
        }
    }

    fn fell_back(&self) -> Option<&cpu::CpuBackend> {
        match self.cpu.get() {
            Some(Ok(c)) => Some(c),
            _ => None,
        }
    }
}

impl Backend for Fallback {
    fn describe(&self) -> String {
        match self.fell_back() {
            Some(c) => format!("{} (fell back from the GPU)", c.describe()),
            None => self.gpu.describe(),
        }
    }

    fn adapter(&self) -> Option<gpu::context::AdapterDescription> {
        self.gpu.adapter()
    }

    fn gpu_bytes(&self) -> Option<(u64, u64)> {
        self.gpu.gpu_bytes()
    }

    fn run(&self, req: &Request<'_>) -> Result<RunOutput> {
        if let Some(c) = self.fell_back() {
            return c.run(req);
        }
        match self.gpu.run(req) {
            Err(PrismError::Backend(msg)) => self.cpu(&msg)?.run(req),
            other => other,
        }
    }

    fn session(&self, batch: usize, capacity: usize) -> Result<Box<dyn Session + '_>> {
        if let Some(c) = self.fell_back() {
            return c.session(batch, capacity);
        }
        match self.gpu.session(batch, capacity) {
            Err(PrismError::Backend(msg)) => self.cpu(&msg)?.session(batch, capacity),
            other => other,
        }
    }
}

/// Refuses an encoder for `what` (generation, patching, ablation: they need next-token predictions).
pub fn require_causal(model: &Model, what: &str) -> Result<()> {
    if model.spec.causal {
        return Ok(());
    }
    Err(PrismError::Input(format!(
        "{what} needs a causal language model; {} is an encoder",
        model.spec.architecture
    )))
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
    check_vocab(ids, model.spec.vocab)
}

/// Every id inside a vocabulary of `vocab` (the one check, for texts and for a backend's input).
pub fn check_vocab(ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().find(|&&i| i as usize >= vocab) {
        Some(bad) => Err(PrismError::Input(format!(
            "token id {bad} is outside the model's vocabulary of {vocab}"
        ))),
        None => Ok(()),
    }
}

impl Capture {
    /// Bytes one run's captures hold: attention maps, residual stream, sites and full logit rows.
    pub fn bytes(
        &self,
        s: &crate::arch::ArchSpec,
        batch: usize,
        past: usize,
        seq: usize,
        logit_rows: usize,
    ) -> u64 {
        let (b, t, l) = (batch as u64, seq as u64, s.n_layers as u64);
        let f = 4u64;
        let mut bytes = 0u64;
        if self.attention {
            bytes += b * l * s.n_heads as u64 * t * (past as u64 + t) * f;
        }
        if self.residual {
            bytes += b * (l + 1) * t * s.hidden as u64 * f;
        }
        if self.sites {
            bytes += b * l * t * (2 * s.hidden + s.n_heads * s.head_dim) as u64 * f;
        }
        if self.logits {
            bytes += logit_rows as u64 * s.vocab as u64 * f;
        }
        bytes
    }
}
