//! Finding and opening checkpoints: a GGUF file, a `.safetensors` file with its sibling config and
//! tokenizer, an HF folder (single or sharded safetensors), or a sample model's name.

pub mod gguf;
pub mod safetensors;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use crate::arch::Format;
use crate::arch::{self, ArchSpec, Architecture};
use crate::error::{PrismError, Result};
pub use crate::model::{ChatTemplate, Model, ModelInfo};
use crate::samples;
use crate::tokenizer::PrismTokenizer;
use crate::weights::{ModelWeights, TensorInfo, TensorSource, Weight};

const PICKLE_HINT: &str = "PyTorch pickles can run arbitrary code, so Prism never opens them. Convert the checkpoint to safetensors first, e.g. in Python: `from transformers import AutoModel; AutoModel.from_pretrained(dir).save_pretrained(out_dir, safe_serialization=True)`";

/// Turns a command-line model argument into a path: a sample name (`smollm2`, `minilm`) or a path.
pub fn resolve(arg: &str) -> Result<PathBuf> {
    if let Some(sample) = samples::find(arg) {
        let path = samples::model_path(sample)?;
        if !path.exists() {
            return Err(PrismError::Input(format!(
                "sample model {arg:?} is not downloaded yet (expected at {}); run `prism fetch-samples {arg}`",
                path.display()
            )));
        }
        return Ok(path);
    }
    let path = PathBuf::from(arg);
    if !path.exists() {
        return Err(PrismError::Input(format!(
            "{arg}: no such file or folder, and not a sample model name ({})",
            samples::names().join(", ")
        )));
    }
    Ok(path)
}

/// A file name that says PyTorch pickle (`.bin`, `.pt`, `.pth`, `.pkl`, `.ckpt`).
pub(crate) fn is_pickle_name(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("bin" | "pt" | "pth" | "pkl" | "ckpt")
    )
}

fn refuse_pickle(p: &Path) -> PrismError {
    PrismError::format(
        p,
        format!("this is a PyTorch pickle checkpoint. {PICKLE_HINT}"),
    )
}

/// Opens a checkpoint (see [`resolve`] for names) and loads its spec, weights and tokenizer.
pub fn load(path: &Path) -> Result<Model> {
    check_fits(path)?;
    if path.is_dir() {
        return load_folder(path);
    }
    if is_pickle_name(path) {
        return Err(refuse_pickle(path));
    }
    let mut magic = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| PrismError::io(path, e))?;
        let n = f.read(&mut magic).map_err(|e| PrismError::io(path, e))?;
        if n < 4 {
            return Err(PrismError::format(
                path,
                format!("file is {n} bytes long; not a checkpoint"),
            ));
        }
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if &magic == b"GGUF" || ext == "gguf" {
        return load_gguf(path);
    }
    if ext == "safetensors" {
        let dir = path.parent().unwrap_or(Path::new("."));
        return load_hf(dir, vec![path.to_path_buf()]);
    }
    if magic[0] == 0x80 || &magic[..2] == b"PK" {
        return Err(refuse_pickle(path));
    }
    Err(PrismError::format(
        path,
        "not a recognised checkpoint: Prism opens .gguf files, .safetensors files and Hugging Face folders",
    ))
}

