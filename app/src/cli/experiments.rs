//! `prism generate`, `patch`, `ablate` and `steer`: the experiments, with JSON in the shapes the
//! README documents and every result exportable as a figure.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use clap::Args;
use prism_analysis::ablation::{ablate_units, AblationMode, AblationUnit};
use prism_analysis::backend::{self, Backend};
use prism_analysis::checkpoint::Model;
use prism_analysis::figure::build;
use prism_analysis::generate::{generate, GenSettings, Sampling};
use prism_analysis::intervene::{Intervention, Site};
use prism_analysis::patching::patch;
use prism_analysis::steering::{self, ControlVector};
use prism_analysis::template::chat_prompt;
use serde_json::json;

use super::{export_figure, load_model, BackendArg, ModelArg, UsageError};

fn tokenizer(model: &Model) -> anyhow::Result<&prism_analysis::tokenizer::PrismTokenizer> {
    model.tokenizer.as_ref().ok_or_else(|| {
        UsageError(format!(
            "{} has no tokenizer; pass token ids (--ids, --clean-ids, ...)",
            model.info.path.display()
        ))
        .into()
    })
}

/// Ids of a prompt: the text with the model's own BOS setting, or the ids given.
fn prompt_ids(
    model: &Model,
    text: Option<&str>,
    ids: Option<&Vec<u32>>,
) -> anyhow::Result<Vec<u32>> {
    match (text, ids) {
        (_, Some(ids)) => Ok(ids.clone()),
        (Some(t), None) => {
            if t.is_empty() {
                return Err(UsageError("the text is empty: there is nothing to run".into()).into());
            }
            Ok(tokenizer(model)?.encode(t, false)?)
        }
        (None, None) => Err(UsageError("give a text or token ids".into()).into()),
    }
}

/// A text that must be exactly one token (an answer such as " Paris").
fn single_token(
    model: &Model,
    what: &str,
    text: Option<&str>,
    id: Option<u32>,
) -> anyhow::Result<u32> {
    if let Some(id) = id {
        if id as usize >= model.spec.vocab {
            return Err(UsageError(format!(
                "--{what}-id {id} is outside the vocabulary of {}",
                model.spec.vocab
            ))
            .into());
        }
        return Ok(id);
    }
    let text = text.ok_or_else(|| UsageError(format!("give --{what} or --{what}-id")))?;
    Ok(prism_analysis::patching::single_token(model, what, text)?)
}

/// An interventions file, with `patch` sources run and their values filled in, and the SAEs of
/// `feature` interventions read.
pub fn read_interventions(
    path: &std::path::Path,
    model: &Model,
    backend: &dyn Backend,
) -> anyhow::Result<Vec<Intervention>> {
    let text = std::fs::read_to_string(path).map_err(|e| prism_analysis::PrismError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    prism_analysis::sae::prepare_interventions(&text, base, model, backend).map_err(|e| {
        if e.is_bad_input() {
            UsageError(format!("{}: {e}", path.display())).into()
        } else {
            anyhow::Error::from(e)
        }
    })
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The prompt (a user message with --chat).
    #[arg(long)]
    pub prompt: Option<String>,
    /// The prompt as token ids, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "prompt")]
    pub ids: Option<Vec<u32>>,
    /// Wrap the prompt in the model's chat template (one user turn, generation prompt added).
    #[arg(long)]
    pub chat: bool,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only from the k most probable tokens (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample only from the smallest set of tokens whose probability reaches p.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A llama.cpp control vector (GGUF) to steer with.
    #[arg(long)]
    pub control_vector: Option<PathBuf>,
    /// Its strength (negative steers the other way; write --control-scale=-4).
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub control_scale: f32,
    /// Only these layers of the control vector, inclusive ("10-20").
    #[arg(long, value_parser = parse_range)]
    pub control_layers: Option<(usize, usize)>,
    /// A JSON list of interventions applied at every step.
    #[arg(long)]
    pub interventions: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArg,
    #[arg(long)]
    pub json: bool,
    /// Write the entropy-per-token figure (SVG or PNG, with CSV and JSON data).
    #[arg(long)]
    pub figure: Option<PathBuf>,
}

pub fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a, b),
        None => (s, s),
    };
    let a: usize = a
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a layer range like 10-20"))?;
    let b: usize = b
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a layer range like 10-20"))?;
    if a > b {
        return Err(format!("layer range {s:?} runs backwards"));
    }
    Ok((a, b))
}

