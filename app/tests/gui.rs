//! The desktop app driven through egui_kittest: open a tiny model, type, switch every view, hover a
//! token, export a figure, and a few small snapshots.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use prism_analysis::backend::BackendChoice;
use prism_app::gui::{Launch, PrismApp};
use prism_app::views::View;

fn tiny_gguf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/reference/tiny/llama-gguf/tiny-llama-f32.gguf")
}

fn app(view: View, text: &str) -> PrismApp {
    // Never read or write the user's own saved state from the tests.
    std::env::set_var(
        "PRISM_STATE_DIR",
        std::env::temp_dir().join(format!("prism-gui-test-state-{}", std::process::id())),
    );
    let ctx = egui::Context::default();
    PrismApp::new(
        &ctx,
        None,
        Launch {
            model: Some(tiny_gguf().display().to_string()),
            text: Some(text.into()),
            view: Some(view),
            screenshot: None,
            backend: Some(BackendChoice::Cpu),
        },
    )
}

fn harness(app: PrismApp) -> Harness<'static, PrismApp> {
    Harness::builder()
        .with_size(egui::vec2(1100.0, 700.0))
        .build_ui_state(|ui, app: &mut PrismApp| app.ui_contents(ui), app)
}

/// Steps the UI until `done` holds (the worker runs on its own thread).
fn wait_for(h: &mut Harness<'static, PrismApp>, what: &str, done: impl Fn(&PrismApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}; error: {:?}",
            h.state().error
        );
        h.step();
        std::thread::sleep(Duration::from_millis(15));
    }
    h.run_steps(3);
}

