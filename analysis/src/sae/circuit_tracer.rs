//! circuit-tracer's transcoder sets, read as its own loaders read them: a folder with
//! `config.yaml` (`model_kind: transcoder_set`, `feature_input_hook`, `feature_output_hook`, and
//! an optional `transcoders` list of per-layer files; without it `layer_L.safetensors` for
//! every layer) whose files are circuit-tracer's own layout (`W_enc` `[d_sae, d_model]`, `W_dec`
//! `[d_sae, d_model]`, `b_enc`, `b_dec`, optional `activation_function.threshold` for JumpReLU
//! and `W_skip` `[d_model, d_model]`), Gemma Scope's transcoder `params.npz` (`W_enc`
//! `[d_model, d_sae]`, JumpReLU) or Gemma Scope 2's `params.safetensors` (lowercase `w_enc`
//! `[d_model, d_sae]`, optional `affine_skip_connection`). Every layer's transcoder reads the
//! MLP's input in the form `feature_input_hook` names and writes the MLP's output
//! (`mlp.hook_out` before a post-MLP norm, `hook_mlp_out` after it), as circuit-tracer's
//! TransformerLens and nnsight hook maps place them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{bad, finite_tensor, npz, Activation, Sae, SaeInput};
use crate::checkpoint::safetensors::SafetensorsCheckpoint;
use crate::error::{PrismError, Result};
use crate::intervene::Site;
use crate::weights::TensorSource;

/// The config of a transcoder set: its hooks and each layer's file.
struct SetConfig {
    input: SaeInput,
    input_hook: String,
    output: Site,
    output_hook: String,
    files: Vec<PathBuf>,
}

/// Whether `dir` holds a circuit-tracer transcoder set.
pub(super) fn is_set(dir: &Path) -> bool {
    dir.join("config.yaml").is_file()
}

/// Counts the aliases of a YAML stream.
struct AliasCount(usize);

impl yaml_rust2::parser::EventReceiver for AliasCount {
    fn on_event(&mut self, ev: yaml_rust2::Event) {
        if matches!(ev, yaml_rust2::Event::Alias(_)) {
            self.0 += 1;
        }
    }
}

fn read_config(dir: &Path) -> Result<SetConfig> {
    let path = dir.join("config.yaml");
    let bytes = std::fs::read(&path).map_err(|e| PrismError::io(&path, e))?;
    if bytes.len() > 1 << 20 {
        return Err(bad(
            &path,
            "config.yaml: over 1 MiB, not a transcoder config",
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| bad(&path, "config.yaml: not UTF-8"))?;
    // Aliases are refused before anything is built from them: a few lines of nested aliases
    // expand to more nodes than memory holds, and no transcoder config uses them.
    let mut aliases = AliasCount(0);
    yaml_rust2::parser::Parser::new_from_str(&text)
        .load(&mut aliases, true)
        .map_err(|e| bad(&path, format!("config.yaml: {e}")))?;
    if aliases.0 > 0 {
        return Err(bad(
            &path,
            format!("config.yaml: {} YAML aliases (*name); a transcoder config is plain keys and values", aliases.0),
        ));
    }
    let docs = yaml_rust2::YamlLoader::load_from_str(&text)
        .map_err(|e| bad(&path, format!("config.yaml: {e}")))?;
    let doc = docs
        .first()
        .filter(|d| d.as_hash().is_some())
        .ok_or_else(|| bad(&path, "config.yaml: not a mapping of keys to values"))?;
    let text_of = |k: &str| -> Result<String> {
        doc[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| bad(&path, format!("config.yaml: no {k:?} (a string)")))
    };
    let kind = text_of("model_kind")?;
    if kind != "transcoder_set" {
        return Err(bad(
            &path,
            format!("config.yaml: model_kind {kind:?}; Prism reads per-layer transcoder sets (\"transcoder_set\"), not cross-layer transcoders yet"),
        ));
    }
    let input_hook = text_of("feature_input_hook")?;
    let input = SaeInput::from_hook(&input_hook).ok_or_else(|| {
        bad(
            &path,
            format!("config.yaml: feature_input_hook {input_hook:?} is not one Prism reads (mlp.hook_in, ln2.hook_normalized, hook_resid_mid)"),
        )
    })?;
    let output_hook = text_of("feature_output_hook")?;
    let output = match output_hook.as_str() {
        "mlp.hook_out" => Site::MlpOut,
        "hook_mlp_out" => Site::MlpAdded,
        other => {
            return Err(bad(
                &path,
                format!("config.yaml: feature_output_hook {other:?} is not one Prism reads (mlp.hook_out, hook_mlp_out)"),
            ))
        }
    };
    let files = match &doc["transcoders"] {
        yaml_rust2::Yaml::BadValue | yaml_rust2::Yaml::Null => layer_files(dir)?,
        list => {
            let items = list
                .as_vec()
                .ok_or_else(|| bad(&path, "config.yaml: \"transcoders\" is not a list of files"))?;
            if items.is_empty() || items.len() > 4096 {
                return Err(bad(
                    &path,
                    format!("config.yaml: \"transcoders\" lists {} files", items.len()),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let f = v.as_str().ok_or_else(|| {
                        bad(
                            &path,
                            format!("config.yaml: transcoders[{i}] is not a path"),
                        )
                    })?;
                    local_file(dir, &path, i, f)
                })
                .collect::<Result<Vec<_>>>()?
        }
    };
    Ok(SetConfig {
        input,
        input_hook,
        output,
        output_hook,
        files,
    })
}

/// `layer_0.safetensors`, `layer_1.safetensors`, ... in `dir`, every layer from 0 on.
fn layer_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut layers = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| PrismError::io(dir, e))?;
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(l) = name
            .strip_prefix("layer_")
            .and_then(|r| r.strip_suffix(".safetensors"))
            .and_then(|d| d.parse::<usize>().ok())
        {
            layers.push(l);
        }
    }
    layers.sort_unstable();
    if layers.is_empty() {
        return Err(bad(
            dir,
            "config.yaml lists no transcoders and there is no layer_0.safetensors here",
        ));
    }
    if let Some(missing) = (0..layers.len()).find(|&i| layers[i] != i) {
        return Err(bad(
            dir,
            format!("layer_{missing}.safetensors is missing: a transcoder set covers every layer from 0 on"),
        ));
    }
    Ok(layers
        .iter()
        .map(|l| dir.join(format!("layer_{l}.safetensors")))
        .collect())
}

