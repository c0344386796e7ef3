//! `prism features`: a sparse autoencoder's features of every token of a text, with the
//! reconstruction's quality (SAELens's MSE and explained variance, the spliced-in surprisal).

use clap::Args;
use prism_analysis::backend;
use prism_analysis::sae::{self, Sae};
use serde_json::json;

use super::{load_model, read_input, BackendArg, ModelArg, TextInput, UsageError};

#[derive(Args, Debug)]
pub struct FeaturesArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// An SAE or transcoder: a folder in SAELens's format (cfg.json + sae_weights.safetensors),
    /// Gemma Scope's, Llama Scope's or sparsify's, a circuit-tracer transcoder set (a folder with
    /// config.yaml: every layer) or one layer's file of it; repeat for several.
    #[arg(long, required = true)]
    pub sae: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub input: TextInput,
    #[command(flatten)]
    pub backend: BackendArg,
    /// Prepend the BOS token even if the model's tokenizer settings do not.
    #[arg(long)]
    pub bos: bool,
    /// How many features to show per token.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub top: u32,
    /// Clamp feature ID to VALUE at every position (0 ablates it), keeping the SAE's error term,
    /// and report the run's surprisal; repeatable; needs exactly one --sae.
    #[arg(long, value_parser = parse_clamp)]
    pub clamp: Vec<(usize, f32)>,
    /// Write feature ID's decoder direction as a llama.cpp control vector (with --output), so that
    /// `llama-cli --control-vector-scaled FILE:scale` steers along it; needs exactly one --sae.
    #[arg(long, requires = "output")]
    pub export_direction: Option<usize>,
    #[arg(short = 'o', long, requires = "export_direction")]
    pub output: Option<std::path::PathBuf>,
    /// Also print feature ID's card: its activation per token, the tokens its decoder direction
    /// raises and lowers most through the unembedding, and its nearest features by decoder
    /// cosine; needs exactly one --sae.
    #[arg(long)]
    pub card: Option<usize>,
    /// Write the figure (SVG or PNG, with CSV and JSON data): the --card feature's activation per
    /// token, or else the number of active features per token.
    #[arg(long)]
    pub figure: Option<std::path::PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// A corpus for a dashboard (with --dashboard): a text file with one document per line, a
    /// JSONL file with a "text" field, or a folder of them.
    #[arg(long, group = "TextInput", requires = "dashboard")]
    pub corpus: Option<std::path::PathBuf>,
    /// Write a feature dashboard of the corpus here (one JSON file the app's Features view opens):
    /// per feature its top contexts, density, histogram, logit effect and nearest features. A
    /// killed run resumes from DASHBOARD.partial.
    #[arg(long, requires = "corpus")]
    pub dashboard: Option<std::path::PathBuf>,
    /// Tokens per document at most, for a dashboard (longer documents are truncated).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub context: u32,
    /// Contexts kept per feature in a dashboard.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub contexts: u32,
    /// Save a dashboard's progress every N documents (and every 30 seconds).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub checkpoint_every: u32,
}

fn parse_clamp(s: &str) -> Result<(usize, f32), String> {
    let (id, v) = s
        .split_once('=')
        .ok_or_else(|| format!("--clamp {s:?}: expected ID=VALUE"))?;
    let id = id
        .trim()
        .parse()
        .map_err(|_| format!("--clamp {s:?}: {id:?} is not a feature id"))?;
    let v: f32 = v
        .trim()
        .parse()
        .map_err(|_| format!("--clamp {s:?}: {v:?} is not a number"))?;
    if !v.is_finite() {
        return Err(format!("--clamp {s:?}: the value is not a finite number"));
    }
    Ok((id, v))
}

