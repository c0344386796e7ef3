//! The GUI's worker thread: loading, forward passes, projections and studies run here, never on
//! the UI thread. Jobs go in through a channel; replies come back through another, and each reply
//! asks the UI to repaint.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use prism_analysis::backend::{self, Backend, BackendChoice, Capture};
use prism_analysis::checkpoint::{self, Model};
use prism_analysis::geometry::color::{builtin_lexicon, run_study, ColorStudy};
use prism_analysis::geometry::project::{project, Method, Projection};
use prism_analysis::geometry::similarity::{cosine_matrix, NeighborIndex};
use prism_analysis::geometry::vectors::{Extractor, Source};
use prism_analysis::samples;
use prism_analysis::trace::Trace;

/// Longest text whose attention maps the app captures.
pub const MAX_ATTENTION_TOKENS: usize = 1024;

pub enum Job {
    Load {
        path: PathBuf,
        backend: BackendChoice,
    },
    Fetch {
        sample: String,
    },
    Run {
        generation: u64,
        text: String,
        bos: bool,
        lens: bool,
    },
    Project {
        generation: u64,
        words: Vec<String>,
        source: Source,
        method: Method,
        template: String,
    },
    Neighbors {
        word: String,
        source: Source,
        template: String,
    },
    Analogy {
        a: String,
        b: String,
        c: String,
        source: Source,
        template: String,
    },
    /// PCA of every row of the input embedding.
    ProjectVocabulary {
        generation: u64,
    },
    Colors {
        template: String,
    },
}

/// What a model card shows.
#[derive(Clone)]
pub struct Loaded {
    pub model: Arc<Model>,
    pub backend: String,
    pub notes: Vec<String>,
}

pub struct ProjectionResult {
    pub words: Vec<String>,
    pub split: Vec<(String, Vec<String>)>,
    pub projection: Projection,
    pub similarity: Vec<Vec<f64>>,
    pub vectors: Vec<Vec<f32>>,
}

// Replies are few per second; boxing the large ones would only add noise.
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    Progress(String),
    FetchProgress {
        done: u64,
        total: Option<u64>,
    },
    Fetched(Result<PathBuf, String>),
    Loaded(Result<Loaded, String>),
    Ran {
        generation: u64,
        result: Result<Trace, String>,
        text: String,
    },
    Projected {
        generation: u64,
        result: Result<ProjectionResult, String>,
    },
    Neighbors {
        word: String,
        result: Result<Vec<(String, f64)>, String>,
    },
    Analogy {
        query: String,
        result: Result<Vec<(String, f64)>, String>,
    },
    Vocabulary {
        result: Result<(Vec<String>, Vec<[f64; 2]>), String>,
    },
    Colors(Result<ColorStudy, String>),
}

