//! Geometry subcommands: similar, neighbors, analogy, axis, project, colors.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use clap::Args;
use prism_analysis::backend::{self, Backend};
use prism_analysis::figure::geometry::{
    color_scatter, projection_figure, rsa_by_layer, similarity_heatmap,
};
use prism_analysis::geometry::color::{builtin_lexicon, parse_lexicon, run_study, ColorWord};
use prism_analysis::geometry::presets;
use prism_analysis::geometry::project::{project as run_projection, Method, Stage};
use prism_analysis::geometry::rsa::{DEFAULT_PERMUTATIONS, DEFAULT_SEED};
use prism_analysis::geometry::similarity::{
    analogy as analogy_vector, axis_position, cosine_matrix, NeighborIndex,
};
use prism_analysis::geometry::vectors::{Extractor, Source, WordVector, DEFAULT_TEMPLATE};
use prism_analysis::PrismError;
use serde_json::json;

use super::{load_model, BackendArg, ModelArg, UsageError};

#[derive(Args, Debug, Clone)]
pub struct SourceArgs {
    /// Where vectors come from: embed (input embedding, with a leading space for byte-level BPE),
    /// embed_nospace, unembed, layer:N (residual stream in the template; 0 = embedding output), final_norm.
    #[arg(long, default_value = "embed", value_parser = parse_source)]
    pub source: Source,
    /// The sentence contextual vectors are taken from; `{}` marks the word.
    #[arg(long, default_value = DEFAULT_TEMPLATE)]
    pub template: String,
    #[command(flatten)]
    pub backend: BackendArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_source(s: &str) -> Result<Source, String> {
    s.parse()
}

fn parse_method(s: &str) -> Result<Method, String> {
    s.parse()
}

#[derive(Args, Debug)]
pub struct SimilarArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Words or phrases to compare.
    #[arg(required = true, num_args = 2..)]
    pub words: Vec<String>,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Also write the similarity heatmap (.svg or .png, with .csv and .json next to it).
    #[arg(long)]
    pub figure: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct NeighborsArgs {
    #[command(flatten)]
    pub model: ModelArg,
    pub word: String,
    /// How many neighbours.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub k: u32,
    /// The vocabulary matrix searched: embed or unembed (default: embed, or unembed for --source unembed).
    #[arg(long)]
    pub against: Option<String>,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Args, Debug)]
pub struct AnalogyArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// A in A - B + C (e.g. king).
    pub a: String,
    /// B in A - B + C (e.g. man).
    pub b: String,
    /// C in A - B + C (e.g. woman).
    pub c: String,
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub k: u32,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Args, Debug)]
pub struct AxisArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The pole at 0.
    #[arg(long)]
    pub from: String,
    /// The pole at 1.
    #[arg(long)]
    pub to: String,
    /// Words to place on the axis.
    #[arg(required = true)]
    pub words: Vec<String>,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Args, Debug)]
pub struct ProjectArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Words to project (or use --words FILE / --preset NAME).
    pub words: Vec<String>,
    /// A file with one word or phrase per line.
    #[arg(long = "words", value_name = "FILE")]
    pub words_file: Option<PathBuf>,
    /// A built-in list: colors, numbers, months, days, countries, capitals, animals, emotions.
    #[arg(long)]
    pub preset: Option<String>,
    #[arg(long, default_value = "pca", value_parser = parse_method)]
    pub method: Method,
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(2..=3))]
    pub dims: u32,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Also write the scatter plot (.svg or .png, with .csv and .json next to it).
    #[arg(long)]
    pub figure: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ColorsArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// A color lexicon file (name and #rrggbb per line, e.g. the XKCD survey's rgb.txt) instead of the 31 CSS colors.
    #[arg(long)]
    pub lexicon: Option<PathBuf>,
    #[arg(long, default_value = DEFAULT_TEMPLATE)]
    pub template: String,
    /// Mantel test permutations.
    #[arg(long, default_value_t = DEFAULT_PERMUTATIONS as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub permutations: u32,
    /// Seed of the permutations.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    #[command(flatten)]
    pub backend: BackendArg,
    #[arg(long)]
    pub json: bool,
    /// Write the figures into this folder: PCA scatter, RSA by layer, similarity heatmap (SVG and PNG, with data).
    #[arg(long)]
    pub figure: Option<PathBuf>,
    /// The representation the scatter and the heatmap show.
    #[arg(long, default_value = "embed", value_parser = parse_source)]
    pub figure_source: Source,
}

