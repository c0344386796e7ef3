//! `import prism`: Prism's core from Python. A model opens as the CLI opens it (a GGUF file, a
//! Hugging Face folder or a sample name), runs on the CPU or the GPU, and returns what it
//! computed as numpy arrays; the numbers are the ones `prism run --json` prints, from the same
//! calls. Interventions are the same dicts as the CLI's JSON file. Corpus shards (`Batch`,
//! `Model.batch_shard`) are the files `prism batch` writes, so a Ray pipeline can spread a corpus
//! over machines and still produce the folder `prism batch` would.
//!
//! Errors raise `prism.PrismError` with Prism's message; long runs release the GIL.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use numpy::ndarray::{ArrayD, IxDyn};
use numpy::PyArray;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use prism_analysis::actcache::{self, ActDtype};
use prism_analysis::backend::{self, Backend, BackendChoice, Capture};
use prism_analysis::batch::{self, BatchSettings, ShardFiles};
use prism_analysis::corpus::Corpus;
use prism_analysis::generate::{generate, GenSettings, Sampling};
use prism_analysis::intervene::Intervention;
use prism_analysis::sae::{self, Sae};
use prism_analysis::trace::{RunSummary, Trace};

pyo3::create_exception!(
    prism,
    PrismError,
    pyo3::exceptions::PyException,
    "An error from Prism: bad input (a broken file, an impossible intervention) or a failed run."
);

fn err(e: impl std::fmt::Display) -> PyErr {
    PrismError::new_err(e.to_string())
}

/// A numpy array of `shape` over `data` (row-major).
fn array<'py, T: numpy::Element>(
    py: Python<'py>,
    shape: &[usize],
    data: Vec<T>,
) -> PyResult<Bound<'py, PyAny>> {
    let a = ArrayD::from_shape_vec(IxDyn(shape), data).map_err(err)?;
    Ok(PyArray::from_owned_array(py, a).into_any())
}

/// A checkpoint opened with a backend.
#[pyclass(module = "prism", frozen)]
struct Model {
    model: Arc<prism_analysis::model::Model>,
    backend: Box<dyn Backend>,
    /// Notes from creating the backend (a fallback, a software adapter).
    notes: Vec<String>,
}

/// A sparse autoencoder or transcoder, as `prism features --sae` reads it.
#[pyclass(module = "prism", frozen)]
struct SparseAutoencoder {
    sae: Sae,
    /// sha256 of its files, as a batch manifest records it.
    sha256: String,
}

#[pymethods]
impl SparseAutoencoder {
    #[getter]
    fn hook(&self) -> String {
        self.sae.hook.clone()
    }
    /// Prism's site name (resid_pre, resid_post, mlp_out, attn_out, head, ...).
    #[getter]
    fn site(&self) -> &'static str {
        self.sae.site.name()
    }
    #[getter]
    fn layer(&self) -> usize {
        self.sae.layer
    }
    #[getter]
    fn d_in(&self) -> usize {
        self.sae.d_in
    }
    #[getter]
    fn d_sae(&self) -> usize {
        self.sae.d_sae
    }
    #[getter]
    fn transcoder(&self) -> bool {
        self.sae.transcoder
    }
    fn __repr__(&self) -> String {
        format!(
            "<prism.SparseAutoencoder {} ({}@{}, {} -> {})>",
            self.sae.path.display(),
            self.sae.site.name(),
            self.sae.layer,
            self.sae.d_in,
            self.sae.d_sae
        )
    }
}

/// Opens a model: a GGUF file, a Hugging Face folder, or a downloaded sample's name
/// ("smollm2"). `backend` is "cpu", "gpu" or "auto".
#[pyfunction]
#[pyo3(signature = (path, backend = "cpu"))]
fn load(py: Python<'_>, path: &str, backend: &str) -> PyResult<Model> {
    let choice: BackendChoice = backend.parse().map_err(err)?;
    let path = path.to_string();
    py.detach(move || {
        let file = prism_analysis::checkpoint::resolve(&path).map_err(err)?;
        let model = Arc::new(prism_analysis::checkpoint::load(&file).map_err(err)?);
        let (backend, notes) = backend::create(&model, choice).map_err(err)?;
        Ok(Model {
            model,
            backend,
            notes,
        })
    })
}

