//! Corpus runs to Parquet (`prism batch`): every document of a corpus through the model, in
//! shards of documents, each shard two Parquet files: `tokens-NNNNN.parquet` (one row per token:
//! its id, surprisal, entropy, rank and top-k predictions, as `prism run --json` gives them) and
//! `docs-NNNNN.parquet` (one row per document: its totals, bits per byte and the zstd baseline,
//! and its text). `manifest.json` records the model's hash, the corpus digest, the settings and
//! each finished shard's checksums; a run that finds one resumes at the first missing shard and
//! never rewrites a finished one, and refuses a changed model, corpus or setting, or a shard
//! that no longer matches its checksum. Shards and the manifest are written atomically, so a
//! killed run loses at most the shard it was writing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{
    BoolType, ByteArray, ByteArrayType, DoubleType, FloatType, Int32Type, Int64Type,
};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::RowAccessor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::actcache::{ActDtype, ActSite, Layout};
use crate::backend::{Backend, Capture};
use crate::corpus::Corpus;
use crate::error::{PrismError, Result};
use crate::intervene::Site;
use crate::model::Model;
use crate::sae::Sae;
use crate::trace::{RunSummary, Trace};

/// What a batch run computes; a resumed run must have the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchSettings {
    /// Tokens per document at most: longer documents are truncated to their first `context`.
    pub context: usize,
    /// Top predictions kept per token.
    pub top_k: usize,
    /// Documents per shard.
    pub shard_docs: usize,
    /// A BOS token prepended to every document.
    pub bos: bool,
    /// The backend that ran it (CPU and GPU differ in the last digits).
    pub backend: String,
    /// Documents packed into windows of exactly `context` tokens, as SAELens concatenates them
    /// (BOS at the start of every window and between documents when BOS is on), rather than
    /// each document truncated; a shard's documents are packed together, so shards stay
    /// independent, and its last window may be shorter.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pack: bool,
    /// Sites whose activations are written as a SAELens activation cache (`resid_post@12`);
    /// needs `pack` (the cache's rows are whole windows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    /// The cache's float type.
    #[serde(default, skip_serializing_if = "is_f32")]
    pub dtype: ActDtype,
    /// The sha256 of the SAE whose feature activations the shards hold (sparse), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sae_sha256: Option<String>,
    /// Packed windows run per pass (0: the backend's choice). Not recorded: a batched pass gives
    /// each window exactly what its own pass gives, so it changes the speed, never the shards.
    #[serde(skip)]
    pub windows_per_pass: usize,
}

impl BatchSettings {
    /// Whether a run with `other` writes what a run with these settings writes.
    pub fn same_output(&self, other: &BatchSettings) -> bool {
        let key = |s: &BatchSettings| BatchSettings {
            windows_per_pass: 0,
            ..s.clone()
        };
        key(self) == key(other)
    }

    /// Windows per pass on `backend`: as set, or 8 on a GPU (several sequences keep it busy),
    /// 1 on the CPU (four per pass measured no faster there: BENCHMARKS.md).
    fn windows_per_pass(&self, backend: &dyn Backend) -> usize {
        match self.windows_per_pass {
            0 if backend.describe().starts_with("gpu") => 8,
            0 => 1,
            n => n,
        }
    }
}

fn is_f32(d: &ActDtype) -> bool {
    *d == ActDtype::Float32
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            context: 1024,
            top_k: 5,
            shard_docs: 256,
            bos: false,
            backend: "cpu".into(),
            pack: false,
            sites: Vec::new(),
            dtype: ActDtype::Float32,
            sae_sha256: None,
            windows_per_pass: 0,
        }
    }
}

/// One finished shard: its documents and its two files with their sha256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub first_doc: usize,
    pub docs: usize,
    pub tokens: usize,
    pub tokens_file: String,
    pub tokens_sha256: String,
    pub docs_file: String,
    pub docs_sha256: String,
    /// The shard's activation-cache file (in `activations/`), its rows (whole windows) and sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_rows: Option<usize>,
    /// The shard's sparse SAE features (`features-NNNNN.parquet`) and sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features_sha256: Option<String>,
}

impl Shard {
    /// The shard's files and their recorded sha256.
    pub fn files(&self) -> Vec<(&String, &String)> {
        let mut v = vec![
            (&self.tokens_file, &self.tokens_sha256),
            (&self.docs_file, &self.docs_sha256),
        ];
        for (f, h) in [
            (&self.activations_file, &self.activations_sha256),
            (&self.features_file, &self.features_sha256),
        ] {
            if let (Some(f), Some(h)) = (f, h) {
                v.push((f, h));
            }
        }
        v
    }
}

/// `manifest.json` of a batch folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub model: String,
    pub model_sha256: String,
    pub corpus: String,
    pub corpus_sha256: String,
    pub documents: usize,
    pub settings: BatchSettings,
    /// The activation cache's columns, with `--sites`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<Layout>,
    pub shards: Vec<Shard>,
}

const FORMAT: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
/// The activation cache's folder inside a batch folder (a `datasets` dataset).
pub const ACTIVATIONS_DIR: &str = "activations/";

/// How far a run is.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub docs_done: usize,
    pub docs: usize,
    /// Tokens run by this process (not counting resumed shards).
    pub tokens_run: usize,
    pub seconds: f64,
}