fn backend_for(
    model: &std::sync::Arc<prism_analysis::checkpoint::Model>,
    a: &BackendArg,
) -> anyhow::Result<Box<dyn Backend>> {
    let (b, notes) = backend::create(model, a.backend)?;
    for n in notes {
        eprintln!("prism: {n}");
    }
    Ok(b)
}

fn splits_json(v: &[WordVector]) -> serde_json::Value {
    json!(v
        .iter()
        .map(|w| json!({"word": w.word, "ids": w.ids, "tokens": w.pieces, "split": w.is_split()}))
        .collect::<Vec<_>>())
}

fn print_splits(v: &[WordVector]) {
    let split: Vec<String> = v
        .iter()
        .filter(|w| w.is_split())
        .map(|w| format!("{} = {}", w.word, w.pieces.join(" + ")))
        .collect();
    if !split.is_empty() {
        println!(
            "split into several tokens (averaged for embeddings, last token in context): {}",
            split.join("; ")
        );
    }
}

use super::export_figure as export;

pub fn similar(a: SimilarArgs) -> anyhow::Result<()> {
    let model = load_model(&a.model.model)?;
    let b = backend_for(&model, &a.source.backend)?;
    let mut ex = Extractor::new(&model, b.as_ref());
    let v = ex.vectors(&a.words, a.source.source, &a.source.template)?;
    let sims = cosine_matrix(&v.iter().map(|w| w.vector.clone()).collect::<Vec<_>>());
    if let Some(path) = &a.figure {
        let notes = vec![format!(
            "model: {}; source: {}",
            model.info.path.display(),
            a.source.source
        )];
        export(
            &similarity_heatmap(
                &format!("Cosine similarity ({})", a.source.source),
                &a.words,
                &sims,
                notes,
            ),
            path,
        )?;
    }
    if a.source.json {
        println!(
            "{}",
            serde_json::to_string(
                &json!({"source": a.source.source.to_string(), "words": a.words, "tokens": splits_json(&v), "cosine": sims})
            )?
        );
        return Ok(());
    }
    let w = a
        .words
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(6, 16);
    print!("{:w$}", "", w = w + 2);
    for word in &a.words {
        print!(" {word:>w$}");
    }
    println!();
    for (word, row) in a.words.iter().zip(&sims) {
        print!("{word:>w$}  ");
        for s in row {
            print!(" {s:>w$.3}");
        }
        println!();
    }
    print_splits(&v);
    Ok(())
}

