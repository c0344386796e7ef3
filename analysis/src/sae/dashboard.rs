//! Feature dashboards from a corpus: one pass over the documents keeps, per feature, its top
//! activating contexts (a token window with that feature's activation on every token), how often
//! it fires (density), a histogram of its activations, and at the end its logit effect (the tokens
//! `W_dec[j] · W_U` raises and lowers most, no final norm) and its nearest features by decoder
//! cosine (exact: every pair through the packed GEMM). The pass checkpoints its state next to the
//! output, so that a killed run resumes where it stopped and ends with the same file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Sae;
use crate::backend::cpu::gemm::{gemm, MatA, MatC, Strided, WeightPanel};
use crate::backend::cpu::pool::Pool;
use crate::error::{PrismError, Result};
use crate::model::Model;

/// The file format's name and version (`"format"`).
pub const FORMAT: &str = "prism-dashboard/1";

/// Histogram bins: bin i counts activations a with 2^(i + LOG2_LO) <= |a| < 2^(i + LOG2_LO + 1)
/// (the first and last bins take what lies beyond).
pub const BINS: usize = 24;
pub const LOG2_LO: i32 = -10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Tokens per document at most (longer ones are truncated).
    pub context: usize,
    /// Contexts kept per feature.
    pub top_contexts: usize,
    /// Tokens shown before and after the activating token.
    pub before: usize,
    pub after: usize,
    /// Tokens each way of the logit effect, and neighbours.
    pub k: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            context: 256,
            top_contexts: 10,
            before: 8,
            after: 4,
            k: 10,
        }
    }
}

/// One activating context of a feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub doc: usize,
    /// The activating token's position in the document.
    pub pos: usize,
    pub act: f32,
    /// The window's first position.
    pub start: usize,
    pub ids: Vec<u32>,
    /// The feature's activation on each token of the window.
    pub acts: Vec<f32>,
    /// The tokens' texts (filled in when the dashboard is finished).
    #[serde(default)]
    pub tokens: Vec<String>,
}

/// What the pass keeps per feature.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub active: u64,
    /// The activations' sum, as f64 bits (a resumed run sums exactly as an unbroken one).
    pub sum_bits: u64,
    pub max: f32,
    pub hist: Vec<u64>,
    /// By activation, largest first (ties: earlier document, earlier position).
    pub top: Vec<Context>,
}

/// The state of a pass: how far it got and what it kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accumulator {
    /// What the state belongs to (model, SAE, corpus, settings): a resume with another is refused.
    pub key: String,
    pub settings: Settings,
    pub docs_done: usize,
    pub tokens: u64,
    pub features: Vec<Stats>,
}

fn bin(a: f32) -> usize {
    let l = a.abs().log2().floor();
    if !l.is_finite() {
        return 0;
    }
    (l as i32 - LOG2_LO).clamp(0, BINS as i32 - 1) as usize
}

fn better(a: &Context, b: &Context) -> bool {
    a.act > b.act || (a.act == b.act && (a.doc, a.pos) < (b.doc, b.pos))
}

impl Accumulator {
    pub fn new(key: String, settings: Settings, d_sae: usize) -> Accumulator {
        Accumulator {
            key,
            settings,
            docs_done: 0,
            tokens: 0,
            features: vec![
                Stats {
                    hist: vec![0; BINS],
                    ..Stats::default()
                };
                d_sae
            ],
        }
    }

    /// Adds document `doc` (`ids`, and per token its active features `(id, act)`).
    pub fn add(&mut self, doc: usize, ids: &[u32], feats: &[Vec<(usize, f32)>]) {
        let s = self.settings;
        self.tokens += ids.len() as u64;
        let act_of = |t: usize, j: usize| {
            feats[t]
                .iter()
                .find(|(i, _)| *i == j)
                .map_or(0.0, |&(_, a)| a)
        };
        for (t, row) in feats.iter().enumerate() {
            for &(j, a) in row {
                let Some(st) = self.features.get_mut(j) else {
                    continue;
                };
                st.active += 1;
                st.sum_bits = (f64::from_bits(st.sum_bits) + a as f64).to_bits();
                if a > st.max || st.active == 1 {
                    st.max = a;
                }
                st.hist[bin(a)] += 1;
                let probe = Context {
                    doc,
                    pos: t,
                    act: a,
                    start: 0,
                    ids: Vec::new(),
                    acts: Vec::new(),
                    tokens: Vec::new(),
                };
                let full = st.top.len() >= s.top_contexts;
                if full && !st.top.last().is_some_and(|w| better(&probe, w)) {
                    continue;
                }
                let start = t.saturating_sub(s.before);
                let end = (t + 1 + s.after).min(ids.len());
                let ctx = Context {
                    start,
                    ids: ids[start..end].to_vec(),
                    acts: (start..end).map(|u| act_of(u, j)).collect(),
                    ..probe
                };
                let at = st
                    .top
                    .iter()
                    .position(|c| better(&ctx, c))
                    .unwrap_or(st.top.len());
                st.top.insert(at, ctx);
                st.top.truncate(s.top_contexts);
            }
        }
        self.docs_done = doc + 1;
    }

