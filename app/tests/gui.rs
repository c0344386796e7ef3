//! The desktop app driven through egui_kittest, through its widgets: open a tiny model, type,
//! switch every view, hover a token, export a figure; generate, patch, ablate and steer, checking
//! that what the screen shows equals what the engine computes for the same input; interventions
//! that apply everywhere; and frames that keep coming while a long job runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use egui::accesskit::Role;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use prism_analysis::backend::cpu::CpuBackend;
use prism_analysis::backend::{BackendChoice, Capture};
use prism_analysis::checkpoint::{self, Model};
use prism_analysis::trace::Trace;
use prism_app::gui::{Launch, PrismApp};
use prism_app::views::ablate::AblateView;
use prism_app::views::generate::GenerateView;
use prism_app::views::patch::PatchView;
use prism_app::views::steer::SteerView;

fn tiny_gguf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/reference/tiny/llama-gguf/tiny-llama-f32.gguf")
}

fn app_on(model: &str, view: &str, text: &str) -> PrismApp {
    app_with(model, view, text, Vec::new())
}

fn app_with(
    model: &str,
    view: &str,
    text: &str,
    settings: Vec<(String, String, serde_json::Value)>,
) -> PrismApp {
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
            model: Some(model.into()),
            text: Some(text.into()),
            view: Some(view.into()),
            screenshot: None,
            backend: Some(BackendChoice::Cpu),
            settings,
        },
    )
}

fn app(view: &str, text: &str) -> PrismApp {
    app_on(&tiny_gguf().display().to_string(), view, text)
}

fn harness(app: PrismApp) -> Harness<'static, PrismApp> {
    Harness::builder()
        .with_size(egui::vec2(1280.0, 820.0))
        .build_ui_state(|ui, app: &mut PrismApp| app.ui_contents(ui), app)
}

/// Steps the UI until `done` holds (the worker runs on its own thread).
fn wait_for(h: &mut Harness<'static, PrismApp>, what: &str, done: impl Fn(&PrismApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}; error: {:?}, status: {}",
            h.state().error,
            h.state().status
        );
        h.step();
        std::thread::sleep(Duration::from_millis(15));
    }
    h.run_steps(3);
}

/// Replaces the text of the input labelled `label` by typing, as a user would.
fn retype(h: &mut Harness<'static, PrismApp>, label: &str, text: &str) {
    h.get_by_label(label).click();
    h.run_steps(2);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    h.run_steps(1);
    h.get_by_label(label).type_text(text);
    h.run_steps(2);
}

/// A click at a point (press and release in one frame, as kittest clicks a node).
fn click_at(h: &mut Harness<'static, PrismApp>, pos: egui::Pos2, modifiers: egui::Modifiers) {
    h.hover_at(pos);
    h.event(egui::Event::ModifiersChanged(modifiers));
    for pressed in [true, false] {
        h.event(egui::Event::PointerButton {
            pos,
            button: egui::PointerButton::Primary,
            pressed,
            modifiers,
        });
    }
    h.event(egui::Event::ModifiersChanged(egui::Modifiers::NONE));
    h.run_steps(2);
}

/// Drags the pointer from `from` to `to` in small moves.
fn drag(h: &mut Harness<'static, PrismApp>, from: egui::Pos2, to: egui::Pos2) {
    h.hover_at(from);
    h.run_steps(1);
    h.drag_at(from);
    h.run_steps(1);
    for i in 1..=8 {
        h.hover_at(from + (to - from) * (i as f32 / 8.0));
        h.run_steps(1);
    }
    h.drop_at(to);
    h.run_steps(2);
}

/// The center of a grid cell (layer `row`, column `col`) on screen.
fn cell(
    h: &Harness<'static, PrismApp>,
    grid: &str,
    rows: usize,
    cols: usize,
    row: usize,
    col: usize,
) -> egui::Pos2 {
    let rect = h.get_by_label(grid).rect();
    prism_app::views::grid::Grid::cell_center(rect, rows, cols, row, col)
}

fn engine() -> (Model, CpuBackend) {
    let model = checkpoint::load(&tiny_gguf()).expect("the tiny model loads");
    let backend = CpuBackend::new(&model).expect("cpu backend");
    (model, backend)
}

