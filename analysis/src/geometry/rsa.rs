//! Representational similarity analysis between two distance matrices: Spearman's rho and
//! Kendall's tau-b over the upper-triangle pairs, and a Mantel permutation test (rows and columns
//! of one matrix relabelled together; one-sided p = (1 + #(rho_perm >= rho)) / (1 + permutations)).

// Symmetric matrices read best with explicit (i, j) loops.
#![allow(clippy::needless_range_loop)]

pub use crate::rng::Rng;
use serde::Serialize;

/// Average ranks (1-based), ties sharing the mean of their positions.
pub fn ranks(values: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && values[idx[j + 1]] == values[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            out[k] = r;
        }
        i = j + 1;
    }
    out
}

pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        return 0.0;
    }
    sab / (saa * sbb).sqrt()
}

pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&ranks(a), &ranks(b))
}

/// Kendall's tau-b (ties in either variable corrected).
pub fn kendall(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len();
    let (mut concordant, mut discordant, mut ties_a, mut ties_b) = (0f64, 0f64, 0f64, 0f64);
    for i in 0..n {
        for j in i + 1..n {
            let da = (a[i] - a[j]).signum() * ((a[i] != a[j]) as i32 as f64);
            let db = (b[i] - b[j]).signum() * ((b[i] != b[j]) as i32 as f64);
            if da == 0.0 && db == 0.0 {
                continue;
            } else if da == 0.0 {
                ties_a += 1.0;
            } else if db == 0.0 {
                ties_b += 1.0;
            } else if da == db {
                concordant += 1.0;
            } else {
                discordant += 1.0;
            }
        }
    }
    let denom = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)).sqrt();
    if denom == 0.0 {
        0.0
    } else {
        (concordant - discordant) / denom
    }
}

/// The upper triangle (i < j) of a square matrix, row by row.
pub fn upper_triangle(m: &[Vec<f64>]) -> Vec<f64> {
    let n = m.len();
    let mut out = Vec::with_capacity(n * n.saturating_sub(1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            out.push(m[i][j]);
        }
    }
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct RsaResult {
    pub spearman_rho: f64,
    pub kendall_tau: f64,
    pub mantel_p: f64,
    pub permutations: usize,
    pub null_mean: f64,
    pub null_sd: f64,
    pub pairs: usize,
}

pub const DEFAULT_PERMUTATIONS: usize = 10_000;
pub const DEFAULT_SEED: u64 = 12345;

/// RSA between two distance matrices over the same items. `cancel` is polled between permutations.
pub fn rsa(
    model: &[Vec<f64>],
    reference: &[Vec<f64>],
    permutations: usize,
    seed: u64,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Option<RsaResult> {
    let n = model.len();
    if n < 3 || reference.len() != n {
        return None;
    }
    let a = upper_triangle(model);
    let b = upper_triangle(reference);
    let rho = spearman(&a, &b);
    // Ranks of the model distances are fixed under relabelling; only their positions move, so the
    // permuted statistic is the Pearson correlation of permuted model ranks with reference ranks.
    let rank_a = ranks(&a);
    let rank_b = ranks(&b);
    let mut rank_matrix = vec![vec![0.0; n]; n];
    let mut k = 0;
    for i in 0..n {
        for j in i + 1..n {
            rank_matrix[i][j] = rank_a[k];
            rank_matrix[j][i] = rank_a[k];
            k += 1;
        }
    }
    let mut rng = Rng::new(seed);
    let mut perm: Vec<usize> = (0..n).collect();
    let mut at_least = 0usize;
    let (mut sum, mut sum_sq) = (0.0, 0.0);
    let mut permuted = vec![0.0; a.len()];
    for done in 0..permutations {
        if let Some(c) = cancel {
            if done % 256 == 0 && c.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
        }
        rng.shuffle(&mut perm);
        let mut k = 0;
        for i in 0..n {
            for j in i + 1..n {
                permuted[k] = rank_matrix[perm[i]][perm[j]];
                k += 1;
            }
        }
        let r = pearson(&permuted, &rank_b);
        if r >= rho - 1e-12 {
            at_least += 1;
        }
        sum += r;
        sum_sq += r * r;
    }
    let p = permutations as f64;
    let mean = if permutations > 0 { sum / p } else { 0.0 };
    Some(RsaResult {
        spearman_rho: rho,
        kendall_tau: kendall(&a, &b),
        mantel_p: (1 + at_least) as f64 / (1 + permutations) as f64,
        permutations,
        null_mean: mean,
        null_sd: if permutations > 1 {
            ((sum_sq / p - mean * mean) * p / (p - 1.0)).max(0.0).sqrt()
        } else {
            0.0
        },
        pairs: a.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties() {
        assert_eq!(ranks(&[10.0, 20.0, 10.0, 30.0]), vec![1.5, 3.0, 1.5, 4.0]);
    }

    #[test]
    fn spearman_and_kendall_known_values() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((spearman(&a, &[5.0, 6.0, 7.0, 8.0, 7.0]) - 0.8207826816681233).abs() < 1e-12);
        assert!((kendall(&a, &[1.0, 3.0, 2.0, 4.0, 5.0]) - 0.8).abs() < 1e-12);
        assert!((spearman(&a, &[5.0, 4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn mantel_detects_structure_and_not_noise() {
        // Points on a line: distances |i - j|. A matrix equal to it is significant; a shuffled one is not.
        let n = 12;
        let d: Vec<Vec<f64>> = (0..n)
            .map(|i| (0..n).map(|j| (i as f64 - j as f64).abs()).collect())
            .collect();
        let r = rsa(&d, &d, 2000, 1, None).unwrap();
        assert!((r.spearman_rho - 1.0).abs() < 1e-12);
        assert!(r.mantel_p < 0.01);
        let mut rng = Rng::new(9);
        let noise: Vec<Vec<f64>> = {
            let mut m = vec![vec![0.0; n]; n];
            for i in 0..n {
                for j in i + 1..n {
                    let v = rng.next_u64() as f64;
                    m[i][j] = v;
                    m[j][i] = v;
                }
            }
            m
        };
        let r = rsa(&noise, &d, 2000, 1, None).unwrap();
        assert!(r.mantel_p > 0.05, "p {}", r.mantel_p);
        assert!(r.null_mean.abs() < 0.05);
    }
}
