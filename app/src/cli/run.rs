//! `prism run` and `prism embed`: forward passes from the command line.

use clap::Args;
use prism_analysis::backend::{self, Capture};
use prism_analysis::trace::Trace;
use serde_json::json;

use super::{load_model, read_input, BackendArg, ModelArg, TextInput, UsageError};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub input: TextInput,
    #[command(flatten)]
    pub backend: BackendArg,
    /// Prepend the BOS token even if the model's tokenizer settings do not.
    #[arg(long)]
    pub bos: bool,
    /// How many predictions to show per position.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub top: u32,
    /// Include attention probabilities [layer][head][query][key] (JSON only).
    #[arg(long)]
    pub attention: bool,
    /// Include the residual stream after every layer and its L2 norms.
    #[arg(long)]
    pub hidden: bool,
    /// Include the logit lens: each layer's top-5 predictions at every position.
    #[arg(long)]
    pub lens: bool,
    /// Include the expert routing of every mixture-of-experts layer: the experts each token went
    /// to with their weights (after renormalisation), and the router's probabilities.
    #[arg(long)]
    pub experts: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// A JSON list of interventions ({"site", "layer", "head"?, "positions"?, "op", "vector"?,
    /// "scale"?}) applied to this run.
    #[arg(long)]
    pub interventions: Option<std::path::PathBuf>,
    /// Write a figure of the run (SVG or PNG by the extension, with CSV and JSON data).
    #[arg(long)]
    pub figure: Option<std::path::PathBuf>,
    /// Which figure: text (surprisal per token), attention (one head's map), lens, or experts
    /// (the share of the tokens routed to each expert of each mixture-of-experts layer).
    #[arg(long, default_value = "text")]
    pub figure_view: String,
    /// The attention figure's layer.
    #[arg(long, default_value_t = 0)]
    pub layer: usize,
    /// The attention figure's head.
    #[arg(long, default_value_t = 0)]
    pub head: usize,
    /// The attention figure's colormap: viridis or grays (the attention view's two).
    #[arg(long, default_value = "viridis")]
    pub colormap: String,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub input: TextInput,
    #[command(flatten)]
    pub backend: BackendArg,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
}

fn show(s: &str) -> String {
    let escaped: String = s.chars().flat_map(|c| c.escape_debug()).collect();
    format!("\"{escaped}\"")
}

