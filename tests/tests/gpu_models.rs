//! The GPU backend (Prism's WGSL shaders through wgpu; lavapipe in CI) against the same references
//! as the CPU backend, and against the CPU backend on checkpoints of every format.

use std::sync::OnceLock;

use candle_core::quantized::GgmlDType;
use prism_analysis::backend::Capture;
use prism_analysis::checkpoint::Model;
use prism_tests::synth::*;
use prism_tests::*;
use safetensors::Dtype;

fn check_tiny(model_path: &std::path::Path, reference: &std::path::Path) {
    let model = load(model_path);
    let reference = read_json(reference);
    let spec = &model.spec;
    for (name, seq) in reference["sequences"].as_object().unwrap() {
        let ids = u32s(&seq["input_ids"]);
        let trace = run_gpu(&model, &ids, Capture::all());
        let out = &trace.output;
        let ctx = format!("GPU {} {name}", model_path.display());
        if spec.causal {
            let d = max_abs_diff(&as_f64(out.full_logits().unwrap()), &f64s(&seq["logits"]));
            assert!(d <= 1e-4, "{ctx}: logits differ by {d}");
            let argmax = u32s(&seq["argmax"]);
            for (pos, top) in trace.top.iter().enumerate() {
                assert_eq!(top[0].id, argmax[pos], "{ctx}: top-1 at {pos}");
            }
            let lens = out.logit_lens.as_ref().unwrap();
            for (pos, want) in argmax.iter().enumerate() {
                assert_eq!(
                    lens[spec.n_layers][pos][0].id, *want,
                    "{ctx}: lens at {pos}"
                );
            }
        }
        let d = max_abs_diff(&as_f64(&out.final_hidden), &f64s(&seq["last_hidden_state"]));
        assert!(d <= 5e-5, "{ctx}: last_hidden_state differs by {d}");
        let d = max_abs_diff(
            &as_f64(&out.attention_maps().unwrap().flat()),
            &f64s(&seq["attentions"]),
        );
        assert!(d <= 2e-5, "{ctx}: attentions differ by {d}");
        let norms = trace.residual_norms().unwrap();
        for layer in 0..spec.n_layers {
            for (g, w) in norms[layer]
                .iter()
                .zip(f64s(&seq["hidden_state_l2_norms"][layer]))
            {
                assert!(
                    (g - w).abs() <= 1e-5 * w.max(1e-3),
                    "{ctx}: norm at layer {layer}"
                );
            }
        }
    }
}

#[test]
fn tiny_models_match_transformers_on_the_gpu() {
    for name in ["gpt2", "llama", "qwen2", "bert"] {
        check_tiny(&tiny(name), &tiny(&format!("{name}/reference.json")));
    }
    for ty in ["f32", "q8_0", "q4_0", "q4_1"] {
        check_tiny(
            &tiny(&format!("llama-gguf/tiny-llama-{ty}.gguf")),
            &tiny(&format!("llama-gguf/reference-{ty}.json")),
        );
    }
}

fn compare_backends(path: &std::path::Path, ids: &[u32]) {
    compare_backends_within(path, ids, 1.0);
}

/// `scale` widens the tolerances for formats the GPU holds differently (K-quants as f16).
fn compare_backends_within(path: &std::path::Path, ids: &[u32], scale: f64) {
    let model = load(path);
    let capture = Capture {
        attention: true,
        residual: true,
        logits: true,
        ..Capture::default()
    };
    let cpu = run_cpu(&model, ids, capture);
    let gpu = run_gpu(&model, ids, capture);
    let d = max_abs_diff(
        &as_f64(&cpu.output.final_hidden),
        &as_f64(&gpu.output.final_hidden),
    );
    assert!(
        d < 1e-4 * scale,
        "{}: final hidden differs by {d}",
        path.display()
    );
    if let (Some(a), Some(b)) = (cpu.output.full_logits(), gpu.output.full_logits()) {
        let d = max_abs_diff(&as_f64(a), &as_f64(b));
        assert!(d < 1e-4 * scale, "{}: logits differ by {d}", path.display());
        for i in 1..ids.len() {
            let (a, b) = (
                cpu.surprisal_bits[i].unwrap(),
                gpu.surprisal_bits[i].unwrap(),
            );
            assert!(
                (a - b).abs() < 1e-3 * scale,
                "{}: surprisal at {i}: {a} vs {b}",
                path.display()
            );
            if scale == 1.0 {
                assert_eq!(cpu.rank[i], gpu.rank[i]);
            }
        }
    }
    let d = max_abs_diff(
        &as_f64(&cpu.output.attention_maps().unwrap().flat()),
        &as_f64(&gpu.output.attention_maps().unwrap().flat()),
    );
    assert!(
        d < 2e-5 * scale,
        "{}: attention differs by {d}",
        path.display()
    );
}

