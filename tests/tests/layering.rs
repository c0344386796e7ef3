//! The analysis crate stays headless: no GUI toolkit anywhere in its dependency tree, so the CLI,
//! the tests and the benchmarks run without a display.

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