pub fn features(a: FeaturesArgs) -> anyhow::Result<()> {
    let model = load_model(&a.model.model)?;
    if !model.spec.causal {
        return Err(UsageError(format!(
            "{} is an encoder: the spliced-in loss needs next-token predictions",
            model.info.path.display()
        ))
        .into());
    }
    let mut saes: Vec<Sae> = Vec::new();
    for p in &a.sae {
        saes.extend(Sae::load_all(p)?);
    }
    for s in &saes {
        s.check(&model)?;
    }
    if let (Some(corpus), Some(out)) = (&a.corpus, &a.dashboard) {
        if saes.len() != 1 {
            return Err(UsageError("--dashboard needs exactly one --sae".into()).into());
        }
        return dashboard(&a, &model, &saes[0], corpus, out);
    }
    if (!a.clamp.is_empty()
        || a.export_direction.is_some()
        || a.card.is_some()
        || a.figure.is_some())
        && saes.len() != 1
    {
        return Err(UsageError(
            "--clamp, --export-direction, --card and --figure need exactly one --sae".into(),
        )
        .into());
    }
    if let Some(j) = a.card.filter(|&j| j >= saes[0].d_sae) {
        return Err(UsageError(format!(
            "--card {j}: the SAE has features 0..{}",
            saes[0].d_sae - 1
        ))
        .into());
    }
    if let (Some(j), Some(out)) = (a.export_direction, &a.output) {
        let s = &saes[0];
        let dir = s.direction(j).ok_or_else(|| {
            UsageError(format!(
                "--export-direction {j}: the SAE has features 0..{}",
                s.d_sae - 1
            ))
        })?;
        let layer = s.control_layer(&model).ok_or_else(|| {
            UsageError(format!(
                "--export-direction: {} is on {}@{}, which no llama.cpp control-vector layer (added to the residual stream after layers 1..{}) reaches",
                s.path.display(),
                s.site.name(),
                s.layer,
                model.spec.n_layers - 1
            ))
        })?;
        let cv = prism_analysis::steering::ControlVector {
            directions: [(layer, dir.to_vec())].into_iter().collect(),
            model_hint: model.spec.architecture.clone(),
        };
        cv.save(out)?;
        eprintln!(
            "prism: wrote feature {j}'s decoder direction as direction.{layer} to {}",
            out.display()
        );
    }
    let (ids, _) = read_input(&a.input, &model, a.bos)?;
    backend::check_ids(&model, &ids)?;
    if ids.len() < 2 {
        return Err(UsageError(
            "the text needs at least two tokens: the first one is not predicted".into(),
        )
        .into());
    }
    let (b, notes) = backend::create(&model, a.backend.backend)?;
    for n in &notes {
        eprintln!("prism: {n}");
    }
    // One clean run serves the features, the splices and the clamps.
    let plain = sae::clean_run(&model, b.as_ref(), &ids, &saes)?;
    // Every active feature per token (a card needs them all), shown `--top` at a time.
    let all = saes.iter().map(|s| s.d_sae).max().unwrap_or(1);
    let mut runs = sae::features(&model, b.as_ref(), &plain, &saes, all)?;
    let card = match a.card {
        Some(j) => Some(sae::card::card(&model, &saes[0], &runs[0], j, 10)?),
        None => None,
    };
    let text = |id: u32| model.token_text(id);
    if let Some(path) = &a.figure {
        let fig = prism_analysis::figure::build::features_figure(
            &plain,
            &saes[0],
            &runs[0],
            card.as_ref(),
            &model.info.path.display().to_string(),
            &text,
        );
        super::export_figure(&fig, path)?;
    }
    for r in &mut runs {
        r.features
            .iter_mut()
            .for_each(|f| f.truncate(a.top as usize));
    }
    let clamped = if a.clamp.is_empty() {
        None
    } else {
        Some(sae::clamped(
            &model,
            b.as_ref(),
            &plain,
            &saes[0],
            &a.clamp,
        )?)
    };
    let tokens = &plain.tokens;
    if a.json {
        let one = |s: &Sae, r: &sae::FeatureRun| {
            json!({
                "sae": {"path": s.path, "hook": s.hook, "site": s.site.name(), "layer": s.layer,
                        "architecture": s.architecture, "d_in": s.d_in, "d_sae": s.d_sae,
                        "transcoder": s.transcoder, "input": s.input},
                "features": r.features.iter().map(|f| f.iter().map(|(id, act)| json!({"id": id, "act": act})).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "l0": r.l0,
                "reconstruction": r.reconstruction,
            })
        };
        let v = if saes.len() == 1 {
            let mut v = one(&saes[0], &runs[0]);
            v["tokens"] = serde_json::to_value(tokens)?;
            v["backend"] = json!(plain.backend);
            if let Some(c) = &card {
                v["card"] = json!({
                    "feature": c.feature,
                    "acts": c.acts,
                    "active": c.active,
                    "max_act": c.max_act,
                    "logits_up": c.logits_up.iter().map(|(id, x)| json!({"id": id, "text": text(*id), "effect": x})).collect::<Vec<_>>(),
                    "logits_down": c.logits_down.iter().map(|(id, x)| json!({"id": id, "text": text(*id), "effect": x})).collect::<Vec<_>>(),
                    "neighbours": c.neighbours.iter().map(|(id, x)| json!({"id": id, "cosine": x})).collect::<Vec<_>>(),
                });
            }
            if let Some(c) = &clamped {
                v["clamped"] = json!({
                    "features": a.clamp.iter().map(|(j, x)| json!({"id": j, "value": x})).collect::<Vec<_>>(),
                    "bits": c.total_bits(),
                    "surprisal_bits": c.surprisal_bits,
                });
            }
            v
        } else {
            json!({
                "tokens": tokens,
                "backend": plain.backend,
                "runs": saes.iter().zip(&runs).map(|(s, r)| one(s, r)).collect::<Vec<_>>(),
            })
        };
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    if let Some(c) = &clamped {
        let list: Vec<String> = a.clamp.iter().map(|(j, x)| format!("{j}={x}")).collect();
        println!(
            "features {} clamped (error term kept): {:.2} bits against {:.2} clean ({:+.2})",
            list.join(", "),
            c.total_bits(),
            plain.total_bits(),
            c.total_bits() - plain.total_bits()
        );
    }
    if let Some(c) = &card {
        let list = |v: &[(u32, f32)]| {
            v.iter()
                .map(|&(id, x)| format!("{:?} {x:+.3}", text(id)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "feature {}: active on {} of {} tokens, max {:.3}",
            c.feature,
            c.active,
            c.acts.len(),
            c.max_act
        );
        println!("  raises: {}", list(&c.logits_up));
        println!("  lowers: {}", list(&c.logits_down));
        println!(
            "  nearest by decoder cosine: {}",
            c.neighbours
                .iter()
                .map(|(i, x)| format!("{i} ({x:.3})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (s, r) in saes.iter().zip(&runs) {
        let rc = &r.reconstruction;
        println!(
            "{} ({} {}@{}, {} features of {}): MSE {:.4}, explained variance {:.4}, {:.2} bits spliced in against {:.2} clean ({:+.2})",
            s.path.display(),
            s.architecture,
            s.site.name(),
            s.layer,
            s.d_sae,
            s.d_in,
            rc.mse,
            rc.explained_variance,
            rc.spliced_bits,
            rc.clean_bits,
            rc.spliced_bits - rc.clean_bits
        );
        for (i, (t, f)) in tokens.iter().zip(&r.features).enumerate() {
            let shown: Vec<String> = f.iter().map(|(id, act)| format!("{id} {act:.3}")).collect();
            println!(
                "{i:>5}  {:<18} {:>4} active  {}",
                format!("{:?}", t.text),
                r.l0[i],
                shown.join(", ")
            );
        }
    }
    Ok(())
}

/// A key naming what a dashboard's state belongs to: the model file, the SAE's weights, the
/// corpus and the settings.
fn dashboard_key(
    model: &prism_analysis::model::Model,
    s: &Sae,
    corpus_sha: &str,
    settings: &sae::dashboard::Settings,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let size = std::fs::metadata(&model.info.path)
        .map(|m| m.len())
        .unwrap_or(0);
    h.update(format!(
        "{}\0{size}\0{}\0",
        model.info.path.display(),
        model.spec.architecture
    ));
    h.update(format!(
        "{}\0{}\0{}\0{}\0",
        s.hook, s.d_in, s.d_sae, s.architecture
    ));
    for w in [&s.w_enc[..], &s.b_enc[..], &s.w_dec[..], &s.b_dec[..]] {
        for x in w {
            h.update(x.to_le_bytes());
        }
    }
    h.update(corpus_sha.as_bytes());
    h.update(
        serde_json::to_string(settings)
            .unwrap_or_default()
            .as_bytes(),
    );
    format!("{:x}", h.finalize())
}

fn dashboard(
    a: &FeaturesArgs,
    model: &std::sync::Arc<prism_analysis::model::Model>,
    s: &Sae,
    corpus: &std::path::Path,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use prism_analysis::corpus::Corpus;
    use sae::dashboard::{finish, Accumulator, Settings};
    let tok = model.tokenizer.as_ref().ok_or_else(|| {
        UsageError(format!(
            "{} has no tokenizer: a corpus needs one",
            model.info.path.display()
        ))
    })?;
    let c = Corpus::read(corpus)?;
    let sha = c.digest();
    let settings = Settings {
        context: (a.context as usize).min(model.spec.context_length.max(1)),
        top_contexts: a.contexts as usize,
        ..Settings::default()
    };
    let key = dashboard_key(model, s, &sha, &settings);
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let mut acc = match Accumulator::resume(&partial, &key)? {
        Some(acc) => {
            eprintln!(
                "prism: resuming {} at document {} of {}",
                partial.display(),
                acc.docs_done,
                c.documents.len()
            );
            acc
        }
        None => Accumulator::new(key, settings, s.d_sae),
    };
    let (b, notes) = backend::create(model, a.backend.backend)?;
    for n in &notes {
        eprintln!("prism: {n}");
    }
    let bar = indicatif::ProgressBar::new(c.documents.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} documents, {msg} [{elapsed_precise}, ETA {eta}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(acc.docs_done as u64);
    let started = std::time::Instant::now();
    let mut saved_at = std::time::Instant::now();
    let mut tokens_now = 0u64;
    let one = std::slice::from_ref(s);
    for doc in acc.docs_done..c.documents.len() {
        let mut ids = tok.encode(&c.documents[doc], false)?;
        ids.truncate(settings.context);
        if ids.is_empty() {
            acc.docs_done = doc + 1;
            continue;
        }
        let trace = sae::clean_run(model, b.as_ref(), &ids, one)?;
        let feats = sae::active_features(b.as_ref(), &trace, s)?;
        acc.add(doc, &ids, &feats);
        tokens_now += ids.len() as u64;
        bar.set_position(acc.docs_done as u64);
        bar.set_message(format!(
            "{:.0} tokens/s",
            tokens_now as f64 / started.elapsed().as_secs_f64().max(1e-9)
        ));
        if (doc + 1) % a.checkpoint_every as usize == 0 || saved_at.elapsed().as_secs() >= 30 {
            acc.save(&partial)?;
            saved_at = std::time::Instant::now();
        }
    }
    acc.save(&partial)?;
    bar.finish_and_clear();
    let live = acc.features.iter().filter(|f| f.active > 0).count();
    let tokens = acc.tokens;
    let d = finish(
        acc,
        model,
        s,
        (&corpus.display().to_string(), &sha, c.documents.len()),
    )?;
    let bytes = serde_json::to_vec(&d)?;
    prism_analysis::figure::write_atomic(out, &bytes)?;
    let _ = std::fs::remove_file(&partial);
    eprintln!(
        "prism: wrote {} ({} documents, {tokens} tokens; {live} of {} features fired)",
        out.display(),
        c.documents.len(),
        s.d_sae
    );
    Ok(())
}
