//! The color study on screen: RSA rho by representation with the permutation null band and
//! p-values, the two claims with their cosines, and the color words placed by PCA in their own
//! colors. The study runs on the first visit.

use egui::{Color32, RichText, Ui};
use egui_plot::{Legend, Line, Plot, PlotPoints, Points, Polygon, Text};
use prism_analysis::figure::geometry::rsa_by_layer;
use prism_analysis::figure::Figure;
use prism_analysis::geometry::color::{builtin_lexicon, run_study, ColorStudy};
use prism_analysis::geometry::project::{project, Method, Projection};
use prism_analysis::geometry::vectors::{Extractor, Source, DEFAULT_TEMPLATE};

use super::{Cx, View};

/// The color words placed by PCA of one representation.
pub struct Scatter {
    pub words: Vec<String>,
    pub projection: Projection,
}

#[derive(Default)]
pub struct ColorsView {
    pub study: Option<ColorStudy>,
    pub scatter: Option<Scatter>,
    pub error: Option<String>,
    pub selected: usize,
    started: bool,
}

enum Msg {
    Study(Result<ColorStudy, String>),
    Scatter(Result<Scatter, String>),
}

impl ColorsView {
    fn run_study(&mut self, cx: &Cx<'_>) {
        self.error = None;
        cx.worker.task("colors", |t| {
            let mut ex = Extractor::new(t.model, t.backend);
            let mut progress = |done: usize, total: usize| {
                t.progress(format!("color study: {done} of {total} representations"))
            };
            let r = run_study(
                &mut ex,
                &builtin_lexicon(),
                DEFAULT_TEMPLATE,
                prism_analysis::geometry::rsa::DEFAULT_PERMUTATIONS,
                prism_analysis::geometry::rsa::DEFAULT_SEED,
                &mut progress,
                Some(t.cancel),
            )
            .map_err(|e| e.to_string());
            t.send(Msg::Study(r));
        });
    }

    fn request_scatter(&self, cx: &Cx<'_>, source: &str) {
        let Ok(source) = source.parse::<Source>() else {
            return;
        };
        cx.worker.task("colors", move |t| {
            let words: Vec<String> = builtin_lexicon().iter().map(|c| c.name.clone()).collect();
            let r = (|| {
                let mut ex = Extractor::new(t.model, t.backend);
                let v = ex
                    .vectors(&words, source, DEFAULT_TEMPLATE)
                    .map_err(|e| e.to_string())?;
                let vectors: Vec<Vec<f32>> = v.into_iter().map(|w| w.vector).collect();
                let projection = project(&vectors, Method::Pca, 2, &mut |_| {}, t.cancel)
                    .map_err(|e| e.to_string())?;
                Ok(Scatter { words, projection })
            })();
            t.send(Msg::Scatter(r));
        });
    }