pub struct Worker {
    jobs: Sender<Job>,
    pub replies: Receiver<Reply>,
    pub cancel: Arc<AtomicBool>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl Worker {
    pub fn spawn(repaint: impl Fn() + Send + 'static) -> Worker {
        Self::spawn_with_device(repaint, None)
    }

    /// `device`: the window's wgpu device, shared with the GPU backend when eframe renders with wgpu.
    pub fn spawn_with_device(
        repaint: impl Fn() + Send + 'static,
        device: Option<Arc<prism_analysis::backend::gpu::context::GpuContext>>,
    ) -> Worker {
        let (jobs, job_rx) = channel::<Job>();
        let (reply_tx, replies) = channel::<Reply>();
        let cancel = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (c, p) = (cancel.clone(), pending.clone());
        let spawned = std::thread::Builder::new()
            .name("prism-worker".into())
            .spawn(move || {
                let mut state = State {
                    model: None,
                    backend: None,
                    device,
                };
                for job in job_rx {
                    let send = |r: Reply| {
                        let _ = reply_tx.send(r);
                        repaint();
                    };
                    // A panic in a job is a bug; it must not take the app down with it.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        state.handle(job, &send, &c)
                    }));
                    if let Err(e) = outcome {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        send(Reply::Progress(format!(
                            "internal error in the worker (a bug): {msg}"
                        )));
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
            cancel,
            pending,
        }
    }

    pub fn send(&self, job: Job) {
        self.cancel.store(false, Ordering::SeqCst);
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.jobs.send(job).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// True while a job is queued or running.
    pub fn busy(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0
    }
}

/// Neighbours as (token text, cosine).
fn token_texts(
    model: &Model,
    found: &[prism_analysis::geometry::similarity::Neighbor],
) -> Vec<(String, f64)> {
    let tok = model.tokenizer.as_ref();
    found
        .iter()
        .map(|n| {
            (
                tok.map(|t| t.token_text(n.id)).unwrap_or_default(),
                n.cosine,
            )
        })
        .collect()
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
            } => {
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
                generation,
                text,
                bos,
                lens,
            } => {
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
                        logit_lens: lens,
                        top_k: 10,
                        sites: false,
                    };
                    Trace::run(model, b, &ids, capture, 10).map_err(|e| e.to_string())
                });
                send(Reply::Ran {
                    generation,
                    result,
                    text,
                });
            }
            Job::Project {
                generation,
                words,
                source,
                method,
                template,
            } => {
                let result = self.ready().and_then(|(model, b)| {
                    let mut ex = Extractor::new(model, b);
                    let v = ex
                        .vectors(&words, source, &template)
                        .map_err(|e| e.to_string())?;
                    let vectors: Vec<Vec<f32>> = v.iter().map(|w| w.vector.clone()).collect();
                    let projection = project(&vectors, method, 2, &mut |_| {}, cancel)
                        .map_err(|e| e.to_string())?;
                    Ok(ProjectionResult {
                        split: v
                            .iter()
                            .filter(|w| w.is_split())
                            .map(|w| (w.word.clone(), w.pieces.clone()))
                            .collect(),
                        words,
                        similarity: cosine_matrix(&vectors),
                        projection,
                        vectors,
                    })
                });
                send(Reply::Projected { generation, result });
            }
            Job::Neighbors {
                word,
                source,
                template,
            } => {
                let result = self.ready().and_then(|(model, b)| {
                    let mut ex = Extractor::new(model, b);
                    let v = ex
                        .vectors(std::slice::from_ref(&word), source, &template)
                        .map_err(|e| e.to_string())?;
                    let table = ex
                        .search_table(source == Source::Unembed, v[0].vector.len())
                        .map_err(|e| e.to_string())?;
                    Ok(token_texts(
                        model,
                        &NeighborIndex::new(table).nearest(&v[0].vector, 15, &[]),
                    ))
                });
                send(Reply::Neighbors { word, result });
            }
            Job::Analogy {
                a,
                b,
                c,
                source,
                template,
            } => {
                let query = format!("{a} - {b} + {c}");
                let result = self.ready().and_then(|(model, be)| {
                    let mut ex = Extractor::new(model, be);
                    let v = ex
                        .vectors(&[a, b, c], source, &template)
                        .map_err(|e| e.to_string())?;
                    let target = prism_analysis::geometry::similarity::analogy(
                        &v[0].vector,
                        &v[1].vector,
                        &v[2].vector,
                    );
                    let table = ex
                        .search_table(source == Source::Unembed, target.len())
                        .map_err(|e| e.to_string())?;
                    let exclude: Vec<u32> = v.iter().flat_map(|w| w.ids.iter().copied()).collect();
                    Ok(token_texts(
                        model,
                        &NeighborIndex::new(table).nearest(&target, 10, &exclude),
                    ))
                });
                send(Reply::Analogy { query, result });
            }
            Job::ProjectVocabulary { generation } => {
                let result = self.ready().and_then(|(model, be)| {
                    send(Reply::Progress("PCA of the whole vocabulary".into()));
                    let mut ex = Extractor::new(model, be);
                    let table = ex.embedding_table().map_err(|e| e.to_string())?;
                    let rows: Vec<Vec<f32>> =
                        (0..table.rows).map(|i| table.row(i).to_vec()).collect();
                    let p = project(&rows, Method::Pca, 2, &mut |_| {}, cancel)
                        .map_err(|e| e.to_string())?;
                    let tok = model.tokenizer.as_ref();
                    let labels = (0..table.rows as u32)
                        .map(|i| {
                            tok.map(|t| t.token_text(i))
                                .unwrap_or_else(|| format!("<{i}>"))
                        })
                        .collect();
                    Ok((labels, p.points.iter().map(|q| [q[0], q[1]]).collect()))
                });
                let _ = generation;
                send(Reply::Vocabulary { result });
            }
            Job::Colors { template } => {
                let result = self.ready().and_then(|(model, b)| {
                    let mut ex = Extractor::new(model, b);
                    let mut progress = |done: usize, total: usize| {
                        send(Reply::Progress(format!(
                            "color study: {done} of {total} representations"
                        )))
                    };
                    run_study(
                        &mut ex,
                        &builtin_lexicon(),
                        &template,
                        prism_analysis::geometry::rsa::DEFAULT_PERMUTATIONS,
                        prism_analysis::geometry::rsa::DEFAULT_SEED,
                        &mut progress,
                        Some(cancel),
                    )
                    .map_err(|e| e.to_string())
                });
                send(Reply::Colors(result));
            }
        }
    }
}
