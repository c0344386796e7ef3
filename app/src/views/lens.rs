//! The logit lens: what each layer's residual stream would predict if it were the last, read
//! through the final norm and the unembedding. Rows are layers (the output on top), columns are
//! positions; each cell shows the top token, colored by its probability. Rows are computed lazily
//! on the worker, one layer at a time from one run that captures the residual stream: the layers
//! on screen first (the view tells the worker as it scrolls), then the rest from the top.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use egui::{Color32, Pos2, Rect, Sense, Stroke, Ui, Vec2};
use prism_analysis::backend::{IdProb, Request};
use prism_analysis::figure::{build, Colormap, Figure};
use prism_analysis::trace::Trace;

use super::{color32, show_token, text_on, Cx, View};

/// The lens of one run of the prompt, filled in layer by layer.
#[derive(Default)]
pub struct LensView {
    /// The run (id) the rows belong to, and one entry per residual entry (layer).
    for_run: Option<u64>,
    rows: Vec<Option<Vec<Vec<IdProb>>>>,
    cancel: Option<Arc<AtomicBool>>,
    error: Option<String>,
    /// The layers on screen, read by the worker to choose the next layer.
    visible: Arc<Mutex<Vec<usize>>>,
}

/// One layer of the lens, from the worker.
struct LensRow {
    run: u64,
    layers: usize,
    layer: usize,
    rows: Vec<Vec<IdProb>>,
}

impl LensView {
    fn start(&mut self, cx: &mut Cx<'_>, run_id: u64, trace: &Trace) {
        if let Some(c) = self.cancel.take() {
            c.store(true, Ordering::SeqCst);
        }
        self.for_run = Some(run_id);
        // One row per residual entry: the embeddings and every block's output.
        let n = cx.loaded.map_or(0, |l| l.model.spec.n_layers + 1);
        self.rows = vec![None; n];
        self.error = None;
        let visible = self.visible.clone();
        let ids: Vec<u32> = trace.tokens.iter().map(|t| t.id).collect();
        let interventions = trace.interventions.clone();
        self.cancel = Some(cx.worker.task("lens", move |t| {
            let model = t.model;
            // The residual stream only: the shared run already has the text's own predictions,
            // so this pass skips the unembedding; each layer's lens follows, visible ones first.
            let req = Request {
                interventions: &interventions,
                ..Request::residual(&ids)
            };
            let run = match t.backend.run(&req) {
                Ok(r) => r,
                Err(e) => return t.send(Err::<LensRow, String>(e.to_string())),
            };
            let residual = run.residual.unwrap_or_default();
            let layers = residual.len();
            let mut done = vec![false; layers];
            for _ in 0..layers {
                if t.cancel.load(Ordering::SeqCst) {
                    return;
                }
                let on_screen = visible.lock().map(|v| v.clone()).unwrap_or_default();
                let Some(layer) = next_layer(&done, &on_screen) else {
                    break;
                };
                done[layer] = true;
                t.progress(format!("logit lens: layer {layer}"));
                let rows = prism_analysis::backend::lens(
                    t.backend,
                    model.spec.n_layers,
                    &[&residual[layer]],
                    model.spec.hidden,
                );
                match rows {
                    Ok(mut r) => t.send(Ok::<LensRow, String>(LensRow {
                        run: run_id,
                        layers,
                        layer,
                        rows: r.pop().unwrap_or_default(),
                    })),
                    Err(e) => return t.send(Err::<LensRow, String>(e.to_string())),
                }
            }
            t.progress("logit lens computed");
        }));
    }

    /// Every layer of the lens has arrived.
    pub fn complete(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(|r| r.is_some())
    }
}