/// A listed file on this disk: a path relative to the config, or an `hf://owner/repo/path` URI
/// looked up as `path` under the config's folder (Prism downloads nothing).
fn local_file(dir: &Path, config: &Path, i: usize, f: &str) -> Result<PathBuf> {
    let local = match f.strip_prefix("hf://") {
        Some(uri) => {
            let rel = uri.splitn(3, '/').nth(2).unwrap_or("");
            let rel = rel.split_once('@').map_or(rel, |(p, _)| p);
            dir.join(rel)
        }
        None => dir.join(f),
    };
    let escapes = local
        .strip_prefix(dir)
        .map(|r| {
            r.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        })
        .unwrap_or(true);
    if escapes && f.starts_with("hf://") {
        return Err(bad(
            config,
            format!("config.yaml: transcoders[{i}] {f:?} is not a file path"),
        ));
    }
    if !local.is_file() {
        return Err(bad(
            config,
            format!(
                "config.yaml: transcoders[{i}] {f:?}: no file {} (Prism downloads nothing; put the Hub's files under this folder with their paths)",
                local.display()
            ),
        ));
    }
    Ok(local)
}

/// Every layer's transcoder of the set in `dir`.
pub(super) fn load_set(dir: &Path) -> Result<Vec<Sae>> {
    let cfg = read_config(dir)?;
    cfg.files
        .iter()
        .enumerate()
        .map(|(layer, f)| load_layer(&cfg, f, layer))
        .collect()
}

/// The nearest folder above `file` that holds a transcoder set.
pub(super) fn set_of(file: &Path) -> Option<&Path> {
    file.ancestors().skip(1).find(|d| is_set(d))
}

/// The transcoder of the set in `dir` that `file` (somewhere under it) holds.
pub(super) fn load_member(dir: &Path, file: &Path) -> Result<Sae> {
    let cfg = read_config(dir)?;
    let want = file.canonicalize().map_err(|e| PrismError::io(file, e))?;
    let layer = cfg
        .files
        .iter()
        .position(|f| f.canonicalize().ok().as_ref() == Some(&want))
        .ok_or_else(|| {
            bad(
                file,
                format!(
                    "not one of the transcoders {} lists",
                    dir.join("config.yaml").display()
                ),
            )
        })?;
    load_layer(&cfg, &cfg.files[layer], layer)
}

fn load_layer(cfg: &SetConfig, file: &Path, layer: usize) -> Result<Sae> {
    let hook = format!(
        "blocks.{layer}.{} -> blocks.{layer}.{}",
        cfg.input_hook, cfg.output_hook
    );
    let npz_file = file.extension().is_some_and(|e| e == "npz");
    let mut sae = if npz_file {
        gemma_scope_npz(file, layer)?
    } else {
        from_safetensors(file, layer)?
    };
    sae.hook = hook;
    sae.site = cfg.output;
    sae.input = cfg.input;
    sae.transcoder = true;
    Ok(sae)
}

