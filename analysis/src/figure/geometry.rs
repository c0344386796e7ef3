//! Figures of geometry results, built as [`Figure`] values for the CLI and the app alike.

use super::{Band, Colormap, Figure, FigureKind, Rgb, ScatterPoint, Series};
use crate::geometry::color::{ColorStudy, ColorWord};

fn rgb_of(c: &ColorWord) -> Rgb {
    Rgb(
        (c.srgb[0] * 255.0).round() as u8,
        (c.srgb[1] * 255.0).round() as u8,
        (c.srgb[2] * 255.0).round() as u8,
    )
}

/// A neutral color per word, when words are not colors.
pub fn palette(i: usize) -> Rgb {
    const P: [Rgb; 8] = [
        Rgb(31, 119, 180),
        Rgb(255, 127, 14),
        Rgb(44, 160, 44),
        Rgb(214, 39, 40),
        Rgb(148, 103, 189),
        Rgb(140, 86, 75),
        Rgb(227, 119, 194),
        Rgb(127, 127, 127),
    ];
    P[i % P.len()]
}

pub fn similarity_heatmap(
    title: &str,
    words: &[String],
    sims: &[Vec<f64>],
    notes: Vec<String>,
) -> Figure {
    let off_diag = sims.iter().enumerate().flat_map(|(i, r)| {
        r.iter()
            .enumerate()
            .filter(move |(j, _)| *j != i)
            .map(|(_, v)| *v)
    });
    let (lo, hi) = off_diag.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if lo.is_finite() {
        (lo, hi.max(lo + 1e-9))
    } else {
        (0.0, 1.0)
    };
    Figure {
        title: title.to_string(),
        x_label: String::new(),
        y_label: String::new(),
        kind: FigureKind::Heatmap {
            row_labels: words.to_vec(),
            col_labels: words.to_vec(),
            values: sims.to_vec(),
            range: (lo, hi),
            colormap: Colormap::Viridis,
        },
        notes,
    }
}

pub fn scatter(
    title: &str,
    labels: &[String],
    points: &[Vec<f64>],
    colors: &[Rgb],
    axes: (&str, &str),
    notes: Vec<String>,
) -> Figure {
    Figure {
        title: title.to_string(),
        x_label: axes.0.to_string(),
        y_label: axes.1.to_string(),
        kind: FigureKind::Scatter {
            points: labels
                .iter()
                .zip(points)
                .zip(colors)
                .map(|((l, p), c)| ScatterPoint {
                    x: p[0],
                    y: p.get(1).copied().unwrap_or(0.0),
                    label: l.clone(),
                    color: *c,
                })
                .collect(),
        },
        notes,
    }
}

pub fn color_scatter(
    title: &str,
    lexicon: &[ColorWord],
    points: &[Vec<f64>],
    axes: (&str, &str),
    notes: Vec<String>,
) -> Figure {
    let labels: Vec<String> = lexicon.iter().map(|c| c.name.clone()).collect();
    let colors: Vec<Rgb> = lexicon.iter().map(rgb_of).collect();
    scatter(title, &labels, points, &colors, axes, notes)
}

/// A color word's own sRGB color, or a neutral palette color for other words.
pub fn word_colors(words: &[String]) -> Vec<Rgb> {
    let lexicon = crate::geometry::color::builtin_lexicon();
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            lexicon
                .iter()
                .find(|c| &c.name == w)
                .map(rgb_of)
                .unwrap_or_else(|| palette(i))
        })
        .collect()
}

/// The scatter of a PCA or t-SNE projection of word vectors, as both the app and
/// `prism project --figure` draw it.
pub fn projection_figure(
    words: &[String],
    p: &crate::geometry::project::Projection,
    source: &str,
    model: &str,
) -> Figure {
    let method = match p.method {
        crate::geometry::project::Method::Pca => "PCA",
        crate::geometry::project::Method::Tsne => "t-SNE",
    };
    let axes = match &p.explained_variance_ratio {
        Some(r) => (
            format!(
                "PC1 ({:.1}% of variance)",
                r.first().unwrap_or(&0.0) * 100.0
            ),
            format!("PC2 ({:.1}%)", r.get(1).unwrap_or(&0.0) * 100.0),
        ),
        None => (format!("{method} 1"), format!("{method} 2")),
    };
    let mut notes = vec![format!(
        "model: {model}; source: {source}; {} words",
        words.len()
    )];
    if p.dims > 2 {
        notes[0].push_str(&format!("; first two of {} dimensions shown", p.dims));
    }
    scatter(
        &format!("{method} of {source} vectors"),
        words,
        &p.points,
        &word_colors(words),
        (&axes.0, &axes.1),
        notes,
    )
}

/// RSA rho for every representation of a study, with the 95% band of the permutation null.
pub fn rsa_by_layer(study: &ColorStudy) -> Figure {
    let names: Vec<String> = study
        .representations
        .iter()
        .map(|r| r.name.clone())
        .collect();
    let rho: Vec<(f64, f64)> = study
        .representations
        .iter()
        .enumerate()
        .map(|(i, r)| (i as f64, r.rho))
        .collect();
    let centered: Vec<(f64, f64)> = study
        .representations
        .iter()
        .enumerate()
        .map(|(i, r)| (i as f64, r.centered_rsa.spearman_rho))
        .collect();
    let band = Band {
        label: "95% of the permutation null".into(),
        points: study
            .representations
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    i as f64,
                    r.rsa_all.null_mean - 1.96 * r.rsa_all.null_sd,
                    r.rsa_all.null_mean + 1.96 * r.rsa_all.null_sd,
                )
            })
            .collect(),
    };
    let best = study
        .representations
        .iter()
        .min_by(|a, b| a.p.total_cmp(&b.p));
    let mut notes = vec![
        format!("model: {}", study.model),
        format!(
            "template: {:?}; {} words; Mantel test with {} permutations (seed {})",
            study.template,
            study.words.len(),
            study.permutations,
            study.seed
        ),
    ];
    if let Some(b) = best {
        notes.push(format!(
            "smallest p: {} (rho {:.3}, one-sided p {:.4}, uncorrected for {} representations)",
            b.name,
            b.rho,
            b.p,
            study.representations.len()
        ));
    }
    Figure {
        title: "Color words: model distance vs CIELAB ΔE (Spearman rho)".into(),
        x_label: "representation".into(),
        y_label: "Spearman rho".into(),
        kind: FigureKind::Lines {
            series: vec![
                Series {
                    name: "rho (raw cosine)".into(),
                    points: rho,
                    color: Rgb(31, 119, 180),
                },
                Series {
                    name: "rho (mean-centred)".into(),
                    points: centered,
                    color: Rgb(255, 127, 14),
                },
            ],
            band: Some(band),
            x_ticks: Some(names),
        },
        notes,
    }
}
