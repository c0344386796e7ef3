//! The GUI's worker thread: loading and every computation run here, never on the UI thread. Jobs
//! go in through a channel; replies come back through another, and each reply asks the UI to
//! repaint. A view's own work is a [`Job::Task`]: a closure from that view's file, whose messages
//! come back addressed to the view (by its id), so that the worker knows nothing about views.

use std::any::Any;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use prism_analysis::backend::{self, Backend, BackendChoice, Capture};
use prism_analysis::checkpoint::{self, Model};
use prism_analysis::intervene::Intervention;
use prism_analysis::samples;
use prism_analysis::trace::{RunSummary, Trace};

/// Longest text whose attention maps the app captures.
pub const MAX_ATTENTION_TOKENS: usize = 1024;

/// What a view's task gets: the open model, its backend, its cancel flag, and a way to send
/// messages back to the view.
pub struct TaskCx<'a> {
    pub model: &'a Arc<Model>,
    pub backend: &'a dyn Backend,
    pub cancel: &'a AtomicBool,
    to: &'static str,
    send: &'a dyn Fn(Reply),
}

impl TaskCx<'_> {
    /// A message for the view that sent the task.
    pub fn send<T: Any + Send>(&self, msg: T) {
        (self.send)(Reply::ToView {
            to: self.to,
            msg: Box::new(msg),
        });
    }

    /// A line for the status bar.
    pub fn progress(&self, s: impl Into<String>) {
        (self.send)(Reply::Progress(s.into()));
    }
}

pub type TaskFn = Box<dyn FnOnce(&TaskCx<'_>) + Send>;

pub enum Job {
    Load {
        path: PathBuf,
        backend: BackendChoice,
    },
    Fetch {
        sample: String,
    },
    /// The shared run of the prompt that the text, attention and lens views show.
    Run {
        id: u64,
        text: String,
        bos: bool,
        interventions: Vec<Intervention>,
    },
    Task {
        to: &'static str,
        run: TaskFn,
    },
}

/// What a model card shows.
#[derive(Clone)]
pub struct Loaded {
    pub model: Arc<Model>,
    pub backend: String,
    pub notes: Vec<String>,
}

pub enum Reply {
    Progress(String),
    FetchProgress {
        done: u64,
        total: Option<u64>,
    },
    Fetched(Result<PathBuf, String>),
    Loaded(Result<Loaded, String>),
    Ran {
        id: u64,
        /// The trace and its summary (zstd included), both made on the worker.
        result: Result<(Box<Trace>, RunSummary), String>,
        text: String,
    },
    /// A message from a view's task, for that view.
    ToView {
        to: &'static str,
        msg: Box<dyn Any + Send>,
    },
    /// A view's task could not run (no model) or failed unexpectedly.
    TaskFailed {
        to: &'static str,
        error: String,
    },
}

pub struct Worker {
    jobs: Sender<(Job, Arc<AtomicBool>)>,
    pub replies: Receiver<Reply>,
    pending: Arc<AtomicUsize>,
    /// The cancel flags of queued and running jobs.
    flags: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
}

impl Worker {
    pub fn spawn(repaint: impl Fn() + Send + 'static) -> Worker {
        Self::spawn_with_device(repaint, None)
    }

    /// `device`: the one GPU device of the app (the window's, when eframe renders with wgpu).
    pub fn spawn_with_device(
        repaint: impl Fn() + Send + 'static,
        device: Option<Arc<prism_analysis::backend::gpu::context::GpuContext>>,
    ) -> Worker {
        let (jobs, job_rx) = channel::<(Job, Arc<AtomicBool>)>();
        let (reply_tx, replies) = channel::<Reply>();
        let pending = Arc::new(AtomicUsize::new(0));
        let flags: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let (p, f) = (pending.clone(), flags.clone());
        let spawned = std::thread::Builder::new()
            .name("prism-worker".into())
            .spawn(move || {
                let mut state = State {
                    model: None,
                    backend: None,
                    device,
                };
                for (job, cancel) in job_rx {
                    let send = |r: Reply| {
                        let _ = reply_tx.send(r);
                        repaint();
                    };
                    let to = match &job {
                        Job::Task { to, .. } => Some(*to),
                        _ => None,
                    };
                    // A panic in a job is a bug; it must not take the app down with it.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        state.handle(job, &send, &cancel)
                    }));
                    if let Err(e) = outcome {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        let error = format!("internal error in the worker (a bug): {msg}");
                        match to {
                            Some(to) => send(Reply::TaskFailed { to, error }),
                            None => send(Reply::Progress(error)),
                        }
                    }
                    if let Ok(mut list) = f.lock() {
                        list.retain(|x| !Arc::ptr_eq(x, &cancel));
                    }
                    p.fetch_sub(1, Ordering::SeqCst);
                    repaint();
                }
            });
        if let Err(e) = spawned {
            eprintln!("prism: cannot start the worker thread: {e}");
        }
        Worker {
            jobs,
            replies,
            pending,
            flags,
        }
    }

    /// Queues a job; the returned flag cancels it (before it starts, or between its steps).
    pub fn send(&self, job: Job) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.pending.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut list) = self.flags.lock() {
            list.push(flag.clone());
        }
        if self.jobs.send((job, flag.clone())).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
        flag
    }

    /// Queues a view's task (see [`TaskCx`]).
    pub fn task(
        &self,
        to: &'static str,
        run: impl FnOnce(&TaskCx<'_>) + Send + 'static,
    ) -> Arc<AtomicBool> {
        self.send(Job::Task {
            to,
            run: Box::new(run),
        })
    }

    /// Cancels every queued and running job.
    pub fn cancel_all(&self) {
        if let Ok(list) = self.flags.lock() {
            for f in list.iter() {
                f.store(true, Ordering::SeqCst);
            }
        }
    }

    /// True while a job is queued or running.
    pub fn busy(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0
    }
}