const IDS: [u32; 11] = [3, 17, 250, 4, 99, 120, 7, 200, 33, 5, 80];
const SMALL: Dims = Dims {
    vocab: 256,
    hidden: 64,
    heads: 4,
    kv_heads: 2,
    inter: 96,
    layers: 2,
    context: 64,
};
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
fn gpu_equals_cpu_on_every_format() {
    let dir = TempDir::new("gpu-formats");
    let d = dir.path();
    let llama = llama_tensors(KQ, 21, false, false);
    for ty in [
        GgmlDType::F32,
        GgmlDType::F16,
        GgmlDType::BF16,
        GgmlDType::Q8_0,
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ] {
        let p = d.join(format!("{ty:?}.gguf"));
        write_gguf(&p, KQ, "llama", &llama, ty);
        // K-quants have no shader decoder: the GPU holds them as f16, which rounds each weight
        // by up to 2^-11 relative. Everything else is decoded exactly.
        let k_quant = matches!(ty, GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K);
        compare_backends_within(&p, &IDS, if k_quant { 500.0 } else { 1.0 });
    }
    let qwen = llama_tensors(SMALL, 22, true, true);
    write_gguf(&d.join("qwen.gguf"), SMALL, "qwen2", &qwen, GgmlDType::Q8_0);
    compare_backends(&d.join("qwen.gguf"), &IDS);
    for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
        let f = d.join(format!("gpt2-{dtype:?}"));
        write_hf(&f, &gpt2_config(SMALL), &gpt2_tensors(SMALL, 23), dtype, 2);
        compare_backends(&f, &IDS);
        let f = d.join(format!("bert-{dtype:?}"));
        write_hf(&f, &bert_config(SMALL), &bert_tensors(SMALL, 24), dtype, 1);
        compare_backends(&f, &IDS);
        let f = d.join(format!("llama-{dtype:?}"));
        write_hf(
            &f,
            &llama_config(SMALL, "llama", true),
            &llama_tensors(SMALL, 25, false, true),
            dtype,
            1,
        );
        compare_backends(&f, &IDS);
    }
}

#[test]
fn small_binding_limits_chunk_weights_scores_and_logits() {
    // With a 32 KiB binding limit the F32 embedding (64 KiB) is split in row chunks, the attention
    // scores of 60 tokens come in query blocks, and the logits in row chunks; the numbers must not change.
    let dir = TempDir::new("gpu-chunks");
    let p = dir.path().join("m.gguf");
    write_gguf(
        &p,
        SMALL,
        "llama",
        &llama_tensors(SMALL, 26, false, true),
        GgmlDType::F32,
    );
    let model = load(&p);
    let ids: Vec<u32> = (0..60).map(|i| (i * 37 % 256) as u32).collect();
    let mut ctx = prism_analysis::backend::gpu::context::GpuContext::new(true).expect("adapter");
    ctx.limits.max_storage_buffer_binding_size = 32 << 10;
    let backend =
        prism_analysis::backend::gpu::GpuBackend::new(&model, std::sync::Arc::new(ctx)).unwrap();
    let capture = Capture {
        attention: true,
        logits: true,
        ..Capture::default()
    };
    let gpu = prism_analysis::trace::Trace::run(&model, &backend, &ids, capture, 5).unwrap();
    let cpu = run_cpu(&model, &ids, capture);
    let d = max_abs_diff(
        &as_f64(cpu.output.full_logits().unwrap()),
        &as_f64(gpu.output.full_logits().unwrap()),
    );
    assert!(d < 1e-4, "logits differ by {d}");
    let d = max_abs_diff(
        &as_f64(&cpu.output.attention_maps().unwrap().flat()),
        &as_f64(&gpu.output.attention_maps().unwrap().flat()),
    );
    assert!(d < 2e-5, "attention differs by {d}");
    // A sequence that cannot fit even one activation row in the binding is refused, not crashed.
    let mut tiny_ctx =
        prism_analysis::backend::gpu::context::GpuContext::new(true).expect("adapter");
    tiny_ctx.limits.max_storage_buffer_binding_size = 1024;
    let tiny_backend =
        prism_analysis::backend::gpu::GpuBackend::new(&model, std::sync::Arc::new(tiny_ctx))
            .unwrap();
    let err =
        prism_analysis::trace::Trace::run(&model, &tiny_backend, &ids, capture, 5).unwrap_err();
    assert!(err.to_string().contains("binds at once"), "{err}");
}

fn smollm2() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| load(&sample("smollm2")))
}

