//! The corpus view: a batch folder (`prism batch`, `scripts/ray_batch.py`) opened in the app.
//! Every document with its bits per byte under the model and under zstd, sorted (most surprising
//! first by default), the totals, and a scatter of the two; click a document for its text view:
//! its tokens on the color of the surprisal the shard holds, each token's numbers on hover. The
//! folder is checked against its manifest's checksums when it opens.

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;

use egui::{RichText, Ui};
use prism_analysis::batch::{self, DocRow, Summary, TokenRow};
use prism_analysis::figure::{build, Figure};
use prism_analysis::model::Model;
use serde::{Deserialize, Serialize};

use super::{strip, Cx, View};

/// What the list is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    #[default]
    BitsPerByte,
    Zstd,
    /// The model's bits per byte minus zstd's: where the model helps least.
    Gain,
    Doc,
}

#[derive(Serialize, Deserialize)]
#[serde(default)]
pub struct CorpusView {
    /// The batch folder (settable with `prism gui --set corpus.folder=DIR`).
    pub folder: String,
    pub sort: SortBy,
    pub descending: bool,
    /// The document shown in the text view below the list.
    pub selected: Option<usize>,
    #[serde(skip)]
    opened: Option<Opened>,
    #[serde(skip)]
    loading: bool,
    #[serde(skip)]
    error: Option<String>,
    #[serde(skip)]
    doc: Option<DocText>,
    /// A document's tokens are being read.
    #[serde(skip)]
    doc_pending: bool,
}

impl Default for CorpusView {
    fn default() -> Self {
        CorpusView {
            folder: String::new(),
            sort: SortBy::BitsPerByte,
            descending: true,
            selected: None,
            opened: None,
            loading: false,
            error: None,
            doc: None,
            doc_pending: false,
        }
    }
}

/// An opened batch folder.
struct Opened {
    dir: PathBuf,
    summary: Summary,
    /// The model that ran it, for token texts: the open model when it is the same file, else the
    /// manifest's model read on its own (None when it cannot be read: ids are shown).
    model: Option<Arc<Model>>,
}

/// One document's tokens, read from its shard.
struct DocText {
    doc: usize,
    rows: Result<Vec<TokenRow>, String>,
    texts: Vec<String>,
}

struct OpenedMsg(Result<Opened, String>);
struct DocMsg(DocText);

impl CorpusView {
    /// Whether a batch folder is open (for tests).
    pub fn is_open(&self) -> bool {
        self.opened.is_some()
    }

    /// The documents in the order the list shows them.
    pub fn order(&self) -> Vec<usize> {
        self.opened
            .as_ref()
            .map(|o| self.sorted(&o.summary.docs).iter().map(|d| d.doc).collect())
            .unwrap_or_default()
    }

    /// The document whose tokens are on screen.
    pub fn shown_document(&self) -> Option<usize> {
        self.doc
            .as_ref()
            .filter(|d| Some(d.doc) == self.selected && d.rows.is_ok())
            .map(|d| d.doc)
    }

    /// The error the view shows (a folder that cannot be opened).
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

impl CorpusView {
    fn open(&mut self, cx: &Cx<'_>) {
        let dir = PathBuf::from(self.folder.trim());
        self.loading = true;
        self.error = None;
        self.opened = None;
        self.doc = None;
        cx.worker.task("corpus", move |t| {
            let r = batch::summary(&dir)
                .map_err(|e| e.to_string())
                .map(|summary| {
                    let same = t.model.info.path.display().to_string() == summary.manifest.model;
                    let model = if same {
                        Some(t.model.clone())
                    } else {
                        prism_analysis::checkpoint::load(std::path::Path::new(
                            &summary.manifest.model,
                        ))
                        .ok()
                        .map(Arc::new)
                    };
                    Opened {
                        dir,
                        summary,
                        model,
                    }
                });
            t.send(OpenedMsg(r));
        });
    }

    fn show_doc(&mut self, doc: usize, cx: &Cx<'_>) {
        let Some(o) = &self.opened else {
            return;
        };
        self.selected = Some(doc);
        self.doc = None;
        self.doc_pending = true;
        let (dir, manifest, model) = (o.dir.clone(), o.summary.manifest.clone(), o.model.clone());
        cx.worker.task("corpus", move |t| {
            let rows = batch::document_tokens(&dir, &manifest, doc).map_err(|e| e.to_string());
            let texts = rows
                .as_ref()
                .map(|rows| {
                    rows.iter()
                        .map(|r| match &model {
                            Some(m) => m.token_text(r.id),
                            None => format!("<{}>", r.id),
                        })
                        .collect()
                })
                .unwrap_or_default();
            t.send(DocMsg(DocText { doc, rows, texts }));
        });
    }

