//! Tiny random checkpoints written by the tests themselves, in every format Prism reads:
//! HF folders (F32/F16/BF16 safetensors, single or sharded) and GGUF (F32 to K-quants).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::json;

/// SplitMix64: a seeded generator with no dependencies.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-12);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    pub fn vec(&mut self, n: usize, std: f32, mean: f32) -> Vec<f32> {
        (0..n).map(|_| mean + std * self.normal()).collect()
    }
}

/// A named f32 tensor in HF layout.
#[derive(Clone)]
pub struct T {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Clone, Copy)]
pub struct Dims {
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub inter: usize,
    pub layers: usize,
    pub context: usize,
}

impl Dims {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

fn t(rng: &mut Rng, name: String, shape: &[usize], std: f32, mean: f32) -> T {
    let n = shape.iter().product();
    T {
        name,
        shape: shape.to_vec(),
        data: rng.vec(n, std, mean),
    }
}

/// Llama-family weights (with q/k/v biases when `qkv_bias`, as Qwen2), HF names.
pub fn llama_tensors(d: Dims, seed: u64, qkv_bias: bool, tied: bool) -> Vec<T> {
    let mut r = Rng::new(seed);
    let (h, hd) = (d.hidden, d.head_dim());
    let (q, kv) = (d.heads * hd, d.kv_heads * hd);
    let mut out = vec![t(
        &mut r,
        "model.embed_tokens.weight".into(),
        &[d.vocab, h],
        0.2,
        0.0,
    )];
    for i in 0..d.layers {
        let p = format!("model.layers.{i}");
        out.push(t(
            &mut r,
            format!("{p}.input_layernorm.weight"),
            &[h],
            0.1,
            1.0,
        ));
        for (n, o) in [("q", q), ("k", kv), ("v", kv)] {
            out.push(t(
                &mut r,
                format!("{p}.self_attn.{n}_proj.weight"),
                &[o, h],
                0.2,
                0.0,
            ));
            if qkv_bias {
                out.push(t(
                    &mut r,
                    format!("{p}.self_attn.{n}_proj.bias"),
                    &[o],
                    0.1,
                    0.0,
                ));
            }
        }
        out.push(t(
            &mut r,
            format!("{p}.self_attn.o_proj.weight"),
            &[h, q],
            0.2,
            0.0,
        ));
        out.push(t(
            &mut r,
            format!("{p}.post_attention_layernorm.weight"),
            &[h],
            0.1,
            1.0,
        ));
        out.push(t(
            &mut r,
            format!("{p}.mlp.gate_proj.weight"),
            &[d.inter, h],
            0.2,
            0.0,
        ));
        out.push(t(
            &mut r,
            format!("{p}.mlp.up_proj.weight"),
            &[d.inter, h],
            0.2,
            0.0,
        ));
        out.push(t(
            &mut r,
            format!("{p}.mlp.down_proj.weight"),
            &[h, d.inter],
            0.2,
            0.0,
        ));
    }
    out.push(t(&mut r, "model.norm.weight".into(), &[h], 0.1, 1.0));
    if !tied {
        out.push(t(&mut r, "lm_head.weight".into(), &[d.vocab, h], 0.2, 0.0));
    }
    out
}

pub fn llama_config(d: Dims, model_type: &str, tied: bool) -> serde_json::Value {
    json!({
        "architectures": [if model_type == "qwen2" { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
        "model_type": model_type,
        "vocab_size": d.vocab, "hidden_size": d.hidden, "intermediate_size": d.inter,
        "num_hidden_layers": d.layers, "num_attention_heads": d.heads, "num_key_value_heads": d.kv_heads,
        "max_position_embeddings": d.context, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": tied, "hidden_act": "silu", "torch_dtype": "float32"
    })
}

pub fn gpt2_tensors(d: Dims, seed: u64) -> Vec<T> {
    let mut r = Rng::new(seed);
    let h = d.hidden;
    let mut out = vec![
        t(
            &mut r,
            "transformer.wte.weight".into(),
            &[d.vocab, h],
            0.2,
            0.0,
        ),
        t(
            &mut r,
            "transformer.wpe.weight".into(),
            &[d.context, h],
            0.2,
            0.0,
        ),
    ];
    for i in 0..d.layers {
        let p = format!("transformer.h.{i}");
        for (n, shape) in [
            ("ln_1.weight", vec![h]),
            ("ln_1.bias", vec![h]),
            ("attn.c_attn.weight", vec![h, 3 * h]),
            ("attn.c_attn.bias", vec![3 * h]),
            ("attn.c_proj.weight", vec![h, h]),
            ("attn.c_proj.bias", vec![h]),
            ("ln_2.weight", vec![h]),
            ("ln_2.bias", vec![h]),
            ("mlp.c_fc.weight", vec![h, d.inter]),
            ("mlp.c_fc.bias", vec![d.inter]),
            ("mlp.c_proj.weight", vec![d.inter, h]),
            ("mlp.c_proj.bias", vec![h]),
        ] {
            let mean = if n.ends_with("weight") && n.starts_with("ln") {
                1.0
            } else {
                0.0
            };
            out.push(t(&mut r, format!("{p}.{n}"), &shape, 0.2, mean));
        }
    }
    out.push(t(&mut r, "transformer.ln_f.weight".into(), &[h], 0.1, 1.0));
    out.push(t(&mut r, "transformer.ln_f.bias".into(), &[h], 0.1, 0.0));
    out
}

pub fn gpt2_config(d: Dims) -> serde_json::Value {
    json!({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": d.vocab, "n_positions": d.context,
           "n_embd": d.hidden, "n_layer": d.layers, "n_head": d.heads, "n_inner": d.inter, "layer_norm_epsilon": 1e-5,
           "activation_function": "gelu_new"})
}

pub fn bert_tensors(d: Dims, seed: u64) -> Vec<T> {
    let mut r = Rng::new(seed);
    let h = d.hidden;
    let mut out = vec![
        t(
            &mut r,
            "embeddings.word_embeddings.weight".into(),
            &[d.vocab, h],
            0.2,
            0.0,
        ),
        t(
            &mut r,
            "embeddings.position_embeddings.weight".into(),
            &[d.context, h],
            0.2,
            0.0,
        ),
        t(
            &mut r,
            "embeddings.token_type_embeddings.weight".into(),
            &[2, h],
            0.2,
            0.0,
        ),
        t(&mut r, "embeddings.LayerNorm.weight".into(), &[h], 0.1, 1.0),
        t(&mut r, "embeddings.LayerNorm.bias".into(), &[h], 0.1, 0.0),
    ];
    for i in 0..d.layers {
        let p = format!("encoder.layer.{i}");
        for (n, o, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", d.inter, h),
            ("output.dense", h, d.inter),
        ] {
            out.push(t(&mut r, format!("{p}.{n}.weight"), &[o, inp], 0.2, 0.0));
            out.push(t(&mut r, format!("{p}.{n}.bias"), &[o], 0.1, 0.0));
        }
        for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
            out.push(t(&mut r, format!("{p}.{n}.weight"), &[h], 0.1, 1.0));
            out.push(t(&mut r, format!("{p}.{n}.bias"), &[h], 0.1, 0.0));
        }
    }
    out
}

pub fn bert_config(d: Dims) -> serde_json::Value {
    json!({"architectures": ["BertModel"], "model_type": "bert", "vocab_size": d.vocab, "hidden_size": d.hidden,
           "num_hidden_layers": d.layers, "num_attention_heads": d.heads, "intermediate_size": d.inter,
           "max_position_embeddings": d.context, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu"})
}

fn bytes_of(data: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::F16 => data
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        Dtype::BF16 => data
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
        other => panic!("unsupported test dtype {other:?}"),
    }
}

/// Rounds values the way storing them as `dtype` does.
pub fn round_to(tensors: &[T], dtype: Dtype) -> Vec<T> {
    tensors
        .iter()
        .map(|x| T {
            data: x
                .data
                .iter()
                .map(|&v| match dtype {
                    Dtype::F16 => half::f16::from_f32(v).to_f32(),
                    Dtype::BF16 => half::bf16::from_f32(v).to_f32(),
                    _ => v,
                })
                .collect(),
            ..x.clone()
        })
        .collect()
}

pub fn write_safetensors(path: &Path, tensors: &[T], dtype: Dtype) {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| bytes_of(&t.data, dtype)).collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            (
                t.name.clone(),
                TensorView::new(dtype, t.shape.clone(), b).expect("view"),
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, path).expect("write safetensors");
}

/// An HF folder: config.json plus one safetensors file, or `shards` files and an index.
pub fn write_hf(
    dir: &Path,
    config: &serde_json::Value,
    tensors: &[T],
    dtype: Dtype,
    shards: usize,
) {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(config).expect("json"),
    )
    .expect("config");
    if shards <= 1 {
        write_safetensors(&dir.join("model.safetensors"), tensors, dtype);
        return;
    }
    let per = tensors.len().div_ceil(shards);
    let mut map = serde_json::Map::new();
    for (i, chunk) in tensors.chunks(per).enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, shards);
        write_safetensors(&dir.join(&file), chunk, dtype);
        for t in chunk {
            map.insert(t.name.clone(), json!(file));
        }
    }
    let index = json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("index");
}

