//! The analysis crate stays headless: no GUI toolkit anywhere in its dependency tree, so the CLI,
//! the tests and the benchmarks run without a display. And its modules form layers: each calls
//! only modules below it, so there are no circles, and a newcomer can read it from the bottom up.

use std::process::Command;

#[test]
fn analysis_does_not_depend_on_a_gui() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            "prism-analysis",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("candle-core"), "the tree was read: {tree}");
    for gui in ["egui ", "eframe ", "winit ", "egui-wgpu ", "egui_plot "] {
        assert!(
            !tree.lines().any(|l| l.starts_with(gui)),
            "prism-analysis depends on {gui}"
        );
    }
}

/// The top-level modules of `prism-analysis`, bottom first. A module may use only modules listed
/// before it. A new module goes where its imports put it; if none fits, a type lives in the wrong
/// room.
const LAYERS: &[&str] = &[
    "simd",
    "error",
    "atomic",
    "guard",
    "corpus",
    "quant",
    "metrics",
    "memory",
    "samples",
    "rng",
    "gguf",
    "weights",
    "tokenizer",
    "arch",
    "intervene",
    "model",
    "template",
    "checkpoint",
    "backend",
    "trace",
    "generate",
    "patching",
    "ablation",
    "sae",
    "actcache",
    "batch",
    "geometry",
    "steering",
    "figure",
];

/// The top-level module each `crate::` path in `src` names (code only: comments and tests skipped).
fn crate_paths(src: &str) -> Vec<String> {
    let code = src.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let ident = |s: &str| -> String {
                s.trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            };
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a::X, b}`: the first name of every item at the top of the braces.
                for item in split_top(group) {
                    out.push(ident(item));
                }
            } else {
                out.push(ident(rest));
            }
        }
    }
    out.retain(|m| !m.is_empty());
    // The crate root re-exports the error type (`crate::PrismError`, `crate::Result`).
    for m in &mut out {
        if m == "PrismError" || m == "Result" {
            *m = "error".into();
        }
    }
    out
}

/// The items of a brace group up to its closing brace, split at top-level commas.
fn split_top(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

/// Every edge `from -> to` between top-level modules of the analysis crate, with the file.
fn module_edges() -> Vec<(String, String, String)> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../analysis/src");
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read analysis/src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut edges = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a component");
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read source");
        for to in crate_paths(&text) {
            if to != module {
                edges.push((module.clone(), to, rel.display().to_string()));
            }
        }
    }
    edges
}

#[test]
fn the_path_parser_reads_single_and_grouped_imports() {
    let src = "use crate::backend::Capture;\nuse crate::{metrics::{a, b}, rng};\n// crate::figure in a comment\nfn f() { crate::error::x(); }\n#[cfg(test)]\nuse crate::trace;";
    assert_eq!(crate_paths(src), ["backend", "metrics", "rng", "error"]);
}

#[test]
fn analysis_modules_only_call_downward() {
    let edges = module_edges();
    assert!(
        edges.len() > 50,
        "the sources were read: {} edges",
        edges.len()
    );
    let mut bad = Vec::new();
    for (from, to, file) in &edges {
        let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
        match (rank(from), rank(to)) {
            (None, _) => bad.push(format!("module {from} ({file}) is not in LAYERS: add it where its imports put it")),
            (_, None) => bad.push(format!("{file} uses crate::{to}, which is not a module in LAYERS")),
            (Some(a), Some(b)) if b > a => bad.push(format!(
                "{file}: {from} uses {to}, a layer above it (a circle in the making: move the type to the room that owns it)"
            )),
            _ => {}
        }
    }
    bad.sort();
    bad.dedup();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
