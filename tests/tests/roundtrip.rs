//! Checkpoints the tests write themselves, in every format, must load and compute the same function:
//! HF F32 vs F16/BF16 vs sharded, Llama HF vs GGUF (permuted q/k with interleaved RoPE),
//! Qwen2 HF vs GGUF, and every GGUF matrix type vs its dequantized F32 copy.

use candle_core::quantized::GgmlDType;
use prism_analysis::backend::Capture;
use prism_tests::synth::*;
use prism_tests::*;
use safetensors::Dtype;

const IDS: [u32; 9] = [3, 17, 250, 4, 99, 120, 7, 200, 33];

fn logits_of(path: &std::path::Path) -> Vec<f64> {
    let model = load(path);
    let trace = run_cpu(
        &model,
        &IDS,
        Capture {
            logits: true,
            attention: true,
            ..Capture::default()
        },
    );
    as_f64(trace.output.full_logits().expect("logits"))
}

fn hidden_of(path: &std::path::Path) -> Vec<f64> {
    let model = load(path);
    as_f64(
        &run_cpu(&model, &IDS, Capture::default())
            .output
            .final_hidden,
    )
}

const SMALL: Dims = Dims {
    vocab: 256,
    hidden: 64,
    heads: 4,
    kv_heads: 2,
    inter: 96,
    layers: 2,
    context: 64,
};
/// K-quants need rows of 256 values.
const KQ: Dims = Dims {
    vocab: 256,
    hidden: 256,
    heads: 4,
    kv_heads: 2,
    inter: 512,
    layers: 1,
    context: 64,
};

#[test]
fn llama_hf_and_gguf_agree() {
    let dir = TempDir::new("llama-rt");
    let tensors = llama_tensors(SMALL, 7, false, false);
    write_hf(
        &dir.path().join("hf"),
        &llama_config(SMALL, "llama", false),
        &tensors,
        Dtype::F32,
        1,
    );
    write_gguf(
        &dir.path().join("m.gguf"),
        SMALL,
        "llama",
        &tensors,
        GgmlDType::F32,
    );
    let a = logits_of(&dir.path().join("hf"));
    let b = logits_of(&dir.path().join("m.gguf"));
    let d = max_abs_diff(&a, &b);
    assert!(
        d < 1e-4,
        "GGUF (interleaved RoPE on permuted q/k) vs HF (rotate-half): {d}"
    );
    // The permutation matters: the logits are far from those of a model without RoPE pairing care.
    assert!(a.iter().map(|x| x.abs()).fold(0.0, f64::max) > 0.5);
}

#[test]
fn qwen2_hf_and_gguf_agree_and_biases_are_required() {
    let dir = TempDir::new("qwen-rt");
    let tensors = llama_tensors(SMALL, 8, true, true);
    write_hf(
        &dir.path().join("hf"),
        &llama_config(SMALL, "qwen2", true),
        &tensors,
        Dtype::F32,
        1,
    );
    write_gguf(
        &dir.path().join("m.gguf"),
        SMALL,
        "qwen2",
        &tensors,
        GgmlDType::F32,
    );
    let a = logits_of(&dir.path().join("hf"));
    let b = logits_of(&dir.path().join("m.gguf"));
    assert!(max_abs_diff(&a, &b) < 1e-4);
    // Qwen2 always has q/k/v biases: a folder without them is refused, naming the tensor.
    let no_bias: Vec<T> = tensors
        .iter()
        .filter(|t| !t.name.ends_with("bias"))
        .cloned()
        .collect();
    write_hf(
        &dir.path().join("nobias"),
        &llama_config(SMALL, "qwen2", true),
        &no_bias,
        Dtype::F32,
        1,
    );
    let err = prism_analysis::checkpoint::load(&dir.path().join("nobias"))
        .err()
        .expect("a Qwen2 folder without biases is refused")
        .to_string();
    assert!(err.contains("q_proj.bias"), "{err}");
}

