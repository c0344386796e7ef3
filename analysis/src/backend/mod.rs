//! Backends execute an [`ArchSpec`](crate::arch::ArchSpec) on token ids. The forward pass is
//! written once ([`forward`]) over a small set of ops ([`exec::Exec`]); the CPU backend
//! (Prism's own packed GEMM over weights decoded at use, the reference) and the GPU backend (WGSL
//! through wgpu) implement those ops. Interventions, captures, batches of sequences, runs that
//! start at a layer, and KV-cached sessions therefore behave identically on both.

mod checks;
mod choice;
pub mod cpu;
mod edits;
pub mod exec;
pub mod forward;
pub mod gpu;

use crate::error::Result;
use crate::intervene::Intervention;

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
    /// Every mixture-of-experts layer's router probabilities and routing weights.
    pub experts: bool,
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
            experts: false,
        }
    }
}

/// One sequence's attention probabilities `[layer][head][query][key]`, a view of a run's
/// per-layer maps (no copy).
#[derive(Debug, Clone, Copy)]
pub struct AttentionMaps<'a> {
    pub layers: usize,
    /// Softmax heads per attention layer.
    pub heads: usize,
    pub seq: usize,
    per_layer: &'a [Vec<f32>],
    /// The linear-attention layers' unrolled rule ([`RunOutput::mixing`]), when captured.
    mixing: Option<&'a [Vec<f32>]>,
}

impl<'a> AttentionMaps<'a> {
    pub fn get(&self, layer: usize, head: usize, query: usize, key: usize) -> f32 {
        self.head(layer, head)
            .get(query * self.seq + key)
            .copied()
            .unwrap_or(f32::NAN)
    }

    /// Whether layer `layer` has softmax maps (a linear-attention layer has none).
    pub fn captured(&self, layer: usize) -> bool {
        self.per_layer.get(layer).is_some_and(|l| !l.is_empty())
    }