/// sha256 of a model's files: the file itself, or every file of its folder (names and bytes, in
/// name order).
pub fn model_sha256(path: &Path) -> Result<String> {
    let io = |p: &Path, e: std::io::Error| PrismError::Io {
        path: p.to_path_buf(),
        source: e,
    };
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut h = Sha256::new();
    for f in files {
        h.update(
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let mut file = std::fs::File::open(&f).map_err(|e| io(&f, e))?;
        std::io::copy(&mut file, &mut h).map_err(|e| io(&f, e))?;
    }
    Ok(format!("{:x}", h.finalize()))
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn bad(path: &Path, msg: impl Into<String>) -> PrismError {
    PrismError::format(path, msg.into())
}

/// Reads and checks a folder's manifest and every shard it lists against its checksum.
pub fn verify(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| PrismError::Io {
        path: path.clone(),
        source: e,
    })?;
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| bad(&path, format!("the batch manifest is corrupt: {e}")))?;
    if m.format != FORMAT {
        return Err(bad(
            &path,
            format!("batch manifest format {} (Prism writes {FORMAT})", m.format),
        ));
    }
    for (i, s) in m.shards.iter().enumerate() {
        if s.index != i {
            return Err(bad(
                &path,
                format!("shard {i} is listed as shard {}", s.index),
            ));
        }
        let extras = [
            (m.settings.sites.is_empty(), s.activations_file.is_none()),
            (m.settings.sae_sha256.is_none(), s.features_file.is_none()),
        ];
        if extras.iter().any(|(want_none, none)| want_none != none) {
            return Err(bad(
                &path,
                format!(
                    "shard {i} does not list the activation or feature files its settings ask for"
                ),
            ));
        }
        for (file, want) in s.files() {
            let p = dir.join(file);
            let name = file.strip_prefix(ACTIVATIONS_DIR).unwrap_or(file);
            if name.contains('/') || name.contains('\\') || name.contains("..") {
                return Err(bad(
                    &path,
                    format!("shard {i} names a file outside the folder: {file}"),
                ));
            }
            let bytes = std::fs::read(&p).map_err(|e| PrismError::Io {
                path: p.clone(),
                source: e,
            })?;
            if &sha256(&bytes) != want {
                return Err(bad(
                    &p,
                    format!("shard {i} does not match the checksum in manifest.json: the file is corrupt or was changed; delete the folder to run again"),
                ));
            }
        }
    }
    Ok(m)
}

/// One shard's two Parquet files, made and not yet written.
#[derive(Debug, Clone)]
pub struct ShardFiles {
    pub tokens_parquet: Vec<u8>,
    pub docs_parquet: Vec<u8>,
    /// Token rows in `tokens_parquet`.
    pub tokens: usize,
    /// Documents in the shard.
    pub docs: usize,
    /// The activation cache's Arrow IPC stream and its rows (whole windows), with `--sites`.
    pub activations: Option<(Vec<u8>, usize)>,
    /// The sparse SAE features, with an SAE.
    pub features_parquet: Option<Vec<u8>>,
}

/// Checks `settings` for `model` and opens `out` for a run of `corpus`: a new folder gets a
/// manifest with no shards; a folder with one is verified (every listed shard against its
/// checksum) and must hold the same model, corpus and settings. The manifest's `shards` are the
/// finished ones: the run goes on at `shards.len()`.
pub fn open(
    model: &Model,
    corpus: &Corpus,
    out: &Path,
    settings: &BatchSettings,
) -> Result<Manifest> {
    let sites = check_settings(settings, model)?;
    if !model.spec.causal {
        return Err(PrismError::Input(format!(
            "{} is an encoder: it predicts no next token",
            model.spec.architecture
        )));
    }
    if model.tokenizer.is_none() {
        return Err(PrismError::Input(format!(
            "{} has no tokenizer",
            model.info.path.display()
        )));
    }
    let fresh = Manifest {
        format: FORMAT,
        model: model.info.path.display().to_string(),
        model_sha256: model_sha256(&model.info.path)?,
        corpus: corpus.path.display().to_string(),
        corpus_sha256: corpus.digest(),
        documents: corpus.documents.len(),
        settings: settings.clone(),
        activations: (!sites.is_empty())
            .then(|| Layout::new(&sites, &model.spec, settings.context, settings.dtype)),
        shards: Vec::new(),
    };
    std::fs::create_dir_all(out).map_err(|e| PrismError::Io {
        path: out.to_path_buf(),
        source: e,
    })?;
    let mpath = out.join(MANIFEST);
    if mpath.exists() {
        let m = verify(out)?;
        let differs = [
            (m.model_sha256 != fresh.model_sha256, "the model"),
            (m.corpus_sha256 != fresh.corpus_sha256, "the corpus"),
            (!m.settings.same_output(&fresh.settings), "the settings"),
            (m.activations != fresh.activations, "the activation sites"),
        ];
        if let Some((_, what)) = differs.iter().find(|(d, _)| *d) {
            return Err(bad(
                &mpath,
                format!(
                    "{what} differ from the run this folder holds ({} on {}, {:?}); use another --out folder rather than mix them",
                    m.model, m.corpus, m.settings
                ),
            ));
        }
        return Ok(m);
    }
    if std::fs::read_dir(out)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
    {
        return Err(bad(
            out,
            "the --out folder is not empty and holds no manifest.json: not a batch folder",
        ));
    }
    crate::atomic::write_atomic(
        &mpath,
        &serde_json::to_vec_pretty(&fresh).map_err(json_err)?,
    )?;
    Ok(fresh)
}