pub fn neighbors(a: NeighborsArgs) -> anyhow::Result<()> {
    let model = load_model(&a.model.model)?;
    let b = backend_for(&model, &a.source.backend)?;
    let mut ex = Extractor::new(&model, b.as_ref());
    let v = ex.vectors(
        std::slice::from_ref(&a.word),
        a.source.source,
        &a.source.template,
    )?;
    let against = a.against.clone().unwrap_or_else(|| {
        if a.source.source == Source::Unembed {
            "unembed".into()
        } else {
            "embed".into()
        }
    });
    if against != "embed" && against != "unembed" {
        return Err(UsageError(format!("--against {against:?}: embed or unembed")).into());
    }
    let table = ex.search_table(against == "unembed", v[0].vector.len())?;
    // Exact search on the GPU when one is asked for (or, under auto, when a hardware GPU exists).
    let gpu_ctx = match a.source.backend.backend {
        prism_analysis::backend::BackendChoice::Gpu => Some(
            prism_analysis::backend::gpu::context::GpuContext::shared(true)?,
        ),
        prism_analysis::backend::BackendChoice::Auto => {
            prism_analysis::backend::gpu::context::GpuContext::shared(false).ok()
        }
        prism_analysis::backend::BackendChoice::Cpu => None,
    };
    let (found, searched_on) = match gpu_ctx {
        Some(ctx) => {
            let index = prism_analysis::geometry::similarity::GpuNeighborIndex::new(ctx, table)?;
            (
                index.nearest(&v[0].vector, a.k as usize, &[])?,
                format!("gpu ({})", index.adapter()),
            )
        }
        None => (
            NeighborIndex::new(table).nearest(&v[0].vector, a.k as usize, &[]),
            "cpu".to_string(),
        ),
    };
    let tok = model.tokenizer.as_ref();
    let rows: Vec<serde_json::Value> = found
        .iter()
        .map(|n| json!({"id": n.id, "token": tok.and_then(|t| t.token_piece(n.id)), "text": tok.map(|t| t.token_text(n.id)), "cosine": n.cosine}))
        .collect();
    if a.source.json {
        println!(
            "{}",
            serde_json::to_string(
                &json!({"word": a.word, "source": a.source.source.to_string(), "against": against, "searched_on": searched_on, "tokens": splits_json(&v), "neighbors": rows})
            )?
        );
        return Ok(());
    }
    println!(
        "nearest {} tokens to {:?} ({} vector, searched in the {against} matrix on the {searched_on}, exact cosine):",
        a.k, a.word, a.source.source
    );
    for (i, r) in rows.iter().enumerate() {
        println!(
            "{:>4}  {:>7}  {:<24} {:.4}",
            i + 1,
            r["id"],
            r["text"]
                .as_str()
                .map(|s| format!("{s:?}"))
                .unwrap_or_default(),
            r["cosine"].as_f64().unwrap_or(0.0)
        );
    }
    print_splits(&v);
    Ok(())
}

pub fn analogy(a: AnalogyArgs) -> anyhow::Result<()> {
    let model = load_model(&a.model.model)?;
    let b = backend_for(&model, &a.source.backend)?;
    let mut ex = Extractor::new(&model, b.as_ref());
    let words = vec![a.a.clone(), a.b.clone(), a.c.clone()];
    let v = ex.vectors(&words, a.source.source, &a.source.template)?;
    let target = analogy_vector(&v[0].vector, &v[1].vector, &v[2].vector);
    let table = ex.search_table(a.source.source == Source::Unembed, target.len())?;
    let exclude: Vec<u32> = v.iter().flat_map(|w| w.ids.iter().copied()).collect();
    let found = NeighborIndex::new(table).nearest(&target, a.k as usize, &exclude);
    let tok = model.tokenizer.as_ref();
    let rows: Vec<serde_json::Value> = found
        .iter()
        .map(|n| json!({"id": n.id, "text": tok.map(|t| t.token_text(n.id)), "cosine": n.cosine}))
        .collect();
    if a.source.json {
        println!(
            "{}",
            serde_json::to_string(
                &json!({"query": format!("{} - {} + {}", a.a, a.b, a.c), "source": a.source.source.to_string(), "excluded": exclude, "tokens": splits_json(&v), "results": rows})
            )?
        );
        return Ok(());
    }
    println!("{} - {} + {} ≈ (inputs' tokens excluded)", a.a, a.b, a.c);
    for (i, r) in rows.iter().enumerate() {
        println!(
            "{:>4}  {:<24} {:.4}",
            i + 1,
            r["text"]
                .as_str()
                .map(|s| format!("{s:?}"))
                .unwrap_or_default(),
            r["cosine"].as_f64().unwrap_or(0.0)
        );
    }
    print_splits(&v);
    Ok(())
}

pub fn axis(a: AxisArgs) -> anyhow::Result<()> {
    let model = load_model(&a.model.model)?;
    let b = backend_for(&model, &a.source.backend)?;
    let mut ex = Extractor::new(&model, b.as_ref());
    let mut all = vec![a.from.clone(), a.to.clone()];
    all.extend(a.words.iter().cloned());
    let v = ex.vectors(&all, a.source.source, &a.source.template)?;
    let mut placed: Vec<(String, f64)> = v[2..]
        .iter()
        .map(|w| {
            (
                w.word.clone(),
                axis_position(&w.vector, &v[0].vector, &v[1].vector),
            )
        })
        .collect();
    placed.sort_by(|x, y| x.1.total_cmp(&y.1));
    if a.source.json {
        let rows: Vec<_> = placed
            .iter()
            .map(|(w, t)| json!({"word": w, "position": t}))
            .collect();
        println!(
            "{}",
            serde_json::to_string(
                &json!({"from": a.from, "to": a.to, "source": a.source.source.to_string(), "tokens": splits_json(&v), "positions": rows})
            )?
        );
        return Ok(());
    }
    println!(
        "{} (0) → {} (1), {} vectors; position = projection on the axis / axis length",
        a.from, a.to, a.source.source
    );
    for (w, t) in &placed {
        let col = ((t.clamp(-0.5, 1.5) + 0.5) * 20.0).round() as usize;
        println!("{w:>16} {t:>7.3}  {}|", " ".repeat(col));
    }
    print_splits(&v);
    Ok(())
}

