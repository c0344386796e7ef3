//! Malformed checkpoints and inputs: every case must end with exit code 2 and one line on stderr
//! that names the problem, within 5 seconds and 1 GB of address space, and never panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prism_tests::badfiles::*;
use prism_tests::*;

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

/// Runs prism under a 1 GiB address-space limit, killing it after 5 seconds.
fn prism_limited(args: &[&str]) -> Outcome {
    prism_limited_env(args, &[])
}

fn prism_limited_env(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576; exec \"$0\" \"$@\"")
        .arg(prism_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            use std::io::Read;
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            return Outcome {
                code: status.code(),
                stderr,
            };
        }
        if start.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("prism {args:?} ran longer than 5 seconds");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[track_caller]
fn expect_bad(args: &[&str], needle: &str) {
    expect_bad_env(args, &[], needle)
}

#[track_caller]
fn expect_bad_env(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let o = prism_limited_env(args, env);
    assert_eq!(
        o.code,
        Some(2),
        "prism {args:?}: exit {:?}, stderr: {}",
        o.code,
        o.stderr
    );
    assert!(
        !o.stderr.contains("panicked") && !o.stderr.contains("internal error"),
        "prism {args:?} panicked: {}",
        o.stderr
    );
    let lines: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| !l.starts_with("prism: warning"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "prism {args:?}: expected one line, got: {}",
        o.stderr
    );
    assert!(
        o.stderr.to_lowercase().contains(&needle.to_lowercase()),
        "prism {args:?}: {:?} not in {}",
        needle,
        o.stderr
    );
}

fn info_and_run(path: &Path, needle: &str) {
    let p = path.to_str().expect("utf-8 path");
    expect_bad(&["info", p], needle);
    expect_bad(&["run", p, "--ids", "1,2,3"], needle);
}

fn gguf_case(dir: &Path, name: &str, edit: impl FnOnce(&mut GgufBuilder)) -> PathBuf {
    let mut b = GgufBuilder::tiny_llama();
    edit(&mut b);
    let path = dir.join(format!("{name}.gguf"));
    b.write(&path);
    path
}