    /// Writes the state atomically (a kill leaves the old one or the new one).
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self)
            .map_err(|e| PrismError::Input(format!("dashboard state: {e}")))?;
        crate::atomic::write_atomic(path, &bytes)
    }

    /// The state saved at `path`, if it belongs to `key`; a state of another run is refused.
    pub fn resume(path: &Path, key: &str) -> Result<Option<Accumulator>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(PrismError::Io {
                    path: path.to_path_buf(),
                    source: e,
                })
            }
        };
        let acc: Accumulator = serde_json::from_slice(&bytes).map_err(|e| {
            PrismError::format(
                path,
                format!(
                    "a dashboard's saved state that does not parse ({e}); delete it to start over"
                ),
            )
        })?;
        if acc.key != key {
            return Err(PrismError::Input(format!(
                "{}: the saved state belongs to another run (model, SAE, corpus or settings changed); delete it to start over",
                path.display()
            )));
        }
        Ok(Some(acc))
    }
}

/// One feature of a finished dashboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureEntry {
    pub id: usize,
    /// The share of the corpus's tokens on which it is active.
    pub density: f64,
    pub active_tokens: u64,
    pub max_act: f32,
    pub mean_act: f64,
    pub histogram: Vec<u64>,
    pub contexts: Vec<Context>,
    /// (token id, text, W_dec[j] · W_U[token]); empty for a feature that never fired.
    pub logits_up: Vec<(u32, String, f32)>,
    pub logits_down: Vec<(u32, String, f32)>,
    /// (feature, cosine of the decoder directions).
    pub neighbours: Vec<(usize, f32)>,
}

/// A finished dashboard: one file the app opens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dashboard {
    pub format: String,
    pub model: String,
    pub sae: String,
    pub hook: String,
    pub d_sae: usize,
    pub d_in: usize,
    pub corpus: String,
    pub corpus_sha256: String,
    pub documents: usize,
    pub tokens: u64,
    pub settings: Settings,
    /// Bin i of every histogram: 2^(i + log2_lo) <= |activation| < 2^(i + log2_lo + 1).
    pub log2_lo: i32,
    pub features: Vec<FeatureEntry>,
}

