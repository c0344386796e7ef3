//! A strip of tokens, each on a background color that encodes a number (surprisal, entropy, a
//! change in bits), with a hover card per token. The text view, generation, patching and
//! ablation all draw their tokens with it, from the colors of
//! [`prism_analysis::figure::StripScale`], the same the exported token figures carry.

use egui::{Color32, RichText, Ui};
use prism_analysis::figure::{strip_tokens, Rgb, StripToken};

pub use prism_analysis::figure::StripScale as Scale;

use super::{show_token, text_on};

fn c32(c: Rgb) -> Color32 {
    Color32::from_rgb(c.0, c.1, c.2)
}

/// A row of swatches with their labels: `what`, then the scale's legend in `unit`.
pub fn legend(ui: &mut Ui, scale: Scale, what: &str, unit: &str) {
    legend_of(ui, what, &scale.legend(unit));
}

/// A row of the given swatches.
pub fn legend_of(ui: &mut Ui, what: &str, swatches: &[(String, Rgb)]) {
    ui.horizontal(|ui| {
        ui.label(format!("{what}:"));
        for (label, c) in swatches {
            let c = c32(*c);
            ui.label(
                RichText::new(format!(" {label} "))
                    .background_color(c)
                    .color(text_on(c)),
            );
        }
    });
}

/// Draws `tokens` (text, value) wrapped like text; returns the index of the hovered token.
pub fn tokens(
    ui: &mut Ui,
    tokens: &[(String, Option<f64>)],
    scale: Scale,
    hover: &dyn Fn(&mut Ui, usize),
) -> Option<usize> {
    draw(ui, &strip_tokens(tokens.iter().cloned(), scale), hover)
}

/// Draws tokens already colored (a figure's); returns the index of the hovered token.
pub fn draw(ui: &mut Ui, tokens: &[StripToken], hover: &dyn Fn(&mut Ui, usize)) -> Option<usize> {
    let mut hovered = None;
    ui.horizontal_wrapped(|ui| {
        ui.spacing_mut().item_spacing = egui::vec2(1.0, 3.0);
        for (i, t) in tokens.iter().enumerate() {
            let bg = c32(t.color);
            let label = RichText::new(show_token(&t.text))
                .monospace()
                .size(16.0)
                .background_color(bg)
                .color(text_on(bg));
            let r = ui.add(egui::Label::new(label).sense(egui::Sense::hover()));
            if r.hovered() {
                hovered = Some(i);
            }
            r.on_hover_ui(|ui| hover(ui, i));
            if t.text.ends_with('\n') {
                ui.end_row();
            }
        }
    });
    hovered
}

/// An intervened run against the plain one: the totals, a legend, and the tokens colored by
/// Δ surprisal (intervened minus plain) with both values on hover.
pub fn delta_run(
    ui: &mut Ui,
    base: &prism_analysis::trace::Trace,
    changed: &prism_analysis::trace::Trace,
) {
    ui.label(format!(
        "total {:.2} bits instead of {:.2}: Δ {:+.2} bits",
        changed.total_bits(),
        base.total_bits(),
        changed.total_bits() - base.total_bits()
    ));
    let delta: Vec<Option<f64>> = base
        .surprisal_bits
        .iter()
        .zip(&changed.surprisal_bits)
        .map(|(b, a)| Some(a.as_ref()? - b.as_ref()?))
        .collect();
    let bound = delta.iter().flatten().fold(1.0f64, |m, v| m.max(v.abs()));
    let scale = Scale::Diverging { bound };
    legend(ui, scale, "Δ surprisal", "bits");
    let toks: Vec<(String, Option<f64>)> = changed
        .tokens
        .iter()
        .zip(&delta)
        .map(|(t, v)| (t.text.clone(), *v))
        .collect();
    tokens(
        ui,
        &toks,
        scale,
        &|ui, i| match (base.surprisal_bits[i], changed.surprisal_bits[i]) {
            (Some(b), Some(a)) => {
                ui.label(format!("{b:.2} → {a:.2} bits (Δ {:+.2})", a - b));
            }
            _ => {
                ui.label("first token: not predicted");
            }
        },
    );
}
