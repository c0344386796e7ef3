//! Per-position metrics from logits, computed in f64 as the reference does: surprisal, entropy,
//! rank and top-k; plus the zstd size of a text, for "prediction is compression" side by side.

use serde::Serialize;

/// Statistics of one next-token distribution against the token that actually came next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionStats {
    pub surprisal_bits: f64,
    pub entropy_bits: f64,
    /// 1 = the model's top choice.
    pub rank: usize,
}

/// One prediction: a token id and its probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IdProb {
    pub id: u32,
    pub p: f32,
}

/// Statistics of logit rows (row i describes the distribution predicted at that row's position).
#[derive(Debug, Clone, Default)]
pub struct RowStats {
    pub entropy_bits: Vec<f64>,
    /// Surprisal of the row's target token (NaN where there is none).
    pub surprisal_bits: Vec<f64>,
    /// Rank of the target (1 = top choice; 0 where there is none).
    pub rank: Vec<usize>,
    pub top: Vec<Vec<IdProb>>,
}

/// The convention every run of a text uses, stated once: logit row i predicts token i + 1, so
/// row i's target is `ids[i + 1]` and the last row has none (`u32::MAX`).
pub fn next_token_targets(ids: &[u32]) -> Vec<u32> {
    ids.iter().skip(1).copied().chain([u32::MAX]).collect()
}