/// Interventions from a control vector and an interventions file.
fn steering_list(
    model: &Model,
    backend: &dyn Backend,
    control: Option<&PathBuf>,
    scale: f32,
    layers: Option<(usize, usize)>,
    file: Option<&PathBuf>,
) -> anyhow::Result<Vec<Intervention>> {
    let mut list = Vec::new();
    if let Some(path) = control {
        let cv = ControlVector::load(path, model.spec.hidden)?;
        if !scale.is_finite() {
            return Err(UsageError(format!("--control-scale {scale} is not a number")).into());
        }
        list.extend(cv.interventions(scale, layers, model.spec.n_layers));
    }
    if let Some(path) = file {
        list.extend(read_interventions(path, model, backend)?);
    }
    Ok(list)
}

pub fn generate_cmd(a: GenerateArgs) -> anyhow::Result<()> {
    let model = load_model(&a.model.model)?;
    // The prompt first: a template that fails should fail before a backend starts.
    let prompt_ids = if a.chat {
        let user = a
            .prompt
            .as_deref()
            .ok_or_else(|| UsageError("--chat needs --prompt (the user message)".into()))?;
        let rendered = chat_prompt(&model, user, &AtomicBool::new(false))?;
        tokenizer(&model)?.encode_plain(&rendered)?
    } else {
        prompt_ids(&model, a.prompt.as_deref(), a.ids.as_ref())?
    };
    let (b, notes) = backend::create(&model, a.backend.backend)?;
    for n in &notes {
        eprintln!("prism: {n}");
    }
    let list = steering_list(
        &model,
        b.as_ref(),
        a.control_vector.as_ref(),
        a.control_scale,
        a.control_layers,
        a.interventions.as_ref(),
    )?;
    let sampling = Sampling {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    };
    let settings = GenSettings::for_model(&model, a.max_tokens, sampling);
    let room = model.spec.context_length.saturating_sub(prompt_ids.len());
    if a.max_tokens > room {
        eprintln!(
            "prism: warning: --max-tokens {} does not fit: the prompt takes {} of the model's {} positions, so at most {room} tokens follow",
            a.max_tokens,
            prompt_ids.len(),
            model.spec.context_length
        );
    }
    let cancel = AtomicBool::new(false);
    let stream = !a.json;
    if stream {
        if let Some(t) = &model.tokenizer {
            eprint!("{}", t.decode(&prompt_ids)?);
        }
    }
    let g = generate(
        &model,
        b.as_ref(),
        &prompt_ids,
        &settings,
        &list,
        &cancel,
        &mut |t| {
            if stream {
                use std::io::Write;
                print!("{}", t.text);
                let _ = std::io::stdout().flush();
            }
        },
    )?;
    if stream {
        println!();
    }
    if let Some(path) = &a.figure {
        let steer_label = a.control_vector.as_ref().map(|v| {
            let name = v.file_name().unwrap_or_default().to_string_lossy();
            match a.control_layers {
                Some((lo, hi)) => format!(
                    "steer: {name} (direction.{lo}–{hi} × {:.1})",
                    a.control_scale
                ),
                None => format!("steer: {name} (× {:.1})", a.control_scale),
            }
        });
        export_figure(
            &build::generation_figure(
                &g,
                &model.info.path.display().to_string(),
                steer_label.as_deref(),
            ),
            path,
        )?;
    }
    if a.json {
        let v = json!({
            "prompt_ids": g.prompt_ids,
            "tokens": g.tokens.iter().map(|t| json!({"id": t.id, "text": t.text, "p": t.p, "entropy_bits": t.entropy_bits})).collect::<Vec<_>>(),
            "text": g.text,
            "stop_reason": g.stop_reason,
            "interventions": list,
        });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        let mean_h =
            g.tokens.iter().map(|t| t.entropy_bits).sum::<f64>() / g.tokens.len().max(1) as f64;
        eprintln!(
            "prism: {} tokens, {}; mean entropy {mean_h:.2} bits; {} intervention(s)",
            g.tokens.len(),
            g.stop_reason.describe(),
            list.len()
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct PatchArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[arg(long)]
    pub clean: Option<String>,
    #[arg(long)]
    pub corrupt: Option<String>,
    /// The answer the clean prompt leads to: one token, e.g. " Paris".
    #[arg(long)]
    pub answer: Option<String>,
    /// The answer the corrupt prompt leads to: one token, e.g. " Rome".
    #[arg(long)]
    pub wrong: Option<String>,
    #[arg(long, value_delimiter = ',')]
    pub clean_ids: Option<Vec<u32>>,
    #[arg(long, value_delimiter = ',')]
    pub corrupt_ids: Option<Vec<u32>>,
    #[arg(long)]
    pub answer_id: Option<u32>,
    #[arg(long)]
    pub wrong_id: Option<u32>,
    /// resid_pre, attn_out or mlp_out (layer x position), or head (layer x head).
    #[arg(long, default_value = "resid_pre", value_parser = parse_site)]
    pub site: Site,
    #[command(flatten)]
    pub backend: BackendArg,
    #[arg(long)]
    pub json: bool,
    /// Write the grid as a heatmap (SVG or PNG, with CSV and JSON data).
    #[arg(long)]
    pub figure: Option<PathBuf>,
}

fn parse_site(s: &str) -> Result<Site, String> {
    Site::from_name(s).ok_or_else(|| {
        format!("unknown site {s:?} (resid_pre, resid_post, attn_out, mlp_out, head)")
    })
}

pub fn patch_cmd(a: PatchArgs) -> anyhow::Result<()> {
    let model = load_model(&a.model.model)?;
    let clean = prompt_ids(&model, a.clean.as_deref(), a.clean_ids.as_ref())?;
    let corrupt = prompt_ids(&model, a.corrupt.as_deref(), a.corrupt_ids.as_ref())?;
    prism_analysis::patching::check_prompts(&model, &clean, &corrupt)?;
    let answer = single_token(&model, "answer", a.answer.as_deref(), a.answer_id)?;
    let wrong = single_token(&model, "wrong", a.wrong.as_deref(), a.wrong_id)?;
    let (b, notes) = backend::create(&model, a.backend.backend)?;
    for n in &notes {
        eprintln!("prism: {n}");
    }
    let cancel = AtomicBool::new(false);
    let r = patch(
        &model,
        b.as_ref(),
        &clean,
        &corrupt,
        answer,
        wrong,
        a.site,
        &mut |done, total, _| eprint!("\rprism: patching layer {done}/{total}"),
        &cancel,
    )?;
    eprintln!();
    let cols = build::patching_columns(&model, &clean, &corrupt, a.site);
    if let Some(path) = &a.figure {
        let title = format!("Activation patching ({})", a.site.name());
        export_figure(
            &build::patching_figure(
                &r,
                cols.clone(),
                &title,
                &model.info.path.display().to_string(),
            ),
            path,
        )?;
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&json!({
                "site": r.site,
                "clean_metric": r.clean_metric,
                "corrupt_metric": r.corrupt_metric,
                "effect": r.effect,
            }))?
        );
        return Ok(());
    }
    println!(
        "metric = logit[answer] - logit[wrong]: clean {:.3}, corrupt {:.3}; effect of patching {} (1 = the clean answer fully restored)",
        r.clean_metric,
        r.corrupt_metric,
        r.site.name()
    );
    let width = cols
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(6, 14);
    let header: Vec<String> = cols
        .iter()
        .map(|c| {
            let c: String = c.chars().take(width).collect();
            format!("{c:>width$}")
        })
        .collect();
    println!(
        "{:9} {}",
        if a.site == Site::Head { "head" } else { "" },
        header.join(" ")
    );
    for (l, row) in r.effect.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .map(|e| {
                if e.is_nan() {
                    format!("{:>width$}", "n/a")
                } else {
                    format!("{e:>width$.2}")
                }
            })
            .collect();
        println!("layer {l:>3} {}", cells.join(" "));
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct AblateArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[arg(long)]
    pub text: Option<String>,
    #[arg(long, value_delimiter = ',', conflicts_with = "text")]
    pub ids: Option<Vec<u32>>,
    /// zero, or mean (each head replaced by its mean over the text's positions).
    #[arg(long, default_value = "zero", value_parser = parse_mode)]
    pub mode: AblationMode,
    #[command(flatten)]
    pub backend: BackendArg,
    #[arg(long)]
    pub json: bool,
    /// Write the layer x head table as a heatmap (SVG or PNG, with CSV and JSON data).
    #[arg(long)]
    pub figure: Option<PathBuf>,
    /// Ablate the experts of every mixture-of-experts layer instead of the heads: each expert's
    /// routing weight zeroed (or replaced by its mean), the other experts' kept.
    #[arg(long)]
    pub experts: bool,
}

