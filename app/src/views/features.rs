//! The features view: a sparse autoencoder's features over the prompt. The prompt's tokens colored
//! by how many features are active (or by the chosen feature's activation), each token's top
//! features on hover; click a token to list its features, click a feature for its card (where it
//! fires, the tokens it raises and lowers through the unembedding, its nearest features by decoder
//! cosine), then steer along it, clamp it or ablate it (the SAE's error term kept) and see the
//! Δ surprisal per token and the greedy generation with and without it.

use std::any::Any;
use std::sync::Arc;

use egui::{RichText, Ui};
use prism_analysis::backend::Capture;
use prism_analysis::figure::{build, Figure};
use prism_analysis::generate::Sampling;
use prism_analysis::intervene::{Intervention, Op};
use prism_analysis::sae::card::{card, FeatureCard};
use prism_analysis::sae::dashboard::{Dashboard, FeatureEntry};
use prism_analysis::sae::{self, FeatureRun, Sae};
use prism_analysis::trace::Trace;
use serde::{Deserialize, Serialize};

use super::generate::{GenEvent, Stream};
use super::{strip, Cx, View};

/// What the slider does to the chosen feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Add `amount` times its decoder direction at every position.
    Steer,
    /// Set its activation to `amount` at every position.
    Clamp,
    /// Set its activation to 0.
    Ablate,
}

#[derive(Serialize, Deserialize)]
#[serde(default)]
pub struct FeaturesView {
    /// The SAE: a SAELens folder, a Gemma Scope folder (params.npz / params.safetensors).
    pub sae: String,
    /// How many features a token's card lists.
    pub top: usize,
    pub mode: Mode,
    pub amount: f32,
    pub max_tokens: usize,
    /// The chosen feature (its card and its intervention).
    pub feature: Option<usize>,
    /// A dashboard of this SAE over a corpus (`prism features --corpus … --dashboard FILE`).
    pub dashboard: String,
    #[serde(skip)]
    state: State,
}

/// What the view has computed; none of it survives a restart.
#[derive(Default)]
struct State {
    /// The SAE read, with the path it was read from.
    loaded: Option<(String, Arc<Sae>)>,
    /// The features of the shared run `run_id` (every active feature per token).
    result: Option<Computed>,
    /// The (path, run id) a task is computing, so that it starts once.
    pending: Option<(String, u64)>,
    /// The path last asked for: a new run of the prompt recomputes it; an edited path waits
    /// for Load (or Enter).
    tried: Option<String>,
    /// The error of the (path, run id) that failed, not retried by itself.
    error: Option<(String, u64, String)>,
    /// The token whose features are listed.
    pinned: Option<usize>,
    /// The chosen feature's card.
    card: Option<Result<FeatureCard, String>>,
    /// The run with the feature's intervention, and the interventions it had.
    detail: Option<Result<Trace, String>>,
    detail_for: Option<(usize, Mode, f32)>,
    plain: Stream,
    changed: Stream,
    /// The dashboard read (path, contents), or why not, and the path asked for.
    dash: Option<(String, Result<Arc<Dashboard>, String>)>,
    dash_asked: Option<String>,
    /// The feature number typed in "go to".
    goto: usize,
}

struct Computed {
    path: String,
    run_id: u64,
    trace: Trace,
    run: FeatureRun,
}

impl Default for FeaturesView {
    fn default() -> Self {
        FeaturesView {
            sae: String::new(),
            top: 8,
            mode: Mode::Ablate,
            amount: 4.0,
            max_tokens: 20,
            feature: None,
            dashboard: String::new(),
            state: State::default(),
        }
    }
}

enum Msg {
    Features {
        path: String,
        run_id: u64,
        result: Result<(Arc<Sae>, Trace, FeatureRun), String>,
    },
    Card {
        feature: usize,
        result: Result<FeatureCard, String>,
    },
    Detail {
        key: (usize, Mode, f32),
        result: Result<Trace, String>,
    },
    Dashboard {
        path: String,
        result: Result<Arc<Dashboard>, String>,
    },
}