/// Refuses a checkpoint whose weight files (mapped, and read in full by every pass) plus
/// [`crate::memory::OVERHEAD`] exceed the available memory, before anything is mapped.
/// The tokenizer of a checkpoint alone, without its weights: a GGUF's metadata (vocab-only files
/// included), a folder's `tokenizer.json`, or the one next to a `.safetensors` file.
pub fn load_tokenizer(path: &Path) -> Result<PrismTokenizer> {
    if is_pickle_name(path) {
        return Err(refuse_pickle(path));
    }
    let dir = if path.is_dir() {
        Some(path)
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
    {
        path.parent()
    } else {
        None
    };
    if let Some(dir) = dir {
        let tok = dir.join("tokenizer.json");
        if !tok.exists() {
            return Err(PrismError::format(
                dir,
                "no tokenizer.json here: the checkpoint has no tokenizer to run",
            ));
        }
        return PrismTokenizer::from_file(&tok);
    }
    let file = crate::gguf::open(path)?;
    let meta = file.meta();
    if meta.get("tokenizer.ggml.model").is_none() {
        return Err(PrismError::format(
            path,
            "the GGUF has no tokenizer (no tokenizer.ggml.model)",
        ));
    }
    PrismTokenizer::from_gguf(meta)
}

fn check_fits(path: &Path) -> Result<()> {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let weights = if path.is_dir() {
        std::fs::read_dir(path)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                    .map(|p| size(&p))
                    .sum()
            })
            .unwrap_or(0)
    } else {
        size(path)
    };
    crate::memory::check(
        weights + crate::memory::OVERHEAD,
        &format!(
            "{} ({} of weights, kept in their stored format)",
            path.display(),
            crate::memory::human(weights)
        ),
        "close other programs, or pick a smaller or more strongly quantized file",
    )
}

fn load_folder(dir: &Path) -> Result<Model> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        return load_hf(dir, shard_files(&index)?);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return load_hf(dir, vec![single]);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| PrismError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let with_ext = |ext: &str| -> Vec<PathBuf> {
        entries
            .iter()
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(ext))
            .cloned()
            .collect()
    };
    let st = with_ext("safetensors");
    if st.len() == 1 {
        return load_hf(dir, st);
    }
    let gg = with_ext("gguf");
    if gg.len() == 1 && st.is_empty() {
        return load_gguf(&gg[0]);
    }
    if entries.iter().any(|p| is_pickle_name(p)) && st.is_empty() && gg.is_empty() {
        return Err(PrismError::format(
            dir,
            format!("the folder holds only PyTorch pickle weights. {PICKLE_HINT}"),
        ));
    }
    Err(PrismError::format(
        dir,
        format!(
            "cannot tell which checkpoint to open: found {} .safetensors and {} .gguf files (expected model.safetensors, model.safetensors.index.json or one .gguf)",
            st.len(),
            gg.len()
        ),
    ))
}

/// The shard files named by a `model.safetensors.index.json`, all inside its folder.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let json = read_json(index, 64 << 20)?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| PrismError::format(index, "no \"weight_map\" object"))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(PrismError::format(index, "\"weight_map\" names no files"));
    }
    files
        .into_iter()
        .map(|f| {
            let p = Path::new(&f);
            if p.components().count() != 1 || f.contains("..") {
                return Err(PrismError::format(
                    index,
                    format!("shard {f:?} is not a plain file name in the same folder"),
                ));
            }
            let full = dir.join(p);
            if !full.exists() {
                return Err(PrismError::format(index, format!("shard {f:?} is missing")));
            }
            Ok(full)
        })
        .collect()
}

pub(crate) fn read_json(path: &Path, max_bytes: u64) -> Result<serde_json::Value> {
    let len = std::fs::metadata(path)
        .map_err(|e| PrismError::io(path, e))?
        .len();
    if len > max_bytes {
        return Err(PrismError::format(
            path,
            format!("{len} bytes is too large for this JSON file"),
        ));
    }
    let text = std::fs::read(path).map_err(|e| PrismError::io(path, e))?;
    serde_json::from_slice(&text)
        .map_err(|e| PrismError::format(path, format!("invalid JSON: {e}")))
}

fn dtype_counts(src: &dyn TensorSource) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in src.names() {
        if let Some(i) = src.info(&n) {
            *m.entry(i.dtype.to_uppercase()).or_insert(0) += 1;
        }
    }
    m
}

/// Parameters as the checkpoint stores them (every float tensor, including ones Prism does not
/// run, such as BERT's pooler), with a tied output matrix counted once.
fn param_count(src: &dyn TensorSource, w: &ModelWeights) -> usize {
    let stored: usize = src
        .names()
        .iter()
        .filter_map(|n| src.info(n))
        .filter(|i| {
            !matches!(
                i.dtype.to_uppercase().as_str(),
                "I64" | "I32" | "U8" | "I8" | "U32" | "BOOL"
            )
        })
        .map(|i| i.shape.iter().product::<usize>())
        .sum();
    stored.max(w.all().iter().map(|t| t.element_count()).sum())
}