struct State {
    model: Option<Arc<Model>>,
    backend: Option<Box<dyn Backend>>,
    device: Option<Arc<prism_analysis::backend::gpu::context::GpuContext>>,
}

impl State {
    fn ready(&self) -> Result<(&Arc<Model>, &dyn Backend), String> {
        match (&self.model, &self.backend) {
            (Some(m), Some(b)) => Ok((m, b.as_ref())),
            _ => Err("no model is open".into()),
        }
    }

    fn handle(&mut self, job: Job, send: &dyn Fn(Reply), cancel: &AtomicBool) {
        match job {
            Job::Load {
                path,
                backend: choice,
            } => self.load(path, choice, send, cancel),
            Job::Fetch { sample } => {
                let Some(s) = samples::find(&sample) else {
                    send(Reply::Fetched(Err(format!("unknown sample {sample:?}"))));
                    return;
                };
                let mut progress = |p: samples::Progress| {
                    if let samples::Progress::Downloaded { done, total } = p {
                        send(Reply::FetchProgress { done, total });
                    }
                };
                send(Reply::Fetched(
                    samples::fetch(s, &mut progress, cancel).map_err(|e| e.to_string()),
                ));
            }
            Job::Run {
                id,
                text,
                bos,
                interventions,
            } => {
                if cancel.load(Ordering::SeqCst) {
                    return;
                }
                let result = self.ready().and_then(|(model, b)| {
                    let tok = model
                        .tokenizer
                        .as_ref()
                        .ok_or("this model has no tokenizer")?;
                    let ids = tok.encode(&text, bos).map_err(|e| e.to_string())?;
                    backend::check_ids(model, &ids).map_err(|e| e.to_string())?;
                    // Every head's map for 1,024 tokens of a 30-layer model is about a gigabyte;
                    // beyond that the attention view says why it has none.
                    let capture = Capture {
                        attention: ids.len() <= MAX_ATTENTION_TOKENS,
                        residual: false,
                        logits: false,
                        logit_lens: false,
                        top_k: 10,
                        sites: false,
                        // Small ([rows, experts] per layer): the experts view reads it.
                        experts: model.spec.experts.is_some(),
                    };
                    Trace::run_with(model, b, &ids, capture, 10, &interventions)
                        .map(|t| {
                            let summary = RunSummary::of(&t, Some(&text));
                            (Box::new(t), summary)
                        })
                        .map_err(|e| e.to_string())
                });
                send(Reply::Ran { id, result, text });
            }
            Job::Task { to, run } => {
                if cancel.load(Ordering::SeqCst) {
                    send(Reply::TaskFailed {
                        to,
                        error: "cancelled".into(),
                    });
                    return;
                }
                match self.ready() {
                    Ok((model, backend)) => run(&TaskCx {
                        model,
                        backend,
                        cancel,
                        to,
                        send,
                    }),
                    Err(error) => send(Reply::TaskFailed { to, error }),
                }
            }
        }
    }

    fn load(
        &mut self,
        path: PathBuf,
        choice: BackendChoice,
        send: &dyn Fn(Reply),
        cancel: &AtomicBool,
    ) {
        send(Reply::Progress(format!("loading {}", path.display())));
        let result = checkpoint::load(&path)
            .map_err(|e| e.to_string())
            .and_then(|model| {
                let model = Arc::new(model);
                send(Reply::Progress("preparing the backend".into()));
                let (b, mut notes) = match &self.device {
                    Some(ctx) => backend::create_with_device(&model, choice, ctx.clone()),
                    None => backend::create(&model, choice),
                }
                .map_err(|e| e.to_string())?;
                notes.extend(model.warnings.iter().cloned());
                Ok((model, b, notes))
            });
        if cancel.load(Ordering::SeqCst) {
            send(Reply::Loaded(Err("loading cancelled".into())));
            return;
        }
        match result {
            Ok((model, b, notes)) => {
                let loaded = Loaded {
                    model: model.clone(),
                    backend: b.describe(),
                    notes,
                };
                self.model = Some(model);
                self.backend = Some(b);
                send(Reply::Loaded(Ok(loaded)));
            }
            Err(e) => send(Reply::Loaded(Err(e))),
        }
    }
}
