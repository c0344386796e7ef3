//! Embedding geometry against the reference study (tests/fixtures/reference/colors_reference.json):
//! CIELAB, cosines, the two claims, RSA rho within 0.005 and Mantel p within 0.02, on SmolLM2 and
//! MiniLM; plus neighbours, analogies, axes, projections and picking.

use std::sync::atomic::AtomicBool;

use prism_analysis::backend::cpu::CpuBackend;
use prism_analysis::geometry::color::{builtin_lexicon, delta_e, run_study};
use prism_analysis::geometry::project::{project, Method, PointIndex};
use prism_analysis::geometry::similarity::{cosine, NeighborIndex};
use prism_analysis::geometry::vectors::{Extractor, Source, DEFAULT_TEMPLATE};
use prism_tests::*;
use serde_json::Value;

fn reference() -> Value {
    read_json(&reference_dir().join("colors_reference.json"))
}

#[test]
fn lexicon_lab_matches_the_reference() {
    let r = reference();
    let lex = builtin_lexicon();
    let words: Vec<String> = r["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        lex.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        words
    );
    for (i, c) in lex.iter().enumerate() {
        let want = f64s(&r["lab"][i]);
        for k in 0..3 {
            assert!(
                (c.lab[k] - want[k]).abs() < 1e-3,
                "{}: Lab {:?} vs {want:?}",
                c.name,
                c.lab
            );
        }
        for (j, d) in lex.iter().enumerate() {
            let want = r["lab_distance_matrix"][i][j].as_f64().unwrap();
            assert!((delta_e(c.lab, d.lab) - want).abs() < 2e-3);
        }
    }
}

fn check_study(sample_name: &str, model_key: &str, names: &dyn Fn(&str) -> Option<String>) {
    let model = load(&sample(sample_name));
    let backend = CpuBackend::new(&model).unwrap();
    let mut ex = Extractor::new(&model, &backend);
    let cancel = AtomicBool::new(false);
    let study = run_study(
        &mut ex,
        &builtin_lexicon(),
        DEFAULT_TEMPLATE,
        10_000,
        12345,
        &mut |_, _| {},
        Some(&cancel),
    )
    .unwrap();
    let r = reference();
    let reps = &r["models"][model_key]["representations"];
    let mut compared = 0;
    for rep in &study.representations {
        let Some(key) = names(&rep.name) else {
            continue;
        };
        let want = &reps[&key];
        assert!(want.is_object(), "reference has {key}");
        let ctx = format!("{model_key} {} ({key})", rep.name);
        let c = rep.cosines.as_ref().unwrap();
        for (got, field) in [
            (c.purple_blue, "sim_purple_blue"),
            (c.purple_red, "sim_purple_red"),
            (c.orange_red, "sim_orange_red"),
        ] {
            let w = want[field].as_f64().unwrap();
            assert!((got - w).abs() <= 0.005, "{ctx}: {field} {got} vs {w}");
        }
        assert_eq!(
            rep.claim1,
            want["claim1_purple_blue_gt_purple_red"].as_bool(),
            "{ctx}: claim 1"
        );
        assert_eq!(
            rep.claim2,
            want["claim2_orange_red_gt_purple_red"].as_bool(),
            "{ctx}: claim 2"
        );
        let rho = want["rsa_all31"]["spearman_rho"].as_f64().unwrap();
        let p = want["rsa_all31"]["mantel_p_one_sided"].as_f64().unwrap();
        assert!(
            (rep.rho - rho).abs() <= 0.005,
            "{ctx}: rho {} vs {rho}",
            rep.rho
        );
        assert!((rep.p - p).abs() <= 0.02, "{ctx}: p {} vs {p}", rep.p);
        let b = rep.rsa_basic11.as_ref().unwrap();
        assert!(
            (b.spearman_rho - want["rsa_basic11"]["spearman_rho"].as_f64().unwrap()).abs() <= 0.005,
            "{ctx}: basic11 rho"
        );
        let cent = want["centered"]["rsa_all31"]["spearman_rho"]
            .as_f64()
            .unwrap();
        assert!(
            (rep.centered_rsa.spearman_rho - cent).abs() <= 0.005,
            "{ctx}: centered rho {} vs {cent}",
            rep.centered_rsa.spearman_rho
        );
        compared += 1;
    }
    assert!(
        compared >= 8,
        "{model_key}: compared {compared} representations"
    );
}

#[test]
fn smollm2_color_study_matches_the_reference() {
    check_study("smollm2", "smollm2", &|name| match name {
        "embed" => Some("input_embedding_with_space".into()),
        "embed_nospace" => Some("input_embedding_no_space".into()),
        "final_norm" => Some("context_final_norm".into()),
        other => other
            .strip_prefix("layer:")
            .map(|l| format!("context_layer_{:02}", l.parse::<usize>().unwrap())),
    });
}

