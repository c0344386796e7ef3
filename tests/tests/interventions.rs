//! Generation, activation patching, head ablation, single interventions and llama.cpp control
//! vectors against PyTorch + transformers (tests/fixtures/interventions/README.md), through the
//! CLI contract that README states, with its tolerances. The tiny Llama runs every case on the
//! CPU and on the GPU; SmolLM2 runs a spread of cases on the CPU (all of them:
//! `scripts/check_interventions.py`).

use std::path::{Path, PathBuf};

use prism_tests::*;
use serde_json::Value;

const TOL_P: f64 = 0.01;
const TOL_ENTROPY: f64 = 0.01;
const TOL_EFFECT: f64 = 0.02;
const TOL_METRIC: f64 = 0.01;
const TOL_DELTA_BITS: f64 = 0.02;
const TOL_BASELINE_BITS: f64 = 0.05;
const TOL_SURPRISAL: f64 = 0.01;

fn fixture(name: &str) -> PathBuf {
    fixtures().join("interventions").join(name)
}

fn ids_arg(v: &Value) -> String {
    u32s(v)
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The largest difference between two equally shaped nested arrays, or None when the shapes differ.
fn grid_diff(a: &Value, b: &Value) -> Option<f64> {
    let (a, b) = (a.as_array()?, b.as_array()?);
    if a.len() != b.len() {
        return None;
    }
    let mut worst = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        worst = worst.max(match (x, y) {
            (Value::Array(_), _) => grid_diff(x, y)?,
            _ => (x.as_f64()? - y.as_f64()?).abs(),
        });
    }
    Some(worst)
}

/// One model block of a reference file, checked through the CLI.
struct Checker<'a> {
    block: &'a Value,
    model: String,
    backend: &'a str,
    tokenized: bool,
    failures: Vec<String>,
}