/// llama.cpp's q/k row permutation for interleaved-pair RoPE.
pub fn permute_qk(data: &[f32], n_head: usize, rows: usize, cols: usize) -> Vec<f32> {
    let hd = rows / n_head;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_head {
        for i in 0..hd / 2 {
            for pair in 0..2 {
                // GGUF row h*hd + 2i + pair comes from HF row h*hd + pair*hd/2 + i.
                let src = h * hd + pair * hd / 2 + i;
                let dst = h * hd + 2 * i + pair;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

fn hf_to_gguf_name(name: &str) -> String {
    name.replace("model.embed_tokens.weight", "token_embd.weight")
        .replace("model.norm.weight", "output_norm.weight")
        .replace("lm_head.weight", "output.weight")
        .replace("model.layers.", "blk.")
        .replace(".input_layernorm", ".attn_norm")
        .replace(".post_attention_layernorm", ".ffn_norm")
        .replace(".self_attn.q_proj", ".attn_q")
        .replace(".self_attn.k_proj", ".attn_k")
        .replace(".self_attn.v_proj", ".attn_v")
        .replace(".self_attn.o_proj", ".attn_output")
        .replace(".mlp.gate_proj", ".ffn_gate")
        .replace(".mlp.up_proj", ".ffn_up")
        .replace(".mlp.down_proj", ".ffn_down")
}

/// A byte-level BPE vocabulary for GGUF: the 256 GPT-2 byte characters and no merges beyond a few.
pub fn gpt2_byte_vocab(vocab: usize) -> (Vec<String>, Vec<String>) {
    let mut bytes: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = bytes.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut pairs: Vec<(u32, char)> = bytes
        .iter()
        .zip(&chars)
        .map(|(&b, &c)| (b, char::from_u32(c).unwrap_or('?')))
        .collect();
    pairs.sort();
    let mut tokens: Vec<String> = pairs.into_iter().map(|(_, c)| c.to_string()).collect();
    let mut merges = Vec::new();
    for (a, b) in [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n")] {
        if tokens.len() < vocab {
            merges.push(format!("{a} {b}"));
            tokens.push(format!("{a}{b}"));
        }
    }
    while tokens.len() < vocab {
        tokens.push(format!("<extra_{}>", tokens.len()));
    }
    (tokens, merges)
}

/// Writes Llama-family weights as a GGUF file with matrices stored as `matrix_type`.
/// `arch` is "llama" (q/k permuted, interleaved RoPE) or "qwen2" (not permuted).
pub fn write_gguf(path: &Path, d: Dims, arch: &str, tensors: &[T], matrix_type: GgmlDType) {
    let (tokens, merges) = gpt2_byte_vocab(d.vocab);
    let tokenizer = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(merges.into_iter().map(Value::String).collect()),
        ),
    ];
    write_gguf_with(path, d, arch, tensors, matrix_type, tokenizer);
}

/// Like [`write_gguf`], with the given tokenizer metadata.
pub fn write_gguf_with(
    path: &Path,
    d: Dims,
    arch: &str,
    tensors: &[T],
    matrix_type: GgmlDType,
    tokenizer: Vec<(String, Value)>,
) {
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (
            "general.name".into(),
            Value::String("prism-synthetic".into()),
        ),
        (
            format!("{arch}.context_length"),
            Value::U32(d.context as u32),
        ),
        (
            format!("{arch}.embedding_length"),
            Value::U32(d.hidden as u32),
        ),
        (format!("{arch}.block_count"), Value::U32(d.layers as u32)),
        (
            format!("{arch}.feed_forward_length"),
            Value::U32(d.inter as u32),
        ),
        (
            format!("{arch}.attention.head_count"),
            Value::U32(d.heads as u32),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            Value::U32(d.kv_heads as u32),
        ),
        (
            format!("{arch}.rope.dimension_count"),
            Value::U32(d.head_dim() as u32),
        ),
        (format!("{arch}.rope.freq_base"), Value::F32(10000.0)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        ),
    ];
    meta.extend(tokenizer);
    let qtensors: Vec<(String, QTensor)> = tensors
        .iter()
        .map(|t| {
            let mut data = t.data.clone();
            if arch == "llama"
                && (t.name.contains("q_proj") || t.name.contains("k_proj"))
                && t.shape.len() == 2
            {
                let n = if t.name.contains("q_proj") {
                    d.heads
                } else {
                    d.kv_heads
                };
                if t.name.ends_with("weight") {
                    data = permute_qk(&data, n, t.shape[0], t.shape[1]);
                } else {
                    data = permute_qk(&data, n, t.shape[0], 1);
                }
            }
            let tensor = Tensor::from_vec(data, t.shape.as_slice(), &Device::Cpu).expect("tensor");
            let ty = if t.shape.len() == 2 {
                matrix_type
            } else {
                GgmlDType::F32
            };
            (
                hf_to_gguf_name(&t.name),
                QTensor::quantize(&tensor, ty).expect("quantize"),
            )
        })
        .collect();
    let mut f = std::fs::File::create(path).expect("create gguf");
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qtensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &meta_refs, &t_refs).expect("write gguf");
}

