//! The two real sample models against PyTorch + transformers (tests/fixtures/reference/):
//! SmolLM2-135M (GGUF Q4_1) and all-MiniLM-L6-v2 (safetensors). Needs `prism fetch-samples`.

use std::sync::OnceLock;

use prism_analysis::backend::Capture;
use prism_analysis::checkpoint::Model;
use prism_tests::*;
use serde_json::Value;

fn smollm2() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| load(&sample("smollm2")))
}

fn minilm() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| load(&sample("minilm")))
}

fn texts(file: &str, key: &str) -> Vec<Value> {
    read_json(&reference_dir().join(file))[key]
        .as_array()
        .expect("texts")
        .clone()
}

#[test]
fn smollm2_token_ids_match() {
    let tok = smollm2().tokenizer.as_ref().expect("tokenizer");
    for t in texts("smollm2_public.json", "texts") {
        let ids = tok.encode(t["text"].as_str().unwrap(), false).unwrap();
        assert_eq!(ids, u32s(&t["token_ids"]), "{:?}", t["text"]);
        let with_bos = tok.encode(t["text"].as_str().unwrap(), true).unwrap();
        assert_eq!(
            with_bos,
            u32s(&t["with_bos"]["token_ids"]),
            "with BOS: {:?}",
            t["text"]
        );
    }
}

#[test]
fn smollm2_tricky_strings_tokenize_like_llama_cpp() {
    let tok = smollm2().tokenizer.as_ref().expect("tokenizer");
    let cmp = read_json(&reference_dir().join("llamacpp_comparison.json"));
    for (text, ids) in cmp["extra_strings_llamacpp_ids"].as_object().unwrap() {
        assert_eq!(tok.encode(text, false).unwrap(), u32s(ids), "{text:?}");
    }
}

fn check_smollm2_text(t: &Value, with_bos: bool) {
    let model = smollm2();
    let (ids, want_bits) = if with_bos {
        (
            u32s(&t["with_bos"]["token_ids"]),
            f64s(&t["with_bos"]["surprisal_bits"]),
        )
    } else {
        (u32s(&t["token_ids"]), f64s(&t["surprisal_bits"]))
    };
    let capture = Capture {
        attention: t.get("attentions").is_some() && !with_bos,
        residual: !with_bos,
        ..Capture::default()
    };
    let trace = run_cpu(model, &ids, capture);
    let text = t["text"].as_str().unwrap();
    // Surprisal within 0.01 bits at every predicted position. With BOS, position 0 is BOS and
    // every text token is predicted.
    let got: Vec<f64> = trace
        .surprisal_bits
        .iter()
        .skip(1)
        .map(|s| s.expect("surprisal"))
        .collect();
    let d = max_abs_diff(&got, &want_bits);
    assert!(
        d <= 0.01,
        "{text:?} (bos {with_bos}): surprisal off by {d} bits"
    );
    if with_bos {
        return;
    }
    for (pos, top) in t["top5_next_ids"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            trace.top[pos][0].id,
            u32s(top)[0],
            "{text:?}: top-1 at {pos}"
        );
        let probs = f64s(&t["top5_next_probs"][pos]);
        assert!(
            (trace.top[pos][0].p as f64 - probs[0]).abs() < 1e-3,
            "{text:?}: top-1 probability at {pos}"
        );
    }
    // Hidden-state norms within 1e-3 relative: [0..29] residual, [30] after the final norm.
    let norms = trace.residual_norms().expect("residual");
    let want = &t["hidden_state_l2_norms"];
    let n_layers = model.spec.n_layers;
    for layer in 0..=n_layers {
        let got = if layer == n_layers {
            row_norms(&trace.output.final_hidden, model.spec.hidden)
        } else {
            norms[layer].clone()
        };
        for (g, w) in got.iter().zip(f64s(&want[layer])) {
            assert!(
                (g - w).abs() <= 1e-3 * w,
                "{text:?}: norm at layer {layer}: {g} vs {w}"
            );
        }
    }
    for (g, w) in norms[n_layers]
        .iter()
        .zip(f64s(&t["final_layer_raw_output_l2_norms_pre_final_norm"]))
    {
        assert!(
            (g - w).abs() <= 1e-3 * w,
            "{text:?}: raw last layer norm {g} vs {w}"
        );
    }
    if let Some(att) = t.get("attentions") {
        let maps = trace.attention().expect("attention");
        for (key, layer) in [("layer_0", 0), ("layer_29", 29)] {
            let want = f64s(&att[key]);
            let got: Vec<f64> = (0..maps.heads)
                .flat_map(|h| {
                    maps.head(layer, h)
                        .iter()
                        .map(|&x| x as f64)
                        .collect::<Vec<_>>()
                })
                .collect();
            let d = max_abs_diff(&got, &want);
            assert!(d <= 1e-4, "{text:?}: attention {key} off by {d}");
        }
    }
}

