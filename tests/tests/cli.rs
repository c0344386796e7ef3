//! The command line as a user meets it: help, JSON schemas, exit codes, and the numbers in them.

use prism_tests::*;

#[test]
fn every_subcommand_has_help() {
    for sub in ["info", "run", "embed", "fetch-samples"] {
        let out = prism(&[sub, "--help"]);
        assert!(out.status.success(), "{sub} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: prism"), "{sub}: {text}");
    }
    let out = prism(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["info", "run", "embed", "fetch-samples"] {
        assert!(text.contains(sub), "top-level help lists {sub}");
    }
}

#[test]
fn run_json_schema_on_a_tiny_gguf() {
    let g = tiny("llama-gguf/tiny-llama-f32.gguf");
    let ids = "501,500,505,194,87,472,53";
    let v = json_of(&[
        "run",
        g.to_str().unwrap(),
        "--ids",
        ids,
        "--json",
        "--attention",
        "--hidden",
        "--lens",
        "--top",
        "3",
        "--backend",
        "cpu",
    ]);
    let tokens = v["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 7);
    assert_eq!(tokens[0]["id"], 501);
    assert!(tokens[0]["text"].is_string());
    let s = v["surprisal_bits"].as_array().unwrap();
    assert_eq!(s.len(), 7);
    assert!(s[0].is_null());
    assert!(s[1..].iter().all(|x| x.as_f64().unwrap() > 0.0));
    let top = v["top"].as_array().unwrap();
    assert_eq!(top.len(), 7);
    assert_eq!(top[0].as_array().unwrap().len(), 3);
    for k in ["id", "text", "p"] {
        assert!(!top[0][0][k].is_null(), "top entries have {k}");
    }
    let total: f64 = s[1..].iter().map(|x| x.as_f64().unwrap()).sum();
    assert!((v["total_bits"].as_f64().unwrap() - total).abs() < 1e-9);
    assert!(v["bits_per_byte"].as_f64().unwrap() > 0.0);
    // attention [layer][head][query][key], rows summing to 1, causal.
    let att = &v["attention"];
    assert_eq!(att.as_array().unwrap().len(), 2);
    assert_eq!(att[0].as_array().unwrap().len(), 4);
    let row: Vec<f64> = f64s(&att[1][3][2]);
    assert_eq!(row.len(), 7);
    assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    assert!(row[3..].iter().all(|&x| x == 0.0));
    // Compare with the reference attention of the same ids.
    let reference = read_json(&tiny("llama-gguf/reference-f32.json"));
    let want = f64s(&reference["sequences"]["seq7"]["attentions"]);
    assert!(max_abs_diff(&f64s(att), &want) < 2e-5);
    assert_eq!(v["hidden_state_l2_norms"].as_array().unwrap().len(), 3);
    assert_eq!(v["hidden_states"][0][0].as_array().unwrap().len(), 64);
    assert_eq!(v["logit_lens"].as_array().unwrap().len(), 3);
}

#[test]
fn run_table_shows_bits_and_zstd() {
    let g = tiny("llama-gguf/tiny-llama-q8_0.gguf");
    let out = prism(&[
        "run",
        g.to_str().unwrap(),
        "--text",
        "hello there",
        "--backend",
        "cpu",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bits/byte"), "{text}");
    assert!(text.contains("zstd"), "{text}");
}

#[test]
fn info_json_describes_the_checkpoint() {
    let v = json_of(&["info", tiny("qwen2").to_str().unwrap(), "--json"]);
    assert_eq!(v["layers"], 2);
    assert_eq!(v["heads"], 4);
    assert_eq!(v["kv_heads"], 2);
    assert_eq!(v["hidden"], 64);
    assert_eq!(v["vocab"], 512);
    assert_eq!(v["context_length"], 128);
    assert!(v["dtypes"]["F32"].as_u64().unwrap() > 0);
    let reference = read_json(&tiny("qwen2/reference.json"));
    assert_eq!(v["n_params"], reference["meta"]["param_count"]);
    let text = String::from_utf8_lossy(&prism(&["info", tiny("gpt2").to_str().unwrap()]).stdout)
        .to_string();
    for field in [
        "parameters",
        "layers",
        "heads",
        "vocabulary",
        "context length",
        "dtypes",
        "file size",
        "tokenizer",
    ] {
        assert!(text.contains(field), "info shows {field}: {text}");
    }
}

#[test]
fn embed_json_is_unit_length() {
    let v = json_of(&[
        "embed",
        tiny("bert").to_str().unwrap(),
        "--ids",
        "1,5,9,2",
        "--json",
    ]);
    let e = f64s(&v["embedding"]);
    assert_eq!(e.len(), 64);
    assert!((e.iter().map(|x| x * x).sum::<f64>().sqrt() - 1.0).abs() < 1e-5);
    assert_eq!(v["tokens"].as_array().unwrap().len(), 4);
    assert!(v["pooling"].as_str().unwrap().contains("encoder"));
    let v = json_of(&[
        "embed",
        tiny("llama-gguf/tiny-llama-f32.gguf").to_str().unwrap(),
        "--ids",
        "1,5,9",
        "--json",
    ]);
    assert!(v["pooling"].as_str().unwrap().contains("decoder"));
}

#[test]
fn bos_switch_prepends_bos() {
    let g = tiny("llama-gguf/tiny-llama-f32.gguf");
    let plain = json_of(&["run", g.to_str().unwrap(), "--text", "ab", "--json"]);
    let bos = json_of(&[
        "run",
        g.to_str().unwrap(),
        "--text",
        "ab",
        "--json",
        "--bos",
    ]);
    let n = plain["tokens"].as_array().unwrap().len();
    assert_eq!(bos["tokens"].as_array().unwrap().len(), n + 1);
    assert_eq!(bos["tokens"][0]["id"], 1, "the tiny GGUF's BOS id is 1");
}

/// Real-model checks on texts that are not in the reference files: the CLI's numbers must agree
/// with the library's and be sane (probabilities, ranks, compression).
#[test]
fn smollm2_cli_on_a_fresh_text() {
    let path = sample("smollm2");
    let v = json_of(&[
        "run",
        path.to_str().unwrap(),
        "--text",
        "The sky over the harbour was orange and pink at dusk.",
        "--json",
        "--backend",
        "cpu",
    ]);
    let s = v["surprisal_bits"].as_array().unwrap();
    assert!(s[1..].iter().all(|x| x.as_f64().unwrap().is_finite()));
    let bpb = v["bits_per_byte"].as_f64().unwrap();
    assert!(bpb > 0.3 && bpb < 6.0, "bits per byte {bpb}");
    for pos in v["top"].as_array().unwrap() {
        let ps: Vec<f64> = pos
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["p"].as_f64().unwrap())
            .collect();
        assert!(ps.windows(2).all(|w| w[0] >= w[1]) && ps.iter().sum::<f64>() <= 1.0 + 1e-6);
    }
}

#[test]
fn gpu_backend_through_the_cli_names_its_adapter() {
    let g = tiny("llama-gguf/tiny-llama-q4_1.gguf");
    let gpu = json_of(&[
        "run",
        g.to_str().unwrap(),
        "--ids",
        "501,500,505,194",
        "--json",
        "--backend",
        "gpu",
    ]);
    let cpu = json_of(&[
        "run",
        g.to_str().unwrap(),
        "--ids",
        "501,500,505,194",
        "--json",
        "--backend",
        "cpu",
    ]);
    for k in ["name", "backend", "device_type"] {
        assert!(
            gpu["adapter"][k].is_string(),
            "adapter has {k}: {}",
            gpu["adapter"]
        );
    }
    assert!(cpu["adapter"].is_null());
    let (a, b) = (f64s(&gpu["surprisal_bits"]), f64s(&cpu["surprisal_bits"]));
    for (x, y) in a.iter().zip(&b).skip(1) {
        assert!((x - y).abs() < 1e-3, "gpu {x} vs cpu {y}");
    }
    let info = json_of(&["info", g.to_str().unwrap(), "--json", "--backend", "gpu"]);
    assert!(info["adapter"]["name"].is_string());
    assert!(info["backend"].as_str().unwrap().contains("MB of weights"));
}

#[test]
fn bench_json_has_the_documented_fields() {
    let g = tiny("llama-gguf/tiny-llama-q8_0.gguf");
    let v = json_of(&[
        "bench",
        g.to_str().unwrap(),
        "--tokens",
        "8,16",
        "--backend",
        "cpu,gpu",
        "--repeats",
        "2",
        "--generate",
        "5",
        "--json",
    ]);
    let points = v["passes"].as_array().unwrap();
    assert_eq!(points.len(), 4);
    for p in points {
        for k in [
            "backend",
            "tokens",
            "capture",
            "median_ms",
            "min_ms",
            "max_ms",
            "tokens_per_s",
            "gflops",
        ] {
            assert!(!p[k].is_null(), "bench point has {k}: {p}");
        }
        assert!(p["min_ms"].as_f64().unwrap() <= p["median_ms"].as_f64().unwrap());
    }
    assert!(
        points[2]["gpu_peak_bytes"].as_u64().unwrap()
            > points[2]["gpu_weight_bytes"].as_u64().unwrap()
    );
    // Greedy generation timed on both backends, never stopping early.
    let gens = v["generate"].as_array().unwrap();
    assert_eq!(gens.len(), 2);
    for g in gens {
        assert_eq!(g["new_tokens"], 5, "{g}");
        assert!(g["tokens_per_s"].as_f64().unwrap() > 0.0);
    }
    assert!(!v["ids"].as_array().unwrap().is_empty());
}

#[test]
fn bench_profile_gives_gpu_time_per_shader_from_timestamps() {
    // lavapipe has timestamp queries: every shader of a pass shows up with its dispatch count,
    // and the GPU time of the parts is within the pass's wall time.
    let g = tiny("llama-gguf/tiny-llama-q8_0.gguf");
    let v = json_of(&[
        "bench",
        g.to_str().unwrap(),
        "--tokens",
        "16",
        "--backend",
        "gpu",
        "--repeats",
        "2",
        "--profile",
        "--json",
    ]);
    let p = &v["passes"][0];
    let profile = p["profile"].as_array().expect("profile");
    let names: Vec<&str> = profile.iter().map(|e| e[0].as_str().unwrap()).collect();
    for shader in [
        "matmul",
        "rms_norm",
        "rope",
        "attention_tiled",
        "logit_stats",
    ] {
        assert!(names.contains(&shader), "{shader} missing from {names:?}");
    }
    // Fused away: the layer norms into the matmuls, the gate into the up projection, the residual
    // adds into the output projections. Only the final norm is left.
    for shader in ["gated", "add"] {
        assert!(
            !names.contains(&shader),
            "{shader} still dispatched: {names:?}"
        );
    }
    let norms = profile.iter().find(|e| e[0] == "rms_norm").unwrap();
    assert_eq!(norms[2].as_f64().unwrap(), 1.0, "{profile:?}");
    // The matmul shaders' own rate: the pass's matmul work over their GPU time, so above the
    // whole pass's rate.
    let (mm, all) = (
        p["matmul_gflops"].as_f64().unwrap(),
        p["gflops"].as_f64().unwrap(),
    );
    assert!(mm > all, "matmul {mm} GFLOP/s vs the pass {all}");
    // Two layers of q, k, v, o, gate, up and down, plus the unembedding.
    let matmul = profile.iter().find(|e| e[0] == "matmul").unwrap();
    assert_eq!(matmul[2].as_f64().unwrap(), 15.0);
    let gpu_ms: f64 = profile.iter().map(|e| e[1].as_f64().unwrap()).sum();
    assert!(
        gpu_ms > 0.0 && gpu_ms <= p["max_ms"].as_f64().unwrap() * 1.05,
        "{gpu_ms} ms of GPU time in a pass of {}",
        p["max_ms"]
    );
}

#[test]
fn the_attention_figure_exports_in_the_colormap_it_was_drawn_in() {
    let dir = TempDir::new("colormap");
    let model = tiny("llama-gguf/tiny-llama-q4_1.gguf");
    let svg = |cm: &str| -> String {
        let out = dir.path().join(format!("att-{cm}.svg"));
        let o = prism(&[
            "run",
            model.to_str().unwrap(),
            "--ids",
            "1,2,3,4,5",
            "--backend",
            "cpu",
            "--figure",
            out.to_str().unwrap(),
            "--figure-view",
            "attention",
            "--colormap",
            cm,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let data: String = std::fs::read_to_string(out.with_extension("json"))
            .unwrap()
            .split_whitespace()
            .collect();
        assert!(data.contains(&format!("\"colormap\":\"{cm}\"")), "{data}");
        std::fs::read_to_string(&out).unwrap().to_uppercase()
    };
    // The causal map's zeros: viridis' dark purple, or white in grays.
    let (viridis, grays) = (svg("viridis"), svg("grays"));
    assert!(viridis.contains("#440154"), "viridis");
    assert!(
        grays.contains("#FFFFFF") && !grays.contains("#440154"),
        "grays"
    );
    let o = prism(&[
        "run",
        model.to_str().unwrap(),
        "--ids",
        "1,2",
        "--figure",
        "/tmp/x.svg",
        "--figure-view",
        "attention",
        "--colormap",
        "jet",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_steered_generation_figure_says_what_steered_it() {
    let dir = TempDir::new("steer-title");
    let cvec = fixtures().join("interventions/smollm2_cvec_happy_sad_L15.gguf");
    let title = |extra: &[&str]| -> String {
        let out = dir.path().join(format!("g{}.svg", extra.len()));
        let mut args = vec![
            "generate",
            "smollm2",
            "--prompt",
            "I feel",
            "--max-tokens",
            "2",
            "--backend",
            "cpu",
            "--figure",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        sample("smollm2");
        let o = prism(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let data: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap())
                .unwrap();
        data["title"].as_str().unwrap().to_string()
    };
    assert!(title(&[]).starts_with("Generation:"));
    let steered = title(&[
        "--control-vector",
        cvec.to_str().unwrap(),
        "--control-scale=4",
    ]);
    assert_eq!(
        steered,
        "Steered generation: steer: smollm2_cvec_happy_sad_L15.gguf (× 4.0)"
    );
}

#[test]
fn gui_view_settings_are_checked_before_a_window_opens() {
    for (arg, want) in [
        ("nope.sae=x", "unknown view \"nope\""),
        (
            "features.nope=1",
            "view \"features\" has no setting \"nope\"",
        ),
        ("features", "expected VIEW.FIELD=VALUE"),
    ] {
        let out = prism(&["gui", "--set", arg, "--backend", "cpu"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--set {arg}: {err}");
        assert!(
            err.contains(want),
            "--set {arg}: expected {want:?} in {err}"
        );
    }
}
