//! The steer view: a steering vector from two prompt lists (llama.cpp's cvector-generator
//! `--method mean`), from a concept axis between two words, or from a llama.cpp control-vector
//! file; a layer and a strength slider; the plain and the steered generation side by side, the
//! steered one regenerated live as the slider moves. Vectors load from and save to llama.cpp
//! control-vector GGUF files. Opens with a happy/sad vector made from five prompt pairs.

use std::any::Any;
use std::time::{Duration, Instant};

use egui::{RichText, Ui};
use prism_analysis::backend::Capture;
use prism_analysis::figure::{build, Figure};
use prism_analysis::generate::Sampling;
use prism_analysis::steering::{
    axis_direction, mean_difference, pad_token, prompt_file_ids, ControlVector,
};
use prism_analysis::trace::Trace;
use serde::{Deserialize, Serialize};

use super::generate::{GenEvent, Stream, ENTROPY_SCALE};
use super::{Cx, View};

pub const POSITIVE: &str = "I feel so happy and joyful today.
What a wonderful, delightful day!
She smiled with pure happiness.
Everything is great and I love my life.
We laughed and celebrated all night long.";
pub const NEGATIVE: &str = "I feel so sad and miserable today.
What a terrible, depressing day!
She cried with deep sadness.
Everything is awful and I hate my life.
We wept and mourned all night long.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recipe {
    Prompts,
    Axis,
}

#[derive(Serialize, Deserialize)]
#[serde(default)]
pub struct SteerView {
    pub recipe: Recipe,
    pub positive: String,
    pub negative: String,
    pub from: String,
    pub to: String,
    pub template: String,
    /// The direction applied (llama.cpp's direction.N, added after block N).
    pub layer: usize,
    /// The strength as a multiple of the typical residual norm at that layer.
    pub strength: f32,
    pub prompt: String,
    pub max_tokens: usize,
    #[serde(skip)]
    pub vector: Option<Made>,
    #[serde(skip)]
    pub plain: Stream,
    #[serde(skip)]
    pub steered: Stream,
    #[serde(skip)]
    pub error: Option<String>,
    #[serde(skip)]
    dirty_at: Option<Instant>,
    #[serde(skip)]
    started: bool,
    #[serde(skip)]
    pub status: String,
}

impl Default for SteerView {
    fn default() -> Self {
        SteerView {
            recipe: Recipe::Prompts,
            positive: POSITIVE.into(),
            negative: NEGATIVE.into(),
            from: "sad".into(),
            to: "happy".into(),
            template: "I feel {} today.".into(),
            layer: 0,
            strength: -0.4,
            prompt: "Yesterday I went to the park and".into(),
            max_tokens: 30,
            vector: None,
            plain: Stream::default(),
            steered: Stream::default(),
            error: None,
            dirty_at: None,
            started: false,
            status: String::new(),
        }
    }
}

/// A steering vector and the typical residual norm after each block (to scale the slider).
pub struct Made {
    pub vector: ControlVector,
    pub label: String,
    /// Median per-token norm of resid_post@L over the generation prompt, by layer L.
    pub norms: Vec<f32>,
}

enum Msg {
    Made(Result<Made, String>),
}

/// Median norm of resid_post@L per layer for `ids` (position 0 left out: many models park a
/// huge activation there).
fn typical_norms(t: &crate::gui::worker::TaskCx<'_>, ids: &[u32]) -> Result<Vec<f32>, String> {
    let capture = Capture {
        residual: true,
        ..Capture::default()
    };
    let tr = Trace::run(t.model, t.backend, ids, capture, 1).map_err(|e| e.to_string())?;
    let h = t.model.spec.hidden;
    let res = tr.output.residual.unwrap_or_default();
    Ok(res
        .iter()
        .skip(1)
        .map(|m| {
            let mut n: Vec<f32> = m
                .chunks(h)
                .skip(usize::from(ids.len() > 1))
                .map(|r| r.iter().map(|x| x * x).sum::<f32>().sqrt())
                .collect();
            n.sort_by(f32::total_cmp);
            n.get(n.len() / 2).copied().unwrap_or(1.0)
        })
        .collect())
}