fn check_settings(settings: &BatchSettings, model: &Model) -> Result<Vec<ActSite>> {
    if settings.context < 2 || settings.shard_docs == 0 || !(1..=100).contains(&settings.top_k) {
        return Err(PrismError::Input(format!(
            "batch settings: a context of {} tokens (at least 2), {} documents per shard (at least 1), top {} (1 to 100)",
            settings.context, settings.shard_docs, settings.top_k
        )));
    }
    if settings.sites.is_empty() {
        if settings.dtype != ActDtype::Float32 {
            return Err(PrismError::Input(format!(
                "--dtype {} applies to the activation cache: give --sites too",
                settings.dtype.name()
            )));
        }
        return Ok(Vec::new());
    }
    if !settings.pack {
        return Err(PrismError::Input(
            "an activation cache holds whole windows of the context length: add --pack (documents concatenated into windows, as SAELens does)".into(),
        ));
    }
    crate::actcache::parse_sites(&settings.sites.join(","), &model.spec)
}

/// The documents of shard `index` of a corpus of `n` documents: `first..last`.
pub fn shard_range(index: usize, n: usize, settings: &BatchSettings) -> (usize, usize) {
    let first = (index * settings.shard_docs).min(n);
    (first, (first + settings.shard_docs).min(n))
}

/// One context window of packed documents: its token ids and, per position, the document
/// (its index in the shard) and position there, or `None` for a BOS the packing inserted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    pub ids: Vec<u32>,
    pub owner: Vec<Option<(usize, usize)>>,
}

/// SAELens's concatenation (`concat_and_batch_sequences` with `bos` as the begin-batch and
/// separator token, no begin-sequence token): the documents' tokens in order, cut into windows
/// of `context`; each window starts with `bos`, and `bos` separates two documents in a window,
/// unless the next token is `bos` already. SAELens drops the last, shorter window; it is kept
/// here (for the per-token statistics) and is the last one.
pub fn pack(docs: &[Vec<u32>], context: usize, bos: Option<u32>) -> Vec<Window> {
    let mut out = Vec::new();
    let mut cur: Option<Window> = None;
    for (d, toks) in docs.iter().enumerate() {
        let mut off = 0;
        while off < toks.len() {
            let w = cur.get_or_insert_with(Window::default);
            if let Some(b) = bos {
                if toks[off] != b && w.ids.len() < context {
                    w.ids.push(b);
                    w.owner.push(None);
                }
            }
            let take = context.saturating_sub(w.ids.len()).min(toks.len() - off);
            for (i, &t) in toks.iter().enumerate().skip(off).take(take) {
                w.ids.push(t);
                w.owner.push(Some((d, i)));
            }
            off += take;
            if w.ids.len() >= context {
                out.extend(cur.take());
            }
        }
    }
    out.extend(cur);
    out
}

/// One token's statistics, as a shard's token row holds them.
#[derive(Debug, Clone, Default)]
struct TokenStat {
    id: u32,
    surprisal: Option<f64>,
    entropy: Option<f64>,
    rank: Option<usize>,
    top: Vec<(i32, f64)>,
    bytes: usize,
    /// (window in the shard, position in it), when packed.
    at: Option<(usize, usize)>,
    features: Vec<(usize, f32)>,
}

impl TokenStat {
    fn of(t: &Trace, p: usize, k: usize) -> TokenStat {
        TokenStat {
            id: t.tokens[p].id,
            surprisal: t.surprisal_bits[p],
            entropy: t.entropy_bits[p],
            rank: t.rank[p],
            top: (0..k)
                .map(|j| {
                    t.top[p]
                        .get(j)
                        .map_or((-1, 0.0), |x| (x.id as i32, x.p as f64))
                })
                .collect(),
            bytes: t.tokens[p].text.len(),
            at: None,
            features: Vec::new(),
        }
    }
}

/// Per token, its active features (feature, activation), largest first.
type TokenFeatures = Vec<Vec<(usize, f32)>>;

/// What the shard's runs capture besides the statistics.
fn shard_capture(settings: &BatchSettings, sites: &[ActSite], sae: Option<&Sae>) -> Capture {
    let sae_sites =
        sae.is_some_and(|s| s.transcoder || !matches!(s.site, Site::ResidPre | Site::ResidPost));
    Capture {
        top_k: settings.top_k,
        residual: !sites.is_empty() || sae.is_some(),
        sites: sites.iter().any(ActSite::needs_sites) || sae_sites,
        ..Capture::default()
    }
}

