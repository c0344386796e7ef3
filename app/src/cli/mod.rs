//! Subcommands of the `prism` command line. Each prints a readable report, or JSON with `--json`.

mod batch;
mod bench;
mod experiments;
mod features;
mod fetch;
mod geometry;
mod info;
mod run;
mod tokenize;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use prism_analysis::backend::BackendChoice;
use prism_analysis::checkpoint::{self, Model};
use prism_analysis::samples;

#[derive(Parser, Debug)]
#[command(
    name = "prism",
    version,
    about = "Prism: look inside language models. Without a subcommand, opens the desktop app (on MODEL, or the SmolLM2 sample).",
    propagate_version = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// A model to open in the app (a .gguf, .safetensors, HF folder, or sample name).
    pub model: Option<String>,
}

#[derive(Args, Debug)]
pub struct GuiArgs {
    /// A .gguf file, a .safetensors file, a Hugging Face folder, or a sample name (default: smollm2).
    pub model: Option<String>,
    /// The prompt to start with.
    #[arg(long)]
    pub text: Option<String>,
    /// The view to show: text, attention, lens, embeddings, colors, generate, patch, ablate, steer.
    #[arg(long)]
    pub view: Option<String>,
    /// Render the view once its work is done, save a PNG here, and exit.
    #[arg(long)]
    pub screenshot: Option<PathBuf>,
    /// cpu, gpu or auto.
    #[arg(long, value_parser = parse_backend)]
    pub backend: Option<BackendChoice>,
    /// A view's setting, as VIEW.FIELD=VALUE (VALUE as JSON, or else a string), e.g.
    /// `--set features.sae=path/to/sae`; repeatable.
    #[arg(long = "set", value_name = "VIEW.FIELD=VALUE")]
    pub set: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open the desktop app.
    Gui(GuiArgs),
    /// Show a checkpoint's architecture, size, dtypes and tokenizer.
    Info(info::InfoArgs),
    /// Run a causal LM on a text: per-token surprisal, rank, top-k, and the zstd size of the same text.
    Run(run::RunArgs),
    /// Sentence embedding of a text (mean-pooled, L2-normalized).
    Embed(run::EmbedArgs),
    /// Generate text, greedy or sampled, with each token's probability and entropy; steer it with
    /// a control vector or any interventions.
    Generate(experiments::GenerateArgs),
    /// Activation patching: how much of the clean answer comes back when one site of the corrupt
    /// run takes its clean value, per layer and position (or head).
    Patch(experiments::PatchArgs),
    /// Head ablation: the change in a text's total surprisal when each head is zeroed or averaged.
    Ablate(experiments::AblateArgs),
    /// A sparse autoencoder's features of every token (SAELens format), with the reconstruction's
    /// MSE, explained variance and spliced-in surprisal.
    Features(features::FeaturesArgs),
    /// Make a steering vector (llama.cpp control-vector GGUF) from prompt pairs or a concept axis.
    Steer(experiments::SteerArgs),
    /// Download, verify and unpack the sample models (all, or the ones named).
    FetchSamples(fetch::FetchArgs),
    /// Time full forward passes on the CPU and the GPU: ms per pass, tokens/s, GFLOP/s.
    Bench(bench::BenchArgs),
    /// Time the geometry: exact neighbours over the vocabulary, PCA and t-SNE of embedding rows.
    BenchGeometry(bench::BenchGeometryArgs),
    /// Cosine similarity matrix of words or phrases.
    Similar(geometry::SimilarArgs),
    /// Nearest tokens to a word in the whole vocabulary (exact cosine).
    Neighbors(geometry::NeighborsArgs),
    /// Analogy A - B + C (king - man + woman), nearest tokens excluding the inputs.
    Analogy(geometry::AnalogyArgs),
    /// Place words on the axis between two poles (cold -> hot).
    Axis(geometry::AxisArgs),
    /// Project words to 2-D or 3-D with PCA or t-SNE.
    Project(geometry::ProjectArgs),
    /// Token ids and pieces of a text, from the model's tokenizer alone (vocab-only GGUF files too):
    /// no BOS/EOS and special tokens read as text, unless --special.
    Tokenize(tokenize::TokenizeArgs),
    /// The color study: model geometry of color words against CIELAB, per layer, with RSA and the two claims.
    Colors(geometry::ColorsArgs),
    /// A whole corpus through the model to Parquet shards (per-token statistics, per-document
    /// bits per byte against zstd), resumable after a kill; `--summary DIR` prints a batch folder.
    Batch(batch::BatchArgs),
}

/// A mistake in how prism was called (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The model argument shared by every subcommand.
#[derive(Args, Debug, Clone)]
pub struct ModelArg {
    /// A .gguf file, a .safetensors file, a Hugging Face folder, or a sample name (smollm2, minilm).
    pub model: String,
}

/// Where the input text comes from.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct TextInput {
    /// The text to run.
    #[arg(long)]
    pub text: Option<String>,
    /// Read the text from a file (UTF-8).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Token ids, comma-separated, instead of a text (for models without a tokenizer).
    #[arg(long, value_delimiter = ',')]
    pub ids: Option<Vec<u32>>,
}

#[derive(Args, Debug, Clone)]
pub struct BackendArg {
    /// Where the forward pass runs: cpu, gpu, or auto (a hardware GPU when there is one, else the CPU).
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    pub backend: BackendChoice,
}

fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    s.parse()
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let Some(command) = cli.command else {
        return gui(GuiArgs {
            model: cli.model,
            text: None,
            view: None,
            screenshot: None,
            backend: None,
            set: Vec::new(),
        });
    };
    match command {
        Command::Gui(a) => gui(a),
        Command::Info(a) => info::info(a),
        Command::Run(a) => run::run(a),
        Command::Embed(a) => run::embed(a),
        Command::Generate(a) => experiments::generate_cmd(a),
        Command::Patch(a) => experiments::patch_cmd(a),
        Command::Ablate(a) => experiments::ablate_cmd(a),
        Command::Features(a) => features::features(a),
        Command::Steer(a) => experiments::steer_cmd(a),
        Command::FetchSamples(a) => fetch::fetch(a),
        Command::Bench(a) => bench::bench(a),
        Command::BenchGeometry(a) => bench::bench_geometry(a),
        Command::Similar(a) => geometry::similar(a),
        Command::Neighbors(a) => geometry::neighbors(a),
        Command::Analogy(a) => geometry::analogy(a),
        Command::Axis(a) => geometry::axis(a),
        Command::Project(a) => geometry::project(a),
        Command::Colors(a) => geometry::colors(a),
        Command::Tokenize(a) => tokenize::tokenize(a),
        Command::Batch(a) => batch::batch(a),
    }
}

fn gui(a: GuiArgs) -> anyhow::Result<()> {
    let ids = crate::views::ids();
    if let Some(v) = a.view.as_deref() {
        if !ids.contains(&v) {
            return Err(UsageError(format!("unknown view {v:?} ({})", ids.join(", "))).into());
        }
    }
    let view = a.view;
    if let Some(p) = &a.screenshot {
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            return Err(UsageError(format!(
                "--screenshot {}: the folder does not exist",
                p.display()
            ))
            .into());
        }
    }
    let settings = a
        .set
        .iter()
        .map(|s| view_setting(s))
        .collect::<anyhow::Result<_>>()?;
    crate::gui::run(crate::gui::Launch {
        model: a.model,
        text: a.text,
        view,
        screenshot: a.screenshot,
        backend: a.backend,
        settings,
    })
}

/// `VIEW.FIELD=VALUE` as (view, field, value), the view and its field checked against the views'
/// saved settings.
fn view_setting(s: &str) -> anyhow::Result<(String, String, serde_json::Value)> {
    let bad = |m: String| UsageError(format!("--set {s:?}: {m}"));
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| bad("expected VIEW.FIELD=VALUE".into()))?;
    let (view, field) = key
        .split_once('.')
        .ok_or_else(|| bad("expected VIEW.FIELD=VALUE".into()))?;
    let views = crate::views::registry();
    let v = views.iter().find(|v| v.id() == view).ok_or_else(|| {
        bad(format!(
            "unknown view {view:?} ({})",
            crate::views::ids().join(", ")
        ))
    })?;
    let saved = v.save();
    let fields: Vec<&String> = saved
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    if !fields.iter().any(|f| *f == field) {
        return Err(bad(format!(
            "view {view:?} has no setting {field:?} ({})",
            fields
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    }
    let value =
        serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.into()));
    Ok((view.to_string(), field.to_string(), value))
}

/// Writes a figure (SVG or PNG by the extension, with CSV and JSON next to it) and says where.
pub fn export_figure(
    fig: &prism_analysis::figure::Figure,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let files = fig.export(path)?;
    eprintln!(
        "prism: wrote {}",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Resolves and loads a model; a sample that is not there yet is fetched first.
pub fn load_model(arg: &str) -> anyhow::Result<std::sync::Arc<Model>> {
    let path = model_path(arg)?;
    let model = checkpoint::load(&path)?;
    for w in &model.warnings {
        eprintln!("prism: warning: {w}");
    }
    Ok(std::sync::Arc::new(model))
}

/// The file or folder a model argument names, fetching a sample model that is not there yet.
pub fn model_path(arg: &str) -> anyhow::Result<PathBuf> {
    if let Some(sample) = samples::find(arg) {
        if !samples::is_present(sample) && !std::path::Path::new(arg).exists() {
            eprintln!("prism: sample model {arg:?} is not downloaded yet; fetching it now");
            fetch::fetch_one(sample)?;
        }
    }
    Ok(checkpoint::resolve(arg)?)
}

/// The text of `--text` or `--file` (not empty).
pub fn read_text(text: &Option<String>, file: &Option<PathBuf>) -> anyhow::Result<String> {
    let text = match (text, file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => {
            let bytes = std::fs::read(f).map_err(|e| prism_analysis::PrismError::Io {
                path: f.clone(),
                source: e,
            })?;
            String::from_utf8(bytes)
                .map_err(|e| UsageError(format!("{}: not UTF-8 text ({e})", f.display())))?
        }
        (None, None) => return Err(UsageError("give --text, --file or --ids".into()).into()),
    };
    if text.is_empty() {
        return Err(UsageError("the text is empty: there is nothing to run".into()).into());
    }
    Ok(text)
}

/// The text or ids to run, and the text itself when there is one.
pub fn read_input(
    input: &TextInput,
    model: &Model,
    force_bos: bool,
) -> anyhow::Result<(Vec<u32>, Option<String>)> {
    if let Some(ids) = &input.ids {
        return Ok((ids.clone(), None));
    }
    let text = read_text(&input.text, &input.file)?;
    let tok = model.tokenizer.as_ref().ok_or_else(|| {
        UsageError(format!(
            "{} has no tokenizer; pass token ids with --ids",
            model.info.path.display()
        ))
    })?;
    let ids = tok.encode(&text, force_bos)?;
    Ok((ids, Some(text)))
}
