//! GPT-2 and BERT as GGUF files laid out the way llama.cpp's `convert_hf_to_gguf.py` writes them
//! (tensor names from gguf-py's tensor map, GPT-2's Conv1D weights transposed to `[out, in]`, the
//! metadata keys of `conversion/gpt2.py` and `conversion/bert.py`), against the same weights as a
//! Hugging Face folder: both must compute the same function.

use prism_analysis::backend::Capture;
use prism_analysis::gguf::{self, Value, WriteTensor};
use prism_tests::synth::*;
use prism_tests::*;
use safetensors::Dtype;

const D: Dims = Dims {
    vocab: 256,
    hidden: 64,
    heads: 4,
    kv_heads: 4,
    inter: 128,
    layers: 2,
    context: 32,
};

const IDS: [u32; 8] = [5, 17, 200, 4, 99, 120, 7, 33];

/// Writes `tensors` (already renamed and laid out) as an F32 GGUF with `meta`.
fn write(
    path: &std::path::Path,
    meta: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let wt: Vec<WriteTensor<'_>> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| WriteTensor {
            name,
            ne: shape.iter().rev().map(|&x| x as u64).collect(),
            ggml_type: 0,
            data: b,
        })
        .collect();
    let meta: Vec<(&str, Value)> = meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    gguf::write(path, &meta, &wt).expect("write gguf");
}

fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

fn u32v(x: usize) -> Value {
    Value::U32(x as u32)
}

fn logits(path: &std::path::Path) -> Vec<f64> {
    let model = load(path);
    let c = Capture {
        logits: true,
        ..Capture::default()
    };
    as_f64(
        run_cpu(&model, &IDS, c)
            .output
            .full_logits()
            .expect("logits"),
    )
}

fn final_hidden(path: &std::path::Path) -> Vec<f64> {
    let model = load(path);
    as_f64(
        &run_cpu(&model, &IDS, Capture::default())
            .output
            .final_hidden,
    )
}

