//! Sparse autoencoders in SAELens's format against SAELens itself (tests/fixtures/saes, made by
//! scripts/make_saes.py): ReLU on resid_pre, JumpReLU on resid_post, TopK on mlp_out of the tiny
//! Qwen3 fixture. Through `prism features --json` on the CPU and the GPU: the same features per
//! token (the top 8 by activation) within 1e-4 relative, the same L0, SAELens's MSE and explained
//! variance within 1e-4 relative, and the clean and spliced-in totals within 0.01 bits per token.
//! Files that do not fit are refused naming the file and the field.

use std::path::{Path, PathBuf};

use prism_tests::synth::{write_safetensors, T};
use prism_tests::*;
use safetensors::Dtype;
use serde_json::Value;

fn sae_dir(name: &str) -> PathBuf {
    fixtures().join("saes").join(name)
}

fn model() -> PathBuf {
    fixtures().join("archs/qwen3")
}

#[test]
fn saelens_features_and_reconstruction_match_sae_lens_on_both_backends() {
    let reference = read_json(&fixtures().join("saes/reference.json"));
    let m = model();
    for (name, sae) in reference["saes"].as_object().unwrap() {
        for backend in ["cpu", "gpu"] {
            for (seq, want) in sae["sequences"].as_object().unwrap() {
                let ids: Vec<String> = u32s(&want["input_ids"])
                    .iter()
                    .map(|i| i.to_string())
                    .collect();
                let ctx = format!("{name} {seq} on {backend}");
                let got = json_of(&[
                    "features",
                    m.to_str().unwrap(),
                    "--sae",
                    sae_dir(name).to_str().unwrap(),
                    "--ids",
                    &ids.join(","),
                    "--top",
                    "8",
                    "--json",
                    "--backend",
                    backend,
                ]);
                assert_eq!(got["sae"]["hook"], sae["hook"], "{ctx}");
                assert_feature_run(&ctx, &got, want);
            }
        }
    }
}

/// Copies an SAE folder, letting `edit` change its cfg.json and tensors.
fn edited(dir: &Path, name: &str, edit: impl FnOnce(&mut Value, &mut Vec<T>)) -> PathBuf {
    let src = sae_dir("jumprelu-resid-post-0");
    let dst = dir.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("cfg.json")).unwrap()).unwrap();
    let st = prism_analysis::checkpoint::safetensors::SafetensorsCheckpoint::open(vec![
        src.join("sae_weights.safetensors")
    ])
    .unwrap();
    use prism_analysis::weights::TensorSource;
    let mut tensors: Vec<T> = st
        .names()
        .iter()
        .map(|n| {
            let w = st.load(n).unwrap();
            T {
                name: n.clone(),
                shape: st.info(n).unwrap().shape,
                data: w.to_f32(),
            }
        })
        .collect();
    edit(&mut cfg, &mut tensors);
    std::fs::write(dst.join("cfg.json"), cfg.to_string()).unwrap();
    write_safetensors(&dst.join("sae_weights.safetensors"), &tensors, Dtype::F32);
    dst
}

