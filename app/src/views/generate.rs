//! The generate view: a prompt (with or without the chat template), tokens streaming in as they
//! are generated, each colored by the entropy of the distribution it came from (where the model
//! was unsure: where hallucinations start), a hover card with the ten most probable tokens, Stop,
//! and the sampling settings. The active interventions steer it. The steer view reuses the
//! streaming and the drawing.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use egui::{RichText, Ui};
use prism_analysis::figure::{build, Colormap, Figure};
use prism_analysis::generate::{generate, GenSettings, GenToken, Generation, Sampling};
use prism_analysis::intervene::Intervention;
use serde::{Deserialize, Serialize};

use super::strip::{self, Scale};
use super::{Cx, View};
use crate::gui::worker::Worker;

/// Entropy in bits mapped to colors: 0 (sure) to 8 bits (unsure) and beyond.
pub const ENTROPY_SCALE: Scale = Scale::Sequential {
    map: Colormap::Viridis,
    max: 8.0,
};

/// What a generation task reports, tagged with the request and lane (the steer view runs two).
pub struct GenEvent {
    pub tag: u64,
    pub lane: usize,
    pub kind: GenKind,
}

pub enum GenKind {
    Prompt(Vec<u32>),
    Token(GenToken),
    Done(Result<Generation, String>),
}

/// One generation as it streams in.
#[derive(Default)]
pub struct Stream {
    pub tag: u64,
    pub prompt_ids: Vec<u32>,
    pub tokens: Vec<GenToken>,
    pub result: Option<Result<Generation, String>>,
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Stream {
    pub fn running(&self) -> bool {
        self.cancel.is_some() && self.result.is_none()
    }

    pub fn stop(&mut self) {
        if let Some(c) = &self.cancel {
            c.store(true, Ordering::SeqCst);
        }
    }

    /// Applies an event if it belongs to this stream's current request.
    pub fn apply(&mut self, ev: GenKind) {
        match ev {
            GenKind::Prompt(ids) => self.prompt_ids = ids,
            GenKind::Token(t) => self.tokens.push(t),
            GenKind::Done(r) => {
                if let Ok(g) = &r {
                    self.tokens = g.tokens.clone();
                }
                self.result = Some(r);
            }
        }
    }

    /// Starts a generation on the worker; events come back to view `to`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        worker: &Worker,
        to: &'static str,
        lane: usize,
        prompt: String,
        chat: bool,
        max_tokens: usize,
        sampling: Sampling,
        interventions: Vec<Intervention>,
    ) {
        self.stop();
        let tag = self.tag + 1;
        *self = Stream {
            tag,
            ..Stream::default()
        };
        self.cancel = Some(worker.task(to, move |t| {
            let send = |kind| t.send(GenEvent { tag, lane, kind });
            let result = (|| {
                let model = t.model;
                let tok = model
                    .tokenizer
                    .as_ref()
                    .ok_or("this model has no tokenizer")?;
                let ids = if chat {
                    let rendered = prism_analysis::template::chat_prompt(model, &prompt, t.cancel)
                        .map_err(|e| e.to_string())?;
                    tok.encode_plain(&rendered).map_err(|e| e.to_string())?
                } else {
                    tok.encode(&prompt, false).map_err(|e| e.to_string())?
                };
                send(GenKind::Prompt(ids.clone()));
                let settings = GenSettings::for_model(model, max_tokens, sampling);
                generate(
                    model,
                    t.backend,
                    &ids,
                    &settings,
                    &interventions,
                    t.cancel,
                    &mut |tok| send(GenKind::Token(tok.clone())),
                )
                .map_err(|e| e.to_string())
            })();
            send(GenKind::Done(result));
        }));
    }

    /// The prompt (dimmed) and the generated tokens colored by entropy, with hover cards.
    pub fn show(&self, ui: &mut Ui, cx: &Cx<'_>, id: &str) {
        egui::ScrollArea::vertical()
            .id_salt(("gen", id))
            .auto_shrink([false, true])
            .show(ui, |ui| {
                if !self.prompt_ids.is_empty() {
                    let prompt: String =
                        self.prompt_ids.iter().map(|&i| cx.token_text(i)).collect();
                    ui.label(RichText::new(prompt).weak().monospace());
                }
                let toks: Vec<(String, Option<f64>)> = self
                    .tokens
                    .iter()
                    .map(|t| (t.text.clone(), Some(t.entropy_bits)))
                    .collect();
                strip::tokens(ui, &toks, ENTROPY_SCALE, &|ui, i| {
                    hover(ui, &self.tokens[i])
                });
                if self.running() {
                    ui.spinner();
                }
            });
        match &self.result {
            Some(Ok(g)) => {
                let mean = g.tokens.iter().map(|t| t.entropy_bits).sum::<f64>()
                    / g.tokens.len().max(1) as f64;
                ui.label(format!(
                    "{} tokens, {}; mean entropy {mean:.2} bits",
                    g.tokens.len(),
                    g.stop_reason.describe()
                ));
            }
            Some(Err(e)) => super::error_line(ui, e),
            None => {}
        }
    }
}