fn load_hf(dir: &Path, files: Vec<PathBuf>) -> Result<Model> {
    let config_path = dir.join("config.json");
    if !config_path.exists() {
        return Err(PrismError::format(
            files.first().map(PathBuf::as_path).unwrap_or(dir),
            format!(
                "no config.json next to the weights (looked in {})",
                dir.display()
            ),
        ));
    }
    let config = read_json(&config_path, 4 << 20)?;
    let (family, mut spec) = arch::spec_from_hf(&config, &config_path)?;
    let file_size = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let src = safetensors::SafetensorsCheckpoint::open(files)?;
    let weights = load_weights(family, &src, &spec, Format::Safetensors, BTreeSet::new())?;
    spec.layer_scale = layer_scale(&weights);
    let tok_path = dir.join("tokenizer.json");
    let (tokenizer, mut warnings) = if tok_path.exists() {
        (Some(PrismTokenizer::from_file(&tok_path)?), Vec::new())
    } else {
        (
            None,
            vec![format!(
                "no tokenizer.json in {}: only token ids can be run",
                dir.display()
            )],
        )
    };
    if let Some(t) = &tokenizer {
        warnings.extend(t.warnings.iter().cloned());
    }
    let chat_template = hf_chat_template(dir)?;
    let mut end_ids = tokenizer.as_ref().map(|t| t.end_ids()).unwrap_or_default();
    let config_eos = match config.get("eos_token_id") {
        Some(serde_json::Value::Number(n)) => n.as_u64().into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_u64()).collect(),
        _ => Vec::new(),
    };
    for id in config_eos {
        if (id as usize) < spec.vocab && !end_ids.contains(&(id as u32)) {
            end_ids.push(id as u32);
        }
    }
    Ok(Model {
        info: ModelInfo {
            path: dir.to_path_buf(),
            format: Format::Safetensors,
            file_size,
            n_params: param_count(&src, &weights),
            dtypes: dtype_counts(&src),
            tokenizer: tokenizer.as_ref().map(|t| t.kind.clone()),
            chat_template,
            end_ids,
        },
        spec,
        weights,
        tokenizer,
        warnings,
    })
}

/// `chat_template` from `tokenizer_config.json` (a string, or a list of named templates of which
/// "default" is used), or `chat_template.jinja`.
fn hf_chat_template(dir: &Path) -> Result<Option<ChatTemplate>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.exists() {
        let len = std::fs::metadata(&jinja)
            .map_err(|e| PrismError::io(&jinja, e))?
            .len();
        if len > 1 << 20 {
            return Err(PrismError::format(&jinja, "chat template over 1 MB"));
        }
        return std::fs::read_to_string(&jinja)
            .map(|text| Some(ChatTemplate::new(&text, jinja.display().to_string())))
            .map_err(|e| PrismError::io(&jinja, e));
    }
    let path = dir.join("tokenizer_config.json");
    if !path.exists() {
        return Ok(None);
    }
    let cfg = read_json(&path, 16 << 20)?;
    let text = match cfg.get("chat_template") {
        Some(serde_json::Value::String(t)) => Some(t.clone()),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_string),
        _ => None,
    };
    Ok(text.map(|text| ChatTemplate::new(&text, format!("{}: chat_template", path.display()))))
}

/// Loads the weights through a source that records what was read, then refuses the checkpoint
/// if it holds tensors the architecture would silently ignore.
/// Each layer's output scale, from the weights (Gemma 4's `layer_scalar`); empty when no layer
/// has one.
fn layer_scale(w: &ModelWeights) -> Vec<f32> {
    if w.layers.iter().all(|l| l.extras.out_scale.is_none()) {
        return Vec::new();
    }
    w.layers
        .iter()
        .map(|l| l.extras.out_scale.unwrap_or(1.0))
        .collect()
}

