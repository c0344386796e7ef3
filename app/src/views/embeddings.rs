//! The embeddings view: a word list projected by PCA or t-SNE (off the UI thread), color words in
//! their own color, hover picking through a kiddo k-d tree, nearest neighbours of a clicked word,
//! a similarity heatmap, a concept-axis strip and an analogy box; and the whole vocabulary at once.
//! The default words are projected on the first visit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use egui::{Color32, RichText, Ui};
use egui_plot::{Plot, PlotPoints, Points, Text};
use prism_analysis::figure::geometry::{projection_figure, word_colors};
use prism_analysis::figure::{Figure, Rgb};
use prism_analysis::geometry::presets;
use prism_analysis::geometry::project::{project, Method, PointIndex, Projection};
use prism_analysis::geometry::similarity::{axis_position, cosine_matrix, NeighborIndex};
use prism_analysis::geometry::vectors::{Extractor, Source, DEFAULT_TEMPLATE};
use serde::{Deserialize, Serialize};

use super::{show_token, Cx, View};
use crate::gui::worker::TaskCx;

pub struct ProjectionResult {
    pub words: Vec<String>,
    /// Words the tokenizer split: (word, its pieces as shown on screen).
    pub split: Vec<(String, Vec<String>)>,
    pub projection: Projection,
    pub similarity: Vec<Vec<f64>>,
    pub vectors: Vec<Vec<f32>>,
    pub source: String,
}

#[derive(Serialize, Deserialize)]
#[serde(default)]
pub struct EmbeddingsView {
    pub words: String,
    pub source: String,
    pub method_tsne: bool,
    pub template: String,
    pub axis_from: String,
    pub axis_to: String,
    pub analogy: [String; 3],
    pub whole_vocabulary: bool,
    #[serde(skip)]
    pub result: Option<ProjectionResult>,
    #[serde(skip)]
    index: Option<PointIndex>,
    #[serde(skip)]
    pub vocabulary: Option<(Vec<String>, Vec<[f64; 2]>, PointIndex)>,
    #[serde(skip)]
    pub hovered: Option<usize>,
    #[serde(skip)]
    pub neighbors: Option<(String, Vec<(String, f64)>)>,
    #[serde(skip)]
    pub analogy_result: Option<(String, Vec<(String, f64)>)>,
    #[serde(skip)]
    pub error: Option<String>,
    /// The default words were projected for the open model.
    #[serde(skip)]
    started: bool,
    #[serde(skip)]
    running: Option<Arc<AtomicBool>>,
}

impl Default for EmbeddingsView {
    fn default() -> Self {
        EmbeddingsView {
            words: presets::preset("colors").unwrap_or_default().join("\n"),
            source: "embed".into(),
            method_tsne: false,
            template: DEFAULT_TEMPLATE.into(),
            axis_from: "black".into(),
            axis_to: "white".into(),
            analogy: ["king".into(), "man".into(), "woman".into()],
            whole_vocabulary: false,
            result: None,
            index: None,
            vocabulary: None,
            hovered: None,
            neighbors: None,
            analogy_result: None,
            error: None,
            started: false,
            running: None,
        }
    }
}

/// Messages from this view's tasks.
enum Msg {
    Projected(Result<ProjectionResult, String>),
    Neighbors(String, Result<Vec<(String, f64)>, String>),
    Analogy(String, Result<Vec<(String, f64)>, String>),
    Vocabulary(Result<(Vec<String>, Vec<[f64; 2]>), String>),
}

/// Neighbours as (token text, cosine).
fn token_texts(
    t: &TaskCx<'_>,
    found: &[prism_analysis::geometry::similarity::Neighbor],
) -> Vec<(String, f64)> {
    let tok = t.model.tokenizer.as_ref();
    found
        .iter()
        .map(|n| {
            (
                tok.map(|t| t.token_text(n.id)).unwrap_or_default(),
                n.cosine,
            )
        })
        .collect()
}

/// The representations a model offers, as the source picker lists them.
fn sources(n_layers: usize) -> Vec<String> {
    let mut v: Vec<String> = vec!["embed".into(), "embed_nospace".into(), "unembed".into()];
    v.extend((0..n_layers).map(|l| Source::Layer(l).to_string()));
    v.push("final_norm".into());
    v
}

impl EmbeddingsView {
    pub fn word_list(&self) -> Vec<String> {
        presets::parse_word_list(&self.words)
    }

    pub fn method(&self) -> Method {
        if self.method_tsne {
            Method::Tsne
        } else {
            Method::Pca
        }
    }