impl FeaturesView {
    /// The features of the shared run, once computed.
    pub fn computed(&self) -> Option<&FeatureRun> {
        self.state.result.as_ref().map(|c| &c.run)
    }

    /// The chosen feature's card, once made.
    pub fn card(&self) -> Option<&FeatureCard> {
        self.state.card.as_ref()?.as_ref().ok()
    }

    /// The dashboard read, once read.
    pub fn dashboard_read(&self) -> Option<&Dashboard> {
        self.state.dash.as_ref()?.1.as_ref().ok().map(|d| &**d)
    }

    /// The run with the chosen feature's intervention, once run.
    pub fn detail(&self) -> Option<&Trace> {
        self.state.detail.as_ref()?.as_ref().ok()
    }

    /// Reads the SAE (unless it is the one already read) and computes its features of the shared
    /// run's tokens: a clean run capturing what the SAE reads, then SAELens's encoding.
    fn compute(&mut self, ids: Vec<u32>, run_id: u64, cx: &Cx<'_>) {
        let path = self.sae.trim().to_string();
        self.state.pending = Some((path.clone(), run_id));
        self.state.tried = Some(path.clone());
        self.state.error = None;
        let have = self
            .state
            .loaded
            .as_ref()
            .filter(|(p, _)| *p == path)
            .map(|(_, s)| s.clone());
        cx.worker.task("features", move |t| {
            let result = (|| {
                let s = match have {
                    Some(s) => s,
                    None => Arc::new(Sae::load(std::path::Path::new(&path))?),
                };
                let saes = std::slice::from_ref(&*s);
                let clean = sae::clean_run(t.model, t.backend, &ids, saes)?;
                let mut runs = sae::features(t.model, t.backend, &clean, saes, s.d_sae)?;
                let run = runs.remove(0);
                Ok::<_, prism_analysis::PrismError>((s, clean, run))
            })()
            .map_err(|e| e.to_string());
            t.send(Msg::Features {
                path,
                run_id,
                result,
            });
        });
    }

    fn select(&mut self, j: usize, cx: &Cx<'_>) {
        let (Some((_, s)), Some(c)) = (&self.state.loaded, &self.state.result) else {
            return;
        };
        self.feature = Some(j);
        self.state.card = None;
        self.state.detail = None;
        self.state.detail_for = None;
        self.state.plain.stop();
        self.state.changed.stop();
        self.state.plain = Stream::default();
        self.state.changed = Stream::default();
        let s = s.clone();
        let run = c.run.clone();
        cx.worker.task("features", move |t| {
            let result = card(t.model, &s, &run, j, 10).map_err(|e| e.to_string());
            t.send(Msg::Card { feature: j, result });
        });
    }

    /// The intervention the controls describe, on feature `j`.
    fn intervention(&self, s: &Sae, j: usize) -> Result<Intervention, String> {
        let (op, v) = match self.mode {
            Mode::Steer => (Op::Add, self.amount),
            Mode::Clamp => (Op::Set, self.amount),
            Mode::Ablate => (Op::Zero, 0.0),
        };
        s.intervention(j, op, v).map_err(|e| e.to_string())
    }

    fn describe(&self, j: usize) -> String {
        match self.mode {
            Mode::Steer => format!("steer along feature {j} × {:.2}", self.amount),
            Mode::Clamp => format!("clamp feature {j} to {:.2}", self.amount),
            Mode::Ablate => format!("ablate feature {j}"),
        }
    }

