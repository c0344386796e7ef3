//! Figures are data: a [`Figure`] value is drawn on screen by the app and to SVG/PNG here, and it
//! exports its numbers as CSV and JSON. An export from the GUI and one from the CLI are the same.

pub mod build;
pub mod geometry;
pub mod render;
pub mod strip;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use strip::{strip_tokens, StripScale, StripToken};

use crate::error::{PrismError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rgb(pub u8, pub u8, pub u8);

#[derive(Debug, Clone, Serialize)]
pub struct ScatterPoint {
    pub x: f64,
    pub y: f64,
    pub label: String,
    pub color: Rgb,
}

#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: Rgb,
}

/// A shaded band behind line series, e.g. the 95% range of a permutation null.
#[derive(Debug, Clone, Serialize)]
pub struct Band {
    pub label: String,
    /// (x, low, high) per point.
    pub points: Vec<(f64, f64, f64)>,
}

/// Every colormap a figure can use; the app draws with these same maps, so what a view shows is
/// what its export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colormap {
    Viridis,
    /// Diverging blue-white-red, centred on the middle of the range.
    Diverging,
    /// White (0) to black (1), for print.
    Grays,
}

impl Colormap {
    /// The maps a sequential (0..1) heatmap may use, with their names.
    pub const SEQUENTIAL: [(Colormap, &'static str); 2] =
        [(Colormap::Viridis, "viridis"), (Colormap::Grays, "grays")];

    /// A sequential map by its name (`viridis`, `grays`).
    pub fn sequential(name: &str) -> Option<Colormap> {
        Self::SEQUENTIAL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(c, _)| *c)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FigureKind {
    Scatter {
        points: Vec<ScatterPoint>,
    },
    Heatmap {
        row_labels: Vec<String>,
        col_labels: Vec<String>,
        values: Vec<Vec<f64>>,
        range: (f64, f64),
        colormap: Colormap,
    },
    Lines {
        series: Vec<Series>,
        band: Option<Band>,
        /// Labels for integer x positions (layer names), when the x axis is categorical.
        x_ticks: Option<Vec<String>>,
    },
    /// Tokens laid out like text on their value's color (the text view's strip).
    Tokens {
        tokens: Vec<StripToken>,
        /// What the value is ("surprisal (bits)", "rank").
        value_name: String,
        scale: StripScale,
        /// Swatches with their labels, as the view's legend shows them.
        legend: Vec<(String, Rgb)>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub kind: FigureKind,
    /// Lines of context printed under the plot (model, source, template, caveats).
    pub notes: Vec<String>,
}

impl Colormap {
    /// The color for `t` in 0..1.
    pub fn at(self, t: f64) -> Rgb {
        let t = if t.is_finite() {
            t.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let stops: &[(f64, [f64; 3])] = match self {
            Colormap::Viridis => &[
                (0.0, [68.0, 1.0, 84.0]),
                (0.25, [59.0, 82.0, 139.0]),
                (0.5, [33.0, 145.0, 140.0]),
                (0.75, [94.0, 201.0, 98.0]),
                (1.0, [253.0, 231.0, 37.0]),
            ],
            Colormap::Grays => &[(0.0, [255.0, 255.0, 255.0]), (1.0, [0.0, 0.0, 0.0])],
            Colormap::Diverging => &[
                (0.0, [33.0, 102.0, 172.0]),
                (0.5, [247.0, 247.0, 247.0]),
                (1.0, [178.0, 24.0, 43.0]),
            ],
        };
        let i = stops
            .iter()
            .position(|(s, _)| *s >= t)
            .unwrap_or(stops.len() - 1)
            .max(1);
        let (s0, c0) = stops[i - 1];
        let (s1, c1) = stops[i];
        let f = if s1 > s0 { (t - s0) / (s1 - s0) } else { 0.0 };
        let mix = |k: usize| (c0[k] + (c1[k] - c0[k]) * f).round() as u8;
        Rgb(mix(0), mix(1), mix(2))
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

impl Figure {
    /// The figure's numbers as CSV.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        match &self.kind {
            FigureKind::Scatter { points } => {
                out.push_str("label,x,y,color\n");
                for p in points {
                    out.push_str(&format!(
                        "{},{},{},#{:02x}{:02x}{:02x}\n",
                        csv_field(&p.label),
                        p.x,
                        p.y,
                        p.color.0,
                        p.color.1,
                        p.color.2
                    ));
                }
            }
            FigureKind::Heatmap {
                row_labels,
                col_labels,
                values,
                ..
            } => {
                out.push_str(&format!(
                    ",{}\n",
                    col_labels
                        .iter()
                        .map(|l| csv_field(l))
                        .collect::<Vec<_>>()
                        .join(",")
                ));
                for (l, row) in row_labels.iter().zip(values) {
                    out.push_str(&format!(
                        "{},{}\n",
                        csv_field(l),
                        row.iter()
                            .map(|v| v.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    ));
                }
            }
            FigureKind::Tokens {
                tokens, value_name, ..
            } => {
                out.push_str(&format!("index,token,{},color\n", csv_field(value_name)));
                for (i, t) in tokens.iter().enumerate() {
                    out.push_str(&format!(
                        "{i},{},{},#{:02x}{:02x}{:02x}\n",
                        csv_field(&t.text),
                        t.value.map(|v| v.to_string()).unwrap_or_default(),
                        t.color.0,
                        t.color.1,
                        t.color.2
                    ));
                }
            }
            FigureKind::Lines {
                series,
                band,
                x_ticks,
            } => {
                out.push_str("series,x,x_label,y\n");
                let tick = |x: f64| {
                    x_ticks
                        .as_ref()
                        .and_then(|t| t.get(x as usize).cloned())
                        .unwrap_or_default()
                };
                for s in series {
                    for &(x, y) in &s.points {
                        out.push_str(&format!(
                            "{},{x},{},{y}\n",
                            csv_field(&s.name),
                            csv_field(&tick(x))
                        ));
                    }
                }
                if let Some(b) = band {
                    for &(x, lo, hi) in &b.points {
                        out.push_str(&format!(
                            "{} low,{x},{},{lo}\n",
                            csv_field(&b.label),
                            csv_field(&tick(x))
                        ));
                        out.push_str(&format!(
                            "{} high,{x},{},{hi}\n",
                            csv_field(&b.label),
                            csv_field(&tick(x))
                        ));
                    }
                }
            }
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Writes the figure to `path` (`.svg` or `.png`) and its data next to it (`.csv` and `.json`),
    /// each atomically. Returns the files written.
    pub fn export(&self, path: &Path) -> Result<Vec<PathBuf>> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase());
        let bytes = match ext.as_deref() {
            Some("svg") => render::to_svg(self, 960, 720)?.into_bytes(),
            Some("png") => render::to_png(self, 1280, 960)?,
            _ => {
                return Err(PrismError::Input(format!(
                    "{}: figures are written as .svg or .png",
                    path.display()
                )))
            }
        };
        write_atomic(path, &bytes)?;
        let csv = path.with_extension("csv");
        write_atomic(&csv, self.to_csv().as_bytes())?;
        let json = path.with_extension("json");
        write_atomic(&json, self.to_json().as_bytes())?;
        Ok(vec![path.to_path_buf(), csv, json])
    }
}

pub use crate::atomic::write_atomic;