/// Reads a sparse autoencoder or transcoder (SAELens's folder, Gemma Scope's, Llama Scope's,
/// sparsify's, one circuit-tracer layer file).
#[pyfunction]
fn load_sae(py: Python<'_>, path: PathBuf) -> PyResult<SparseAutoencoder> {
    py.detach(move || {
        let sae = Sae::load(&path).map_err(err)?;
        let sha256 = batch::model_sha256(&path).map_err(err)?;
        Ok(SparseAutoencoder { sae, sha256 })
    })
}

/// A corpus's documents as `prism batch` reads them (a text file with one document per line,
/// JSONL with a "text" field, a Parquet text column, or a folder of these), in its order.
#[pyfunction]
fn read_corpus(py: Python<'_>, path: PathBuf) -> PyResult<Vec<String>> {
    py.detach(move || Corpus::read(&path).map(|c| c.documents).map_err(err))
}

/// The interventions list (the CLI's JSON file as Python dicts, or its JSON text), resolved:
/// SAEs of `feature` entries read (relative to the working folder), patch sources run.
fn resolve_interventions(
    py: Python<'_>,
    m: &Model,
    list: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<Intervention>> {
    let Some(list) = list.filter(|l| !l.is_none()) else {
        return Ok(Vec::new());
    };
    let text: String = match list.extract::<String>() {
        Ok(s) => s,
        Err(_) => py
            .import("json")?
            .call_method1("dumps", (list,))?
            .extract()?,
    };
    py.detach(|| {
        sae::prepare_interventions(&text, Path::new("."), &m.model, m.backend.as_ref())
            .map_err(|e| err(format!("interventions: {e}")))
    })
}

fn summary_dict(d: &Bound<'_, PyDict>, s: &RunSummary) -> PyResult<()> {
    d.set_item("total_bits", s.total_bits)?;
    d.set_item("predicted_bytes", s.predicted_bytes)?;
    d.set_item("bits_per_byte", s.bits_per_byte)?;
    d.set_item("text_bytes", s.text_bytes)?;
    d.set_item("zstd_bytes", s.zstd_bytes)?;
    d.set_item("zstd_bits_per_byte", s.zstd_bits_per_byte)?;
    Ok(())
}

/// A layer-indexed list of `[rows, width]` activations as one `[layers, rows, width]` array
/// (NaN where a layer has none), or a list of arrays when the widths differ.
fn stack<'py>(py: Python<'py>, layers: &[Vec<f32>], rows: usize) -> PyResult<Bound<'py, PyAny>> {
    let widths: Vec<usize> = layers.iter().map(|l| l.len() / rows.max(1)).collect();
    let width = widths.iter().copied().max().unwrap_or(0);
    if widths.iter().all(|&w| w == width || w == 0) {
        let mut flat = Vec::with_capacity(layers.len() * rows * width);
        for l in layers {
            if l.is_empty() {
                flat.extend(std::iter::repeat_n(f32::NAN, rows * width));
            } else {
                flat.extend_from_slice(l);
            }
        }
        return array(py, &[layers.len(), rows, width], flat);
    }
    let list = PyList::empty(py);
    for (l, w) in layers.iter().zip(widths) {
        list.append(array(py, &[rows, w], l.clone())?)?;
    }
    Ok(list.into_any())
}

const CAPTURES: &[&str] = &[
    "attention",
    "residual",
    "lens",
    "experts",
    "sites",
    "logits",
    "features",
];

