//! Token strips: tokens laid out like text, each on a background color that encodes a number
//! (surprisal, a rank bucket, entropy, a change in bits). The app draws a strip from the same
//! [`StripScale`] colors that the exported figure ([`super::FigureKind::Tokens`]) carries, so the
//! screen and the file agree.

use serde::Serialize;

use super::{Colormap, Rgb};

/// How a token's value becomes its color.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum StripScale {
    /// `0..max` on a sequential colormap.
    Sequential { map: Colormap, max: f64 },
    /// `-bound..bound` on the diverging colormap (0 is neutral).
    Diverging { bound: f64 },
    /// GLTR's buckets of the actual token's rank (1-based): top 10, 100, 1000, beyond.
    RankBuckets,
}

/// A token without a value (the first one: nothing predicted it).
pub const NO_VALUE: Rgb = Rgb(200, 200, 200);

const BUCKETS: [(usize, Rgb, &str); 4] = [
    (10, Rgb(120, 200, 120), "top 10"),
    (100, Rgb(240, 220, 100), "top 100"),
    (1000, Rgb(240, 140, 90), "top 1000"),
    (usize::MAX, Rgb(190, 120, 220), "beyond"),
];

impl StripScale {
    pub fn color(self, v: Option<f64>) -> Rgb {
        let Some(v) = v.filter(|v| !v.is_nan()) else {
            return NO_VALUE;
        };
        match self {
            StripScale::Sequential { map, max } => map.at((v / max).clamp(0.0, 1.0)),
            StripScale::Diverging { bound } => {
                Colormap::Diverging.at(((v / bound.max(1e-9) + 1.0) / 2.0).clamp(0.0, 1.0))
            }
            StripScale::RankBuckets => {
                let rank = v.max(0.0) as usize;
                BUCKETS
                    .iter()
                    .find(|(top, _, _)| rank <= *top)
                    .map_or(NO_VALUE, |b| b.1)
            }
        }
    }

    /// Sample swatches with their labels, `unit` after each number.
    pub fn legend(self, unit: &str) -> Vec<(String, Rgb)> {
        match self {
            StripScale::Sequential { max, .. } => (0..=4)
                .map(|i| max * i as f64 / 4.0)
                .map(|v| (format!("{v:.1} {unit}"), self.color(Some(v))))
                .collect(),
            StripScale::Diverging { bound } => (-2..=2)
                .map(|i| bound * i as f64 / 2.0)
                .map(|v| (format!("{v:+.1} {unit}"), self.color(Some(v))))
                .collect(),
            StripScale::RankBuckets => BUCKETS
                .iter()
                .map(|(_, c, name)| (name.to_string(), *c))
                .collect(),
        }
    }
}

/// One token of a strip: its text as shown, its value, and the color the value maps to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StripToken {
    pub text: String,
    pub value: Option<f64>,
    pub color: Rgb,
}

/// Tokens (shown text, value) colored by `scale`.
pub fn strip_tokens(
    tokens: impl IntoIterator<Item = (String, Option<f64>)>,
    scale: StripScale,
) -> Vec<StripToken> {
    tokens
        .into_iter()
        .map(|(text, value)| StripToken {
            color: scale.color(value),
            text,
            value,
        })
        .collect()
}

/// Black or white, whichever reads better on `bg`.
pub fn text_on(bg: Rgb) -> Rgb {
    let l = 0.299 * bg.0 as f64 + 0.587 * bg.1 as f64 + 0.114 * bg.2 as f64;
    if l > 140.0 {
        Rgb(0, 0, 0)
    } else {
        Rgb(255, 255, 255)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_buckets_follow_gltr() {
        let s = StripScale::RankBuckets;
        assert_eq!(s.color(Some(1.0)), BUCKETS[0].1);
        assert_eq!(s.color(Some(10.0)), BUCKETS[0].1);
        assert_eq!(s.color(Some(11.0)), BUCKETS[1].1);
        assert_eq!(s.color(Some(1000.0)), BUCKETS[2].1);
        assert_eq!(s.color(Some(1001.0)), BUCKETS[3].1);
        assert_eq!(s.color(None), NO_VALUE);
    }

    #[test]
    fn sequential_colors_clamp_at_the_maximum() {
        let s = StripScale::Sequential {
            map: Colormap::Viridis,
            max: 16.0,
        };
        assert_eq!(s.color(Some(16.0)), s.color(Some(40.0)));
        assert_ne!(s.color(Some(0.0)), s.color(Some(16.0)));
        assert_eq!(s.legend("bits").len(), 5);
    }
}