/// Gemma Scope's transcoder npz, as circuit-tracer's `load_gemma_scope_transcoder` reads it.
pub(super) fn gemma_scope_npz(file: &Path, layer: usize) -> Result<Sae> {
    let arrays = npz::read(file)?;
    let shape = npz::shape_of(&arrays, "W_enc").ok_or_else(|| bad(file, "no W_enc array"))?;
    let [d_in, d_sae] = shape[..] else {
        return Err(bad(
            file,
            format!("W_enc has shape {shape:?}, expected [d_model, d_sae]"),
        ));
    };
    let take = |name: &str, shape: &[usize]| npz::take(&arrays, file, name, Some(shape));
    Ok(transcoder(
        file,
        layer,
        [d_in, d_sae],
        take("W_enc", &[d_in, d_sae])?,
        take("b_enc", &[d_sae])?,
        take("W_dec", &[d_sae, d_in])?,
        take("b_dec", &[d_in])?,
        Some(take("threshold", &[d_sae])?),
        None,
    ))
}

/// circuit-tracer's own layout, or Gemma Scope 2's (lowercase names), by the tensors it holds.
pub(super) fn from_safetensors(file: &Path, layer: usize) -> Result<Sae> {
    let src = SafetensorsCheckpoint::open(vec![file.to_path_buf()])?;
    let tensor = |name: &str, shape: &[usize]| finite_tensor(&src, file, name, shape);
    let gemma2 = src.info("w_enc").is_some();
    let (enc_name, dec_name) = if gemma2 {
        ("w_enc", "w_dec")
    } else {
        ("W_enc", "W_dec")
    };
    let shape = src.info(enc_name).map(|i| i.shape).ok_or_else(|| {
        bad(
            file,
            "no W_enc tensor (circuit-tracer layer_L.safetensors) nor w_enc (Gemma Scope 2)",
        )
    })?;
    let [a, b] = shape[..] else {
        return Err(bad(
            file,
            format!("{enc_name} has shape {shape:?}, expected two dimensions"),
        ));
    };
    // circuit-tracer stores W_enc as [d_sae, d_model]; Gemma Scope 2 as [d_model, d_sae].
    let (d_in, d_sae) = if gemma2 { (a, b) } else { (b, a) };
    let enc = tensor(enc_name, &shape)?;
    let w_enc = if gemma2 {
        enc
    } else {
        transpose(&enc, d_sae, d_in)
    };
    let (thr_name, skip_name) = if gemma2 {
        ("threshold", "affine_skip_connection")
    } else {
        ("activation_function.threshold", "W_skip")
    };
    let threshold = match src.info(thr_name) {
        Some(_) => Some(tensor(thr_name, &[d_sae])?),
        None if gemma2 => {
            return Err(bad(file, "no threshold tensor (Gemma Scope 2 is JumpReLU)"));
        }
        None => None,
    };
    if src.info("log_thresholds").is_some() {
        return Err(bad(
            file,
            "log_thresholds: circuit-tracer refuses these transcoders too (it expects activation_function.threshold)",
        ));
    }
    // Gemma Scope 2 adds x · A; Prism's skip adds x · W^T, so W = A^T.
    let w_skip = match src.info(skip_name) {
        Some(_) => {
            let w = tensor(skip_name, &[d_in, d_in])?;
            Some(if gemma2 { transpose(&w, d_in, d_in) } else { w })
        }
        None => None,
    };
    Ok(transcoder(
        file,
        layer,
        [d_in, d_sae],
        w_enc,
        tensor("b_enc", &[d_sae])?,
        tensor(dec_name, &[d_sae, d_in])?,
        tensor("b_dec", &[d_in])?,
        threshold,
        w_skip,
    ))
}

/// `m` `[rows, cols]` transposed.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

#[allow(clippy::too_many_arguments)]
fn transcoder(
    file: &Path,
    layer: usize,
    [d_in, d_sae]: [usize; 2],
    w_enc: Vec<f32>,
    b_enc: Vec<f32>,
    w_dec: Vec<f32>,
    b_dec: Vec<f32>,
    threshold: Option<Vec<f32>>,
    w_skip: Option<Vec<f32>>,
) -> Sae {
    let (architecture, activation) = match threshold {
        Some(t) => ("jumprelu", Activation::JumpRelu(t)),
        None => ("relu", Activation::Relu),
    };
    Sae {
        path: file.to_path_buf(),
        hook: String::new(),
        site: Site::MlpAdded,
        layer,
        d_in,
        d_sae,
        architecture: architecture.into(),
        activation,
        // circuit-tracer's encoder is x W_enc^T + b_enc, with nothing subtracted first.
        apply_b_dec_to_input: false,
        w_enc: Arc::new(w_enc),
        b_enc: Arc::new(b_enc),
        w_dec,
        b_dec,
        w_skip,
        transcoder: true,
        input: SaeInput::MlpNormalized,
        input_norm: Default::default(),
        encoder_t: Default::default(),
    }
}
