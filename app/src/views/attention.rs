//! The attention view: a layer × head grid of thumbnails; click one for the full map with token
//! labels (level of detail at long lengths), the value under the cursor, a colormap choice, a head
//! view of lines from each token to what it attends to, and a selected token's row and column.

use egui::{
    Color32, ColorImage, Pos2, Rect, Sense, Stroke, TextureHandle, TextureOptions, Ui, Vec2,
};
use prism_analysis::backend::AttentionMaps;
use prism_analysis::figure::{build, Colormap, Figure};
use prism_analysis::trace::Trace;
use serde::{Deserialize, Serialize};

use super::{color32, show_token, Cx, View};

#[derive(Serialize, Deserialize)]
#[serde(default)]
pub struct AttentionView {
    pub layer: usize,
    pub head: usize,
    pub colormap: Colormap,
    pub head_view: bool,
    pub threshold: f32,
    /// Probabilities are shown on a square-root scale, so that small weights stay visible.
    pub sqrt_scale: bool,
    #[serde(skip)]
    pub selected_token: Option<usize>,
    #[serde(skip)]
    cache: Option<Cache>,
}

impl Default for AttentionView {
    fn default() -> Self {
        AttentionView {
            layer: 0,
            head: 0,
            colormap: Colormap::Viridis,
            head_view: false,
            threshold: 0.1,
            sqrt_scale: true,
            selected_token: None,
            cache: None,
        }
    }
}

struct Cache {
    key: (u64, Colormap, bool),
    thumbs: Vec<TextureHandle>,
    full: Option<((usize, usize), TextureHandle, usize)>,
}

/// Max-pools a `[seq][seq]` map down to at most `size` × `size` pixels.
fn pooled(map: &[f32], seq: usize, size: usize, cm: Colormap, sqrt: bool) -> (ColorImage, usize) {
    let side = seq.min(size).max(1);
    let mut img = ColorImage::new([side, side], vec![Color32::BLACK; side * side]);
    if map.len() < seq * seq {
        return (img, side);
    }
    for y in 0..side {
        let (q0, q1) = (
            y * seq / side,
            ((y + 1) * seq / side).max(y * seq / side + 1),
        );
        for x in 0..side {
            let (k0, k1) = (
                x * seq / side,
                ((x + 1) * seq / side).max(x * seq / side + 1),
            );
            let mut m = 0f32;
            for q in q0..q1.min(seq) {
                for k in k0..k1.min(seq) {
                    m = m.max(map[q * seq + k]);
                }
            }
            let v = if sqrt { m.sqrt() } else { m };
            img.pixels[y * side + x] = color32(cm, v as f64);
        }
    }
    (img, side)
}

/// Heads of layer `l`: softmax heads, or a linear-attention layer's value heads.
fn heads_of(maps: &AttentionMaps<'_>, l: usize) -> usize {
    if maps.captured(l) {
        maps.heads
    } else {
        maps.mixing_heads(l)
    }
}

/// What a cell shows: a softmax map as it is, or a linear-attention layer's mixing matrix mapped
/// onto [0, 1] symmetrically about zero for the diverging map (0.5 is zero), with its colormap
/// and whether the square-root scale applies.
fn cell_map(
    maps: &AttentionMaps<'_>,
    l: usize,
    h: usize,
    cm: Colormap,
) -> (Vec<f32>, Colormap, bool) {
    if maps.captured(l) {
        return (maps.head(l, h).to_vec(), cm, true);
    }
    let m = maps.mixing(l, h).unwrap_or(&[]);
    let max = m.iter().fold(0f32, |a, &x| a.max(x.abs())).max(1e-12);
    let v = m.iter().map(|&x| 0.5 + 0.5 * x / max).collect();
    (v, Colormap::Diverging, false)
}

/// Thumbnails of the layers before `l` (the cache holds them layer after layer).
fn thumbs_before(maps: &AttentionMaps<'_>, l: usize) -> usize {
    (0..l).map(|i| heads_of(maps, i)).sum()
}