impl SteerView {
    /// Scale applied: strength × the typical norm at the layer.
    pub fn scale(&self) -> f32 {
        let norm = self
            .vector
            .as_ref()
            .and_then(|m| m.norms.get(self.layer).copied())
            .unwrap_or(1.0);
        self.strength * norm
    }

    fn make(&mut self, cx: &Cx<'_>) {
        self.error = None;
        self.status = "making the vector…".into();
        let (recipe, pos, neg, from, to, template, prompt) = (
            self.recipe,
            self.positive.clone(),
            self.negative.clone(),
            self.from.clone(),
            self.to.clone(),
            self.template.clone(),
            self.prompt.clone(),
        );
        let layer = self.layer;
        cx.worker.task("steer", move |t| {
            let made = (|| {
                let model = t.model;
                let n = model.spec.n_layers;
                let (vector, label) = match recipe {
                    Recipe::Prompts => {
                        let p = prompt_file_ids(model, &pos).map_err(|e| e.to_string())?;
                        let q = prompt_file_ids(model, &neg).map_err(|e| e.to_string())?;
                        let pad = pad_token(model).map_err(|e| e.to_string())?;
                        let v = mean_difference(model, t.backend, &p, &q, pad)
                            .map_err(|e| e.to_string())?;
                        (v, format!("mean difference of {} prompt pairs", p.len()))
                    }
                    Recipe::Axis => {
                        let l = layer.clamp(1, n.saturating_sub(1).max(1));
                        let v = axis_direction(model, t.backend, &from, &to, l, &template)
                            .map_err(|e| e.to_string())?;
                        (v, format!("axis {from} → {to} at layer {l}"))
                    }
                };
                let ids = model
                    .tokenizer
                    .as_ref()
                    .ok_or("this model has no tokenizer")?
                    .encode(&prompt, false)
                    .map_err(|e| e.to_string())?;
                let norms = typical_norms(t, &ids)?;
                Ok(Made {
                    vector,
                    label,
                    norms,
                })
            })();
            t.send(Msg::Made(made));
        });
    }

    /// Loads a llama.cpp control-vector file for the open model.
    pub fn load_file(&mut self, cx: &Cx<'_>, path: &std::path::Path) {
        let Some(l) = cx.loaded else { return };
        match ControlVector::load(path, l.model.spec.hidden) {
            Ok(v) => {
                let label = format!("{}", path.display());
                let norms = self
                    .vector
                    .as_ref()
                    .map(|m| m.norms.clone())
                    .unwrap_or_else(|| vec![1.0; l.model.spec.n_layers]);
                self.set_vector(
                    Made {
                        vector: v,
                        label,
                        norms,
                    },
                    l.model.spec.n_layers,
                );
                self.regenerate(cx, true);
            }
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    /// Saves the vector (every direction) as a llama.cpp control-vector file.
    pub fn save_file(&mut self, path: &std::path::Path) {
        match &self.vector {
            Some(m) => match m.vector.save(path) {
                Ok(()) => self.status = format!("saved {}", path.display()),
                Err(e) => self.error = Some(e.to_string()),
            },
            None => self.error = Some("no vector to save yet".into()),
        }
    }

    fn set_vector(&mut self, made: Made, n_layers: usize) {
        let dirs: Vec<usize> = made.vector.directions.keys().copied().collect();
        if !dirs.contains(&self.layer) {
            // The middle of the model, or the nearest direction the vector has.
            let want = n_layers / 2;
            self.layer = dirs
                .iter()
                .copied()
                .min_by_key(|d| d.abs_diff(want))
                .unwrap_or(want);
        }
        self.status = made.label.clone();
        self.vector = Some(made);
    }

    /// Runs the steered generation again (and the plain one too when `both`).
    fn regenerate(&mut self, cx: &Cx<'_>, both: bool) {
        let Some(m) = &self.vector else { return };
        let n = cx.loaded.map(|l| l.model.spec.n_layers).unwrap_or(0);
        let mut list = m
            .vector
            .interventions(self.scale(), Some((self.layer, self.layer)), n);
        let base = cx.interventions.active();
        list.splice(0..0, base.iter().cloned());
        let sampling = Sampling::default();
        if both {
            self.plain.start(
                cx.worker,
                "steer",
                0,
                self.prompt.clone(),
                false,
                self.max_tokens,
                sampling,
                base,
            );
        }
        self.steered.start(
            cx.worker,
            "steer",
            1,
            self.prompt.clone(),
            false,
            self.max_tokens,
            sampling,
            list,
        );
    }

    fn intervention_label(&self) -> String {
        format!(
            "steer: {} (direction.{} × {:.1})",
            self.vector.as_ref().map(|m| m.label.as_str()).unwrap_or(""),
            self.layer,
            self.scale()
        )
    }
}

impl View for SteerView {
    fn id(&self) -> &'static str {
        "steer"
    }

    fn label(&self) -> &'static str {
        "Steer"
    }