#[pymethods]
impl Model {
    #[getter]
    fn path(&self) -> PathBuf {
        self.model.info.path.clone()
    }
    #[getter]
    fn architecture(&self) -> String {
        self.model.spec.architecture.clone()
    }
    #[getter]
    fn n_layers(&self) -> usize {
        self.model.spec.n_layers
    }
    #[getter]
    fn n_heads(&self) -> usize {
        self.model.spec.n_heads
    }
    #[getter]
    fn hidden(&self) -> usize {
        self.model.spec.hidden
    }
    #[getter]
    fn vocab(&self) -> usize {
        self.model.spec.vocab
    }
    #[getter]
    fn context_length(&self) -> usize {
        self.model.spec.context_length
    }
    /// The backend as `prism run --json` reports it ("cpu (avx2, 2 threads)", "gpu: ...").
    #[getter]
    fn backend(&self) -> String {
        self.backend.describe()
    }
    /// What creating the backend had to say (a fallback to the CPU, a software adapter).
    #[getter]
    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
    fn __repr__(&self) -> String {
        format!(
            "<prism.Model {} ({}, {} layers) on {}>",
            self.model.info.path.display(),
            self.model.spec.architecture,
            self.model.spec.n_layers,
            self.backend.describe()
        )
    }

    /// Token ids of `text` (with BOS where the model's settings add it, or `bos=True`).
    #[pyo3(signature = (text, bos = false))]
    fn tokenize(&self, text: &str, bos: bool) -> PyResult<Vec<u32>> {
        let tok = self.tokenizer()?;
        tok.encode(text, bos).map_err(err)
    }

    /// The text of token ids.
    fn decode(&self, ids: Vec<u32>) -> PyResult<String> {
        self.tokenizer()?.decode(&ids).map_err(err)
    }

    /// Each token's text as the CLI and the app show it.
    fn token_texts(&self, ids: Vec<u32>) -> Vec<String> {
        ids.iter().map(|&i| self.model.token_text(i)).collect()
    }

