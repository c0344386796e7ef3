//! The text view: the prompt, its tokens colored by surprisal (or GLTR rank buckets), a hover card
//! per token, and a summary that sets the model's bits beside zstd's.

use egui::{RichText, Ui};
use prism_analysis::figure::build::{self, TextColors};
use prism_analysis::figure::Figure;
use prism_analysis::trace::Trace;
use serde::{Deserialize, Serialize};

use super::{strip, Cx, SharedRun, View};

/// The text view's own settings.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TextView {
    pub gltr: bool,
}

impl TextView {
    fn colors(&self) -> TextColors {
        if self.gltr {
            TextColors::Rank
        } else {
            TextColors::Surprisal
        }
    }
}

impl View for TextView {
    fn id(&self) -> &'static str {
        "text"
    }

    fn label(&self) -> &'static str {
        "Text"
    }

    fn ui(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.gltr, "GLTR rank colors");
            if ui.checkbox(cx.bos, "prepend BOS").changed() {
                *cx.prompt_edited = true;
            }
        });
        let edit = egui::TextEdit::multiline(cx.prompt)
            .desired_rows(4)
            .desired_width(f32::INFINITY)
            .hint_text("Type a text to run");
        let resp = egui::ScrollArea::vertical()
            .id_salt("prompt")
            .max_height(140.0)
            .show(ui, |ui| ui.add(edit))
            .inner;
        if resp.changed() {
            *cx.prompt_edited = true;
        }
        ui.separator();
        let Some(run) = cx.run else {
            if cx.loaded.is_some() {
                ui.label("Type a text to see how surprised the model is by each token.");
            } else {
                super::no_model(ui);
            }
            return;
        };
        ui.label(RichText::new(summary(run)).strong());
        let colors = self.colors();
        egui::ScrollArea::vertical()
            .id_salt("tokens")
            .show(ui, |ui| {
                tokens_ui(ui, &run.trace, colors);
            });
    }

    fn figure(&self, cx: &Cx<'_>) -> Option<Figure> {
        cx.run
            .map(|r| build::text_figure(&r.trace, &cx.model_name(), self.colors()))
    }

    fn ready(&self, cx: &Cx<'_>) -> bool {
        cx.run.is_some()
    }

    crate::view_settings!();

    crate::view_any!();
}

pub fn hover_card(ui: &mut Ui, trace: &Trace, i: usize) {
    let t = &trace.tokens[i];
    ui.strong(format!("{:?}  (id {})", t.text, t.id));
    match trace.surprisal_bits[i] {
        Some(b) => {
            ui.label(format!("surprisal {b:.2} bits"));
            ui.label(format!(
                "rank {}   entropy {:.2} bits",
                trace.rank[i].unwrap_or(0),
                trace.entropy_bits[i].unwrap_or(0.0)
            ));
        }
        None => {
            ui.label("first token: nothing came before it");
        }
    }
    if i > 0 {
        ui.separator();
        ui.label("what the model expected here:");
        egui::Grid::new(("top", i)).striped(true).show(ui, |ui| {
            for p in &trace.top[i - 1] {
                let mark = if p.id == t.id { "◀" } else { "" };
                ui.label(format!("{:?}", p.text));
                ui.label(format!("{:.1}%", p.p * 100.0));
                ui.label(mark);
                ui.end_row();
            }
        });
    }
}

/// Draws the tokens with the text figure's colors; returns the index of the hovered one.
pub fn tokens_ui(ui: &mut Ui, trace: &Trace, colors: TextColors) -> Option<usize> {
    let strip = build::text_strip(trace, colors);
    strip::legend_of(ui, &strip.value_name, &strip.scale.legend(strip.unit));
    ui.label(RichText::new("(first token: not predicted)").weak());
    strip::draw(ui, &strip.tokens, &|ui, i| hover_card(ui, trace, i))
}

/// The run's summary line, with the interventions in force.
pub fn summary(run: &SharedRun) -> String {
    let mut s = run.summary.describe();
    if !run.trace.interventions.is_empty() {
        s.push_str(&format!(
            " · {} intervention(s) active",
            run.trace.interventions.len()
        ));
    }
    s
}
