//! `prism batch`: a whole corpus to Parquet shards, resumable, and `--summary` of a batch folder.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use clap::Args;
use prism_analysis::actcache::{self, ActDtype};
use prism_analysis::backend;
use prism_analysis::batch::{self, BatchSettings};
use prism_analysis::corpus::Corpus;
use prism_analysis::sae::Sae;

use super::{load_model, BackendArg, UsageError};

#[derive(Args, Debug)]
pub struct BatchArgs {
    /// The model (a GGUF file, a Hugging Face folder, or a sample name); not with --summary.
    pub model: Option<String>,
    /// The corpus: a text file (one document per line), JSONL (a "text" field), or a folder of them.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// The batch folder: Parquet shards and manifest.json. A folder with a manifest is resumed.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Tokens per document at most: longer documents are truncated (the model's context at most);
    /// with --pack, the length of every window.
    #[arg(long, default_value_t = 1024)]
    pub context: usize,
    /// Pack each shard's documents into windows of exactly --context tokens, as SAELens does
    /// (BOS starts every window and separates documents), rather than truncate each document.
    #[arg(long)]
    pub pack: bool,
    /// Write the activations at these sites (resid_post@12,mlp_out@3, or SAELens hooks) to
    /// DIR/activations, a Hugging Face datasets folder SAELens reads as an activation cache.
    /// Needs --pack.
    #[arg(long, value_name = "SITES")]
    pub sites: Option<String>,
    /// With --pack: windows run together in one pass (0: 8 on a GPU, 1 on the CPU). Changes the
    /// speed only: each window's numbers are those of its own pass.
    #[arg(long, default_value_t = 0)]
    pub windows_per_pass: usize,
    /// The activation cache's float type.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16"])]
    pub dtype: String,
    /// A SAELens SAE (a folder with cfg.json and sae_weights.safetensors): every token's active
    /// features go into features-NNNNN.parquet (doc, position, feature, activation).
    #[arg(long, value_name = "DIR")]
    pub sae: Option<PathBuf>,
    /// Top predictions kept per token.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub top: u32,
    /// Documents per shard.
    #[arg(long, default_value_t = 256)]
    pub shard_docs: usize,
    /// Prepend the BOS token to every document even if the tokenizer's settings do not.
    #[arg(long)]
    pub bos: bool,
    #[command(flatten)]
    pub backend: BackendArg,
    /// Print a batch folder's documents and totals (bits per byte against zstd) instead of running.
    #[arg(long, value_name = "DIR")]
    pub summary: Option<PathBuf>,
    /// With --summary: one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn batch(a: BatchArgs) -> anyhow::Result<()> {
    if let Some(dir) = &a.summary {
        return summary(dir, a.json);
    }
    let (Some(m), Some(corpus), Some(out)) = (&a.model, &a.corpus, &a.out) else {
        return Err(UsageError(
            "prism batch MODEL --corpus PATH --out DIR (or prism batch --summary DIR)".into(),
        )
        .into());
    };
    let model = load_model(m)?;
    let corpus = Corpus::read(corpus)?;
    let (backend, notes) = backend::create(&model, a.backend.backend)?;
    for n in &notes {
        eprintln!("prism: {n}");
    }
    let sites = match &a.sites {
        Some(list) => actcache::parse_sites(list, &model.spec)?
            .iter()
            .map(|s| s.name())
            .collect(),
        None => Vec::new(),
    };
    let sae = match &a.sae {
        Some(dir) => Some((Sae::load(dir)?, batch::model_sha256(dir)?)),
        None => None,
    };
    let settings = BatchSettings {
        context: a.context.min(model.spec.context_length),
        top_k: a.top as usize,
        shard_docs: a.shard_docs,
        bos: a.bos,
        backend: if backend.describe().starts_with("gpu") {
            "gpu"
        } else {
            "cpu"
        }
        .into(),
        pack: a.pack,
        sites,
        dtype: ActDtype::parse(&a.dtype)?,
        sae_sha256: sae.as_ref().map(|(_, h)| h.clone()),
        windows_per_pass: a.windows_per_pass,
    };
    let cancel = AtomicBool::new(false);
    let mut last = std::time::Instant::now();
    let mut report = |p: batch::Progress| {
        if last.elapsed().as_secs_f64() < 0.5 && p.docs_done < p.docs {
            return;
        }
        last = std::time::Instant::now();
        let rate = p.tokens_run as f64 / p.seconds.max(1e-9);
        let per_doc = p.seconds / p.docs_done.max(1) as f64;
        let eta = per_doc * (p.docs - p.docs_done) as f64;
        let width = 30;
        let filled = width * p.docs_done / p.docs.max(1);
        eprint!(
            "\r[{}{}] {}/{} documents, {:.1} tokens/s, ETA {:.0} s   ",
            "#".repeat(filled),
            " ".repeat(width - filled),
            p.docs_done,
            p.docs,
            rate,
            eta
        );
    };
    let m = batch::run(
        &model,
        backend.as_ref(),
        &corpus,
        out,
        &settings,
        sae.as_ref().map(|(s, _)| s),
        &mut report,
        &cancel,
    )?;
    eprintln!();
    let tokens: usize = m.shards.iter().map(|s| s.tokens).sum();
    println!(
        "{} documents, {tokens} tokens in {} shards in {}",
        m.documents,
        m.shards.len(),
        out.display()
    );
    if let Some(layout) = &m.activations {
        let rows: usize = m.shards.iter().filter_map(|s| s.activation_rows).sum();
        let hooks: Vec<&str> = layout.hooks.iter().map(|(h, _)| h.as_str()).collect();
        println!(
            "activation cache: {rows} windows of {} tokens at {} ({}) in {}",
            layout.context,
            hooks.join(", "),
            layout.dtype.name(),
            out.join(batch::ACTIVATIONS_DIR.trim_end_matches('/'))
                .display()
        );
    }
    Ok(())
}

