//! The ablate view: the layer × head grid of Δ total bits when each head is zero- or
//! mean-ablated, filled in layer by layer. Clicking a head shows the per-token Δ surprisal in the
//! text view's manner; Shift-click adds heads, which are then ablated together. The selection
//! can be applied everywhere (an active intervention).

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use egui::{RichText, Ui};
use prism_analysis::ablation::{ablate, head_ablation, AblationMode, AblationResult};
use prism_analysis::backend::Capture;
use prism_analysis::figure::{build, Colormap, Figure};
use prism_analysis::trace::Trace;
use serde::{Deserialize, Serialize};

use super::grid::Grid;
use super::strip::{self, Scale};
use super::{restore_into, Cx, View};

pub const EXAMPLE: &str =
    "Alice went to the market to buy apples, but the market was closed, so she went back home.";

#[derive(Serialize, Deserialize)]
#[serde(default)]
pub struct AblateView {
    pub text: String,
    pub mean: bool,
    #[serde(skip)]
    pub run: Option<Run>,
    /// Selected heads (layer, head), ablated together in the detail.
    #[serde(skip)]
    pub selected: Vec<(usize, usize)>,
    #[serde(skip)]
    pub detail: Option<Detail>,
    #[serde(skip)]
    started: bool,
    #[serde(skip)]
    tag: u64,
}

impl Default for AblateView {
    fn default() -> Self {
        AblateView {
            text: EXAMPLE.into(),
            mean: false,
            run: None,
            selected: Vec::new(),
            detail: None,
            started: false,
            tag: 0,
        }
    }
}

pub struct Run {
    pub tag: u64,
    pub mode: AblationMode,
    pub ids: Vec<u32>,
    pub n_layers: usize,
    pub n_heads: usize,
    pub rows: Vec<Vec<f64>>,
    pub result: Option<AblationResult>,
    pub error: Option<String>,
    cancel: Arc<AtomicBool>,
}

/// The text with the selected heads ablated together, against the plain run.
pub struct Detail {
    pub heads: Vec<(usize, usize)>,
    /// (plain, ablated) runs.
    pub traces: Option<Result<(Trace, Trace), String>>,
}

impl Detail {
    /// Per token: ablated minus plain surprisal (bits).
    pub fn delta(&self) -> Option<Vec<Option<f64>>> {
        let Some(Ok((base, abl))) = &self.traces else {
            return None;
        };
        Some(
            base.surprisal_bits
                .iter()
                .zip(&abl.surprisal_bits)
                .map(|(b, a)| Some(a.as_ref()? - b.as_ref()?))
                .collect(),
        )
    }
}

// Messages are a few per second; boxing the result would only add noise.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Started {
        tag: u64,
        ids: Vec<u32>,
        n_layers: usize,
        n_heads: usize,
    },
    Row {
        tag: u64,
        layer: usize,
        row: Vec<f64>,
    },
    Done {
        tag: u64,
        result: Result<AblationResult, String>,
    },
    Detail {
        heads: Vec<(usize, usize)>,
        traces: Result<(Trace, Trace), String>,
    },
}

impl AblateView {
    fn mode(&self) -> AblationMode {
        if self.mean {
            AblationMode::Mean
        } else {
            AblationMode::Zero
        }
    }

    pub fn start(&mut self, cx: &Cx<'_>) {
        if let Some(r) = &self.run {
            r.cancel.store(true, Ordering::SeqCst);
        }
        self.tag += 1;
        let (tag, text, mode) = (self.tag, self.text.clone(), self.mode());
        self.detail = None;
        self.selected.clear();
        let cancel = cx.worker.task("ablate", move |t| {
            let result = (|| {
                let tok = t
                    .model
                    .tokenizer
                    .as_ref()
                    .ok_or("this model has no tokenizer")?;
                let ids = tok.encode(&text, false).map_err(|e| e.to_string())?;
                let s = &t.model.spec;
                t.send(Msg::Started {
                    tag,
                    ids: ids.clone(),
                    n_layers: s.n_layers,
                    n_heads: s.n_heads,
                });
                ablate(
                    t.model,
                    t.backend,
                    &ids,
                    mode,
                    &mut |done, total, row| {
                        t.progress(format!("ablating the heads of layer {done} of {total}"));
                        t.send(Msg::Row {
                            tag,
                            layer: done - 1,
                            row: row.to_vec(),
                        });
                    },
                    t.cancel,
                )
                .map_err(|e| e.to_string())
            })();
            t.progress(match &result {
                Ok(_) => "ablation done",
                Err(_) => "ablation stopped",
            });
            t.send(Msg::Done { tag, result });
        });
        self.run = Some(Run {
            tag,
            mode,
            ids: Vec::new(),
            n_layers: 0,
            n_heads: 0,
            rows: Vec::new(),
            result: None,
            error: None,
            cancel,
        });
    }