    fn ui(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        let Some(loaded) = super::causal_model(ui, cx, "Steering") else {
            return;
        };
        let n_layers = loaded.model.spec.n_layers;
        if n_layers < 2 {
            ui.label("Steering needs a model of at least two layers.");
            return;
        }
        if !self.started {
            self.started = true;
            self.layer = n_layers / 2;
            self.make(cx);
        }
        ui.horizontal(|ui| {
            ui.label("vector from");
            ui.radio_value(&mut self.recipe, Recipe::Prompts, "two prompt lists");
            ui.radio_value(&mut self.recipe, Recipe::Axis, "a concept axis");
        });
        match self.recipe {
            Recipe::Prompts => {
                ui.columns(2, |c| {
                    c[0].label("positive prompts (one per line)");
                    c[0].add(
                        egui::TextEdit::multiline(&mut self.positive)
                            .desired_rows(4)
                            .desired_width(f32::INFINITY),
                    );
                    c[1].label("negative prompts (as many)");
                    c[1].add(
                        egui::TextEdit::multiline(&mut self.negative)
                            .desired_rows(4)
                            .desired_width(f32::INFINITY),
                    );
                });
            }
            Recipe::Axis => {
                ui.horizontal(|ui| {
                    let l = ui.label("from");
                    ui.add(egui::TextEdit::singleline(&mut self.from).desired_width(90.0))
                        .labelled_by(l.id);
                    let l = ui.label("to");
                    ui.add(egui::TextEdit::singleline(&mut self.to).desired_width(90.0))
                        .labelled_by(l.id);
                    let l = ui.label("inside");
                    ui.add(egui::TextEdit::singleline(&mut self.template).desired_width(200.0))
                        .labelled_by(l.id);
                    ui.label(format!("at layer {}", self.layer.clamp(1, n_layers - 1)));
                });
            }
        }
        ui.horizontal(|ui| {
            if ui.button("Make the vector").clicked() {
                self.make(cx);
            }
            if ui.button("Load a control vector…").clicked() {
                if let Some(p) = rfd::FileDialog::new()
                    .add_filter("gguf", &["gguf"])
                    .pick_file()
                {
                    self.load_file(cx, &p);
                }
            }
            if ui
                .add_enabled(
                    self.vector.is_some(),
                    egui::Button::new("Save as a control vector…"),
                )
                .on_hover_text("a llama.cpp control-vector GGUF: llama-cli --control-vector FILE")
                .clicked()
            {
                if let Some(p) = rfd::FileDialog::new()
                    .set_file_name("prism-steering.gguf")
                    .add_filter("gguf", &["gguf"])
                    .save_file()
                {
                    self.save_file(&p);
                }
            }
            ui.label(RichText::new(&self.status).weak());
        });
        if let Some(e) = &self.error {
            super::error_line(ui, e);
        }
        let Some(m) = &self.vector else {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("making the vector…");
            });
            return;
        };
        let dirs: Vec<usize> = m.vector.directions.keys().copied().collect();
        let mut changed = false;
        ui.horizontal(|ui| {
            let l = ui.label("layer");
            let before = self.layer;
            egui::ComboBox::from_id_salt("steer-layer")
                .selected_text(format!(
                    "direction.{} (after block {})",
                    self.layer, self.layer
                ))
                .show_ui(ui, |ui| {
                    for d in &dirs {
                        ui.selectable_value(&mut self.layer, *d, format!("direction.{d}"));
                    }
                })
                .response
                .labelled_by(l.id);
            changed |= before != self.layer;
            let l = ui.label("strength");
            let r = ui
                .add(
                    egui::Slider::new(&mut self.strength, -2.0..=2.0)
                        .step_by(0.01)
                        .text("× typical norm"),
                )
                .labelled_by(l.id);
            changed |= r.changed();
            ui.label(format!("= scale {:.1}", self.scale()));
        });
        ui.horizontal(|ui| {
            let l = ui.label("prompt");
            let r = ui
                .add(egui::TextEdit::singleline(&mut self.prompt).desired_width(360.0))
                .labelled_by(l.id);
            if r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                self.regenerate(cx, true);
            }
            let l = ui.label("tokens");
            ui.add(egui::DragValue::new(&mut self.max_tokens).range(1..=512))
                .labelled_by(l.id);
            if ui
                .button("apply everywhere")
                .on_hover_text(
                    "steer every view with this vector (text, attention, lens, generate)",
                )
                .clicked()
            {
                let list = self
                    .vector
                    .as_ref()
                    .map(|m| {
                        m.vector.interventions(
                            self.scale(),
                            Some((self.layer, self.layer)),
                            n_layers,
                        )
                    })
                    .unwrap_or_default();
                cx.interventions
                    .set("steer", self.intervention_label(), list);
            }
        });
        if changed {
            self.dirty_at = Some(Instant::now());
        }
        if let Some(t) = self.dirty_at {
            let wait = Duration::from_millis(250);
            if t.elapsed() >= wait {
                self.dirty_at = None;
                self.regenerate(cx, false);
            } else {
                ui.ctx().request_repaint_after(wait);
            }
        }
        super::strip::legend(ui, ENTROPY_SCALE, "entropy of each step", "bits");
        ui.separator();
        ui.columns(2, |c| {
            c[0].strong("plain");
            self.plain.show(&mut c[0], cx, "plain");
            c[1].strong(format!(
                "steered: direction.{} × {:.1}",
                self.layer,
                self.scale()
            ));
            self.steered.show(&mut c[1], cx, "steered");
        });
    }

    fn figure(&self, cx: &Cx<'_>) -> Option<Figure> {
        match &self.steered.result {
            Some(Ok(g)) => Some(build::generation_figure(
                g,
                &cx.model_name(),
                Some(&self.intervention_label()),
            )),
            _ => None,
        }
    }

    fn ready(&self, _cx: &Cx<'_>) -> bool {
        matches!(self.plain.result, Some(Ok(_))) && matches!(self.steered.result, Some(Ok(_)))
    }

    fn on_message(&mut self, msg: Box<dyn Any + Send>, cx: &mut Cx<'_>) {
        let msg = match msg.downcast::<GenEvent>() {
            Ok(ev) => {
                let s = if ev.lane == 0 {
                    &mut self.plain
                } else {
                    &mut self.steered
                };
                if ev.tag == s.tag {
                    s.apply(ev.kind);
                }
                return;
            }
            Err(other) => other,
        };
        if let Ok(m) = msg.downcast::<Msg>() {
            match *m {
                Msg::Made(Ok(made)) => {
                    let n = cx.loaded.map(|l| l.model.spec.n_layers).unwrap_or(0);
                    self.set_vector(made, n);
                    self.regenerate(cx, true);
                }
                Msg::Made(Err(e)) => {
                    self.status.clear();
                    self.error = Some(e);
                }
            }
        }
    }

    fn on_failed(&mut self, error: String, _cx: &mut Cx<'_>) {
        if error != "cancelled" {
            self.error = Some(error);
        }
    }

    fn on_model(&mut self, _cx: &mut Cx<'_>) {
        self.plain.stop();
        self.steered.stop();
        self.vector = None;
        self.error = None;
        self.started = false;
        self.status.clear();
    }

    crate::view_settings!();

    crate::view_any!();
}
