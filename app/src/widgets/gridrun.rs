//! A layer-by-layer computation shown as a grid that fills in (activation patching, head
//! ablation): what it started with, its rows as they arrive, its result or error, and its cancel
//! flag. The views keep one and feed it the messages of their tasks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::gui::worker::TaskCx;

pub struct GridRun<R, S> {
    pub tag: u64,
    /// What the task reported when it started (token ids, column labels...).
    pub info: Option<S>,
    pub n_layers: usize,
    /// One row per finished layer.
    pub rows: Vec<Vec<f64>>,
    pub result: Option<R>,
    pub error: Option<String>,
    cancel: Arc<AtomicBool>,
}

/// A message from a grid task.
pub enum GridMsg<R, S> {
    Started {
        tag: u64,
        n_layers: usize,
        info: S,
    },
    Row {
        tag: u64,
        layer: usize,
        row: Vec<f64>,
    },
    Done {
        tag: u64,
        result: Result<R, String>,
    },
}

/// What a grid task sends through, tagged with its run.
pub struct GridSender<'a, 'b, R, S> {
    t: &'a TaskCx<'b>,
    tag: u64,
    kind: std::marker::PhantomData<fn() -> (R, S)>,
}

impl<'a, 'b, R: Send + 'static, S: Send + 'static> GridSender<'a, 'b, R, S> {
    pub fn new(t: &'a TaskCx<'b>, tag: u64) -> Self {
        GridSender {
            t,
            tag,
            kind: std::marker::PhantomData,
        }
    }

    pub fn started(&self, n_layers: usize, info: S) {
        self.t.send(GridMsg::<R, S>::Started {
            tag: self.tag,
            n_layers,
            info,
        });
    }

    /// Layer `done - 1` finished with `row` (the engines' progress callbacks count from 1).
    pub fn row(&self, done: usize, row: &[f64]) {
        self.t.send(GridMsg::<R, S>::Row {
            tag: self.tag,
            layer: done - 1,
            row: row.to_vec(),
        });
    }

    pub fn done(&self, result: Result<R, String>, what: &str) {
        self.t.progress(match &result {
            Ok(_) => format!("{what} done"),
            Err(_) => format!("{what} stopped"),
        });
        self.t.send(GridMsg::<R, S>::Done {
            tag: self.tag,
            result,
        });
    }
}

impl<R, S> GridRun<R, S> {
    pub fn new(tag: u64, cancel: Arc<AtomicBool>) -> Self {
        GridRun {
            tag,
            info: None,
            n_layers: 0,
            rows: Vec::new(),
            result: None,
            error: None,
            cancel,
        }
    }

    pub fn running(&self) -> bool {
        self.result.is_none() && self.error.is_none()
    }

    pub fn stop(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Applies a message if it belongs to this run; `rows_of` is the final grid of a result.
    pub fn apply(&mut self, msg: GridMsg<R, S>, rows_of: impl Fn(&R) -> Vec<Vec<f64>>) {
        match msg {
            GridMsg::Started {
                tag,
                n_layers,
                info,
            } if tag == self.tag => {
                self.n_layers = n_layers;
                self.info = Some(info);
            }
            GridMsg::Row { tag, layer, row } if tag == self.tag && self.rows.len() == layer => {
                self.rows.push(row);
            }
            GridMsg::Done { tag, result } if tag == self.tag => match result {
                Ok(r) => {
                    self.rows = rows_of(&r);
                    self.result = Some(r);
                }
                Err(e) => self.error = Some(e),
            },
            _ => {}
        }
    }

    /// The task could not run, or failed.
    pub fn fail(&mut self, error: String) {
        if self.result.is_none() {
            self.error = Some(error);
        }
    }

    /// The largest absolute value so far, at least `floor` (the color scale's bound).
    pub fn bound(&self, floor: f64) -> f64 {
        self.rows
            .iter()
            .flatten()
            .fold(floor, |m, v| m.max(v.abs()))
    }
}

/// The Stop button while `run` is running, else the button that starts one; true when that was
/// clicked.
pub fn start_or_stop<R, S>(ui: &mut egui::Ui, run: Option<&GridRun<R, S>>, start: &str) -> bool {
    match run.filter(|r| r.running()) {
        Some(r) => {
            if ui.button("Stop").clicked() {
                r.stop();
            }
            false
        }
        None => ui.button(start).clicked(),
    }
}