/// Runs `docs` (the documents of one shard, the first of them document `first_doc` of the
/// corpus) through `model` and makes the shard's files: its token and document rows, with
/// `--sites` the activation cache's rows, with `sae` (the SAE the settings' `sae_sha256` names)
/// its features. `progress` is called after each pass with how many documents are done and the
/// tokens the pass had.
#[allow(clippy::too_many_arguments)]
pub fn make_shard(
    model: &Model,
    backend: &dyn Backend,
    docs: &[String],
    first_doc: usize,
    settings: &BatchSettings,
    sae: Option<&Sae>,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ShardFiles> {
    let sites = check_settings(settings, model)?;
    match (sae, &settings.sae_sha256) {
        (Some(s), Some(_)) => s.check(model)?,
        (None, None) => {}
        _ => {
            return Err(PrismError::Input(
                "the batch settings and the SAE given disagree: give the SAE whose sha256 the settings record, or none".into(),
            ))
        }
    }
    let tok = model.tokenizer.as_ref().ok_or_else(|| {
        PrismError::Input(format!("{} has no tokenizer", model.info.path.display()))
    })?;
    let capture = shard_capture(settings, &sites, sae);
    let k = settings.top_k;
    let features = |trace: &Trace| -> Result<Option<TokenFeatures>> {
        match sae {
            Some(s) => Ok(Some(crate::sae::active_features(backend, trace, s)?)),
            None => Ok(None),
        }
    };
    let run_many = |seqs: &[&[u32]]| -> Result<Vec<(Trace, Option<TokenFeatures>)>> {
        if cancel.load(Ordering::Relaxed) {
            return Err(PrismError::Cancelled);
        }
        let traces = if seqs.len() == 1 {
            vec![Trace::run(model, backend, seqs[0], capture, k)?]
        } else {
            Trace::run_batch(model, backend, seqs, capture, k)?
        };
        traces
            .into_iter()
            .map(|t| {
                let f = features(&t)?;
                Ok((t, f))
            })
            .collect()
    };
    let mut per_doc: Vec<Vec<TokenStat>> = Vec::with_capacity(docs.len());
    let mut kept: Vec<(bool, String)> = Vec::with_capacity(docs.len());
    let mut activations = Vec::new();
    if !settings.pack {
        for (i, text) in docs.iter().enumerate() {
            let mut ids = tok.encode(text, settings.bos)?;
            let truncated = ids.len() > settings.context;
            ids.truncate(settings.context);
            if ids.is_empty() {
                return Err(PrismError::Input(format!(
                    "document {} has no tokens",
                    first_doc + i
                )));
            }
            let (trace, feats) = run_many(&[&ids])?
                .pop()
                .ok_or_else(|| PrismError::Backend("a pass returned no trace".into()))?;
            let mut stats: Vec<TokenStat> = (0..ids.len())
                .map(|p| TokenStat::of(&trace, p, k))
                .collect();
            if let Some(f) = feats {
                for (st, f) in stats.iter_mut().zip(f) {
                    st.features = f;
                }
            }
            per_doc.push(stats);
            // A truncated document is compared with zstd on the text its tokens cover.
            kept.push((
                truncated,
                if truncated {
                    tok.decode(&ids)?
                } else {
                    text.clone()
                },
            ));
            progress(i + 1, ids.len());
        }
    } else {
        let mut streams = Vec::with_capacity(docs.len());
        let mut bos = None;
        for (i, text) in docs.iter().enumerate() {
            let mut ids = tok.encode(text, settings.bos)?;
            // The packing puts BOS where it belongs; a document's own tokens are its text's.
            if let (Some(&first), Some(b)) = (ids.first(), tok.bos_id) {
                if first == b {
                    bos = Some(b);
                    ids.remove(0);
                }
            }
            if ids.is_empty() {
                return Err(PrismError::Input(format!(
                    "document {} has no tokens",
                    first_doc + i
                )));
            }
            streams.push(ids);
            kept.push((false, text.clone()));
        }
        let windows = pack(&streams, settings.context, bos);
        per_doc = streams
            .iter()
            .map(|s| vec![TokenStat::default(); s.len()])
            .collect();
        // Full windows several per pass; the shorter last one alone.
        let per_pass = settings.windows_per_pass(backend).max(1);
        let mut passes: Vec<Vec<usize>> = Vec::new();
        for (wi, w) in windows.iter().enumerate() {
            match passes.last_mut() {
                Some(p) if p.len() < per_pass && windows[p[0]].ids.len() == w.ids.len() => {
                    p.push(wi)
                }
                _ => passes.push(vec![wi]),
            }
        }
        for pass in passes {
            let seqs: Vec<&[u32]> = pass.iter().map(|&i| windows[i].ids.as_slice()).collect();
            for (&wi, (trace, feats)) in pass.iter().zip(run_many(&seqs)?) {
                let w = &windows[wi];
                for (p, owner) in w.owner.iter().enumerate() {
                    if let Some((d, pos)) = *owner {
                        let mut st = TokenStat::of(&trace, p, k);
                        st.at = Some((wi, p));
                        if let Some(f) = &feats {
                            st.features = f[p].clone();
                        }
                        per_doc[d][pos] = st;
                    }
                }
                if !sites.is_empty() && w.ids.len() == settings.context {
                    let values = sites
                        .iter()
                        .map(|a| trace.site_values(a.site, a.layer))
                        .collect::<Result<Vec<_>>>()?;
                    activations.push((w.ids.clone(), values));
                }
                // Documents whose last token is in this window or an earlier one.
                let done = w.owner.iter().rev().find_map(|o| *o).map_or(0, |(d, pos)| {
                    if pos + 1 == streams[d].len() {
                        d + 1
                    } else {
                        d
                    }
                });
                progress(done, w.ids.len());
            }
        }
    }
    let mut t = TokenCols::new(k, settings.pack);
    let mut d = DocCols::default();
    let mut f = FeatureCols::default();
    for (i, (stats, (truncated, text))) in per_doc.iter().zip(&kept).enumerate() {
        let doc = first_doc + i;
        let predicted: Vec<&TokenStat> = stats.iter().filter(|s| s.surprisal.is_some()).collect();
        let s = RunSummary::from_parts(
            stats.len(),
            predicted.len(),
            predicted.iter().filter_map(|s| s.surprisal).sum(),
            predicted.iter().map(|s| s.bytes).sum(),
            Some(text),
        );
        for (pos, st) in stats.iter().enumerate() {
            t.push(doc, pos, st);
            f.push(doc, pos, &st.features);
        }
        d.push(doc, &s, *truncated, text);
    }
    let activations = if sites.is_empty() {
        None
    } else {
        let layout = Layout::new(&sites, &model.spec, settings.context, settings.dtype);
        Some((layout.write(&activations)?, activations.len()))
    };
    Ok(ShardFiles {
        tokens_parquet: t.write()?,
        docs_parquet: d.write()?,
        tokens: t.doc.len(),
        docs: docs.len(),
        activations,
        features_parquet: match sae {
            Some(_) => Some(f.write()?),
            None => None,
        },
    })
}

/// Writes shard `index`'s files into `out` and adds it to the manifest there. Shards are
/// committed in order (`index` must be the manifest's next), so a folder always holds a prefix
/// of the run and a resumed run starts at its end.
pub fn commit_shard(
    out: &Path,
    manifest: &mut Manifest,
    index: usize,
    files: &ShardFiles,
) -> Result<()> {
    let mpath = out.join(MANIFEST);
    if index != manifest.shards.len() {
        return Err(bad(
            &mpath,
            format!(
                "shard {index} cannot be committed: the folder holds shards 0..{}, so shard {} comes next",
                manifest.shards.len(),
                manifest.shards.len()
            ),
        ));
    }
    let n = manifest.documents;
    let (first, last) = shard_range(index, n, &manifest.settings);
    if first >= last || files.docs != last - first {
        return Err(bad(
            &mpath,
            format!(
                "shard {index} should hold documents {first}..{last} of {n}, not {} documents",
                files.docs
            ),
        ));
    }
    let (tokens_file, docs_file) = (
        format!("tokens-{index:05}.parquet"),
        format!("docs-{index:05}.parquet"),
    );
    if files.activations.is_some() != manifest.activations.is_some()
        || files.features_parquet.is_some() != manifest.settings.sae_sha256.is_some()
    {
        return Err(bad(
            &mpath,
            format!("shard {index} was made with other settings than the folder's (activations or SAE features differ)"),
        ));
    }
    crate::atomic::write_atomic(&out.join(&tokens_file), &files.tokens_parquet)?;
    crate::atomic::write_atomic(&out.join(&docs_file), &files.docs_parquet)?;
    let mut shard = Shard {
        index,
        first_doc: first,
        docs: last - first,
        tokens: files.tokens,
        tokens_file,
        tokens_sha256: sha256(&files.tokens_parquet),
        docs_file,
        docs_sha256: sha256(&files.docs_parquet),
        activations_file: None,
        activations_sha256: None,
        activation_rows: None,
        features_file: None,
        features_sha256: None,
    };
    if let Some(f) = &files.features_parquet {
        let name = format!("features-{index:05}.parquet");
        crate::atomic::write_atomic(&out.join(&name), f)?;
        shard.features_file = Some(name);
        shard.features_sha256 = Some(sha256(f));
    }
    if let (Some((bytes, rows)), Some(layout)) = (&files.activations, &manifest.activations) {
        let dir = out.join(ACTIVATIONS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| PrismError::Io {
            path: dir.clone(),
            source: e,
        })?;
        let name = format!("data-{index:05}.arrow");
        crate::atomic::write_atomic(&dir.join(&name), bytes)?;
        shard.activations_file = Some(format!("{ACTIVATIONS_DIR}{name}"));
        shard.activations_sha256 = Some(sha256(bytes));
        shard.activation_rows = Some(*rows);
        // The dataset lists the finished shards' files and this one, before the manifest
        // records it: a folder never lists a file it does not hold.
        let listed: Vec<(String, String)> = manifest
            .shards
            .iter()
            .chain(std::iter::once(&shard))
            .filter_map(|s| {
                let f = s.activations_file.as_ref()?;
                Some((
                    f.strip_prefix(ACTIVATIONS_DIR).unwrap_or(f).to_string(),
                    s.activations_sha256.clone()?,
                ))
            })
            .collect();
        layout.write_meta(&dir, &listed)?;
    }
    manifest.shards.push(shard);
    crate::atomic::write_atomic(
        &mpath,
        &serde_json::to_vec_pretty(&manifest).map_err(json_err)?,
    )
}

/// Runs `corpus` through `model` into `out`, resuming what a manifest there says is done;
/// `sae` is the SAE whose sha256 the settings record, if they record one.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &Model,
    backend: &dyn Backend,
    corpus: &Corpus,
    out: &Path,
    settings: &BatchSettings,
    sae: Option<&Sae>,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<Manifest> {
    let mut manifest = open(model, corpus, out, settings)?;
    let n = corpus.documents.len();
    let shards = n.div_ceil(settings.shard_docs);
    let start = std::time::Instant::now();
    let mut tokens_run = 0;
    for index in manifest.shards.len()..shards {
        let (first, last) = shard_range(index, n, settings);
        let files = make_shard(
            model,
            backend,
            &corpus.documents[first..last],
            first,
            settings,
            sae,
            cancel,
            &mut |done, tokens| {
                tokens_run += tokens;
                progress(Progress {
                    docs_done: first + done,
                    docs: n,
                    tokens_run,
                    seconds: start.elapsed().as_secs_f64(),
                })
            },
        )?;
        commit_shard(out, &mut manifest, index, &files)?;
    }
    Ok(manifest)
}

fn json_err(e: serde_json::Error) -> PrismError {
    PrismError::Backend(format!("cannot write the batch manifest: {e}"))
}

fn pq_err(e: parquet::errors::ParquetError) -> PrismError {
    PrismError::Backend(format!("parquet: {e}"))
}

fn props() -> Arc<WriterProperties> {
    // Fixed writer identity and compression: the same shard is the same bytes.
    Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
            .set_created_by("prism".into())
            .build(),
    )
}

