//! circuit-tracer's transcoder sets (its own layout, Gemma Scope's npz, Gemma Scope 2's
//! safetensors), SAEs on the sites a post-norm block moves, and Gemma Scope's MLP, attention and
//! transcoder folders (read as SAELens's own loaders read them), against the numbers of the field's
//! own loaders (`scripts/make_transcoders.py`: circuit-tracer 0.5.0's `load_transcoder_set` and
//! SAELens on transformers' activations at the modules circuit-tracer's and TransformerLens's
//! hooks name): per-token features within 1e-4 relative, the same L0, MSE and explained variance
//! within 1e-4, and the clean and spliced-in totals within 0.01 bits per token, on both backends.

use std::path::PathBuf;

use prism_tests::*;
use serde_json::Value;

fn dir() -> PathBuf {
    fixtures().join("saes/transcoders")
}

fn reference() -> Value {
    read_json(&dir().join("reference.json"))
}

fn ids_of(want: &Value) -> String {
    u32s(&want["input_ids"])
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn features(model: &str, sae: &str, want: &Value, backend: &str, extra: &[&str]) -> Value {
    let m = fixtures().join(model);
    let mut args = vec![
        "features",
        m.to_str().unwrap(),
        "--sae",
        sae,
        "--top",
        "8",
        "--json",
        "--backend",
        backend,
    ];
    let ids = ids_of(want);
    args.extend(["--ids", &ids]);
    args.extend(extra);
    json_of(&args)
}

#[test]
fn circuit_tracer_transcoder_sets_match_circuit_tracer_on_both_backends() {
    let reference = reference();
    for (name, set) in reference["sets"].as_object().unwrap() {
        let folder = dir().join(name);
        let model = set["model"].as_str().unwrap();
        let layers = set["layers"].as_object().unwrap();
        for backend in ["cpu", "gpu"] {
            for seq in layers["0"].as_object().unwrap().keys() {
                let want0 = &layers["0"][seq];
                // The folder: every layer's transcoder, one run each.
                let got = features(model, folder.to_str().unwrap(), want0, backend, &[]);
                let runs = got["runs"].as_array().expect("one run per layer");
                assert_eq!(runs.len(), layers.len(), "{name}: layers");
                for (layer, run) in runs.iter().enumerate() {
                    let ctx = format!("{name} layer {layer} {seq} on {backend}");
                    let want = &layers[&layer.to_string()][seq];
                    assert_eq!(run["sae"]["transcoder"], true, "{ctx}");
                    assert_eq!(run["sae"]["layer"], layer, "{ctx}");
                    let hook = format!(
                        "blocks.{layer}.{} -> blocks.{layer}.{}",
                        set["feature_input_hook"].as_str().unwrap(),
                        set["feature_output_hook"].as_str().unwrap()
                    );
                    assert_eq!(run["sae"]["hook"], hook.as_str(), "{ctx}");
                    assert_feature_run(&ctx, run, want);
                }
            }
        }
    }
}

#[test]
fn one_layer_of_a_transcoder_set_reads_alone_and_a_set_folder_names_its_layers() {
    let reference = reference();
    let set = &reference["sets"]["circuit-tracer-qwen3"];
    let want = &set["layers"]["1"]["seq7"];
    let file = dir().join("circuit-tracer-qwen3/layer_1.safetensors");
    let got = features("archs/qwen3", file.to_str().unwrap(), want, "cpu", &[]);
    assert_eq!(got["sae"]["layer"], 1);
    assert_eq!(got["sae"]["architecture"], "jumprelu");
    assert_feature_run("layer_1.safetensors alone", &got, want);
    // The Gemma Scope transcoder folder itself (no config): ln2.hook_normalized -> hook_mlp_out.
    let gs = &reference["sets"]["gemma-scope-gemma2"];
    let want = &gs["layers"]["0"]["seq33"];
    let folder = dir().join("gemma-scope-gemma2/layer_0/width_256/average_l0_20");
    // Its path names no -transcoders release until it is copied under one.
    let tmp = TempDir::new("gemma-scope-tc");
    let copy = tmp
        .path()
        .join("gemma-scope-2b-pt-transcoders/layer_0/width_256/average_l0_20");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(folder.join("params.npz"), copy.join("params.npz")).unwrap();
    let got = features("archs/gemma2", copy.to_str().unwrap(), want, "cpu", &[]);
    assert_eq!(
        got["sae"]["hook"],
        "blocks.0.ln2.hook_normalized -> blocks.0.hook_mlp_out"
    );
    assert_feature_run("Gemma Scope transcoder folder", &got, want);
}

/// SAELens SAEs on blocks.L.hook_mlp_out / hook_attn_out of Gemma 2 (after its post-norms), Gemma
/// Scope 1's -mlp and -att releases, Gemma Scope 2's mlp_out, attn_out (attn.hook_z) and affine
/// transcoder folders: features, reconstruction, splice and clamps (per token where recorded).
#[test]
fn saes_on_post_norm_sites_and_gemma_scope_mlp_attention_and_transcoder_folders_match_sae_lens() {
    let reference = reference();
    for (name, sae) in reference["saes"].as_object().unwrap() {
        let folder = dir().join(name);
        let model = sae["model"].as_str().unwrap();
        for backend in ["cpu", "gpu"] {
            for (seq, want) in sae["sequences"].as_object().unwrap() {
                let ctx = format!("{name} {seq} on {backend}");
                let clamps = want["clamps"].as_array().unwrap();
                let j = clamps[0]["feature"].as_u64().unwrap();
                for c in clamps {
                    let arg = format!("{j}={}", c["value"].as_f64().unwrap());
                    let got = features(
                        model,
                        folder.to_str().unwrap(),
                        want,
                        backend,
                        &["--clamp", &arg],
                    );
                    // SAELens's hook names the site; a transcoder's output hook the site it writes.
                    let hook = sae["hook_out"].as_str().or(sae["hook"].as_str()).unwrap();
                    let site = match hook.split_once('.').unwrap().1.split_once('.').unwrap().1 {
                        "hook_mlp_out" => "mlp_added",
                        "hook_attn_out" => "attn_added",
                        "attn.hook_z" => "head",
                        other => panic!("{ctx}: hook {other}"),
                    };
                    assert_eq!(got["sae"]["site"], site, "{ctx}");
                    if sae["hook_out"].is_null() {
                        assert_eq!(got["sae"]["hook"], sae["hook"], "{ctx}");
                    } else {
                        assert_eq!(got["sae"]["transcoder"], true, "{ctx}");
                        let label = got["sae"]["hook"].as_str().unwrap();
                        assert!(label.ends_with(hook), "{ctx}: {label}");
                    }
                    assert_feature_run(&ctx, &got, want);
                    let per_token = 0.01 * (u32s(&want["input_ids"]).len() - 1) as f64;
                    let (x, y) = (
                        got["clamped"]["bits"].as_f64().unwrap(),
                        c["bits"].as_f64().unwrap(),
                    );
                    assert!(
                        (x - y).abs() <= per_token,
                        "{ctx}: clamped to {}: {x} vs {y} bits",
                        c["value"]
                    );
                    if !c["surprisal_bits"].is_null() {
                        let want = f64s(&c["surprisal_bits"]);
                        assert_token_bits(&format!("{ctx}: {arg}"), &got["clamped"], &want);
                    }
                }
            }
        }
    }
}

/// A config whose twelve lines of aliases would expand to 10^12 scalars.
fn alias_bomb(config: &str) -> String {
    let mut s = format!("{config}a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        s += &format!("a{i}: &a{i} [{refs}]\n");
    }
    s
}

#[test]
fn broken_transcoder_sets_are_refused_by_name() {
    let src = dir().join("circuit-tracer-qwen3");
    let tmp = TempDir::new("broken-sets");
    let config = std::fs::read_to_string(src.join("config.yaml")).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "kind",
            config.replace("transcoder_set", "cross_layer_transcoder"),
            "model_kind \"cross_layer_transcoder\"",
        ),
        (
            "input",
            config.replace("mlp.hook_in", "hook_resid_pre"),
            "feature_input_hook \"hook_resid_pre\"",
        ),
        (
            "output",
            config.replace("mlp.hook_out", "hook_resid_post"),
            "feature_output_hook \"hook_resid_post\"",
        ),
        ("yaml", "model_kind: [unclosed\n".into(), "config.yaml:"),
        ("scalar", "just a string\n".into(), "not a mapping"),
        (
            "missing-file",
            format!("{config}transcoders:\n  - \"hf://x/y/layer_9.safetensors\"\n"),
            "transcoders[0] \"hf://x/y/layer_9.safetensors\": no file",
        ),
        (
            "escape",
            format!("{config}transcoders:\n  - \"hf://x/y/../../etc/passwd\"\n"),
            "is not a file path",
        ),
        (
            "list",
            format!("{config}transcoders: 7\n"),
            "\"transcoders\" is not a list",
        ),
        // Hostile: nested aliases that expand to 10^12 nodes, and nesting 100000 deep.
        ("aliases", alias_bomb(&config), "YAML aliases"),
        (
            "deep",
            format!(
                "{config}x: {}{}\n",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
            "recursion limit",
        ),
    ];
    for (name, text, needle) in cases {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        for l in 0..2 {
            let f = format!("layer_{l}.safetensors");
            std::fs::copy(src.join(&f), d.join(&f)).unwrap();
        }
        std::fs::write(d.join("config.yaml"), text).unwrap();
        let m = fixtures().join("archs/qwen3");
        let out = prism(&[
            "features",
            m.to_str().unwrap(),
            "--sae",
            d.to_str().unwrap(),
            "--ids",
            "1,2,3",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(needle), "{name}: {needle:?} not in {err}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: one line: {err}");
    }
    // A missing layer, a layer file with a bad tensor shape, a transcoder whose input form the
    // model does not have.
    let d = tmp.path().join("gap");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(src.join("config.yaml"), d.join("config.yaml")).unwrap();
    std::fs::copy(
        src.join("layer_1.safetensors"),
        d.join("layer_1.safetensors"),
    )
    .unwrap();
    let m = fixtures().join("archs/qwen3");
    let out = prism(&[
        "features",
        m.to_str().unwrap(),
        "--sae",
        d.to_str().unwrap(),
        "--ids",
        "1,2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("layer_0.safetensors is missing"), "{err}");
    // ln2.hook_normalized on a model whose blocks run the MLP beside the attention (GPT-NeoX).
    let neox = fixtures().join("archs/gptneox");
    let gs = dir().join("gemma-scope-gemma2");
    let out = prism(&[
        "features",
        neox.to_str().unwrap(),
        "--sae",
        gs.to_str().unwrap(),
        "--ids",
        "1,2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("ln2.hook_normalized: the gptneox blocks"),
        "{err}"
    );
    // A file under a set's folder that its config.yaml does not list.
    let d = tmp.path().join("stray");
    std::fs::create_dir_all(d.join("extra")).unwrap();
    for f in ["config.yaml", "layer_0.safetensors", "layer_1.safetensors"] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
    }
    let stray = d.join("extra/layer_0.safetensors");
    std::fs::copy(src.join("layer_0.safetensors"), &stray).unwrap();
    let out = prism(&[
        "features",
        m.to_str().unwrap(),
        "--sae",
        stray.to_str().unwrap(),
        "--ids",
        "1,2,3",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not one of the transcoders"), "{err}");
}

/// The file of `layer` in a set folder: the config's `transcoders` entry (its path inside the
/// Hub repository), else `layer_L.safetensors`.
fn member(folder: &std::path::Path, layer: usize) -> PathBuf {
    let config = std::fs::read_to_string(folder.join("config.yaml")).unwrap();
    let listed: Vec<&str> = config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- \"hf://"))
        .collect();
    match listed.get(layer) {
        Some(entry) => {
            let path = entry.trim_end_matches('"').splitn(3, '/').nth(2).unwrap();
            folder.join(path)
        }
        None => folder.join(format!("layer_{layer}.safetensors")),
    }
}

/// Clamping a transcoder's feature edits the output site by (v - f_j(input)) W_dec[j] inside
/// the pass: each predicted token's surprisal within 0.01 bits of transformers with the same edit
/// in a hook (circuit-tracer's encoder), for the feature ablated and clamped to 20x its peak.
#[test]
fn transcoder_clamps_in_the_pass_match_circuit_tracer_on_both_backends() {
    let reference = reference();
    for (name, set) in reference["sets"].as_object().unwrap() {
        let folder = dir().join(name);
        let model = set["model"].as_str().unwrap();
        for (layer, seqs) in set["layers"].as_object().unwrap() {
            let file = member(&folder, layer.parse().unwrap());
            for backend in ["cpu", "gpu"] {
                for (seq, want) in seqs.as_object().unwrap() {
                    let clamps = want["clamps"].as_array().unwrap();
                    // The reference's clamp moves some token by far more than the tolerance.
                    let (a, b) = (
                        f64s(&clamps[0]["surprisal_bits"]),
                        f64s(&clamps[1]["surprisal_bits"]),
                    );
                    let moved = a
                        .iter()
                        .zip(&b)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0, f64::max);
                    assert!(
                        moved > 0.05,
                        "{name} layer {layer} {seq}: the clamps hardly differ"
                    );
                    for c in clamps {
                        let ctx = format!("{name} layer {layer} {seq} on {backend}");
                        let arg = format!("{}={}", c["feature"], c["value"].as_f64().unwrap());
                        let got = features(
                            model,
                            file.to_str().unwrap(),
                            want,
                            backend,
                            &["--clamp", &arg],
                        );
                        assert_eq!(got["sae"]["transcoder"], true, "{ctx}");
                        let want = f64s(&c["surprisal_bits"]);
                        assert_token_bits(&format!("{ctx}: clamped {arg}"), &got["clamped"], &want);
                    }
                }
            }
        }
    }
}