    /// One head's `[query][key]` matrix as a flat slice (empty for a layer without maps).
    pub fn head(&self, layer: usize, head: usize) -> &'a [f32] {
        let n = self.seq * self.seq;
        self.per_layer
            .get(layer)
            .and_then(|l| l.get(head * n..(head + 1) * n))
            .unwrap_or(&[])
    }

    /// Value heads of the linear-attention layer `layer`'s mixing matrices, or 0.
    pub fn mixing_heads(&self, layer: usize) -> usize {
        let n = (self.seq * self.seq).max(1);
        self.mixing
            .and_then(|m| m.get(layer))
            .map_or(0, |l| l.len() / n)
    }

    /// Value head `head` of linear-attention layer `layer`: `[t][s]`, the weight of token s's
    /// value in token t's output (the gated delta rule unrolled, before the gated norm).
    pub fn mixing(&self, layer: usize, head: usize) -> Option<&'a [f32]> {
        let n = self.seq * self.seq;
        self.mixing?
            .get(layer)?
            .get(head * n..(head + 1) * n)
            .filter(|m| !m.is_empty())
    }

    /// Every softmax map, `[layer][head][query][key]` flat (layers without maps add nothing).
    pub fn flat(&self) -> Vec<f32> {
        self.per_layer.concat()
    }

    /// `[layer][head][query][key]`; a layer without softmax maps has no heads.
    pub fn to_nested(&self) -> Vec<Vec<Vec<Vec<f32>>>> {
        (0..self.layers)
            .map(|l| {
                let heads = if self.captured(l) { self.heads } else { 0 };
                (0..heads)
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

    /// The mixing matrices `[layer][value head][t][s]` (no heads for attention layers).
    pub fn mixing_nested(&self) -> Option<Vec<Vec<Vec<Vec<f32>>>>> {
        self.mixing?;
        Some(
            (0..self.layers)
                .map(|l| {
                    (0..self.mixing_heads(l))
                        .filter_map(|h| self.mixing(l, h))
                        .map(|m| m.chunks(self.seq).map(|r| r.to_vec()).collect())
                        .collect()
                })
                .collect(),
        )
    }
}

pub use crate::metrics::{IdProb, RowStats};
pub use checks::{check_ids, check_vocab, require_causal};
pub use choice::{create, create_with_device, with_cpu_fallback, BackendChoice};

/// Where a run starts.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Token ids, `batch * seq` of them.
    Ids(&'a [u32]),
    /// The residual stream entering block `layer` (`layer == n_layers`: after the last block),
    /// `batch * seq * hidden` values. Blocks below `layer` are not run.
    Residual { layer: usize, data: &'a [f32] },
}

/// The input of `n` copies of one text for a run that only changes layer `layer` and above: its
/// residual stream entering that layer (the layers below are skipped), or where the model cannot
/// start there (Gemma 4's per-layer inputs and shared keys), the token ids from the embedding up.
pub enum LayerStart {
    Residual { layer: usize, data: Vec<f32> },
    Ids(Vec<u32>),
}

impl LayerStart {
    pub fn new(
        spec: &crate::arch::ArchSpec,
        layer: usize,
        residual: &[f32],
        ids: &[u32],
        n: usize,
    ) -> Self {
        if spec.cannot_start_at(layer).is_some() {
            LayerStart::Ids(ids.repeat(n))
        } else {
            LayerStart::Residual {
                layer,
                data: residual.repeat(n),
            }
        }
    }

    pub fn input(&self) -> Input<'_> {
        match self {
            LayerStart::Residual { layer, data } => Input::Residual {
                layer: *layer,
                data,
            },
            LayerStart::Ids(ids) => Input::Ids(ids),
        }
    }
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
    /// The MLP's input after its norm (what a transcoder reads), `[rows, hidden]`.
    pub mlp_in: Vec<Vec<f32>>,
    /// attn_out after the block's post-attention norm, for the layers that have one (empty
    /// elsewhere: what the sub-layer adds is attn_out itself); see [`Sites::added`].
    pub attn_post: Vec<Vec<f32>>,
    /// mlp_out after the block's post-MLP norm, for the layers that have one (empty elsewhere).
    pub mlp_post: Vec<Vec<f32>>,
}

impl Sites {
    /// What layer `l`'s attention (`mlp` false) or MLP adds to the residual stream: the output
    /// after the post-norm where the block has one, the output itself elsewhere.
    pub fn added(&self, mlp: bool, l: usize) -> Option<&Vec<f32>> {
        let (post, out) = if mlp {
            (&self.mlp_post, &self.mlp_out)
        } else {
            (&self.attn_post, &self.attn_out)
        };
        post.get(l).filter(|v| !v.is_empty()).or_else(|| out.get(l))
    }
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
    /// Per layer, the routing of a mixture-of-experts layer (none for dense layers).
    pub routing: Option<Vec<Option<Routing>>>,
    /// Captured with the attention maps: per Gated DeltaNet layer `[batch][v_heads][seq][seq]`,
    /// the gated delta rule unrolled (row t: the weight of each earlier token's value in token
    /// t's output, before the gated norm); empty for attention layers and for KV-cached runs.
    pub mixing: Option<Vec<Vec<f32>>>,
}

/// One mixture-of-experts layer's routing in a run: `[rows, experts]` each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routing {
    pub experts: usize,
    /// The router's softmax over every expert.
    pub probs: Vec<f32>,
    /// The weight each expert's output was added with: the chosen experts' (renormalized)
    /// probabilities, zero for the others, after any intervention at the `expert` site.
    pub weights: Vec<f32>,
}

impl Routing {
    /// The experts row `row` ran, heaviest first (ties to the lower index), with their weights.
    pub fn chosen(&self, row: usize) -> Vec<(usize, f32)> {
        let n = self.experts;
        let Some(w) = self.weights.get(row * n..(row + 1) * n) else {
            return Vec::new();
        };
        let mut out: Vec<(usize, f32)> = w
            .iter()
            .enumerate()
            .filter(|(_, &x)| x != 0.0)
            .map(|(e, &x)| (e, x))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }

    /// Row `row`'s router probabilities.
    pub fn probs_of(&self, row: usize) -> &[f32] {
        let n = self.experts;
        self.probs.get(row * n..(row + 1) * n).unwrap_or(&[])
    }
}

impl RunOutput {
    /// Sequence `b` of a batched run, as a run of that sequence alone would have returned it
    /// (every per-row value of its rows, its attention and mixing maps).
    pub fn sequence(&self, b: usize) -> RunOutput {
        let (n, seq) = (self.batch.max(1), self.seq);
        // Rows-major `[batch * seq, w]` (or `[batch][...]`): sequence b's part.
        let part = |v: &Vec<f32>| -> Vec<f32> {
            let w = v.len() / n;
            v.get(b * w..(b + 1) * w)
                .map(<[f32]>::to_vec)
                .unwrap_or_default()
        };
        let parts = |v: &Vec<Vec<f32>>| v.iter().map(part).collect::<Vec<_>>();
        let rows = b * seq..(b + 1) * seq;
        let logits = self.logits.as_ref().map(|l| {
            let keep: Vec<usize> = (0..l.rows.len())
                .filter(|&i| rows.contains(&l.rows[i]))
                .collect();
            let s = &l.stats;
            let vocab = l.full.as_ref().map_or(0, |f| f.len() / l.rows.len().max(1));
            LogitsOut {
                rows: keep.iter().map(|&i| l.rows[i] - b * seq).collect(),
                stats: RowStats {
                    entropy_bits: keep
                        .iter()
                        .filter_map(|&i| s.entropy_bits.get(i).copied())
                        .collect(),
                    surprisal_bits: keep
                        .iter()
                        .filter_map(|&i| s.surprisal_bits.get(i).copied())
                        .collect(),
                    rank: keep
                        .iter()
                        .filter_map(|&i| s.rank.get(i).copied())
                        .collect(),
                    top: keep.iter().filter_map(|&i| s.top.get(i).cloned()).collect(),
                },
                full: l.full.as_ref().map(|f| {
                    keep.iter()
                        .flat_map(|&i| f[i * vocab..(i + 1) * vocab].iter().copied())
                        .collect()
                }),
            }
        });
        RunOutput {
            batch: 1,
            seq,
            past: self.past,
            hidden: self.hidden,
            final_hidden: part(&self.final_hidden),
            residual: self.residual.as_ref().map(parts),
            sites: self.sites.as_ref().map(|s| Sites {
                attn_out: parts(&s.attn_out),
                mlp_out: parts(&s.mlp_out),
                head_z: parts(&s.head_z),
                mlp_in: parts(&s.mlp_in),
                attn_post: parts(&s.attn_post),
                mlp_post: parts(&s.mlp_post),
            }),
            attention: self.attention.as_ref().map(parts),
            logits,
            logit_lens: self.logit_lens.as_ref().map(|entries| {
                entries
                    .iter()
                    .map(|e| e.get(rows.clone()).map(<[_]>::to_vec).unwrap_or_default())
                    .collect()
            }),
            routing: self.routing.as_ref().map(|layers| {
                layers
                    .iter()
                    .map(|r| {
                        r.as_ref().map(|r| Routing {
                            experts: r.experts,
                            probs: part(&r.probs),
                            weights: part(&r.weights),
                        })
                    })
                    .collect()
            }),
            mixing: self.mixing.as_ref().map(parts),
        }
    }

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
        // Linear-attention layers have no softmax maps (their mixing is captured apart).
        let mixing = self.mixing.as_deref();
        let mixed = mixing.is_some_and(|m| m.iter().any(|l| !l.is_empty()));
        if (heads == 0 && !mixed)
            || per_layer
                .iter()
                .any(|l| !l.is_empty() && l.len() != heads * n)
        {
            return None;
        }
        Some(AttentionMaps {
            layers: per_layer.len(),
            heads: heads.max(1),
            seq: self.seq,
            per_layer,
            mixing,
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

    /// `x` `[rows, w.cols()]` times `w^T`: `[rows, w.rows()]` (an SAE's encoder over captured
    /// activations). By default the CPU's packed GEMM on every core; the GPU runs its matmul.
    fn project(&self, x: &[f32], rows: usize, w: &crate::weights::Weight) -> Result<Vec<f32>> {
        project_on_cpu(x, rows, w)
    }

    /// Starts (or stops) collecting time per op kind.
    fn set_profiling(&self, _on: bool) {}

    /// (op kind, milliseconds, calls) since the last call, while profiling is on.
    fn take_profile(&self) -> Vec<(String, f64, usize)> {
        Vec::new()
    }
}

/// [`Backend::project`] on the CPU.
pub fn project_on_cpu(x: &[f32], rows: usize, w: &crate::weights::Weight) -> Result<Vec<f32>> {
    use cpu::gemm::{gemm, MatA, MatC, WeightPanel};
    let (n, k) = (w.rows(), w.cols());
    if x.len() != rows * k {
        return Err(crate::error::PrismError::Input(format!(
            "project: {} values are not {rows} rows of {k}",
            x.len()
        )));
    }
    let mut out = vec![0f32; rows * n];
    if rows > 0 && n > 0 {
        let a = MatA {
            data: x,
            rows,
            cols: k,
            stride: k,
        };
        gemm(
            a,
            &WeightPanel(w),
            MatC::new(&mut out, n),
            false,
            Some(cpu::pool::Pool::global()),
        );
    }
    Ok(out)
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
            if let Some(d) = s.delta_net {
                bytes += b * l * d.v_heads as u64 * t * t * f;
            }
        }
        if self.residual {
            bytes += b * (l + 1) * t * s.hidden as u64 * f;
        }
        if self.sites {
            bytes += b * l * t * (3 * s.hidden + s.n_heads * s.head_dim) as u64 * f;
        }
        if self.logits {
            bytes += logit_rows as u64 * s.vocab as u64 * f;
        }
        if let (true, Some(x)) = (self.experts, s.experts) {
            bytes += 2 * b * l * t * x.count as u64 * f;
        }
        bytes
    }
}
