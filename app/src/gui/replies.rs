//! Applying the worker's replies: each kind to its place, a view's messages to that view (by its
//! id), and results of superseded runs dropped.

use super::worker::Reply;
use super::PrismApp;
use crate::views::SharedRun;

impl PrismApp {
    /// Applies every reply that has arrived; never waits.
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
                            self.interventions.clear();
                            self.model_changed();
                            self.request_run();
                        }
                        Err(e) => {
                            self.error = Some(e);
                            self.status = "loading failed".into();
                        }
                    }
                }
                Reply::Ran { id, result, text } => match result {
                    // Only the newest run is shown; an older one that arrives late is dropped.
                    Ok((t, summary)) if id == self.run_id => {
                        self.run = Some(SharedRun {
                            id,
                            trace: *t,
                            text,
                            summary,
                        });
                        self.error = None;
                    }
                    Ok(_) => {}
                    Err(e) => self.error = Some(e),
                },
                Reply::ToView { to, msg } => {
                    if let Some(i) = self.views.iter().position(|v| v.id() == to) {
                        self.with_view(i, |v, cx| v.on_message(msg, cx));
                    }
                }
                Reply::TaskFailed { to, error } => {
                    if let Some(i) = self.views.iter().position(|v| v.id() == to) {
                        self.with_view(i, |v, cx| v.on_failed(error, cx));
                    }
                }
            }
        }
    }
}
