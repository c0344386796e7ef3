//! Every figure Prism draws from a run or an experiment, built here so that the app's export and
//! the command line's `--figure` write the same picture for the same input.

use super::{strip_tokens, Colormap, Figure, FigureKind, Rgb, ScatterPoint, Series, StripScale};
use crate::ablation::AblationResult;
use crate::generate::Generation;
use crate::intervene::{Intervention, Site};
use crate::model::Model;
use crate::patching::PatchResult;
use crate::trace::Trace;

pub use crate::tokenizer::show_token;

/// Notes naming the interventions a run had, so that an exported figure says what it shows.
fn intervention_notes(list: &[Intervention]) -> Vec<String> {
    list.iter()
        .map(|iv| format!("intervention: {}", iv.describe()))
        .collect()
}

/// The notes of a run's figure: its interventions, and a run in the GPU's fast mode said as such.
fn run_notes(trace: &Trace) -> Vec<String> {
    let mut notes = intervention_notes(&trace.interventions);
    if trace.backend.contains("fast: f16 weights") {
        notes.push(
            "computed in the GPU's fast mode (weights rounded to f16): within 0.02 bits of the exact result"
                .into(),
        );
    }
    notes
}

/// Surprisal per token.
/// The text view's token strip: every token on the color of its surprisal or rank.
pub struct TextStrip {
    pub tokens: Vec<super::StripToken>,
    pub value_name: String,
    pub scale: StripScale,
    pub unit: &'static str,
}

pub fn text_strip(trace: &Trace, colors: TextColors) -> TextStrip {
    let (values, value_name, scale, unit): (Vec<Option<f64>>, _, _, _) = match colors {
        TextColors::Surprisal => (
            trace.surprisal_bits.clone(),
            "surprisal (bits)",
            StripScale::Sequential {
                map: Colormap::Viridis,
                max: MAX_BITS,
            },
            "bits",
        ),
        TextColors::Rank => (
            trace.rank.iter().map(|r| r.map(|r| r as f64)).collect(),
            "rank of the actual token",
            StripScale::RankBuckets,
            "",
        ),
    };
    TextStrip {
        tokens: strip_tokens(
            trace.tokens.iter().map(|t| t.text.clone()).zip(values),
            scale,
        ),
        value_name: value_name.into(),
        scale,
        unit,
    }
}

/// The text view as a figure: its token strip, with the run's summary.
pub fn text_figure(trace: &Trace, model: &str, colors: TextColors) -> Figure {
    let strip = text_strip(trace, colors);
    let mut notes = vec![format!(
        "model: {model}; {}",
        crate::trace::RunSummary::of(trace, None).describe()
    )];
    notes.push("the first token is not predicted (gray)".into());
    notes.extend(run_notes(trace));
    Figure {
        title: match colors {
            TextColors::Surprisal => "Surprisal per token".into(),
            TextColors::Rank => "Rank of each token (GLTR buckets)".into(),
        },
        x_label: String::new(),
        y_label: String::new(),
        kind: FigureKind::Tokens {
            legend: strip.scale.legend(strip.unit),
            tokens: strip.tokens,
            value_name: strip.value_name,
            scale: strip.scale,
        },
        notes,
    }
}

/// A batch folder's documents: each one's bits per byte under the model against zstd's on the
/// same text (points under the diagonal: the model compresses better).
pub fn corpus_figure(s: &crate::batch::Summary) -> Figure {
    let color = Colormap::Viridis.at(0.35);
    Figure {
        title: "Bits per byte per document: the model against zstd".into(),
        x_label: "zstd -19 (bits per byte of the text)".into(),
        y_label: "model (bits per byte of the predicted tokens)".into(),
        kind: FigureKind::Scatter {
            points: s
                .docs
                .iter()
                .map(|d| ScatterPoint {
                    x: d.zstd_bits_per_byte,
                    y: d.bits_per_byte,
                    label: d.doc.to_string(),
                    color,
                })
                .collect(),
        },
        notes: vec![
            format!(
                "model: {}; corpus: {}; {} of {} documents",
                s.manifest.model,
                s.manifest.corpus,
                s.docs.len(),
                s.manifest.documents
            ),
            format!(
                "total: {:.3} bits per byte (zstd {:.3}); context {} tokens",
                s.bits_per_byte, s.zstd_bits_per_byte, s.manifest.settings.context
            ),
        ],
    }
}