impl View for LensView {
    fn id(&self) -> &'static str {
        "lens"
    }

    fn label(&self) -> &'static str {
        "Logit lens"
    }

    fn ui(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        let Some(run) = cx.run else {
            ui.label("Run a text first (Text view).");
            return;
        };
        if self.for_run != Some(run.id) {
            self.start(cx, run.id, &run.trace);
        }
        if let Some(e) = &self.error {
            super::error_line(ui, e);
        }
        if !self.complete() {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!(
                    "computing the lens: {} of {} layers, those on screen first",
                    self.rows.iter().filter(|r| r.is_some()).count(),
                    self.rows.len()
                ));
            });
        }
        let token_text = |id: u32| cx.token_text(id);
        let on_screen = draw(ui, &run.trace, &self.rows, &token_text);
        if let Ok(mut v) = self.visible.lock() {
            *v = on_screen;
        }
    }

    fn figure(&self, cx: &Cx<'_>) -> Option<Figure> {
        let run = cx.run?;
        if self.for_run != Some(run.id) {
            return None;
        }
        let rows: Vec<Option<&[Vec<IdProb>]>> = self.rows.iter().map(|r| r.as_deref()).collect();
        build::lens_rows_figure(&run.trace, &rows, &cx.model_name(), &|id| cx.token_text(id))
    }

    fn ready(&self, cx: &Cx<'_>) -> bool {
        cx.run.is_some_and(|r| self.for_run == Some(r.id)) && self.complete()
    }

    fn on_message(&mut self, msg: Box<dyn std::any::Any + Send>, _cx: &mut Cx<'_>) {
        let Ok(msg) = msg.downcast::<Result<LensRow, String>>() else {
            return;
        };
        match *msg {
            Ok(row) if Some(row.run) == self.for_run => {
                if self.rows.len() != row.layers {
                    self.rows = vec![None; row.layers];
                }
                self.rows[row.layer] = Some(row.rows);
            }
            Ok(_) => {}
            Err(e) => self.error = Some(e),
        }
    }

    fn on_failed(&mut self, error: String, _cx: &mut Cx<'_>) {
        if error != "cancelled" {
            self.error = Some(error);
        }
    }

    fn on_model(&mut self, _cx: &mut Cx<'_>) {
        *self = LensView::default();
    }

    crate::view_any!();
}

/// The next layer to compute: one on screen first, else the highest one left.
pub fn next_layer(done: &[bool], on_screen: &[usize]) -> Option<usize> {
    on_screen
        .iter()
        .copied()
        .find(|&l| l < done.len() && !done[l])
        .or_else(|| (0..done.len()).rev().find(|&l| !done[l]))
}

/// Draws the grid; returns the layers whose rows are on screen, top first.
fn draw(
    ui: &mut Ui,
    trace: &Trace,
    lens: &[Option<Vec<Vec<IdProb>>>],
    token_text: &dyn Fn(u32) -> String,
) -> Vec<usize> {
    let layers = lens.len();
    let mut on_screen = Vec::new();
    let seq = trace.tokens.len();
    let (cw, ch, left, top) = (74.0f32, 20.0f32, 56.0f32, 22.0f32);
    ui.label("rows: layers (0 = embeddings, bottom; the model's output on top) · columns: positions, predicting the next token · color: probability");
    egui::ScrollArea::both().show(ui, |ui| {
        let size = Vec2::new(left + cw * seq as f32, top + ch * layers as f32);
        let (rect, resp) = ui.allocate_exact_size(size, Sense::hover());
        let painter = ui.painter_at(rect);
        let clip = ui.clip_rect();
        let font = egui::FontId::monospace(10.5);
        on_screen = (0..layers)
            .rev()
            .filter(|&l| {
                let y = rect.top() + top + ch * (layers - 1 - l) as f32;
                y <= clip.bottom() && y + ch >= clip.top()
            })
            .collect();
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
                let Some(best) = row
                    .as_ref()
                    .and_then(|r| r.get(pos))
                    .and_then(|p| p.first())
                else {
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
                    match lens[layer].as_ref().and_then(|r| r.get(pos)) {
                        Some(top) => {
                            for p in top {
                                ui.label(format!("{:?}  {:.1}%", token_text(p.id), p.p * 100.0));
                            }
                        }
                        None => {
                            ui.label("not computed yet");
                        }
                    }
                });
            }
        }
    });
    on_screen
}

fn clip_text(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::next_layer;

    #[test]
    fn layers_on_screen_come_first_then_the_rest_from_the_top() {
        let mut done = vec![false; 31];
        // Scrolled to the bottom: layers 4..0 are on screen.
        let on_screen = [4, 3, 2, 1, 0];
        let mut order = Vec::new();
        while let Some(l) = next_layer(&done, &on_screen) {
            done[l] = true;
            order.push(l);
        }
        assert_eq!(&order[..6], &[4, 3, 2, 1, 0, 30]);
        assert_eq!(order.len(), 31);
        assert_eq!(next_layer(&done, &on_screen), None);
    }
}