/// A column of a shard, in schema order.
enum Col<'a> {
    I64(&'a [i64]),
    I32(&'a [i32]),
    /// Optional: values of the defined rows, and per row 1 (defined) or 0.
    OptF64(&'a [f64], &'a [i16]),
    OptI32(&'a [i32], &'a [i16]),
    F64(&'a [f64]),
    F32(&'a [f32]),
    Bool(&'a [bool]),
    Str(&'a [ByteArray]),
}

fn write_parquet(schema: &str, cols: &[Col<'_>]) -> Result<Vec<u8>> {
    let schema = Arc::new(parquet::schema::parser::parse_message_type(schema).map_err(pq_err)?);
    let mut buf = Vec::new();
    let mut w = SerializedFileWriter::new(&mut buf, schema, props()).map_err(pq_err)?;
    let mut rg = w.next_row_group().map_err(pq_err)?;
    for c in cols {
        let mut cw = rg
            .next_column()
            .map_err(pq_err)?
            .ok_or_else(|| PrismError::Backend("parquet: more columns than the schema".into()))?;
        match c {
            Col::I64(v) => cw.typed::<Int64Type>().write_batch(v, None, None),
            Col::I32(v) => cw.typed::<Int32Type>().write_batch(v, None, None),
            Col::OptF64(v, d) => cw.typed::<DoubleType>().write_batch(v, Some(d), None),
            Col::OptI32(v, d) => cw.typed::<Int32Type>().write_batch(v, Some(d), None),
            Col::F64(v) => cw.typed::<DoubleType>().write_batch(v, None, None),
            Col::F32(v) => cw.typed::<FloatType>().write_batch(v, None, None),
            Col::Bool(v) => cw.typed::<BoolType>().write_batch(v, None, None),
            Col::Str(v) => cw.typed::<ByteArrayType>().write_batch(v, None, None),
        }
        .map_err(pq_err)?;
        cw.close().map_err(pq_err)?;
    }
    rg.close().map_err(pq_err)?;
    w.close().map_err(pq_err)?;
    Ok(buf)
}

/// The token rows of a shard, column by column.
struct TokenCols {
    k: usize,
    packed: bool,
    doc: Vec<i64>,
    position: Vec<i32>,
    id: Vec<i32>,
    surprisal: (Vec<f64>, Vec<i16>),
    entropy: (Vec<f64>, Vec<i16>),
    rank: (Vec<i32>, Vec<i16>),
    /// Per k: the ids and probabilities of the k-th prediction.
    top_id: Vec<Vec<i32>>,
    top_p: Vec<Vec<f64>>,
    /// Packed: the window (in the shard) and the position in it.
    window: Vec<i32>,
    offset: Vec<i32>,
}

impl TokenCols {
    fn new(k: usize, packed: bool) -> Self {
        TokenCols {
            k,
            packed,
            doc: Vec::new(),
            position: Vec::new(),
            id: Vec::new(),
            surprisal: Default::default(),
            entropy: Default::default(),
            rank: Default::default(),
            top_id: vec![Vec::new(); k],
            top_p: vec![Vec::new(); k],
            window: Vec::new(),
            offset: Vec::new(),
        }
    }

    fn push(&mut self, doc: usize, position: usize, t: &TokenStat) {
        fn opt<T: Copy>(c: &mut (Vec<T>, Vec<i16>), v: Option<T>) {
            match v {
                Some(v) => {
                    c.0.push(v);
                    c.1.push(1);
                }
                None => c.1.push(0),
            }
        }
        self.doc.push(doc as i64);
        self.position.push(position as i32);
        self.id.push(t.id as i32);
        opt(&mut self.surprisal, t.surprisal);
        opt(&mut self.entropy, t.entropy);
        opt(&mut self.rank, t.rank.map(|r| r as i32));
        for j in 0..self.k {
            let (id, p) = t.top.get(j).copied().unwrap_or((-1, 0.0));
            self.top_id[j].push(id);
            self.top_p[j].push(p);
        }
        if self.packed {
            let (w, o) = t.at.unwrap_or((0, 0));
            self.window.push(w as i32);
            self.offset.push(o as i32);
        }
    }

    fn write(&self) -> Result<Vec<u8>> {
        let mut schema = String::from(
            "message tokens { required int64 doc; required int32 position; required int32 id; optional double surprisal_bits; optional double entropy_bits; optional int32 rank;",
        );
        for j in 1..=self.k {
            schema += &format!(" required int32 top{j}_id; required double top{j}_p;");
        }
        if self.packed {
            schema += " required int32 window; required int32 window_position;";
        }
        schema += " }";
        let mut cols = vec![
            Col::I64(&self.doc),
            Col::I32(&self.position),
            Col::I32(&self.id),
            Col::OptF64(&self.surprisal.0, &self.surprisal.1),
            Col::OptF64(&self.entropy.0, &self.entropy.1),
            Col::OptI32(&self.rank.0, &self.rank.1),
        ];
        for j in 0..self.k {
            cols.push(Col::I32(&self.top_id[j]));
            cols.push(Col::F64(&self.top_p[j]));
        }
        if self.packed {
            cols.push(Col::I32(&self.window));
            cols.push(Col::I32(&self.offset));
        }
        write_parquet(&schema, &cols)
    }
}

/// The sparse SAE features of a shard's tokens: one row per (token, active feature), largest
/// activation first within a token.
#[derive(Default)]
struct FeatureCols {
    doc: Vec<i64>,
    position: Vec<i32>,
    feature: Vec<i32>,
    activation: Vec<f32>,
}

impl FeatureCols {
    fn push(&mut self, doc: usize, position: usize, features: &[(usize, f32)]) {
        for &(j, a) in features {
            self.doc.push(doc as i64);
            self.position.push(position as i32);
            self.feature.push(j as i32);
            self.activation.push(a);
        }
    }

    fn write(&self) -> Result<Vec<u8>> {
        write_parquet(
            "message features { required int64 doc; required int32 position; required int32 feature; required float activation; }",
            &[
                Col::I64(&self.doc),
                Col::I32(&self.position),
                Col::I32(&self.feature),
                Col::F32(&self.activation),
            ],
        )
    }
}

/// The document rows of a shard.
#[derive(Default)]
struct DocCols {
    doc: Vec<i64>,
    tokens: Vec<i32>,
    truncated: Vec<bool>,
    bits: Vec<f64>,
    predicted_bytes: Vec<i64>,
    bits_per_byte: Vec<f64>,
    text_bytes: Vec<i64>,
    zstd_bytes: Vec<i64>,
    zstd_bits_per_byte: Vec<f64>,
    text: Vec<ByteArray>,
}

impl DocCols {
    fn push(&mut self, doc: usize, s: &RunSummary, truncated: bool, text: &str) {
        self.doc.push(doc as i64);
        self.tokens.push(s.tokens as i32);
        self.truncated.push(truncated);
        self.bits.push(s.total_bits);
        self.predicted_bytes.push(s.predicted_bytes as i64);
        self.bits_per_byte.push(s.bits_per_byte);
        self.text_bytes.push(s.text_bytes.unwrap_or(0) as i64);
        self.zstd_bytes.push(s.zstd_bytes.unwrap_or(0) as i64);
        self.zstd_bits_per_byte
            .push(s.zstd_bits_per_byte.unwrap_or(0.0));
        self.text.push(ByteArray::from(text));
    }

    fn write(&self) -> Result<Vec<u8>> {
        let schema = "message docs { required int64 doc; required int32 tokens; required boolean truncated; required double bits; required int64 predicted_bytes; required double bits_per_byte; required int64 text_bytes; required int64 zstd_bytes; required double zstd_bits_per_byte; required binary text (UTF8); }";
        write_parquet(
            schema,
            &[
                Col::I64(&self.doc),
                Col::I32(&self.tokens),
                Col::Bool(&self.truncated),
                Col::F64(&self.bits),
                Col::I64(&self.predicted_bytes),
                Col::F64(&self.bits_per_byte),
                Col::I64(&self.text_bytes),
                Col::I64(&self.zstd_bytes),
                Col::F64(&self.zstd_bits_per_byte),
                Col::Str(&self.text),
            ],
        )
    }
}

/// One document's row of a batch folder.
#[derive(Debug, Clone, Serialize)]
pub struct DocRow {
    pub doc: usize,
    pub tokens: usize,
    pub truncated: bool,
    pub bits: f64,
    pub predicted_bytes: usize,
    pub bits_per_byte: f64,
    pub text_bytes: usize,
    pub zstd_bytes: usize,
    pub zstd_bits_per_byte: f64,
    pub text: String,
}

/// What `prism batch --summary` prints: every document and the totals.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub manifest: Manifest,
    pub docs: Vec<DocRow>,
    pub total_bits: f64,
    pub total_predicted_bytes: usize,
    /// Total bits over total predicted bytes.
    pub bits_per_byte: f64,
    /// zstd's total compressed bits over the total text bytes.
    pub zstd_bits_per_byte: f64,
}

/// Every row of a shard; the reader runs guarded (a folder's checksums say only that the files
/// are the ones its manifest lists, not that whoever wrote them was Prism).
fn rows(path: &Path) -> Result<Vec<parquet::record::Row>> {
    crate::guard::guarded(|| rows_unguarded(path)).unwrap_or_else(|panic| {
        Err(bad(
            path,
            format!("not a readable Parquet file (its reader failed: {panic})"),
        ))
    })
}

fn rows_unguarded(path: &Path) -> Result<Vec<parquet::record::Row>> {
    let file = std::fs::File::open(path).map_err(|e| PrismError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let r = SerializedFileReader::new(file)
        .map_err(|e| bad(path, format!("not a readable Parquet file: {e}")))?;
    r.get_row_iter(None)
        .map_err(|e| bad(path, format!("cannot read its rows: {e}")))?
        .map(|row| row.map_err(|e| bad(path, format!("cannot read a row: {e}"))))
        .collect()
}

/// The documents of a checked batch folder and their totals.
pub fn summary(dir: &Path) -> Result<Summary> {
    let manifest = verify(dir)?;
    let mut docs = Vec::new();
    for s in &manifest.shards {
        let path = dir.join(&s.docs_file);
        for row in rows(&path)? {
            let get = |e: parquet::errors::ParquetError| bad(&path, format!("a document row: {e}"));
            docs.push(DocRow {
                doc: row.get_long(0).map_err(get)? as usize,
                tokens: row.get_int(1).map_err(get)? as usize,
                truncated: row.get_bool(2).map_err(get)?,
                bits: row.get_double(3).map_err(get)?,
                predicted_bytes: row.get_long(4).map_err(get)? as usize,
                bits_per_byte: row.get_double(5).map_err(get)?,
                text_bytes: row.get_long(6).map_err(get)? as usize,
                zstd_bytes: row.get_long(7).map_err(get)? as usize,
                zstd_bits_per_byte: row.get_double(8).map_err(get)?,
                text: row.get_string(9).map_err(get)?.clone(),
            });
        }
    }
    let total_bits: f64 = docs.iter().map(|d| d.bits).sum();
    let total_predicted_bytes: usize = docs.iter().map(|d| d.predicted_bytes).sum();
    let text: usize = docs.iter().map(|d| d.text_bytes).sum();
    let zstd: usize = docs.iter().map(|d| d.zstd_bytes).sum();
    let ratio = |a: f64, b: usize| if b > 0 { a / b as f64 } else { 0.0 };
    Ok(Summary {
        bits_per_byte: ratio(total_bits, total_predicted_bytes),
        zstd_bits_per_byte: ratio(8.0 * zstd as f64, text),
        manifest,
        docs,
        total_bits,
        total_predicted_bytes,
    })
}

/// One token's row (for tests and readers that want them back).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenRow {
    pub doc: usize,
    pub position: usize,
    pub id: u32,
    pub surprisal_bits: Option<f64>,
    pub entropy_bits: Option<f64>,
    pub rank: Option<usize>,
    pub top: Vec<(i32, f64)>,
}

/// Every token row of a checked batch folder, in order.
pub fn tokens(dir: &Path) -> Result<Vec<TokenRow>> {
    let manifest = verify(dir)?;
    let mut out = Vec::new();
    for s in &manifest.shards {
        out.extend(shard_tokens(dir, s, manifest.settings.top_k)?);
    }
    Ok(out)
}

/// The token rows of document `doc` of a batch folder whose `manifest` was verified: its
/// shard alone is read, after checking it against its checksum again.
pub fn document_tokens(dir: &Path, manifest: &Manifest, doc: usize) -> Result<Vec<TokenRow>> {
    let s = manifest
        .shards
        .iter()
        .find(|s| (s.first_doc..s.first_doc + s.docs).contains(&doc))
        .ok_or_else(|| {
            PrismError::Input(format!(
                "document {doc} is in no finished shard of {}",
                dir.display()
            ))
        })?;
    let path = dir.join(&s.tokens_file);
    let bytes = std::fs::read(&path).map_err(|e| PrismError::Io {
        path: path.clone(),
        source: e,
    })?;
    if sha256(&bytes) != s.tokens_sha256 {
        return Err(bad(
            &path,
            "the shard no longer matches the checksum in manifest.json: it was changed",
        ));
    }
    let mut rows = shard_tokens(dir, s, manifest.settings.top_k)?;
    rows.retain(|r| r.doc == doc);
    Ok(rows)
}

fn shard_tokens(dir: &Path, s: &Shard, k: usize) -> Result<Vec<TokenRow>> {
    let path = dir.join(&s.tokens_file);
    let mut out = Vec::new();
    for row in rows(&path)? {
        let get = |e: parquet::errors::ParquetError| bad(&path, format!("a token row: {e}"));
        let opt_f = |i: usize| row.get_double(i).ok();
        out.push(TokenRow {
            doc: row.get_long(0).map_err(get)? as usize,
            position: row.get_int(1).map_err(get)? as usize,
            id: row.get_int(2).map_err(get)? as u32,
            surprisal_bits: opt_f(3),
            entropy_bits: opt_f(4),
            rank: row.get_int(5).ok().map(|r| r as usize),
            top: (0..k)
                .map(|j| {
                    Ok((
                        row.get_int(6 + 2 * j).map_err(get)?,
                        row.get_double(7 + 2 * j).map_err(get)?,
                    ))
                })
                .collect::<Result<_>>()?,
        });
    }
    Ok(out)
}

/// One active SAE feature of one token: a row of `features-NNNNN.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureRow {
    pub doc: usize,
    pub position: usize,
    pub feature: usize,
    pub activation: f32,
}

/// Every feature row of a checked batch folder run with an SAE, in order.
pub fn features(dir: &Path) -> Result<Vec<FeatureRow>> {
    let manifest = verify(dir)?;
    let mut out = Vec::new();
    for s in &manifest.shards {
        let Some(file) = &s.features_file else {
            return Err(bad(
                &dir.join(MANIFEST),
                "this batch ran without an SAE: it holds no features",
            ));
        };
        let path = dir.join(file);
        for row in rows(&path)? {
            let get = |e: parquet::errors::ParquetError| bad(&path, format!("a feature row: {e}"));
            out.push(FeatureRow {
                doc: row.get_long(0).map_err(get)? as usize,
                position: row.get_int(1).map_err(get)? as usize,
                feature: row.get_int(2).map_err(get)? as usize,
                activation: row.get_float(3).map_err(get)?,
            });
        }
    }
    Ok(out)
}
