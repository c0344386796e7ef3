//! The desktop app: open a checkpoint, look inside it, experiment on it, export what you see.
//! Heavy work runs on the worker thread; the UI only draws and sends jobs, and never waits.
//!
//! - `mod.rs`: the app state and the window layout;
//! - `replies.rs`: applying the worker's replies;
//! - `menus.rs`: the menu bar, shortcuts, the model card and the download offer;
//! - `export.rs`: figures to PNG/SVG with their data;
//! - `persist.rs`: `state.json`;
//! - `screenshot.rs`: `--screenshot`;
//! - `interventions.rs`: the interventions in force across views;
//! - `worker.rs`: the worker thread.

pub mod export;
pub mod interventions;
pub mod menus;
pub mod persist;
pub mod replies;
pub mod screenshot;
pub mod worker;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use egui::{Color32, Ui};
use prism_analysis::backend::BackendChoice;
use prism_analysis::checkpoint;
use prism_analysis::samples;

use self::interventions::Interventions;
pub use self::persist::{load_state, save_state, state_path, Persisted};
use self::worker::{Job, Loaded, Worker};
use crate::views::{registry, Cx, SharedRun, View};

/// How the app was started.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub model: Option<String>,
    pub text: Option<String>,
    /// A view id (`text`, `patch`, ...).
    pub view: Option<String>,
    pub screenshot: Option<PathBuf>,
    pub backend: Option<BackendChoice>,
    /// View settings (view, field, value) that override the saved ones.
    pub settings: Vec<(String, String, serde_json::Value)>,
}

pub struct PrismApp {
    pub s: Persisted,
    pub views: Vec<Box<dyn View>>,
    worker: Worker,
    pub loaded: Option<Loaded>,
    loading: Option<String>,
    pub status: String,
    pub error: Option<String>,
    /// The last run of the prompt (text, attention and lens views).
    pub run: Option<SharedRun>,
    run_id: u64,
    /// The interventions version the last run used.
    run_interventions: u64,
    edited_at: Option<Instant>,
    pub interventions: Interventions,
    fetch: Option<(u64, Option<u64>)>,
    offer_fetch: Option<String>,
    backend: BackendChoice,
    screenshot: screenshot::Screenshot,
    pub last_export: Option<String>,
    applied_theme: Option<bool>,
    fonts_installed: bool,
    /// Whether the state is written on exit (not for screenshots and tests).
    persist: bool,
}

impl PrismApp {
    /// `saved`: the state read from `state.json`, if any.
    pub fn new(ctx: &egui::Context, saved: Option<Persisted>, launch: Launch) -> PrismApp {
        Self::new_with_device(ctx, saved, launch, None)
    }