/// Dequantized copies of the GGUF matrices, for a same-function F32 comparison.
pub fn quantization_roundtrip(tensors: &[T], ty: GgmlDType) -> Vec<T> {
    tensors
        .iter()
        .map(|t| {
            if t.shape.len() != 2 {
                return t.clone();
            }
            let tensor =
                Tensor::from_vec(t.data.clone(), t.shape.as_slice(), &Device::Cpu).expect("tensor");
            let q = QTensor::quantize(&tensor, ty).expect("quantize");
            let data = q
                .dequantize(&Device::Cpu)
                .and_then(|x| x.flatten_all())
                .and_then(|x| x.to_vec1::<f32>())
                .expect("dequantize");
            T { data, ..t.clone() }
        })
        .collect()
}

pub fn names(tensors: &[T]) -> HashMap<String, usize> {
    tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect()
}

/// A `[rows, cols]` weight of seeded normal values stored as `ty`: quantized with candle-core's
/// quantizer where it has one, or taken from the reference GGUF files (IQ4_NL, IQ4_XS), whose
/// blocks are real llama.cpp output.
pub fn weight_of_type(
    rows: usize,
    cols: usize,
    ty: prism_analysis::quant::GgmlType,
    seed: u64,
) -> prism_analysis::weights::Weight {
    use prism_analysis::quant::GgmlType as G;
    use prism_analysis::weights::{Bytes, Weight};
    let data = Rng::new(seed).vec(rows * cols, 0.5, 0.0);
    let bytes: Vec<u8> = match ty {
        G::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        G::F16 => data
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect(),
        G::BF16 => data
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect(),
        G::IQ4NL | G::IQ4XS | G::MXFP4 | G::TQ1_0 | G::TQ2_0 | G::Q1_0 | G::Q2_0 => {
            // Real llama.cpp blocks: rows of a fixture's first tensor of that type.
            let file = match ty {
                G::IQ4NL => "llama3/llama3-IQ4_NL.gguf",
                G::IQ4XS => "llama3/llama3-IQ4_XS.gguf",
                G::TQ1_0 => "qwen3/qwen3-TQ1_0.gguf",
                G::TQ2_0 => "qwen3/qwen3-TQ2_0.gguf",
                G::Q1_0 => "qwen3/qwen3-Q1_0.gguf",
                G::Q2_0 => "qwen3/qwen3-Q2_0.gguf",
                _ => "qwen3moe/qwen3moe-MXFP4_MOE.gguf",
            };
            let path = crate::fixtures().join("archs").join(file);
            let f = prism_analysis::gguf::open(&path).expect("fixture gguf");
            let t = f
                .tensors
                .iter()
                .find(|t| t.ggml_type == ty.id())
                .expect("a tensor of the type");
            // Whole blocks, cycled: every block stays a real one.
            let need = ty.bytes_for(cols);
            let start = t.start as usize;
            let all = &f.map()[start..start + t.bytes as usize];
            all.iter().cycle().take(rows * need).copied().collect()
        }
        other => {
            let candle_ty = match other {
                G::Q4_0 => GgmlDType::Q4_0,
                G::Q4_1 => GgmlDType::Q4_1,
                G::Q5_0 => GgmlDType::Q5_0,
                G::Q5_1 => GgmlDType::Q5_1,
                G::Q8_0 => GgmlDType::Q8_0,
                G::Q2K => GgmlDType::Q2K,
                G::Q3K => GgmlDType::Q3K,
                G::Q4K => GgmlDType::Q4K,
                G::Q5K => GgmlDType::Q5K,
                _ => GgmlDType::Q6K,
            };
            let t = candle_core::Tensor::from_vec(data, (rows, cols), &candle_core::Device::Cpu)
                .expect("tensor");
            QTensor::quantize(&t, candle_ty)
                .expect("quantize")
                .data()
                .expect("bytes")
                .to_vec()
        }
    };
    Weight::new(
        format!("w{}", ty.name()),
        vec![rows, cols],
        ty,
        Bytes::Owned(std::sync::Arc::new(bytes)),
        0,
    )
    .expect("weight")
}