    /// Runs the prompt with the feature's intervention on top of those in force, and the greedy
    /// generation with and without it.
    fn intervene(&mut self, j: usize, cx: &Cx<'_>) {
        let (Some((_, s)), Some(c)) = (&self.state.loaded, &self.state.result) else {
            return;
        };
        let key = (j, self.mode, self.amount);
        self.state.detail_for = Some(key);
        let iv = match self.intervention(s, j) {
            Ok(iv) => iv,
            Err(e) => {
                // Said once, not retried every frame (a feature out of range, say).
                self.state.detail = Some(Err(e));
                return;
            }
        };
        self.state.detail = None;
        let base = cx.interventions.active();
        let mut list = base.clone();
        list.push(iv);
        let ids: Vec<u32> = c.trace.tokens.iter().map(|t| t.id).collect();
        let with = list.clone();
        cx.worker.task("features", move |t| {
            let result = Trace::run_with(t.model, t.backend, &ids, Capture::default(), 5, &with)
                .map_err(|e| e.to_string());
            t.send(Msg::Detail { key, result });
        });
        let prompt = cx.run.map(|r| r.text.clone()).unwrap_or_default();
        let sampling = Sampling::default();
        self.state.plain.start(
            cx.worker,
            "features",
            0,
            prompt.clone(),
            false,
            self.max_tokens,
            sampling,
            base,
        );
        self.state.changed.start(
            cx.worker,
            "features",
            1,
            prompt,
            false,
            self.max_tokens,
            sampling,
            list,
        );
    }