/// `experts[layer][position] = [{"expert", "weight"}]` (heaviest first; empty lists for dense
/// layers) and `router_probs[layer][position] = [p per expert]` (null for dense layers).
fn routing_json(
    routing: &[Option<backend::Routing>],
    positions: usize,
) -> (serde_json::Value, serde_json::Value) {
    let experts: Vec<Vec<Vec<serde_json::Value>>> = routing
        .iter()
        .map(|r| match r {
            Some(r) => (0..positions)
                .map(|p| {
                    r.chosen(p)
                        .iter()
                        .map(|(e, w)| json!({"expert": e, "weight": w}))
                        .collect()
                })
                .collect(),
            None => Vec::new(),
        })
        .collect();
    let probs: Vec<Option<Vec<&[f32]>>> = routing
        .iter()
        .map(|r| {
            r.as_ref()
                .map(|r| (0..positions).map(|p| r.probs_of(p)).collect())
        })
        .collect();
    (json!(experts), json!(probs))
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    let model = load_model(&a.model.model)?;
    if !model.spec.causal {
        return Err(UsageError(format!(
            "{} is an encoder ({}): it predicts no next token; use `prism embed`",
            model.info.path.display(),
            model.spec.architecture
        ))
        .into());
    }
    let (ids, text) = read_input(&a.input, &model, a.bos)?;
    backend::check_ids(&model, &ids)?;
    let (backend, notes) = backend::create(&model, a.backend.backend)?;
    for n in &notes {
        eprintln!("prism: {n}");
    }
    let view = a.figure.as_ref().map(|_| a.figure_view.as_str());
    if let Some(v) = view.filter(|v| !matches!(*v, "text" | "attention" | "lens" | "experts")) {
        return Err(UsageError(format!(
            "--figure-view {v:?}: text, attention, lens or experts"
        ))
        .into());
    }
    let experts = a.experts || view == Some("experts");
    if experts && model.spec.experts.is_none() {
        return Err(UsageError(format!(
            "{}: {} ({}) has no mixture-of-experts layer",
            if a.experts {
                "--experts"
            } else {
                "--figure-view experts"
            },
            model.info.path.display(),
            model.spec.architecture
        ))
        .into());
    }
    let interventions = match &a.interventions {
        Some(path) => super::experiments::read_interventions(path, &model, backend.as_ref())?,
        None => Vec::new(),
    };
    let capture = Capture {
        attention: a.attention || view == Some("attention"),
        residual: a.hidden,
        logits: false,
        logit_lens: a.lens || view == Some("lens"),
        top_k: a.top as usize,
        sites: false,
        experts,
    };
    let trace = Trace::run_with(
        &model,
        backend.as_ref(),
        &ids,
        capture,
        a.top as usize,
        &interventions,
    )?;
    if let (Some(path), Some(v)) = (&a.figure, view) {
        use prism_analysis::figure::build;
        let name = model.info.path.display().to_string();
        let text = |id: u32| model.token_text(id);
        let fig = match v {
            "attention" => {
                if a.layer >= model.spec.n_layers || a.head >= model.spec.n_heads {
                    return Err(UsageError(format!(
                        "--layer {} --head {}: the model has layers 0..{} and heads 0..{}",
                        a.layer,
                        a.head,
                        model.spec.n_layers - 1,
                        model.spec.n_heads - 1
                    ))
                    .into());
                }
                let colormap = prism_analysis::figure::Colormap::sequential(&a.colormap)
                    .ok_or_else(|| {
                        UsageError(format!(
                            "--colormap {}: the choices are viridis and grays",
                            a.colormap
                        ))
                    })?;
                build::attention_figure(&trace, a.layer, a.head, colormap, &name)
            }
            "lens" => build::lens_figure(&trace, &name, &text),
            "experts" => build::expert_usage_figure(&trace, &name),
            _ => Some(build::text_figure(
                &trace,
                &name,
                build::TextColors::Surprisal,
            )),
        };
        let fig = fig.ok_or_else(|| UsageError("the run captured nothing to draw".into()))?;
        super::export_figure(&fig, path)?;
    }
    let summary = prism_analysis::trace::RunSummary::of(&trace, text.as_deref());
    if a.json {
        let mut v = json!({
            "model": model.info.path,
            "architecture": model.spec.architecture,
            "backend": trace.backend,
            "adapter": backend.adapter(),
            "bos": ids.first() == model.tokenizer.as_ref().and_then(|t| t.bos_id).as_ref(),
            "tokens": trace.tokens,
            "surprisal_bits": trace.surprisal_bits,
            "entropy_bits": trace.entropy_bits,
            "rank": trace.rank,
            "top": trace.top,
            "total_bits": summary.total_bits,
            "predicted_bytes": summary.predicted_bytes,
            "bits_per_byte": summary.bits_per_byte,
            "text_bytes": summary.text_bytes,
            "zstd_bytes": summary.zstd_bytes,
            "zstd_bits_per_byte": summary.zstd_bits_per_byte,
        });
        if !interventions.is_empty() {
            v["interventions"] = serde_json::to_value(&interventions)?;
        }
        if let Some(att) = trace.attention() {
            v["attention"] = serde_json::to_value(att.to_nested())?;
            // Linear-attention layers: the gated delta rule unrolled, per value head.
            if let Some(m) = att.mixing_nested() {
                v["mixing"] = serde_json::to_value(m)?;
            }
        }
        if let Some(norms) = trace.residual_norms() {
            v["hidden_state_l2_norms"] = json!(norms);
            let h = trace.output.hidden;
            let states: Option<Vec<Vec<Vec<f32>>>> = trace.output.residual.as_ref().map(|r| {
                r.iter()
                    .map(|l| l.chunks(h).map(|c| c.to_vec()).collect())
                    .collect()
            });
            v["hidden_states"] = json!(states);
        }
        if let (true, Some(routing)) = (a.experts, &trace.output.routing) {
            let (experts, probs) = routing_json(routing, trace.tokens.len());
            v["experts"] = experts;
            v["router_probs"] = probs;
        }
        if let Some(lens) = &trace.output.logit_lens {
            let tok = model.tokenizer.as_ref();
            let lens: Vec<Vec<Vec<serde_json::Value>>> = lens
                .iter()
                .map(|layer| {
                    layer
                        .iter()
                        .map(|pos| {
                            pos.iter()
                                .map(|p| json!({"id": p.id, "text": tok.map(|t| t.token_text(p.id)), "p": p.p}))
                                .collect()
                        })
                        .collect()
                })
                .collect();
            v["logit_lens"] = json!(lens);
        }
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    println!(
        "{} ({}, {} layers) on {}",
        model.info.path.display(),
        model.spec.architecture,
        model.spec.n_layers,
        trace.backend
    );
    println!(
        "{:>5}  {:<18} {:>7}  {:>8} {:>7} {:>8}  top predictions for the next token",
        "pos", "token", "id", "bits", "rank", "entropy"
    );
    for (i, t) in trace.tokens.iter().enumerate() {
        let bits = trace.surprisal_bits[i]
            .map(|b| format!("{b:.2}"))
            .unwrap_or_else(|| "-".into());
        let rank = trace.rank[i]
            .map(|r| r.to_string())
            .unwrap_or_else(|| "-".into());
        let ent = trace.entropy_bits[i]
            .map(|e| format!("{e:.2}"))
            .unwrap_or_else(|| "-".into());
        let top: Vec<String> = trace.top[i]
            .iter()
            .take(3)
            .map(|p| format!("{} {:.2}", show(&p.text), p.p))
            .collect();
        println!(
            "{i:>5}  {:<18} {:>7}  {bits:>8} {rank:>7} {ent:>8}  {}",
            show(&t.text),
            t.id,
            top.join("  ")
        );
    }
    if let (true, Some(routing)) = (a.experts, &trace.output.routing) {
        println!();
        println!("experts per token (layer: expert weight, ...)");
        for (i, t) in trace.tokens.iter().enumerate() {
            let per: Vec<String> = routing
                .iter()
                .enumerate()
                .filter_map(|(l, r)| r.as_ref().map(|r| (l, r)))
                .map(|(l, r)| {
                    let chosen: Vec<String> = r
                        .chosen(i)
                        .iter()
                        .map(|(e, w)| format!("{e} {w:.2}"))
                        .collect();
                    format!("{l}: {}", chosen.join(", "))
                })
                .collect();
            println!("{i:>5}  {:<18} {}", show(&t.text), per.join(" | "));
        }
    }
    println!();
    println!(
        "model: {:.1} bits for {} predicted tokens ({} bytes): {:.3} bits/byte",
        summary.total_bits, summary.predicted, summary.predicted_bytes, summary.bits_per_byte
    );
    if let (Some(z), Some(t), Some(bpb)) = (
        summary.zstd_bytes,
        summary.text_bytes,
        summary.zstd_bits_per_byte,
    ) {
        println!(
            "zstd -19: {} bits for the whole text ({t} bytes): {bpb:.3} bits/byte   (prediction is compression: lower is better)",
            z * 8
        );
    }
    if let Some(lens) = &trace.output.logit_lens {
        let tok = model.tokenizer.as_ref();
        println!("\nlogit lens (top-1 per layer; rows: layer 0 = embeddings):");
        for (l, layer) in lens.iter().enumerate() {
            let cells: Vec<String> = layer
                .iter()
                .map(|p| {
                    p.first()
                        .map(|p| {
                            format!(
                                "{} {:.2}",
                                show(&tok.map(|t| t.token_text(p.id)).unwrap_or_default()),
                                p.p
                            )
                        })
                        .unwrap_or_default()
                })
                .collect();
            println!("{l:>3}  {}", cells.join("  "));
        }
    }
    if let Some(norms) = trace.residual_norms() {
        println!("\nresidual stream L2 norms (rows: layer 0 = embeddings):");
        for (l, row) in norms.iter().enumerate() {
            let cells: Vec<String> = row.iter().map(|n| format!("{n:.2}")).collect();
            println!("{l:>3}  {}", cells.join(" "));
        }
    }
    if a.attention {
        eprintln!("prism: attention maps are included with --json");
    }
    Ok(())
}

pub fn embed(a: EmbedArgs) -> anyhow::Result<()> {
    let model = load_model(&a.model.model)?;
    let (ids, _text) = read_input(&a.input, &model, false)?;
    backend::check_ids(&model, &ids)?;
    let (backend, notes) = backend::create(&model, a.backend.backend)?;
    for n in &notes {
        eprintln!("prism: {n}");
    }
    let trace = Trace::run(&model, backend.as_ref(), &ids, Capture::default(), 1)?;
    let embedding = trace.mean_pooled_embedding();
    let pooling = if model.spec.causal {
        "decoder: mean of the final hidden states (after the final norm) over all tokens, L2-normalized; a causal LM has no trained sentence embedding"
    } else {
        "encoder: mean of the last hidden states over all tokens (including [CLS] and [SEP]), L2-normalized (sentence-transformers)"
    };
    if a.json {
        let v = json!({
            "model": model.info.path,
            "backend": trace.backend,
            "tokens": trace.tokens,
            "pooling": pooling,
            "dim": embedding.len(),
            "embedding": embedding,
        });
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    println!(
        "{} tokens, {}-dim embedding ({pooling})",
        trace.tokens.len(),
        embedding.len()
    );
    let head: Vec<String> = embedding
        .iter()
        .take(8)
        .map(|x| format!("{x:.5}"))
        .collect();
    println!("first 8: [{}]", head.join(", "));
    Ok(())
}