#[test]
fn half_precision_safetensors_load_exactly() {
    let dir = TempDir::new("half-rt");
    let tensors = llama_tensors(SMALL, 9, false, true);
    for dtype in [Dtype::F16, Dtype::BF16] {
        let rounded = round_to(&tensors, dtype);
        let name = format!("{dtype:?}");
        write_hf(
            &dir.path().join(&name),
            &llama_config(SMALL, "llama", true),
            &tensors,
            dtype,
            1,
        );
        write_hf(
            &dir.path().join(format!("{name}-f32")),
            &llama_config(SMALL, "llama", true),
            &rounded,
            Dtype::F32,
            1,
        );
        let d = max_abs_diff(
            &logits_of(&dir.path().join(&name)),
            &logits_of(&dir.path().join(format!("{name}-f32"))),
        );
        assert!(d < 1e-5, "{name}: {d}");
    }
}

#[test]
fn sharded_folder_equals_single_file() {
    let dir = TempDir::new("shard-rt");
    let tensors = gpt2_tensors(SMALL, 10);
    write_hf(
        &dir.path().join("one"),
        &gpt2_config(SMALL),
        &tensors,
        Dtype::F32,
        1,
    );
    write_hf(
        &dir.path().join("three"),
        &gpt2_config(SMALL),
        &tensors,
        Dtype::F32,
        3,
    );
    assert!(dir
        .path()
        .join("three/model.safetensors.index.json")
        .exists());
    assert_eq!(
        logits_of(&dir.path().join("one")),
        logits_of(&dir.path().join("three"))
    );
}

#[test]
fn bert_roundtrips_through_f16() {
    let dir = TempDir::new("bert-rt");
    let tensors = bert_tensors(SMALL, 11);
    write_hf(
        &dir.path().join("f16"),
        &bert_config(SMALL),
        &tensors,
        Dtype::F16,
        1,
    );
    write_hf(
        &dir.path().join("f32"),
        &bert_config(SMALL),
        &round_to(&tensors, Dtype::F16),
        Dtype::F32,
        2,
    );
    let d = max_abs_diff(
        &hidden_of(&dir.path().join("f16")),
        &hidden_of(&dir.path().join("f32")),
    );
    assert!(d < 1e-5, "{d}");
}

#[test]
fn every_gguf_type_computes_its_dequantized_function() {
    let dir = TempDir::new("quant-rt");
    let tensors = llama_tensors(KQ, 12, false, false);
    for ty in [
        GgmlDType::F16,
        GgmlDType::BF16,
        GgmlDType::Q8_0,
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ] {
        let q = dir.path().join(format!("{ty:?}.gguf"));
        let f = dir.path().join(format!("{ty:?}-f32.gguf"));
        write_gguf(&q, KQ, "llama", &tensors, ty);
        write_gguf(
            &f,
            KQ,
            "llama",
            &quantization_roundtrip(&tensors, ty),
            GgmlDType::F32,
        );
        let model = load(&q);
        let stored = format!("{ty:?}").to_uppercase().replace("K", "_K");
        assert!(
            model
                .info
                .dtypes
                .keys()
                .any(|k| k.replace('_', "") == stored.replace('_', "")),
            "{ty:?}: dtypes {:?}",
            model.info.dtypes
        );
        let d = max_abs_diff(&logits_of(&q), &logits_of(&f));
        assert!(d < 1e-4, "{ty:?}: {d}");
    }
}

#[test]
fn gguf_tokenizer_from_metadata_round_trips_text() {
    let dir = TempDir::new("tok-rt");
    // Room for the 256 byte tokens and a few merges.
    let dims = Dims {
        vocab: 300,
        ..SMALL
    };
    let tensors = llama_tensors(dims, 13, false, true);
    let path = dir.path().join("m.gguf");
    write_gguf(&path, dims, "llama", &tensors, GgmlDType::Q8_0);
    let model = load(&path);
    let tok = model.tokenizer.as_ref().expect("tokenizer");
    let text = "in the thin line, 42 times\n";
    let ids = tok.encode(text, false).unwrap();
    let back: String = ids.iter().map(|&i| tok.token_text(i)).collect();
    assert_eq!(back, text);
    // " the" is one merged token ("Ġthe").
    assert!(ids.contains(&tok.token_to_id("Ġthe").unwrap()));
}