    /// One forward pass over a text or token ids. Always returns `ids`, `tokens`,
    /// `surprisal_bits` and `entropy_bits` (NaN for the first token), `rank` (-1 there), `top_ids`
    /// and `top_p` (`[tokens, top]`), and the totals (`total_bits`, `bits_per_byte`, zstd's).
    /// `capture` adds: "attention" (`[layers, heads, tokens, tokens]`, NaN for linear-attention
    /// layers, whose unrolled rule is `mixing`), "residual" (`[layers + 1, tokens, hidden]`, entry
    /// 0 the embeddings), "lens" (`lens_ids`/`lens_p`, `[layers + 1, tokens, 5]`), "experts"
    /// (`expert_layers`, `router_probs` and `expert_weights` `[moe layers, tokens, experts]`,
    /// `expert_ids` `[moe layers, tokens, top-k]` heaviest first, -1 past the chosen), "sites"
    /// (`attn_out`, `mlp_out`, `mlp_in` `[layers, tokens, hidden]`, `head_z`), "logits"
    /// (`[tokens, vocab]`), "features" (with `sae`: `[tokens, d_sae]`, as SAELens's encode).
    /// `interventions`: the CLI's JSON list, as dicts.
    #[pyo3(signature = (input, capture = None, top = 5, bos = false, interventions = None, sae = None))]
    #[allow(clippy::too_many_arguments)]
    fn run<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, PyAny>,
        capture: Option<Vec<String>>,
        top: usize,
        bos: bool,
        interventions: Option<&Bound<'py, PyAny>>,
        sae: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let m = &self.model;
        if !m.spec.causal {
            return Err(err(format!(
                "{} is an encoder ({}): it predicts no next token",
                m.info.path.display(),
                m.spec.architecture
            )));
        }
        if !(1..=100).contains(&top) {
            return Err(err(format!("top {top}: between 1 and 100")));
        }
        let capture = capture.unwrap_or_default();
        if let Some(c) = capture.iter().find(|c| !CAPTURES.contains(&c.as_str())) {
            return Err(err(format!(
                "capture {c:?}: the choices are {}",
                CAPTURES.join(", ")
            )));
        }
        let wants = |c: &str| capture.iter().any(|x| x == c);
        let (ids, text) = match input.extract::<String>() {
            Ok(t) => {
                if t.is_empty() {
                    return Err(err("the text is empty: there is nothing to run"));
                }
                (self.tokenizer()?.encode(&t, bos).map_err(err)?, Some(t))
            }
            Err(_) => (
                input
                    .extract::<Vec<u32>>()
                    .map_err(|_| err("input: a text (str) or token ids (a list of ints)"))?,
                None,
            ),
        };
        if ids.is_empty() {
            return Err(err("no tokens: there is nothing to run"));
        }
        let sae_ref: Option<PyRef<'py, SparseAutoencoder>> = match sae {
            None => None,
            Some(s) if s.is_none() => None,
            Some(s) => Some(match s.extract::<PyRef<'py, SparseAutoencoder>>() {
                Ok(r) => r,
                Err(_) => {
                    let path: PathBuf = s
                        .extract()
                        .map_err(|_| err("sae: a prism.SparseAutoencoder or the path of one"))?;
                    Bound::new(py, load_sae(py, path)?)?.borrow()
                }
            }),
        };
        if wants("features") != sae_ref.is_some() {
            return Err(err(
                "features: capture \"features\" and give sae= (a prism.load_sae or a path) together",
            ));
        }
        if wants("experts") && m.spec.experts.is_none() {
            return Err(err(format!(
                "capture \"experts\": {} ({}) has no mixture-of-experts layer",
                m.info.path.display(),
                m.spec.architecture
            )));
        }
        let list = resolve_interventions(py, self, interventions)?;
        let features = wants("features");
        let cap = Capture {
            attention: wants("attention"),
            residual: wants("residual") || features,
            logits: wants("logits"),
            logit_lens: wants("lens"),
            top_k: top,
            sites: wants("sites") || features,
            experts: wants("experts"),
        };
        let sae_obj = sae_ref.as_ref().map(|r| &r.sae);
        let (trace, feats) = py.detach(|| -> PyResult<(Trace, Option<Vec<f32>>)> {
            if let Some(s) = sae_obj {
                s.check(m).map_err(err)?;
            }
            let trace =
                Trace::run_with(m, self.backend.as_ref(), &ids, cap, top, &list).map_err(err)?;
            let feats = match sae_obj {
                Some(s) => {
                    Some(sae::feature_activations(self.backend.as_ref(), &trace, s).map_err(err)?)
                }
                None => None,
            };
            Ok((trace, feats))
        })?;
        let n = ids.len();
        let d = PyDict::new(py);
        d.set_item("backend", &trace.backend)?;
        d.set_item("ids", array(py, &[n], ids.clone())?)?;
        d.set_item(
            "tokens",
            trace
                .tokens
                .iter()
                .map(|t| t.text.clone())
                .collect::<Vec<_>>(),
        )?;
        let nan = |v: &[Option<f64>]| v.iter().map(|x| x.unwrap_or(f64::NAN)).collect::<Vec<_>>();
        d.set_item(
            "surprisal_bits",
            array(py, &[n], nan(&trace.surprisal_bits))?,
        )?;
        d.set_item("entropy_bits", array(py, &[n], nan(&trace.entropy_bits))?)?;
        let rank: Vec<i64> = trace
            .rank
            .iter()
            .map(|r| r.map_or(-1, |r| r as i64))
            .collect();
        d.set_item("rank", array(py, &[n], rank)?)?;
        let k = trace.top.iter().map(|t| t.len()).max().unwrap_or(0);
        let mut top_ids = vec![-1i64; n * k];
        let mut top_p = vec![f32::NAN; n * k];
        for (i, row) in trace.top.iter().enumerate() {
            for (j, p) in row.iter().enumerate() {
                top_ids[i * k + j] = p.id as i64;
                top_p[i * k + j] = p.p;
            }
        }
        d.set_item("top_ids", array(py, &[n, k], top_ids)?)?;
        d.set_item("top_p", array(py, &[n, k], top_p)?)?;
        summary_dict(&d, &RunSummary::of(&trace, text.as_deref()))?;
        let out = &trace.output;
        if let Some(att) = trace.attention() {
            let (layers, heads) = (att.layers, att.heads);
            let mut flat = Vec::with_capacity(layers * heads * n * n);
            for l in 0..layers {
                for h in 0..heads {
                    let map = att.head(l, h);
                    if map.len() == n * n {
                        flat.extend_from_slice(map);
                    } else {
                        flat.extend(std::iter::repeat_n(f32::NAN, n * n));
                    }
                }
            }
            d.set_item("attention", array(py, &[layers, heads, n, n], flat)?)?;
            if out.mixing.is_some() {
                let mixing = PyList::empty(py);
                for l in 0..layers {
                    let vh = att.mixing_heads(l);
                    if vh == 0 {
                        mixing.append(py.None())?;
                        continue;
                    }
                    let flat: Vec<f32> = (0..vh)
                        .flat_map(|h| att.mixing(l, h).unwrap_or(&[]).to_vec())
                        .collect();
                    mixing.append(array(py, &[vh, n, n], flat)?)?;
                }
                d.set_item("mixing", mixing)?;
            }
        }
        if let (true, Some(r)) = (wants("residual"), &out.residual) {
            d.set_item("residual", stack(py, r, n)?)?;
        }
        if let Some(lens) = &out.logit_lens {
            let entries = lens.len();
            let mut ids = vec![-1i64; entries * n * 5];
            let mut ps = vec![f32::NAN; entries * n * 5];
            for (e, layer) in lens.iter().enumerate() {
                for (row, preds) in layer.iter().enumerate().take(n) {
                    for (j, p) in preds.iter().enumerate().take(5) {
                        ids[(e * n + row) * 5 + j] = p.id as i64;
                        ps[(e * n + row) * 5 + j] = p.p;
                    }
                }
            }
            d.set_item("lens_ids", array(py, &[entries, n, 5], ids)?)?;
            d.set_item("lens_p", array(py, &[entries, n, 5], ps)?)?;
        }
        if let (true, Some(routing)) = (wants("experts"), &out.routing) {
            let layers: Vec<(usize, &backend::Routing)> = routing
                .iter()
                .enumerate()
                .filter_map(|(l, r)| r.as_ref().map(|r| (l, r)))
                .collect();
            let e = layers.first().map_or(0, |(_, r)| r.experts);
            let k = m.spec.experts.as_ref().map_or(0, |x| x.top_k);
            let (mut probs, mut weights) = (Vec::new(), Vec::new());
            let mut chosen = vec![-1i64; layers.len() * n * k];
            for (i, (_, r)) in layers.iter().enumerate() {
                if r.experts != e {
                    return Err(err(
                        "the mixture-of-experts layers have different expert counts",
                    ));
                }
                let short = || err("the routing capture is shorter than the run");
                probs.extend_from_slice(r.probs.get(..n * e).ok_or_else(short)?);
                weights.extend_from_slice(r.weights.get(..n * e).ok_or_else(short)?);
                for p in 0..n {
                    for (j, (x, _)) in r.chosen(p).into_iter().take(k).enumerate() {
                        chosen[(i * n + p) * k + j] = x as i64;
                    }
                }
            }
            let nl = layers.len();
            d.set_item(
                "expert_layers",
                layers.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            )?;
            d.set_item("router_probs", array(py, &[nl, n, e], probs)?)?;
            d.set_item("expert_weights", array(py, &[nl, n, e], weights)?)?;
            d.set_item("expert_ids", array(py, &[nl, n, k], chosen)?)?;
        }
        if let (true, Some(s)) = (wants("sites"), &out.sites) {
            d.set_item("attn_out", stack(py, &s.attn_out, n)?)?;
            d.set_item("mlp_out", stack(py, &s.mlp_out, n)?)?;
            d.set_item("mlp_in", stack(py, &s.mlp_in, n)?)?;
            let head_z = PyList::empty(py);
            for z in &s.head_z {
                head_z.append(array(py, &[n, z.len() / n], z.clone())?)?;
            }
            d.set_item("head_z", head_z)?;
        }
        if let Some(full) = out.logits.as_ref().and_then(|l| l.full.clone()) {
            let vocab = full.len() / n;
            d.set_item("logits", array(py, &[n, vocab], full)?)?;
        }
        if let (Some(f), Some(s)) = (feats, sae_obj) {
            d.set_item("features", array(py, &[n, s.d_sae], f)?)?;
        }
        if !list.is_empty() {
            d.set_item(
                "interventions",
                list.iter().map(|iv| iv.describe()).collect::<Vec<_>>(),
            )?;
        }
        Ok(d)
    }

    /// Generates after `prompt` (a text or token ids): greedy at temperature 0, else sampled
    /// with `top_k`/`top_p` from `seed`, as `prism generate`. Returns `prompt_ids`, `ids`,
    /// `tokens`, `p` and `entropy_bits` per generated token, `text` and `stop_reason`.
    #[pyo3(signature = (prompt, max_tokens = 32, temperature = 0.0, top_k = 0, top_p = 1.0, seed = 0, interventions = None))]
    #[allow(clippy::too_many_arguments)]
    fn generate<'py>(
        &self,
        py: Python<'py>,
        prompt: &Bound<'py, PyAny>,
        max_tokens: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        seed: u64,
        interventions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let ids = match prompt.extract::<String>() {
            Ok(t) if t.is_empty() => return Err(err("the prompt is empty")),
            Ok(t) => self.tokenizer()?.encode(&t, false).map_err(err)?,
            Err(_) => prompt
                .extract::<Vec<u32>>()
                .map_err(|_| err("prompt: a text (str) or token ids (a list of ints)"))?,
        };
        let list = resolve_interventions(py, self, interventions)?;
        let sampling = Sampling {
            temperature,
            top_k,
            top_p,
            seed,
        };
        let settings = GenSettings::for_model(&self.model, max_tokens, sampling);
        let g = py.detach(|| {
            generate(
                &self.model,
                self.backend.as_ref(),
                &ids,
                &settings,
                &list,
                &AtomicBool::new(false),
                &mut |_| {},
            )
            .map_err(err)
        })?;
        let d = PyDict::new(py);
        d.set_item("prompt_ids", g.prompt_ids.clone())?;
        d.set_item("ids", g.tokens.iter().map(|t| t.id).collect::<Vec<_>>())?;
        d.set_item(
            "tokens",
            g.tokens.iter().map(|t| t.text.clone()).collect::<Vec<_>>(),
        )?;
        let n = g.tokens.len();
        d.set_item(
            "p",
            array(py, &[n], g.tokens.iter().map(|t| t.p).collect())?,
        )?;
        d.set_item(
            "entropy_bits",
            array(py, &[n], g.tokens.iter().map(|t| t.entropy_bits).collect())?,
        )?;
        d.set_item("text", g.text.clone())?;
        let reason = serde_json::to_value(g.stop_reason).map_err(err)?;
        d.set_item("stop_reason", reason.as_str().unwrap_or_default())?;
        Ok(d)
    }

    /// One shard of a corpus run: `texts` (documents `first_doc`.. of the corpus) through the
    /// model, as `prism batch` makes it, with the settings `prism batch` takes (`pack`, `sites`
    /// as "resid_post@1,mlp_out@2" or a list, `dtype` "f32" or "f16", `sae` a loaded SAE;
    /// `windows_per_pass` packed windows run together, 0 for the backend's choice).
    /// Returns the shard's files as bytes (`tokens_parquet`, `docs_parquet`, `activations` and
    /// `features_parquet` or None) and its counts; `Batch.commit` writes them.
    #[pyo3(signature = (texts, first_doc, context = 1024, top = 5, bos = false, pack = false, sites = None, dtype = "f32", sae = None, windows_per_pass = 0))]
    #[allow(clippy::too_many_arguments)]
    fn batch_shard<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        first_doc: usize,
        context: usize,
        top: usize,
        bos: bool,
        pack: bool,
        sites: Option<&Bound<'_, PyAny>>,
        dtype: &str,
        sae: Option<PyRef<'_, SparseAutoencoder>>,
        windows_per_pass: usize,
    ) -> PyResult<Bound<'py, PyDict>> {
        let settings = self.batch_settings(
            BatchSettings {
                context,
                top_k: top,
                shard_docs: 1,
                bos,
                pack,
                windows_per_pass,
                ..BatchSettings::default()
            },
            sites,
            dtype,
            sae.as_deref(),
        )?;
        let sae = sae.as_deref().map(|s| &s.sae);
        let files = py.detach(|| {
            batch::make_shard(
                &self.model,
                self.backend.as_ref(),
                &texts,
                first_doc,
                &settings,
                sae,
                &AtomicBool::new(false),
                &mut |_, _| {},
            )
            .map_err(err)
        })?;
        let d = PyDict::new(py);
        d.set_item("tokens_parquet", PyBytes::new(py, &files.tokens_parquet))?;
        d.set_item("docs_parquet", PyBytes::new(py, &files.docs_parquet))?;
        d.set_item("tokens", files.tokens)?;
        d.set_item("docs", files.docs)?;
        match &files.activations {
            Some((bytes, rows)) => {
                d.set_item("activations", PyBytes::new(py, bytes))?;
                d.set_item("activation_rows", rows)?;
            }
            None => {
                d.set_item("activations", py.None())?;
                d.set_item("activation_rows", 0)?;
            }
        }
        match &files.features_parquet {
            Some(bytes) => d.set_item("features_parquet", PyBytes::new(py, bytes))?,
            None => d.set_item("features_parquet", py.None())?,
        }
        Ok(d)
    }
}