#[test]
fn smollm2_surprisal_top1_norms_and_attention_match() {
    for t in texts("smollm2_public.json", "texts") {
        check_smollm2_text(&t, false);
    }
}

#[test]
fn smollm2_with_bos_matches() {
    for t in texts("smollm2_public.json", "texts").iter().take(3) {
        check_smollm2_text(t, true);
    }
}

#[test]
fn smollm2_last_logits_match() {
    let model = smollm2();
    let t = &texts("smollm2_public.json", "texts")[0];
    let ids = u32s(&t["token_ids"]);
    let trace = run_cpu(
        model,
        &ids,
        Capture {
            logits: true,
            ..Capture::default()
        },
    );
    let logits = trace.output.full_logits().unwrap();
    let last = &logits[(ids.len() - 1) * model.spec.vocab..][..8];
    let d = max_abs_diff(&as_f64(last), &f64s(&t["last_logits_first8"]));
    assert!(d < 2e-3, "last logits off by {d}");
}

#[test]
fn minilm_tokens_embeddings_norms_and_attention_match() {
    let model = minilm();
    let tok = model.tokenizer.as_ref().expect("tokenizer");
    let sentences = texts("minilm_public.json", "sentences");
    for s in &sentences {
        let text = s["text"].as_str().unwrap();
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(ids, u32s(&s["token_ids"]), "{text:?}");
        let trace = run_cpu(
            model,
            &ids,
            Capture {
                attention: true,
                residual: true,
                ..Capture::default()
            },
        );
        let emb = trace.mean_pooled_embedding();
        let want = f64s(&s["sentence_embedding"]);
        let dot: f64 = emb.iter().zip(&want).map(|(&a, b)| a as f64 * b).sum();
        let na: f64 = emb.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
        assert!(
            dot / (na * nb) >= 0.99999,
            "{text:?}: cosine {}",
            dot / (na * nb)
        );
        let h = model.spec.hidden;
        for (pos, row) in s["last_hidden_state_first8"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let got = as_f64(&trace.output.final_hidden[pos * h..pos * h + 8]);
            assert!(
                max_abs_diff(&got, &f64s(row)) < 1e-4,
                "{text:?}: last hidden at {pos}"
            );
        }
        let norms = trace.residual_norms().unwrap();
        for (layer, want) in s["hidden_state_l2_norms"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            for (g, w) in norms[layer].iter().zip(f64s(want)) {
                assert!((g - w).abs() <= 1e-3 * w, "{text:?}: norm at layer {layer}");
            }
        }
        if let Some(att) = s.get("attentions") {
            let maps = trace.attention().unwrap();
            for (key, layer) in [("layer_0", 0), ("layer_5", 5)] {
                let got: Vec<f64> = (0..maps.heads)
                    .flat_map(|hd| {
                        maps.head(layer, hd)
                            .iter()
                            .map(|&x| x as f64)
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let d = max_abs_diff(&got, &f64s(&att[key]));
                assert!(d <= 1e-4, "{text:?}: attention {key} off by {d}");
            }
        }
    }
}
