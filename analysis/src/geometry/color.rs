//! The color study: do a model's representations of color words mirror perceptual color space?
//! sRGB to CIELAB (D65) is computed here; cosine distance is compared with CIE76 ΔE by RSA, and the
//! two seed claims (purple nearer blue than red; orange nearer red than purple is) are checked.

use std::sync::atomic::AtomicBool;

use serde::Serialize;

use super::rsa::{rsa, RsaResult};
use super::similarity::{centered, cosine_matrix};
use super::vectors::{Extractor, Source, WordVector};
use crate::error::{PrismError, Result};

/// The built-in lexicon: 31 CSS named colors (11 basic terms first), as in the reference study.
pub const CSS_COLORS: &[(&str, &str)] = &[
    ("black", "#000000"),
    ("white", "#FFFFFF"),
    ("red", "#FF0000"),
    ("green", "#008000"),
    ("yellow", "#FFFF00"),
    ("blue", "#0000FF"),
    ("brown", "#A52A2A"),
    ("purple", "#800080"),
    ("pink", "#FFC0CB"),
    ("orange", "#FFA500"),
    ("gray", "#808080"),
    ("violet", "#EE82EE"),
    ("indigo", "#4B0082"),
    ("turquoise", "#40E0D0"),
    ("teal", "#008080"),
    ("cyan", "#00FFFF"),
    ("magenta", "#FF00FF"),
    ("maroon", "#800000"),
    ("navy", "#000080"),
    ("olive", "#808000"),
    ("lime", "#00FF00"),
    ("gold", "#FFD700"),
    ("silver", "#C0C0C0"),
    ("beige", "#F5F5DC"),
    ("tan", "#D2B48C"),
    ("crimson", "#DC143C"),
    ("lavender", "#E6E6FA"),
    ("coral", "#FF7F50"),
    ("salmon", "#FA8072"),
    ("khaki", "#F0E68C"),
    ("ivory", "#FFFFF0"),
];

pub const BASIC_TERMS: &[&str] = &[
    "black", "white", "red", "green", "yellow", "blue", "brown", "purple", "pink", "orange", "gray",
];
pub const CHROMATIC_BASIC: &[&str] = &[
    "red", "green", "yellow", "blue", "brown", "purple", "pink", "orange",
];

#[derive(Debug, Clone, Serialize)]
pub struct ColorWord {
    pub name: String,
    pub hex: String,
    pub srgb: [f64; 3],
    pub lab: [f64; 3],
}

pub fn parse_hex(hex: &str) -> Option<[f64; 3]> {
    let h = hex.trim().trim_start_matches('#');
    if h.len() != 6 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let c = |i: usize| {
        u8::from_str_radix(&h[i..i + 2], 16)
            .ok()
            .map(|v| v as f64 / 255.0)
    };
    Some([c(0)?, c(2)?, c(4)?])
}

