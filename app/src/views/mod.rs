//! The views of the desktop app, one file each. A view implements [`View`]; adding one is its
//! file plus one line in [`registry`]. Views talk to the rest of the app only through [`Cx`]:
//! the open model, the shared run of the prompt, the worker, and the active interventions.

pub mod ablate;
pub mod attention;
pub mod colors;
pub mod corpus;
pub mod embeddings;
pub mod experts;
pub mod features;
pub mod generate;
pub mod lens;
pub mod patch;
pub mod steer;
pub mod text;

use std::any::Any;

use egui::{Color32, Ui};
use prism_analysis::figure::Figure;
use prism_analysis::trace::Trace;

use crate::gui::interventions::Interventions;
use crate::gui::worker::{Loaded, Worker};

/// Every view, in the order of the view bar (Ctrl+1 ... Ctrl+9).
pub fn registry() -> Vec<Box<dyn View>> {
    vec![
        Box::new(text::TextView::default()),
        Box::new(attention::AttentionView::default()),
        Box::new(lens::LensView::default()),
        Box::new(embeddings::EmbeddingsView::default()),
        Box::new(colors::ColorsView::default()),
        Box::new(generate::GenerateView::default()),
        Box::new(patch::PatchView::default()),
        Box::new(ablate::AblateView::default()),
        Box::new(experts::ExpertsView::default()),
        Box::new(features::FeaturesView::default()),
        Box::new(steer::SteerView::default()),
        Box::new(corpus::CorpusView::default()),
    ]
}

/// The ids of every view (`prism gui --view ID`).
pub fn ids() -> Vec<&'static str> {
    registry().iter().map(|v| v.id()).collect()
}

/// The run of the prompt that the text, attention and lens views share.
pub struct SharedRun {
    pub id: u64,
    pub trace: Trace,
    /// The text it ran.
    pub text: String,
    /// Its summary, made on the worker with the trace (never per frame).
    pub summary: prism_analysis::trace::RunSummary,
}

/// What a view sees of the app while it draws or handles a message.
pub struct Cx<'a> {
    pub loaded: Option<&'a Loaded>,
    pub run: Option<&'a SharedRun>,
    pub worker: &'a Worker,
    pub interventions: &'a mut Interventions,
    /// The shared prompt (text view) and whether BOS is prepended to it.
    pub prompt: &'a mut String,
    pub bos: &'a mut bool,
    /// Set by the text view when the prompt was edited (the app re-runs after a pause).
    pub prompt_edited: &'a mut bool,
}

impl Cx<'_> {
    pub fn model_name(&self) -> String {
        self.loaded
            .map(|l| l.model.info.path.display().to_string())
            .unwrap_or_default()
    }

    /// A token's text as the tokenizer gives it, or `<id>` without one.
    pub fn token_text(&self, id: u32) -> String {
        self.loaded
            .map(|l| l.model.token_text(id))
            .unwrap_or_else(|| format!("<{id}>"))
    }
}

/// One view of the app.
pub trait View: Any {
    /// Stable name: the `--view` argument and the key of its saved settings.
    fn id(&self) -> &'static str;
    /// The view bar's label.
    fn label(&self) -> &'static str;
    /// Draws the view. A view with a worked example starts it on its first visit with a model.
    fn ui(&mut self, ui: &mut Ui, cx: &mut Cx<'_>);
    /// The figure an export writes (built in `analysis`, as the CLI builds it).
    fn figure(&self, cx: &Cx<'_>) -> Option<Figure>;
    /// Every figure the view shows, for an export of all its panels (by default its one figure).
    fn figures(&self, cx: &Cx<'_>) -> Vec<Figure> {
        self.figure(cx).into_iter().collect()
    }
    /// True when what the view should show (its worked example, a result) is on screen: a
    /// `--screenshot` waits for it.
    fn ready(&self, cx: &Cx<'_>) -> bool;
    /// A message from one of this view's tasks.
    fn on_message(&mut self, _msg: Box<dyn Any + Send>, _cx: &mut Cx<'_>) {}
    /// One of this view's tasks failed or could not start.
    fn on_failed(&mut self, _error: String, _cx: &mut Cx<'_>) {}
    /// A (new) model is open: results of the old one no longer apply.
    fn on_model(&mut self, _cx: &mut Cx<'_>) {}
    /// Settings that survive a restart.
    fn save(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn restore(&mut self, _v: &serde_json::Value) {}
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// Implements the two `Any` accessors of [`View`].
#[macro_export]
macro_rules! view_any {
    () => {
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
        fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
            self
        }
    };
}

/// Implements [`View::save`] and [`View::restore`] for a view whose serde fields are its settings.
#[macro_export]
macro_rules! view_settings {
    () => {
        fn save(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or_default()
        }
        fn restore(&mut self, v: &serde_json::Value) {
            $crate::views::restore_into(self, v)
        }
    };
}

/// Saved settings of a view, read back leniently: what does not parse is left at its default.
pub fn restore_into<T: serde::de::DeserializeOwned>(target: &mut T, v: &serde_json::Value) {
    if v.is_null() {
        return;
    }
    if let Ok(t) = serde_json::from_value(v.clone()) {
        *target = t;
    }
}

pub use crate::widgets::{color32, grid, gridrun, strip, text_on};

/// A token as it should appear on screen: visible whitespace.
pub use prism_analysis::figure::build::show_token;

/// The line shown in a view that needs a model.
pub fn no_model(ui: &mut Ui) {
    ui.label("Open a model to begin (File, Open; or drop a .gguf file or a folder on the window).");
}

/// The open model when it is a causal language model; otherwise the view says why it needs one.
pub fn causal_model<'a>(ui: &mut Ui, cx: &Cx<'a>, what: &str) -> Option<&'a Loaded> {
    let Some(l) = cx.loaded else {
        no_model(ui);
        return None;
    };
    if !l.model.spec.causal {
        ui.label(format!(
            "{what} needs a causal language model; {} is an encoder.",
            l.model.spec.architecture
        ));
        return None;
    }
    Some(l)
}

/// An error line in a view.
pub fn error_line(ui: &mut Ui, e: &str) {
    ui.colored_label(Color32::from_rgb(220, 80, 80), format!("⚠ {e}"));
}