impl AttentionView {
    fn textures(&mut self, ui: &Ui, maps: &AttentionMaps<'_>, generation: u64) -> &mut Cache {
        let key = (generation, self.colormap, self.sqrt_scale);
        if self.cache.as_ref().map(|c| c.key) != Some(key) {
            let mut thumbs = Vec::with_capacity(maps.layers * maps.heads);
            for l in 0..maps.layers {
                for h in 0..heads_of(maps, l) {
                    let (map, cm, sq) = cell_map(maps, l, h, self.colormap);
                    let (img, _) = pooled(&map, maps.seq, 32, cm, self.sqrt_scale && sq);
                    thumbs.push(ui.ctx().load_texture(
                        format!("att-{l}-{h}"),
                        img,
                        TextureOptions::NEAREST,
                    ));
                }
            }
            self.cache = Some(Cache {
                key,
                thumbs,
                full: None,
            });
        }
        let cache = self.cache.as_mut().expect("just set");
        let want = (self.layer, self.head);
        if cache.full.as_ref().map(|f| f.0) != Some(want) {
            let (map, cm, sq) = cell_map(maps, self.layer, self.head, self.colormap);
            let (img, side) = pooled(&map, maps.seq, 1024, cm, self.sqrt_scale && sq);
            cache.full = Some((
                want,
                ui.ctx()
                    .load_texture("att-full", img, TextureOptions::NEAREST),
                side,
            ));
        }
        cache
    }

