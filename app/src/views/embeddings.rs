//! The embeddings view: a word list projected by PCA or t-SNE (off the UI thread), color words in
//! their own color, hover picking through a kiddo k-d tree, nearest neighbours of a clicked word,
//! a similarity heatmap, a concept-axis strip and an analogy box; and the whole vocabulary at once.

use egui::{Color32, RichText, Ui};
use egui_plot::{Plot, PlotPoints, Points, Text};
use prism_analysis::figure::{Figure, Rgb};
use prism_analysis::geometry::color::builtin_lexicon;
use prism_analysis::geometry::figures::{palette, scatter};
use prism_analysis::geometry::presets;
use prism_analysis::geometry::project::{Method, PointIndex};
use prism_analysis::geometry::similarity::axis_position;
use prism_analysis::geometry::vectors::DEFAULT_TEMPLATE;
use serde::{Deserialize, Serialize};

use crate::gui::worker::ProjectionResult;

#[derive(Serialize, Deserialize)]
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
        }
    }
}

/// What the view asks the app to do.
pub enum Request {
    Project,
    Neighbors(String),
    Analogy,
    Vocabulary,
}

fn word_colors(words: &[String]) -> Vec<Rgb> {
    let lex = builtin_lexicon();
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            lex.iter()
                .find(|c| &c.name == w)
                .map(|c| {
                    Rgb(
                        (c.srgb[0] * 255.0) as u8,
                        (c.srgb[1] * 255.0) as u8,
                        (c.srgb[2] * 255.0) as u8,
                    )
                })
                .unwrap_or_else(|| palette(i))
        })
        .collect()
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

    pub fn set_result(&mut self, r: Result<ProjectionResult, String>) {
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

    pub fn set_vocabulary(&mut self, r: Result<(Vec<String>, Vec<[f64; 2]>), String>) {
        match r.and_then(|(l, p)| {
            PointIndex::new(&p)
                .map(|i| (l, p, i))
                .map_err(|e| e.to_string())
        }) {
            Ok(v) => self.vocabulary = Some(v),
            Err(e) => self.error = Some(e),
        }
    }

    pub fn ui(&mut self, ui: &mut Ui, busy: bool) -> Option<Request> {
        let mut request = None;
        egui::Panel::left("emb-controls").resizable(true).default_size(230.0).show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.label("preset");
                egui::ComboBox::from_id_salt("preset").selected_text("choose…").show_ui(ui, |ui| {
                    for name in presets::NAMES {
                        if ui.selectable_label(false, *name).clicked() {
                            self.words = presets::preset(name).unwrap_or_default().join("\n");
                        }
                    }
                });
            });
            ui.label("words (one per line)");
            egui::ScrollArea::vertical().max_height(180.0).show(ui, |ui| {
                ui.add(egui::TextEdit::multiline(&mut self.words).desired_rows(8).desired_width(f32::INFINITY));
            });
            ui.horizontal(|ui| {
                ui.label("source");
                ui.add(egui::TextEdit::singleline(&mut self.source).desired_width(110.0)).on_hover_text("embed, embed_nospace, unembed, layer:N, final_norm");
            });
            if self.source.starts_with("layer") || self.source == "final_norm" {
                ui.add(egui::TextEdit::singleline(&mut self.template).hint_text("template with {}"));
            }
            ui.horizontal(|ui| {
                ui.radio_value(&mut self.method_tsne, false, "PCA");
                ui.radio_value(&mut self.method_tsne, true, "t-SNE");
            });
            if ui.add_enabled(!busy, egui::Button::new("Project")).clicked() {
                request = Some(Request::Project);
            }
            if ui.checkbox(&mut self.whole_vocabulary, "whole vocabulary (PCA of the input embedding)").changed() && self.whole_vocabulary && self.vocabulary.is_none() {
                request = Some(Request::Vocabulary);
            }
            ui.separator();
            ui.strong("Analogy  A − B + C");
            ui.horizontal(|ui| {
                for s in self.analogy.iter_mut() {
                    ui.add(egui::TextEdit::singleline(s).desired_width(60.0));
                }
            });
            if ui.add_enabled(!busy, egui::Button::new("Solve")).clicked() {
                request = Some(Request::Analogy);
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
            return request;
        }
        let Some(r) = &self.result else {
            ui.label("Press Project to place the words.");
            return request;
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
            request = Some(Request::Neighbors(w));
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
            ui.label("axis");
            ui.add(egui::TextEdit::singleline(&mut self.axis_from).desired_width(80.0));
            ui.label("to");
            ui.add(egui::TextEdit::singleline(&mut self.axis_to).desired_width(80.0));
        });
        self.axis_ui(ui, r, &colors);
        ui.collapsing("similarity heatmap", |ui| {
            heatmap_ui(ui, &r.words, &r.similarity)
        });
        request
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

    pub fn figure(&self, model: &str) -> Option<Figure> {
        let r = self.result.as_ref()?;
        let axes = match &r.projection.explained_variance_ratio {
            Some(v) => (
                format!("PC1 ({:.1}%)", v[0] * 100.0),
                format!("PC2 ({:.1}%)", v.get(1).unwrap_or(&0.0) * 100.0),
            ),
            None => ("t-SNE 1".to_string(), "t-SNE 2".to_string()),
        };
        Some(scatter(
            &format!(
                "{} of {} vectors",
                if self.method_tsne { "t-SNE" } else { "PCA" },
                self.source
            ),
            &r.words,
            &r.projection.points,
            &word_colors(&r.words),
            (&axes.0, &axes.1),
            vec![format!("model: {model}; source {}", self.source)],
        ))
    }
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
