//! The logit lens: what each layer's residual stream would predict if it were the last, read
//! through the final norm and the unembedding. Rows are layers (the output on top), columns are
//! positions; each cell shows the top token, colored by its probability.

use egui::{Color32, Pos2, Rect, Sense, Stroke, Ui, Vec2};
use prism_analysis::figure::{Colormap, Figure, FigureKind};
use prism_analysis::trace::Trace;

use super::{color32, show_token, text_on};

/// Returns true when the user asks for the lens to be computed.
pub fn ui(ui: &mut Ui, trace: &Trace, token_text: &dyn Fn(u32) -> String) -> bool {
    let Some(lens) = &trace.output.logit_lens else {
        ui.label("The logit lens runs every layer's residual stream through the final norm and the unembedding: one extra unembedding per layer, so it is computed on request.");
        return ui.button("Compute the logit lens").clicked();
    };
    let layers = lens.len();
    let seq = trace.tokens.len();
    let (cw, ch, left, top) = (74.0f32, 20.0f32, 56.0f32, 22.0f32);
    ui.label("rows: layers (0 = embeddings, bottom; the model's output on top) · columns: positions, predicting the next token · color: probability");
    egui::ScrollArea::both().show(ui, |ui| {
        let size = Vec2::new(left + cw * seq as f32, top + ch * layers as f32);
        let (rect, resp) = ui.allocate_exact_size(size, Sense::hover());
        let painter = ui.painter_at(rect);
        let clip = ui.clip_rect();
        let font = egui::FontId::monospace(10.5);
        for pos in 0..seq {
            let x = rect.left() + left + cw * pos as f32;
            if x > clip.right() || x + cw < clip.left() {
                continue;
            }
            painter.text(
                Pos2::new(x + cw / 2.0, rect.top() + top / 2.0),
                egui::Align2::CENTER_CENTER,
                clip_text(&show_token(&trace.tokens[pos].text), 9),
                font.clone(),
                ui.visuals().strong_text_color(),
            );
            for (l, row) in lens.iter().enumerate() {
                let y = rect.top() + top + ch * (layers - 1 - l) as f32;
                if y > clip.bottom() || y + ch < clip.top() {
                    continue;
                }
                let Some(best) = row.get(pos).and_then(|p| p.first()) else {
                    continue;
                };
                let bg = color32(Colormap::Viridis, best.p as f64);
                let cell = Rect::from_min_size(Pos2::new(x, y), Vec2::new(cw - 1.0, ch - 1.0));
                painter.rect_filled(cell, 2.0, bg);
                painter.text(
                    cell.center(),
                    egui::Align2::CENTER_CENTER,
                    clip_text(&show_token(&token_text(best.id)), 9),
                    font.clone(),
                    text_on(bg),
                );
            }
        }
        for l in 0..layers {
            let y = rect.top() + top + ch * (layers - 1 - l) as f32 + ch / 2.0;
            let name = if l == layers - 1 {
                format!("{l} out")
            } else {
                format!("{l}")
            };
            painter.text(
                Pos2::new(rect.left() + left - 6.0, y),
                egui::Align2::RIGHT_CENTER,
                name,
                font.clone(),
                ui.visuals().text_color(),
            );
        }
        if let Some(p) = resp.hover_pos() {
            let pos = ((p.x - rect.left() - left) / cw).floor();
            let l = ((p.y - rect.top() - top) / ch).floor();
            if pos >= 0.0 && l >= 0.0 && (pos as usize) < seq && (l as usize) < layers {
                let (pos, layer) = (pos as usize, layers - 1 - l as usize);
                let cell = Rect::from_min_size(
                    Pos2::new(
                        rect.left() + left + cw * pos as f32,
                        rect.top() + top + ch * l,
                    ),
                    Vec2::new(cw - 1.0, ch - 1.0),
                );
                painter.rect_stroke(
                    cell,
                    2.0,
                    Stroke::new(2.0, Color32::RED),
                    egui::StrokeKind::Outside,
                );
                resp.show_tooltip_ui(|ui| {
                    ui.strong(format!("layer {layer}, after {:?}", trace.tokens[pos].text));
                    for p in &lens[layer][pos] {
                        ui.label(format!("{:?}  {:.1}%", token_text(p.id), p.p * 100.0));
                    }
                });
            }
        }
    });
    false
}

fn clip_text(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    } else {
        s.to_string()
    }
}

/// The lens as a figure: top-1 probability per layer and position.
pub fn figure(trace: &Trace, model: &str, token_text: &dyn Fn(u32) -> String) -> Option<Figure> {
    let lens = trace.output.logit_lens.as_ref()?;
    let layers = lens.len();
    let rows: Vec<String> = (0..layers).rev().map(|l| format!("layer {l}")).collect();
    let cols: Vec<String> = trace.tokens.iter().map(|t| show_token(&t.text)).collect();
    let values: Vec<Vec<f64>> = (0..layers)
        .rev()
        .map(|l| {
            lens[l]
                .iter()
                .map(|p| p.first().map(|x| x.p as f64).unwrap_or(0.0))
                .collect()
        })
        .collect();
    let top: Vec<String> = (0..layers)
        .rev()
        .flat_map(|l| {
            lens[l]
                .iter()
                .map(|p| p.first().map(|x| token_text(x.id)).unwrap_or_default())
                .collect::<Vec<_>>()
        })
        .collect();
    Some(Figure {
        title: "Logit lens: top-1 probability by layer and position".into(),
        x_label: "position".into(),
        y_label: "layer".into(),
        kind: FigureKind::Heatmap {
            row_labels: rows,
            col_labels: cols,
            values,
            range: (0.0, 1.0),
            colormap: Colormap::Viridis,
        },
        notes: vec![
            format!("model: {model}"),
            format!(
                "top tokens (row by row): {}",
                top.iter().take(40).cloned().collect::<Vec<_>>().join(" ")
            ),
        ],
    })
}
