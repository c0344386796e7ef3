//! Figures as files: SVGs that parse and hold the expected points and labels, PNGs that decode,
//! data next to every figure, and atomic writes.

use prism_analysis::figure::{Band, Colormap, Figure, FigureKind, Rgb, ScatterPoint, Series};
use prism_tests::*;

fn scatter_fig() -> Figure {
    Figure {
        title: "Test scatter".into(),
        x_label: "PC1".into(),
        y_label: "PC2".into(),
        kind: FigureKind::Scatter {
            points: (0..7)
                .map(|i| ScatterPoint {
                    x: i as f64,
                    y: (i * i) as f64 * 0.1,
                    label: format!("word{i}"),
                    color: Rgb(200, 10 * i as u8, 30),
                })
                .collect(),
        },
        notes: vec!["a note".into()],
    }
}

fn heatmap_fig() -> Figure {
    let labels: Vec<String> = ["alpha", "beta", "gamma", "delta"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let values: Vec<Vec<f64>> = (0..4)
        .map(|i| {
            (0..4)
                .map(|j| 1.0 / (1.0 + (i as f64 - j as f64).abs()))
                .collect()
        })
        .collect();
    Figure {
        title: "Test heatmap".into(),
        x_label: String::new(),
        y_label: String::new(),
        kind: FigureKind::Heatmap {
            row_labels: labels.clone(),
            col_labels: labels,
            values,
            range: (0.25, 1.0),
            colormap: Colormap::Viridis,
        },
        notes: vec![],
    }
}

fn lines_fig() -> Figure {
    Figure {
        title: "Test lines".into(),
        x_label: "layer".into(),
        y_label: "rho".into(),
        kind: FigureKind::Lines {
            series: vec![Series {
                name: "rho".into(),
                points: vec![(0.0, 0.1), (1.0, -0.05), (2.0, 0.2)],
                color: Rgb(31, 119, 180),
            }],
            band: Some(Band {
                label: "null".into(),
                points: vec![(0.0, -0.2, 0.2), (1.0, -0.2, 0.2), (2.0, -0.2, 0.2)],
            }),
            x_ticks: Some(vec!["embed".into(), "layer:1".into(), "layer:2".into()]),
        },
        notes: vec![],
    }
}

fn texts(doc: &roxmltree::Document) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_string())
        .collect()
}

#[test]
fn scatter_svg_has_every_point_and_label() {
    let svg = prism_analysis::figure::render::to_svg(&scatter_fig(), 800, 600).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the SVG parses");
    let circles = doc
        .descendants()
        .filter(|n| n.has_tag_name("circle"))
        .count();
    assert_eq!(circles, 14, "each point is a filled circle and an outline");
    let t = texts(&doc);
    for i in 0..7 {
        assert!(
            t.iter().any(|s| s == &format!("word{i}")),
            "label word{i} in {t:?}"
        );
    }
    assert!(
        t.iter().any(|s| s == "Test scatter")
            && t.iter().any(|s| s == "PC1")
            && t.iter().any(|s| s == "a note")
    );
}

#[test]
fn heatmap_and_lines_svgs_are_complete() {
    let svg = prism_analysis::figure::render::to_svg(&heatmap_fig(), 800, 600).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let rects = doc.descendants().filter(|n| n.has_tag_name("rect")).count();
    assert!(
        rects >= 16 + 64,
        "16 cells and a 64-step color bar, found {rects} rects"
    );
    let t = texts(&doc);
    assert_eq!(
        t.iter().filter(|s| *s == "gamma").count(),
        2,
        "row and column labels"
    );
    let svg = prism_analysis::figure::render::to_svg(&lines_fig(), 800, 600).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let t = texts(&doc);
    assert!(
        t.iter().any(|s| s == "layer:1")
            && t.iter().any(|s| s == "null")
            && t.iter().any(|s| s == "rho")
    );
    assert!(doc.descendants().any(|n| n.has_tag_name("polygon")
        || n.has_tag_name("path")
        || n.has_tag_name("polyline")));
}

#[test]
fn export_writes_figure_and_data_atomically() {
    let dir = TempDir::new("figures");
    for (fig, name) in [
        (scatter_fig(), "s"),
        (heatmap_fig(), "h"),
        (lines_fig(), "l"),
    ] {
        for ext in ["svg", "png"] {
            let path = dir.path().join(format!("{name}.{ext}"));
            let files = fig.export(&path).unwrap();
            assert_eq!(files.len(), 3);
            if ext == "png" {
                let decoder = png::Decoder::new(std::fs::File::open(&path).unwrap());
                let reader = decoder.read_info().expect("the PNG decodes");
                assert_eq!((reader.info().width, reader.info().height), (1280, 960));
            }
            let csv = std::fs::read_to_string(path.with_extension("csv")).unwrap();
            let json: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(path.with_extension("json")).unwrap(),
            )
            .unwrap();
            assert!(json["title"].is_string());
            match name {
                "s" => assert_eq!(csv.lines().count(), 8),
                "h" => assert_eq!(csv.lines().count(), 5),
                _ => assert_eq!(csv.lines().count(), 1 + 3 + 6),
            }
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left");
    assert!(scatter_fig().export(&dir.path().join("x.gif")).is_err());
    assert!(scatter_fig()
        .export(&dir.path().join("missing-folder/x.svg"))
        .is_err());
}

/// A token strip draws every token that fits on its color, with the legend, and says how many
/// did not fit; its CSV holds every token.
#[test]
fn token_strip_svg_has_its_tokens_colors_and_legend() {
    use prism_analysis::figure::{strip_tokens, StripScale};
    let scale = StripScale::Sequential {
        map: Colormap::Viridis,
        max: 16.0,
    };
    let words: Vec<(String, Option<f64>)> = (0..12)
        .map(|i| (format!(" w{i}"), (i > 0).then_some(i as f64)))
        .collect();
    let fig = |n: usize| Figure {
        title: "Surprisal per token".into(),
        x_label: String::new(),
        y_label: String::new(),
        kind: FigureKind::Tokens {
            tokens: strip_tokens(words.iter().cloned().cycle().take(n), scale),
            value_name: "surprisal (bits)".into(),
            scale,
            legend: scale.legend("bits"),
        },
        notes: vec![],
    };
    let svg = prism_analysis::figure::render::to_svg(&fig(12), 800, 400).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let t = texts(&doc);
    for i in 0..12 {
        assert!(
            t.iter().any(|s| s == &format!("·w{i}")),
            "token w{i} in {t:?}"
        );
    }
    assert!(t.iter().any(|s| s == "16.0 bits"), "legend in {t:?}");
    let fills: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect"))
        .filter_map(|n| n.attribute("fill").map(str::to_lowercase))
        .collect();
    let c = scale.color(Some(11.0));
    let want = format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2);
    assert!(
        fills.contains(&want),
        "the color of w11 ({want}) in {fills:?}"
    );
    // Too many for the image: the rest is said, and the CSV keeps them all.
    let big = fig(2000);
    let svg = prism_analysis::figure::render::to_svg(&big, 800, 400).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert!(
        texts(&doc)
            .iter()
            .any(|s| s.contains("more tokens (all are in the CSV)")),
        "the overflow is said"
    );
    assert_eq!(big.to_csv().lines().count(), 2001);
}