#[test]
fn saes_that_do_not_fit_are_refused_naming_the_file_and_the_field() {
    let dir = TempDir::new("bad-saes");
    let d = dir.path();
    let run = |model: &Path, sae: &Path| -> String {
        let out = prism(&[
            "features",
            model.to_str().unwrap(),
            "--sae",
            sae.to_str().unwrap(),
            "--ids",
            "1,2,3",
            "--backend",
            "cpu",
        ]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{sae:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let tiny_llama = fixtures().join("reference/tiny/llama-gguf/tiny-llama-f32.gguf");
    for (sae, model, needle) in [
        (
            sae_dir("relu-resid-pre-1"),
            tiny_llama.clone(),
            "d_in 256 differs from the width 64",
        ),
        (
            edited(d, "hook", |c, _| {
                c["metadata"]["hook_name"] = "blocks.1.hook_resid_mid".into()
            }),
            model(),
            "hook \"blocks.1.hook_resid_mid\" is not one Prism reads",
        ),
        (
            edited(d, "layer", |c, _| {
                c["metadata"]["hook_name"] = "blocks.7.hook_resid_post".into()
            }),
            model(),
            "layer 7 of a 2-layer model",
        ),
        (
            edited(d, "nan", |_, t| {
                t.iter_mut().find(|t| t.name == "W_dec").unwrap().data[5] = f32::NAN
            }),
            model(),
            "W_dec: value 5 is not a finite number",
        ),
        (
            edited(d, "threshold", |_, t| {
                let th = t.iter_mut().find(|t| t.name == "threshold").unwrap();
                th.shape = vec![256];
                th.data.truncate(256);
            }),
            model(),
            "threshold",
        ),
        (
            edited(d, "norm", |c, _| {
                c["normalize_activations"] = "layer_norm".into()
            }),
            model(),
            "normalize_activations \"layer_norm\" is not supported",
        ),
        (
            edited(d, "dsae", |c, _| c["d_sae"] = 0.into()),
            model(),
            "\"d_sae\" is missing or not a positive count",
        ),
    ] {
        let err = run(&model, &sae);
        assert!(err.contains(needle), "{sae:?}: {needle:?} not in {err}");
        assert!(
            err.contains(sae.file_name().unwrap().to_str().unwrap()),
            "{err}: names the file"
        );
    }
    // A truncated weights file.
    let cut = edited(d, "cut", |_, _| {});
    let f = cut.join("sae_weights.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let err = run(&model(), &cut);
    assert!(err.contains("sae_weights.safetensors"), "{err}");
    // Gemma Scope 2 folders that name no hook, and cross-layer transcoders, are refused by name.
    let gs2 = fixtures().join("saes/gemma-scope-2/resid_post/layer_1_width_512_l0_small");
    for (folder, needle) in [
        ("other/layer_1_width_512_l0_small", "Gemma Scope 2 hook"),
        ("transcoder/clt_layer_1_width_512", "cross-layer transcoder"),
    ] {
        let f = d.join(folder);
        std::fs::create_dir_all(&f).unwrap();
        std::fs::copy(gs2.join("params.safetensors"), f.join("params.safetensors")).unwrap();
        let err = run(&model(), &f);
        assert!(err.contains(needle), "{folder}: {needle:?} not in {err}");
        assert!(err.contains(folder), "{err}: names the folder");
    }
    // Gemma Scope 1: a truncated params.npz, and a path that names no release.
    let gs1 = fixtures().join("saes/gemma-scope-2b-pt-res/layer_0/width_512/average_l0_20");
    let npz = std::fs::read(gs1.join("params.npz")).unwrap();
    for (release, bytes, needle) in [
        ("gemma-scope-2b-pt-res", &npz[..npz.len() / 3], "npz"),
        ("gemma-scope-2b-pt-res", &npz[..npz.len() - 10], "npz"),
        ("gemma-scope-2b-pt-other", &npz[..], "names no release"),
    ] {
        let f = d
            .join(format!("{release}-{}", bytes.len()))
            .join("layer_0/width_512/average_l0_20");
        std::fs::create_dir_all(&f).unwrap();
        std::fs::write(f.join("params.npz"), bytes).unwrap();
        let err = run(&model(), &f);
        assert!(err.contains(needle), "{release}: {needle:?} not in {err}");
    }
    // A pickled SAE, as a file or in a folder, is refused unopened with the conversion.
    let pt = d.join("sae.pt");
    std::fs::write(&pt, b"\x80\x02}q\x00.").unwrap();
    let folder = d.join("pickled");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("cfg.json"), "{}").unwrap();
    std::fs::write(folder.join("sae_weights.pth"), b"\x80\x02}q\x00.").unwrap();
    for p in [pt, folder] {
        let err = run(&model(), &p);
        assert!(err.contains("a pickled SAE"), "{err}");
        assert!(err.contains("sae.save_model"), "{err}: the conversion");
    }
}

/// Clamping a feature (to 0, and to twice its largest activation) with the SAE's error term kept
/// gives transformers' surprisal with SAELens's encoder in a hook doing the same; a feature's
/// decoder direction exports as a llama.cpp control vector on the layer that reaches its site.
#[test]
fn clamped_features_match_sae_lens_and_directions_export_as_control_vectors() {
    let reference = read_json(&fixtures().join("saes/reference.json"));
    let m = model();
    for (name, sae) in reference["saes"].as_object().unwrap() {
        for backend in ["cpu", "gpu"] {
            for (seq, want) in sae["sequences"].as_object().unwrap() {
                let ids: Vec<String> = u32s(&want["input_ids"])
                    .iter()
                    .map(|i| i.to_string())
                    .collect();
                let tokens = ids.len() as f64;
                for c in want["clamps"].as_array().unwrap() {
                    let clamp = format!("{}={}", c["feature"], c["value"].as_f64().unwrap());
                    let got = json_of(&[
                        "features",
                        m.to_str().unwrap(),
                        "--sae",
                        sae_dir(name).to_str().unwrap(),
                        "--ids",
                        &ids.join(","),
                        "--clamp",
                        &clamp,
                        "--json",
                        "--backend",
                        backend,
                    ]);
                    let (x, y) = (
                        got["clamped"]["bits"].as_f64().unwrap(),
                        c["bits"].as_f64().unwrap(),
                    );
                    assert!(
                        (x - y).abs() <= 0.01 * (tokens - 1.0),
                        "{name} {seq} on {backend}: clamp {clamp}: {x} bits vs {y}"
                    );
                }
            }
        }
    }
    // Export: the TopK SAE on mlp_out@1 reaches direction.1; resid_post@0 reaches none.
    let dir = TempDir::new("sae-cv");
    let out = dir.path().join("f.gguf");
    let args = |sae: &str, out: &Path| -> Vec<String> {
        [
            "features",
            m.to_str().unwrap(),
            "--sae",
            sae_dir(sae).to_str().unwrap(),
            "--ids",
            "1,2,3",
            "--export-direction",
            "7",
            "-o",
            out.to_str().unwrap(),
            "--backend",
            "cpu",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a = args("topk-mlp-out-1", &out);
    let res = prism(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let cv = prism_analysis::steering::ControlVector::load(&out, 256).unwrap();
    assert_eq!(cv.directions.keys().copied().collect::<Vec<_>>(), vec![1]);
    let sae = prism_analysis::sae::Sae::load(&sae_dir("topk-mlp-out-1")).unwrap();
    assert_eq!(&cv.directions[&1][..], sae.direction(7).unwrap());
    let a = args("jumprelu-resid-post-0", &dir.path().join("g.gguf"));
    let res = prism(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(res.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&res.stderr).contains("no llama.cpp control-vector layer"));
}

/// The ids of a reference sequence, comma-separated.
fn ids_arg(want: &Value) -> String {
    u32s(&want["input_ids"])
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A one-entry interventions file for a reference intervention (`steer`, `clamp`, `ablate`).
fn feature_file(dir: &Path, name: &str, sae: &str, c: &Value) -> PathBuf {
    let mut iv = serde_json::json!({
        "site": "feature",
        "sae": sae,
        "feature": c["feature"],
        "positions": c["positions"],
    });
    match c["what"].as_str().unwrap() {
        "steer" => {
            iv["op"] = "add".into();
            iv["scale"] = c["amount"].clone();
        }
        "clamp" => {
            iv["op"] = "set".into();
            iv["value"] = c["amount"].clone();
        }
        _ => iv["op"] = "zero".into(),
    }
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string(&[iv]).unwrap()).unwrap();
    path
}

#[test]
fn feature_interventions_in_an_interventions_file_match_sae_lens_on_both_backends() {
    let reference = read_json(&fixtures().join("saes/reference.json"));
    let m = model();
    let dir = TempDir::new("sae-iv");
    // The three activation rules on the GPU (ReLU, JumpReLU, TopK) and hook_z; every SAE on the CPU.
    let on_gpu = [
        "relu-resid-pre-1",
        "jumprelu-resid-post-0",
        "topk-mlp-out-1",
        "relu-hook-z-1",
    ];
    for (name, sae) in reference["saes"].as_object().unwrap() {
        let backends: &[&str] = if on_gpu.contains(&name.as_str()) {
            &["cpu", "gpu"]
        } else {
            &["cpu"]
        };
        let sae_path = sae_dir(name).to_str().unwrap().to_string();
        for (seq, want) in sae["sequences"].as_object().unwrap() {
            let ids = ids_arg(want);
            let clean = json_of(&[
                "run",
                m.to_str().unwrap(),
                "--ids",
                &ids,
                "--json",
                "--backend",
                "cpu",
            ]);
            let clean_bits = predicted_bits(&clean);
            for c in want["interventions"].as_array().unwrap() {
                let what = c["what"].as_str().unwrap();
                let file = feature_file(dir.path(), "iv.json", &sae_path, c);
                let expect = f64s(&c["surprisal_bits"]);
                if what != "ablate" {
                    // The reference itself moves: a test that ignored the feature would fail.
                    let moved = expect
                        .iter()
                        .zip(&clean_bits)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max);
                    assert!(
                        moved > 0.02,
                        "{name} {seq} {what}: the reference barely moves ({moved})"
                    );
                }
                for backend in backends {
                    let ctx = format!("{name} {seq} {what} on {backend}");
                    let got = json_of(&[
                        "run",
                        m.to_str().unwrap(),
                        "--ids",
                        &ids,
                        "--interventions",
                        file.to_str().unwrap(),
                        "--json",
                        "--backend",
                        backend,
                    ]);
                    let bits = predicted_bits(&got);
                    assert_eq!(bits.len(), expect.len(), "{ctx}: predicted tokens");
                    for (t, (a, b)) in bits.iter().zip(&expect).enumerate() {
                        assert!(
                            (a - b).abs() <= 0.01,
                            "{ctx}: token {}: {a} bits vs SAELens's {b}",
                            t + 1
                        );
                    }
                    assert_eq!(got["interventions"][0]["site"], "feature", "{ctx}");
                }
            }
        }
    }
}

#[test]
fn generation_steered_by_a_feature_matches_transformers_on_both_backends() {
    let reference = read_json(&fixtures().join("saes/reference.json"));
    let m = model();
    let dir = TempDir::new("sae-gen");
    for name in [
        "relu-resid-pre-1",
        "jumprelu-resid-post-0",
        "topk-mlp-out-1",
    ] {
        let want = &reference["saes"][name]["sequences"]["seq7"];
        // The SAE beside the interventions file, named relative to it.
        let local = dir.path().join(name);
        std::fs::create_dir_all(&local).unwrap();
        for f in ["cfg.json", "sae_weights.safetensors"] {
            std::fs::copy(sae_dir(name).join(f), local.join(f)).unwrap();
        }
        let file = feature_file(dir.path(), "steer.json", name, &want["generation"]);
        let expect = u32s(&want["generation"]["new_ids"]);
        for backend in ["cpu", "gpu"] {
            let got = json_of(&[
                "generate",
                m.to_str().unwrap(),
                "--ids",
                &ids_arg(want),
                "--max-tokens",
                "8",
                "--interventions",
                file.to_str().unwrap(),
                "--json",
                "--backend",
                backend,
            ]);
            let ids: Vec<u32> = got["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_u64().unwrap() as u32)
                .collect();
            assert_eq!(
                ids, expect,
                "{name} on {backend}: steered greedy continuation"
            );
        }
    }
}

#[test]
fn impossible_feature_interventions_are_refused_by_name() {
    let m = model();
    let m = m.to_str().unwrap();
    let dir = TempDir::new("sae-iv-bad");
    let sae = sae_dir("jumprelu-resid-post-0");
    let sae = sae.to_str().unwrap();
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            serde_json::json!({"site": "feature", "feature": 3, "op": "zero"}),
            "needs \"sae\"",
        ),
        (
            serde_json::json!({"site": "feature", "sae": sae, "op": "zero"}),
            "needs \"feature\"",
        ),
        (
            serde_json::json!({"site": "feature", "sae": sae, "feature": 512, "op": "zero"}),
            "feature 512 is out of range",
        ),
        (
            serde_json::json!({"site": "feature", "sae": sae, "feature": 3, "op": "set"}),
            "needs a \"value\"",
        ),
        (
            serde_json::json!({"site": "feature", "sae": sae, "feature": 3, "op": "mean"}),
            "does not apply to a feature",
        ),
        (
            serde_json::json!({"site": "feature", "sae": sae, "feature": 3, "op": "zero", "layer": 1}),
            "differs from the layer 0",
        ),
        (
            serde_json::json!({"site": "feature", "sae": sae, "feature": 3, "op": "add", "vector": [1.0]}),
            "\"vector\" does not apply",
        ),
        (
            serde_json::json!({"site": "feature", "sae": sae, "feature": 3, "op": "zero", "positions": [40]}),
            "position 40 is out of range",
        ),
        (
            serde_json::json!({"site": "feature", "sae": "no-such-sae", "feature": 3, "op": "zero"}),
            "no-such-sae",
        ),
        (
            serde_json::json!({"site": "resid_post", "op": "zero"}),
            "needs a \"layer\"",
        ),
        (
            serde_json::json!({"site": "resid_post", "layer": 0, "feature": 3, "op": "zero"}),
            "only applies to site \"feature\"",
        ),
    ];
    for (i, (iv, want)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.json"));
        std::fs::write(&file, serde_json::to_string(&[iv]).unwrap()).unwrap();
        let out = prism(&[
            "run",
            m,
            "--ids",
            "1,2,3,4",
            "--interventions",
            file.to_str().unwrap(),
            "--backend",
            "cpu",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{iv}: {err}");
        assert!(err.contains(want), "{iv}: expected {want:?} in: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{iv}: one line: {err}");
    }
}

/// Ranked (id, value) lists: the same values in order, and the same ids except among near ties.
#[track_caller]
fn same_ranking(got: &[(u64, f64)], want: &Value, key: &str, ctx: &str) {
    let want: Vec<(u64, f64)> = want
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
        .collect();
    assert_eq!(got.len(), want.len(), "{ctx}: {key}: length");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g.1 - w.1).abs() <= 1e-4 * w.1.abs().max(1.0),
            "{ctx}: {key}[{i}]: {g:?} vs {w:?}"
        );
        let tied = want.iter().any(|o| o.0 != w.0 && (o.1 - w.1).abs() <= 1e-5);
        assert!(
            g.0 == w.0 || tied,
            "{ctx}: {key}[{i}]: id {} vs {}",
            g.0,
            w.0
        );
    }
}

#[test]
fn feature_cards_match_sae_lens_and_export_as_figures() {
    let reference = read_json(&fixtures().join("saes/reference.json"));
    let m = model();
    let dir = TempDir::new("sae-card");
    for (name, sae) in reference["saes"].as_object().unwrap() {
        let want = &sae["sequences"]["seq7"];
        let c = &want["card"];
        let j = c["feature"].as_u64().unwrap().to_string();
        let fig = dir.path().join("card.svg");
        let got = json_of(&[
            "features",
            m.to_str().unwrap(),
            "--sae",
            sae_dir(name).to_str().unwrap(),
            "--ids",
            &ids_arg(want),
            "--card",
            &j,
            "--figure",
            fig.to_str().unwrap(),
            "--json",
            "--backend",
            "cpu",
        ]);
        let ctx = format!("{name} feature {j}");
        let card = &got["card"];
        let acts = f64s(&card["acts"]);
        let expect = f64s(&c["acts"]);
        assert_eq!(acts.len(), expect.len(), "{ctx}: tokens");
        for (t, (a, b)) in acts.iter().zip(&expect).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1e-2),
                "{ctx}: token {t}: {a} vs {b}"
            );
        }
        assert!(
            expect.iter().any(|&a| a > 0.0),
            "{ctx}: the feature is active somewhere"
        );
        let pairs = |k: &str, v: &str| -> Vec<(u64, f64)> {
            card[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p["id"].as_u64().unwrap(), p[v].as_f64().unwrap()))
                .collect()
        };
        same_ranking(
            &pairs("logits_up", "effect"),
            &c["logits_up"],
            "logits_up",
            &ctx,
        );
        same_ranking(
            &pairs("logits_down", "effect"),
            &c["logits_down"],
            "logits_down",
            &ctx,
        );
        same_ranking(
            &pairs("neighbours", "cosine"),
            &c["neighbours"],
            "neighbours",
            &ctx,
        );
        // The figure's data: one row per token with the feature's activation.
        let csv = std::fs::read_to_string(dir.path().join("card.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + acts.len(), "{ctx}: figure rows");
        assert!(std::fs::read_to_string(&fig)
            .unwrap()
            .contains(&format!("Feature {j}")));
    }
}

/// A corpus of `n` short documents from a small word list (seeded), one per line.
fn write_corpus(path: &Path, n: usize, seed: u64) {
    let words: Vec<&str> =
        "the cat sat on a mat while dog slept in warm sun and bird sang over green hill by river"
            .split(' ')
            .collect();
    let mut rng = prism_tests::synth::Rng::new(seed);
    let mut text = String::new();
    for _ in 0..n {
        let len = 3 + (rng.next_u64() % 25) as usize;
        let doc: Vec<&str> = (0..len)
            .map(|_| words[(rng.next_u64() % words.len() as u64) as usize])
            .collect();
        text.push_str(&doc.join(" "));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_dashboard_holds_each_features_top_contexts_density_and_card() {
    use prism_analysis::backend::cpu::CpuBackend;
    use prism_analysis::sae::{self, Sae};
    let dir = TempDir::new("sae-dash");
    let corpus = dir.path().join("corpus.txt");
    write_corpus(&corpus, 40, 7);
    let out = dir.path().join("dash.json");
    let m = model();
    let sae_path = sae_dir("jumprelu-resid-post-0");
    let res = prism(&[
        "features",
        m.to_str().unwrap(),
        "--sae",
        sae_path.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--dashboard",
        out.to_str().unwrap(),
        "--contexts",
        "3",
        "--backend",
        "cpu",
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(
        !dir.path().join("dash.json.partial").exists(),
        "the state is removed at the end"
    );
    let d = prism_analysis::sae::dashboard::Dashboard::load(&out).unwrap();
    // The same features, document by document, through `sae::features` (checked against SAELens).
    let model = prism_analysis::checkpoint::load(&m).unwrap();
    let backend = CpuBackend::new(&model).unwrap();
    let s = Sae::load(&sae_path).unwrap();
    let tok = model.tokenizer.as_ref().unwrap();
    let docs: Vec<String> = std::fs::read_to_string(&corpus)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(d.documents, docs.len());
    let mut count = vec![0u64; s.d_sae];
    let mut best: Vec<Option<(f32, usize, usize)>> = vec![None; s.d_sae];
    let mut tokens = 0u64;
    for (i, doc) in docs.iter().enumerate() {
        let ids = tok.encode(doc, false).unwrap();
        tokens += ids.len() as u64;
        let one = std::slice::from_ref(&s);
        let clean = sae::clean_run(&model, &backend, &ids, one).unwrap();
        let run = sae::features(&model, &backend, &clean, one, s.d_sae)
            .unwrap()
            .remove(0);
        for (t, f) in run.features.iter().enumerate() {
            for &(j, a) in f {
                count[j] += 1;
                if best[j].is_none_or(|(b, _, _)| a > b) {
                    best[j] = Some((a, i, t));
                }
            }
        }
    }
    assert_eq!(d.tokens, tokens);
    let mut checked = 0;
    for (j, f) in d.features.iter().enumerate() {
        assert_eq!(f.active_tokens, count[j], "feature {j}: active tokens");
        assert!((f.density - count[j] as f64 / tokens as f64).abs() < 1e-12);
        assert_eq!(
            f.histogram.iter().sum::<u64>(),
            count[j],
            "feature {j}: histogram"
        );
        match best[j] {
            None => assert!(f.contexts.is_empty() && f.logits_up.is_empty()),
            Some((a, doc, pos)) => {
                let c = &f.contexts[0];
                assert_eq!(
                    (c.doc, c.pos, c.act),
                    (doc, pos, a),
                    "feature {j}: top context"
                );
                assert_eq!(f.max_act, a);
                assert!(f.contexts.len() <= 3);
                assert!(f.contexts.windows(2).all(|w| w[0].act >= w[1].act));
                assert_eq!(c.acts[pos - c.start], a);
                assert_eq!(c.tokens.len(), c.ids.len());
                if checked < 5 {
                    // The logit effect and neighbours are the card's (checked against SAELens).
                    let ids = tok.encode(&docs[doc], false).unwrap();
                    let one = std::slice::from_ref(&s);
                    let clean = sae::clean_run(&model, &backend, &ids, one).unwrap();
                    let run = sae::features(&model, &backend, &clean, one, s.d_sae)
                        .unwrap()
                        .remove(0);
                    let card = sae::card::card(&model, &s, &run, j, 10).unwrap();
                    let up: Vec<u32> = f.logits_up.iter().map(|x| x.0).collect();
                    let want: Vec<u32> = card.logits_up.iter().map(|x| x.0).collect();
                    assert_eq!(up, want, "feature {j}: logit effect");
                    for (g, w) in f.logits_up.iter().zip(&card.logits_up) {
                        assert!((g.2 - w.1).abs() <= 1e-4, "feature {j}: {} vs {}", g.2, w.1);
                    }
                    let near: Vec<usize> = f.neighbours.iter().map(|x| x.0).collect();
                    let want: Vec<usize> = card.neighbours.iter().map(|x| x.0).collect();
                    assert_eq!(near, want, "feature {j}: neighbours");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 5);
}

#[test]
fn a_killed_dashboard_run_resumes_to_the_same_file() {
    let dir = TempDir::new("sae-dash-kill");
    let corpus = dir.path().join("corpus.txt");
    write_corpus(&corpus, 600, 11);
    let m = model();
    let sae_path = sae_dir("topk-mlp-out-1");
    let args = |out: &Path| -> Vec<String> {
        [
            "features",
            m.to_str().unwrap(),
            "--sae",
            sae_path.to_str().unwrap(),
            "--corpus",
            corpus.to_str().unwrap(),
            "--dashboard",
            out.to_str().unwrap(),
            "--checkpoint-every",
            "50",
            "--backend",
            "cpu",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let whole = dir.path().join("whole.json");
    let a = args(&whole);
    let res = prism(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    // Kill a second run (SIGKILL) once it has saved its state, then run it again.
    let killed = dir.path().join("killed.json");
    let partial = dir.path().join("killed.json.partial");
    let mut child = std::process::Command::new(prism_bin())
        .args(args(&killed))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !partial.exists() {
        assert!(start.elapsed().as_secs() < 60, "no state saved");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.exists(), "killed before the end");
    let a = args(&killed);
    let res = prism(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{err}");
    assert!(err.contains("resuming"), "{err}");
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&killed).unwrap()
    );
    // A state of other settings is refused, and a corrupt one named.
    let other = dir.path().join("other.json");
    std::fs::write(dir.path().join("other.json.partial"), b"{\"key\": 12").unwrap();
    let a = args(&other);
    let res = prism(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(
        err.contains("other.json.partial") && err.contains("does not parse"),
        "{err}"
    );
    use prism_analysis::sae::dashboard::{Accumulator, Settings};
    Accumulator::new("another run".into(), Settings::default(), 512)
        .save(&dir.path().join("other.json.partial"))
        .unwrap();
    let res = prism(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(err.contains("belongs to another run"), "{err}");
    // An empty corpus is refused by name.
    std::fs::write(&corpus, "\n\n").unwrap();
    let res = prism(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(err.contains("no documents"), "{err}");
}

#[test]
fn llama_scope_files_that_do_not_fit_are_refused_by_name() {
    let src = sae_dir("llama-scope/Llama3_1-8B-Base-L1R-8x");
    let hp: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("hyperparams.json")).unwrap())
            .unwrap();
    let dir = TempDir::new("llama-scope-bad");
    let m = model();
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "transcoder",
            Box::new(|v| v["hook_point_out"] = "blocks.1.hook_mlp_out".into()),
            "a transcoder",
        ),
        (
            "width",
            Box::new(|v| v["d_model"] = 128.into()),
            "encoder.weight",
        ),
        (
            "norm",
            Box::new(|v| {
                v.as_object_mut()
                    .unwrap()
                    .remove("dataset_average_activation_norm");
            }),
            "dataset_average_activation_norm",
        ),
        (
            "hook",
            Box::new(|v| {
                v["hook_point_in"] = "blocks.1.hook_z".into();
                v["hook_point_out"] = "blocks.1.hook_z".into();
            }),
            "names no site",
        ),
        ("truncated", Box::new(|_| {}), "final.safetensors"),
    ];
    for (name, edit, want) in cases {
        let d = dir.path().join(name);
        std::fs::create_dir_all(d.join("checkpoints")).unwrap();
        let mut v = hp.clone();
        edit(&mut v);
        std::fs::write(
            d.join("hyperparams.json"),
            serde_json::to_string(&v).unwrap(),
        )
        .unwrap();
        let mut w = std::fs::read(src.join("checkpoints/final.safetensors")).unwrap();
        if name == "truncated" {
            w.truncate(w.len() / 2);
        }
        std::fs::write(d.join("checkpoints/final.safetensors"), w).unwrap();
        let out = prism(&[
            "features",
            m.to_str().unwrap(),
            "--sae",
            d.to_str().unwrap(),
            "--ids",
            "1,2,3",
            "--backend",
            "cpu",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(want), "{name}: expected {want:?} in {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

#[test]
fn sparsify_files_that_do_not_fit_are_refused_by_name() {
    let src = sae_dir("sparsify/layers.1");
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("cfg.json")).unwrap()).unwrap();
    let dir = TempDir::new("sparsify-bad");
    let m = model();
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, &str, Edit, &str)> = vec![
        (
            "transcoder",
            "layers.1",
            Box::new(|v| v["transcode"] = true.into()),
            "transcoder",
        ),
        (
            "groupmax",
            "layers.1",
            Box::new(|v| v["activation"] = "groupmax".into()),
            "\"groupmax\"",
        ),
        (
            "noskip",
            "layers.1",
            Box::new(|v| v["skip_connection"] = false.into()),
            "W_skip is there",
        ),
        ("k", "layers.1", Box::new(|v| v["k"] = 513.into()), "k 513"),
        (
            "width",
            "layers.1",
            Box::new(|v| v["d_in"] = 128.into()),
            "encoder.weight",
        ),
        (
            "name",
            "layers.1.mlp.act",
            Box::new(|_| {}),
            "not a sparsify hookpoint",
        ),
    ];
    for (case, folder, edit, want) in cases {
        let d = dir.path().join(case).join(folder);
        std::fs::create_dir_all(&d).unwrap();
        let mut v = cfg.clone();
        edit(&mut v);
        std::fs::write(d.join("cfg.json"), serde_json::to_string(&v).unwrap()).unwrap();
        std::fs::copy(src.join("sae.safetensors"), d.join("sae.safetensors")).unwrap();
        let out = prism(&[
            "features",
            m.to_str().unwrap(),
            "--sae",
            d.to_str().unwrap(),
            "--ids",
            "1,2,3",
            "--backend",
            "cpu",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{case}: {err}");
        assert!(err.contains(want), "{case}: expected {want:?} in {err}");
    }
}

/// Benchmark (run by `scripts/bench-sae.sh`, not in CI): a 16k-feature SAE on SmolLM2's
/// resid_post@15 over a 512-token prompt, the encoder's time next to the forward pass's.
#[test]
#[ignore]
fn bench_a_16k_sae_encoder_against_the_forward_pass() {
    use prism_analysis::backend::cpu::CpuBackend;
    use prism_analysis::backend::Capture;
    use prism_analysis::intervene::Site;
    use prism_analysis::sae::{Activation, Sae};
    use prism_analysis::trace::Trace;
    use std::sync::Arc;
    use std::time::Instant;
    let model = prism_analysis::checkpoint::load(&sample("smollm2")).unwrap();
    let backend = CpuBackend::new(&model).unwrap();
    let (n, m) = (model.spec.hidden, 16384);
    let mut rng = prism_tests::synth::Rng::new(1);
    let sae = Sae {
        path: "synthetic".into(),
        hook: "blocks.15.hook_resid_post".into(),
        site: Site::ResidPost,
        layer: 15,
        d_in: n,
        d_sae: m,
        architecture: "jumprelu".into(),
        activation: Activation::JumpRelu(vec![0.5; m]),
        apply_b_dec_to_input: true,
        w_enc: Arc::new(rng.vec(n * m, 0.05, 0.0)),
        b_enc: Arc::new(rng.vec(m, 0.1, -0.2)),
        w_dec: rng.vec(m * n, 0.05, 0.0),
        b_dec: rng.vec(n, 0.01, 0.0),
        w_skip: None,
        transcoder: false,
        input: prism_analysis::sae::SaeInput::Site,
        input_norm: Default::default(),
        encoder_t: Default::default(),
    };
    let ids: Vec<u32> = (0..512).map(|i| 100 + (i * 37 % 20000) as u32).collect();
    let capture = Capture {
        residual: true,
        ..Capture::default()
    };
    let mut forward = f64::INFINITY;
    let mut encode = f64::INFINITY;
    let mut x = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let trace = Trace::run(&model, &backend, &ids, capture, 1).unwrap();
        forward = forward.min(t.elapsed().as_secs_f64());
        x = trace.output.residual.as_ref().unwrap()[16].clone();
        let t = Instant::now();
        let f = sae.encode(&x).unwrap();
        encode = encode.min(t.elapsed().as_secs_f64());
        assert_eq!(f.len(), 512 * m);
    }
    println!(
        "SmolLM2 Q4_1, 512 tokens, CPU ({} threads): forward pass {:.3} s (with the residual capture), 16k-feature SAE encoder {:.3} s: {:.2}x the forward pass",
        prism_analysis::backend::cpu::pool::Pool::global().threads(),
        forward,
        encode,
        encode / forward
    );
    assert_eq!(x.len(), 512 * n);
}

/// Prism's own npz reader on damaged files: every truncation point of a 64-step sweep and 300
/// seeded byte corruptions of the Gemma Scope 1 fixture end in an SAE or an error, never a panic.
#[test]
fn a_damaged_params_npz_is_an_error_never_a_panic() {
    let src = sae_dir("gemma-scope-2b-pt-res/layer_0/width_512/average_l0_20/params.npz");
    let bytes = std::fs::read(&src).unwrap();
    let dir = TempDir::new("npz-damage");
    let d = dir
        .path()
        .join("gemma-scope-2b-pt-res/layer_0/width_512/average_l0_20");
    std::fs::create_dir_all(&d).unwrap();
    let mut rng = prism_tests::synth::Rng::new(19);
    let mut errors = 0;
    let mut cases: Vec<Vec<u8>> = (0..64)
        .map(|i| bytes[..bytes.len() * i / 64].to_vec())
        .collect();
    // Corrupt the zip's directories and the npy headers most: the first and last 4 KiB.
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.next_u64() % 4 {
            let region = rng.next_u64() % 3;
            let at = match region {
                0 => (rng.next_u64() % 4096) as usize,
                1 => b.len() - 1 - (rng.next_u64() % 4096) as usize,
                _ => (rng.next_u64() % b.len() as u64) as usize,
            };
            b[at] = (rng.next_u64() & 0xff) as u8;
        }
        cases.push(b);
    }
    for (i, b) in cases.iter().enumerate() {
        std::fs::write(d.join("params.npz"), b).unwrap();
        match std::panic::catch_unwind(|| prism_analysis::sae::Sae::load(&d)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                errors += 1;
                assert!(!e.to_string().is_empty(), "case {i}: an empty error");
            }
            Err(_) => panic!("case {i}: the npz reader panicked"),
        }
    }
    assert!(errors >= 64, "the truncations are errors ({errors} errors)");
}

#[test]
fn sparsify_transcoders_match_sparsify_and_clamp_alike_on_both_backends() {
    let reference = read_json(&fixtures().join("saes/reference.json"));
    let m = model();
    for (name, tc) in reference["transcoders"].as_object().unwrap() {
        for backend in ["cpu", "gpu"] {
            for (seq, want) in tc["sequences"].as_object().unwrap() {
                let ctx = format!("{name} {seq} on {backend}");
                let got = json_of(&[
                    "features",
                    m.to_str().unwrap(),
                    "--sae",
                    sae_dir(name).to_str().unwrap(),
                    "--ids",
                    &ids_arg(want),
                    "--top",
                    "8",
                    "--json",
                    "--backend",
                    backend,
                ]);
                assert_eq!(got["sae"]["transcoder"], true, "{ctx}");
                assert_feature_run(&ctx, &got, want);
            }
        }
        // A clamp inside the pass (the feature read from the MLP's input, written into its
        // output; checked against transformers in transcoders.rs): the same on both backends,
        // and it moves the run.
        let want = tc["sequences"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap();
        let j = want["features"][1][0][0].as_u64().unwrap();
        let clamp = format!("{j}=20");
        let run = |backend: &str| {
            json_of(&[
                "features",
                m.to_str().unwrap(),
                "--sae",
                sae_dir(name).to_str().unwrap(),
                "--ids",
                &ids_arg(want),
                "--json",
                "--clamp",
                &clamp,
                "--backend",
                backend,
            ])
        };
        let (cpu, gpu) = (run("cpu"), run("gpu"));
        let (c, g) = (
            predicted_bits(&cpu["clamped"]),
            predicted_bits(&gpu["clamped"]),
        );
        for (t, (x, y)) in c.iter().zip(&g).enumerate() {
            assert!(
                (x - y).abs() <= 0.01,
                "{name}: token {}: cpu {x} vs gpu {y}",
                t + 1
            );
        }
        let clean = cpu["reconstruction"]["clean_bits"].as_f64().unwrap();
        let bits = cpu["clamped"]["bits"].as_f64().unwrap();
        assert!(
            (bits - clean).abs() > 0.05,
            "{name}: the clamp changed nothing"
        );
    }
}