#[test]
fn minilm_color_study_matches_the_reference() {
    check_study("minilm", "minilm", &|name| match name {
        "embed" => Some("input_embedding_wordpiece".into()),
        other => other
            .strip_prefix("layer:")
            .map(|l| format!("context_layer_{l}")),
    });
}

#[test]
fn split_words_are_reported() {
    let model = load(&sample("smollm2"));
    let backend = CpuBackend::new(&model).unwrap();
    let mut ex = Extractor::new(&model, &backend);
    let words: Vec<String> = ["teal", "red", "crimson"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let v = ex.vectors(&words, Source::Embed, DEFAULT_TEMPLATE).unwrap();
    assert_eq!(
        v[0].ids,
        vec![543, 272],
        "teal with a leading space is Ġte + al"
    );
    assert!(!v[1].is_split());
    let v = ex
        .vectors(&words, Source::Layer(3), DEFAULT_TEMPLATE)
        .unwrap();
    assert_eq!(
        v[0].ids,
        vec![543, 272],
        "in the template, teal is the same two tokens"
    );
    assert_eq!(v[0].vector.len(), 576);
}

#[test]
fn neighbours_analogies_and_projections_on_smollm2() {
    let model = load(&sample("smollm2"));
    let backend = CpuBackend::new(&model).unwrap();
    let mut ex = Extractor::new(&model, &backend);
    let index = NeighborIndex::new(ex.embedding_table().unwrap());
    let red = ex
        .vectors(&["red".to_string()], Source::Embed, DEFAULT_TEMPLATE)
        .unwrap();
    let n = index.nearest(&red[0].vector, 10, &[]);
    assert_eq!(
        n[0].id, red[0].ids[0],
        "a word's own token is its nearest neighbour"
    );
    assert!((n[0].cosine - 1.0).abs() < 1e-5);
    assert!(n.windows(2).all(|w| w[0].cosine >= w[1].cosine));
    // Exactness: the 10th neighbour's cosine equals a brute-force recomputation.
    let table = ex.embedding_table().unwrap();
    let brute = cosine(&red[0].vector, table.row(n[9].id as usize));
    assert!((brute - n[9].cosine).abs() < 1e-5);
    // Projections of the color words: PCA explains variance in decreasing order; t-SNE is seeded.
    let words: Vec<String> = builtin_lexicon().iter().map(|c| c.name.clone()).collect();
    let vs: Vec<Vec<f32>> = ex
        .vectors(&words, Source::Embed, DEFAULT_TEMPLATE)
        .unwrap()
        .into_iter()
        .map(|w| w.vector)
        .collect();
    let cancel = AtomicBool::new(false);
    let pca = project(&vs, Method::Pca, 2, &mut |_| {}, &cancel).unwrap();
    assert_eq!(pca.points.len(), 31);
    let ratio = pca.explained_variance_ratio.unwrap();
    assert!(ratio[0] >= ratio[1] && ratio[0] > 0.0);
    let a = project(&vs, Method::Tsne, 2, &mut |_| {}, &cancel).unwrap();
    let b = project(&vs, Method::Tsne, 2, &mut |_| {}, &cancel).unwrap();
    assert_eq!(
        a.points, b.points,
        "t-SNE with a fixed seed is reproducible"
    );
    let pts: Vec<[f64; 2]> = pca.points.iter().map(|p| [p[0], p[1]]).collect();
    let pick = PointIndex::new(&pts).unwrap();
    assert_eq!(pick.pick(pts[7], 1e-9).map(|p| p.0), Some(7));
    let near = pick.nearest(pts[3], 3);
    assert_eq!(near[0].0, 3);
    assert_eq!(near.len(), 3);
    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        project(&vs, Method::Pca, 2, &mut |_| {}, &cancel).is_err(),
        "a cancelled projection stops"
    );
}

#[test]
fn a_cancelled_tsne_returns_at_once() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    // 1,500 random 64-d points: a full run takes seconds on 2 cores.
    let mut rng = prism_tests::synth::Rng::new(7);
    let points: Vec<Vec<f32>> = (0..1500).map(|_| rng.vec(64, 1.0, 0.0)).collect();
    let cancel = Arc::new(AtomicBool::new(false));
    let c = cancel.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        c.store(true, Ordering::SeqCst);
        Instant::now()
    });
    let result = project(&points, Method::Tsne, 2, &mut |_| {}, &cancel);
    let returned = Instant::now();
    let cancelled_at = stopper.join().unwrap();
    assert!(
        matches!(result, Err(prism_analysis::PrismError::Cancelled)),
        "t-SNE was not cancelled"
    );
    assert!(
        returned.duration_since(cancelled_at) < Duration::from_millis(500),
        "t-SNE took {:?} to notice the cancel",
        returned.duration_since(cancelled_at)
    );
}