impl<'a> Checker<'a> {
    fn new(block: &'a Value, model: &Path, backend: &'a str) -> Checker<'a> {
        Checker {
            block,
            model: model.display().to_string(),
            backend,
            tokenized: block["model"]["has_tokenizer"].as_bool().unwrap(),
            failures: Vec::new(),
        }
    }

    fn run(&self, mut args: Vec<String>) -> Value {
        args.extend(["--backend".into(), self.backend.into(), "--json".into()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        json_of(&refs)
    }

    fn fail(&mut self, case: &str, what: String) {
        self.failures.push(format!("{case}: {what}"));
    }

    fn cases(&self, kind: &str, names: Option<&[&str]>) -> Vec<Value> {
        self.block[kind]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| names.is_none_or(|n| n.contains(&c["name"].as_str().unwrap())))
            .cloned()
            .collect()
    }

    fn generation(&mut self, names: Option<&[&str]>) -> usize {
        let cases = self.cases("generation", names);
        for case in &cases {
            let name = case["name"].as_str().unwrap();
            let mut args: Vec<String> = vec![
                "generate".into(),
                self.model.clone(),
                "--max-tokens".into(),
                case["max_new_tokens"].to_string(),
                "--temperature".into(),
                "0".into(),
            ];
            if self.tokenized {
                args.extend(["--prompt".into(), case["prompt"].as_str().unwrap().into()]);
                if case["chat"].as_bool() == Some(true) {
                    args.push("--chat".into());
                }
            } else {
                args.extend(["--ids".into(), ids_arg(&case["prompt_ids"])]);
            }
            if let Value::Object(cv) = &case["control_vector"] {
                args.push("--control-vector".into());
                args.push(fixture(cv["file"].as_str().unwrap()).display().to_string());
                args.push(format!("--control-scale={}", cv["scale"]));
            }
            let out = self.run(args);
            if out["prompt_ids"] != case["prompt_ids"] {
                self.fail(name, format!("prompt ids {}", out["prompt_ids"]));
            }
            let got: Vec<u32> = out["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_u64().unwrap() as u32)
                .collect();
            if got != u32s(&case["generated_ids"]) {
                self.fail(name, format!("generated {got:?}"));
            }
            if out["stop_reason"] != case["stop_reason"] {
                self.fail(name, format!("stop reason {}", out["stop_reason"]));
            }
            for (g, r) in out["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .zip(case["tokens"].as_array().unwrap())
            {
                let dp = (g["p"].as_f64().unwrap() - r["p"].as_f64().unwrap()).abs();
                let de = (g["entropy_bits"].as_f64().unwrap()
                    - r["entropy_bits"].as_f64().unwrap())
                .abs();
                if dp > TOL_P || de > TOL_ENTROPY {
                    self.fail(
                        name,
                        format!("token {}: p off by {dp}, entropy by {de}", r["id"]),
                    );
                }
            }
            if self.tokenized && out["text"] != case["text"] {
                self.fail(name, format!("text {}", out["text"]));
            }
        }
        cases.len()
    }

    fn patching(&mut self, sites: &[&str]) -> usize {
        let mut n = 0;
        for case in self.cases("patching", None) {
            for &site in sites {
                let name = format!("{}/{site}", case["name"].as_str().unwrap());
                let mut args: Vec<String> = vec!["patch".into(), self.model.clone()];
                if self.tokenized {
                    for key in ["clean", "corrupt", "answer", "wrong"] {
                        args.push(format!("--{key}"));
                        args.push(case[key].as_str().unwrap().into());
                    }
                } else {
                    for key in ["clean", "corrupt"] {
                        args.push(format!("--{key}-ids"));
                        args.push(ids_arg(&case[format!("{key}_ids")]));
                    }
                    for key in ["answer", "wrong"] {
                        args.push(format!("--{key}-id"));
                        args.push(case[format!("{key}_id")].to_string());
                    }
                }
                args.extend(["--site".into(), site.into()]);
                let out = self.run(args);
                if out["site"] != site {
                    self.fail(&name, format!("site {}", out["site"]));
                }
                for key in ["clean_metric", "corrupt_metric"] {
                    let d = (out[key].as_f64().unwrap() - case[key].as_f64().unwrap()).abs();
                    if d > TOL_METRIC {
                        self.fail(&name, format!("{key} off by {d}"));
                    }
                }
                match grid_diff(&out["effect"], &case["grids"][site]["effect"]) {
                    None => self.fail(&name, "effect grid has the wrong shape".into()),
                    Some(d) if d > TOL_EFFECT => self.fail(&name, format!("effect off by {d}")),
                    _ => {}
                }
                n += 1;
            }
        }
        n
    }

    fn ablation(&mut self, modes: &[&str]) -> usize {
        let mut n = 0;
        for case in self.cases("ablation", None) {
            for &mode in modes {
                let mut args: Vec<String> = vec![
                    "ablate".into(),
                    self.model.clone(),
                    "--mode".into(),
                    mode.into(),
                ];
                if self.tokenized {
                    args.extend(["--text".into(), case["text"].as_str().unwrap().into()]);
                } else {
                    args.extend(["--ids".into(), ids_arg(&case["ids"])]);
                }
                let out = self.run(args);
                let d = (out["baseline_bits"].as_f64().unwrap()
                    - case["baseline_bits"].as_f64().unwrap())
                .abs();
                if d > TOL_BASELINE_BITS {
                    self.fail(mode, format!("baseline off by {d}"));
                }
                match grid_diff(&out["delta_bits"], &case[mode]["delta_bits"]) {
                    None => self.fail(mode, "delta_bits grid has the wrong shape".into()),
                    Some(d) if d > TOL_DELTA_BITS => {
                        self.fail(mode, format!("delta_bits off by {d}"))
                    }
                    _ => {}
                }
                n += 1;
            }
        }
        n
    }

    fn interventions(&mut self) -> usize {
        let cases = self.cases("interventions", None);
        let dir = TempDir::new("interventions");
        for case in &cases {
            let name = case["name"].as_str().unwrap();
            let file = dir.path().join(format!("{name}.json"));
            std::fs::write(&file, case["interventions"].to_string()).unwrap();
            let mut args: Vec<String> = vec![
                "run".into(),
                self.model.clone(),
                "--interventions".into(),
                file.display().to_string(),
            ];
            if self.tokenized {
                args.extend(["--text".into(), case["text"].as_str().unwrap().into()]);
            } else {
                args.extend(["--ids".into(), ids_arg(&case["ids"])]);
            }
            let out = self.run(args);
            let ids: Vec<u32> = out["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_u64().unwrap() as u32)
                .collect();
            if ids != u32s(&case["ids"]) {
                self.fail(name, format!("ids {ids:?}"));
            }
            let got = out["surprisal_bits"].as_array().unwrap();
            if !got[0].is_null() {
                self.fail(name, "surprisal_bits must start with null".into());
            }
            let got = Value::Array(got[1..].to_vec());
            match grid_diff(&got, &case["surprisal_bits"]) {
                None => self.fail(name, "surprisal has the wrong length".into()),
                Some(d) if d > TOL_SURPRISAL => self.fail(name, format!("surprisal off by {d}")),
                _ => {}
            }
        }
        cases.len()
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} on {}:\n{}",
            self.model,
            self.backend,
            self.failures.join("\n")
        );
    }
}

fn tiny_block() -> Value {
    read_json(&fixture("tiny_llama_interventions.json"))["models"]["tiny_llama"].clone()
}

fn smollm2_block() -> Value {
    read_json(&fixture("smollm2_interventions.json"))["models"]["smollm2"].clone()
}

fn tiny_every_case(backend: &str) {
    let block = tiny_block();
    let mut c = Checker::new(&block, &tiny("llama"), backend);
    assert_eq!(c.generation(None), 6);
    assert_eq!(c.patching(&["resid_pre", "attn_out", "mlp_out", "head"]), 4);
    assert_eq!(c.ablation(&["zero", "mean"]), 2);
    assert_eq!(c.interventions(), 5);
    c.finish();
}

#[test]
fn tiny_llama_every_case_matches_transformers_on_cpu() {
    tiny_every_case("cpu");
}

#[test]
fn tiny_llama_every_case_matches_transformers_on_gpu() {
    let _ = gpu();
    tiny_every_case("gpu");
}

#[test]
fn smollm2_greedy_generation_plain_chat_and_steered_matches_transformers() {
    sample("smollm2");
    let block = smollm2_block();
    let mut c = Checker::new(&block, Path::new("smollm2"), "cpu");
    let names = [
        "raw_life",
        "raw_life_steer+40",
        "raw_park_steer-60",
        "chat_capital",
        "chat_photosynthesis_steer-60",
    ];
    assert_eq!(c.generation(Some(&names)), names.len());
    c.finish();
}

#[test]
fn smollm2_patching_grids_match_transformers() {
    sample("smollm2");
    let block = smollm2_block();
    let mut c = Checker::new(&block, Path::new("smollm2"), "cpu");
    // Two pairs x two sites here; the other sites are the same code path, checked on tiny.
    assert_eq!(c.patching(&["resid_pre", "head"]), 4);
    c.finish();
}

#[test]
fn smollm2_zero_ablation_and_single_interventions_match_transformers() {
    sample("smollm2");
    let block = smollm2_block();
    let mut c = Checker::new(&block, Path::new("smollm2"), "cpu");
    assert_eq!(c.ablation(&["zero"]), 1);
    assert_eq!(c.interventions(), 5);
    c.finish();
}

/// Reads a control vector GGUF through the CLI-independent library, as a map N -> values.
fn directions(path: &Path, hidden: usize) -> std::collections::BTreeMap<usize, Vec<f32>> {
    prism_analysis::steering::ControlVector::load(path, hidden)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .directions
}

fn assert_directions_match(
    got: &std::collections::BTreeMap<usize, Vec<f32>>,
    want: &Value,
    tol: f64,
) {
    let want = want["directions"].as_object().unwrap();
    assert_eq!(got.len(), want.len(), "number of directions");
    for (name, values) in want {
        let n: usize = name.trim_start_matches("direction.").parse().unwrap();
        let g = got.get(&n).unwrap_or_else(|| panic!("{name} missing"));
        let d = max_abs_diff(&as_f64(g), &f64s(values));
        assert!(d <= tol, "{name} differs by {d}");
    }
}

#[test]
fn smollm2_control_vector_from_prompt_files_matches_cvector_generator_mean() {
    sample("smollm2");
    let dir = TempDir::new("cvec");
    let out = dir.path().join("happy_sad.gguf");
    let positive = fixture("smollm2_cvec_happy_sad_positive.txt");
    let negative = fixture("smollm2_cvec_happy_sad_negative.txt");
    let json = json_of(&[
        "steer",
        "smollm2",
        "--positive",
        positive.to_str().unwrap(),
        "--negative",
        negative.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--backend",
        "cpu",
        "--json",
    ]);
    assert_eq!(json["directions"].as_array().unwrap().len(), 29);
    assert_eq!(json["model_hint"], "llama");
    let want = read_json(&fixture("smollm2_cvec_happy_sad.json"));
    assert_directions_match(&directions(&out, 576), &want, 1e-4);
    // The reference file itself reads back as exactly its JSON values.
    assert_directions_match(
        &directions(&fixture("smollm2_cvec_happy_sad.gguf"), 576),
        &want,
        1e-7,
    );
}

#[test]
fn tiny_control_vector_from_id_pairs_matches_cvector_generator_mean() {
    use prism_analysis::backend::cpu::CpuBackend;
    let model = load(&tiny("llama"));
    let block = tiny_block();
    let cv = &block["control_vectors"][0];
    let lists = |k: &str| -> Vec<Vec<u32>> { cv[k].as_array().unwrap().iter().map(u32s).collect() };
    let backend = CpuBackend::new(&model).unwrap();
    let got = prism_analysis::steering::mean_difference(
        &model,
        &backend,
        &lists("positive_ids"),
        &lists("negative_ids"),
        cv["pad_id"].as_u64().unwrap() as u32,
    )
    .unwrap();
    let want = read_json(&fixture("tiny_llama_cvec_ids_a_b.json"));
    assert_directions_match(&got.directions, &want, 1e-5);
    // What Prism writes, llama.cpp reads: the same directions and cvector-generator's keys.
    let dir = TempDir::new("cvec-tiny");
    let path = dir.path().join("v.gguf");
    got.save(&path).unwrap();
    assert_directions_match(&directions(&path, 64), &want, 1e-5);
    let file = prism_analysis::gguf::open(&path).unwrap();
    let meta = file.meta();
    assert_eq!(meta.str("general.architecture"), Some("controlvector"));
    assert_eq!(meta.str("controlvector.model_hint"), Some("llama"));
    assert_eq!(meta.u64_opt("controlvector.layer_count").unwrap(), Some(1));
}

/// Runs prism, expects it to fail, and returns its error output.
fn error_of(args: &[&str]) -> String {
    let out = prism(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "prism {args:?} succeeded");
    assert!(!err.contains("panicked"), "prism {args:?} panicked: {err}");
    err
}

#[test]
fn impossible_experiments_are_refused_with_the_reason() {
    let llama = tiny("llama");
    let m = llama.to_str().unwrap();
    let dir = TempDir::new("bad-iv");
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ids = ["--ids", "1,2,3,4"];
    let run_with = |path: String| -> String {
        error_of(&["run", m, ids[0], ids[1], "--interventions", &path])
    };
    // Layer, head and position out of range; a vector of the wrong size; bad JSON.
    let e = run_with(file(
        "l.json",
        r#"[{"site":"resid_pre","layer":2,"op":"zero"}]"#,
    ));
    assert!(e.contains("layer 2") && e.contains("0..1"), "{e}");
    let e = run_with(file(
        "h.json",
        r#"[{"site":"head","layer":0,"head":4,"op":"zero"}]"#,
    ));
    assert!(e.contains("head 4"), "{e}");
    let e = run_with(file(
        "p.json",
        r#"[{"site":"mlp_out","layer":0,"op":"zero","positions":[4]}]"#,
    ));
    assert!(e.contains("position 4"), "{e}");
    let e = run_with(file(
        "v.json",
        r#"[{"site":"resid_post","layer":0,"op":"add","vector":[1,2,3]}]"#,
    ));
    assert!(e.contains("3 values") && e.contains("64"), "{e}");
    let e = run_with(file(
        "j.json",
        "[\n{\"site\":\"resid_pre\",\"layer\":0,\n\"op\":\"double\"}]",
    ));
    assert!(e.contains("line 3") && e.contains("[0].op"), "{e}");

    // Patching prompts of different lengths, and answers that are not one token.
    let e = error_of(&[
        "patch",
        m,
        "--clean-ids",
        "1,2,3",
        "--corrupt-ids",
        "1,2",
        "--answer-id",
        "5",
        "--wrong-id",
        "6",
    ]);
    assert!(
        e.contains("3") && e.contains("2") && e.contains("length"),
        "{e}"
    );
    sample("smollm2");
    let e = error_of(&[
        "patch",
        "smollm2",
        "--clean",
        "The Eiffel Tower is in the city of",
        "--corrupt",
        "The Colosseum is in the city of",
        "--answer",
        " Parisian",
        "--wrong",
        " Rome",
    ]);
    assert!(e.contains("Parisian") && e.contains("2 tokens"), "{e}");

    // A control vector made for another model, and a chat template the model does not have.
    let cvec = fixture("smollm2_cvec_happy_sad_L15.gguf");
    let e = error_of(&[
        "generate",
        m,
        "--ids",
        "1,2,3",
        "--control-vector",
        cvec.to_str().unwrap(),
    ]);
    assert!(e.contains("576") && e.contains("64"), "{e}");
    let e = error_of(&["generate", m, "--ids", "1,2", "--chat"]);
    assert!(e.contains("chat"), "{e}");
    // Encoders do not generate.
    let bert = tiny("bert");
    let e = error_of(&["generate", bert.to_str().unwrap(), "--ids", "1,2"]);
    assert!(e.contains("encoder"), "{e}");
}

/// `prism ablate --experts` on the Qwen3-MoE fixture: the cell of layer 0's most used expert is
/// transformers' total surprisal with that expert's routing weight zeroed minus the plain total
/// (reference.json's `ablate_expert`) within 0.01 bits, on the CPU and the GPU; `prism run --experts` on the same
/// file and an interventions file forcing the routing of one token says which experts ran.
#[test]
fn expert_ablation_and_forced_routing_match_transformers() {
    let dir = fixtures().join("archs/qwen3moe");
    let reference = read_json(&dir.join("reference.json"));
    let seq = &reference["sequences"]["seq33"];
    let ids = ids_arg(&seq["input_ids"]);
    let total = |v: &Value| f64s(v).iter().filter(|x| x.is_finite()).sum::<f64>();
    let ab = &seq["ablate_expert"];
    let expert = ab["expert"].as_u64().unwrap() as usize;
    let want = total(&ab["surprisal_bits"]) - total(&seq["surprisal_bits"]);
    let m = dir.to_str().unwrap();
    for backend in ["cpu", "gpu"] {
        let r = json_of(&[
            "ablate",
            m,
            "--ids",
            &ids,
            "--experts",
            "--json",
            "--backend",
            backend,
        ]);
        assert_eq!(r["unit"], "expert");
        assert_eq!(r["layers"], serde_json::json!([0, 1]));
        let got = r["delta_bits"][0][expert].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 0.01,
            "{backend}: expert {expert} ablated: Δ {got} bits, transformers {want}"
        );
        assert!(got.abs() > 0.01, "{backend}: the ablation changed nothing");
    }
    // Forcing token 5 of layer 1 onto expert 6 alone, weight 1.
    let tmp = TempDir::new("force-route");
    let f = tmp.path().join("force.json");
    let mut v = vec![0.0; 8];
    v[6] = 1.0;
    std::fs::write(
        &f,
        serde_json::json!([{"site": "expert", "layer": 1, "positions": [5], "op": "set", "vector": v}])
            .to_string(),
    )
    .unwrap();
    let plain = json_of(&[
        "run",
        m,
        "--ids",
        &ids,
        "--experts",
        "--json",
        "--backend",
        "cpu",
    ]);
    let forced = json_of(&[
        "run",
        m,
        "--ids",
        &ids,
        "--experts",
        "--json",
        "--backend",
        "cpu",
        "--interventions",
        f.to_str().unwrap(),
    ]);
    assert_eq!(
        forced["experts"][1][5],
        serde_json::json!([{"expert": 6, "weight": 1.0}])
    );
    assert_eq!(forced["experts"][1][4], plain["experts"][1][4]);
    assert_eq!(forced["experts"][0], plain["experts"][0]);
    // The router's own probabilities are reported unchanged; the surprisal after token 5 moves.
    assert_eq!(forced["router_probs"][1][5], plain["router_probs"][1][5]);
    assert_eq!(forced["surprisal_bits"][5], plain["surprisal_bits"][5]);
    assert_ne!(forced["surprisal_bits"][6], plain["surprisal_bits"][6]);
}
