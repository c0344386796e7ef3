//! The patch view: activation patching from a clean and a corrupt prompt. The layer × position
//! (or layer × head) grid of effects fills in row by row as the worker computes it; clicking a
//! cell runs the corrupt prompt with that one site patched and shows what the model now predicts
//! and its surprisal strip. Opens with the Eiffel Tower / Colosseum example.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use egui::{RichText, Ui};
use prism_analysis::backend::Capture;
use prism_analysis::figure::{build, Colormap, Figure};
use prism_analysis::intervene::{source_values, Intervention, Op, PositionSet, Site};
use prism_analysis::patching::{patch, PatchResult};
use prism_analysis::trace::Trace;
use serde::{Deserialize, Serialize};

use super::grid::Grid;
use super::strip::{self, Scale};
use super::{restore_into, show_token, Cx, View};
use crate::gui::worker::TaskCx;

pub const SITES: [&str; 4] = ["resid_pre", "attn_out", "mlp_out", "head"];

#[derive(Serialize, Deserialize)]
#[serde(default)]
pub struct PatchView {
    pub clean: String,
    pub corrupt: String,
    pub answer: String,
    pub wrong: String,
    pub site: String,
    #[serde(skip)]
    pub run: Option<Run>,
    #[serde(skip)]
    pub detail: Option<Detail>,
    #[serde(skip)]
    started: bool,
    #[serde(skip)]
    tag: u64,
}

impl Default for PatchView {
    fn default() -> Self {
        PatchView {
            clean: "The Eiffel Tower is in the city of".into(),
            corrupt: "The Colosseum is in the city of".into(),
            answer: " Paris".into(),
            wrong: " Rome".into(),
            site: "resid_pre".into(),
            run: None,
            detail: None,
            started: false,
            tag: 0,
        }
    }
}

/// One patching run as it fills in.
pub struct Run {
    pub tag: u64,
    pub site: Site,
    pub clean_ids: Vec<u32>,
    pub corrupt_ids: Vec<u32>,
    pub cols: Vec<String>,
    pub n_layers: usize,
    pub rows: Vec<Vec<f64>>,
    pub result: Option<PatchResult>,
    pub error: Option<String>,
    cancel: Arc<AtomicBool>,
}

/// The corrupt prompt run with one cell's site patched.
pub struct Detail {
    pub layer: usize,
    pub col: usize,
    pub trace: Option<Result<Trace, String>>,
}

// Messages are a few per second; boxing the result would only add noise.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Started {
        tag: u64,
        clean: Vec<u32>,
        corrupt: Vec<u32>,
        cols: Vec<String>,
        n_layers: usize,
    },
    Row {
        tag: u64,
        layer: usize,
        row: Vec<f64>,
    },
    Done {
        tag: u64,
        result: Result<PatchResult, String>,
    },
    Detail {
        tag: u64,
        layer: usize,
        col: usize,
        trace: Result<Trace, String>,
    },
}

/// A text that must be exactly one token, or a message that shows its tokens.
pub fn single_token(t: &TaskCx<'_>, what: &str, text: &str) -> Result<u32, String> {
    let tok = t
        .model
        .tokenizer
        .as_ref()
        .ok_or("this model has no tokenizer")?;
    let ids = tok.encode_plain(text).map_err(|e| e.to_string())?;
    match ids.as_slice() {
        [one] => Ok(*one),
        _ => Err(format!(
            "the {what} {text:?} is {} tokens ({}), not one; pick a text that is a single token, with its leading space",
            ids.len(),
            ids.iter()
                .map(|&i| format!("{:?}", show_token(&tok.token_text(i))))
                .collect::<Vec<_>>()
                .join(" ")
        )),
    }
}

/// The intervention that patches one cell: the site at one position (or one head at every
/// position) takes its value from the clean run.
fn cell_intervention(
    t: &TaskCx<'_>,
    site: Site,
    clean: &[u32],
    layer: usize,
    col: usize,
) -> Result<Intervention, String> {
    let probe = match site {
        Site::Head => Intervention::new(Site::Head, layer, Op::Patch).head(col),
        s => Intervention::new(s, layer, Op::Patch),
    };
    let values = source_values(t.model, t.backend, clean, &probe).map_err(|e| e.to_string())?;
    Ok(match site {
        Site::Head => Intervention {
            positions: PositionSet::All,
            values: Some(values),
            ..probe
        },
        s => Intervention::new(s, layer, Op::Set)
            .at(vec![col])
            .with_vector(values[col].clone(), None),
    })
}