/// One document of a batch folder as the text figure: its tokens (`texts`, from the model's
/// tokenizer) on the color of the surprisal the shard holds.
pub fn document_figure(
    doc: &crate::batch::DocRow,
    texts: Vec<String>,
    rows: &[crate::batch::TokenRow],
    model: &str,
) -> Figure {
    let scale = StripScale::Sequential {
        map: Colormap::Viridis,
        max: MAX_BITS,
    };
    let tokens = strip_tokens(
        texts.into_iter().zip(rows.iter().map(|r| r.surprisal_bits)),
        scale,
    );
    let mut notes = vec![format!(
        "model: {model}; document {}: {} tokens, {:.1} bits, {:.3} bits per byte (zstd {:.3})",
        doc.doc, doc.tokens, doc.bits, doc.bits_per_byte, doc.zstd_bits_per_byte
    )];
    if doc.truncated {
        notes.push("truncated to the run's context".into());
    }
    notes.push("the first token is not predicted (gray)".into());
    Figure {
        title: format!("Surprisal per token, document {}", doc.doc),
        x_label: String::new(),
        y_label: String::new(),
        kind: FigureKind::Tokens {
            legend: scale.legend("bits"),
            tokens,
            value_name: "surprisal (bits)".into(),
            scale,
        },
        notes,
    }
}

/// Surprisal colors run from 0 bits to this many and more.
pub const MAX_BITS: f64 = 16.0;

/// What the text figure colors its tokens by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextColors {
    #[default]
    Surprisal,
    /// GLTR's rank buckets.
    Rank,
}

/// One head's attention map, in `colormap` (the view's own, so that the export is what it shows).
pub fn attention_figure(
    trace: &Trace,
    layer: usize,
    head: usize,
    colormap: Colormap,
    model: &str,
) -> Option<Figure> {
    let maps = trace.attention()?;
    let layer = layer.min(maps.layers - 1);
    let seq = maps.seq;
    let labels: Vec<String> = trace.tokens.iter().map(|t| show_token(&t.text)).collect();
    if !maps.captured(layer) {
        return mixing_figure(trace, &maps, layer, head, &labels, model);
    }
    let head = head.min(maps.heads - 1);
    let m = maps.head(layer, head);
    let values: Vec<Vec<f64>> = (0..seq)
        .map(|q| (0..seq).map(|k| m[q * seq + k] as f64).collect())
        .collect();
    let mut notes = vec![format!("model: {model}")];
    notes.extend(run_notes(trace));
    Some(Figure {
        title: format!("Attention, layer {layer} head {head}"),
        x_label: "key".into(),
        y_label: "query".into(),
        kind: FigureKind::Heatmap {
            row_labels: labels.clone(),
            col_labels: labels,
            values,
            range: (0.0, 1.0),
            colormap,
        },
        notes,
    })
}

/// A linear-attention layer's token mixing (the gated delta rule unrolled): row t holds the
/// weight of each earlier token's value in token t's output before the gated norm. Unlike
/// softmax attention the weights are signed and need not sum to one: a diverging map, symmetric
/// about zero. None when the layer's mixing was not captured (a KV-cached run).
fn mixing_figure(
    trace: &Trace,
    maps: &crate::backend::AttentionMaps<'_>,
    layer: usize,
    head: usize,
    labels: &[String],
    model: &str,
) -> Option<Figure> {
    let head = head.min(maps.mixing_heads(layer).checked_sub(1)?);
    let m = maps.mixing(layer, head)?;
    let seq = maps.seq;
    let values: Vec<Vec<f64>> = (0..seq)
        .map(|q| (0..seq).map(|k| m[q * seq + k] as f64).collect())
        .collect();
    let max = m.iter().fold(0f32, |a, &x| a.max(x.abs())).max(1e-12) as f64;
    let mut notes = vec![
        format!("model: {model}"),
        "Gated DeltaNet (linear attention): no softmax map; this is the gated delta rule unrolled, the weight of each token's value (column) in each token's output (row), before the gated norm; signed, rows need not sum to 1".into(),
    ];
    notes.extend(run_notes(trace));
    Some(Figure {
        title: format!("Linear-attention mixing, layer {layer} value head {head}"),
        x_label: "source token".into(),
        y_label: "token".into(),
        kind: FigureKind::Heatmap {
            row_labels: labels.to_vec(),
            col_labels: labels.to_vec(),
            values,
            range: (-max, max),
            colormap: Colormap::Diverging,
        },
        notes,
    })
}