impl Model {
    fn tokenizer(&self) -> PyResult<&prism_analysis::tokenizer::PrismTokenizer> {
        self.model.tokenizer.as_ref().ok_or_else(|| {
            err(format!(
                "{} has no tokenizer; give token ids",
                self.model.info.path.display()
            ))
        })
    }

    /// The settings `prism batch` records for this model and backend: `base` with the context
    /// capped as the CLI caps it, the sites parsed, the dtype and the SAE's sha256.
    fn batch_settings(
        &self,
        base: BatchSettings,
        sites: Option<&Bound<'_, PyAny>>,
        dtype: &str,
        sae: Option<&SparseAutoencoder>,
    ) -> PyResult<BatchSettings> {
        let sites = match sites {
            None => Vec::new(),
            Some(s) => {
                let list = match s.extract::<String>() {
                    Ok(text) => text,
                    Err(_) => s
                        .extract::<Vec<String>>()
                        .map_err(|_| err("sites: a string (\"resid_post@1,mlp_out@2\") or a list of site names"))?
                        .join(","),
                };
                actcache::parse_sites(&list, &self.model.spec)
                    .map_err(err)?
                    .iter()
                    .map(|s| s.name())
                    .collect()
            }
        };
        Ok(BatchSettings {
            context: base.context.min(self.model.spec.context_length),
            backend: if self.backend.describe().starts_with("gpu") {
                "gpu"
            } else {
                "cpu"
            }
            .into(),
            sites,
            dtype: ActDtype::parse(dtype).map_err(err)?,
            sae_sha256: sae.map(|s| s.sha256.clone()),
            ..base
        })
    }
}

