//! The ablate view: the layer × head grid of Δ total bits when each head is zero- or
//! mean-ablated, filled in layer by layer. Clicking a head shows the per-token Δ surprisal in the
//! text view's manner; Shift-click adds heads, which are then ablated together. The selection
//! can be applied everywhere (an active intervention).

use std::any::Any;

use egui::{RichText, Ui};
use prism_analysis::ablation::{ablate, head_ablation, AblationMode, AblationResult};
use prism_analysis::backend::Capture;
use prism_analysis::figure::{build, Colormap, Figure};
use prism_analysis::trace::Trace;
use serde::{Deserialize, Serialize};

use super::grid::Grid;
use super::gridrun::{start_or_stop, GridMsg, GridRun, GridSender};
use super::strip;
use super::{Cx, View};

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

/// What an ablation run works on, known once its text is tokenized.
pub struct Info {
    pub mode: AblationMode,
    pub ids: Vec<u32>,
    pub n_heads: usize,
}

/// One ablation run as it fills in.
pub type Run = GridRun<AblationResult, Info>;

/// The text with the selected heads ablated together, against the plain run.
pub struct Detail {
    pub heads: Vec<(usize, usize)>,
    /// (plain, ablated) runs.
    pub traces: Option<Result<(Trace, Trace), String>>,
}

/// The selected heads ablated together.
struct DetailMsg {
    heads: Vec<(usize, usize)>,
    traces: Result<(Trace, Trace), String>,
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
            r.stop();
        }
        self.tag += 1;
        let (tag, text, mode) = (self.tag, self.text.clone(), self.mode());
        self.detail = None;
        self.selected.clear();
        let cancel = cx.worker.task("ablate", move |t| {
            let grid = GridSender::<AblationResult, Info>::new(t, tag);
            let result = (|| {
                let tok = t
                    .model
                    .tokenizer
                    .as_ref()
                    .ok_or("this model has no tokenizer")?;
                let ids = tok.encode(&text, false).map_err(|e| e.to_string())?;
                let s = &t.model.spec;
                grid.started(
                    s.n_layers,
                    Info {
                        mode,
                        ids: ids.clone(),
                        n_heads: s.n_heads,
                    },
                );
                ablate(
                    t.model,
                    t.backend,
                    &ids,
                    mode,
                    &mut |done, total, row| {
                        t.progress(format!("ablating the heads of layer {done} of {total}"));
                        grid.row(done, row);
                    },
                    t.cancel,
                )
                .map_err(|e| e.to_string())
            })();
            grid.done(result, "ablation");
        });
        self.run = Some(Run::new(tag, cancel));
    }

    fn open_detail(&mut self, cx: &Cx<'_>) {
        let Some(run) = &self.run else {
            return;
        };
        if self.selected.is_empty() {
            self.detail = None;
            return;
        }
        let Some(info) = &run.info else {
            return;
        };
        let (ids, mode, heads) = (info.ids.clone(), info.mode, self.selected.clone());
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
            t.send(DetailMsg { heads, traces });
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
        match &d.traces {
            None => {
                ui.spinner();
            }
            Some(Err(e)) => super::error_line(ui, e),
            Some(Ok((base, abl))) => {
                strip::delta_run(ui, base, abl);
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
        if super::causal_model(ui, cx, "Head ablation (which measures surprisal)").is_none() {
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
            if start_or_stop(ui, self.run.as_ref(), "Ablate every head") {
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
        let Some(info) = &run.info else {
            ui.spinner();
            return;
        };
        match &run.result {
            Some(r) => ui.label(format!(
                "baseline {:.2} bits; Δ total bits when each head is {}-ablated (red: the text got harder to predict)",
                r.baseline_bits,
                if info.mode == AblationMode::Mean { "mean" } else { "zero" }
            )),
            None => ui.label(format!(
                "ablating: {} of {} layers…",
                run.rows.len(),
                run.n_layers.max(1)
            )),
        };
        let cols: Vec<String> = (0..info.n_heads).map(|h| format!("head {h}")).collect();
        let bound = run.bound(0.5);
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
                sequential: false,
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
        let mode = if run.info.as_ref()?.mode == AblationMode::Mean {
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
        let msg = match msg.downcast::<GridMsg<AblationResult, Info>>() {
            Ok(m) => {
                if let Some(run) = self.run.as_mut() {
                    run.apply(*m, |r| r.delta_bits.clone());
                }
                return;
            }
            Err(other) => other,
        };
        if let Ok(m) = msg.downcast::<DetailMsg>() {
            if let Some(d) = self.detail.as_mut().filter(|d| d.heads == m.heads) {
                d.traces = Some(m.traces);
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
        self.selected.clear();
        self.started = false;
    }

    crate::view_settings!();

    crate::view_any!();
}