/// The logit lens: top-1 probability per layer (rows, last layer on top) and position.
pub fn lens_figure(
    trace: &Trace,
    model: &str,
    token_text: &dyn Fn(u32) -> String,
) -> Option<Figure> {
    let lens = trace.output.logit_lens.as_ref()?;
    let rows: Vec<Option<&[Vec<crate::backend::IdProb>]>> =
        lens.iter().map(|l| Some(l.as_slice())).collect();
    lens_rows_figure(trace, &rows, model, token_text)
}

/// The logit lens from rows computed one layer at a time (`None`: not computed, drawn empty).
pub fn lens_rows_figure(
    trace: &Trace,
    lens: &[Option<&[Vec<crate::backend::IdProb>]>],
    model: &str,
    token_text: &dyn Fn(u32) -> String,
) -> Option<Figure> {
    if lens.iter().all(|l| l.is_none()) {
        return None;
    }
    let layers = lens.len();
    let rows: Vec<String> = (0..layers).rev().map(|l| format!("layer {l}")).collect();
    let cols: Vec<String> = trace.tokens.iter().map(|t| show_token(&t.text)).collect();
    let values: Vec<Vec<f64>> = (0..layers)
        .rev()
        .map(|l| match lens[l] {
            Some(row) => row
                .iter()
                .map(|p| p.first().map(|x| x.p as f64).unwrap_or(f64::NAN))
                .collect(),
            None => vec![f64::NAN; cols.len()],
        })
        .collect();
    let top: Vec<String> = (0..layers)
        .rev()
        .flat_map(|l| {
            lens[l]
                .unwrap_or(&[])
                .iter()
                .map(|p| p.first().map(|x| token_text(x.id)).unwrap_or_default())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut notes = vec![
        format!("model: {model}"),
        format!(
            "top tokens (row by row): {}",
            top.iter().take(40).cloned().collect::<Vec<_>>().join(" ")
        ),
    ];
    notes.extend(run_notes(trace));
    Some(Figure {
        title: "Logit lens: top-1 probability by layer and position".into(),
        x_label: "position".into(),
        y_label: "layer".into(),
        kind: FigureKind::Heatmap {
            row_labels: rows,
            col_labels: cols,
            values,
            range: (0.0, 1.0),
            colormap: Colormap::Viridis,
        },
        notes,
    })
}

/// An activation-patching grid: layers as rows (last on top), positions or heads as columns.
pub fn patching_figure(
    r: &PatchResult,
    col_labels: Vec<String>,
    title: &str,
    model: &str,
) -> Figure {
    let n = r.effect.len();
    let values: Vec<Vec<f64>> = (0..n).rev().map(|l| r.effect[l].clone()).collect();
    let lo = values.iter().flatten().cloned().fold(0.0f64, f64::min);
    let hi = values.iter().flatten().cloned().fold(1.0f64, f64::max);
    let bound = lo.abs().max(hi.abs()).max(1e-9);
    let na: Vec<String> = (0..n)
        .filter(|&l| r.effect[l].iter().all(|v| v.is_nan()))
        .map(|l| l.to_string())
        .collect();
    Figure {
        title: title.to_string(),
        x_label: if r.site == crate::intervene::Site::Head {
            "head".into()
        } else {
            "position".into()
        },
        y_label: "layer".into(),
        kind: FigureKind::Heatmap {
            row_labels: (0..n).rev().map(|l| format!("layer {l}")).collect(),
            col_labels,
            values,
            range: (-bound, bound),
            colormap: Colormap::Diverging,
        },
        notes: vec![
            format!("model: {model}"),
            format!(
                "site {}; effect = (m_patched - m_corrupt) / (m_clean - m_corrupt), m = logit[answer] - logit[wrong]; m_clean {:.3}, m_corrupt {:.3}",
                r.site.name(),
                r.clean_metric,
                r.corrupt_metric
            ),
        ]
        .into_iter()
        .chain((!na.is_empty()).then(|| {
            format!(
                "layers {} are linear attention (no heads): not applicable, drawn gray",
                na.join(", ")
            )
        }))
        .collect(),
    }
}

/// Column labels of a patching grid: head numbers, or per position the corrupt token, written
/// `clean→corrupt` where the two prompts differ.
pub fn patching_columns(model: &Model, clean: &[u32], corrupt: &[u32], site: Site) -> Vec<String> {
    if site == Site::Head {
        return (0..model.spec.n_heads).map(|h| h.to_string()).collect();
    }
    let text = |i: u32| match &model.tokenizer {
        Some(t) => show_token(&t.token_text(i)),
        None => i.to_string(),
    };
    clean
        .iter()
        .zip(corrupt)
        .map(|(&c, &x)| {
            if c == x {
                text(x)
            } else {
                format!("{}→{}", text(c), text(x))
            }
        })
        .collect()
}

/// The per-head Δ total bits of an ablation.
pub fn ablation_figure(r: &AblationResult, mode: &str, model: &str) -> Figure {
    let n = r.delta_bits.len();
    let cols = r.delta_bits.first().map(|row| row.len()).unwrap_or(0);
    let values: Vec<Vec<f64>> = (0..n).rev().map(|l| r.delta_bits[l].clone()).collect();
    let bound = values
        .iter()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-9);
    let unit = r.unit.name();
    let (title, what) = match r.unit {
        crate::ablation::AblationUnit::Heads => ("Head", "the head ablated"),
        crate::ablation::AblationUnit::Experts => (
            "Expert",
            "the expert's routing weight ablated (the others kept)",
        ),
    };
    Figure {
        title: format!("{title} ablation ({mode}): change in total surprisal"),
        x_label: unit.into(),
        y_label: "layer".into(),
        kind: FigureKind::Heatmap {
            row_labels: (0..n)
                .rev()
                .map(|i| format!("layer {}", r.layers.get(i).copied().unwrap_or(i)))
                .collect(),
            col_labels: (0..cols).map(|h| h.to_string()).collect(),
            values,
            range: (-bound, bound),
            colormap: Colormap::Diverging,
        },
        notes: vec![
            format!("model: {model}"),
            format!(
                "Δ bits = total surprisal with {what} minus without; baseline {:.2} bits",
                r.baseline_bits
            ),
        ],
    }
}

/// Expert usage: per mixture-of-experts layer (rows, last on top), the fraction of the run's
/// tokens routed to each expert; none when the run did not capture the routing.
pub fn expert_usage_figure(trace: &Trace, model: &str) -> Option<Figure> {
    let (layers, rows) = trace.expert_usage()?;
    let experts = rows.first().map_or(0, Vec::len);
    if layers.is_empty() {
        return None;
    }
    Some(Figure {
        title: "Expert usage: share of the tokens routed to each expert".into(),
        x_label: "expert".into(),
        y_label: "layer".into(),
        kind: FigureKind::Heatmap {
            row_labels: layers.iter().rev().map(|l| format!("layer {l}")).collect(),
            col_labels: (0..experts).map(|e| e.to_string()).collect(),
            values: rows.into_iter().rev().collect(),
            range: (0.0, 1.0),
            colormap: Colormap::Viridis,
        },
        notes: vec![
            format!("model: {model}"),
            format!(
                "{} tokens; a cell is the fraction of them whose top-k experts include it",
                trace.tokens.len()
            ),
        ],
    })
}

/// A generation: the entropy of each step's distribution and the chosen token's surprisal.
/// `steer` names the steering vector when there is one (the steer view and `generate
/// --control-vector` title the figure with it).
pub fn generation_figure(g: &Generation, model: &str, steer: Option<&str>) -> Figure {
    let entropy: Vec<(f64, f64)> = g
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (i as f64, t.entropy_bits))
        .collect();
    let surprisal: Vec<(f64, f64)> = g
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (i as f64, -(t.p.max(f32::MIN_POSITIVE) as f64).log2()))
        .collect();
    let mut notes = vec![
        format!("model: {model}"),
        format!("{} tokens, {}", g.tokens.len(), g.stop_reason.describe()),
    ];
    notes.extend(intervention_notes(&g.interventions));
    Figure {
        title: match steer {
            Some(label) => format!("Steered generation: {label}"),
            None => "Generation: how unsure the model was at each step".into(),
        },
        x_label: "generated token".into(),
        y_label: "bits".into(),
        kind: FigureKind::Lines {
            series: vec![
                Series {
                    name: "entropy of the distribution".into(),
                    points: entropy,
                    color: Rgb(214, 39, 40),
                },
                Series {
                    name: "surprisal of the chosen token".into(),
                    points: surprisal,
                    color: Rgb(31, 119, 180),
                },
            ],
            band: None,
            x_ticks: Some(g.tokens.iter().map(|t| show_token(&t.text)).collect()),
        },
        notes,
    }
}

