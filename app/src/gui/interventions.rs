//! The interventions in force across the app: ablated heads, a steering vector, anything a view
//! adds. They apply to every run of the prompt (text, attention, lens) and to generation, can be
//! switched off one by one, and are recorded in exports (the figures list them).

use egui::{RichText, Ui};
use prism_analysis::intervene::Intervention;

pub struct Entry {
    /// Who set it (a view id plus a name): setting the same key again replaces it.
    pub key: String,
    pub label: String,
    pub list: Vec<Intervention>,
    pub enabled: bool,
}

#[derive(Default)]
pub struct Interventions {
    entries: Vec<Entry>,
    /// Bumped on every change, so that the app knows to run the prompt again.
    version: u64,
}

impl Interventions {
    /// The enabled interventions, in the order they were added.
    pub fn active(&self) -> Vec<Intervention> {
        self.entries
            .iter()
            .filter(|e| e.enabled)
            .flat_map(|e| e.list.iter().cloned())
            .collect()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Adds an entry, or replaces the one with the same key (enabled).
    pub fn set(&mut self, key: &str, label: String, list: Vec<Intervention>) {
        let entry = Entry {
            key: key.to_string(),
            label,
            list,
            enabled: true,
        };
        match self.entries.iter_mut().find(|e| e.key == key) {
            Some(e) => *e = entry,
            None => self.entries.push(entry),
        }
        self.version += 1;
    }

    pub fn remove(&mut self, key: &str) {
        let before = self.entries.len();
        self.entries.retain(|e| e.key != key);
        if self.entries.len() != before {
            self.version += 1;
        }
    }

    pub fn clear(&mut self) {
        if !self.entries.is_empty() {
            self.entries.clear();
            self.version += 1;
        }
    }

    /// The panel: one line per entry with a switch and a remove button.
    pub fn ui(&mut self, ui: &mut Ui) {
        ui.strong("Active interventions");
        if self.entries.is_empty() {
            ui.label(
                RichText::new(
                    "None. Ablate heads (Ablate view) or steer (Steer view), then \"apply everywhere\".",
                )
                .weak(),
            );
            return;
        }
        let mut remove = None;
        let mut changed = false;
        for e in &mut self.entries {
            ui.horizontal(|ui| {
                let details = e
                    .list
                    .iter()
                    .map(|i| i.describe())
                    .collect::<Vec<_>>()
                    .join("\n");
                changed |= ui
                    .checkbox(&mut e.enabled, &e.label)
                    .on_hover_text(details)
                    .changed();
                if ui.small_button("✕").on_hover_text("remove").clicked() {
                    remove = Some(e.key.clone());
                }
            });
        }
        if changed {
            self.version += 1;
        }
        if let Some(k) = remove {
            self.remove(&k);
        }
        if ui.small_button("remove all").clicked() {
            self.clear();
        }
    }
}