    fn show(&mut self, ui: &mut Ui, trace: &Trace, generation: u64) {
        let Some(maps) = trace.attention() else {
            ui.label(format!("Attention was not captured for this text: it has {} tokens, and the app captures every head's map up to {} tokens (beyond that a full capture takes gigabytes). Shorten the text to see them.", trace.tokens.len(), crate::gui::worker::MAX_ATTENTION_TOKENS));
            return;
        };
        self.layer = self.layer.min(maps.layers - 1);
        let linear = !maps.captured(self.layer);
        if linear && heads_of(&maps, self.layer) == 0 {
            ui.label(format!("Layer {} is a Gated DeltaNet (linear attention) layer: it has no softmax attention map, and its token mixing (the gated delta rule unrolled) is only computed for a whole text run from its start, which this run was not. Pick a full-attention layer, or rerun the text.", self.layer));
            return;
        }
        self.head = self.head.min(heads_of(&maps, self.layer).max(1) - 1);
        ui.horizontal(|ui| {
            ui.label(format!("layer {} · head {}", self.layer, self.head));
            egui::ComboBox::from_label("colormap")
                .selected_text(format!("{:?}", self.colormap))
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.colormap, Colormap::Viridis, "Viridis");
                    ui.selectable_value(&mut self.colormap, Colormap::Grays, "Grays");
                });
            ui.checkbox(&mut self.sqrt_scale, "√ scale");
            ui.checkbox(&mut self.head_view, "head view");
            if self.head_view {
                ui.add(egui::Slider::new(&mut self.threshold, 0.01..=0.9).text("threshold"));
            }
            if let Some(t) = self.selected_token {
                ui.label(format!("selected token {t}"));
                if ui.button("clear").clicked() {
                    self.selected_token = None;
                }
            }
        });
        ui.separator();
        let (layers, seq) = (maps.layers, maps.seq);
        let heads = (0..layers).map(|l| heads_of(&maps, l)).max().unwrap_or(1);
        let tokens: Vec<String> = trace.tokens.iter().map(|t| show_token(&t.text)).collect();
        ui.horizontal_top(|ui| {
            // The grid.
            let thumb = ((ui.available_height() - 40.0) / layers as f32).clamp(10.0, 36.0);
            egui::ScrollArea::vertical()
                .id_salt("att-grid")
                .max_width(thumb * heads as f32 + 60.0)
                .show(ui, |ui| {
                    let cache = self.textures(ui, &maps, generation);
                    let thumbs: Vec<egui::TextureId> =
                        cache.thumbs.iter().map(|t| t.id()).collect();
                    egui::Grid::new("att-grid-cells")
                        .spacing([2.0, 2.0])
                        .show(ui, |ui| {
                            for l in 0..layers {
                                ui.label(format!("L{l}"));
                                let first = thumbs_before(&maps, l);
                                for h in 0..heads_of(&maps, l) {
                                    let selected = l == self.layer && h == self.head;
                                    let img = egui::Image::new((
                                        thumbs[first + h],
                                        Vec2::splat(thumb),
                                    ))
                                    .sense(Sense::click());
                                    let r = ui.add(img);
                                    if selected {
                                        ui.painter().rect_stroke(
                                            r.rect,
                                            0.0,
                                            Stroke::new(2.0, Color32::RED),
                                            egui::StrokeKind::Outside,
                                        );
                                    }
                                    if r.clicked() {
                                        self.layer = l;
                                        self.head = h;
                                    }
                                    if maps.captured(l) {
                                        r.on_hover_text(format!("layer {l}, head {h}"));
                                    } else {
                                        r.on_hover_text(format!("layer {l}, value head {h}: Gated DeltaNet (linear attention), the gated delta rule unrolled"));
                                    }
                                }
                                ui.end_row();
                            }
                        });
                });
            ui.separator();
            ui.vertical(|ui| {
                if linear {
                    ui.label(format!("Layer {} is a Gated DeltaNet (linear attention) layer: no softmax attention. Shown for value head {}: the gated delta rule unrolled, the weight of each earlier token's value (column) in each token's output (row), before the gated norm. Signed (blue negative, red positive, scaled to the largest magnitude); rows need not sum to 1.", self.layer, self.head));
                }
                if self.head_view && !linear {
                    self.head_view_ui(ui, &maps, &tokens);
                } else {
                    self.full_map_ui(ui, &maps, &tokens, generation, seq);
                }
            });
        });
    }

    fn full_map_ui(
        &mut self,
        ui: &mut Ui,
        maps: &AttentionMaps<'_>,
        tokens: &[String],
        generation: u64,
        seq: usize,
    ) {
        let label_room = 90.0;
        let avail = ui.available_size();
        let side = (avail.x.min(avail.y) - label_room - 10.0).max(100.0);
        let (layer, head) = (self.layer, self.head);
        let tex = {
            let cache = self.textures(ui, maps, generation);
            cache.full.as_ref().map(|f| f.1.id())
        };
        let Some(tex) = tex else { return };
        let (rect, resp) = ui.allocate_exact_size(Vec2::splat(side + label_room), Sense::click());
        let map_rect = Rect::from_min_size(
            rect.min + Vec2::new(label_room, label_room),
            Vec2::splat(side),
        );
        let painter = ui.painter_at(rect);
        painter.image(
            tex,
            map_rect,
            Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
            Color32::WHITE,
        );
        let cell = side / seq as f32;
        // Level of detail: a label every `step` tokens, so labels never overlap (rows need about
        // 11 pixels, columns about 48 for a 7-character label).
        let row_step = ((11.0 / cell).ceil() as usize).max(1);
        let col_step = ((48.0 / cell).ceil() as usize).max(1);
        let font = egui::FontId::monospace(10.0);
        for i in (0..seq).step_by(row_step) {
            let y = map_rect.top() + (i as f32 + 0.5) * cell;
            painter.text(
                Pos2::new(map_rect.left() - 4.0, y),
                egui::Align2::RIGHT_CENTER,
                truncate(&tokens[i], 12),
                font.clone(),
                ui.visuals().text_color(),
            );
        }
        for i in (0..seq).step_by(col_step) {
            let x = map_rect.left() + (i as f32 + 0.5) * cell;
            painter.text(
                Pos2::new(x, map_rect.top() - 4.0),
                egui::Align2::CENTER_BOTTOM,
                truncate(&tokens[i], 7),
                font.clone(),
                ui.visuals().text_color(),
            );
        }
        if let Some(t) = self.selected_token.filter(|&t| t < seq) {
            let stroke = Stroke::new(1.5, Color32::RED);
            let row = Rect::from_min_size(
                Pos2::new(map_rect.left(), map_rect.top() + t as f32 * cell),
                Vec2::new(side, cell.max(1.0)),
            );
            let col = Rect::from_min_size(
                Pos2::new(map_rect.left() + t as f32 * cell, map_rect.top()),
                Vec2::new(cell.max(1.0), side),
            );
            painter.rect_stroke(row, 0.0, stroke, egui::StrokeKind::Outside);
            painter.rect_stroke(col, 0.0, stroke, egui::StrokeKind::Outside);
        }
        if let Some(p) = resp.hover_pos().filter(|p| map_rect.contains(*p)) {
            let q = (((p.y - map_rect.top()) / cell) as usize).min(seq - 1);
            let k = (((p.x - map_rect.left()) / cell) as usize).min(seq - 1);
            let linear = !maps.captured(layer);
            let v = if linear {
                maps.mixing(layer, head)
                    .and_then(|m| m.get(q * seq + k).copied())
                    .unwrap_or(f32::NAN)
            } else {
                maps.get(layer, head, q, k)
            };
            resp.show_tooltip_ui(|ui| {
                ui.label(format!(
                    "query {q} {:?}, key {k} {:?}",
                    tokens[q], tokens[k]
                ));
                if linear {
                    ui.strong(format!("mixing weight {v:.4}"));
                } else {
                    ui.strong(format!("attention {v:.4}"));
                }
            });
            if resp.clicked() {
                self.selected_token = Some(q);
            }
        }
        ui.label(format!(
            "{} · {seq} tokens{}",
            if maps.captured(layer) {
                "rows: queries · columns: keys"
            } else {
                "rows: tokens · columns: the tokens whose values they mix in"
            },
            if seq > 1024 {
                " (max-pooled to 1024 pixels)"
            } else {
                ""
            }
        ));
    }

    #[allow(clippy::needless_range_loop)]
    fn head_view_ui(&mut self, ui: &mut Ui, maps: &AttentionMaps<'_>, tokens: &[String]) {
        let seq = maps.seq;
        // Level of detail: a window of tokens around the selected one.
        let center = self.selected_token.unwrap_or(seq / 2).min(seq - 1);
        let window = 48usize;
        let start = center
            .saturating_sub(window / 2)
            .min(seq.saturating_sub(window));
        let end = (start + window).min(seq);
        let row_h = 16.0;
        let height = (end - start) as f32 * row_h + 10.0;
        let width = ui.available_width().min(520.0);
        let (rect, resp) = ui.allocate_exact_size(Vec2::new(width, height), Sense::click());
        let painter = ui.painter_at(rect);
        let (lx, rx) = (rect.left() + 110.0, rect.right() - 110.0);
        let y = |i: usize| rect.top() + 5.0 + (i - start) as f32 * row_h + row_h / 2.0;
        let font = egui::FontId::monospace(11.0);
        for i in start..end {
            let color = if Some(i) == self.selected_token {
                Color32::RED
            } else {
                ui.visuals().text_color()
            };
            painter.text(
                Pos2::new(lx - 6.0, y(i)),
                egui::Align2::RIGHT_CENTER,
                truncate(&tokens[i], 14),
                font.clone(),
                color,
            );
            painter.text(
                Pos2::new(rx + 6.0, y(i)),
                egui::Align2::LEFT_CENTER,
                truncate(&tokens[i], 14),
                font.clone(),
                color,
            );
        }
        for q in start..end {
            if self.selected_token.is_some_and(|s| s != q) {
                continue;
            }
            for k in start..end {
                let w = maps.get(self.layer, self.head, q, k);
                if w >= self.threshold {
                    let c = Color32::from_rgba_unmultiplied(30, 110, 200, (60.0 + 195.0 * w) as u8);
                    painter.line_segment(
                        [Pos2::new(lx, y(q)), Pos2::new(rx, y(k))],
                        Stroke::new(0.5 + 3.0 * w, c),
                    );
                }
            }
        }
        if let Some(p) = resp.interact_pointer_pos() {
            if resp.clicked() && p.x < lx {
                let i = start + ((p.y - rect.top() - 5.0) / row_h).max(0.0) as usize;
                self.selected_token = Some(i.min(end - 1));
            }
        }
        ui.label(format!("tokens {start}..{end} of {seq}; left: queries, right: keys; lines for weights ≥ {:.2}; click a token on the left to follow it", self.threshold));
    }
}

impl View for AttentionView {
    fn id(&self) -> &'static str {
        "attention"
    }

    fn label(&self) -> &'static str {
        "Attention"
    }

    fn ui(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        match cx.run {
            Some(run) => self.show(ui, &run.trace, run.id),
            None => {
                ui.label("Run a text first (Text view).");
            }
        }
    }

    fn figure(&self, cx: &Cx<'_>) -> Option<Figure> {
        let run = cx.run?;
        build::attention_figure(
            &run.trace,
            self.layer,
            self.head,
            self.colormap,
            &cx.model_name(),
        )
    }

    fn ready(&self, cx: &Cx<'_>) -> bool {
        cx.run.is_some()
    }

    crate::view_settings!();

    crate::view_any!();
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    } else {
        s.to_string()
    }
}
