//! `prism info`: what a checkpoint is.

use clap::Args;
use prism_analysis::arch::Positions;
use prism_analysis::backend::{self, BackendChoice};

use super::{load_model, BackendArg, ModelArg};

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub backend: BackendArg,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn human_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// The CPU backend as `info` names it: f32 activations, the kernels' instruction set, threads.
fn cpu_label() -> String {
    format!(
        "cpu (f32, {} kernels, {} threads)",
        prism_analysis::simd::isa().name(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    )
}

pub fn info(a: InfoArgs) -> anyhow::Result<()> {
    let model = load_model(&a.model.model)?;
    let s = &model.spec;
    let i = &model.info;
    // The backend is created only when asked about: `--backend gpu` uploads the weights and
    // reports the adapter and how many bytes the GPU holds.
    let (backend, adapter) = match a.backend.backend {
        BackendChoice::Cpu => (cpu_label(), None),
        // Probing is enough for `auto`: no weights are uploaded just to print a card.
        BackendChoice::Auto => match backend::gpu::context::GpuContext::shared(false) {
            Ok(ctx) => (
                format!("auto: gpu ({}, {})", ctx.adapter.name, ctx.adapter.backend),
                Some(ctx.adapter.clone()),
            ),
            Err(e) => (format!("auto: {}, since {e}", cpu_label()), None),
        },
        choice => {
            let (b, notes) = backend::create(&model, choice)?;
            for n in notes {
                eprintln!("prism: {n}");
            }
            (b.describe(), b.adapter())
        }
    };
    if a.json {
        let v = serde_json::json!({
            "path": i.path,
            "format": i.format,
            "architecture": s.architecture,
            "family": s.family,
            "n_params": i.n_params,
            "layers": s.n_layers,
            "heads": s.n_heads,
            "kv_heads": s.n_kv_heads,
            "head_dim": s.head_dim,
            "hidden": s.hidden,
            "intermediate": s.intermediate,
            "vocab": s.vocab,
            "context_length": s.context_length,
            "dtypes": i.dtypes,
            "file_size": i.file_size,
            "tokenizer": i.tokenizer,
            "spec": s,
            "backend": backend,
            "adapter": adapter,
            "warnings": model.warnings,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let positions = match s.positions {
        Positions::Learned => "learned".to_string(),
        Positions::LearnedWithTokenType => "learned + token type".to_string(),
        Positions::Rope => match &s.rope {
            Some(r) => {
                let mut text = format!("RoPE (theta {}, {:?} pairs", r.theta, r.pairing);
                if r.dims < s.head_dim {
                    text += &format!(", first {} of {} dims", r.dims, s.head_dim);
                }
                if let Some(local) = r.theta_local {
                    text += &format!(", local layers theta {local}");
                }
                if r.scaling != "none" {
                    text += &format!(", scaling {}", r.scaling);
                }
                let nope: Vec<String> = s
                    .layers
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.rope == prism_analysis::arch::LayerRope::None)
                    .map(|(i, _)| i.to_string())
                    .collect();
                if !nope.is_empty() {
                    text += &format!(", none on layers {}", nope.join(" "));
                }
                text + ")"
            }
            None => "RoPE".to_string(),
        },
    };
    let windows: Vec<String> = s
        .layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.window.map(|w| format!("{i}:{w}")))
        .collect();
    let dtypes: Vec<String> = i.dtypes.iter().map(|(k, v)| format!("{k} x{v}")).collect();
    let rows = [
        ("file", format!("{} ({:?})", i.path.display(), i.format)),
        (
            "architecture",
            format!("{} ({:?} family)", s.architecture, s.family),
        ),
        (
            "parameters",
            format!("{} ({})", human_count(i.n_params), i.n_params),
        ),
        ("layers", s.n_layers.to_string()),
        (
            "heads",
            format!(
                "{} query, {} key/value, head dim {}",
                s.n_heads, s.n_kv_heads, s.head_dim
            ),
        ),
        (
            "hidden size",
            format!("{} (MLP {}, {:?})", s.hidden, s.intermediate, s.activation),
        ),
        ("vocabulary", s.vocab.to_string()),
        ("context length", s.context_length.to_string()),
        ("positions", positions),
        (
            "norm",
            format!(
                "{:?}, eps {:e}, {}{}",
                s.norm,
                s.norm_eps,
                s.block.describe(),
                match s.qk_norm {
                    prism_analysis::arch::QkNorm::None => "",
                    prism_analysis::arch::QkNorm::PerHead => ", q/k norms per head",
                    prism_analysis::arch::QkNorm::Whole => ", q/k norms over the whole projection",
                }
            ),
        ),
        (
            "attention",
            if s.causal {
                let mut text = format!("causal, scale {:.4}", s.attn_scale);
                if !windows.is_empty() {
                    text += &format!(", sliding windows (layer:tokens) {}", windows.join(" "));
                }
                if let Some(c) = s.attn_softcap {
                    text += &format!(", scores soft-capped at {c}");
                }
                if let Some(c) = s.final_softcap {
                    text += &format!(", logits soft-capped at {c}");
                }
                text
            } else {
                "bidirectional".to_string()
            },
        ),
        (
            "output",
            if !s.causal {
                "none (encoder)".into()
            } else if s.tied_embeddings {
                "tied to the token embedding".to_string()
            } else {
                "separate matrix".to_string()
            },
        ),
        ("dtypes", dtypes.join(", ")),
        ("file size", human_bytes(i.file_size)),
        (
            "tokenizer",
            i.tokenizer.clone().unwrap_or_else(|| "none".into()),
        ),
        ("backend", backend),
    ];
    let mut rows = rows.to_vec();
    // Layers that differ from the model's heads, keys or MLP (Gemma 4).
    let mut layer_notes = Vec::new();
    for (l, k) in s.layers.iter().enumerate() {
        let mut parts = Vec::new();
        if let Some(h) = k.heads {
            parts.push(format!("head dim {}, {} key/value", h.head_dim, h.kv_heads));
        }
        match k.kv {
            prism_analysis::arch::KvSource::Own => {}
            prism_analysis::arch::KvSource::KeysAsValues => parts.push("keys as values".into()),
            prism_analysis::arch::KvSource::Shared(src) => {
                parts.push(format!("keys and values of layer {src}"))
            }
        }
        if let Some(w) = k.mlp_width {
            parts.push(format!("MLP {w}"));
        }
        if !parts.is_empty() {
            layer_notes.push(format!("{l}: {}", parts.join(", ")));
        }
    }
    if !layer_notes.is_empty() {
        rows.insert(5, ("layer shapes", layer_notes.join("; ")));
    }
    if !s.layer_scale.is_empty() {
        let v: Vec<String> = s.layer_scale.iter().map(|x| format!("{x:.3}")).collect();
        rows.insert(5, ("layer scales", v.join(" ")));
    }
    if let Some(p) = s.per_layer_input {
        rows.insert(
            5,
            (
                "per-layer input",
                format!("embeddings of width {p} per layer, gated into each layer's output"),
            ),
        );
    }
    if s.v_norm {
        rows.insert(
            5,
            ("values", "RMS-normalized per head, no weight".to_string()),
        );
    }
    if let Some(d) = s.delta_net {
        let full: Vec<String> = s
            .layers
            .iter()
            .enumerate()
            .filter(|(_, k)| k.mixer == prism_analysis::arch::Mixer::Attention)
            .map(|(i, _)| i.to_string())
            .collect();
        rows.insert(
            4,
            (
                "linear attn",
                format!(
                    "Gated DeltaNet on {} of {} layers ({} key heads of {}, {} value heads of {}, conv {} taps); full attention on layers {}{}",
                    s.n_layers - full.len(),
                    s.n_layers,
                    d.k_heads,
                    d.k_dim,
                    d.v_heads,
                    d.v_dim,
                    d.kernel,
                    if full.is_empty() { "none".to_string() } else { full.join(", ") },
                    if s.attn_gate { ", its output gated" } else { "" }
                ),
            ),
        );
    }
    if let Some(x) = s.experts {
        let moe: Vec<String> = s
            .layers
            .iter()
            .enumerate()
            .filter(|(_, k)| k.mlp == prism_analysis::arch::MlpKind::Experts)
            .map(|(i, _)| i.to_string())
            .collect();
        let dense = s.n_layers - moe.len();
        rows.insert(
            4,
            (
                "experts",
                format!(
                    "{} per layer, top {} per token{}, width {}{}; on layers {}{}",
                    x.count,
                    x.top_k,
                    if x.renormalize {
                        " (weights renormalized)"
                    } else {
                        ""
                    },
                    x.width,
                    x.shared.map_or(String::new(), |w| format!(
                        ", plus a shared expert of width {w} (gated by sigmoid)"
                    )) + if x.beside_dense {
                        ", beside the dense MLP (router, experts and both outputs with norms of their own; weights times per-expert scales)"
                    } else {
                        ""
                    },
                    if dense == 0 {
                        "all".to_string()
                    } else {
                        moe.join(",")
                    },
                    if dense > 0 {
                        format!(" ({dense} dense)")
                    } else {
                        String::new()
                    }
                ),
            ),
        );
    }
    if let Some(a) = &adapter {
        rows.push(("GPU features", a.features.join(", ")));
    }
    for (k, v) in rows {
        println!("{k:>15}  {v}");
    }
    Ok(())
}