impl PatchView {
    pub fn start(&mut self, cx: &Cx<'_>) {
        if let Some(r) = &self.run {
            r.cancel.store(true, Ordering::SeqCst);
        }
        let Some(site) = Site::from_name(&self.site) else {
            return;
        };
        self.tag += 1;
        let tag = self.tag;
        let (clean, corrupt, answer, wrong) = (
            self.clean.clone(),
            self.corrupt.clone(),
            self.answer.clone(),
            self.wrong.clone(),
        );
        self.detail = None;
        let cancel = cx.worker.task("patch", move |t| {
            let result = (|| {
                let tok = t
                    .model
                    .tokenizer
                    .as_ref()
                    .ok_or("this model has no tokenizer")?;
                let c = tok.encode(&clean, false).map_err(|e| e.to_string())?;
                let x = tok.encode(&corrupt, false).map_err(|e| e.to_string())?;
                let show = |ids: &[u32]| {
                    ids.iter()
                        .map(|&i| show_token(&tok.token_text(i)))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                if c.len() != x.len() {
                    return Err(format!(
                        "the clean prompt is {} tokens ({}) and the corrupt one {} ({}): patching needs prompts of equal length",
                        c.len(),
                        show(&c),
                        x.len(),
                        show(&x)
                    ));
                }
                let a = single_token(t, "answer", &answer)?;
                let w = single_token(t, "wrong answer", &wrong)?;
                let cols = build::patching_columns(t.model, &c, &x, site);
                t.send(Msg::Started {
                    tag,
                    clean: c.clone(),
                    corrupt: x.clone(),
                    cols,
                    n_layers: t.model.spec.n_layers,
                });
                patch(
                    t.model,
                    t.backend,
                    &c,
                    &x,
                    a,
                    w,
                    site,
                    &mut |done, total, row| {
                        t.progress(format!("patching {}: layer {done} of {total}", site.name()));
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
                Ok(_) => "patching done",
                Err(_) => "patching stopped",
            });
            t.send(Msg::Done { tag, result });
        });
        self.run = Some(Run {
            tag,
            site,
            clean_ids: Vec::new(),
            corrupt_ids: Vec::new(),
            cols: Vec::new(),
            n_layers: 0,
            rows: Vec::new(),
            result: None,
            error: None,
            cancel,
        });
    }

    fn open_cell(&mut self, cx: &Cx<'_>, layer: usize, col: usize) {
        let Some(run) = &self.run else {
            return;
        };
        let (tag, site, clean, corrupt) = (
            run.tag,
            run.site,
            run.clean_ids.clone(),
            run.corrupt_ids.clone(),
        );
        self.detail = Some(Detail {
            layer,
            col,
            trace: None,
        });
        cx.worker.task("patch", move |t| {
            let trace = cell_intervention(t, site, &clean, layer, col).and_then(|iv| {
                Trace::run_with(t.model, t.backend, &corrupt, Capture::default(), 10, &[iv])
                    .map_err(|e| e.to_string())
            });
            t.send(Msg::Detail {
                tag,
                layer,
                col,
                trace,
            });
        });
    }

    fn detail_ui(&self, ui: &mut Ui, run: &Run) {
        let Some(d) = &self.detail else {
            ui.label(RichText::new("Click a cell to see what the patched run predicts.").weak());
            return;
        };
        let what = match run.site {
            Site::Head => format!("head {}.{}", d.layer, d.col),
            s => format!(
                "{}@{} at position {} ({})",
                s.name(),
                d.layer,
                d.col,
                run.cols.get(d.col).cloned().unwrap_or_default()
            ),
        };
        ui.strong(format!(
            "The corrupt prompt with {what} patched from the clean run"
        ));
        match &d.trace {
            None => {
                ui.spinner();
            }
            Some(Err(e)) => super::error_line(ui, e),
            Some(Ok(trace)) => {
                if let Some(r) = &run.result {
                    let m = r.patched_metric[d.layer][d.col];
                    let e = r.effect[d.layer][d.col];
                    ui.label(format!("metric {m:.3} · effect {e:.3}"));
                }
                let last = trace.top.last().cloned().unwrap_or_default();
                ui.label("it now predicts:");
                egui::Grid::new("patched-top").striped(true).show(ui, |ui| {
                    for p in last.iter().take(5) {
                        ui.label(format!("{:?}", show_token(&p.text)));
                        ui.label(format!("{:.1}%", p.p * 100.0));
                        ui.end_row();
                    }
                });
                ui.label("surprisal of the corrupt prompt under the patch:");
                let toks: Vec<(String, Option<f64>)> = trace
                    .tokens
                    .iter()
                    .zip(&trace.surprisal_bits)
                    .map(|(t, s)| (t.text.clone(), *s))
                    .collect();
                strip::tokens(
                    ui,
                    &toks,
                    Scale::Sequential {
                        map: Colormap::Viridis,
                        max: super::text::MAX_BITS,
                    },
                    &|ui, i| {
                        ui.label(match trace.surprisal_bits[i] {
                            Some(b) => format!("{b:.2} bits"),
                            None => "first token: not predicted".into(),
                        });
                    },
                );
            }
        }
    }
}

impl View for PatchView {
    fn id(&self) -> &'static str {
        "patch"
    }

    fn label(&self) -> &'static str {
        "Patch"
    }

    fn ui(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        let Some(loaded) = cx.loaded else {
            super::no_model(ui);
            return;
        };
        if !loaded.model.spec.causal {
            ui.label("Activation patching needs a causal language model.");
            return;
        }
        if !self.started {
            self.started = true;
            self.start(cx);
        }
        for (label, text, other, value, hint) in [
            (
                "clean",
                &mut self.clean,
                "answer",
                &mut self.answer,
                "one token, with its leading space",
            ),
            (
                "corrupt",
                &mut self.corrupt,
                "wrong",
                &mut self.wrong,
                "the corrupt prompt's answer: one token",
            ),
        ] {
            ui.horizontal(|ui| {
                let l = ui.add_sized([52.0, 18.0], egui::Label::new(label));
                ui.add(egui::TextEdit::singleline(text).desired_width(380.0))
                    .labelled_by(l.id);
                let l = ui.add_sized([52.0, 18.0], egui::Label::new(other));
                ui.add(egui::TextEdit::singleline(value).desired_width(100.0))
                    .labelled_by(l.id)
                    .on_hover_text(hint);
            });
        }
        ui.horizontal(|ui| {
            ui.label("site");
            for s in SITES {
                ui.radio_value(&mut self.site, s.to_string(), s);
            }
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
            } else if ui.button("Run patching").clicked() {
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
                "metric m = logit[answer] − logit[wrong]: clean {:.3}, corrupt {:.3}; effect = (m_patched − m_corrupt) / (m_clean − m_corrupt), 1 = the clean answer fully restored",
                r.clean_metric, r.corrupt_metric
            )),
            None => ui.label(format!(
                "patching {}: {} of {} layers…",
                run.site.name(),
                run.rows.len(),
                run.n_layers.max(1)
            )),
        };
        if run.n_layers == 0 {
            ui.spinner();
            return;
        }
        let bound = run
            .rows
            .iter()
            .flatten()
            .fold(1.0f64, |m, v| m.max(v.abs()));
        let selected: Vec<(usize, usize)> = self.detail.iter().map(|d| (d.layer, d.col)).collect();
        let mut clicked = None;
        ui.columns(2, |cols| {
            cols[0].set_min_height(ui_height(run.n_layers));
            clicked = Grid {
                name: "patching grid",
                rows: &run.rows,
                n_rows: run.n_layers,
                col_labels: &run.cols,
                bound,
                colormap: Colormap::Diverging,
                selected: &selected,
                format: &|v| format!("{v:.2}"),
            }
            .show(&mut cols[0]);
            self.detail_ui(&mut cols[1], run);
        });
        if let Some(c) = clicked {
            self.open_cell(cx, c.row, c.col);
        }
    }