fn summary(dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let s = batch::summary(dir)?;
    if json {
        let docs: Vec<serde_json::Value> = s
            .docs
            .iter()
            .map(|d| {
                serde_json::json!({
                    "doc": d.doc, "tokens": d.tokens, "truncated": d.truncated, "bits": d.bits,
                    "predicted_bytes": d.predicted_bytes, "bits_per_byte": d.bits_per_byte,
                    "text_bytes": d.text_bytes, "zstd_bytes": d.zstd_bytes,
                    "zstd_bits_per_byte": d.zstd_bits_per_byte,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({
                "model": s.manifest.model, "corpus": s.manifest.corpus,
                "documents": s.manifest.documents, "done": s.docs.len(),
                "total_bits": s.total_bits, "total_predicted_bytes": s.total_predicted_bytes,
                "bits_per_byte": s.bits_per_byte, "zstd_bits_per_byte": s.zstd_bits_per_byte,
                "docs": docs,
            }))?
        );
        return Ok(());
    }
    println!(
        "{:>6} {:>7} {:>10} {:>10}  text",
        "doc", "tokens", "bits/byte", "zstd b/B"
    );
    for d in &s.docs {
        let text: String = d.text.chars().take(50).collect();
        println!(
            "{:>6} {:>7} {:>10.3} {:>10.3}  {text:?}{}",
            d.doc,
            d.tokens,
            d.bits_per_byte,
            d.zstd_bits_per_byte,
            if d.truncated { " (truncated)" } else { "" }
        );
    }
    println!(
        "total: {} of {} documents, {:.3} bits per byte (zstd {:.3}); model {}, corpus {}",
        s.docs.len(),
        s.manifest.documents,
        s.bits_per_byte,
        s.zstd_bits_per_byte,
        s.manifest.model,
        s.manifest.corpus
    );
    Ok(())
}