fn load_weights(
    family: &Architecture,
    src: &dyn TensorSource,
    spec: &ArchSpec,
    format: Format,
    already_read: BTreeSet<String>,
) -> Result<ModelWeights> {
    let tracked = Tracked {
        inner: src,
        read: RefCell::new(already_read),
    };
    let weights = (family.load_weights)(&tracked, spec, format)?;
    crate::arch::check_norms(spec, &weights, src.path())?;
    let read = tracked.read.borrow();
    let ignored: Vec<String> = src
        .names()
        .into_iter()
        .filter(|n| !read.contains(n) && !(family.unused_tensor)(n))
        .collect();
    if !ignored.is_empty() {
        let shown: Vec<&str> = ignored.iter().take(5).map(String::as_str).collect();
        return Err(PrismError::format(
            src.path(),
            format!(
                "{} tensor{} that Prism's {} loader does not use ({}{}); they may change what the model computes, so Prism refuses the file rather than ignore them",
                ignored.len(),
                if ignored.len() == 1 { "" } else { "s" },
                family.name,
                shown.join(", "),
                if ignored.len() > shown.len() { ", ..." } else { "" }
            ),
        ));
    }
    Ok(weights)
}

/// A [`TensorSource`] that remembers which tensors were looked at.
struct Tracked<'a> {
    inner: &'a dyn TensorSource,
    read: RefCell<BTreeSet<String>>,
}

impl TensorSource for Tracked<'_> {
    fn path(&self) -> &Path {
        self.inner.path()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        let info = self.inner.info(name);
        if info.is_some() {
            self.read.borrow_mut().insert(name.to_string());
        }
        info
    }

    fn names(&self) -> Vec<String> {
        self.inner.names()
    }

    fn load(&self, name: &str) -> Result<Weight> {
        self.read.borrow_mut().insert(name.to_string());
        self.inner.load(name)
    }

    fn load_rows(&self, name: &str) -> Result<Weight> {
        self.read.borrow_mut().insert(name.to_string());
        self.inner.load_rows(name)
    }

    fn load_u8(&self, name: &str) -> Result<&[u8]> {
        self.read.borrow_mut().insert(name.to_string());
        self.inner.load_u8(name)
    }
}

fn load_gguf(path: &Path) -> Result<Model> {
    let src = gguf::GgufCheckpoint::open(path)?;
    let meta = src.file.meta();
    let tracked = Tracked {
        inner: &src,
        read: RefCell::new(BTreeSet::new()),
    };
    // Some hyperparameters are tensors (RoPE factors): the spec reads through the tracker too.
    let (family, mut spec) = arch::spec_from_gguf(meta, &tracked)?;
    let weights = load_weights(family, &src, &spec, Format::Gguf, tracked.read.into_inner())?;
    spec.layer_scale = layer_scale(&weights);
    let tokenizer = if meta.get("tokenizer.ggml.model").is_some() {
        Some(PrismTokenizer::from_gguf(meta)?)
    } else {
        None
    };
    let mut warnings = Vec::new();
    match &tokenizer {
        Some(t) => warnings.extend(t.warnings.iter().cloned()),
        None => warnings.push("the GGUF has no tokenizer: only token ids can be run".to_string()),
    }
    let chat_template = meta.str("tokenizer.chat_template").map(|text| {
        ChatTemplate::new(text, format!("{}: tokenizer.chat_template", path.display()))
    });
    let end_ids = tokenizer.as_ref().map(|t| t.end_ids()).unwrap_or_default();
    Ok(Model {
        info: ModelInfo {
            path: path.to_path_buf(),
            format: Format::Gguf,
            file_size: src.file.file_len,
            n_params: param_count(&src, &weights),
            dtypes: dtype_counts(&src),
            tokenizer: tokenizer.as_ref().map(|t| t.kind.clone()),
            chat_template,
            end_ids,
        },
        spec,
        weights,
        tokenizer,
        warnings,
    })
}