/// The same convention read back: a value of row i belongs to token i + 1; token 0 has none.
pub fn per_token<T: Copy>(per_row: &[T], n_tokens: usize) -> Vec<Option<T>> {
    (0..n_tokens)
        .map(|i| i.checked_sub(1).and_then(|r| per_row.get(r).copied()))
        .collect()
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
    if k <= 16 {
        // One pass keeping the best k so far: no index vector over a whole vocabulary.
        let mut best: Vec<u32> = Vec::with_capacity(k + 1);
        let better = |a: u32, b: u32| {
            let (x, y) = (scores[a as usize], scores[b as usize]);
            x.total_cmp(&y).then(b.cmp(&a)).is_gt()
        };
        for i in 0..scores.len() as u32 {
            if best.len() == k && !better(i, best[k - 1]) {
                continue;
            }
            let at = best
                .iter()
                .position(|&b| better(i, b))
                .unwrap_or(best.len());
            best.insert(at, i);
            best.truncate(k);
        }
        return best;
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

/// e^x in f32 without a libm call, so that loops over it vectorize: Cody-Waite range reduction
/// (to the nearest multiple of ln 2) and Cephes' degree-6 polynomial (relative error below 3e-7, as
/// good as `f32::exp` for our use); e^-inf and anything below -87.3 is exactly 0.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // Round to nearest by adding 1.5 * 2^23: the integer then sits in the low mantissa bits, so
    // neither floor() nor a (saturating, unvectorizable) float-to-int cast is needed.
    const MAGIC: f32 = 12_582_912.0;
    let under = x < -87.33654;
    // max/min rather than clamp: they compile to the vector min/max without extra checks.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.33654).min(88.72283);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let k = t.to_bits().wrapping_sub(MAGIC.to_bits());
    let scale = f32::from_bits(k.wrapping_add(127) << 23);
    if under {
        0.0
    } else {
        y * scale
    }
}

/// The statistics of one logit row that Prism shows: entropy, and the surprisal and rank of
/// `target` (when it is inside the row), and the top-k.
#[derive(Debug, Clone, PartialEq)]
pub struct RowStat {
    pub entropy_bits: f64,
    pub surprisal_bits: Option<f64>,
    pub rank: Option<usize>,
    pub top: Vec<IdProb>,
}

/// [`position_stats`] and [`top_k_softmax`] in two passes over the row instead of five, with
/// vectorized exponentials and f64 sums (the CPU backend's path; tested against the two).
pub fn row_stats(row: &[f32], target: Option<u32>, k: usize) -> RowStat {
    let order = top_k_order(row, k);
    let max = order.first().map(|&i| row[i as usize]).unwrap_or(0.0);
    let target = target.filter(|&t| (t as usize) < row.len());
    let target_logit = target.map(|t| row[t as usize]).unwrap_or(f32::INFINITY);
    let (s, w, above) = exp_sums(row, max, target_logit);
    let ln_s = s.ln();
    let lse = max as f64 + ln_s;
    let ln2 = std::f64::consts::LN_2;
    RowStat {
        entropy_bits: (ln_s - w / s) / ln2,
        surprisal_bits: target.map(|_| (lse - target_logit as f64) / ln2),
        rank: target.map(|_| 1 + above),
        top: order
            .into_iter()
            .map(|id| IdProb {
                id,
                p: (row[id as usize] as f64 - lse).exp() as f32,
            })
            .collect(),
    }
}

crate::simd::multiversion! {
    /// Sum of e^(x - max), of e^(x - max) (x - max), and the count of entries above `pivot`, with
    /// f64 sums over 8 lanes.
    fn exp_sums(row: &[f32], max: f32, pivot: f32) -> (f64, f64, usize) {
        // f32 lanes over blocks of 1,024, each block's sums then added in f64: vectorizes, and
        // no f32 sum runs over more than 64 terms.
        const L: usize = 16;
        const BLOCK: usize = 1024;
        let (mut s, mut w, mut a) = (0f64, 0f64, 0usize);
        for block in row.chunks(BLOCK) {
            let mut sum = [0f32; L];
            let mut weighted = [0f32; L];
            let mut above = [0u32; L];
            let full = block.len() / L * L;
            let mut i = 0;
            while i < full {
                for l in 0..L {
                    let x = block[i + l];
                    let d = x - max;
                    let e = exp_f32(d);
                    sum[l] += e;
                    weighted[l] += e * d;
                    above[l] += (x > pivot) as u32;
                }
                i += L;
            }
            for l in 0..L {
                s += sum[l] as f64;
                w += weighted[l] as f64;
                a += above[l] as usize;
            }
            while i < block.len() {
                let x = block[i];
                let d = x - max;
                let e = exp_f32(d);
                s += e as f64;
                w += (e * d) as f64;
                a += (x > pivot) as usize;
                i += 1;
            }
        }
        (s, w, a)
    }
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
    fn fast_row_stats_match_the_f64_reference() {
        let mut row: Vec<f32> = (0..5003)
            .map(|i| ((i * 7919 % 1009) as f32 - 500.0) / 37.0)
            .collect();
        row[17] = row[4000]; // a tie
        for target in [0u32, 17, 4000, 5002] {
            let slow = position_stats(&row, target);
            let fast = row_stats(&row, Some(target), 7);
            assert!((slow.entropy_bits - fast.entropy_bits).abs() < 1e-5);
            assert!((slow.surprisal_bits - fast.surprisal_bits.unwrap()).abs() < 1e-5);
            assert_eq!(Some(slow.rank), fast.rank);
            let top = top_k_softmax(&row, 7);
            assert_eq!(
                top.iter().map(|t| t.id).collect::<Vec<_>>(),
                fast.top.iter().map(|t| t.id).collect::<Vec<_>>()
            );
            for (a, b) in top.iter().zip(&fast.top) {
                assert!((a.p - b.p).abs() < 1e-6);
            }
        }
        assert_eq!(row_stats(&row, None, 3).rank, None);
    }

    #[test]
    fn fast_exp_is_accurate_and_exact_at_minus_infinity() {
        for i in -8700..8800 {
            let x = i as f32 / 100.0;
            let (a, b) = (exp_f32(x) as f64, (x as f64).exp());
            assert!((a - b).abs() <= 4e-7 * b, "{x}: {a} vs {b}");
        }
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn top_k_small_and_large_agree() {
        let row: Vec<f32> = (0..300).map(|i| ((i * 31 % 97) as f32).sin()).collect();
        let small = top_k_order(&row, 16);
        let large = top_k_order(&row, 17);
        assert_eq!(&large[..16], &small[..]);
    }

    #[test]
    fn extreme_logits_stay_finite() {
        let row = [1000.0f32, -1000.0, 0.0];
        let s = position_stats(&row, 1);
        assert!(s.surprisal_bits.is_finite() && s.surprisal_bits > 1000.0);
    }
}