#[test]
fn smollm2_on_the_gpu_matches_transformers() {
    let reference = read_json(&reference_dir().join("smollm2_public.json"));
    let model = smollm2();
    let backend = prism_analysis::backend::gpu::GpuBackend::new(model, gpu()).unwrap();
    assert!(
        backend.weight_bytes < 150_000_000,
        "SmolLM2 Q4_1 must stay quantized on the GPU: {} bytes",
        backend.weight_bytes
    );
    for t in reference["texts"].as_array().unwrap().iter().take(3) {
        let ids = u32s(&t["token_ids"]);
        let trace = prism_analysis::trace::Trace::run(
            model,
            &backend,
            &ids,
            Capture {
                attention: true,
                ..Capture::default()
            },
            5,
        )
        .unwrap();
        let got: Vec<f64> = trace.surprisal_bits[1..]
            .iter()
            .map(|s| s.unwrap())
            .collect();
        let d = max_abs_diff(&got, &f64s(&t["surprisal_bits"]));
        assert!(d <= 0.01, "{:?}: surprisal off by {d}", t["text"]);
        for (pos, top) in t["top5_next_ids"].as_array().unwrap().iter().enumerate() {
            assert_eq!(trace.top[pos][0].id, u32s(top)[0], "top-1 at {pos}");
        }
        let maps = trace.attention().unwrap();
        for (key, layer) in [("layer_0", 0), ("layer_29", 29)] {
            let got: Vec<f64> = (0..maps.heads)
                .flat_map(|h| as_f64(maps.head(layer, h)))
                .collect();
            let d = max_abs_diff(&got, &f64s(&t["attentions"][key]));
            assert!(d <= 1e-4, "attention {key} off by {d}");
        }
    }
}

#[test]
fn minilm_on_the_gpu_matches_sentence_transformers() {
    let reference = read_json(&reference_dir().join("minilm_public.json"));
    let model = load(&sample("minilm"));
    let tok = model.tokenizer.as_ref().unwrap();
    for s in reference["sentences"].as_array().unwrap().iter().take(3) {
        let ids = tok.encode(s["text"].as_str().unwrap(), false).unwrap();
        let emb = run_gpu(&model, &ids, Capture::default()).mean_pooled_embedding();
        let want = f64s(&s["sentence_embedding"]);
        let cos: f64 = emb
            .iter()
            .zip(&want)
            .map(|(&a, b)| a as f64 * b)
            .sum::<f64>()
            / want.iter().map(|b| b * b).sum::<f64>().sqrt();
        assert!(cos >= 0.99999, "cosine {cos}");
    }
}

#[test]
fn neighbour_search_on_the_gpu_equals_the_cpu() {
    use prism_analysis::geometry::similarity::{GpuNeighborIndex, NeighborIndex};
    use prism_analysis::geometry::vectors::Table;
    let model = smollm2();
    let table = Table::from_weight(&model.weights.token_embedding).unwrap();
    let cpu = NeighborIndex::new(&table);
    let gpu_index = GpuNeighborIndex::new(gpu(), &table).unwrap();
    for q in [4461usize, 2382, 30] {
        let query = table.row(q).to_vec();
        let a = cpu.nearest(&query, 10, &[q as u32]);
        let b = gpu_index.nearest(&query, 10, &[q as u32]).unwrap();
        assert_eq!(
            a.iter().map(|n| n.id).collect::<Vec<_>>(),
            b.iter().map(|n| n.id).collect::<Vec<_>>(),
            "query {q}"
        );
        for (x, y) in a.iter().zip(&b) {
            assert!((x.cosine - y.cosine).abs() < 1e-5);
        }
    }
}

#[test]
fn a_failing_gpu_run_falls_back_to_the_cpu_under_auto() {
    // A binding limit too small for any activation makes every GPU run fail, like an out-of-memory.
    let model = std::sync::Arc::new(load(&tiny("llama-gguf/tiny-llama-q8_0.gguf")));
    let mut ctx = prism_analysis::backend::gpu::context::GpuContext::new(true).expect("adapter");
    ctx.limits.max_storage_buffer_binding_size = 64;
    let gpu_backend =
        prism_analysis::backend::gpu::GpuBackend::new(&model, std::sync::Arc::new(ctx));
    // Weights still upload, in one-row chunks; it is the first activation buffer that does not fit.
    let gpu_backend = gpu_backend.expect("weights upload in one-row chunks");
    let backend = prism_analysis::backend::with_cpu_fallback(gpu_backend, model.clone());
    let ids = [501u32, 500, 505, 194];
    let trace =
        prism_analysis::trace::Trace::run(&model, backend.as_ref(), &ids, Capture::default(), 5)
            .expect("the CPU takes over");
    assert!(
        backend.describe().contains("fell back"),
        "{}",
        backend.describe()
    );
    let cpu = run_cpu(&model, &ids, Capture::default());
    assert_eq!(trace.surprisal_bits, cpu.surprisal_bits);
}