    fn sae_row(&mut self, ui: &mut Ui) -> bool {
        let mut go = false;
        ui.horizontal(|ui| {
            ui.label("SAE:");
            let r = ui.add(
                egui::TextEdit::singleline(&mut self.sae)
                    .hint_text("a SAELens folder (cfg.json + sae_weights.safetensors) or a Gemma Scope folder")
                    .desired_width(420.0),
            );
            if r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                go = true;
            }
            if ui.button("Open folder…").clicked() {
                if let Some(p) = rfd::FileDialog::new().pick_folder() {
                    self.sae = p.display().to_string();
                    go = true;
                }
            }
            if ui.button("Load").clicked() {
                go = true;
            }
        });
        go
    }

    /// The dashboard row: its path, Load, and what was read.
    fn dashboard_row(&mut self, ui: &mut Ui, cx: &Cx<'_>) {
        let mut go = false;
        ui.horizontal(|ui| {
            ui.label("Dashboard:");
            let r = ui.add(
                egui::TextEdit::singleline(&mut self.dashboard)
                    .hint_text("optional: a dashboard file of this SAE (prism features --corpus … --dashboard FILE)")
                    .desired_width(420.0),
            );
            if r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                go = true;
            }
            if ui.button("Open file…").clicked() {
                if let Some(p) = rfd::FileDialog::new().add_filter("dashboard", &["json"]).pick_file() {
                    self.dashboard = p.display().to_string();
                    go = true;
                }
            }
            if ui.button("Load dashboard").clicked() {
                go = true;
            }
        });
        let path = self.dashboard.trim().to_string();
        if path.is_empty() {
            return;
        }
        let first = self.state.dash_asked.is_none();
        if go || (first && self.state.dash.is_none()) {
            self.state.dash_asked = Some(path.clone());
            self.state.dash = None;
            cx.worker.task("features", move |t| {
                let result = Dashboard::load(std::path::Path::new(&path))
                    .map(Arc::new)
                    .map_err(|e| e.to_string());
                t.send(Msg::Dashboard { path, result });
            });
        }
        match &self.state.dash {
            Some((_, Err(e))) => super::error_line(ui, e),
            Some((_, Ok(d))) => {
                let fits = self.state.loaded.as_ref().is_none_or(|(_, s)| d.fits(s));
                if fits {
                    ui.label(format!(
                        "dashboard: {} documents, {} tokens of {}",
                        d.documents, d.tokens, d.corpus
                    ));
                } else {
                    super::error_line(
                        ui,
                        &format!(
                            "this dashboard was made for {} ({} features of {}), not this SAE",
                            d.hook, d.d_sae, d.d_in
                        ),
                    );
                }
            }
            None if self.state.dash_asked.is_some() => {
                ui.spinner();
            }
            None => {}
        }
    }

    /// The dashboard's entry of feature `j`, when a dashboard of this SAE is open.
    fn entry(&self, j: usize) -> Option<&FeatureEntry> {
        let (_, Ok(d)) = self.state.dash.as_ref()? else {
            return None;
        };
        let (_, s) = self.state.loaded.as_ref()?;
        if !d.fits(s) {
            return None;
        }
        d.features.get(j)
    }

    /// A feature's corpus card: density, histogram, top contexts.
    fn corpus_ui(ui: &mut Ui, e: &FeatureEntry, log2_lo: i32, tokens: u64) {
        ui.label(RichText::new("over the corpus").strong());
        if e.active_tokens == 0 {
            ui.label("it never fired on the dashboard's corpus (a dead feature there)");
            return;
        }
        ui.label(format!(
            "active on {} of {tokens} tokens ({:.3}%), mean {:.3}, max {:.3}",
            e.active_tokens,
            100.0 * e.density,
            e.mean_act,
            e.max_act
        ));
        let bars: Vec<egui_plot::Bar> = e
            .histogram
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| {
                egui_plot::Bar::new((i as i32 + log2_lo) as f64 + 0.5, c as f64).width(0.9)
            })
            .collect();
        egui_plot::Plot::new(("feature histogram", e.id))
            .height(90.0)
            .allow_drag(false)
            .allow_zoom(false)
            .allow_scroll(false)
            .x_axis_label("log2 activation")
            .show(ui, |p| {
                p.bar_chart(egui_plot::BarChart::new("activations", bars))
            });
        let scale = strip::Scale::Sequential {
            map: prism_analysis::figure::Colormap::Viridis,
            max: (e.max_act as f64).max(1e-6),
        };
        for c in &e.contexts {
            ui.horizontal(|ui| {
                ui.label(RichText::new(format!("{:.3}  doc {}:", c.act, c.doc)).monospace());
                let toks: Vec<(String, Option<f64>)> = c
                    .tokens
                    .iter()
                    .zip(&c.acts)
                    .map(|(t, &a)| (t.clone(), Some(a as f64)))
                    .collect();
                strip::tokens(ui, &toks, scale, &|ui, i| {
                    ui.label(format!("activation {:.3}", c.acts[i]));
                });
            });
        }
    }

    /// The view's contents (in a scroll area: a card with a dashboard is long).
    fn body(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        if super::causal_model(ui, cx, "SAE features (with the spliced-in loss)").is_none() {
            return;
        }
        let load = self.sae_row(ui);
        self.dashboard_row(ui, cx);
        if self.sae.trim().is_empty() {
            ui.label("Give a sparse autoencoder for this model: a SAELens folder (cfg.json + sae_weights.safetensors), a Gemma Scope 1 folder (params.npz) or a Gemma Scope 2 folder (params.safetensors). Its hook names the site and layer it reads.");
            return;
        }
        let Some(run) = cx.run else {
            ui.spinner();
            return;
        };
        let path = self.sae.trim().to_string();
        let fresh = self
            .state
            .result
            .as_ref()
            .is_some_and(|c| c.path == path && c.run_id == run.id);
        let asked = self.state.pending.as_ref() == Some(&(path.clone(), run.id));
        let failed = self
            .state
            .error
            .as_ref()
            .is_some_and(|(p, r, _)| *p == path && *r == run.id);
        let same = self.state.tried.as_ref().is_none_or(|p| *p == path);
        if load || (!fresh && !asked && !failed && same) {
            let ids = run.trace.tokens.iter().map(|t| t.id).collect();
            self.compute(ids, run.id, cx);
        }
        if let Some((_, _, e)) = &self.state.error {
            super::error_line(ui, e);
            return;
        }
        if !same && !fresh && self.state.pending.is_none() {
            ui.label(RichText::new("Press Load (or Enter) to read this SAE.").weak());
            return;
        }
        let (Some(c), Some((_, s))) = (&self.state.result, &self.state.loaded) else {
            ui.spinner();
            return;
        };
        let rc = &c.run.reconstruction;
        ui.label(format!(
            "{}{} {}@{}, {} features of {} dims: MSE {:.4}, explained variance {:.3}, {:+.2} bits with the reconstruction spliced in",
            if s.transcoder {
                "transcoder (the MLP's input to its output): "
            } else {
                ""
            },
            s.architecture,
            s.site.name(),
            s.layer,
            s.d_sae,
            s.d_in,
            rc.mse,
            rc.explained_variance,
            rc.spliced_bits - rc.clean_bits
        ));
        let card_acts: Option<Vec<f64>> = match (&self.state.card, self.feature) {
            (Some(Ok(card)), Some(j)) if card.feature == j => {
                Some(card.acts.iter().map(|&a| a as f64).collect())
            }
            _ => None,
        };
        let (values, what) = match &card_acts {
            Some(v) => (
                v.clone(),
                format!("feature {} activation", self.feature.unwrap_or(0)),
            ),
            None => (
                c.run.l0.iter().map(|&n| n as f64).collect(),
                "active features".to_string(),
            ),
        };
        let (tokens, scale) = build::feature_strip(&c.trace, &values);
        strip::legend(ui, scale, &what, "");
        ui.label(
            RichText::new("The prompt's clean run; hover a token for its top features, click it to list them.")
                .weak(),
        );
        let top = self.top;
        let fr = &c.run;
        let hovered = strip::draw(ui, &tokens, &|ui, i| Self::token_card(ui, fr, i, top));
        if let Some(i) = hovered {
            if ui.input(|inp| inp.pointer.primary_clicked()) {
                self.state.pinned = Some(i);
            }
        }
        let mut pick = None;
        if let Some(i) = self.state.pinned.filter(|&i| i < c.run.features.len()) {
            ui.horizontal_wrapped(|ui| {
                ui.label(format!(
                    "token {i} {:?}, {} active:",
                    c.trace.tokens[i].text, c.run.l0[i]
                ));
                for (id, act) in c.run.features[i].iter().take(self.top) {
                    let on = self.feature == Some(*id);
                    if ui
                        .selectable_label(on, format!("{id} ({act:.2})"))
                        .clicked()
                    {
                        pick = Some(*id);
                    }
                }
            });
        }
        ui.horizontal(|ui| {
            ui.label("or feature");
            ui.add(egui::DragValue::new(&mut self.state.goto).range(0..=s.d_sae.saturating_sub(1)));
            if ui.button("show").clicked() {
                pick = Some(self.state.goto);
            }
        });
        if let Some(j) = pick {
            self.select(j, cx);
        }
        ui.separator();
        self.card_ui(ui, cx);
        self.effect_ui(ui, cx);
    }

    fn token_card(ui: &mut Ui, run: &FeatureRun, i: usize, top: usize) {
        let f = &run.features[i];
        ui.label(format!("{} active features", run.l0[i]));
        for (id, act) in f.iter().take(top) {
            ui.label(format!("feature {id}: {act:.3}"));
        }
    }

    fn card_ui(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        let Some(j) = self.feature else {
            ui.label(
                RichText::new("Click a token, then one of its features, for the feature's card.")
                    .weak(),
            );
            return;
        };
        ui.strong(format!("feature {j}"));
        let c = match &self.state.card {
            None => {
                ui.spinner();
                return;
            }
            Some(Err(e)) => {
                super::error_line(ui, e);
                return;
            }
            Some(Ok(c)) => c.clone(),
        };
        ui.label(format!(
            "active on {} of {} tokens of the prompt, at most {:.3}",
            c.active,
            c.acts.len(),
            c.max_act
        ));
        let list = |v: &[(u32, f32)]| {
            v.iter()
                .map(|&(id, x)| format!("{} {x:+.2}", super::show_token(&cx.token_text(id))))
                .collect::<Vec<_>>()
                .join("  ")
        };
        ui.label(format!("raises: {}", list(&c.logits_up)))
            .on_hover_text("W_dec[j] · W_U: the tokens whose logits its decoder direction raises most (no final norm)");
        ui.label(format!("lowers: {}", list(&c.logits_down)));
        let mut pick = None;
        ui.horizontal_wrapped(|ui| {
            ui.label("nearest by decoder cosine:");
            for &(i, cos) in &c.neighbours {
                if ui.small_button(format!("{i} ({cos:.2})")).clicked() {
                    pick = Some(i);
                }
            }
        });
        if let Some(i) = pick {
            self.select(i, cx);
            return;
        }
        if let (Some(e), Some((_, Ok(d)))) = (self.entry(j), &self.state.dash) {
            ui.separator();
            Self::corpus_ui(ui, e, d.log2_lo, d.tokens);
        }
        ui.separator();
        let mut run_it = false;
        ui.horizontal(|ui| {
            for (m, label) in [
                (Mode::Steer, "steer"),
                (Mode::Clamp, "clamp"),
                (Mode::Ablate, "ablate"),
            ] {
                if ui.radio_value(&mut self.mode, m, label).changed() {
                    if m == Mode::Clamp {
                        self.amount = (2.0 * c.max_act).max(1.0);
                    }
                    run_it = true;
                }
            }
        });
        let range = match self.mode {
            Mode::Steer => -50.0..=50.0,
            Mode::Clamp => 0.0..=(10.0 * c.max_act).max(10.0),
            Mode::Ablate => 0.0..=0.0,
        };
        if self.mode != Mode::Ablate {
            let r = ui.add(egui::Slider::new(&mut self.amount, range).text(
                if self.mode == Mode::Steer {
                    "× decoder direction"
                } else {
                    "activation"
                },
            ));
            if r.drag_stopped() || (r.changed() && !r.dragged()) {
                run_it = true;
            }
        }
        ui.horizontal(|ui| {
            if ui.button("Run").clicked() {
                run_it = true;
            }
            if ui
                .button("apply everywhere")
                .on_hover_text(
                    "add this feature intervention to the interventions in force (every view)",
                )
                .clicked()
            {
                if let Some((_, s)) = &self.state.loaded {
                    match self.intervention(s, j) {
                        Ok(iv) => cx.interventions.set("features", self.describe(j), vec![iv]),
                        Err(e) => self.state.detail = Some(Err(e)),
                    }
                }
            }
        });
        if run_it || self.state.detail_for.is_none() {
            self.intervene(j, cx);
        }
    }

    fn effect_ui(&self, ui: &mut Ui, cx: &Cx<'_>) {
        let (Some(c), Some(j)) = (&self.state.result, self.feature) else {
            return;
        };
        if self.state.detail_for.map(|k| k.0) != Some(j) {
            return;
        }
        ui.separator();
        ui.strong(format!(
            "{} (on top of the interventions in force), the SAE's error term kept",
            self.describe(j)
        ));
        match &self.state.detail {
            None => {
                ui.spinner();
            }
            Some(Err(e)) => {
                super::error_line(ui, e);
                return;
            }
            Some(Ok(t)) => strip::delta_run(ui, &c.trace, t),
        }
        ui.columns(2, |col| {
            col[0].label(RichText::new("greedy, without it").strong());
            self.state.plain.show(&mut col[0], cx, "features-plain");
            col[1].label(RichText::new("greedy, with it").strong());
            self.state.changed.show(&mut col[1], cx, "features-changed");
        });
    }
}