    fn figure(&self, cx: &Cx<'_>) -> Option<Figure> {
        let run = self.run.as_ref()?;
        let r = run.result.as_ref()?;
        Some(build::patching_figure(
            r,
            run.cols.clone(),
            &format!("Activation patching ({})", r.site.name()),
            &cx.model_name(),
        ))
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
        let Some(run) = self.run.as_mut() else {
            return;
        };
        match *msg {
            Msg::Started {
                tag,
                clean,
                corrupt,
                cols,
                n_layers,
            } if tag == run.tag => {
                run.clean_ids = clean;
                run.corrupt_ids = corrupt;
                run.cols = cols;
                run.n_layers = n_layers;
            }
            Msg::Row { tag, layer, row } if tag == run.tag && run.rows.len() == layer => {
                run.rows.push(row);
            }
            Msg::Done { tag, result } if tag == run.tag => match result {
                Ok(r) => {
                    run.rows = r.effect.clone();
                    run.result = Some(r);
                }
                Err(e) => run.error = Some(e),
            },
            Msg::Detail {
                tag,
                layer,
                col,
                trace,
            } if tag == run.tag => {
                if let Some(d) = self
                    .detail
                    .as_mut()
                    .filter(|d| (d.layer, d.col) == (layer, col))
                {
                    d.trace = Some(trace);
                }
            }
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

/// Room for a grid of `rows` layers.
fn ui_height(rows: usize) -> f32 {
    70.0 + rows as f32 * 14.0
}
