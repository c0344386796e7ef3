//! Per-position metrics from logits, computed in f64 as the reference does: surprisal, entropy,
//! rank and top-k; plus the zstd size of a text, for "prediction is compression" side by side.

use crate::backend::IdProb;

/// Statistics of one next-token distribution against the token that actually came next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionStats {
    pub surprisal_bits: f64,
    pub entropy_bits: f64,
    /// 1 = the model's top choice.
    pub rank: usize,
}

fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln()
}

pub fn position_stats(row: &[f32], next: u32) -> PositionStats {
    let lse = log_sum_exp(row);
    let target = row[next as usize];
    let ln2 = std::f64::consts::LN_2;
    let entropy_nats: f64 = row
        .iter()
        .map(|&x| {
            let lp = x as f64 - lse;
            let p = lp.exp();
            if p > 0.0 {
                -p * lp
            } else {
                0.0
            }
        })
        .sum();
    PositionStats {
        surprisal_bits: -(target as f64 - lse) / ln2,
        entropy_bits: entropy_nats / ln2,
        rank: 1 + row.iter().filter(|&&x| x > target).count(),
    }
}

/// The `k` most probable tokens of a logit row, most probable first.
pub fn top_k_softmax(row: &[f32], k: usize) -> Vec<IdProb> {
    let lse = log_sum_exp(row);
    top_k_order(row, k)
        .into_iter()
        .map(|id| IdProb {
            id,
            p: (row[id as usize] as f64 - lse).exp() as f32,
        })
        .collect()
}

/// Indices of the `k` largest scores, largest first (ties by the smaller index), without sorting
/// the whole row.
pub fn top_k_order(scores: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(scores.len());
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<u32> = (0..scores.len() as u32).collect();
    let cmp = |a: &u32, b: &u32| {
        scores[*b as usize]
            .total_cmp(&scores[*a as usize])
            .then(a.cmp(b))
    };
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx
}

/// Bytes zstd needs for `text` at its strongest standard level.
pub fn zstd_bytes(text: &str) -> usize {
    zstd::bulk::compress(text.as_bytes(), 19)
        .map(|v| v.len())
        .unwrap_or(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_distribution() {
        let row = vec![0.0f32; 8];
        let s = position_stats(&row, 3);
        assert!((s.surprisal_bits - 3.0).abs() < 1e-12);
        assert!((s.entropy_bits - 3.0).abs() < 1e-12);
        assert_eq!(s.rank, 1);
    }

    #[test]
    fn ranks_and_top_k() {
        let row = [1.0f32, 5.0, 3.0, 4.0, -2.0];
        assert_eq!(position_stats(&row, 2).rank, 3);
        let top = top_k_softmax(&row, 3);
        assert_eq!(top.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1, 3, 2]);
        let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
        assert!((top[0].p as f64 - 5f64.exp() / z).abs() < 1e-6);
    }

    #[test]
    fn extreme_logits_stay_finite() {
        let row = [1000.0f32, -1000.0, 0.0];
        let s = position_stats(&row, 1);
        assert!(s.surprisal_bits.is_finite() && s.surprisal_bits > 1000.0);
    }
}