/// A batch folder being filled, as `prism batch` fills it: opened (or resumed, after checking
/// every finished shard) for a model, a corpus and settings; shards are made anywhere
/// (`Model.batch_shard`) and committed here in order.
#[pyclass(module = "prism")]
struct Batch {
    out: PathBuf,
    corpus: Corpus,
    manifest: batch::Manifest,
}

#[pymethods]
impl Batch {
    #[new]
    #[pyo3(signature = (model, corpus, out, context = 1024, top = 5, shard_docs = 256, bos = false, pack = false, sites = None, dtype = "f32", sae = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: &Model,
        corpus: PathBuf,
        out: PathBuf,
        context: usize,
        top: usize,
        shard_docs: usize,
        bos: bool,
        pack: bool,
        sites: Option<&Bound<'_, PyAny>>,
        dtype: &str,
        sae: Option<PyRef<'_, SparseAutoencoder>>,
    ) -> PyResult<Batch> {
        let settings = model.batch_settings(
            BatchSettings {
                context,
                top_k: top,
                shard_docs,
                bos,
                pack,
                ..BatchSettings::default()
            },
            sites,
            dtype,
            sae.as_deref(),
        )?;
        py.detach(|| {
            let corpus = Corpus::read(&corpus).map_err(err)?;
            let manifest = batch::open(&model.model, &corpus, &out, &settings).map_err(err)?;
            Ok(Batch {
                out,
                corpus,
                manifest,
            })
        })
    }

    /// Shards in the whole run.
    #[getter]
    fn shards(&self) -> usize {
        self.corpus
            .documents
            .len()
            .div_ceil(self.manifest.settings.shard_docs)
    }

    /// Shards finished (in the folder and its manifest).
    #[getter]
    fn done(&self) -> usize {
        self.manifest.shards.len()
    }

    /// The settings recorded in the manifest: context, top_k, shard_docs, bos, backend, pack,
    /// sites, dtype, sae_sha256.
    #[getter]
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = &self.manifest.settings;
        let d = PyDict::new(py);
        d.set_item("context", s.context)?;
        d.set_item("top", s.top_k)?;
        d.set_item("shard_docs", s.shard_docs)?;
        d.set_item("bos", s.bos)?;
        d.set_item("backend", &s.backend)?;
        d.set_item("pack", s.pack)?;
        d.set_item("sites", s.sites.clone())?;
        d.set_item("dtype", s.dtype.name())?;
        d.set_item("sae_sha256", s.sae_sha256.clone())?;
        Ok(d)
    }

    /// The shards still to make, each `(index, first_doc, texts)`.
    fn pending(&self) -> Vec<(usize, usize, Vec<String>)> {
        let n = self.corpus.documents.len();
        (self.done()..self.shards())
            .map(|i| {
                let (first, last) = batch::shard_range(i, n, &self.manifest.settings);
                (i, first, self.corpus.documents[first..last].to_vec())
            })
            .collect()
    }

    /// Writes shard `index` (what `Model.batch_shard` returned) and records it in the manifest;
    /// `index` must be the next shard.
    fn commit(&mut self, py: Python<'_>, index: usize, shard: &Bound<'_, PyDict>) -> PyResult<()> {
        let get = |k: &str| -> PyResult<Bound<'_, PyAny>> {
            shard.get_item(k)?.ok_or_else(|| {
                err(format!(
                    "the shard has no {k:?}: pass what Model.batch_shard returned"
                ))
            })
        };
        let files = ShardFiles {
            tokens_parquet: get("tokens_parquet")?
                .cast::<PyBytes>()?
                .as_bytes()
                .to_vec(),
            docs_parquet: get("docs_parquet")?.cast::<PyBytes>()?.as_bytes().to_vec(),
            tokens: get("tokens")?.extract()?,
            docs: get("docs")?.extract()?,
            activations: match shard.get_item("activations")? {
                Some(b) if !b.is_none() => Some((
                    b.cast::<PyBytes>()?.as_bytes().to_vec(),
                    get("activation_rows")?.extract()?,
                )),
                _ => None,
            },
            features_parquet: match shard.get_item("features_parquet")? {
                Some(b) if !b.is_none() => Some(b.cast::<PyBytes>()?.as_bytes().to_vec()),
                _ => None,
            },
        };
        let (out, manifest) = (&self.out, &mut self.manifest);
        py.detach(|| batch::commit_shard(out, manifest, index, &files).map_err(err))
    }
}

#[pymodule]
fn prism(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(load_sae, m)?)?;
    m.add_function(wrap_pyfunction!(read_corpus, m)?)?;
    m.add_class::<Model>()?;
    m.add_class::<SparseAutoencoder>()?;
    m.add_class::<Batch>()?;
    m.add("PrismError", m.py().get_type::<PrismError>())?;
    Ok(())
}