fn parse_mode(s: &str) -> Result<AblationMode, String> {
    match s {
        "zero" => Ok(AblationMode::Zero),
        "mean" => Ok(AblationMode::Mean),
        other => Err(format!("unknown mode {other:?} (zero, mean)")),
    }
}

pub fn ablate_cmd(a: AblateArgs) -> anyhow::Result<()> {
    let model = load_model(&a.model.model)?;
    let ids = prompt_ids(&model, a.text.as_deref(), a.ids.as_ref())?;
    let (b, notes) = backend::create(&model, a.backend.backend)?;
    for n in &notes {
        eprintln!("prism: {n}");
    }
    let cancel = AtomicBool::new(false);
    let unit = if a.experts {
        AblationUnit::Experts
    } else {
        AblationUnit::Heads
    };
    let r = ablate_units(
        &model,
        b.as_ref(),
        &ids,
        unit,
        a.mode,
        &mut |done, total, _| eprint!("\rprism: ablating {}s, layer {done}/{total}", unit.name()),
        &cancel,
    )?;
    eprintln!();
    let mode = match a.mode {
        AblationMode::Zero => "zero",
        AblationMode::Mean => "mean",
    };
    if let Some(path) = &a.figure {
        export_figure(
            &build::ablation_figure(&r, mode, &model.info.path.display().to_string()),
            path,
        )?;
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&json!({
                "unit": unit.name(),
                "baseline_bits": r.baseline_bits,
                "layers": r.layers,
                "delta_bits": r.delta_bits
            }))?
        );
        return Ok(());
    }
    println!(
        "baseline {:.2} bits; Δ bits when each {} is {mode}-ablated:",
        r.baseline_bits,
        unit.name()
    );
    let cols = r.delta_bits.first().map_or(0, Vec::len);
    let heads: Vec<String> = (0..cols).map(|h| format!("{h:>7}")).collect();
    println!("{:<10} {}", unit.name(), heads.join(" "));
    for (l, row) in r.layers.iter().zip(&r.delta_bits) {
        let cells: Vec<String> = row.iter().map(|d| format!("{d:+7.2}")).collect();
        println!("layer {l:>3}  {}", cells.join(" "));
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct SteerArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Prompts on the positive side, one per line (llama.cpp's cvector-generator format).
    #[arg(long, requires = "negative")]
    pub positive: Option<PathBuf>,
    /// Prompts on the negative side, one per line, as many as positive.
    #[arg(long, requires = "positive")]
    pub negative: Option<PathBuf>,
    /// Or a concept axis: from this word...
    #[arg(long, requires = "to", conflicts_with = "positive")]
    pub from: Option<String>,
    /// ...to this one, measured after block --layer inside --template.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// The layer of an axis vector.
    #[arg(long)]
    pub layer: Option<usize>,
    #[arg(long, default_value = "The color of the object is {}.")]
    pub template: String,
    /// Keep only these directions, inclusive ("10-20").
    #[arg(long, value_parser = parse_range)]
    pub layers: Option<(usize, usize)>,
    /// Where to write the control vector (GGUF).
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub backend: BackendArg,
    #[arg(long)]
    pub json: bool,
}

pub fn steer_cmd(a: SteerArgs) -> anyhow::Result<()> {
    let model = load_model(&a.model.model)?;
    let (b, notes) = backend::create(&model, a.backend.backend)?;
    for n in &notes {
        eprintln!("prism: {n}");
    }
    let mut cv = match (&a.positive, &a.negative, &a.from, &a.to) {
        (Some(p), Some(n), _, _) => {
            let read = |path: &PathBuf| -> anyhow::Result<Vec<Vec<u32>>> {
                let text =
                    std::fs::read_to_string(path).map_err(|e| prism_analysis::PrismError::Io {
                        path: path.clone(),
                        source: e,
                    })?;
                Ok(steering::prompt_file_ids(&model, &text)?)
            };
            let (pos, neg) = (read(p)?, read(n)?);
            if pos.len() != neg.len() {
                return Err(UsageError(format!(
                    "{} has {} prompts and {} has {}: cvector-generator needs the same number",
                    p.display(),
                    pos.len(),
                    n.display(),
                    neg.len()
                ))
                .into());
            }
            let pad = steering::pad_token(&model)?;
            steering::mean_difference(&model, b.as_ref(), &pos, &neg, pad)?
        }
        (_, _, Some(from), Some(to)) => {
            let layer = a
                .layer
                .ok_or_else(|| UsageError("an axis vector needs --layer".into()))?;
            steering::axis_direction(&model, b.as_ref(), from, to, layer, &a.template)?
        }
        _ => {
            return Err(UsageError(
                "give --positive and --negative prompt files, or --from and --to words".into(),
            )
            .into())
        }
    };
    if let Some((lo, hi)) = a.layers {
        cv.directions.retain(|&n, _| lo <= n && n <= hi);
        if cv.directions.is_empty() {
            return Err(UsageError(format!("--layers {lo}-{hi} keeps no direction")).into());
        }
    }
    cv.save(&a.output)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&json!({
                "output": a.output,
                "directions": cv.directions.keys().collect::<Vec<_>>(),
                "model_hint": cv.model_hint,
            }))?
        );
    } else {
        println!(
            "wrote {} ({} directions: {}); steer with `prism generate MODEL --control-vector {} --control-scale=S` or llama.cpp's --control-vector-scaled",
            a.output.display(),
            cv.directions.len(),
            cv.directions.keys().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
            a.output.display()
        );
    }
    Ok(())
}
