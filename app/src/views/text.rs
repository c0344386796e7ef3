//! The text view: the prompt, its tokens colored by surprisal (or GLTR rank buckets), a hover card
//! per token, and a summary that sets the model's bits beside zstd's.

use egui::{Color32, RichText, Ui};
use prism_analysis::figure::{build, Colormap, Figure};
use prism_analysis::trace::Trace;
use serde::{Deserialize, Serialize};

use super::{color32, show_token, text_on, Cx, SharedRun, View};

/// The text view's own settings.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TextView {
    pub gltr: bool,
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
        legend_ui(ui, self.gltr);
        ui.label(RichText::new(summary(run)).strong());
        egui::ScrollArea::vertical()
            .id_salt("tokens")
            .show(ui, |ui| {
                tokens_ui(ui, &run.trace, self.gltr);
            });
    }

    fn figure(&self, cx: &Cx<'_>) -> Option<Figure> {
        cx.run
            .map(|r| build::text_figure(&r.trace, &cx.model_name()))
    }

    fn ready(&self, cx: &Cx<'_>) -> bool {
        cx.run.is_some()
    }

    crate::view_settings!();

    crate::view_any!();
}

/// Surprisal mapped to 0..1 for coloring: 0 bits cool, 16 bits and more hot.
pub const MAX_BITS: f64 = 16.0;

pub fn gltr_bucket(rank: usize) -> (Color32, &'static str) {
    match rank {
        0..=10 => (Color32::from_rgb(120, 200, 120), "top 10"),
        11..=100 => (Color32::from_rgb(240, 220, 100), "top 100"),
        101..=1000 => (Color32::from_rgb(240, 140, 90), "top 1000"),
        _ => (Color32::from_rgb(190, 120, 220), "beyond"),
    }
}

pub fn token_color(trace: &Trace, i: usize, gltr: bool) -> Color32 {
    if gltr {
        match trace.rank[i] {
            Some(r) => gltr_bucket(r).0,
            None => Color32::from_gray(200),
        }
    } else {
        match trace.surprisal_bits[i] {
            Some(b) => color32(Colormap::Viridis, b / MAX_BITS),
            None => Color32::from_gray(200),
        }
    }
}

pub fn legend_ui(ui: &mut Ui, gltr: bool) {
    ui.horizontal(|ui| {
        if gltr {
            ui.label("rank of the actual token:");
            for r in [1, 50, 500, 5000] {
                let (c, name) = gltr_bucket(r);
                ui.label(
                    RichText::new(format!(" {name} "))
                        .background_color(c)
                        .color(Color32::BLACK),
                );
            }
        } else {
            ui.label("surprisal:");
            for b in [0.0, 2.0, 4.0, 8.0, 12.0, 16.0] {
                let c = color32(Colormap::Viridis, b / MAX_BITS);
                ui.label(
                    RichText::new(format!(" {b:.0} bits "))
                        .background_color(c)
                        .color(text_on(c)),
                );
            }
        }
        ui.label(RichText::new("(first token: not predicted)").weak());
    });
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

/// Draws the tokens; returns the index of the hovered one.
pub fn tokens_ui(ui: &mut Ui, trace: &Trace, gltr: bool) -> Option<usize> {
    let mut hovered = None;
    ui.horizontal_wrapped(|ui| {
        ui.spacing_mut().item_spacing = egui::vec2(1.0, 3.0);
        for i in 0..trace.tokens.len() {
            let bg = token_color(trace, i, gltr);
            let text = RichText::new(show_token(&trace.tokens[i].text))
                .monospace()
                .size(16.0)
                .background_color(bg)
                .color(text_on(bg));
            let r = ui.add(egui::Label::new(text).sense(egui::Sense::hover()));
            if r.hovered() {
                hovered = Some(i);
            }
            r.on_hover_ui(|ui| hover_card(ui, trace, i));
            if trace.tokens[i].text.ends_with('\n') {
                ui.end_row();
            }
        }
    });
    hovered
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