    fn open_detail(&mut self, cx: &Cx<'_>) {
        let Some(run) = &self.run else {
            return;
        };
        if self.selected.is_empty() {
            self.detail = None;
            return;
        }
        let (ids, mode, heads) = (run.ids.clone(), run.mode, self.selected.clone());
        self.detail = Some(Detail {
            heads: heads.clone(),
            traces: None,
        });
        cx.worker.task("ablate", move |t| {
            let list: Vec<_> = heads
                .iter()
                .map(|&(l, h)| head_ablation(l, h, mode))
                .collect();
            let traces = Trace::run(t.model, t.backend, &ids, Capture::default(), 5)
                .and_then(|base| {
                    Trace::run_with(t.model, t.backend, &ids, Capture::default(), 5, &list)
                        .map(|abl| (base, abl))
                })
                .map_err(|e| e.to_string());
            t.send(Msg::Detail { heads, traces });
        });
    }

    fn heads_label(&self) -> String {
        let names: Vec<String> = self
            .selected
            .iter()
            .map(|(l, h)| format!("{l}.{h}"))
            .collect();
        format!(
            "{}-ablate head{} {}",
            if self.mean { "mean" } else { "zero" },
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        )
    }

    fn detail_ui(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        let Some(d) = &self.detail else {
            ui.label(
                RichText::new("Click a head to see which tokens it helps predict; Shift-click to ablate several together.")
                    .weak(),
            );
            return;
        };
        ui.strong(self.heads_label());
        match (&d.traces, d.delta()) {
            (None, _) => {
                ui.spinner();
            }
            (Some(Err(e)), _) => super::error_line(ui, e),
            (Some(Ok((base, abl))), Some(delta)) => {
                ui.label(format!(
                    "total {:.2} bits instead of {:.2}: Δ {:+.2} bits",
                    abl.total_bits(),
                    base.total_bits(),
                    abl.total_bits() - base.total_bits()
                ));
                let bound = delta.iter().flatten().fold(1.0f64, |m, v| m.max(v.abs()));
                let scale = Scale::Diverging { bound };
                scale.legend(ui, "Δ surprisal", "bits");
                let toks: Vec<(String, Option<f64>)> = abl
                    .tokens
                    .iter()
                    .zip(&delta)
                    .map(|(t, v)| (t.text.clone(), *v))
                    .collect();
                strip::tokens(ui, &toks, scale, &|ui, i| match (
                    base.surprisal_bits[i],
                    abl.surprisal_bits[i],
                ) {
                    (Some(b), Some(a)) => {
                        ui.label(format!("{b:.2} → {a:.2} bits (Δ {:+.2})", a - b));
                    }
                    _ => {
                        ui.label("first token: not predicted");
                    }
                });
                if ui
                    .button("apply everywhere")
                    .on_hover_text(
                        "ablate these heads in every view (text, attention, lens, generate)",
                    )
                    .clicked()
                {
                    let list = self
                        .selected
                        .iter()
                        .map(|&(l, h)| head_ablation(l, h, self.mode()))
                        .collect();
                    cx.interventions.set("ablate", self.heads_label(), list);
                }
            }
            _ => {}
        }
    }
}