    /// `device`: the window's wgpu device when eframe renders with wgpu; the GPU backend shares it.
    pub fn new_with_device(
        ctx: &egui::Context,
        saved: Option<Persisted>,
        launch: Launch,
        device: Option<std::sync::Arc<prism_analysis::backend::gpu::context::GpuContext>>,
    ) -> PrismApp {
        let persist = saved.is_some();
        let mut s = saved.unwrap_or_default();
        if let Some(t) = &launch.text {
            s.prompt = t.clone();
        }
        if let Some(v) = &launch.view {
            s.view = v.clone();
        }
        for (view, field, value) in &launch.settings {
            let entry = s
                .views
                .entry(view.clone())
                .or_insert_with(|| serde_json::json!({}));
            if !entry.is_object() {
                *entry = serde_json::json!({});
            }
            entry[field.as_str()] = value.clone();
        }
        let mut views = registry();
        for v in &mut views {
            if let Some(saved) = s.views.get(v.id()) {
                v.restore(saved);
            }
        }
        if !views.iter().any(|v| v.id() == s.view) {
            s.view = "text".into();
        }
        let repaint_ctx = ctx.clone();
        let worker = Worker::spawn_with_device(move || repaint_ctx.request_repaint(), device);
        let mut app = PrismApp {
            s,
            views,
            worker,
            loaded: None,
            loading: None,
            status: "ready".into(),
            error: None,
            run: None,
            run_id: 0,
            run_interventions: 0,
            edited_at: None,
            interventions: Interventions::default(),
            fetch: None,
            offer_fetch: None,
            backend: launch.backend.unwrap_or(BackendChoice::Auto),
            screenshot: screenshot::Screenshot::new(launch.screenshot.clone()),
            last_export: None,
            applied_theme: None,
            fonts_installed: false,
            persist,
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
                self.run = None;
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

    /// The view with this id, as its concrete type (tests and the app's own glue).
    pub fn view<T: View>(&self) -> Option<&T> {
        self.views
            .iter()
            .find_map(|v| v.as_any().downcast_ref::<T>())
    }

    pub fn view_mut<T: View>(&mut self) -> Option<&mut T> {
        self.views
            .iter_mut()
            .find_map(|v| v.as_any_mut().downcast_mut::<T>())
    }

    fn current(&self) -> usize {
        self.views
            .iter()
            .position(|v| v.id() == self.s.view)
            .unwrap_or(0)
    }

    /// Runs the prompt (text, attention and lens views) with the active interventions.
    fn request_run(&mut self) {
        if self.loaded.is_none() || self.s.prompt.is_empty() {
            return;
        }
        self.run_id += 1;
        self.edited_at = None;
        self.run_interventions = self.interventions.version();
        self.worker.send(Job::Run {
            id: self.run_id,
            text: self.s.prompt.clone(),
            bos: self.s.bos,
            interventions: self.interventions.active(),
        });
    }

    /// Calls `f` with view `i` and a [`Cx`] made of the rest of the app.
    fn with_view<R>(&mut self, i: usize, f: impl FnOnce(&mut dyn View, &mut Cx<'_>) -> R) -> R {
        let mut edited = false;
        let out = {
            let mut cx = Cx {
                loaded: self.loaded.as_ref(),
                run: self.run.as_ref(),
                worker: &self.worker,
                interventions: &mut self.interventions,
                prompt: &mut self.s.prompt,
                bos: &mut self.s.bos,
                prompt_edited: &mut edited,
            };
            f(self.views[i].as_mut(), &mut cx)
        };
        if edited {
            self.edited_at = Some(Instant::now());
        }
        out
    }

    /// Every view is told that a model opened.
    fn model_changed(&mut self) {
        for i in 0..self.views.len() {
            self.with_view(i, |v, cx| v.on_model(cx));
        }
    }

    /// The whole window's contents; also what the UI tests drive.
    pub fn ui_contents(&mut self, ui: &mut Ui) {
        if !self.fonts_installed {
            menus::install_fonts(ui.ctx());
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
                        self.worker.cancel_all();
                        self.loading = None;
                        self.status = "cancelled".into();
                    }
                }
                ui.label(&self.status);
                if let Some(e) = &self.last_export {
                    ui.label(egui::RichText::new(format!("· last export: {e}")).weak());
                }
            });
        });
        egui::Panel::right("interventions")
            .resizable(true)
            .default_size(220.0)
            .show(ui, |ui| self.interventions.ui(ui));
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
            let i = self.current();
            self.with_view(i, |v, cx| v.ui(ui, cx));
        });
        // The prompt runs again after an edit (once typing pauses) or when the interventions change.
        if self.run_interventions != self.interventions.version() && self.loaded.is_some() {
            self.request_run();
        }
        if let Some(t) = self.edited_at {
            let wait = Duration::from_millis(350);
            if t.elapsed() >= wait {
                self.request_run();
            } else {
                ctx.request_repaint_after(wait);
            }
        }
        self.screenshot_step(&ctx);
    }
}

impl eframe::App for PrismApp {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.ui_contents(ui);
    }

    fn save(&mut self, _storage: &mut dyn eframe::Storage) {
        self.save_now();
    }
}

/// Opens the window. glow (OpenGL) is the default renderer: on software-only machines it costs far
/// less CPU than wgpu; `PRISM_RENDERER=wgpu` picks wgpu, and then the model runs on the window's
/// own GPU device.
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
    // A screenshot shows the defaults, not the user's last session.
    let saved = if screenshot {
        None
    } else {
        Some(
            state_path()
                .and_then(|p| load_state(&p))
                .unwrap_or_default(),
        )
    };
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
                saved,
                launch,
                device,
            )))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open a window: {e}"))
}