    fn show(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        if cx.loaded.is_none() {
            super::no_model(ui);
            return;
        }
        if !self.started {
            self.started = true;
            self.run_study(cx);
            self.request_scatter(cx, "embed");
        }
        let busy = cx.worker.busy();
        let mut scatter_request = None;
        ui.horizontal(|ui| {
            if ui.add_enabled(!busy, egui::Button::new("Run the color study again")).clicked() {
                self.run_study(cx);
            }
            ui.label(RichText::new("31 CSS color words · template \"The color of the object is {}.\" · Mantel test, 10,000 permutations").weak());
        });
        if let Some(e) = &self.error {
            ui.colored_label(Color32::from_rgb(200, 60, 60), e);
        }
        let Some(study) = &self.study else {
            ui.label("Does the model place purple nearer blue than red, and orange nearer red than purple is? Does its geometry of color words mirror perceptual color space (CIELAB)? The study answers layer by layer.");
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("running the color study…");
            });
            return;
        };
        if let Some(v) = study.verdict() {
            let [rsa, claims] = v.lines();
            ui.label(RichText::new(rsa).strong());
            ui.label(claims);
        }
        ui.columns(2, |cols| {
            let ui = &mut cols[0];
            Plot::new("rsa-by-layer").height(260.0).legend(Legend::default()).show(ui, |plot| {
                let band: Vec<[f64; 2]> = study
                    .representations
                    .iter()
                    .enumerate()
                    .map(|(i, r)| [i as f64, r.rsa_all.null_mean + 1.96 * r.rsa_all.null_sd])
                    .chain(study.representations.iter().enumerate().rev().map(|(i, r)| [i as f64, r.rsa_all.null_mean - 1.96 * r.rsa_all.null_sd]))
                    .collect();
                plot.polygon(Polygon::new("95% of the null", PlotPoints::new(band)).fill_color(Color32::from_rgba_unmultiplied(160, 160, 160, 60)));
                let rho: Vec<[f64; 2]> = study.representations.iter().enumerate().map(|(i, r)| [i as f64, r.rho]).collect();
                let cen: Vec<[f64; 2]> = study.representations.iter().enumerate().map(|(i, r)| [i as f64, r.centered_rsa.spearman_rho]).collect();
                plot.line(Line::new("rho (raw cosine)", PlotPoints::new(rho.clone())).color(Color32::from_rgb(31, 119, 180)));
                plot.points(Points::new("rho (raw cosine)", PlotPoints::new(rho)).radius(3.0).color(Color32::from_rgb(31, 119, 180)));
                plot.line(Line::new("rho (mean-centred)", PlotPoints::new(cen)).color(Color32::from_rgb(255, 127, 14)));
            });
            ui.label(RichText::new("x: representation (0 = input embedding, then layers in the template); shaded: 95% of the permutation null").weak());
            let ui = &mut cols[1];
            egui::ScrollArea::vertical().id_salt("claims").max_height(290.0).show(ui, |ui| {
                egui::Grid::new("claims-grid").striped(true).show(ui, |ui| {
                    for h in ["representation", "pu·bl", "pu·rd", "or·rd", "claim 1", "claim 2", "rho", "p"] {
                        ui.strong(h);
                    }
                    ui.end_row();
                    for (i, r) in study.representations.iter().enumerate() {
                        if ui.selectable_label(self.selected == i, &r.name).clicked() {
                            self.selected = i;
                            scatter_request = Some(r.name.clone());
                        }
                        let (a, b, c) = r.cosines.as_ref().map(|c| (c.purple_blue, c.purple_red, c.orange_red)).unwrap_or_default();
                        ui.label(format!("{a:.3}"));
                        ui.label(format!("{b:.3}"));
                        ui.label(format!("{c:.3}"));
                        let yes = |v: Option<bool>| match v {
                            Some(true) => RichText::new("yes").color(Color32::from_rgb(40, 150, 40)),
                            Some(false) => RichText::new("no").color(Color32::from_rgb(190, 60, 60)),
                            None => RichText::new("–"),
                        };
                        ui.label(yes(r.claim1));
                        ui.label(yes(r.claim2));
                        ui.label(format!("{:.3}", r.rho));
                        ui.label(format!("{:.3}", r.p));
                        ui.end_row();
                    }
                });
            });
        });
        ui.separator();
        match &self.scatter {
            Some(s) => {
                ui.label(format!("PCA of the color words' {} vectors (click a row above for another representation)", study.representations.get(self.selected).map(|r| r.name.as_str()).unwrap_or("embed")));
                let lex = prism_analysis::geometry::color::builtin_lexicon();
                Plot::new("color-scatter")
                    .data_aspect(1.0)
                    .show(ui, |plot| {
                        for (w, p) in s.words.iter().zip(&s.projection.points) {
                            let c = lex
                                .iter()
                                .find(|c| &c.name == w)
                                .map(|c| {
                                    Color32::from_rgb(
                                        (c.srgb[0] * 255.0) as u8,
                                        (c.srgb[1] * 255.0) as u8,
                                        (c.srgb[2] * 255.0) as u8,
                                    )
                                })
                                .unwrap_or(Color32::GRAY);
                            plot.points(
                                Points::new(w.clone(), PlotPoints::new(vec![[p[0], p[1]]]))
                                    .radius(7.5)
                                    .color(Color32::from_gray(128)),
                            );
                            plot.points(
                                Points::new(w.clone(), PlotPoints::new(vec![[p[0], p[1]]]))
                                    .radius(6.0)
                                    .color(c),
                            );
                            plot.text(
                                Text::new(
                                    format!("c-{w}"),
                                    [p[0], p[1]].into(),
                                    RichText::new(format!("  {w}")).size(12.0),
                                )
                                .anchor(egui::Align2::LEFT_BOTTOM),
                            );
                        }
                    });
            }
            None => {
                ui.spinner();
            }
        }
        if let Some(src) = scatter_request {
            self.request_scatter(cx, &src);
        }
    }
}

impl View for ColorsView {
    fn id(&self) -> &'static str {
        "colors"
    }

    fn label(&self) -> &'static str {
        "Color study"
    }

    fn ui(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        self.show(ui, cx);
    }

    fn figure(&self, _cx: &Cx<'_>) -> Option<Figure> {
        self.study.as_ref().map(rsa_by_layer)
    }

    /// Both panels: the RSA by layer (with the claims in its data) and the PCA scatter shown.
    fn figures(&self, cx: &Cx<'_>) -> Vec<Figure> {
        let mut out: Vec<Figure> = self.figure(cx).into_iter().collect();
        if let (Some(study), Some(sc)) = (&self.study, &self.scatter) {
            let source = study
                .representations
                .get(self.selected)
                .map_or("embed", |r| r.name.as_str());
            out.push(prism_analysis::figure::geometry::projection_figure(
                &sc.words,
                &sc.projection,
                source,
                &cx.model_name(),
            ));
        }
        out
    }

    fn ready(&self, _cx: &Cx<'_>) -> bool {
        self.study.is_some() && self.scatter.is_some()
    }

    fn on_message(&mut self, msg: Box<dyn std::any::Any + Send>, _cx: &mut Cx<'_>) {
        let Ok(msg) = msg.downcast::<Msg>() else {
            return;
        };
        match *msg {
            Msg::Study(Ok(s)) => {
                self.study = Some(s);
                self.error = None;
            }
            Msg::Scatter(Ok(s)) => self.scatter = Some(s),
            Msg::Study(Err(e)) | Msg::Scatter(Err(e)) => self.error = Some(e),
        }
    }

    fn on_failed(&mut self, error: String, _cx: &mut Cx<'_>) {
        self.error = Some(error);
    }

    fn on_model(&mut self, _cx: &mut Cx<'_>) {
        *self = ColorsView::default();
    }

    crate::view_any!();
}