/// The hover card of a generated token: its probability, the entropy, the top ten.
fn hover(ui: &mut Ui, t: &GenToken) {
    ui.strong(format!("{:?}  (id {})", t.text, t.id));
    ui.label(format!(
        "p {:.1}% · entropy {:.2} bits",
        t.p * 100.0,
        t.entropy_bits
    ));
    ui.separator();
    ui.label("the ten most probable tokens here:");
    egui::Grid::new(("gen-top", t.id))
        .striped(true)
        .show(ui, |ui| {
            for p in &t.top {
                ui.label(format!("{:?}", p.text));
                ui.label(format!("{:.1}%", p.p * 100.0));
                ui.label(if p.id == t.id { "◀ chosen" } else { "" });
                ui.end_row();
            }
        });
}

#[derive(Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateView {
    pub prompt: String,
    pub chat: bool,
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u64,
    #[serde(skip)]
    pub stream: Stream,
    #[serde(skip)]
    started: bool,
}

impl Default for GenerateView {
    fn default() -> Self {
        GenerateView {
            prompt: "What is the capital of France?".into(),
            chat: true,
            max_tokens: 40,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            stream: Stream::default(),
            started: false,
        }
    }
}

impl GenerateView {
    pub fn start(&mut self, cx: &Cx<'_>) {
        let has_template = cx
            .loaded
            .is_some_and(|l| l.model.info.chat_template.is_some());
        let sampling = Sampling {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
        };
        self.stream.start(
            cx.worker,
            "generate",
            0,
            self.prompt.clone(),
            self.chat && has_template,
            self.max_tokens,
            sampling,
            cx.interventions.active(),
        );
    }
}

impl View for GenerateView {
    fn id(&self) -> &'static str {
        "generate"
    }

    fn label(&self) -> &'static str {
        "Generate"
    }

    fn ui(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        let Some(loaded) = super::causal_model(ui, cx, "Generation") else {
            return;
        };
        let has_template = loaded.model.info.chat_template.is_some();
        if !self.started {
            self.started = true;
            self.start(cx);
        }
        ui.horizontal(|ui| {
            let l = ui.label("prompt");
            let edit = egui::TextEdit::singleline(&mut self.prompt)
                .desired_width(ui.available_width() - 260.0)
                .hint_text("a prompt, or a user message with the chat template");
            let r = ui.add(edit).labelled_by(l.id);
            let enter = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            ui.add_enabled(
                has_template,
                egui::Checkbox::new(&mut self.chat, "chat template"),
            )
            .on_disabled_hover_text("this model carries no chat template");
            if self.stream.running() {
                if ui.button("Stop").clicked() {
                    self.stream.stop();
                }
            } else if ui.button("Generate text").clicked() || enter {
                self.start(cx);
            }
        });
        ui.horizontal(|ui| {
            let l = ui.label("max tokens");
            ui.add(egui::DragValue::new(&mut self.max_tokens).range(1..=4096))
                .labelled_by(l.id);
            let l = ui.label("temperature");
            ui.add(
                egui::DragValue::new(&mut self.temperature)
                    .range(0.0..=5.0)
                    .speed(0.05),
            )
            .labelled_by(l.id)
            .on_hover_text("0: greedy (always the most probable token)");
            let l = ui.label("top-k");
            ui.add(egui::DragValue::new(&mut self.top_k).range(0..=1000))
                .labelled_by(l.id)
                .on_hover_text("0: no limit");
            let l = ui.label("top-p");
            ui.add(
                egui::DragValue::new(&mut self.top_p)
                    .range(0.01..=1.0)
                    .speed(0.01),
            )
            .labelled_by(l.id);
            let l = ui.label("seed");
            ui.add(egui::DragValue::new(&mut self.seed))
                .labelled_by(l.id);
        });
        let active = cx.interventions.active().len();
        if active > 0 {
            ui.label(
                RichText::new(format!(
                    "{active} active intervention(s) apply (see the panel on the right)"
                ))
                .italics(),
            );
        }
        strip::legend(ui, ENTROPY_SCALE, "entropy of each step", "bits");
        ui.separator();
        self.stream.show(ui, cx, "generate");
    }

    fn figure(&self, cx: &Cx<'_>) -> Option<Figure> {
        match &self.stream.result {
            Some(Ok(g)) => Some(build::generation_figure(g, &cx.model_name(), None)),
            _ => None,
        }
    }

    fn ready(&self, _cx: &Cx<'_>) -> bool {
        matches!(self.stream.result, Some(Ok(_)))
    }

    fn on_message(&mut self, msg: Box<dyn Any + Send>, _cx: &mut Cx<'_>) {
        if let Ok(ev) = msg.downcast::<GenEvent>() {
            if ev.tag == self.stream.tag {
                self.stream.apply(ev.kind);
            }
        }
    }

    fn on_failed(&mut self, error: String, _cx: &mut Cx<'_>) {
        if self.stream.result.is_none() {
            self.stream.result = Some(Err(error));
        }
    }

    fn on_model(&mut self, _cx: &mut Cx<'_>) {
        self.stream.stop();
        // The tag keeps counting, so that events of the old model's run are never taken for new ones.
        self.stream = Stream {
            tag: self.stream.tag + 1,
            ..Stream::default()
        };
        self.started = false;
    }

    crate::view_settings!();

    crate::view_any!();
}