impl View for AblateView {
    fn id(&self) -> &'static str {
        "ablate"
    }

    fn label(&self) -> &'static str {
        "Ablate"
    }

    fn ui(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        let Some(loaded) = cx.loaded else {
            super::no_model(ui);
            return;
        };
        if !loaded.model.spec.causal {
            ui.label("Head ablation measures surprisal: it needs a causal language model.");
            return;
        }
        if !self.started {
            self.started = true;
            self.start(cx);
        }
        ui.horizontal(|ui| {
            let l = ui.label("text");
            ui.add(
                egui::TextEdit::singleline(&mut self.text)
                    .desired_width(ui.available_width() - 280.0),
            )
            .labelled_by(l.id);
            ui.radio_value(&mut self.mean, false, "zero");
            ui.radio_value(&mut self.mean, true, "mean");
            let running = self
                .run
                .as_ref()
                .is_some_and(|r| r.result.is_none() && r.error.is_none());
            if running {
                if ui.button("Stop").clicked() {
                    if let Some(r) = &self.run {
                        r.cancel.store(true, Ordering::SeqCst);
                    }
                }
            } else if ui.button("Ablate every head").clicked() {
                self.start(cx);
            }
        });
        let Some(run) = &self.run else {
            return;
        };
        if let Some(e) = &run.error {
            super::error_line(ui, e);
            return;
        }
        match &run.result {
            Some(r) => ui.label(format!(
                "baseline {:.2} bits; Δ total bits when each head is {}-ablated (red: the text got harder to predict)",
                r.baseline_bits,
                if run.mode == AblationMode::Mean { "mean" } else { "zero" }
            )),
            None => ui.label(format!(
                "ablating: {} of {} layers…",
                run.rows.len(),
                run.n_layers.max(1)
            )),
        };
        if run.n_layers == 0 {
            ui.spinner();
            return;
        }
        let cols: Vec<String> = (0..run.n_heads).map(|h| format!("head {h}")).collect();
        let bound = run
            .rows
            .iter()
            .flatten()
            .fold(0.5f64, |m, v| m.max(v.abs()));
        let selected = self.selected.clone();
        let mut clicked = None;
        let n_layers = run.n_layers;
        let rows = run.rows.clone();
        ui.columns(2, |c| {
            c[0].set_min_height(70.0 + n_layers as f32 * 14.0);
            clicked = Grid {
                name: "ablation grid",
                rows: &rows,
                n_rows: n_layers,
                col_labels: &cols,
                bound,
                colormap: Colormap::Diverging,
                selected: &selected,
                format: &|v| format!("{v:+.2}"),
            }
            .show(&mut c[0]);
            self.detail_ui(&mut c[1], cx);
        });
        if let Some(c) = clicked {
            let head = (c.row, c.col);
            if c.shift {
                match self.selected.iter().position(|&x| x == head) {
                    Some(i) => {
                        self.selected.remove(i);
                    }
                    None => self.selected.push(head),
                }
            } else {
                self.selected = vec![head];
            }
            self.open_detail(cx);
        }
    }

    fn figure(&self, cx: &Cx<'_>) -> Option<Figure> {
        let run = self.run.as_ref()?;
        let r = run.result.as_ref()?;
        let mode = if run.mode == AblationMode::Mean {
            "mean"
        } else {
            "zero"
        };
        Some(build::ablation_figure(r, mode, &cx.model_name()))
    }

    fn ready(&self, _cx: &Cx<'_>) -> bool {
        self.run
            .as_ref()
            .is_some_and(|r| r.result.is_some() || r.error.is_some())
    }

    fn on_message(&mut self, msg: Box<dyn Any + Send>, _cx: &mut Cx<'_>) {
        let Ok(msg) = msg.downcast::<Msg>() else {
            return;
        };
        if let Msg::Detail { heads, traces } = *msg {
            if let Some(d) = self.detail.as_mut().filter(|d| d.heads == heads) {
                d.traces = Some(traces);
            }
            return;
        }
        let Some(run) = self.run.as_mut() else {
            return;
        };
        match *msg {
            Msg::Started {
                tag,
                ids,
                n_layers,
                n_heads,
            } if tag == run.tag => {
                run.ids = ids;
                run.n_layers = n_layers;
                run.n_heads = n_heads;
            }
            Msg::Row { tag, layer, row } if tag == run.tag && run.rows.len() == layer => {
                run.rows.push(row);
            }
            Msg::Done { tag, result } if tag == run.tag => match result {
                Ok(r) => {
                    run.rows = r.delta_bits.clone();
                    run.result = Some(r);
                }
                Err(e) => run.error = Some(e),
            },
            _ => {}
        }
    }

    fn on_failed(&mut self, error: String, _cx: &mut Cx<'_>) {
        if let Some(r) = self.run.as_mut().filter(|r| r.result.is_none()) {
            r.error = Some(error);
        }
    }

    fn on_model(&mut self, _cx: &mut Cx<'_>) {
        if let Some(r) = &self.run {
            r.cancel.store(true, Ordering::SeqCst);
        }
        self.run = None;
        self.detail = None;
        self.selected.clear();
        self.started = false;
    }

    fn save(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn restore(&mut self, v: &serde_json::Value) {
        restore_into(self, v)
    }

    crate::view_any!();
}