/// The Features view's strip: every token of the run on the color of `values` (one SAE
/// feature's activation, or the number of active features), `0..max`.
pub fn feature_strip(trace: &Trace, values: &[f64]) -> (Vec<super::StripToken>, StripScale) {
    let max = values.iter().fold(0f64, |m, &v| m.max(v));
    let scale = StripScale::Sequential {
        map: Colormap::Viridis,
        max: if max > 0.0 { max } else { 1.0 },
    };
    let tokens = strip_tokens(
        trace
            .tokens
            .iter()
            .map(|t| t.text.clone())
            .zip(values.iter().map(|&v| Some(v))),
        scale,
    );
    (tokens, scale)
}

/// An SAE's features over a run as a figure: with a card, that feature's activation per token
/// (its logit effect and neighbours in the notes); without, the number of active features (L0).
pub fn features_figure(
    trace: &Trace,
    sae: &crate::sae::Sae,
    run: &crate::sae::FeatureRun,
    card: Option<&crate::sae::card::FeatureCard>,
    model: &str,
    text: &dyn Fn(u32) -> String,
) -> Figure {
    let rc = &run.reconstruction;
    let mut notes = vec![
        format!(
            "model: {model}; SAE: {} ({} {}@{}, {} features)",
            sae.path.display(),
            sae.architecture,
            sae.site.name(),
            sae.layer,
            sae.d_sae
        ),
        format!(
            "reconstruction: MSE {:.4}, explained variance {:.4}, {:+.2} bits spliced in",
            rc.mse,
            rc.explained_variance,
            rc.spliced_bits - rc.clean_bits
        ),
    ];
    let (title, value_name, values): (String, String, Vec<f64>) = match card {
        Some(c) => {
            let list = |v: &[(u32, f32)]| {
                v.iter()
                    .map(|&(id, x)| format!("{} {x:+.2}", show_token(&text(id))))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            notes.push(format!(
                "active on {} of {} tokens, max {:.3}",
                c.active,
                c.acts.len(),
                c.max_act
            ));
            notes.push(format!("raises: {}", list(&c.logits_up)));
            notes.push(format!("lowers: {}", list(&c.logits_down)));
            notes.push(format!(
                "nearest by decoder cosine: {}",
                c.neighbours
                    .iter()
                    .map(|(i, x)| format!("{i} ({x:.2})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            (
                format!("Feature {} activation per token", c.feature),
                format!("feature {} activation", c.feature),
                c.acts.iter().map(|&a| a as f64).collect(),
            )
        }
        None => (
            "Active SAE features per token (L0)".into(),
            "active features".into(),
            run.l0.iter().map(|&n| n as f64).collect(),
        ),
    };
    notes.extend(run_notes(trace));
    let (tokens, scale) = feature_strip(trace, &values);
    Figure {
        title,
        x_label: String::new(),
        y_label: String::new(),
        kind: FigureKind::Tokens {
            legend: scale.legend(""),
            tokens,
            value_name,
            scale,
        },
        notes,
    }
}
