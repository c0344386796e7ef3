//! A strip of tokens, each on a background color that encodes a number (surprisal, entropy, a
//! change in bits), with a hover card per token. The text view, generation, patching and
//! ablation all draw their tokens with it.

use egui::{Color32, RichText, Ui};
use prism_analysis::figure::Colormap;

use super::{color32, show_token, text_on};

/// How a value becomes a color.
#[derive(Debug, Clone, Copy)]
pub enum Scale {
    /// `0..max` on a sequential colormap.
    Sequential { map: Colormap, max: f64 },
    /// `-bound..bound` on a diverging colormap (0 is neutral).
    Diverging { bound: f64 },
}

impl Scale {
    pub fn color(self, v: Option<f64>) -> Color32 {
        match (self, v) {
            (_, None) => Color32::from_gray(200),
            (Scale::Sequential { map, max }, Some(v)) => color32(map, (v / max).clamp(0.0, 1.0)),
            (Scale::Diverging { bound }, Some(v)) => color32(
                Colormap::Diverging,
                ((v / bound.max(1e-9) + 1.0) / 2.0).clamp(0.0, 1.0),
            ),
        }
    }

    /// A row of sample swatches with their values.
    pub fn legend(self, ui: &mut Ui, what: &str, unit: &str) {
        ui.horizontal(|ui| {
            ui.label(format!("{what}:"));
            let samples: Vec<f64> = match self {
                Scale::Sequential { max, .. } => (0..=4).map(|i| max * i as f64 / 4.0).collect(),
                Scale::Diverging { bound } => (-2..=2).map(|i| bound * i as f64 / 2.0).collect(),
            };
            for v in samples {
                let c = self.color(Some(v));
                ui.label(
                    RichText::new(format!(" {v:+.1} {unit} "))
                        .background_color(c)
                        .color(text_on(c)),
                );
            }
        });
    }
}

/// Draws `tokens` (text, value) wrapped like text; returns the index of the hovered token.
pub fn tokens(
    ui: &mut Ui,
    tokens: &[(String, Option<f64>)],
    scale: Scale,
    hover: &dyn Fn(&mut Ui, usize),
) -> Option<usize> {
    let mut hovered = None;
    ui.horizontal_wrapped(|ui| {
        ui.spacing_mut().item_spacing = egui::vec2(1.0, 3.0);
        for (i, (text, value)) in tokens.iter().enumerate() {
            let bg = scale.color(*value);
            let label = RichText::new(show_token(text))
                .monospace()
                .size(16.0)
                .background_color(bg)
                .color(text_on(bg));
            let r = ui.add(egui::Label::new(label).sense(egui::Sense::hover()));
            if r.hovered() {
                hovered = Some(i);
            }
            r.on_hover_ui(|ui| hover(ui, i));
            if text.ends_with('\n') {
                ui.end_row();
            }
        }
    });
    hovered
}