#[test]
fn open_type_switch_views_hover_and_export() {
    let mut h = harness(app(View::Text, "hello there"));
    wait_for(&mut h, "the first run", |a| a.trace.is_some());
    assert!(h.state().loaded.is_some());
    let first_len = h.state().trace.as_ref().unwrap().1.tokens.len();
    assert!(
        h.query_by_label_contains("bits/byte").is_some(),
        "the summary line is shown"
    );
    // Typing re-runs the model after the debounce.
    h.get_by_role(egui::accesskit::Role::MultilineTextInput)
        .click();
    h.run_steps(2);
    h.get_by_role(egui::accesskit::Role::MultilineTextInput)
        .type_text(" and more words");
    h.run_steps(2);
    assert!(
        h.state().s.prompt.contains("more words"),
        "typed text reaches the prompt: {:?}",
        h.state().s.prompt
    );
    wait_for(&mut h, "the re-run", |a| {
        a.trace.as_ref().is_some_and(|t| t.2.contains("more words"))
    });
    assert!(h.state().trace.as_ref().unwrap().1.tokens.len() > first_len);
    // Hovering a token shows its card.
    let shown = prism_app::views::show_token(&h.state().trace.as_ref().unwrap().1.tokens[1].text);
    let token = h
        .get_all_by_label(&shown)
        .next()
        .expect("a token label")
        .rect();
    h.hover_at(token.center());
    h.run_steps(4);
    assert!(
        h.query_by_label_contains("what the model expected here")
            .is_some(),
        "the hover card with the top predictions"
    );
    // Every view renders.
    for v in View::ALL {
        h.get_by_label(v.label()).click();
        h.run_steps(3);
        assert_eq!(h.state().s.view, v);
    }
    // The attention view has a map; the lens is computed on request.
    h.get_by_label("Logit lens").click();
    h.run_steps(2);
    h.get_by_label("Compute the logit lens").click();
    h.run_steps(2);
    wait_for(&mut h, "the logit lens", |a| {
        a.trace
            .as_ref()
            .is_some_and(|t| t.1.output.logit_lens.is_some())
    });
    // Export the lens figure: SVG that parses, plus data.
    let dir = std::env::temp_dir().join(format!("prism-gui-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = h
        .state_mut()
        .export_to(&dir.join("lens.svg"))
        .expect("export");
    assert_eq!(files.len(), 3);
    let svg = std::fs::read_to_string(dir.join("lens.svg")).unwrap();
    roxmltree::Document::parse(&svg).expect("the exported SVG parses");
    assert!(
        std::fs::read_to_string(dir.join("lens.csv"))
            .unwrap()
            .lines()
            .count()
            > 2
    );
    assert!(h.state().last_export.is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_file_shows_an_error_and_the_app_keeps_working() {
    let dir = std::env::temp_dir().join(format!("prism-gui-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read(tiny_gguf()).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("broken.gguf", b"GGUF\x03\x00\x00\x00garbage".to_vec()),
        ("empty.gguf", Vec::new()),
        (
            "magic.gguf",
            b"GGUX\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00".to_vec(),
        ),
        ("truncated.gguf", good[..good.len() / 2].to_vec()),
        ("pytorch_model.bin", b"\x80\x02}q\x00.".to_vec()),
    ];
    let mut h = harness(app(View::Text, "hello"));
    wait_for(&mut h, "the tiny model", |a| a.trace.is_some());
    for (name, bytes) in cases {
        let bad = dir.join(name);
        std::fs::write(&bad, bytes).unwrap();
        h.state_mut().error = None;
        h.state_mut().open(&bad.display().to_string());
        wait_for(&mut h, "the error", |a| a.error.is_some() && !a.busy());
        assert!(
            h.state().error.as_ref().unwrap().contains(name),
            "{name}: {:?}",
            h.state().error
        );
        assert!(
            h.query_by_label_contains(name).is_some(),
            "the error for {name} is on screen"
        );
    }
    // Reopening a good model works.
    h.state_mut().open(&tiny_gguf().display().to_string());
    wait_for(&mut h, "the model again", |a| {
        a.loaded.is_some() && !a.busy() && a.trace.is_some()
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn embeddings_and_attention_views_work_on_the_tiny_model() {
    let mut h = harness(app(View::Embeddings, "ab cd ef gh"));
    wait_for(&mut h, "load", |a| a.loaded.is_some() && !a.busy());
    h.state_mut().s.embeddings.words = "ab\ncd\nef\ngh\nij\nkl".into();
    h.state_mut().request_projection();
    h.run_steps(2);
    wait_for(&mut h, "the projection", |a| {
        a.s.embeddings.result.is_some() || a.s.embeddings.error.is_some()
    });
    assert!(
        h.state().s.embeddings.error.is_none(),
        "{:?}",
        h.state().s.embeddings.error
    );
    assert_eq!(
        h.state().s.embeddings.result.as_ref().unwrap().words.len(),
        6
    );
    h.get_by_label("Attention").click();
    h.run_steps(4);
    assert!(h.query_by_label_contains("rows: queries").is_some());
}

#[test]
fn snapshot_of_the_text_view() {
    let mut h = harness(app(View::Text, "hello there, small model"));
    wait_for(&mut h, "the run", |a| a.trace.is_some() && !a.busy());
    h.run_steps(4);
    h.snapshot("text_view");
}

#[test]
fn saved_state_round_trips_and_a_corrupt_file_is_ignored() {
    let dir = std::env::temp_dir().join(format!("prism-gui-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let s = prism_app::gui::Persisted {
        prompt: "a saved prompt".into(),
        view: View::Lens,
        dark: false,
        ..Default::default()
    };
    prism_app::gui::save_state(&path, &s).unwrap();
    let back = prism_app::gui::load_state(&path).expect("the state reads back");
    assert_eq!(back.prompt, "a saved prompt");
    assert_eq!(back.view, View::Lens);
    assert!(!back.dark);
    std::fs::write(&path, b"{ \"prompt\": 12, trunc").unwrap();
    assert!(
        prism_app::gui::load_state(&path).is_none(),
        "a corrupt state file is ignored, not fatal"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