fn word_list(a: &ProjectArgs) -> anyhow::Result<Vec<String>> {
    if let Some(p) = &a.preset {
        return presets::preset(p).ok_or_else(|| {
            UsageError(format!(
                "unknown preset {p:?} ({})",
                presets::NAMES.join(", ")
            ))
            .into()
        });
    }
    if let Some(f) = &a.words_file {
        let text = std::fs::read_to_string(f).map_err(|e| PrismError::Io {
            path: f.clone(),
            source: e,
        })?;
        let w = presets::parse_word_list(&text);
        if w.is_empty() {
            return Err(UsageError(format!("{}: no words", f.display())).into());
        }
        return Ok(w);
    }
    if a.words.is_empty() {
        return Err(UsageError("give words, --words FILE or --preset NAME".into()).into());
    }
    Ok(a.words.clone())
}

pub fn project(a: ProjectArgs) -> anyhow::Result<()> {
    let words = word_list(&a)?;
    let model = load_model(&a.model.model)?;
    let b = backend_for(&model, &a.source.backend)?;
    let mut ex = Extractor::new(&model, b.as_ref());
    let v = ex.vectors(&words, a.source.source, &a.source.template)?;
    let cancel = AtomicBool::new(false);
    let p = run_projection(
        &v.iter().map(|w| w.vector.clone()).collect::<Vec<_>>(),
        a.method,
        a.dims as usize,
        &mut |s: Stage| {
            if s == Stage::Running && a.method == Method::Tsne {
                eprintln!("prism: running t-SNE on {} points", words.len());
            }
        },
        &cancel,
    )?;
    if let Some(path) = &a.figure {
        let fig = projection_figure(
            &words,
            &p,
            &a.source.source.to_string(),
            &model.info.path.display().to_string(),
        );
        export(&fig, path)?;
    }
    if a.source.json {
        let pts: Vec<_> = words
            .iter()
            .zip(&p.points)
            .map(|(w, x)| json!({"word": w, "coords": x}))
            .collect();
        println!(
            "{}",
            serde_json::to_string(
                &json!({"method": p.method, "dims": p.dims, "source": a.source.source.to_string(), "explained_variance_ratio": p.explained_variance_ratio, "tokens": splits_json(&v), "points": pts})
            )?
        );
        return Ok(());
    }
    if let Some(r) = &p.explained_variance_ratio {
        println!(
            "explained variance: {}",
            r.iter()
                .map(|x| format!("{:.1}%", x * 100.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for (w, x) in words.iter().zip(&p.points) {
        println!(
            "{w:>16}  {}",
            x.iter()
                .map(|c| format!("{c:>9.4}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    print_splits(&v);
    Ok(())
}

pub fn colors(a: ColorsArgs) -> anyhow::Result<()> {
    let lexicon: Vec<ColorWord> = match &a.lexicon {
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| PrismError::Io {
                path: f.clone(),
                source: e,
            })?;
            parse_lexicon(&text, &f.display().to_string())?
        }
        None => builtin_lexicon(),
    };
    if let Some(dir) = &a.figure {
        if !dir.is_dir() {
            return Err(UsageError(format!("--figure {}: not a folder", dir.display())).into());
        }
    }
    let model = load_model(&a.model.model)?;
    let b = backend_for(&model, &a.backend)?;
    let mut ex = Extractor::new(&model, b.as_ref());
    let cancel = AtomicBool::new(false);
    let mut progress = |done: usize, total: usize| {
        if !a.json && done == total {
            eprintln!("prism: {total} representations analysed");
        }
    };
    let study = run_study(
        &mut ex,
        &lexicon,
        &a.template,
        a.permutations as usize,
        a.seed,
        &mut progress,
        Some(&cancel),
    )?;
    if let Some(dir) = &a.figure {
        let v = ex.vectors(
            &lexicon.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            a.figure_source,
            &a.template,
        )?;
        let vs: Vec<Vec<f32>> = v.iter().map(|w| w.vector.clone()).collect();
        let p = run_projection(&vs, Method::Pca, 2, &mut |_| {}, &cancel)?;
        let r = p.explained_variance_ratio.clone().unwrap_or_default();
        let notes = vec![
            format!(
                "model: {}; source: {}; template {:?}",
                model.info.path.display(),
                a.figure_source,
                a.template
            ),
            "each word is drawn in its own sRGB color".into(),
        ];
        let scatter_fig = color_scatter(
            &format!("Color words, PCA of {} vectors", a.figure_source),
            &lexicon,
            &p.points,
            (
                &format!("PC1 ({:.1}%)", r.first().unwrap_or(&0.0) * 100.0),
                &format!("PC2 ({:.1}%)", r.get(1).unwrap_or(&0.0) * 100.0),
            ),
            notes.clone(),
        );
        let names: Vec<String> = lexicon.iter().map(|c| c.name.clone()).collect();
        let heat = similarity_heatmap(
            &format!("Cosine similarity of color words ({})", a.figure_source),
            &names,
            &cosine_matrix(&vs),
            notes[..1].to_vec(),
        );
        let rsa_fig = rsa_by_layer(&study);
        for (fig, stem) in [
            (&scatter_fig, "colors_pca"),
            (&rsa_fig, "colors_rsa_by_layer"),
            (&heat, "colors_similarity"),
        ] {
            export(fig, &dir.join(format!("{stem}.svg")))?;
            export(fig, &dir.join(format!("{stem}.png")))?;
        }
    }
    if a.json {
        println!("{}", serde_json::to_string(&study)?);
        return Ok(());
    }
    println!(
        "color study: {} words, template {:?}, Mantel test with {} permutations (seed {})",
        lexicon.len(),
        a.template,
        a.permutations,
        a.seed
    );
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>7} {:>7} {:>8} {:>8} {:>9} {:>9}",
        "representation",
        "cos(pu,bl)",
        "cos(pu,rd)",
        "cos(or,rd)",
        "claim1",
        "claim2",
        "rho",
        "p",
        "rho(11)",
        "rho(ctr)"
    );
    let yes = |b: Option<bool>| match b {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "-",
    };
    for r in &study.representations {
        let (pb, pr, or) = r
            .cosines
            .as_ref()
            .map(|c| (c.purple_blue, c.purple_red, c.orange_red))
            .unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        println!(
            "{:<14} {:>9.3} {:>9.3} {:>9.3} {:>7} {:>7} {:>8.3} {:>8.4} {:>9} {:>9.3}",
            r.name,
            pb,
            pr,
            or,
            yes(r.claim1),
            yes(r.claim2),
            r.rho,
            r.p,
            r.rsa_basic11
                .as_ref()
                .map(|x| format!("{:.3}", x.spearman_rho))
                .unwrap_or_else(|| "-".into()),
            r.centered_rsa.spearman_rho
        );
    }
    for r in study.representations.iter().take(2) {
        if !r.split_words.is_empty() {
            println!(
                "{}: split words: {}",
                r.name,
                r.split_words
                    .iter()
                    .map(|(w, p)| format!("{w} = {}", p.join(" + ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }
    if let Some(r) = study
        .representations
        .first()
        .filter(|_| study.representations.len() > 2)
    {
        let ctx = &study.representations[2];
        if !ctx.split_words.is_empty() {
            println!(
                "in the template: {}",
                ctx.split_words
                    .iter()
                    .map(|(w, p)| format!("{w} = {}", p.join(" + ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        let _ = r;
    }
    if let Some(v) = study.verdict() {
        println!();
        for line in v.lines() {
            println!("{line}");
        }
    }
    Ok(())
}