    /// Projects the word list on the worker (the Project button, and the first visit).
    pub fn request_projection(&mut self, cx: &Cx<'_>) {
        let source: Source = match self.source.parse() {
            Ok(s) => s,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        if let Some(r) = self.running.take() {
            r.store(true, Ordering::SeqCst);
        }
        self.error = None;
        let (words, method, template) = (self.word_list(), self.method(), self.template.clone());
        self.running = Some(cx.worker.task("embeddings", move |t| {
            let result = (|| {
                let mut ex = Extractor::new(t.model, t.backend);
                let v = ex
                    .vectors(&words, source, &template)
                    .map_err(|e| e.to_string())?;
                let vectors: Vec<Vec<f32>> = v.iter().map(|w| w.vector.clone()).collect();
                if method == Method::Tsne {
                    t.progress(format!("t-SNE of {} words", words.len()));
                }
                let projection = project(&vectors, method, 2, &mut |_| {}, t.cancel)
                    .map_err(|e| e.to_string())?;
                Ok(ProjectionResult {
                    split: v
                        .iter()
                        .filter(|w| w.is_split())
                        .map(|w| {
                            // Shown as the text view shows tokens ("·te + al"), not as raw BPE bytes.
                            let pieces = match &t.model.tokenizer {
                                Some(tok) => w
                                    .ids
                                    .iter()
                                    .map(|&i| show_token(&tok.token_text(i)))
                                    .collect(),
                                None => w.pieces.clone(),
                            };
                            (w.word.clone(), pieces)
                        })
                        .collect(),
                    words,
                    similarity: cosine_matrix(&vectors),
                    projection,
                    vectors,
                    source: source.to_string(),
                })
            })();
            t.send(Msg::Projected(result));
        }));
    }

    fn request_neighbors(&self, cx: &Cx<'_>, word: String) {
        let (Ok(source), template) = (self.source.parse::<Source>(), self.template.clone()) else {
            return;
        };
        cx.worker.task("embeddings", move |t| {
            let result = (|| {
                let mut ex = Extractor::new(t.model, t.backend);
                let v = ex
                    .vectors(std::slice::from_ref(&word), source, &template)
                    .map_err(|e| e.to_string())?;
                let table = ex
                    .search_table(source == Source::Unembed, v[0].vector.len())
                    .map_err(|e| e.to_string())?;
                Ok(token_texts(
                    t,
                    &NeighborIndex::new(table).nearest(&v[0].vector, 15, &[]),
                ))
            })();
            t.send(Msg::Neighbors(word, result));
        });
    }

    fn request_analogy(&self, cx: &Cx<'_>) {
        let (Ok(source), template) = (self.source.parse::<Source>(), self.template.clone()) else {
            return;
        };
        let [a, b, c] = self.analogy.clone();
        cx.worker.task("embeddings", move |t| {
            let query = format!("{a} - {b} + {c}");
            let result = (|| {
                let mut ex = Extractor::new(t.model, t.backend);
                let v = ex
                    .vectors(&[a, b, c], source, &template)
                    .map_err(|e| e.to_string())?;
                let target = prism_analysis::geometry::similarity::analogy(
                    &v[0].vector,
                    &v[1].vector,
                    &v[2].vector,
                );
                let table = ex
                    .search_table(source == Source::Unembed, target.len())
                    .map_err(|e| e.to_string())?;
                let exclude: Vec<u32> = v.iter().flat_map(|w| w.ids.iter().copied()).collect();
                Ok(token_texts(
                    t,
                    &NeighborIndex::new(table).nearest(&target, 10, &exclude),
                ))
            })();
            t.send(Msg::Analogy(query, result));
        });
    }

    fn request_vocabulary(&self, cx: &Cx<'_>) {
        cx.worker.task("embeddings", move |t| {
            t.progress("PCA of the whole vocabulary");
            let result = (|| {
                let mut ex = Extractor::new(t.model, t.backend);
                let table = ex.embedding_table().map_err(|e| e.to_string())?;
                let rows: Vec<Vec<f32>> = (0..table.rows).map(|i| table.row(i).to_vec()).collect();
                let p = project(&rows, Method::Pca, 2, &mut |_| {}, t.cancel)
                    .map_err(|e| e.to_string())?;
                let tok = t.model.tokenizer.as_ref();
                let labels = (0..table.rows as u32)
                    .map(|i| {
                        tok.map(|t| t.token_text(i))
                            .unwrap_or_else(|| format!("<{i}>"))
                    })
                    .collect();
                Ok((labels, p.points.iter().map(|q| [q[0], q[1]]).collect()))
            })();
            t.send(Msg::Vocabulary(result));
        });
    }

    fn set_result(&mut self, r: Result<ProjectionResult, String>) {
        match r {
            Ok(r) => {
                let pts: Vec<[f64; 2]> = r.projection.points.iter().map(|p| [p[0], p[1]]).collect();
                self.index = PointIndex::new(&pts).ok();
                self.result = Some(r);
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn set_vocabulary(&mut self, r: Result<(Vec<String>, Vec<[f64; 2]>), String>) {
        match r.and_then(|(l, p)| {
            PointIndex::new(&p)
                .map(|i| (l, p, i))
                .map_err(|e| e.to_string())
        }) {
            Ok(v) => self.vocabulary = Some(v),
            Err(e) => self.error = Some(e),
        }
    }

    fn show(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        let Some(loaded) = cx.loaded else {
            super::no_model(ui);
            return;
        };
        if !self.started {
            self.started = true;
            self.request_projection(cx);
        }
        let busy = cx.worker.busy();
        let n_layers = loaded.model.spec.n_layers;
        egui::Panel::left("emb-controls").resizable(true).default_size(230.0).show(ui, |ui| {
            ui.horizontal(|ui| {
                let l = ui.label("preset");
                egui::ComboBox::from_id_salt("preset").selected_text("choose…").show_ui(ui, |ui| {
                    for name in presets::NAMES {
                        if ui.selectable_label(false, *name).clicked() {
                            self.words = presets::preset(name).unwrap_or_default().join("\n");
                        }
                    }
                }).response.labelled_by(l.id);
            });
            let l = ui.label("words (one per line)");
            egui::ScrollArea::vertical().max_height(180.0).show(ui, |ui| {
                ui.add(egui::TextEdit::multiline(&mut self.words).desired_rows(8).desired_width(f32::INFINITY))
                    .labelled_by(l.id);
            });
            ui.horizontal(|ui| {
                let l = ui.label("source");
                egui::ComboBox::from_id_salt("source")
                    .selected_text(self.source.clone())
                    .show_ui(ui, |ui| {
                        for s in sources(n_layers) {
                            ui.selectable_value(&mut self.source, s.clone(), s);
                        }
                    })
                    .response
                    .labelled_by(l.id)
                    .on_hover_text("embed: the input embedding row of the word; embed_nospace: without a leading space; unembed: its output row; layer:N: the residual stream after block N at the word's last token inside the template; final_norm: after the final norm");
            });
            if self.source.starts_with("layer") || self.source == "final_norm" {
                ui.add(egui::TextEdit::singleline(&mut self.template).hint_text("template with {}"));
            }
            ui.horizontal(|ui| {
                ui.radio_value(&mut self.method_tsne, false, "PCA");
                ui.radio_value(&mut self.method_tsne, true, "t-SNE");
            });
            if ui.add_enabled(!busy, egui::Button::new("Project")).clicked() {
                self.request_projection(cx);
            }
            if ui.checkbox(&mut self.whole_vocabulary, "whole vocabulary (PCA of the input embedding)").changed() && self.whole_vocabulary && self.vocabulary.is_none() {
                self.request_vocabulary(cx);
            }
            ui.separator();
            ui.strong("Analogy  A − B + C");
            ui.horizontal(|ui| {
                for (s, name) in self.analogy.iter_mut().zip(["A", "B", "C"]) {
                    let l = ui.label(name);
                    ui.add(egui::TextEdit::singleline(s).desired_width(48.0))
                        .labelled_by(l.id);
                }
            });
            if ui.add_enabled(!busy, egui::Button::new("Solve")).clicked() {
                self.request_analogy(cx);
            }
            if let Some((q, list)) = &self.analogy_result {
                ui.label(RichText::new(q).weak());
                for (t, c) in list.iter().take(8) {
                    ui.label(format!("{t:?}  {c:.3}"));
                }
            }
            ui.separator();
            if let Some((w, list)) = &self.neighbors {
                ui.strong(format!("Nearest to {w:?}"));
                for (t, c) in list {
                    ui.label(format!("{t:?}  {c:.3}"));
                }
            } else {
                ui.label(RichText::new("Click a word in the plot for its nearest neighbours in the whole vocabulary.").weak());
            }
        });
        if let Some(e) = &self.error {
            ui.colored_label(Color32::from_rgb(200, 60, 60), e);
        }
        if self.whole_vocabulary {
            self.vocabulary_ui(ui);
            return;
        }
        let Some(r) = &self.result else {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("placing the words…");
            });
            return;
        };
        let colors = word_colors(&r.words);
        let mut clicked_word = None;
        let plot_height = (ui.available_height() * 0.62).max(200.0);
        let resp = Plot::new("emb-plot")
            .height(plot_height)
            .data_aspect(1.0)
            .show(ui, |plot| {
                for (i, (w, p)) in r.words.iter().zip(&r.projection.points).enumerate() {
                    let c = colors[i];
                    let highlight = self.hovered == Some(i);
                    let r = if highlight { 8.0 } else { 5.0 };
                    // A gray rim keeps black and white words visible on either theme.
                    plot.points(
                        Points::new(w.clone(), PlotPoints::new(vec![[p[0], p[1]]]))
                            .radius(r + 1.5)
                            .color(Color32::from_gray(128)),
                    );
                    plot.points(
                        Points::new(w.clone(), PlotPoints::new(vec![[p[0], p[1]]]))
                            .radius(r)
                            .color(Color32::from_rgb(c.0, c.1, c.2)),
                    );
                    plot.text(
                        Text::new(
                            format!("label {i}"),
                            [p[0], p[1]].into(),
                            RichText::new(format!("  {w}")).size(12.0),
                        )
                        .anchor(egui::Align2::LEFT_BOTTOM),
                    );
                }
                plot.pointer_coordinate()
            });
        self.hovered = None;
        if let (Some(p), Some(index)) = (resp.inner, &self.index) {
            let b = resp.transform.bounds();
            let radius = (b.width().max(b.height())) * 0.03;
            if let Some((i, _)) = index.pick([p.x, p.y], radius) {
                self.hovered = Some(i);
                resp.response.clone().on_hover_text(r.words[i].to_string());
                if resp.response.clicked() {
                    clicked_word = Some(r.words[i].clone());
                }
            }
        }
        if let Some(w) = clicked_word {
            self.request_neighbors(cx, w);
        }
        if !r.split.is_empty() {
            ui.label(
                RichText::new(format!(
                    "split into several tokens: {}",
                    r.split
                        .iter()
                        .map(|(w, p)| format!("{w} = {}", p.join(" + ")))
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
                .weak(),
            );
        }
        ui.horizontal(|ui| {
            let l = ui.label("axis from");
            ui.add(egui::TextEdit::singleline(&mut self.axis_from).desired_width(80.0))
                .labelled_by(l.id);
            let l = ui.label("to");
            ui.add(egui::TextEdit::singleline(&mut self.axis_to).desired_width(80.0))
                .labelled_by(l.id);
        });
        self.axis_ui(ui, r, &colors);
        ui.collapsing("similarity heatmap", |ui| {
            heatmap_ui(ui, &r.words, &r.similarity)
        });
    }

    fn axis_ui(&self, ui: &mut Ui, r: &ProjectionResult, colors: &[Rgb]) {
        let find = |w: &str| r.words.iter().position(|x| x == w);
        let (Some(a), Some(b)) = (find(&self.axis_from), find(&self.axis_to)) else {
            ui.label(RichText::new("both poles must be in the word list").weak());
            return;
        };
        let (rect, _) =
            ui.allocate_exact_size(egui::vec2(ui.available_width(), 46.0), egui::Sense::hover());
        let painter = ui.painter_at(rect);
        let y = rect.center().y;
        painter.line_segment(
            [
                egui::pos2(rect.left() + 20.0, y),
                egui::pos2(rect.right() - 20.0, y),
            ],
            egui::Stroke::new(1.0, ui.visuals().text_color()),
        );
        let x_of = |t: f64| {
            rect.left() + 20.0 + (t.clamp(-0.25, 1.25) as f32 + 0.25) / 1.5 * (rect.width() - 40.0)
        };
        for (i, w) in r.words.iter().enumerate() {
            let t = axis_position(&r.vectors[i], &r.vectors[a], &r.vectors[b]);
            let c = colors[i];
            let x = x_of(t);
            painter.circle_filled(egui::pos2(x, y), 4.0, Color32::from_rgb(c.0, c.1, c.2));
            if i == a || i == b || self.hovered == Some(i) {
                painter.text(
                    egui::pos2(x, y - 14.0),
                    egui::Align2::CENTER_CENTER,
                    w,
                    egui::FontId::proportional(11.0),
                    ui.visuals().text_color(),
                );
            }
        }
    }

    fn vocabulary_ui(&mut self, ui: &mut Ui) {
        let Some((labels, pts, index)) = &self.vocabulary else {
            ui.spinner();
            ui.label("projecting the whole vocabulary…");
            return;
        };
        let resp = Plot::new("vocab-plot").data_aspect(1.0).show(ui, |plot| {
            plot.points(
                Points::new("vocabulary", PlotPoints::new(pts.clone()))
                    .radius(1.2)
                    .color(Color32::from_rgb(70, 110, 190)),
            );
            plot.pointer_coordinate()
        });
        if let Some(p) = resp.inner {
            let b = resp.transform.bounds();
            if let Some((i, _)) = index.pick([p.x, p.y], b.width().max(b.height()) * 0.01) {
                resp.response
                    .on_hover_text(format!("{:?} (id {i})", labels[i]));
            }
        }
        ui.label(format!(
            "{} tokens, PCA of the input embedding; hover to identify a point",
            labels.len()
        ));
    }
}

impl View for EmbeddingsView {
    fn id(&self) -> &'static str {
        "embeddings"
    }

    fn label(&self) -> &'static str {
        "Embeddings"
    }

    fn ui(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        self.show(ui, cx);
    }

    fn figure(&self, cx: &Cx<'_>) -> Option<Figure> {
        let r = self.result.as_ref()?;
        Some(projection_figure(
            &r.words,
            &r.projection,
            &r.source,
            &cx.model_name(),
        ))
    }

    fn ready(&self, _cx: &Cx<'_>) -> bool {
        self.result.is_some()
    }

    fn on_message(&mut self, msg: Box<dyn std::any::Any + Send>, _cx: &mut Cx<'_>) {
        let Ok(msg) = msg.downcast::<Msg>() else {
            return;
        };
        match *msg {
            Msg::Projected(r) => {
                self.running = None;
                self.set_result(r)
            }
            Msg::Neighbors(word, Ok(list)) => self.neighbors = Some((word, list)),
            Msg::Analogy(query, Ok(list)) => self.analogy_result = Some((query, list)),
            Msg::Vocabulary(r) => self.set_vocabulary(r),
            Msg::Neighbors(_, Err(e)) | Msg::Analogy(_, Err(e)) => self.error = Some(e),
        }
    }

    fn on_failed(&mut self, error: String, _cx: &mut Cx<'_>) {
        self.running = None;
        self.error = Some(error);
    }

    fn on_model(&mut self, _cx: &mut Cx<'_>) {
        self.result = None;
        self.index = None;
        self.vocabulary = None;
        self.neighbors = None;
        self.analogy_result = None;
        self.error = None;
        self.started = false;
    }

    crate::view_settings!();

    crate::view_any!();
}

#[allow(clippy::needless_range_loop)]
pub fn heatmap_ui(ui: &mut Ui, words: &[String], sims: &[Vec<f64>]) {
    let n = words.len();
    let cell = ((ui.available_width() - 90.0) / n as f32).clamp(4.0, 22.0);
    let (rect, resp) = ui.allocate_exact_size(
        egui::vec2(90.0 + cell * n as f32, cell * n as f32),
        egui::Sense::hover(),
    );
    let painter = ui.painter_at(rect);
    let off: Vec<f64> = sims
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            r.iter()
                .enumerate()
                .filter(move |(j, _)| *j != i)
                .map(|(_, v)| *v)
        })
        .collect();
    let (lo, hi) = off
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    for i in 0..n {
        if cell >= 9.0 {
            painter.text(
                egui::pos2(rect.left() + 86.0, rect.top() + (i as f32 + 0.5) * cell),
                egui::Align2::RIGHT_CENTER,
                &words[i],
                egui::FontId::proportional(10.0),
                ui.visuals().text_color(),
            );
        }
        for j in 0..n {
            let t = if hi > lo {
                (sims[i][j] - lo) / (hi - lo)
            } else {
                0.5
            };
            let r = egui::Rect::from_min_size(
                egui::pos2(
                    rect.left() + 90.0 + j as f32 * cell,
                    rect.top() + i as f32 * cell,
                ),
                egui::vec2(cell, cell),
            );
            painter.rect_filled(
                r,
                0.0,
                super::color32(prism_analysis::figure::Colormap::Viridis, t),
            );
        }
    }
    if let Some(p) = resp.hover_pos() {
        let (i, j) = (
            ((p.y - rect.top()) / cell) as usize,
            ((p.x - rect.left() - 90.0) / cell) as usize,
        );
        if i < n && j < n && p.x > rect.left() + 90.0 {
            resp.on_hover_text(format!("{} · {}: {:.3}", words[i], words[j], sims[i][j]));
        }
    }
}