#[test]
fn gpt2_gguf_as_the_converter_writes_it_computes_the_hf_function() {
    let dir = TempDir::new("gpt2-gguf");
    let tensors = gpt2_tensors(D, 21);
    write_hf(
        &dir.path().join("hf"),
        &gpt2_config(D),
        &tensors,
        Dtype::F32,
        1,
    );
    let mut out = Vec::new();
    for t in &tensors {
        let n = t.name.trim_start_matches("transformer.");
        let mut data = t.data.clone();
        let mut shape = t.shape.clone();
        // conversion/gpt2.py: the Conv1D weights ([in, out]) are transposed.
        if n.ends_with("c_attn.weight")
            || n.ends_with("c_proj.weight")
            || n.ends_with("c_fc.weight")
        {
            data = transpose(&data, shape[0], shape[1]);
            shape = vec![shape[1], shape[0]];
        }
        let name = if let Some(rest) = n.strip_prefix("h.") {
            let (i, part) = rest.split_once('.').unwrap();
            let part = part
                .replace("ln_1", "attn_norm")
                .replace("attn.c_attn", "attn_qkv")
                .replace("attn.c_proj", "attn_output")
                .replace("ln_2", "ffn_norm")
                .replace("mlp.c_fc", "ffn_up")
                .replace("mlp.c_proj", "ffn_down");
            format!("blk.{i}.{part}")
        } else {
            n.replace("wte", "token_embd")
                .replace("wpe", "position_embd")
                .replace("ln_f", "output_norm")
        };
        out.push((name, shape, data));
    }
    let (tokens, merges) = gpt2_byte_vocab(D.vocab);
    let meta = vec![
        (
            "general.architecture".to_string(),
            Value::String("gpt2".into()),
        ),
        ("gpt2.block_count".into(), u32v(D.layers)),
        ("gpt2.context_length".into(), u32v(D.context)),
        ("gpt2.embedding_length".into(), u32v(D.hidden)),
        ("gpt2.feed_forward_length".into(), u32v(D.inter)),
        ("gpt2.attention.head_count".into(), u32v(D.heads)),
        ("gpt2.attention.layer_norm_epsilon".into(), Value::F32(1e-5)),
        ("general.file_type".into(), u32v(0)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("gpt-2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(merges.into_iter().map(Value::String).collect()),
        ),
    ];
    let gguf_path = dir.path().join("gpt2.gguf");
    write(&gguf_path, meta, out);
    let (a, b) = (logits(&dir.path().join("hf")), logits(&gguf_path));
    let d = max_abs_diff(&a, &b);
    assert!(d < 1e-4, "GPT-2 GGUF vs HF logits differ by {d}");
    assert!(a.iter().map(|x| x.abs()).fold(0.0, f64::max) > 0.1);
    let info = json_of(&["info", gguf_path.to_str().unwrap(), "--json"]);
    assert_eq!(info["family"], "gpt2");
}

#[test]
fn bert_gguf_as_the_converter_writes_it_computes_the_hf_function() {
    let dir = TempDir::new("bert-gguf");
    let tensors = bert_tensors(D, 22);
    write_hf(
        &dir.path().join("hf"),
        &bert_config(D),
        &tensors,
        Dtype::F32,
        1,
    );
    let mut out = Vec::new();
    for t in &tensors {
        let n = t.name.as_str();
        let name = if let Some(rest) = n.strip_prefix("encoder.layer.") {
            let (i, part) = rest.split_once('.').unwrap();
            let part = part
                .replace("attention.self.query", "attn_q")
                .replace("attention.self.key", "attn_k")
                .replace("attention.self.value", "attn_v")
                .replace("attention.output.dense", "attn_output")
                .replace("attention.output.LayerNorm", "attn_output_norm")
                .replace("intermediate.dense", "ffn_up")
                .replace("output.dense", "ffn_down")
                .replace("output.LayerNorm", "layer_output_norm");
            format!("blk.{i}.{part}")
        } else {
            n.replace("embeddings.word_embeddings", "token_embd")
                .replace("embeddings.position_embeddings", "position_embd")
                .replace("embeddings.token_type_embeddings", "token_types")
                .replace("embeddings.LayerNorm", "token_embd_norm")
        };
        out.push((name, t.shape.clone(), t.data.clone()));
    }
    // A WordPiece vocabulary as conversion/bert.py writes it: "▁" marks a word start, "##" is dropped.
    let mut tokens: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut i = 0;
    while tokens.len() < D.vocab {
        let c = char::from_u32('a' as u32 + (i % 26)).unwrap();
        tokens.push(if i < 26 {
            format!("\u{2581}{c}")
        } else {
            format!("{c}{}", i / 26)
        });
        i += 1;
    }
    let types: Vec<Value> = tokens
        .iter()
        .map(|t| Value::I32(if t.starts_with('[') { 3 } else { 1 }))
        .collect();
    let meta = vec![
        (
            "general.architecture".to_string(),
            Value::String("bert".into()),
        ),
        ("bert.block_count".into(), u32v(D.layers)),
        ("bert.context_length".into(), u32v(D.context)),
        ("bert.embedding_length".into(), u32v(D.hidden)),
        ("bert.feed_forward_length".into(), u32v(D.inter)),
        ("bert.attention.head_count".into(), u32v(D.heads)),
        (
            "bert.attention.layer_norm_epsilon".into(),
            Value::F32(1e-12),
        ),
        ("bert.attention.causal".into(), Value::Bool(false)),
        ("bert.pooling_type".into(), u32v(1)),
        ("general.file_type".into(), u32v(0)),
        ("tokenizer.ggml.model".into(), Value::String("bert".into())),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        ("tokenizer.ggml.token_type_count".into(), u32v(2)),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.unknown_token_id".into(), u32v(1)),
        ("tokenizer.ggml.cls_token_id".into(), u32v(2)),
        ("tokenizer.ggml.seperator_token_id".into(), u32v(3)),
        ("tokenizer.ggml.padding_token_id".into(), u32v(0)),
        ("tokenizer.ggml.mask_token_id".into(), u32v(4)),
    ];
    let gguf_path = dir.path().join("bert.gguf");
    write(&gguf_path, meta, out);
    let (a, b) = (
        final_hidden(&dir.path().join("hf")),
        final_hidden(&gguf_path),
    );
    let d = max_abs_diff(&a, &b);
    assert!(d < 1e-4, "BERT GGUF vs HF last hidden states differ by {d}");
    let info = json_of(&["info", gguf_path.to_str().unwrap(), "--json"]);
    assert_eq!(info["family"], "bert");
}