#[test]
fn the_raw_gguf_builder_makes_a_loadable_model() {
    // The malformed cases below are each one edit away from this file, which must load and run.
    let dir = TempDir::new("gguf-ok");
    let path = gguf_case(dir.path(), "ok", |_| {});
    let out = prism(&["run", path.to_str().unwrap(), "--ids", "1,2,3", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn broken_gguf_headers() {
    let dir = TempDir::new("gguf-bad");
    let d = dir.path();
    std::fs::write(d.join("empty.gguf"), b"").unwrap();
    info_and_run(&d.join("empty.gguf"), "0 bytes");
    info_and_run(
        &gguf_case(d, "magic", |b| b.magic = *b"GGUX"),
        "not a GGUF file",
    );
    info_and_run(&gguf_case(d, "version", |b| b.version = 99), "version 99");
    info_and_run(
        &gguf_case(d, "count", |b| b.tensor_count = Some(1 << 40)),
        "more than",
    );
    info_and_run(
        &gguf_case(d, "kvcount", |b| b.kv_count = Some(u64::MAX)),
        "more than",
    );
    info_and_run(
        &gguf_case(d, "strlen", |b| {
            b.set("general.name", Kv::StrLen(u64::MAX / 2))
        }),
        "string",
    );
    info_and_run(
        &gguf_case(d, "strpast", |b| b.set("general.name", Kv::StrLen(1 << 20))),
        "truncated",
    );
    info_and_run(
        &gguf_case(d, "array", |b| {
            b.set("tokenizer.ggml.tokens", Kv::ArrayClaim(8, 1 << 29))
        }),
        "array elements",
    );
    info_and_run(
        &gguf_case(d, "arraytype", |b| b.set("x", Kv::ArrayClaim(77, 1))),
        "unknown array element type",
    );
    info_and_run(
        &gguf_case(d, "align", |b| b.set("general.alignment", Kv::U32(0))),
        "alignment",
    );
}

#[test]
fn broken_gguf_tensors() {
    let dir = TempDir::new("gguf-tensors");
    let d = dir.path();
    info_and_run(
        &gguf_case(d, "overflow", |b| b.tensors[0].ne = vec![u64::MAX / 2, 4]),
        "overflow",
    );
    info_and_run(
        &gguf_case(d, "huge", |b| b.tensors[0].ne = vec![1 << 20, 1 << 20]),
        "past the end",
    );
    info_and_run(
        &gguf_case(d, "dtype", |b| b.tensors[1].ty = 99),
        "unknown ggml type 99",
    );
    info_and_run(
        &gguf_case(d, "offset", |b| b.tensors[2].offset = 1 << 40),
        "past the end",
    );
    info_and_run(
        &gguf_case(d, "misaligned", |b| b.tensors[2].offset += 4),
        "aligned",
    );
    info_and_run(
        &gguf_case(d, "overlap", |b| {
            b.tensors[3].offset = b.tensors[2].offset;
        }),
        "overlap",
    );
    info_and_run(
        &gguf_case(d, "dup", |b| b.tensors[3].name = b.tensors[2].name.clone()),
        "twice",
    );
    info_and_run(
        &gguf_case(d, "dims", |b| b.tensors[0].ne = vec![1, 1, 1, 1, 1]),
        "dimensions",
    );
    info_and_run(
        &gguf_case(d, "shape", |b| b.tensors[2].ne = vec![32, 16]),
        "expected shape [32, 32]",
    );
    info_and_run(
        &gguf_case(d, "missing", |b| {
            b.tensors.remove(4);
        }),
        "attn_v.weight",
    );
}

#[test]
fn broken_gguf_metadata() {
    let dir = TempDir::new("gguf-meta");
    let d = dir.path();
    info_and_run(
        &gguf_case(d, "arch", |b| {
            b.set("general.architecture", Kv::Str("mamba".into()))
        }),
        "unsupported architecture",
    );
    info_and_run(
        &gguf_case(d, "noarch", |b| {
            b.kvs.retain(|(k, _)| k != "general.architecture")
        }),
        "general.architecture",
    );
    info_and_run(
        &gguf_case(d, "nolayers", |b| {
            b.kvs.retain(|(k, _)| k != "llama.block_count")
        }),
        "llama.block_count",
    );
    info_and_run(
        &gguf_case(d, "absurd", |b| {
            b.set("llama.embedding_length", Kv::U64(1 << 40))
        }),
        "hidden size",
    );
    info_and_run(
        &gguf_case(d, "heads", |b| {
            b.set("llama.attention.head_count_kv", Kv::U32(3))
        }),
        "kv heads",
    );
    info_and_run(
        &gguf_case(d, "zero", |b| b.set("llama.block_count", Kv::U32(0))),
        "layers is 0",
    );
    info_and_run(
        &gguf_case(d, "eps", |b| {
            b.set(
                "llama.attention.layer_norm_rms_epsilon",
                Kv::Str("x".into()),
            )
        }),
        "expected a float",
    );
    info_and_run(
        &gguf_case(d, "tok", |b| {
            b.set("tokenizer.ggml.model", Kv::Str("t5".into()))
        }),
        "tokenizer model",
    );
    info_and_run(
        &gguf_case(d, "merges", |b| {
            b.set("tokenizer.ggml.model", Kv::Str("gpt2".into()));
            b.set(
                "tokenizer.ggml.tokens",
                Kv::StrArray(vec!["a".into(), "b".into()]),
            );
            b.set("tokenizer.ggml.merges", Kv::StrArray(vec!["a b c".into()]));
        }),
        "merge 0",
    );
}

#[test]
fn truncated_real_files() {
    let dir = TempDir::new("trunc");
    let d = dir.path();
    let gguf = tiny("llama-gguf/tiny-llama-q4_1.gguf");
    let len = std::fs::metadata(&gguf).unwrap().len() as usize;
    for (i, keep) in [3, 30, 2000, len / 2, len - 1].into_iter().enumerate() {
        let p = d.join(format!("t{i}.gguf"));
        truncated_copy(&gguf, &p, keep);
        let needle = if keep < 4 { "bytes long" } else { "" };
        info_and_run(&p, needle);
    }
    for (i, keep) in [5usize, 100, 50_000].into_iter().enumerate() {
        let folder = d.join(format!("st{i}"));
        copy_dir(&tiny("llama"), &folder);
        truncated_copy(
            &tiny("llama/model.safetensors"),
            &folder.join("model.safetensors"),
            keep,
        );
        info_and_run(&folder, "safetensors");
    }
}

#[test]
fn broken_safetensors_and_folders() {
    let dir = TempDir::new("st-bad");
    let d = dir.path();
    let folder = |name: &str| -> PathBuf {
        let f = d.join(name);
        copy_dir(&tiny("llama"), &f);
        f
    };
    // A header length larger than the file.
    let f = folder("header");
    let mut bytes = std::fs::read(f.join("model.safetensors")).unwrap();
    bytes[..8].copy_from_slice(&(1u64 << 50).to_le_bytes());
    std::fs::write(f.join("model.safetensors"), &bytes).unwrap();
    info_and_run(&f, "header claims");
    // Garbage JSON header.
    let f = folder("garbage");
    let mut bytes = std::fs::read(f.join("model.safetensors")).unwrap();
    bytes[8..20].copy_from_slice(b"not json!!!!");
    std::fs::write(f.join("model.safetensors"), &bytes).unwrap();
    info_and_run(&f, "safetensors");
    // An integer dtype where a weight belongs.
    let f = folder("dtype");
    let tensors = prism_tests::synth::llama_tensors(
        prism_tests::synth::Dims {
            vocab: 512,
            hidden: 64,
            heads: 4,
            kv_heads: 2,
            inter: 160,
            layers: 2,
            context: 128,
        },
        1,
        false,
        false,
    );
    let views: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
    drop(views);
    let mut raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.shape.clone(),
                t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    raw[1].2 = raw[1].2.iter().map(|_| 1u8).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = raw
        .iter()
        .enumerate()
        .map(|(i, (n, s, b))| {
            let dtype = if i == 1 {
                safetensors::Dtype::I32
            } else {
                safetensors::Dtype::F32
            };
            (
                n.clone(),
                safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &f.join("model.safetensors")).unwrap();
    info_and_run(&f, "dtype");
    // Wrong shapes: the config says something else than the tensors.
    let f = folder("shape");
    let cfg = std::fs::read_to_string(f.join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 160", "\"intermediate_size\": 128");
    std::fs::write(f.join("config.json"), cfg).unwrap();
    info_and_run(&f, "expected shape");
    // Missing, garbage and hostile configs.
    let f = folder("noconfig");
    std::fs::remove_file(f.join("config.json")).unwrap();
    info_and_run(&f, "no config.json");
    let f = folder("badconfig");
    std::fs::write(f.join("config.json"), "{ this is not json").unwrap();
    info_and_run(&f, "invalid JSON");
    let f = folder("arch");
    std::fs::write(
        f.join("config.json"),
        r#"{"model_type": "mamba", "architectures": ["MambaForCausalLM"]}"#,
    )
    .unwrap();
    info_and_run(&f, "unsupported architecture mamba");
    let f = folder("fields");
    std::fs::write(
        f.join("config.json"),
        r#"{"model_type": "llama", "hidden_size": 64}"#,
    )
    .unwrap();
    info_and_run(&f, "missing field");
    let f = folder("absurd");
    let cfg = std::fs::read_to_string(f.join("config.json"))
        .unwrap()
        .replace("\"hidden_size\": 64", "\"hidden_size\": 1000000000000");
    std::fs::write(f.join("config.json"), cfg).unwrap();
    info_and_run(&f, "hidden size");
    let f = folder("rope");
    let cfg = std::fs::read_to_string(f.join("config.json"))
        .unwrap()
        .replace("\"rope_type\": \"default\"", "\"rope_type\": \"yarn\"");
    std::fs::write(f.join("config.json"), cfg).unwrap();
    info_and_run(&f, "yarn");
    // A garbage tokenizer next to good weights.
    let f = folder("tok");
    std::fs::write(f.join("tokenizer.json"), "[1, 2, 3]").unwrap();
    info_and_run(&f, "tokenizer.json");
    // Found by fuzzing (fuzz/corpus regression): the tokenizers crate panicked on this file.
    let f = folder("tok-panic");
    std::fs::write(
        f.join("tokenizer.json"),
        include_str!("../fixtures/regressions/tokenizer-decoder-panic.json"),
    )
    .unwrap();
    info_and_run(&f, "tokenizer.json");
    // A shard index that points outside its folder.
    let f = folder("escape");
    std::fs::write(
        f.join("model.safetensors.index.json"),
        r#"{"weight_map": {"a": "../../etc/passwd"}}"#,
    )
    .unwrap();
    info_and_run(&f, "not a plain file name");
}

#[test]
fn pickles_are_refused_with_a_conversion_hint() {
    let dir = TempDir::new("pickle");
    let d = dir.path();
    for name in ["pytorch_model.bin", "model.pt", "weights.pth"] {
        std::fs::write(d.join(name), b"\x80\x02}q\x00.").unwrap();
        info_and_run(&d.join(name), "safetensors");
    }
    // A folder of pickles only.
    let f = d.join("hf");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(f.join("config.json"), "{}").unwrap();
    std::fs::write(f.join("pytorch_model.bin"), b"\x80\x02").unwrap();
    info_and_run(&f, "pickle");
    // Unknown content.
    std::fs::write(d.join("notes.txt"), b"hello world").unwrap();
    info_and_run(&d.join("notes.txt"), "not a recognised checkpoint");
    info_and_run(&d.join("does-not-exist.gguf"), "no such file");
}

#[test]
fn bad_text_and_ids() {
    let gguf = tiny("llama-gguf/tiny-llama-f32.gguf");
    let g = gguf.to_str().unwrap();
    expect_bad(&["run", g, "--text", ""], "empty");
    let long = "ab ".repeat(400);
    expect_bad(&["run", g, "--text", &long], "context is 128 tokens");
    expect_bad(
        &["run", g, "--ids", "1,2,9999"],
        "outside the model's vocabulary",
    );
    expect_bad(
        &["run", g, "--file", "/nonexistent/prism/input.txt"],
        "input.txt",
    );
    let bert = tiny("bert");
    expect_bad(&["run", bert.to_str().unwrap(), "--ids", "1,2"], "encoder");
    expect_bad(
        &["run", tiny("llama").to_str().unwrap(), "--text", "hello"],
        "no tokenizer",
    );
    // Usage errors come from clap: exit 2 with its own short help.
    let o = prism_limited(&["run", g, "--text", "x", "--backend", "tpu"]);
    assert_eq!(o.code, Some(2));
    assert!(o.stderr.contains("unknown backend \"tpu\""), "{}", o.stderr);
    expect_bad(&["info", "no-such-model-name"], "not a sample model name");
}

#[test]
fn models_and_captures_that_do_not_fit_are_refused_before_allocating() {
    let gguf = tiny("llama-gguf/tiny-llama-f32.gguf");
    let g = gguf.to_str().unwrap();
    // The model: its weights plus the fixed overhead against what is available.
    expect_bad_env(
        &["run", g, "--ids", "1,2,3"],
        &[("PRISM_MEMORY_LIMIT", "100M")],
        "needs about 3",
    );
    let o = prism_limited_env(&["info", g], &[("PRISM_MEMORY_LIMIT", "100M")]);
    assert!(o.stderr.contains("is available"), "{}", o.stderr);
    // A capture: SmolLM2's attention maps for 2,000 tokens are 30 x 9 x 2000^2 x 4 bytes = 4.3 GB.
    sample("smollm2");
    let text = "word ".repeat(2000);
    expect_bad_env(
        &[
            "run",
            "smollm2",
            "--backend",
            "cpu",
            "--attention",
            "--text",
            &text,
        ],
        &[("PRISM_MEMORY_LIMIT", "1G")],
        "capture less",
    );
}

#[test]
fn metadata_that_would_change_the_function_is_implemented_or_refused_by_name() {
    use prism_analysis::gguf::Value;
    let dir = TempDir::new("arch-meta");
    let d = dir.path();
    // An i-quant Prism cannot decode: the type and the tensor are named, whether its rows fit
    // the type's blocks or not.
    info_and_run(
        &gguf_case(d, "iq2-short", |b| b.tensors[2].ty = 16),
        "\"blk.0.attn_q.weight\": row length 32 is not a multiple of IQ2_XXS's block size 256",
    );
    let mut wide = GgufBuilder::tiny_llama();
    wide.set("llama.embedding_length", Kv::U32(256));
    wide.set("llama.feed_forward_length", Kv::U32(256));
    let mut offset = 0u64;
    for t in &mut wide.tensors {
        for n in &mut t.ne {
            if *n == 32 || *n == 64 {
                *n = 256;
            }
        }
        if t.name == "blk.0.attn_q.weight" {
            t.ty = 16;
        }
        t.offset = offset;
        let elems: u64 = t.ne.iter().product();
        let bytes = if t.ty == 16 {
            elems / 256 * 66
        } else {
            elems * 4
        };
        offset += bytes.div_ceil(32) * 32;
    }
    wide.data_len = offset as usize;
    let p = d.join("iq2.gguf");
    wide.write(&p);
    info_and_run(
        &p,
        "\"blk.0.attn_q.weight\" has ggml type 16 (IQ2_XXS), which Prism cannot decode",
    );
    // A key of the architecture that Prism does not understand is refused, not ignored.
    info_and_run(
        &gguf_case(d, "expert", |b| b.set("llama.expert_count", Kv::U32(8))),
        "llama.expert_count",
    );
    // RoPE settings out of range.
    info_and_run(
        &gguf_case(d, "base", |b| b.set("llama.rope.freq_base", Kv::F32(-1.0))),
        "freq_base",
    );
    info_and_run(
        &gguf_case(d, "scaling", |b| {
            b.set("llama.rope.scaling.type", Kv::Str("linear".into()));
            b.set("llama.rope.scaling.factor", Kv::F32(0.0));
        }),
        "scaling.factor",
    );
    info_and_run(
        &gguf_case(d, "yarn", |b| {
            b.set("llama.rope.scaling.type", Kv::Str("yarn".into()))
        }),
        "yarn",
    );
    // Real llama.cpp files with one setting made inconsistent.
    let gemma3 = fixtures().join("archs/gemma3/gemma3-IQ4_NL.gguf");
    let bad = d.join("pattern.gguf");
    rewrite_gguf(&gemma3, &bad, |m| {
        set_meta(
            m,
            "gemma3.attention.sliding_window_pattern",
            Value::Array(vec![Value::Bool(true); 3]),
        )
    });
    info_and_run(&bad, "sliding_window_pattern has 3 entries");
    let bad = d.join("softcap.gguf");
    let gemma2 = std::fs::read_dir(fixtures().join("archs/gemma2"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "gguf"))
        .expect("a gemma2 GGUF fixture");
    rewrite_gguf(&gemma2, &bad, |m| {
        set_meta(m, "gemma2.attn_logit_softcapping", Value::F32(f32::NAN))
    });
    info_and_run(&bad, "attn_logit_softcapping");
    let bad = d.join("heads.gguf");
    rewrite_gguf(&gemma2, &bad, |m| {
        set_meta(m, "gemma2.attention.head_count_kv", Value::U32(3))
    });
    info_and_run(&bad, "head");
    let bad = d.join("tokenizer.gguf");
    rewrite_gguf(&gemma2, &bad, |m| {
        set_meta(m, "tokenizer.ggml.model", Value::String("rwkv".into()))
    });
    info_and_run(&bad, "tokenizer model");
}

/// The sample with its chat template replaced by `template`.
fn sample_with_template(dir: &Path, name: &str, template: &str) -> PathBuf {
    use prism_analysis::gguf::Value;
    let path = dir.join(format!("{name}.gguf"));
    rewrite_gguf(&sample("smollm2"), &path, |m| {
        set_meta(m, "tokenizer.chat_template", Value::String(template.into()))
    });
    path
}

#[test]
fn hostile_chat_templates_end_within_their_limits() {
    let dir = TempDir::new("templates");
    let d = dir.path();
    let cases = [
        // The issue's own: 10^10 iterations writing a byte each (the output ends it first) ...
        (
            "loops",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "output limit",
        ),
        // ... and writing nothing (the work limit ends it).
        (
            "silent-loops",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "work limit",
        ),
        (
            "recursion",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "recursed deeper",
        ),
        // Doubling a string in a namespace: 2^40 bytes if nothing stops it.
        (
            "doubling",
            "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
            "memory limit",
        ),
        ("repeat", "{{ 'x' * 100000000000 }}", "repeated string is too large"),
        (
            "output",
            "{% for i in range(100000) %}{{ messages[0].content * 40 }}{% endfor %}",
            "output limit",
        ),
        (
            "raises",
            "{{ raise_exception('Conversation roles must alternate') }}",
            "Conversation roles must alternate",
        ),
    ];
    for (name, template, needle) in cases {
        let p = sample_with_template(d, name, template);
        let p = p.to_str().unwrap();
        // Opening the file never runs the template.
        let o = prism_limited(&["info", p]);
        assert_eq!(o.code, Some(0), "info {name}: {}", o.stderr);
        let args = [
            "generate",
            p,
            "--prompt",
            "Hi",
            "--chat",
            "--max-tokens",
            "3",
        ];
        expect_bad(&args, needle);
        expect_bad(&args, "tokenizer.chat_template");
    }
    // A template over the size limit is refused without being read into memory.
    let big = format!("{{# {} #}}", "x".repeat(2 << 20));
    let p = sample_with_template(d, "huge", &big);
    expect_bad(
        &["generate", p.to_str().unwrap(), "--prompt", "Hi", "--chat"],
        "over the limit",
    );
}

#[test]
fn a_hostile_hf_chat_template_names_its_file() {
    let dir = TempDir::new("hf-template");
    let f = hf_copy(dir.path(), "llama3");
    std::fs::write(
        f.join("chat_template.jinja"),
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    )
    .unwrap();
    let p = f.to_str().unwrap();
    expect_bad(
        &["generate", p, "--prompt", "Hi", "--chat"],
        "chat_template.jinja",
    );
    expect_bad(
        &["generate", p, "--prompt", "Hi", "--chat"],
        "recursed deeper",
    );
}

/// The tiny llama3 folder (weights, config, tokenizer) without its GGUF files.
fn hf_copy(dir: &Path, arch: &str) -> PathBuf {
    let src = fixtures().join("archs").join(arch);
    let dst = dir.join(arch);
    std::fs::create_dir_all(&dst).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

/// Edits the folder's tokenizer.json as JSON.
fn edit_tokenizer(f: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = f.join("tokenizer.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
}

fn split_regex(pattern: &str) -> serde_json::Value {
    serde_json::json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false})
}

#[test]
fn hostile_tokenizer_files_end_within_their_limits() {
    let dir = TempDir::new("tokenizers");
    let d = dir.path();
    let run = |f: &Path, text: &str, needle: &str| {
        expect_bad(&["run", f.to_str().unwrap(), "--text", text], needle)
    };
    // Catastrophic backtracking: a back-reference makes fancy-regex backtrack, exponentially in
    // the length of the run of a's and b's without the c.
    let f = hf_copy(&d.join("backtrack"), "llama3");
    edit_tokenizer(&f, |v| {
        v["pre_tokenizer"] = split_regex("(?:(a|b|ab)\\1?)*c")
    });
    run(&f, &"ab".repeat(60), "catastrophic backtracking");
    // A pattern far longer than any real one.
    let f = hf_copy(&d.join("long"), "llama3");
    edit_tokenizer(&f, |v| {
        v["pre_tokenizer"] = split_regex(&"(?:ab|cd)".repeat(4000))
    });
    run(&f, "hello", "regular expression of 36000 bytes");
    // A pattern that does not compile.
    let f = hf_copy(&d.join("broken"), "llama3");
    edit_tokenizer(
        &f,
        |v| v["normalizer"] = serde_json::json!({"type": "Replace", "pattern": {"Regex": "(unclosed"}, "content": " "}),
    );
    run(&f, "hello", "does not compile");
    // Nesting deeper than any parser should follow.
    let f = hf_copy(&d.join("nested"), "llama3");
    let text = std::fs::read_to_string(f.join("tokenizer.json")).unwrap();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let text = text.replacen(
        "\"pre_tokenizer\":",
        &format!("\"pre_tokenizer\": {deep}, \"x\":"),
        1,
    );
    std::fs::write(f.join("tokenizer.json"), text).unwrap();
    run(&f, "hello", "recursion limit");
    // An added-token table larger than the limit.
    let f = hf_copy(&d.join("added"), "llama3");
    edit_tokenizer(&f, |v| {
        v["added_tokens"] = (0..(1u32 << 20) + 1)
            .map(|i| serde_json::json!({"id": i, "content": ""}))
            .collect();
    });
    run(&f, "hello", "added tokens, over the limit");
    // Files far larger than any real one, refused by their length (sparse: nothing is written).
    let f = hf_copy(&d.join("oversized"), "llama3");
    std::fs::File::create(f.join("tokenizer.json"))
        .unwrap()
        .set_len(200 << 20)
        .unwrap();
    run(&f, "hello", "over the limit of 128 MiB");
    let f = hf_copy(&d.join("oversized-config"), "llama3");
    std::fs::File::create(f.join("tokenizer_config.json"))
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    run(&f, "hello", "tokenizer_config.json");
}

#[test]
fn generation_stops_at_the_end_of_the_context() {
    let dir = TempDir::new("context");
    let p = gguf_case(dir.path(), "ctx16", |_| {});
    let out = Command::new(prism_bin())
        .args([
            "generate",
            p.to_str().unwrap(),
            "--ids",
            "1,2,3",
            "--max-tokens",
            "50",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stop_reason"], "context", "{v}");
    // 3 prompt tokens + 13 generated = the context of 16.
    assert_eq!(v["tokens"].as_array().unwrap().len(), 13);
    assert_eq!(
        stderr.matches("does not fit").count(),
        1,
        "said once on stderr: {stderr}"
    );
}

/// Mixture-of-experts files whose numbers do not fit their tensors, or ask for an impossible
/// routing, are refused naming the key or the tensor; so are expert interventions that do not fit
/// and `--experts` on a dense model.
#[test]
fn expert_counts_top_k_and_widths_that_do_not_fit_are_refused_by_name() {
    use prism_analysis::gguf::Value;
    let dir = TempDir::new("moe-meta");
    let d = dir.path();
    let src = fixtures().join("archs/qwen3moe/qwen3moe-Q8_0.gguf");
    for (name, key, v, needle) in [
        (
            "count",
            "qwen3moe.expert_count",
            Value::U32(6),
            "blk.0.ffn_gate_inp.weight",
        ),
        (
            "topk",
            "qwen3moe.expert_used_count",
            Value::U32(9),
            "9 experts per token of 8 experts",
        ),
        (
            "topk0",
            "qwen3moe.expert_used_count",
            Value::U32(0),
            "0 experts per token",
        ),
        (
            "width",
            "qwen3moe.expert_feed_forward_length",
            Value::U32(32),
            "blk.0.ffn_gate_exps.weight",
        ),
        (
            "shared",
            "qwen3moe.expert_shared_feed_forward_length",
            Value::U32(64),
            "qwen3moe.expert_shared_feed_forward_length",
        ),
    ] {
        let bad = d.join(format!("{name}.gguf"));
        rewrite_gguf(&src, &bad, |m| set_meta(m, key, v));
        info_and_run(&bad, needle);
    }
    // The HF folder: top-k beyond the experts, and an expert count the router does not have.
    for (name, key, v, needle) in [
        (
            "hf-topk",
            "num_experts_per_tok",
            serde_json::json!(12),
            "12 experts per token of 8 experts",
        ),
        (
            "hf-count",
            "num_local_experts",
            serde_json::json!(4),
            "model.layers.0.mlp.gate.weight",
        ),
    ] {
        let f = hf_copy(&d.join(name), "qwen3moe");
        let cfg = f.join("config.json");
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
        c[key] = v;
        std::fs::write(&cfg, c.to_string()).unwrap();
        info_and_run(&f, needle);
    }
    // An MXFP4 tensor whose rows are not whole 32-value blocks.
    info_and_run(
        &gguf_case(d, "mxfp4-rows", |b| {
            for t in &mut b.tensors {
                if t.name == "blk.0.ffn_down.weight" {
                    t.ne = vec![48, 32];
                    t.ty = 39;
                }
            }
        }),
        "blk.0.ffn_down.weight",
    );
    // Type ids llama.cpp has given to newer formats are named, not misread.
    info_and_run(&gguf_case(d, "nvfp4", |b| b.tensors[2].ty = 40), "NVFP4");
    // A Q1_0 tensor whose rows are not whole 128-value blocks is refused by name, not misread.
    info_and_run(
        &gguf_case(d, "q1_0-rows", |b| {
            for t in &mut b.tensors {
                if t.name == "blk.0.ffn_down.weight" {
                    t.ne = vec![64, 32];
                    t.ty = 41;
                }
            }
        }),
        "blk.0.ffn_down.weight",
    );
    // Expert interventions that do not fit, and --experts on a dense model.
    let moe = src.to_str().unwrap();
    for (file, needle) in [
        (
            r#"[{"site":"expert","layer":0,"expert":8,"op":"zero"}]"#,
            "expert 8 is out of range: the layer has experts 0..7",
        ),
        (
            r#"[{"site":"expert","layer":0,"op":"set","vector":[1,0]}]"#,
            "the vector has 2 values, but routing vectors of this model have 8",
        ),
        (
            r#"[{"site":"mlp_out","layer":0,"expert":1,"op":"zero"}]"#,
            "\"expert\" only applies to site \"expert\"",
        ),
    ] {
        let f = d.join("iv.json");
        std::fs::write(&f, file).unwrap();
        expect_bad(
            &[
                "run",
                moe,
                "--ids",
                "1,2,3",
                "--backend",
                "cpu",
                "--interventions",
                f.to_str().unwrap(),
            ],
            needle,
        );
    }
    let dense = fixtures().join("archs/qwen3");
    let f = d.join("iv.json");
    std::fs::write(
        &f,
        r#"[{"site":"expert","layer":0,"expert":0,"op":"zero"}]"#,
    )
    .unwrap();
    let dense = dense.to_str().unwrap();
    expect_bad(
        &[
            "run",
            dense,
            "--ids",
            "1,2,3",
            "--backend",
            "cpu",
            "--interventions",
            f.to_str().unwrap(),
        ],
        "layer 0 has a dense MLP, not experts",
    );
    expect_bad(
        &[
            "run",
            dense,
            "--ids",
            "1,2,3",
            "--experts",
            "--backend",
            "cpu",
        ],
        "has no mixture-of-experts layer",
    );
}

#[test]
fn linear_attention_sizes_that_do_not_fit_are_refused_by_name() {
    use prism_analysis::gguf::Value;
    let dir = TempDir::new("hybrid-meta");
    let d = dir.path();
    let src = fixtures().join("archs/qwen35/qwen35-Q8_0.gguf");
    for (name, key, v, needle) in [
        // A conv kernel or state size the tensors do not have.
        (
            "kernel",
            "qwen35.ssm.conv_kernel",
            Value::U32(5),
            "blk.0.ssm_conv1d.weight",
        ),
        (
            "state",
            "qwen35.ssm.state_size",
            Value::U32(32),
            "blk.0.ssm_conv1d.weight",
        ),
        (
            "kernel1",
            "qwen35.ssm.conv_kernel",
            Value::U32(1),
            "a convolution kernel of 1 taps",
        ),
        (
            "groups",
            "qwen35.ssm.group_count",
            Value::U32(3),
            "4 linear-attention value heads is not a multiple of 3 key heads",
        ),
        (
            "inner",
            "qwen35.ssm.inner_size",
            Value::U32(250),
            "ssm.inner_size 250",
        ),
        (
            "mtp",
            "qwen35.nextn_predict_layers",
            Value::U32(4),
            "nextn_predict_layers 4",
        ),
    ] {
        let bad = d.join(format!("{name}.gguf"));
        rewrite_gguf(&src, &bad, |m| set_meta(m, key, v));
        info_and_run(&bad, needle);
    }
    // gpt-oss: attention sinks of the wrong size, too many experts per token, a bad clamp.
    let oss = fixtures().join("archs/gptoss/gptoss-Q8_0.gguf");
    let bad = d.join("oss-topk.gguf");
    rewrite_gguf(&oss, &bad, |m| {
        set_meta(m, "gpt-oss.expert_used_count", Value::U32(9))
    });
    info_and_run(&bad, "9 experts per token of 8 experts");
    let bad = d.join("oss-heads.gguf");
    rewrite_gguf(&oss, &bad, |m| {
        set_meta(m, "gpt-oss.attention.head_count", Value::U32(2))
    });
    info_and_run(&bad, "blk.0.attn_");
    let f = hf_copy(&d.join("oss-limit"), "gptoss");
    let cfg = f.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c["swiglu_limit"] = serde_json::json!(-1.0);
    std::fs::write(&cfg, c.to_string()).unwrap();
    info_and_run(&f, "swiglu_limit -1");
    // A shared expert of another width than its tensors.
    let moe = fixtures().join("archs/qwen35moe/qwen35moe-Q8_0.gguf");
    let bad = d.join("shared.gguf");
    rewrite_gguf(&moe, &bad, |m| {
        set_meta(
            m,
            "qwen35moe.expert_shared_feed_forward_length",
            Value::U32(96),
        )
    });
    info_and_run(&bad, "blk.0.ffn_gate_shexp.weight");
    for (name, key, v, needle) in [
        (
            "hf-kernel",
            "linear_conv_kernel_dim",
            serde_json::json!(3),
            "model.layers.0.linear_attn.conv1d.weight",
        ),
        (
            "hf-types",
            "layer_types",
            serde_json::json!([
                "linear_attention",
                "mamba",
                "linear_attention",
                "full_attention"
            ]),
            "layer_types entry \"mamba\"",
        ),
        (
            "hf-heads",
            "linear_value_head_dim",
            serde_json::json!(300),
            "head sizes 64 (keys) and 300 (values)",
        ),
    ] {
        let f = hf_copy(&d.join(name), "qwen35");
        let cfg = f.join("config.json");
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
        c[key] = v;
        std::fs::write(&cfg, c.to_string()).unwrap();
        info_and_run(&f, needle);
    }
}

#[test]
fn heads_of_a_linear_attention_layer_are_refused_as_interventions() {
    let dir = TempDir::new("hybrid-head");
    let f = dir.path().join("iv.json");
    std::fs::write(
        &f,
        r#"[{"site": "head", "layer": 0, "head": 1, "op": "zero"}]"#,
    )
    .unwrap();
    let model = fixtures().join("archs/qwen35");
    let run = || {
        prism(&[
            "run",
            model.to_str().unwrap(),
            "--ids",
            "5,6,7",
            "--interventions",
            f.to_str().unwrap(),
        ])
    };
    let out = run();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("layer 0 is a Gated DeltaNet (linear attention) layer"),
        "{err}"
    );
    // The same site on the full-attention layer runs.
    std::fs::write(
        &f,
        r#"[{"site": "head", "layer": 3, "head": 1, "op": "zero"}]"#,
    )
    .unwrap();
    let out = run();
    assert!(out.status.success(), "{out:?}");
}