#[test]
fn open_type_switch_views_hover_and_export() {
    let mut h = harness(app("text", "hello there"));
    wait_for(&mut h, "the first run", |a| a.run.is_some());
    assert!(h.state().loaded.is_some());
    let first_len = h.state().run.as_ref().unwrap().trace.tokens.len();
    assert!(
        h.query_by_label_contains("bits/byte").is_some(),
        "the summary line is shown"
    );
    // Typing re-runs the model after the debounce.
    h.get_by_role(Role::MultilineTextInput).click();
    h.run_steps(2);
    h.get_by_role(Role::MultilineTextInput)
        .type_text(" and more words");
    h.run_steps(2);
    assert!(
        h.state().s.prompt.contains("more words"),
        "typed text reaches the prompt: {:?}",
        h.state().s.prompt
    );
    wait_for(&mut h, "the re-run", |a| {
        a.run
            .as_ref()
            .is_some_and(|r| r.text.contains("more words"))
    });
    assert!(h.state().run.as_ref().unwrap().trace.tokens.len() > first_len);
    // Hovering a token shows its card.
    let shown = prism_app::views::show_token(&h.state().run.as_ref().unwrap().trace.tokens[1].text);
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
    // Every view is in the view bar and renders.
    let views: Vec<(&str, &str)> = h
        .state()
        .views
        .iter()
        .map(|v| (v.id(), v.label()))
        .collect();
    assert_eq!(views.len(), 12);
    for (id, label) in views {
        h.get_by_label(label).click();
        h.run_steps(3);
        assert_eq!(h.state().s.view, id);
    }
    // The logit lens fills in by itself, the top layers first.
    h.get_by_label("Logit lens").click();
    wait_for(&mut h, "the logit lens", |a| {
        a.view::<prism_app::views::lens::LensView>()
            .is_some_and(|l| l.complete())
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
    let mut h = harness(app("text", "hello"));
    wait_for(&mut h, "the tiny model", |a| a.run.is_some());
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
        a.loaded.is_some() && !a.busy() && a.run.is_some()
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn embeddings_project_on_the_first_visit_with_a_source_picker() {
    let mut h = harness(app("embeddings", "ab cd ef gh"));
    wait_for(&mut h, "the first projection", |a| {
        a.view::<prism_app::views::embeddings::EmbeddingsView>()
            .is_some_and(|e| e.result.is_some() || e.error.is_some())
    });
    let e = h
        .state()
        .view::<prism_app::views::embeddings::EmbeddingsView>()
        .unwrap();
    assert!(e.error.is_none(), "{:?}", e.error);
    assert_eq!(e.result.as_ref().unwrap().words.len(), e.word_list().len());
    // The source is picked from the representations the model has.
    h.get_by_label("source").click();
    h.run_steps(2);
    assert!(h.query_by_label("layer:1").is_some(), "layers are offered");
    assert!(h.query_by_label("final_norm").is_some());
    h.get_by_label("layer:1").click();
    h.run_steps(2);
    h.get_by_label("Project").click();
    wait_for(&mut h, "the layer-1 projection", |a| {
        a.view::<prism_app::views::embeddings::EmbeddingsView>()
            .and_then(|e| e.result.as_ref())
            .is_some_and(|r| r.source == "layer:1")
    });
    h.get_by_label("Attention").click();
    wait_for(&mut h, "a run", |a| a.run.is_some());
    assert!(h.query_by_label_contains("rows: queries").is_some());
}

#[test]
fn snapshot_of_the_text_view() {
    let mut h = harness(app("text", "hello there, small model"));
    wait_for(&mut h, "the run", |a| a.run.is_some() && !a.busy());
    h.run_steps(4);
    h.snapshot("text_view");
}

#[test]
fn saved_state_round_trips_and_a_corrupt_file_is_ignored() {
    let dir = std::env::temp_dir().join(format!("prism-gui-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let mut s = prism_app::gui::Persisted {
        prompt: "a saved prompt".into(),
        view: "patch".into(),
        dark: false,
        ..Default::default()
    };
    s.views.insert(
        "patch".into(),
        serde_json::json!({"clean": "saved clean prompt"}),
    );
    prism_app::gui::save_state(&path, &s).unwrap();
    let back = prism_app::gui::load_state(&path).expect("the state reads back");
    assert_eq!(back.prompt, "a saved prompt");
    assert_eq!(back.view, "patch");
    assert!(!back.dark);
    // A view's saved settings reach the view when the app starts with them.
    let ctx = egui::Context::default();
    let a = PrismApp::new(
        &ctx,
        Some(back),
        Launch {
            model: Some(tiny_gguf().display().to_string()),
            backend: Some(BackendChoice::Cpu),
            ..Default::default()
        },
    );
    assert_eq!(a.view::<PatchView>().unwrap().clean, "saved clean prompt");
    assert_eq!(a.s.view, "patch");
    std::fs::write(&path, b"{ \"prompt\": 12, trunc").unwrap();
    assert!(
        prism_app::gui::load_state(&path).is_none(),
        "a corrupt state file is ignored, not fatal"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn generate_view_streams_what_the_engine_generates() {
    let mut h = harness(app("generate", "x"));
    wait_for(&mut h, "the first generation", |a| {
        a.view::<GenerateView>()
            .is_some_and(|g| g.stream.result.is_some())
    });
    retype(&mut h, "prompt", "the cat sat on");
    let tag = h.state().view::<GenerateView>().unwrap().stream.tag;
    h.get_by_label("Generate text").click();
    wait_for(&mut h, "the generation", |a| {
        a.view::<GenerateView>()
            .is_some_and(|g| g.stream.tag > tag && g.stream.result.is_some())
    });
    assert_eq!(
        h.state().view::<GenerateView>().unwrap().prompt,
        "the cat sat on"
    );
    let g = h.state().view::<GenerateView>().unwrap();
    let shown = g
        .stream
        .result
        .as_ref()
        .unwrap()
        .as_ref()
        .expect("generated")
        .clone();
    // The engine, for the same prompt and settings.
    let (model, backend) = engine();
    let ids = model
        .tokenizer
        .as_ref()
        .unwrap()
        .encode("the cat sat on", false)
        .unwrap();
    let settings = prism_analysis::generate::GenSettings::for_model(
        &model,
        g.max_tokens,
        prism_analysis::generate::Sampling::default(),
    );
    let want = prism_analysis::generate::generate(
        &model,
        &backend,
        &ids,
        &settings,
        &[],
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(shown.prompt_ids, ids);
    let got: Vec<u32> = shown.tokens.iter().map(|t| t.id).collect();
    let expect: Vec<u32> = want.tokens.iter().map(|t| t.id).collect();
    assert_eq!(got, expect);
    // On screen: every generated token, and the summary with the engine's mean entropy.
    let mean = want.tokens.iter().map(|t| t.entropy_bits).sum::<f64>() / want.tokens.len() as f64;
    let summary = format!(
        "{} tokens, {}; mean entropy {mean:.2} bits",
        want.tokens.len(),
        want.stop_reason.describe()
    );
    assert!(
        h.query_by_label(&summary).is_some(),
        "{summary:?} on screen"
    );
    let first = prism_app::views::show_token(&want.tokens[0].text);
    assert!(
        h.query_all_by_label(&first).next().is_some(),
        "{first:?} on screen"
    );
}

#[test]
fn patch_view_fills_the_grid_and_a_clicked_cell_shows_the_patched_run() {
    let mut h = harness(app("patch", "x"));
    wait_for(&mut h, "the model", |a| a.loaded.is_some());
    retype(&mut h, "clean", "the cat sat on the");
    retype(&mut h, "corrupt", "the dog sat on the");
    retype(&mut h, "answer", "s");
    retype(&mut h, "wrong", "t");
    let tag = h
        .state()
        .view::<PatchView>()
        .and_then(|p| p.run.as_ref())
        .map_or(0, |r| r.tag);
    h.get_by_label("Run patching").click();
    wait_for(&mut h, "the patching grid", |a| {
        a.view::<PatchView>()
            .and_then(|p| p.run.as_ref())
            .is_some_and(|r| r.tag > tag && (r.result.is_some() || r.error.is_some()))
    });
    let p = h.state().view::<PatchView>().unwrap();
    let run = p.run.as_ref().unwrap();
    assert!(run.error.is_none(), "{:?}", run.error);
    let shown = run.result.as_ref().unwrap();
    // The engine on the same prompts.
    let (model, backend) = engine();
    let tok = model.tokenizer.as_ref().unwrap();
    let (c, x) = (
        tok.encode("the cat sat on the", false).unwrap(),
        tok.encode("the dog sat on the", false).unwrap(),
    );
    let (a, w) = (
        tok.encode_plain("s").unwrap()[0],
        tok.encode_plain("t").unwrap()[0],
    );
    let want = prism_analysis::patching::patch(
        &model,
        &backend,
        &c,
        &x,
        a,
        w,
        prism_analysis::intervene::Site::ResidPre,
        &mut |_, _, _| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    for (l, (g, e)) in shown.effect.iter().zip(&want.effect).enumerate() {
        for (p, (g, e)) in g.iter().zip(e).enumerate() {
            assert!((g - e).abs() < 1e-6, "layer {l} position {p}: {g} vs {e}");
        }
    }
    let metric_line = format!(
        "clean {:.3}, corrupt {:.3}",
        want.clean_metric, want.corrupt_metric
    );
    assert!(
        h.query_by_label_contains(&metric_line).is_some(),
        "{metric_line}"
    );
    // Click layer 1, position 3 (the differing token): the patched run's numbers appear.
    let at = cell(&h, "patching grid", 2, 13, 1, 3);
    click_at(&mut h, at, egui::Modifiers::NONE);
    wait_for(&mut h, "the patched run", |a| {
        a.view::<PatchView>()
            .and_then(|p| p.detail.as_ref())
            .is_some_and(|d| d.trace.is_some())
    });
    let d = h
        .state()
        .view::<PatchView>()
        .unwrap()
        .detail
        .as_ref()
        .unwrap();
    assert_eq!((d.layer, d.col), (1, 3));
    let line = format!(
        "metric {:.3} · effect {:.3}",
        want.patched_metric[1][3], want.effect[1][3]
    );
    assert!(h.query_by_label(&line).is_some(), "{line:?} on screen");
    // Its top prediction is the engine's for the corrupt prompt with resid_pre@1[3] set to the clean value.
    let clean_run = Trace::run(
        &model,
        &backend,
        &c,
        Capture {
            residual: true,
            ..Capture::default()
        },
        5,
    )
    .unwrap();
    let h_dim = model.spec.hidden;
    let v = clean_run.output.residual.as_ref().unwrap()[1][3 * h_dim..4 * h_dim].to_vec();
    let iv = prism_analysis::intervene::Intervention::new(
        prism_analysis::intervene::Site::ResidPre,
        1,
        prism_analysis::intervene::Op::Set,
    )
    .at(vec![3])
    .with_vector(v, None);
    let patched = Trace::run_with(&model, &backend, &x, Capture::default(), 10, &[iv]).unwrap();
    let top = &patched.top.last().unwrap()[0];
    let shown_top = format!("{:?}", prism_app::views::show_token(&top.text));
    assert!(
        h.query_by_label(&shown_top).is_some(),
        "{shown_top} on screen"
    );
    assert!(h
        .query_by_label(&format!("{:.1}%", top.p * 100.0))
        .is_some());
}

#[test]
fn ablate_view_click_and_shift_click_ablate_heads_together() {
    let mut h = harness(app("ablate", "x"));
    wait_for(&mut h, "the ablation grid", |a| {
        a.view::<AblateView>()
            .and_then(|v| v.run.as_ref())
            .is_some_and(|r| r.result.is_some() || r.error.is_some())
    });
    let (model, backend) = engine();
    let ids = model
        .tokenizer
        .as_ref()
        .unwrap()
        .encode(prism_app::views::ablate::EXAMPLE, false)
        .unwrap();
    let want = prism_analysis::ablation::ablate(
        &model,
        &backend,
        &ids,
        prism_analysis::ablation::AblationMode::Zero,
        &mut |_, _, _| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    let shown = h
        .state()
        .view::<AblateView>()
        .unwrap()
        .run
        .as_ref()
        .unwrap()
        .result
        .as_ref()
        .unwrap()
        .delta_bits
        .clone();
    assert_eq!(shown.len(), 2);
    for (g, e) in shown.iter().flatten().zip(want.delta_bits.iter().flatten()) {
        assert!((g - e).abs() < 1e-6, "{g} vs {e}");
    }
    // Click head 1.2, then shift-click head 0.3: both are ablated together.
    let at = cell(&h, "ablation grid", 2, 4, 1, 2);
    click_at(&mut h, at, egui::Modifiers::NONE);
    let at = cell(&h, "ablation grid", 2, 4, 0, 3);
    click_at(&mut h, at, egui::Modifiers::SHIFT);
    assert_eq!(
        h.state().view::<AblateView>().unwrap().selected,
        vec![(1, 2), (0, 3)]
    );
    wait_for(&mut h, "the ablated run", |a| {
        a.view::<AblateView>()
            .and_then(|v| v.detail.as_ref())
            .is_some_and(|d| d.heads.len() == 2 && d.traces.is_some())
    });
    let list = vec![
        prism_analysis::ablation::head_ablation(1, 2, prism_analysis::ablation::AblationMode::Zero),
        prism_analysis::ablation::head_ablation(0, 3, prism_analysis::ablation::AblationMode::Zero),
    ];
    let base = Trace::run(&model, &backend, &ids, Capture::default(), 5).unwrap();
    let abl = Trace::run_with(&model, &backend, &ids, Capture::default(), 5, &list).unwrap();
    let line = format!(
        "total {:.2} bits instead of {:.2}: Δ {:+.2} bits",
        abl.total_bits(),
        base.total_bits(),
        abl.total_bits() - base.total_bits()
    );
    assert!(h.query_by_label(&line).is_some(), "{line:?} on screen");
    assert!(h.query_by_label("zero-ablate heads 1.2, 0.3").is_some());
}

#[test]
fn interventions_apply_to_the_text_view_and_switch_off() {
    let mut h = harness(app("ablate", "the cat sat on the mat"));
    wait_for(&mut h, "the ablation grid", |a| {
        a.view::<AblateView>()
            .and_then(|v| v.run.as_ref())
            .is_some_and(|r| r.result.is_some())
    });
    let at = cell(&h, "ablation grid", 2, 4, 0, 1);
    click_at(&mut h, at, egui::Modifiers::NONE);
    wait_for(&mut h, "the ablated run", |a| {
        a.view::<AblateView>()
            .and_then(|v| v.detail.as_ref())
            .is_some_and(|d| d.traces.is_some())
    });
    h.get_by_label("apply everywhere").click();
    h.run_steps(2);
    assert_eq!(h.state().interventions.active().len(), 1);
    h.get_by_label("Text").click();
    wait_for(&mut h, "the run with the ablation", |a| {
        a.run
            .as_ref()
            .is_some_and(|r| r.trace.interventions.len() == 1)
            && !a.busy()
    });
    let (model, backend) = engine();
    let ids = model
        .tokenizer
        .as_ref()
        .unwrap()
        .encode("the cat sat on the mat", false)
        .unwrap();
    let list = vec![prism_analysis::ablation::head_ablation(
        0,
        1,
        prism_analysis::ablation::AblationMode::Zero,
    )];
    let want = Trace::run_with(&model, &backend, &ids, Capture::default(), 5, &list).unwrap();
    let got = &h.state().run.as_ref().unwrap().trace;
    for (g, e) in got.surprisal_bits.iter().zip(&want.surprisal_bits) {
        assert_eq!(g.map(|x| (x * 1e6).round()), e.map(|x| (x * 1e6).round()));
    }
    assert!(h
        .query_by_label_contains("1 intervention(s) active")
        .is_some());
    // Switched off in the panel: the plain run comes back.
    h.get_by_label("zero-ablate head 0.1").click();
    wait_for(&mut h, "the plain run", |a| {
        a.run
            .as_ref()
            .is_some_and(|r| r.trace.interventions.is_empty())
            && !a.busy()
    });
    assert!(h
        .query_by_label_contains("intervention(s) active")
        .is_none());
}

#[test]
fn steer_view_slider_regenerates_the_steered_text() {
    let mut h = harness(app("steer", "x"));
    wait_for(&mut h, "the first steered pair", |a| {
        a.view::<SteerView>().is_some_and(|s| {
            (s.plain.result.is_some() && s.steered.result.is_some()) || s.error.is_some()
        })
    });
    assert!(h.state().view::<SteerView>().unwrap().error.is_none());
    let before = h.state().view::<SteerView>().unwrap().strength;
    // Drag the slider's handle near its left end.
    let r = h.get_by_role(Role::Slider).rect();
    drag(&mut h, r.center(), egui::pos2(r.left() + 2.0, r.center().y));
    let strength = h.state().view::<SteerView>().unwrap().strength;
    assert!(
        strength < before - 0.5,
        "the slider moved: {before} -> {strength}"
    );
    let tag = h.state().view::<SteerView>().unwrap().steered.tag;
    wait_for(&mut h, "the regenerated steered text", |a| {
        a.view::<SteerView>()
            .is_some_and(|s| s.steered.tag > tag && s.steered.result.is_some())
    });
    let s = h.state().view::<SteerView>().unwrap();
    let scale = s.scale();
    assert!(h.query_by_label(&format!("= scale {scale:.1}")).is_some());
    // The engine, steered with the view's vector at its layer and scale.
    let (model, backend) = engine();
    let m = s.vector.as_ref().unwrap();
    let directions = m.vector.directions.clone();
    let list = m
        .vector
        .interventions(scale, Some((s.layer, s.layer)), model.spec.n_layers);
    assert_eq!(list.len(), 1);
    let ids = model
        .tokenizer
        .as_ref()
        .unwrap()
        .encode(&s.prompt, false)
        .unwrap();
    let settings = prism_analysis::generate::GenSettings::for_model(
        &model,
        s.max_tokens,
        prism_analysis::generate::Sampling::default(),
    );
    let want = prism_analysis::generate::generate(
        &model,
        &backend,
        &ids,
        &settings,
        &list,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    let got: Vec<u32> = s.steered.tokens.iter().map(|t| t.id).collect();
    assert_eq!(got, want.tokens.iter().map(|t| t.id).collect::<Vec<_>>());
    // Save and load the vector as a llama.cpp control-vector file.
    let dir = std::env::temp_dir().join(format!("prism-gui-steer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("v.gguf");
    h.state_mut()
        .view_mut::<SteerView>()
        .unwrap()
        .save_file(&file);
    let back = prism_analysis::steering::ControlVector::load(&file, model.spec.hidden).unwrap();
    assert_eq!(back.directions, directions);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_app_and_the_cli_export_the_same_svg() {
    let mut h = harness(app("text", "hello there"));
    wait_for(&mut h, "the run", |a| a.run.is_some() && !a.busy());
    let dir = std::env::temp_dir().join(format!("prism-gui-same-svg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    h.state_mut().export_to(&dir.join("app.svg")).unwrap();
    let model = h.state().loaded.as_ref().unwrap().model.info.path.clone();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_prism"))
        .args([
            "run",
            model.to_str().unwrap(),
            "--text",
            "hello there",
            "--backend",
            "cpu",
            "--figure",
        ])
        .arg(dir.join("cli.svg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app_svg = std::fs::read_to_string(dir.join("app.svg")).unwrap();
    let cli_svg = std::fs::read_to_string(dir.join("cli.svg")).unwrap();
    assert!(app_svg.contains("Surprisal per token"));
    assert_eq!(
        app_svg, cli_svg,
        "the app and the CLI draw the same text figure"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn frames_keep_coming_while_a_long_patching_run_fills_the_grid() {
    use prism_analysis::samples;
    let s = samples::find("smollm2").unwrap();
    if !samples::is_present(s) {
        samples::fetch(s, &mut |_| {}, &AtomicBool::new(false))
            .expect("fetching SmolLM2 for the UI test");
    }
    let mut h = harness(app_on("smollm2", "patch", "x"));
    wait_for(&mut h, "the model", |a| a.loaded.is_some());
    // The Eiffel Tower example starts on the first visit: 30 layers on SmolLM2.
    let start = Instant::now();
    let (mut frames, mut slowest, mut partial) = (0usize, Duration::ZERO, false);
    loop {
        let t = Instant::now();
        h.step();
        slowest = slowest.max(t.elapsed());
        frames += 1;
        let run = h.state().view::<PatchView>().and_then(|p| p.run.as_ref());
        if let Some(r) = run {
            partial |= !r.rows.is_empty() && r.rows.len() < r.n_layers;
            if r.result.is_some() || r.error.is_some() {
                assert!(r.error.is_none(), "{:?}", r.error);
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "patching took too long"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(partial, "the grid filled in row by row");
    assert!(frames > 30, "only {frames} frames during the run");
    assert!(
        slowest < Duration::from_millis(400),
        "a frame took {slowest:?}: the UI waited on the worker"
    );
}

/// The text view exports what it shows: a token strip with the tokens and colors it draws
/// (`build::text_strip`), in surprisal colors or, with GLTR on, in rank buckets.
#[test]
fn the_text_view_exports_its_token_strip() {
    use prism_analysis::figure::build::{text_strip, TextColors};
    use prism_analysis::figure::FigureKind;
    let mut h = harness(app("text", "hello there, how are you"));
    wait_for(&mut h, "the first run", |a| a.run.is_some());
    for (gltr, colors, header) in [
        (
            false,
            TextColors::Surprisal,
            "index,token,surprisal (bits),color",
        ),
        (
            true,
            TextColors::Rank,
            "index,token,rank of the actual token,color",
        ),
    ] {
        h.state_mut()
            .view_mut::<prism_app::views::text::TextView>()
            .unwrap()
            .gltr = gltr;
        h.run_steps(2);
        let fig = h.state_mut().current_figure().expect("a figure");
        let trace = &h.state().run.as_ref().unwrap().trace;
        let shown = text_strip(trace, colors);
        match &fig.kind {
            FigureKind::Tokens { tokens, .. } => {
                assert_eq!(tokens, &shown.tokens, "gltr {gltr}: export = screen");
                assert_eq!(tokens.len(), trace.tokens.len());
                assert_eq!(
                    tokens[1].value,
                    trace.surprisal_bits[1]
                        .filter(|_| !gltr)
                        .or(trace.rank[1].filter(|_| gltr).map(|r| r as f64))
                );
            }
            other => panic!("the text view exported {other:?}"),
        }
        assert_eq!(fig.to_csv().lines().next(), Some(header));
        assert_eq!(fig.to_csv().lines().count(), trace.tokens.len() + 1);
    }
    // Surprisal and rank colors differ somewhere (the export follows the setting).
    let trace = &h.state().run.as_ref().unwrap().trace;
    assert_ne!(
        text_strip(trace, TextColors::Surprisal).tokens,
        text_strip(trace, TextColors::Rank).tokens
    );
}

/// The color study exports both of its panels: the RSA by layer and the PCA scatter on screen.
#[test]
fn the_color_study_exports_every_panel() {
    let mut h = harness(app("colors", "red"));
    wait_for(&mut h, "the color study and its scatter", |a| {
        a.view::<prism_app::views::colors::ColorsView>()
            .is_some_and(|c| (c.study.is_some() && c.scatter.is_some()) || c.error.is_some())
    });
    let v = h
        .state()
        .view::<prism_app::views::colors::ColorsView>()
        .unwrap();
    assert!(v.error.is_none(), "{:?}", v.error);
    let dir = std::env::temp_dir().join(format!("prism-gui-colors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = h
        .state_mut()
        .export_to(&dir.join("colors.svg"))
        .expect("export");
    assert_eq!(files.len(), 6, "two figures with their data: {files:?}");
    for f in ["colors.svg", "colors.csv", "colors-2.svg", "colors-2.json"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let scatter = std::fs::read_to_string(dir.join("colors-2.csv")).unwrap();
    assert!(scatter.starts_with("label,x,y,color"), "{scatter}");
    let words = h
        .state()
        .view::<prism_app::views::colors::ColorsView>()
        .unwrap()
        .scatter
        .as_ref()
        .unwrap()
        .words
        .len();
    assert_eq!(
        scatter.lines().count(),
        words + 1,
        "every word of the scatter"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The experts view on the Qwen3-MoE fixture: the usage grid is the routing of the prompt
/// (counted here from an independent run), clicking an expert ablates it with the numbers of a
/// run with that intervention, the export is the usage heatmap, and a dense model says why it
/// shows nothing.
#[test]
fn experts_view_shows_the_routing_and_a_clicked_expert_is_ablated() {
    use prism_app::views::experts::ExpertsView;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/archs/qwen3moe");
    let text = "the cat sat on the mat while the dog slept";
    let mut h = harness(app_on(&dir.display().to_string(), "experts", text));
    wait_for(&mut h, "the shared run", |a| a.run.is_some());
    let model = checkpoint::load(&dir).unwrap();
    let backend = CpuBackend::new(&model).unwrap();
    let ids = model
        .tokenizer
        .as_ref()
        .unwrap()
        .encode(text, false)
        .unwrap();
    let cap = Capture {
        experts: true,
        ..Capture::default()
    };
    let plain = Trace::run(&model, &backend, &ids, cap, 5).unwrap();
    let routing = plain.output.routing.as_ref().unwrap();
    let share = |l: usize, e: usize| {
        let r = routing[l].as_ref().unwrap();
        (0..ids.len())
            .filter(|&p| r.chosen(p).iter().any(|c| c.0 == e))
            .count() as f64
            / ids.len() as f64
    };
    let fig = h.state_mut().current_figure().expect("a usage figure");
    let prism_analysis::figure::FigureKind::Heatmap {
        values, row_labels, ..
    } = &fig.kind
    else {
        panic!("not a heatmap");
    };
    assert_eq!(
        row_labels,
        &vec!["layer 1".to_string(), "layer 0".to_string()]
    );
    for (row, l) in [(0, 1), (1, 0)] {
        assert_eq!(values[row].len(), 8);
        for (e, v) in values[row].iter().enumerate() {
            assert!((v - share(l, e)).abs() < 1e-12, "layer {l} expert {e}");
        }
    }
    // Click layer 0's most used expert.
    let top = (0..8)
        .max_by(|&a, &b| share(0, a).total_cmp(&share(0, b)))
        .unwrap();
    assert!(share(0, top) > 0.0);
    let at = cell(&h, "expert usage grid", 2, 8, 0, top);
    click_at(&mut h, at, egui::Modifiers::NONE);
    wait_for(&mut h, "the ablated run", |a| {
        a.view::<ExpertsView>()
            .and_then(|v| v.detail.as_ref())
            .is_some_and(|d| d.expert == (0, top) && d.trace.is_some())
    });
    let iv = [prism_analysis::ablation::expert_ablation(
        0,
        top,
        prism_analysis::ablation::AblationMode::Zero,
    )];
    let abl = Trace::run_with(&model, &backend, &ids, cap, 5, &iv).unwrap();
    let line = format!(
        "total {:.2} bits instead of {:.2}: Δ {:+.2} bits",
        abl.total_bits(),
        plain.total_bits(),
        abl.total_bits() - plain.total_bits()
    );
    assert!(h.query_by_label(&line).is_some(), "{line:?} on screen");
    assert!(abl.total_bits() != plain.total_bits());
    // A dense model: the view says why there is no routing.
    let mut h = harness(app("experts", "x"));
    wait_for(&mut h, "the model", |a| a.loaded.is_some());
    assert!(h
        .query_by_label_contains("is a dense model: every token goes through the same MLP")
        .is_some());
}

#[test]
fn features_view_reads_an_sae_and_a_clicked_feature_gets_its_card_and_ablation() {
    use prism_analysis::intervene::{Op, Site};
    use prism_analysis::sae::{self, Sae};
    use prism_app::views::features::FeaturesView;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let dir = fixtures.join("archs/qwen3");
    let sae_path = fixtures.join("saes/jumprelu-resid-post-0");
    let text = "the cat sat on the mat while the dog slept";
    let mut h = harness(app_on(&dir.display().to_string(), "features", text));
    wait_for(&mut h, "the shared run", |a| a.run.is_some());
    assert!(h
        .query_by_label_contains("Give a sparse autoencoder")
        .is_some());
    // Type the SAE's folder and press Load, as a user does.
    h.state_mut().view_mut::<FeaturesView>().unwrap().sae = sae_path.display().to_string();
    h.run_steps(1);
    h.get_by_label("Load").click();
    wait_for(&mut h, "the features", |a| {
        a.view::<FeaturesView>()
            .and_then(|v| v.computed())
            .is_some()
    });
    // The same features as the library computes directly.
    let model = checkpoint::load(&dir).unwrap();
    let backend = CpuBackend::new(&model).unwrap();
    let ids = model
        .tokenizer
        .as_ref()
        .unwrap()
        .encode(text, false)
        .unwrap();
    let s = Sae::load(&sae_path).unwrap();
    let clean = sae::clean_run(&model, &backend, &ids, std::slice::from_ref(&s)).unwrap();
    let want = sae::features(&model, &backend, &clean, std::slice::from_ref(&s), s.d_sae)
        .unwrap()
        .remove(0);
    let got = h
        .state()
        .view::<FeaturesView>()
        .unwrap()
        .computed()
        .unwrap()
        .clone();
    assert_eq!(got.l0, want.l0);
    for (g, w) in got.features.iter().zip(&want.features) {
        let g: Vec<usize> = g.iter().map(|f| f.0).collect();
        let w: Vec<usize> = w.iter().map(|f| f.0).collect();
        assert_eq!(g, w);
    }
    assert!(h.query_by_label_contains("explained variance").is_some());
    // Click the token with the most active features, then its strongest feature.
    let t = (0..ids.len()).max_by_key(|&i| want.l0[i]).unwrap();
    let (j, _) = want.features[t][0];
    let shown = prism_app::views::show_token(&h.state().run.as_ref().unwrap().trace.tokens[t].text);
    let node = h
        .get_all_by_label(&shown)
        .next()
        .expect("the token on screen");
    let at = node.rect().center();
    click_at(&mut h, at, egui::Modifiers::NONE);
    let label = format!("{j} ({:.2})", want.features[t][0].1);
    h.get_by_label(&label).click();
    wait_for(&mut h, "the card and the ablated run", |a| {
        a.view::<FeaturesView>()
            .is_some_and(|v| v.card().is_some() && v.detail().is_some())
    });
    let card = h
        .state()
        .view::<FeaturesView>()
        .unwrap()
        .card()
        .unwrap()
        .clone();
    assert_eq!(card.feature, j);
    let active = want
        .features
        .iter()
        .filter(|f| f.iter().any(|x| x.0 == j))
        .count();
    assert_eq!(card.active, active);
    assert!(h
        .query_by_label_contains(&format!("active on {active} of {} tokens", ids.len()))
        .is_some());
    // The default intervention is the ablation, on top of nothing: its line is the library's.
    let iv = s.intervention(j, Op::Zero, 0.0).unwrap();
    let abl = Trace::run_with(&model, &backend, &ids, Capture::default(), 5, &[iv]).unwrap();
    let line = format!(
        "total {:.2} bits instead of {:.2}: Δ {:+.2} bits",
        abl.total_bits(),
        clean.total_bits(),
        abl.total_bits() - clean.total_bits()
    );
    assert!(h.query_by_label(&line).is_some(), "{line:?} on screen");
    // The figure is the feature's activation per token.
    let fig = h.state_mut().current_figure().expect("a figure");
    assert_eq!(fig.title, format!("Feature {j} activation per token"));
    // A dashboard of this SAE over a small corpus: the card shows the feature's corpus numbers.
    use prism_analysis::sae::dashboard::{finish, Accumulator, Settings};
    let docs = [
        "the dog slept in the sun",
        "a bird sang over the hill",
        text,
    ];
    let mut acc = Accumulator::new("test".into(), Settings::default(), s.d_sae);
    for (i, doc) in docs.iter().enumerate() {
        let ids = model
            .tokenizer
            .as_ref()
            .unwrap()
            .encode(doc, false)
            .unwrap();
        let one = std::slice::from_ref(&s);
        let tr = sae::clean_run(&model, &backend, &ids, one).unwrap();
        acc.add(i, &ids, &sae::active_features(&backend, &tr, &s).unwrap());
    }
    let dash = finish(acc, &model, &s, ("corpus", "sha", docs.len())).unwrap();
    let dash_path =
        std::env::temp_dir().join(format!("prism-gui-dash-{}.json", std::process::id()));
    std::fs::write(&dash_path, serde_json::to_vec(&dash).unwrap()).unwrap();
    h.state_mut().view_mut::<FeaturesView>().unwrap().dashboard = dash_path.display().to_string();
    h.run_steps(1);
    h.get_by_label("Load dashboard").click();
    wait_for(&mut h, "the dashboard", |a| {
        a.view::<FeaturesView>()
            .and_then(|v| v.dashboard_read())
            .is_some()
    });
    let e = &dash.features[j];
    assert!(e.active_tokens > 0);
    let line = format!(
        "active on {} of {} tokens ({:.3}%), mean {:.3}, max {:.3}",
        e.active_tokens,
        dash.tokens,
        100.0 * e.density,
        e.mean_act,
        e.max_act
    );
    assert!(h.query_by_label(&line).is_some(), "{line:?} on screen");
    let _ = std::fs::remove_file(&dash_path);
    // Apply it everywhere: the interventions in force hold the feature's ablation.
    h.get_by_label("apply everywhere").click();
    h.run_steps(3);
    let active = h.state().interventions.active();
    assert!(
        active
            .iter()
            .any(|iv| iv.site == Site::Feature && iv.feature == Some(j) && iv.op == Op::Zero),
        "{active:?}"
    );
}

#[test]
fn features_view_ablates_a_transcoders_feature_inside_the_pass() {
    use prism_analysis::intervene::Op;
    use prism_analysis::sae::{self, Sae};
    use prism_app::views::features::FeaturesView;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let dir = fixtures.join("archs/qwen3");
    let tc = fixtures.join("saes/sparsify-transcoder/layers.1.mlp");
    let text = "the cat sat on the mat";
    let mut h = harness(app_on(&dir.display().to_string(), "features", text));
    wait_for(&mut h, "the shared run", |a| a.run.is_some());
    h.state_mut().view_mut::<FeaturesView>().unwrap().sae = tc.display().to_string();
    h.run_steps(1);
    h.get_by_label("Load").click();
    wait_for(&mut h, "the features", |a| {
        a.view::<FeaturesView>()
            .and_then(|v| v.computed())
            .is_some()
    });
    assert!(h
        .query_by_label_contains("transcoder (the MLP's input to its output)")
        .is_some());
    // Click the token with the most active features, then its strongest feature.
    let model = checkpoint::load(&dir).unwrap();
    let backend = CpuBackend::new(&model).unwrap();
    let ids = model
        .tokenizer
        .as_ref()
        .unwrap()
        .encode(text, false)
        .unwrap();
    let s = Sae::load(&tc).unwrap();
    let clean = sae::clean_run(&model, &backend, &ids, std::slice::from_ref(&s)).unwrap();
    let want = sae::features(&model, &backend, &clean, std::slice::from_ref(&s), s.d_sae)
        .unwrap()
        .remove(0);
    // (Of the tokens whose text is on screen once.)
    let texts: Vec<String> = h
        .state()
        .run
        .as_ref()
        .unwrap()
        .trace
        .tokens
        .iter()
        .map(|k| prism_app::views::show_token(&k.text))
        .collect();
    let t = (0..ids.len())
        .filter(|&i| texts.iter().filter(|x| **x == texts[i]).count() == 1)
        .max_by_key(|&i| want.l0[i])
        .unwrap();
    let (j, act) = want.features[t][0];
    let shown = texts[t].clone();
    let node = h
        .get_all_by_label(&shown)
        .next()
        .expect("the token on screen");
    let at = node.rect().center();
    click_at(&mut h, at, egui::Modifiers::NONE);
    h.get_by_label(&format!("{j} ({act:.2})")).click();
    wait_for(&mut h, "the card and the ablated run", |a| {
        a.view::<FeaturesView>()
            .is_some_and(|v| v.card().is_some() && v.detail().is_some())
    });
    h.run_steps(2);
    // The view's ablation is the library's transcoder edit (read from the MLP's input, written
    // into its output), and it changes the run.
    let iv = s.intervention(j, Op::Zero, 0.0).unwrap();
    let abl = Trace::run_with(&model, &backend, &ids, Capture::default(), 5, &[iv]).unwrap();
    assert_ne!(
        abl.total_bits(),
        clean.total_bits(),
        "the ablation changed nothing"
    );
    let line = format!(
        "total {:.2} bits instead of {:.2}: Δ {:+.2} bits",
        abl.total_bits(),
        clean.total_bits(),
        abl.total_bits() - clean.total_bits()
    );
    assert!(h.query_by_label(&line).is_some(), "{line:?} on screen");
}

#[test]
fn corpus_view_lists_a_batch_folder_and_a_clicked_document_shows_its_tokens() {
    use prism_analysis::batch::{self, BatchSettings};
    use prism_analysis::corpus::Corpus;
    use prism_app::views::corpus::CorpusView;
    let dir = std::env::temp_dir().join(format!("prism-gui-corpus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let docs = [
        "the cat sat on the mat",
        "zq vx wp jj kk",
        "the dog slept while the cat sat",
        "a b c d e f g",
        "on the mat the cat sat and sat",
    ];
    std::fs::write(dir.join("corpus.txt"), docs.join("\n")).unwrap();
    let (model, backend) = engine();
    let corpus = Corpus::read(&dir.join("corpus.txt")).unwrap();
    let settings = BatchSettings {
        context: 64,
        top_k: 3,
        shard_docs: 2,
        bos: false,
        backend: "cpu".into(),
        ..BatchSettings::default()
    };
    let out = dir.join("out");
    batch::run(
        &model,
        &backend,
        &corpus,
        &out,
        &settings,
        None,
        &mut |_| {},
        &AtomicBool::new(false),
    )
    .unwrap();
    let summary = batch::summary(&out).unwrap();
    let mut h = harness(app_with(
        &tiny_gguf().display().to_string(),
        "corpus",
        "hello",
        vec![(
            "corpus".into(),
            "folder".into(),
            serde_json::json!(out.display().to_string()),
        )],
    ));
    wait_for(&mut h, "the folder", |a| {
        a.view::<CorpusView>().is_some_and(|v| v.is_open())
    });
    // The export without a selection: every document, model against zstd.
    let fig = h.state_mut().current_figure().expect("a corpus figure");
    let prism_analysis::figure::FigureKind::Scatter { points } = &fig.kind else {
        panic!("not a scatter");
    };
    assert_eq!(points.len(), 5);
    for (p, d) in points.iter().zip(&summary.docs) {
        assert_eq!((p.x, p.y), (d.zstd_bits_per_byte, d.bits_per_byte));
    }
    // The list is sorted by bits per byte, most surprising first; click the least surprising.
    let order: Vec<usize> = h.state().view::<CorpusView>().unwrap().order();
    let mut want: Vec<&batch::DocRow> = summary.docs.iter().collect();
    want.sort_by(|a, b| b.bits_per_byte.total_cmp(&a.bits_per_byte));
    assert_eq!(order, want.iter().map(|d| d.doc).collect::<Vec<_>>());
    let last = *order.last().unwrap();
    h.get_by_label(docs[last]).click();
    wait_for(&mut h, "the document", |a| {
        a.view::<CorpusView>()
            .is_some_and(|v| v.shown_document() == Some(last))
    });
    let fig = h.state_mut().current_figure().expect("a document figure");
    let prism_analysis::figure::FigureKind::Tokens { tokens, .. } = &fig.kind else {
        panic!("not a token strip");
    };
    // Its tokens are the document's, on the surprisal a fresh run gives them.
    let ids = model
        .tokenizer
        .as_ref()
        .unwrap()
        .encode(docs[last], false)
        .unwrap();
    let trace = Trace::run(&model, &backend, &ids, Capture::default(), 3).unwrap();
    assert_eq!(tokens.len(), ids.len());
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(t.text, model.token_text(ids[i]));
        assert_eq!(t.value, trace.surprisal_bits[i], "token {i}");
    }
    // A shard changed behind the app's back: opening the folder again names it.
    let shard = out.join("tokens-00001.parquet");
    let mut bytes = std::fs::read(&shard).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&shard, bytes).unwrap();
    h.get_by_label("Open").click();
    wait_for(&mut h, "the error", |a| {
        a.view::<CorpusView>().is_some_and(|v| v.error().is_some())
    });
    let e = h
        .state()
        .view::<CorpusView>()
        .unwrap()
        .error()
        .unwrap()
        .to_string();
    assert!(
        e.contains("tokens-00001.parquet") && e.contains("checksum"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
