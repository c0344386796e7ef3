//! The patch view: activation patching from a clean and a corrupt prompt. The layer × position
//! (or layer × head) grid of effects fills in row by row as the worker computes it; clicking a
//! cell runs the corrupt prompt with that one site patched and shows what the model now predicts
//! and its surprisal strip. Opens with the Eiffel Tower / Colosseum example.

use std::any::Any;

use egui::{RichText, Ui};
use prism_analysis::backend::Capture;
use prism_analysis::figure::{build, Colormap, Figure};
use prism_analysis::intervene::{Intervention, Op, PositionSet, Site};
use prism_analysis::patching::{check_prompts, patch, single_token, source_values, PatchResult};
use prism_analysis::trace::Trace;
use serde::{Deserialize, Serialize};

use super::grid::Grid;
use super::gridrun::{start_or_stop, GridMsg, GridRun, GridSender};
use super::strip::{self, Scale};
use super::{show_token, Cx, View};
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

/// What a patching run works on, known once its prompts are tokenized.
pub struct Info {
    pub site: Site,
    pub clean_ids: Vec<u32>,
    pub corrupt_ids: Vec<u32>,
    pub cols: Vec<String>,
}

/// One patching run as it fills in.
pub type Run = GridRun<PatchResult, Info>;

/// The corrupt prompt run with one cell's site patched.
pub struct Detail {
    pub layer: usize,
    pub col: usize,
    pub trace: Option<Result<Trace, String>>,
}

/// The patched run of a clicked cell.
struct DetailMsg {
    tag: u64,
    layer: usize,
    col: usize,
    trace: Result<Trace, String>,
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
            r.stop();
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
            let grid = GridSender::<PatchResult, Info>::new(t, tag);
            let result = (|| {
                let tok = t
                    .model
                    .tokenizer
                    .as_ref()
                    .ok_or("this model has no tokenizer")?;
                let c = tok.encode(&clean, false).map_err(|e| e.to_string())?;
                let x = tok.encode(&corrupt, false).map_err(|e| e.to_string())?;
                check_prompts(t.model, &c, &x).map_err(|e| e.to_string())?;
                let a = single_token(t.model, "answer", &answer).map_err(|e| e.to_string())?;
                let w = single_token(t.model, "wrong answer", &wrong).map_err(|e| e.to_string())?;
                let cols = build::patching_columns(t.model, &c, &x, site);
                grid.started(
                    t.model.spec.n_layers,
                    Info {
                        site,
                        clean_ids: c.clone(),
                        corrupt_ids: x.clone(),
                        cols,
                    },
                );
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
                        grid.row(done, row);
                    },
                    t.cancel,
                )
                .map_err(|e| e.to_string())
            })();
            grid.done(result, "patching");
        });
        self.run = Some(Run::new(tag, cancel));
    }

    fn open_cell(&mut self, cx: &Cx<'_>, layer: usize, col: usize) {
        let Some(run) = &self.run else {
            return;
        };
        let Some(info) = &run.info else {
            return;
        };
        // A cell that does not apply (a linear-attention layer's heads) has nothing to open.
        let na = |r: &PatchResult| {
            r.effect
                .get(layer)
                .and_then(|row| row.get(col))
                .is_some_and(|v| v.is_nan())
        };
        if run.result.as_ref().is_some_and(na)
            || run
                .rows
                .get(layer)
                .and_then(|r| r.get(col))
                .is_some_and(|v| v.is_nan())
        {
            return;
        }
        let (tag, site, clean, corrupt) = (
            run.tag,
            info.site,
            info.clean_ids.clone(),
            info.corrupt_ids.clone(),
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
            t.send(DetailMsg {
                tag,
                layer,
                col,
                trace,
            });
        });
    }

    fn detail_ui(&self, ui: &mut Ui, run: &Run, info: &Info) {
        let Some(d) = &self.detail else {
            ui.label(RichText::new("Click a cell to see what the patched run predicts.").weak());
            return;
        };
        let what = match info.site {
            Site::Head => format!("head {}.{}", d.layer, d.col),
            s => format!(
                "{}@{} at position {} ({})",
                s.name(),
                d.layer,
                d.col,
                info.cols.get(d.col).cloned().unwrap_or_default()
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
                        max: prism_analysis::figure::build::MAX_BITS,
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
        if super::causal_model(ui, cx, "Activation patching").is_none() {
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
            if start_or_stop(ui, self.run.as_ref(), "Run patching") {
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
                self.site,
                run.rows.len(),
                run.n_layers.max(1)
            )),
        };
        let Some(info) = &run.info else {
            ui.spinner();
            return;
        };
        let bound = run.bound(1.0);
        let selected: Vec<(usize, usize)> = self.detail.iter().map(|d| (d.layer, d.col)).collect();
        let mut clicked = None;
        ui.columns(2, |cols| {
            cols[0].set_min_height(ui_height(run.n_layers));
            clicked = Grid {
                name: "patching grid",
                rows: &run.rows,
                n_rows: run.n_layers,
                col_labels: &info.cols,
                bound,
                sequential: false,
                colormap: Colormap::Diverging,
                selected: &selected,
                format: &|v| format!("{v:.2}"),
            }
            .show(&mut cols[0]);
            self.detail_ui(&mut cols[1], run, info);
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
            run.info.as_ref()?.cols.clone(),
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
        let Some(run) = self.run.as_mut() else {
            return;
        };
        let msg = match msg.downcast::<GridMsg<PatchResult, Info>>() {
            Ok(m) => return run.apply(*m, |r| r.effect.clone()),
            Err(other) => other,
        };
        if let Ok(m) = msg.downcast::<DetailMsg>() {
            let d = self
                .detail
                .as_mut()
                .filter(|d| m.tag == run.tag && (d.layer, d.col) == (m.layer, m.col));
            if let Some(d) = d {
                d.trace = Some(m.trace);
            }
        }
    }

    fn on_failed(&mut self, error: String, _cx: &mut Cx<'_>) {
        if let Some(r) = self.run.as_mut() {
            r.fail(error);
        }
    }

    fn on_model(&mut self, _cx: &mut Cx<'_>) {
        if let Some(r) = &self.run {
            r.stop();
        }
        self.run = None;
        self.detail = None;
        self.started = false;
    }

    crate::view_settings!();

    crate::view_any!();
}

/// Room for a grid of `rows` layers.
fn ui_height(rows: usize) -> f32 {
    70.0 + rows as f32 * 14.0
}