    fn sorted<'a>(&self, docs: &'a [DocRow]) -> Vec<&'a DocRow> {
        let mut v: Vec<&DocRow> = docs.iter().collect();
        let key = |d: &DocRow| match self.sort {
            SortBy::BitsPerByte => d.bits_per_byte,
            SortBy::Zstd => d.zstd_bits_per_byte,
            SortBy::Gain => d.bits_per_byte - d.zstd_bits_per_byte,
            SortBy::Doc => d.doc as f64,
        };
        v.sort_by(|a, b| key(a).total_cmp(&key(b)).then(a.doc.cmp(&b.doc)));
        if self.descending {
            v.reverse();
        }
        v
    }

    fn list_ui(&mut self, ui: &mut Ui, cx: &Cx<'_>) {
        let Some(o) = &self.opened else {
            return;
        };
        let s = &o.summary;
        ui.label(format!(
            "{}: {} of {} documents from {} through {} (context {}); total {:.3} bits per byte, zstd {:.3}",
            o.dir.display(),
            s.docs.len(),
            s.manifest.documents,
            s.manifest.corpus,
            s.manifest.model,
            s.manifest.settings.context,
            s.bits_per_byte,
            s.zstd_bits_per_byte
        ));
        if o.model.is_none() {
            ui.label(
                RichText::new(format!(
                    "The model {} could not be read: tokens are shown as ids.",
                    s.manifest.model
                ))
                .weak(),
            );
        }
        ui.horizontal(|ui| {
            ui.label("sort by");
            for (v, label) in [
                (SortBy::BitsPerByte, "bits/byte"),
                (SortBy::Zstd, "zstd"),
                (SortBy::Gain, "model − zstd"),
                (SortBy::Doc, "document"),
            ] {
                ui.selectable_value(&mut self.sort, v, label);
            }
            ui.checkbox(&mut self.descending, "descending");
        });
        let rows = self.sorted(&s.docs);
        let mut clicked = None;
        egui::ScrollArea::vertical()
            .id_salt("corpus documents")
            .max_height(260.0)
            .show(ui, |ui| {
                egui::Grid::new("corpus grid")
                    .striped(true)
                    .num_columns(5)
                    .show(ui, |ui| {
                        for h in ["doc", "tokens", "bits/byte", "zstd b/B", "text"] {
                            ui.strong(h);
                        }
                        ui.end_row();
                        for d in rows {
                            let selected = self.selected == Some(d.doc);
                            if ui.selectable_label(selected, d.doc.to_string()).clicked() {
                                clicked = Some(d.doc);
                            }
                            ui.label(format!(
                                "{}{}",
                                d.tokens,
                                if d.truncated { " (cut)" } else { "" }
                            ));
                            ui.label(format!("{:.3}", d.bits_per_byte));
                            ui.label(format!("{:.3}", d.zstd_bits_per_byte));
                            let text: String = d.text.chars().take(90).collect();
                            let more = if d.text.chars().count() > 90 {
                                "…"
                            } else {
                                ""
                            };
                            if ui
                                .add(
                                    egui::Label::new(format!(
                                        "{}{more}",
                                        text.replace('\n', " ⏎ ")
                                    ))
                                    .sense(egui::Sense::click()),
                                )
                                .clicked()
                            {
                                clicked = Some(d.doc);
                            }
                            ui.end_row();
                        }
                    });
            });
        if let Some(d) = clicked {
            self.show_doc(d, cx);
        }
    }

    fn doc_ui(&self, ui: &mut Ui) {
        let (Some(o), Some(sel)) = (&self.opened, self.selected) else {
            ui.label(RichText::new("Click a document for its text view.").weak());
            return;
        };
        let Some(d) = &self.doc.as_ref().filter(|d| d.doc == sel) else {
            ui.spinner();
            return;
        };
        let rows = match &d.rows {
            Ok(r) => r,
            Err(e) => return super::error_line(ui, e),
        };
        let Some(row) = o.summary.docs.iter().find(|r| r.doc == sel) else {
            return;
        };
        let fig = build::document_figure(row, d.texts.clone(), rows, &o.summary.manifest.model);
        ui.strong(format!(
            "document {sel}: {} tokens, {:.1} bits, {:.3} bits per byte (zstd {:.3}){}",
            row.tokens,
            row.bits,
            row.bits_per_byte,
            row.zstd_bits_per_byte,
            if row.truncated {
                "; truncated to the context"
            } else {
                ""
            }
        ));
        if let prism_analysis::figure::FigureKind::Tokens {
            tokens,
            legend,
            value_name,
            ..
        } = &fig.kind
        {
            strip::legend_of(ui, value_name, legend);
            let texts = &d.texts;
            strip::draw(ui, tokens, &|ui, i| {
                let Some(r) = rows.get(i) else { return };
                ui.label(format!("{:?} (id {})", texts[i], r.id));
                match (r.surprisal_bits, r.rank, r.entropy_bits) {
                    (Some(b), Some(k), Some(h)) => {
                        ui.label(format!("{b:.2} bits, rank {k}, entropy {h:.2} bits"));
                    }
                    _ => {
                        ui.label("the first token is not predicted");
                    }
                }
                if let Some(m) = &o.model {
                    let top: Vec<String> = r
                        .top
                        .iter()
                        .filter(|(id, _)| *id >= 0)
                        .map(|(id, p)| format!("{:?} {p:.2}", m.token_text(*id as u32)))
                        .collect();
                    ui.label(format!("expected: {}", top.join(", ")));
                }
            });
        }
    }
}