impl View for FeaturesView {
    fn id(&self) -> &'static str {
        "features"
    }

    fn label(&self) -> &'static str {
        "Features"
    }

    fn ui(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        egui::ScrollArea::vertical()
            .id_salt("features view")
            .auto_shrink([false, false])
            .show(ui, |ui| self.body(ui, cx));
    }

    fn figure(&self, cx: &Cx<'_>) -> Option<Figure> {
        let c = self.state.result.as_ref()?;
        let (_, s) = self.state.loaded.as_ref()?;
        let card = match (&self.state.card, self.feature) {
            (Some(Ok(card)), Some(j)) if card.feature == j => Some(card),
            _ => None,
        };
        Some(build::features_figure(
            &c.trace,
            s,
            &c.run,
            card,
            &cx.model_name(),
            &|id| cx.token_text(id),
        ))
    }

    fn ready(&self, cx: &Cx<'_>) -> bool {
        if self.sae.trim().is_empty() || cx.loaded.is_none() {
            return true;
        }
        if self.state.error.is_some() {
            return true;
        }
        if self
            .state
            .tried
            .as_ref()
            .is_some_and(|p| *p != self.sae.trim())
        {
            return true;
        }
        if !self.dashboard.trim().is_empty() && self.state.dash.is_none() {
            return false;
        }
        let computed = self.state.result.is_some();
        match self.feature {
            None => computed,
            Some(_) => {
                let effect = match &self.state.detail {
                    Some(Err(_)) => true,
                    Some(Ok(_)) => self.state.changed.result.is_some(),
                    None => false,
                };
                computed && self.state.card.is_some() && effect
            }
        }
    }

    fn on_message(&mut self, msg: Box<dyn Any + Send>, cx: &mut Cx<'_>) {
        let msg = match msg.downcast::<GenEvent>() {
            Ok(ev) => {
                let s = if ev.lane == 0 {
                    &mut self.state.plain
                } else {
                    &mut self.state.changed
                };
                if ev.tag == s.tag {
                    s.apply(ev.kind);
                }
                return;
            }
            Err(other) => other,
        };
        let Ok(m) = msg.downcast::<Msg>() else {
            return;
        };
        match *m {
            Msg::Features {
                path,
                run_id,
                result,
            } => {
                if self.state.pending.as_ref() != Some(&(path.clone(), run_id)) {
                    return;
                }
                self.state.pending = None;
                match result {
                    Ok((s, trace, run)) => {
                        let other_sae = self.state.loaded.as_ref().is_some_and(|(p, _)| *p != path);
                        if other_sae {
                            self.feature = None;
                            self.state.pinned = None;
                        }
                        self.state.card = None;
                        self.state.detail = None;
                        self.state.detail_for = None;
                        let d_sae = s.d_sae;
                        self.state.loaded = Some((path.clone(), s));
                        self.state.result = Some(Computed {
                            path,
                            run_id,
                            trace,
                            run,
                        });
                        // The chosen feature's card, for this run.
                        match self.feature {
                            Some(j) if j < d_sae => self.select(j, cx),
                            _ => self.feature = None,
                        }
                    }
                    Err(e) => self.state.error = Some((path, run_id, e)),
                }
            }
            Msg::Card { feature, result } => {
                if self.feature == Some(feature) {
                    self.state.card = Some(result);
                }
            }
            Msg::Detail { key, result } => {
                if self.state.detail_for == Some(key) {
                    self.state.detail = Some(result);
                }
            }
            Msg::Dashboard { path, result } => {
                if self.state.dash_asked.as_ref() == Some(&path) {
                    self.state.dash = Some((path, result));
                }
            }
        }
    }

    fn on_failed(&mut self, error: String, _cx: &mut Cx<'_>) {
        if error != "cancelled" {
            let (path, run) = self.state.pending.take().unwrap_or_default();
            self.state.error = Some((path, run, error));
        }
    }

    fn on_model(&mut self, _cx: &mut Cx<'_>) {
        self.state.plain.stop();
        self.state.changed.stop();
        self.state = State::default();
    }

    crate::view_settings!();

    crate::view_any!();
}