/// sRGB (IEC 61966-2-1, components in 0..1) to CIELAB with the D65 white point.
pub fn srgb_to_lab(rgb: [f64; 3]) -> [f64; 3] {
    let lin = |c: f64| {
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (lin(rgb[0]), lin(rgb[1]), lin(rgb[2]));
    let x = 0.4124564 * r + 0.3575761 * g + 0.1804375 * b;
    let y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b;
    let z = 0.0193339 * r + 0.1191920 * g + 0.9503041 * b;
    let (xn, yn, zn) = (0.95047, 1.0, 1.08883);
    let eps = 216.0 / 24389.0;
    let kappa = 24389.0 / 27.0;
    let f = |t: f64| {
        if t > eps {
            t.cbrt()
        } else {
            (kappa * t + 16.0) / 116.0
        }
    };
    let (fx, fy, fz) = (f(x / xn), f(y / yn), f(z / zn));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

/// CIE76 ΔE: Euclidean distance in L*a*b*.
pub fn delta_e(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

pub fn builtin_lexicon() -> Vec<ColorWord> {
    CSS_COLORS
        .iter()
        .map(|(n, h)| {
            let srgb = parse_hex(h).unwrap_or([0.0; 3]);
            ColorWord {
                name: n.to_string(),
                hex: h.to_string(),
                srgb,
                lab: srgb_to_lab(srgb),
            }
        })
        .collect()
}

/// A lexicon file: one color per line, a name and a `#rrggbb` hex (tab- or space-separated, as in
/// the XKCD survey's rgb.txt); `#` comment lines and blank lines are skipped.
pub fn parse_lexicon(text: &str, origin: &str) -> Result<Vec<ColorWord>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty()
            || (line.starts_with('#')
                && parse_hex(line.split_whitespace().next().unwrap_or("")).is_none()
                && !line.contains('\t'))
        {
            continue;
        }
        let hex_at = line.rfind('#').filter(|&i| i > 0);
        let Some(i) = hex_at else {
            return Err(PrismError::Input(format!(
                "{origin} line {}: expected a name and a #rrggbb color",
                n + 1
            )));
        };
        let name = line[..i]
            .trim()
            .trim_end_matches([',', '\t'])
            .trim()
            .to_string();
        let Some(srgb) = parse_hex(line[i..].split_whitespace().next().unwrap_or("")) else {
            return Err(PrismError::Input(format!(
                "{origin} line {}: {:?} is not a #rrggbb color",
                n + 1,
                &line[i..]
            )));
        };
        if name.is_empty() {
            return Err(PrismError::Input(format!(
                "{origin} line {}: no color name",
                n + 1
            )));
        }
        out.push(ColorWord {
            hex: line[i..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string(),
            lab: srgb_to_lab(srgb),
            srgb,
            name,
        });
    }
    if out.len() < 3 {
        return Err(PrismError::Input(format!(
            "{origin}: a lexicon needs at least 3 colors, found {}",
            out.len()
        )));
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct Cosines {
    pub purple_blue: f64,
    pub purple_red: f64,
    pub orange_red: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    pub cosines: Cosines,
    /// cos(purple, blue) > cos(purple, red)
    pub claim1: bool,
    /// cos(orange, red) > cos(purple, red)
    pub claim2: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Representation {
    pub name: String,
    /// Spearman rho between model distance (1 - cosine) and ΔE over all word pairs.
    pub rho: f64,
    /// One-sided Mantel p for `rho`.
    pub p: f64,
    pub claim1: Option<bool>,
    pub claim2: Option<bool>,
    pub cosines: Option<Cosines>,
    pub rsa_all: RsaResult,
    pub rsa_basic11: Option<RsaResult>,
    pub rsa_chromatic8: Option<RsaResult>,
    /// The same after subtracting the mean vector of the words.
    pub centered_rsa: RsaResult,
    pub centered_claims: Option<Claims>,
    /// Words that became more than one token here, with their pieces.
    pub split_words: Vec<(String, Vec<String>)>,
    pub cosine_matrix: Vec<Vec<f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ColorStudy {
    pub model: String,
    pub template: String,
    pub permutations: usize,
    pub seed: u64,
    pub words: Vec<ColorWord>,
    pub lab_distances: Vec<Vec<f64>>,
    pub representations: Vec<Representation>,
}

/// What a study found, in the words both the CLI and the app print.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub best: String,
    pub rho: f64,
    pub p: f64,
    /// `p` times the number of representations tested (Bonferroni), at most 1.
    pub corrected_p: f64,
    pub representations: usize,
    pub claim1_holds: usize,
    pub claim2_holds: usize,
}

impl ColorStudy {
    pub fn verdict(&self) -> Option<Verdict> {
        let n = self.representations.len();
        let best = self
            .representations
            .iter()
            .min_by(|a, b| a.p.total_cmp(&b.p))?;
        let count = |f: fn(&Representation) -> Option<bool>| {
            self.representations
                .iter()
                .filter(|r| f(r) == Some(true))
                .count()
        };
        Some(Verdict {
            best: best.name.clone(),
            rho: best.rho,
            p: best.p,
            corrected_p: (best.p * n as f64).min(1.0),
            representations: n,
            claim1_holds: count(|r| r.claim1),
            claim2_holds: count(|r| r.claim2),
        })
    }
}

impl Verdict {
    /// Two lines: the RSA result with its correction, and how often each claim holds.
    pub fn lines(&self) -> [String; 2] {
        let finding = if self.corrected_p < 0.05 {
            "significant after correction"
        } else {
            "not significant after correction: no evidence here that the geometry mirrors CIELAB"
        };
        [
            format!(
                "smallest Mantel p: {} (rho {:.3}, p {:.4}; {:.4} after Bonferroni over {} representations): {finding}",
                self.best, self.rho, self.p, self.corrected_p, self.representations
            ),
            format!(
                "claim 1 (purple nearer blue than red) holds in {} of {} representations; claim 2 (orange nearer red than purple is) in {}",
                self.claim1_holds, self.representations, self.claim2_holds
            ),
        ]
    }
}

fn claims(names: &[String], sims: &[Vec<f64>]) -> Option<Claims> {
    let at = |w: &str| names.iter().position(|n| n == w);
    let (pu, bl, rd, or) = (at("purple")?, at("blue")?, at("red")?, at("orange")?);
    let c = Cosines {
        purple_blue: sims[pu][bl],
        purple_red: sims[pu][rd],
        orange_red: sims[or][rd],
    };
    Some(Claims {
        claim1: c.purple_blue > c.purple_red,
        claim2: c.orange_red > c.purple_red,
        cosines: c,
    })
}

fn sub_rsa(
    names: &[String],
    subset: &[&str],
    model_d: &[Vec<f64>],
    lab_d: &[Vec<f64>],
    permutations: usize,
    seed: u64,
) -> Option<RsaResult> {
    let idx: Vec<usize> = subset
        .iter()
        .map(|w| names.iter().position(|n| n == w))
        .collect::<Option<_>>()?;
    let pick = |m: &[Vec<f64>]| -> Vec<Vec<f64>> {
        idx.iter()
            .map(|&i| idx.iter().map(|&j| m[i][j]).collect())
            .collect()
    };
    rsa(&pick(model_d), &pick(lab_d), permutations, seed, None)
}

/// Everything the study computes for one set of word vectors.
pub fn analyse(
    name: &str,
    vectors: &[WordVector],
    lexicon: &[ColorWord],
    lab_d: &[Vec<f64>],
    permutations: usize,
    seed: u64,
    cancel: Option<&AtomicBool>,
) -> Result<Representation> {
    let names: Vec<String> = lexicon.iter().map(|c| c.name.clone()).collect();
    let vs: Vec<Vec<f32>> = vectors.iter().map(|v| v.vector.clone()).collect();
    let sims = cosine_matrix(&vs);
    let dist: Vec<Vec<f64>> = sims
        .iter()
        .map(|r| r.iter().map(|c| 1.0 - c).collect())
        .collect();
    let cancelled = || PrismError::Cancelled;
    let rsa_all = rsa(&dist, lab_d, permutations, seed, cancel).ok_or_else(cancelled)?;
    let csims = cosine_matrix(&centered(&vs));
    let cdist: Vec<Vec<f64>> = csims
        .iter()
        .map(|r| r.iter().map(|c| 1.0 - c).collect())
        .collect();
    let centered_rsa = rsa(&cdist, lab_d, permutations, seed, cancel).ok_or_else(cancelled)?;
    let main = claims(&names, &sims);
    Ok(Representation {
        name: name.to_string(),
        rho: rsa_all.spearman_rho,
        p: rsa_all.mantel_p,
        claim1: main.as_ref().map(|c| c.claim1),
        claim2: main.as_ref().map(|c| c.claim2),
        cosines: main.map(|c| c.cosines),
        rsa_basic11: sub_rsa(&names, BASIC_TERMS, &dist, lab_d, permutations, seed),
        rsa_chromatic8: sub_rsa(&names, CHROMATIC_BASIC, &dist, lab_d, permutations, seed),
        rsa_all,
        centered_rsa,
        centered_claims: claims(&names, &csims),
        split_words: vectors
            .iter()
            .filter(|v| v.is_split())
            .map(|v| (v.word.clone(), v.pieces.clone()))
            .collect(),
        cosine_matrix: sims,
    })
}

/// Progress of a study: (representations done, total).
pub type StudyProgress<'a> = &'a mut dyn FnMut(usize, usize);

/// Runs the whole study: input embeddings (with and, for byte-level BPE, without the leading
/// space), every layer in the template, and the final norm.
pub fn run_study(
    ex: &mut Extractor<'_>,
    lexicon: &[ColorWord],
    template: &str,
    permutations: usize,
    seed: u64,
    progress: StudyProgress<'_>,
    cancel: Option<&AtomicBool>,
) -> Result<ColorStudy> {
    let words: Vec<String> = lexicon.iter().map(|c| c.name.clone()).collect();
    let lab_d: Vec<Vec<f64>> = lexicon
        .iter()
        .map(|a| lexicon.iter().map(|b| delta_e(a.lab, b.lab)).collect())
        .collect();
    let model = ex.model;
    let byte_level = model
        .tokenizer
        .as_ref()
        .map(|t| t.is_byte_level())
        .unwrap_or(false);
    let mut sources = vec![Source::Embed];
    if byte_level {
        sources.push(Source::EmbedNoSpace);
    }
    let contextual = ex.contextual_all(&words, template)?;
    let n_layers = model.spec.n_layers;
    let total = sources.len() + n_layers + 1 + model.spec.final_norm as usize;
    let mut reps = Vec::with_capacity(total);
    for s in sources {
        let v = ex.vectors(&words, s, template)?;
        reps.push(analyse(
            &s.to_string(),
            &v,
            lexicon,
            &lab_d,
            permutations,
            seed,
            cancel,
        )?);
        progress(reps.len(), total);
    }
    let at_layer = |l: Option<usize>| -> Vec<WordVector> {
        contextual
            .iter()
            .map(|(wv, layers, fin)| WordVector {
                vector: match l {
                    Some(l) => layers[l].clone(),
                    None => fin.clone(),
                },
                ..wv.clone()
            })
            .collect()
    };
    for l in 0..=n_layers {
        reps.push(analyse(
            &format!("layer:{l}"),
            &at_layer(Some(l)),
            lexicon,
            &lab_d,
            permutations,
            seed,
            cancel,
        )?);
        progress(reps.len(), total);
    }
    if model.spec.final_norm {
        reps.push(analyse(
            "final_norm",
            &at_layer(None),
            lexicon,
            &lab_d,
            permutations,
            seed,
            cancel,
        )?);
        progress(reps.len(), total);
    }
    Ok(ColorStudy {
        model: model.info.path.display().to_string(),
        template: template.to_string(),
        permutations,
        seed,
        words: lexicon.to_vec(),
        lab_distances: lab_d,
        representations: reps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_of_primaries() {
        let red = srgb_to_lab([1.0, 0.0, 0.0]);
        assert!(
            (red[0] - 53.2408).abs() < 1e-3
                && (red[1] - 80.0925).abs() < 1e-3
                && (red[2] - 67.2032).abs() < 1e-3
        );
        let white = srgb_to_lab([1.0, 1.0, 1.0]);
        assert!((white[0] - 100.0).abs() < 1e-4 && white[1].abs() < 1e-4);
        assert_eq!(srgb_to_lab([0.0; 3]), [0.0, 0.0, 0.0]);
    }

    #[test]
    fn lexicon_files_parse_and_refuse_garbage() {
        let l = parse_lexicon(
            "cloudy blue\t#acc2d9\ndark pastel green\t#56ae57\n# comment\nred #ff0000\n",
            "x",
        )
        .unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[1].name, "dark pastel green");
        assert!(parse_lexicon("blue #12\nred #ff0000\ngreen #00ff00", "x").is_err());
        assert!(parse_lexicon("only a name\n", "x").is_err());
    }
}