impl Dashboard {
    /// Reads a dashboard, checking its format and that its parts agree.
    pub fn load(path: &Path) -> Result<Dashboard> {
        let bytes = std::fs::read(path).map_err(|e| PrismError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let d: Dashboard = serde_json::from_slice(&bytes)
            .map_err(|e| PrismError::format(path, format!("not a Prism dashboard: {e}")))?;
        if d.format != FORMAT {
            return Err(PrismError::format(
                path,
                format!("format {:?}; this Prism reads {FORMAT:?}", d.format),
            ));
        }
        if d.features.len() != d.d_sae
            || d.features
                .iter()
                .enumerate()
                .any(|(i, f)| f.id != i || f.histogram.len() != BINS)
        {
            return Err(PrismError::format(
                path,
                format!(
                    "its feature list does not hold features 0..{} with {BINS}-bin histograms",
                    d.d_sae
                ),
            ));
        }
        Ok(d)
    }

    /// Whether this dashboard was made with `sae` (its hook and sizes).
    pub fn fits(&self, sae: &Sae) -> bool {
        self.hook == sae.hook && self.d_sae == sae.d_sae && self.d_in == sae.d_in
    }
}

/// The largest and the smallest (index, value) pairs of a row, each in order.
type Extremes = (Vec<(usize, f32)>, Vec<(usize, f32)>);

/// Per row of `rows` (`[n, k]` row-major f32), the `k_top` largest and smallest dot products with
/// the rows of `b`, 256 rows at a time so that memory stays bounded.
fn extremes<S: crate::backend::cpu::gemm::PanelSource>(
    rows: &[f32],
    n: usize,
    k: usize,
    b: &S,
    k_top: usize,
) -> Vec<Extremes> {
    let cols = b.n();
    let block = 256usize;
    let mut out = vec![(Vec::new(), Vec::new()); n];
    let mut c = vec![0f32; block * cols];
    for r0 in (0..n).step_by(block) {
        let m = block.min(n - r0);
        let a = MatA {
            data: &rows[r0 * k..(r0 + m) * k],
            rows: m,
            cols: k,
            stride: k,
        };
        gemm(
            a,
            b,
            MatC::new(&mut c[..m * cols], cols),
            false,
            Some(Pool::global()),
        );
        let t = k_top.min(cols);
        for i in 0..m {
            let row = &c[i * cols..(i + 1) * cols];
            // A total order (value, then index), so that the selection is the same every time.
            let desc = |x: &usize, y: &usize| row[*y].total_cmp(&row[*x]).then(x.cmp(y));
            let asc = |x: &usize, y: &usize| row[*x].total_cmp(&row[*y]).then(x.cmp(y));
            let mut idx: Vec<usize> = (0..cols).collect();
            let mut pick = |order: &dyn Fn(&usize, &usize) -> std::cmp::Ordering| {
                if t == 0 {
                    return Vec::new();
                }
                if t < cols {
                    idx.select_nth_unstable_by(t - 1, order);
                }
                let mut top: Vec<usize> = idx[..t].to_vec();
                top.sort_by(order);
                top.iter().map(|&j| (j, row[j])).collect::<Vec<_>>()
            };
            let up = pick(&desc);
            let down = pick(&asc);
            out[r0 + i] = (up, down);
        }
    }
    out
}

/// Finishes a pass: per feature its statistics and contexts (with token texts), its logit effect
/// and its nearest features (both for the features that fired).
pub fn finish(
    acc: Accumulator,
    model: &Model,
    sae: &Sae,
    corpus: (&str, &str, usize),
) -> Result<Dashboard> {
    let text = |id: u32| model.token_text(id);
    let n = sae.d_in;
    let live: Vec<usize> = (0..sae.d_sae)
        .filter(|&j| acc.features[j].active > 0)
        .collect();
    let k = acc.settings.k;
    // The live features' decoder rows, and those rows normalized (for the cosines).
    let mut rows = Vec::with_capacity(live.len() * model.spec.hidden);
    for &j in &live {
        rows.extend(sae.to_residual(model, &sae.w_dec[j * n..(j + 1) * n])?);
    }
    let w_u = model.weights.unembedding();
    let h = rows.len() / live.len().max(1);
    if w_u.cols() != h && !live.is_empty() {
        return Err(PrismError::Input(format!(
            "{}: the SAE's width {n} differs from the unembedding's {}",
            sae.path.display(),
            w_u.cols()
        )));
    }
    let logits = extremes(&rows, live.len(), w_u.cols(), &WeightPanel(w_u), k);
    let unit: Vec<f32> = sae
        .w_dec
        .chunks(n)
        .flat_map(|r| {
            let norm = r.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            let s = if norm > 0.0 { (1.0 / norm) as f32 } else { 0.0 };
            r.iter().map(move |&x| x * s)
        })
        .collect();
    let live_unit: Vec<f32> = live
        .iter()
        .flat_map(|&j| unit[j * n..(j + 1) * n].iter().copied())
        .collect();
    let all = Strided {
        data: &unit,
        n: sae.d_sae,
        k: n,
        row_stride: n,
        col_stride: 1,
    };
    // The nearest k + 1 of every feature, itself among them, then itself left out.
    let mut cos: Vec<Vec<(usize, f32)>> = vec![Vec::new(); live.len()];
    for (chunk_i, chunk) in live.chunks(256).enumerate() {
        let part = &live_unit[chunk_i * 256 * n..(chunk_i * 256 + chunk.len()) * n];
        let got = extremes(part, chunk.len(), n, &all, k + 1);
        for (i, (up, _)) in got.into_iter().enumerate() {
            let j = chunk[i];
            let up: Vec<(usize, f32)> = up.into_iter().filter(|&(c, _)| c != j).take(k).collect();
            cos[chunk_i * 256 + i] = up;
        }
    }
    let mut features = Vec::with_capacity(sae.d_sae);
    let mut li = 0;
    for (j, mut st) in acc.features.into_iter().enumerate() {
        let (mut up, mut down, mut near) = (Vec::new(), Vec::new(), Vec::new());
        if live.get(li) == Some(&j) {
            let (u, d) = &logits[li];
            up = u
                .iter()
                .map(|&(t, v)| (t as u32, text(t as u32), v))
                .collect();
            down = d
                .iter()
                .map(|&(t, v)| (t as u32, text(t as u32), v))
                .collect();
            near = cos[li].clone();
            li += 1;
        }
        for c in &mut st.top {
            c.tokens = c.ids.iter().map(|&id| text(id)).collect();
        }
        let sum = f64::from_bits(st.sum_bits);
        features.push(FeatureEntry {
            id: j,
            density: st.active as f64 / acc.tokens.max(1) as f64,
            active_tokens: st.active,
            max_act: st.max,
            mean_act: if st.active > 0 {
                sum / st.active as f64
            } else {
                0.0
            },
            histogram: st.hist,
            contexts: st.top,
            logits_up: up,
            logits_down: down,
            neighbours: near,
        });
    }
    Ok(Dashboard {
        format: FORMAT.into(),
        model: model.info.path.display().to_string(),
        sae: sae.path.display().to_string(),
        hook: sae.hook.clone(),
        d_sae: sae.d_sae,
        d_in: sae.d_in,
        corpus: corpus.0.into(),
        corpus_sha256: corpus.1.into(),
        documents: corpus.2,
        tokens: acc.tokens,
        settings: acc.settings,
        log2_lo: LOG2_LO,
        features,
    })
}