impl View for CorpusView {
    fn id(&self) -> &'static str {
        "corpus"
    }

    fn label(&self) -> &'static str {
        "Corpus"
    }

    fn ui(&mut self, ui: &mut Ui, cx: &mut Cx<'_>) {
        if cx.loaded.is_none() {
            super::no_model(ui);
            return;
        }
        let mut go = false;
        ui.horizontal(|ui| {
            ui.label("Batch folder:");
            let r = ui.add(
                egui::TextEdit::singleline(&mut self.folder)
                    .hint_text(
                        "a folder written by `prism batch` (manifest.json and Parquet shards)",
                    )
                    .desired_width(460.0),
            );
            if r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                go = true;
            }
            if ui.button("Open folder…").clicked() {
                if let Some(p) = rfd::FileDialog::new().pick_folder() {
                    self.folder = p.display().to_string();
                    go = true;
                }
            }
            if ui.button("Open").clicked() {
                go = true;
            }
        });
        // A folder from the saved settings or `--set` opens on the first visit.
        let first = self.opened.is_none() && !self.loading && self.error.is_none();
        if (go || first) && !self.folder.trim().is_empty() {
            self.open(cx);
        }
        if self.folder.trim().is_empty() && self.opened.is_none() {
            ui.label(
                RichText::new(
                    "Run a corpus with `prism batch MODEL --corpus FILE --out DIR`, then open DIR here: its documents by bits per byte against zstd, each one's text by surprisal.",
                )
                .weak(),
            );
            return;
        }
        if let Some(e) = &self.error {
            super::error_line(ui, e);
            return;
        }
        if self.loading {
            ui.spinner();
            return;
        }
        self.list_ui(ui, cx);
        ui.separator();
        // The selected document (from the settings) is read once the folder is open.
        if let (Some(sel), None, false) = (self.selected, &self.doc, self.doc_pending) {
            if self
                .opened
                .as_ref()
                .is_some_and(|o| o.summary.docs.iter().any(|d| d.doc == sel))
            {
                self.show_doc(sel, cx);
            }
        }
        self.doc_ui(ui);
    }

    fn figure(&self, _cx: &Cx<'_>) -> Option<Figure> {
        let o = self.opened.as_ref()?;
        let doc = self.doc.as_ref().filter(|d| Some(d.doc) == self.selected);
        if let Some(d) = doc {
            if let (Ok(rows), Some(row)) = (&d.rows, o.summary.docs.iter().find(|r| r.doc == d.doc))
            {
                return Some(build::document_figure(
                    row,
                    d.texts.clone(),
                    rows,
                    &o.summary.manifest.model,
                ));
            }
        }
        Some(build::corpus_figure(&o.summary))
    }

    fn figures(&self, cx: &Cx<'_>) -> Vec<Figure> {
        let Some(o) = &self.opened else {
            return Vec::new();
        };
        let mut v = vec![build::corpus_figure(&o.summary)];
        if self.doc.is_some() {
            v.extend(self.figure(cx));
        }
        v
    }

    fn ready(&self, _cx: &Cx<'_>) -> bool {
        if self.folder.trim().is_empty() || self.error.is_some() {
            return true;
        }
        match (&self.opened, self.selected) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(_), Some(sel)) => self.doc.as_ref().is_some_and(|d| d.doc == sel),
        }
    }

    fn on_message(&mut self, msg: Box<dyn Any + Send>, _cx: &mut Cx<'_>) {
        let msg = match msg.downcast::<OpenedMsg>() {
            Ok(m) => {
                self.opened_msg(*m);
                return;
            }
            Err(other) => other,
        };
        if let Ok(m) = msg.downcast::<DocMsg>() {
            self.doc_pending = false;
            self.doc = Some(m.0);
        }
    }

    fn on_failed(&mut self, error: String, _cx: &mut Cx<'_>) {
        self.loading = false;
        self.doc_pending = false;
        self.error = Some(error);
    }

    crate::view_any!();
    crate::view_settings!();
}

impl CorpusView {
    fn opened_msg(&mut self, m: OpenedMsg) {
        self.loading = false;
        match m.0 {
            Ok(o) => {
                if self
                    .selected
                    .is_some_and(|s| !o.summary.docs.iter().any(|d| d.doc == s))
                {
                    self.selected = None;
                }
                self.opened = Some(o);
            }
            Err(e) => self.error = Some(e),
        }
    }
}
