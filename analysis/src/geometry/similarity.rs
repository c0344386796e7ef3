//! Cosine similarity, exact nearest neighbours over a whole vocabulary, analogies and concept axes.

// Symmetric matrices read best with explicit (i, j) loops.
#![allow(clippy::needless_range_loop)]

use serde::Serialize;

use super::vectors::Table;

pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    // Eight f32 lanes summed in f64 at the end: fast, and accurate enough for cosines.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s: f64 = acc.iter().map(|&x| x as f64).sum();
    for i in chunks * 8..a.len() {
        s += a[i] as f64 * b[i] as f64;
    }
    s
}

fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (ab, aa, bb) = (dot64(a, b), dot64(a, a), dot64(b, b));
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// `[i][j]` = cosine(vectors[i], vectors[j]).
pub fn cosine_matrix(vectors: &[Vec<f32>]) -> Vec<Vec<f64>> {
    let n = vectors.len();
    let mut m = vec![vec![1.0; n]; n];
    for i in 0..n {
        for j in i + 1..n {
            let c = cosine(&vectors[i], &vectors[j]);
            m[i][j] = c;
            m[j][i] = c;
        }
    }
    m
}

/// Mean-centres vectors (removes the shared direction that makes contextual cosines all high).
pub fn centered(vectors: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let n = vectors.len().max(1) as f64;
    let width = vectors.first().map(|v| v.len()).unwrap_or(0);
    let mut mean = vec![0f64; width];
    for v in vectors {
        for (m, &x) in mean.iter_mut().zip(v) {
            *m += x as f64 / n;
        }
    }
    vectors
        .iter()
        .map(|v| {
            v.iter()
                .zip(&mean)
                .map(|(&x, m)| (x as f64 - m) as f32)
                .collect()
        })
        .collect()
}

/// Indices of the `k` largest finite scores, largest first (excluded rows are -inf).
fn top_k_indices(scores: &[f32], k: usize) -> Vec<u32> {
    let mut idx = crate::metrics::top_k_order(scores, k);
    idx.retain(|&i| scores[i as usize].is_finite());
    idx
}

/// A vocabulary with unit-length rows, for exact cosine neighbour search.
pub struct NeighborIndex {
    pub rows: usize,
    pub width: usize,
    unit: Vec<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Neighbor {
    pub id: u32,
    pub cosine: f64,
}

impl NeighborIndex {
    pub fn new(table: &Table) -> NeighborIndex {
        let mut unit = table.data.clone();
        for r in unit.chunks_mut(table.width) {
            let n = r
                .iter()
                .map(|&x| (x as f64) * (x as f64))
                .sum::<f64>()
                .sqrt();
            if n > 0.0 {
                for x in r.iter_mut() {
                    *x = (*x as f64 / n) as f32;
                }
            }
        }
        NeighborIndex {
            rows: table.rows,
            width: table.width,
            unit,
        }
    }

    /// The `k` rows with the highest cosine to `query`, skipping `exclude`; exact, on all cores.
    pub fn nearest(&self, query: &[f32], k: usize, exclude: &[u32]) -> Vec<Neighbor> {
        let qn = dot64(query, query).sqrt();
        if qn == 0.0 || query.len() != self.width {
            return Vec::new();
        }
        let q: Vec<f32> = query.iter().map(|&x| (x as f64 / qn) as f32).collect();
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8);
        let per = self.rows.div_ceil(threads);
        let mut scores = vec![0f32; self.rows];
        std::thread::scope(|s| {
            for (t, chunk) in scores.chunks_mut(per).enumerate() {
                let q = &q;
                s.spawn(move || {
                    for (i, out) in chunk.iter_mut().enumerate() {
                        let row = t * per + i;
                        *out = dot(q, &self.unit[row * self.width..(row + 1) * self.width]) as f32;
                    }
                });
            }
        });
        for &e in exclude {
            if let Some(s) = scores.get_mut(e as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
        top_k_indices(&scores, k)
            .into_iter()
            .map(|id| Neighbor {
                id,
                cosine: dot64(
                    &q,
                    &self.unit[id as usize * self.width..(id as usize + 1) * self.width],
                ),
            })
            .collect()
    }
}

/// `a - b + c`, the classic analogy vector (king - man + woman).
pub fn analogy(a: &[f32], b: &[f32], c: &[f32]) -> Vec<f32> {
    a.iter()
        .zip(b)
        .zip(c)
        .map(|((&a, &b), &c)| a - b + c)
        .collect()
}

/// Where `v` falls on the axis from `from` (0) to `to` (1): the scalar projection of `v - from`
/// onto `to - from`, divided by the axis length.
pub fn axis_position(v: &[f32], from: &[f32], to: &[f32]) -> f64 {
    let d: Vec<f64> = to
        .iter()
        .zip(from)
        .map(|(&t, &f)| t as f64 - f as f64)
        .collect();
    let dd: f64 = d.iter().map(|x| x * x).sum();
    if dd == 0.0 {
        return 0.0;
    }
    v.iter()
        .zip(from)
        .zip(&d)
        .map(|((&x, &f), dx)| (x as f64 - f as f64) * dx)
        .sum::<f64>()
        / dd
}

/// Exact neighbour search on the GPU: the unit-length vocabulary lives on the device, one matmul
/// scores every row against the query, and only the scores come back.
pub struct GpuNeighborIndex {
    ctx: std::sync::Arc<crate::backend::gpu::context::GpuContext>,
    matrix: crate::backend::gpu::upload::GpuMatrix,
    rows: usize,
    width: usize,
}

impl GpuNeighborIndex {
    pub fn new(
        ctx: std::sync::Arc<crate::backend::gpu::context::GpuContext>,
        table: &Table,
    ) -> crate::error::Result<GpuNeighborIndex> {
        let cpu = NeighborIndex::new(table);
        let w = crate::weights::Weight::from_f32(
            "unit vocabulary",
            vec![table.rows, table.width],
            &cpu.unit,
        )?;
        let matrix = crate::backend::gpu::upload::GpuMatrix::upload(&ctx, &w)?;
        Ok(GpuNeighborIndex {
            ctx,
            matrix,
            rows: table.rows,
            width: table.width,
        })
    }

