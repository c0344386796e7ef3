//! A clickable layer × column heatmap (patching effects, ablation Δ bits): cells fill in as rows
//! arrive, layer 0 at the bottom as in the exported figures, the value under the cursor, and
//! clicks (with Shift) reported to the view.

use egui::{Color32, Rect, Sense, Stroke, Ui};
use prism_analysis::figure::Colormap;

use super::{color32, text_on};

pub struct Grid<'a> {
    /// Accessible name of the grid (tests find it by this label).
    pub name: &'a str,
    /// `rows[layer][col]`; rows not yet computed are missing.
    pub rows: &'a [Vec<f64>],
    pub n_rows: usize,
    pub col_labels: &'a [String],
    /// Values map to the colormap over `-bound..bound`, or `0..bound` when `sequential`.
    pub bound: f64,
    pub sequential: bool,
    pub colormap: Colormap,
    /// Cells outlined as selected.
    pub selected: &'a [(usize, usize)],
    /// How a value is printed (hover, and inside cells that are large enough).
    pub format: &'a dyn Fn(f64) -> String,
}

/// A click on a cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Click {
    pub row: usize,
    pub col: usize,
    pub shift: bool,
}

const LABEL_W: f32 = 64.0;
const HEADER_H: f32 = 70.0;

impl Grid<'_> {
    /// Draws the grid; returns the clicked cell.
    pub fn show(&self, ui: &mut Ui) -> Option<Click> {
        let cols = self.col_labels.len().max(1);
        let avail = ui.available_width() - LABEL_W - 8.0;
        // The grid takes the whole width, so that its response is exactly what is drawn.
        let cell_w = (avail / cols as f32).max(10.0);
        let cell_h =
            ((ui.available_height() - HEADER_H - 8.0) / self.n_rows.max(1) as f32).clamp(9.0, 22.0);
        let size = egui::vec2(
            LABEL_W + cell_w * cols as f32,
            HEADER_H + cell_h * self.n_rows as f32,
        );
        let (rect, resp) = ui.allocate_exact_size(size, Sense::click());
        resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, self.name));
        let painter = ui.painter_at(rect);
        let text_color = ui.visuals().text_color();
        let cell = |row: usize, col: usize| {
            // Layer 0 at the bottom.
            let top = rect.top() + HEADER_H + (self.n_rows - 1 - row) as f32 * cell_h;
            Rect::from_min_size(
                egui::pos2(rect.left() + LABEL_W + col as f32 * cell_w, top),
                egui::vec2(cell_w, cell_h),
            )
        };
        // Column labels, rotated text would be nicer; truncated upright labels stay legible.
        for (c, label) in self.col_labels.iter().enumerate() {
            let r = cell(self.n_rows - 1, c);
            let shown: String = label
                .chars()
                .take((cell_w / 6.0).max(2.0) as usize)
                .collect();
            painter.text(
                egui::pos2(r.center().x, rect.top() + HEADER_H - 4.0),
                egui::Align2::CENTER_BOTTOM,
                shown,
                egui::FontId::proportional(10.0),
                text_color,
            );
        }
        let label_every = ((11.0 / cell_h).ceil() as usize).max(1);
        for row in 0..self.n_rows {
            let r = cell(row, 0);
            if row % label_every == 0 {
                painter.text(
                    egui::pos2(rect.left() + LABEL_W - 4.0, r.center().y),
                    egui::Align2::RIGHT_CENTER,
                    format!("layer {row}"),
                    egui::FontId::proportional(10.0),
                    text_color,
                );
            }
            for col in 0..cols {
                let r = cell(row, col);
                match self.rows.get(row).and_then(|v| v.get(col)) {
                    // Not applicable (a linear-attention layer's heads): gray, labelled.
                    Some(&v) if v.is_nan() => {
                        painter.rect_filled(r.shrink(0.5), 0.0, Color32::from_gray(110));
                        if cell_w >= 38.0 && cell_h >= 14.0 {
                            painter.text(
                                r.center(),
                                egui::Align2::CENTER_CENTER,
                                "n/a",
                                egui::FontId::proportional(9.5),
                                Color32::from_gray(230),
                            );
                        }
                    }
                    Some(&v) => {
                        let t = match (self.bound > 0.0, self.sequential) {
                            (false, _) => 0.5,
                            (true, false) => (v / self.bound + 1.0) / 2.0,
                            (true, true) => v / self.bound,
                        };
                        let bg = color32(self.colormap, t.clamp(0.0, 1.0));
                        painter.rect_filled(r.shrink(0.5), 0.0, bg);
                        if cell_w >= 38.0 && cell_h >= 14.0 {
                            painter.text(
                                r.center(),
                                egui::Align2::CENTER_CENTER,
                                (self.format)(v),
                                egui::FontId::proportional(9.5),
                                text_on(bg),
                            );
                        }
                    }
                    None => {
                        painter.rect_filled(r.shrink(0.5), 0.0, Color32::from_gray(60));
                    }
                }
            }
        }
        for &(row, col) in self.selected {
            if row < self.n_rows && col < cols {
                painter.rect_stroke(
                    cell(row, col),
                    0.0,
                    Stroke::new(2.0, ui.visuals().strong_text_color()),
                    egui::StrokeKind::Inside,
                );
            }
        }
        let at = |p: egui::Pos2| -> Option<(usize, usize)> {
            let x = p.x - rect.left() - LABEL_W;
            let y = p.y - rect.top() - HEADER_H;
            if x < 0.0 || y < 0.0 {
                return None;
            }
            let (col, from_top) = ((x / cell_w) as usize, (y / cell_h) as usize);
            (col < cols && from_top < self.n_rows).then(|| (self.n_rows - 1 - from_top, col))
        };
        let mut clicked = None;
        if resp.clicked() {
            if let Some((row, col)) = resp.interact_pointer_pos().and_then(at) {
                clicked = Some(Click {
                    row,
                    col,
                    shift: ui.input(|i| i.modifiers.shift),
                });
            }
        }
        if let Some((row, col)) = resp.hover_pos().and_then(at) {
            let value = self.rows.get(row).and_then(|v| v.get(col));
            let label = self.col_labels.get(col).cloned().unwrap_or_default();
            resp.on_hover_text(match value {
                Some(&v) => format!("layer {row}, {label}: {}", (self.format)(v)),
                None => format!("layer {row}, {label}: not computed yet"),
            });
        }
        clicked
    }

    /// Where the center of a cell is drawn, for tests that click it (same layout as `show`).
    pub fn cell_center(
        grid_rect: Rect,
        n_rows: usize,
        cols: usize,
        row: usize,
        col: usize,
    ) -> egui::Pos2 {
        let cell_w = (grid_rect.width() - LABEL_W) / cols as f32;
        let cell_h = (grid_rect.height() - HEADER_H) / n_rows as f32;
        egui::pos2(
            grid_rect.left() + LABEL_W + (col as f32 + 0.5) * cell_w,
            grid_rect.top() + HEADER_H + ((n_rows - 1 - row) as f32 + 0.5) * cell_h,
        )
    }
}
