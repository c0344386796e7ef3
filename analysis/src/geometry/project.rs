//! Projections of word vectors to 2-D or 3-D: PCA (linfa-reduction) and t-SNE (linfa-tsne, a fixed
//! seed), and a kiddo k-d tree over the projected points for picking and neighbourhoods.

use std::num::NonZero;
use std::sync::atomic::{AtomicBool, Ordering};

use kiddo::{ImmutableKdTree, SquaredEuclidean};
use linfa::prelude::*;
use linfa_reduction::Pca;
use linfa_tsne::TSneParams;
use ndarray::Array2;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::error::{PrismError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Pca,
    Tsne,
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "pca" => Ok(Method::Pca),
            "tsne" | "t-sne" => Ok(Method::Tsne),
            other => Err(format!("unknown method {other:?} (pca, tsne)")),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Projection {
    pub method: Method,
    pub dims: usize,
    /// One row per input vector.
    pub points: Vec<Vec<f64>>,
    /// For PCA: the variance each component explains, as a fraction.
    pub explained_variance_ratio: Option<Vec<f64>>,
}

/// What a long projection reports while it runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stage {
    Preparing,
    Running,
    Done,
}

pub const TSNE_SEED: u64 = 42;

fn matrix(vectors: &[Vec<f32>]) -> Result<Array2<f64>> {
    let n = vectors.len();
    let d = vectors.first().map(|v| v.len()).unwrap_or(0);
    if vectors.iter().any(|v| v.len() != d) {
        return Err(PrismError::Input(
            "vectors of different lengths cannot be projected together".into(),
        ));
    }
    Array2::from_shape_vec(
        (n, d),
        vectors
            .iter()
            .flat_map(|v| v.iter().map(|&x| x as f64))
            .collect(),
    )
    .map_err(|e| PrismError::Input(format!("cannot build the data matrix: {e}")))
}

/// Projects `vectors` to `dims` (2 or 3) dimensions. `cancel` is checked between stages, and
/// stops a running t-SNE at once.
pub fn project(
    vectors: &[Vec<f32>],
    method: Method,
    dims: usize,
    progress: &mut dyn FnMut(Stage),
    cancel: &AtomicBool,
) -> Result<Projection> {
    if !(2..=3).contains(&dims) {
        return Err(PrismError::Input(format!(
            "{dims} dimensions: projections are 2-D or 3-D"
        )));
    }
    let n = vectors.len();
    if n <= dims {
        return Err(PrismError::Input(format!(
            "{n} words are too few for a {dims}-D projection"
        )));
    }
    progress(Stage::Preparing);
    let x = matrix(vectors)?;
    if cancel.load(Ordering::Relaxed) {
        return Err(PrismError::Cancelled);
    }
    progress(Stage::Running);
    let out = match method {
        Method::Pca => {
            let ds = DatasetBase::from(x);
            let pca = Pca::params(dims)
                .fit(&ds)
                .map_err(|e| PrismError::Input(format!("PCA failed: {e}")))?;
            let ratio = pca.explained_variance_ratio().to_vec();
            let projected = pca.predict(&ds);
            Projection {
                method,
                dims,
                points: projected.rows().into_iter().map(|r| r.to_vec()).collect(),
                explained_variance_ratio: Some(ratio),
            }
        }
        Method::Tsne => {
            // Perplexity must stay below (n - 1) / 3.
            let perplexity = (((n - 1) as f64) / 3.0 - 1e-6).min(30.0);
            if perplexity < 1.0 {
                return Err(PrismError::Input(format!(
                    "{n} words are too few for t-SNE (at least 5 are needed)"
                )));
            }
            // linfa's t-SNE has no way to stop it midway, so it runs on a thread of its own and
            // a cancel returns at once; an abandoned run finishes in the background and is dropped.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("prism-tsne".into())
                .spawn(move || {
                    let rng = SmallRng::seed_from_u64(TSNE_SEED);
                    let out = TSneParams::embedding_size_with_rng(dims, rng)
                        .perplexity(perplexity)
                        .approx_threshold(if n > 300 { 0.5 } else { 0.0 })
                        .max_iter(1000)
                        .transform(x)
                        .map_err(|e| e.to_string());
                    let _ = tx.send(out);
                })
                .map_err(|e| PrismError::Backend(format!("cannot start t-SNE: {e}")))?;
            let emb = loop {
                if cancel.load(Ordering::Relaxed) {
                    return Err(PrismError::Cancelled);
                }
                match rx.recv_timeout(std::time::Duration::from_millis(20)) {
                    Ok(r) => {
                        break r.map_err(|e| PrismError::Input(format!("t-SNE failed: {e}")))?
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        return Err(PrismError::Backend("t-SNE stopped unexpectedly".into()))
                    }
                }
            };
            Projection {
                method,
                dims,
                points: emb.rows().into_iter().map(|r| r.to_vec()).collect(),
                explained_variance_ratio: None,
            }
        }
    };
    if cancel.load(Ordering::Relaxed) {
        return Err(PrismError::Cancelled);
    }
    progress(Stage::Done);
    Ok(out)
}

/// A k-d tree over 2-D points: the point under the cursor, and neighbourhoods in the plot.
pub struct PointIndex {
    tree: ImmutableKdTree<f64, 2>,
    len: usize,
}

impl PointIndex {
    pub fn new(points: &[[f64; 2]]) -> Result<PointIndex> {
        let tree = ImmutableKdTree::new_from_slice(points)
            .map_err(|e| PrismError::Input(format!("cannot index the points: {e:?}")))?;
        Ok(PointIndex {
            tree,
            len: points.len(),
        })
    }

    /// The index of the nearest point and its distance, if any point lies within `max_distance`.
    pub fn pick(&self, at: [f64; 2], max_distance: f64) -> Option<(usize, f64)> {
        if self.len == 0 {
            return None;
        }
        let nearest = self
            .tree
            .query(&at)
            .nearest_one::<SquaredEuclidean<f64>>()
            .execute();
        let d = nearest.distance.sqrt();
        (d <= max_distance).then_some((nearest.item as usize, d))
    }

    /// The `k` points nearest to `at`, nearest first, with distances.
    pub fn nearest(&self, at: [f64; 2], k: usize) -> Vec<(usize, f64)> {
        let Some(k) = NonZero::new(k.min(self.len)) else {
            return Vec::new();
        };
        self.tree
            .query(&at)
            .nearest_n::<SquaredEuclidean<f64>>(k)
            .execute()
            .into_iter()
            .map(|r| (r.item as usize, r.distance.sqrt()))
            .collect()
    }
}