    pub fn adapter(&self) -> String {
        self.ctx.adapter.name.clone()
    }

    pub fn nearest(
        &self,
        query: &[f32],
        k: usize,
        exclude: &[u32],
    ) -> crate::error::Result<Vec<Neighbor>> {
        let qn = dot64(query, query).sqrt();
        if qn == 0.0 || query.len() != self.width {
            return Ok(Vec::new());
        }
        let q: Vec<f32> = query.iter().map(|&x| (x as f64 / qn) as f32).collect();
        let ctx = &self.ctx;
        let qb = ctx.upload_f32("query", &q);
        let out = ctx.scratch("scores", self.rows)?;
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        use crate::backend::gpu::ops::matmul::{matmul, Linear};
        matmul(ctx, &mut enc, &Linear::new(&qb, &self.matrix, &out, 1))?;
        let staging = ctx.staging("scores", (self.rows * 4) as u64)?;
        enc.copy_buffer_to_buffer(&out, 0, &staging, 0, None);
        let bytes = ctx.finish(enc, &[&staging])?;
        let mut scores = crate::backend::gpu::context::f32s_from(
            bytes.first().map(Vec::as_slice).unwrap_or(&[]),
        );
        for &e in exclude {
            if let Some(s) = scores.get_mut(e as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
        Ok(top_k_indices(&scores, k)
            .into_iter()
            .map(|id| Neighbor {
                id,
                cosine: scores[id as usize] as f64,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_are_exact_and_exclude() {
        let table = Table {
            rows: 5,
            width: 3,
            data: vec![
                1.0, 0.0, 0.0, 0.9, 0.1, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.7, 0.7, 0.0,
            ],
        };
        let idx = NeighborIndex::new(&table);
        let n = idx.nearest(&[1.0, 0.0, 0.0], 3, &[]);
        assert_eq!(n.iter().map(|n| n.id).collect::<Vec<_>>(), vec![0, 1, 4]);
        assert!((n[0].cosine - 1.0).abs() < 1e-9);
        let n = idx.nearest(&[1.0, 0.0, 0.0], 2, &[0]);
        assert_eq!(n.iter().map(|n| n.id).collect::<Vec<_>>(), vec![1, 4]);
    }

    #[test]
    fn axis_and_analogy() {
        assert!((axis_position(&[0.5, 0.0], &[0.0, 0.0], &[1.0, 0.0]) - 0.5).abs() < 1e-12);
        assert!((axis_position(&[2.0, 5.0], &[0.0, 0.0], &[1.0, 0.0]) - 2.0).abs() < 1e-12);
        assert_eq!(
            analogy(&[1.0, 2.0], &[1.0, 0.0], &[0.0, 1.0]),
            vec![0.0, 3.0]
        );
        let m = cosine_matrix(&[vec![1.0, 0.0], vec![0.0, 1.0], vec![1.0, 1.0]]);
        assert!((m[0][2] - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        assert_eq!(m[0][1], 0.0);
    }
}
