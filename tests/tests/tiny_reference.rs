//! Every tiny seeded checkpoint (GPT-2, Llama, Qwen2, BERT; Llama also as F32/Q8_0/Q4_0/Q4_1 GGUF)
//! against the logits, hidden states and attentions PyTorch + transformers computed on it.
//! Tolerances are the ones in tests/fixtures/reference/tiny/README.md.

use std::path::Path;

use prism_analysis::backend::Capture;
use prism_tests::*;
use serde_json::Value;

const LOGITS_TOL: f64 = 1e-4;
const HIDDEN_TOL: f64 = 5e-5;
const ATTENTION_TOL: f64 = 2e-5;
const NORM_REL_TOL: f64 = 1e-5;

fn check(model_path: &Path, reference: &Path) {
    let model = load(model_path);
    let reference = read_json(reference);
    let spec = &model.spec;
    for (name, seq) in reference["sequences"].as_object().expect("sequences") {
        let ids = u32s(&seq["input_ids"]);
        let trace = run_cpu(&model, &ids, Capture::all());
        let out = &trace.output;
        let ctx = format!("{} {name}", model_path.display());

        if spec.causal {
            let logits = out.full_logits().expect("logits captured");
            let d = max_abs_diff(&as_f64(logits), &f64s(&seq["logits"]));
            assert!(d <= LOGITS_TOL, "{ctx}: logits differ by {d}");
            let argmax: Vec<u32> = logits
                .chunks(spec.vocab)
                .map(|r| {
                    r.iter()
                        .enumerate()
                        .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
                        .0 as u32
                })
                .collect();
            assert_eq!(argmax, u32s(&seq["argmax"]), "{ctx}: argmax");
            let last_block = out
                .residual
                .as_ref()
                .expect("residual")
                .last()
                .expect("layers");
            let d = max_abs_diff(&as_f64(last_block), &f64s(&seq["last_block_output"]));
            assert!(d <= HIDDEN_TOL, "{ctx}: last block output differs by {d}");
        }
        let d = max_abs_diff(&as_f64(&out.final_hidden), &f64s(&seq["last_hidden_state"]));
        assert!(d <= HIDDEN_TOL, "{ctx}: last_hidden_state differs by {d}");

        let att = out.attention_maps().expect("attention captured");
        let d = max_abs_diff(&as_f64(&att.flat()), &f64s(&seq["attentions"]));
        assert!(d <= ATTENTION_TOL, "{ctx}: attentions differ by {d}");

        // hidden_states[0..L-1] are residual entries; [L] is after the final norm (raw output for BERT).
        let want = &seq["hidden_state_l2_norms"];
        let residual = out.residual.as_ref().expect("residual");
        for layer in 0..=spec.n_layers {
            let got = if layer == spec.n_layers {
                row_norms(&out.final_hidden, spec.hidden)
            } else {
                row_norms(&residual[layer], spec.hidden)
            };
            for (g, w) in got.iter().zip(f64s(&want[layer])) {
                assert!(
                    (g - w).abs() <= NORM_REL_TOL * w.abs().max(1e-3),
                    "{ctx}: hidden norm layer {layer}: {g} vs {w}"
                );
            }
        }
        if let Value::Array(lens_ref) = &seq["logits"] {
            // The logit lens of the last layer must be the model's own prediction.
            let lens = out.logit_lens.as_ref().expect("lens");
            let last = lens.last().expect("lens layers");
            for (pos, row) in lens_ref.iter().enumerate() {
                let row = f64s(row);
                let best = row
                    .iter()
                    .enumerate()
                    .fold((0, f64::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
                    .0;
                assert_eq!(last[pos][0].id as usize, best, "{ctx}: lens top-1 at {pos}");
            }
            assert_eq!(lens.len(), spec.n_layers + 1);
        }
    }
}

#[test]
fn gpt2_matches_transformers() {
    check(&tiny("gpt2"), &tiny("gpt2/reference.json"));
}

#[test]
fn llama_matches_transformers() {
    check(&tiny("llama"), &tiny("llama/reference.json"));
}

#[test]
fn qwen2_matches_transformers() {
    check(&tiny("qwen2"), &tiny("qwen2/reference.json"));
}

#[test]
fn bert_matches_transformers() {
    check(&tiny("bert"), &tiny("bert/reference.json"));
}

#[test]
fn llama_gguf_all_types_match_transformers() {
    for ty in ["f32", "q8_0", "q4_0", "q4_1"] {
        check(
            &tiny(&format!("llama-gguf/tiny-llama-{ty}.gguf")),
            &tiny(&format!("llama-gguf/reference-{ty}.json")),
        );
    }
}

#[test]
fn single_safetensors_file_finds_its_config() {
    let model = load(&tiny("llama/model.safetensors"));
    assert_eq!(model.spec.n_layers, 2);
    assert_eq!(model.spec.n_kv_heads, 2);
}

#[test]
fn gguf_metadata_becomes_the_spec() {
    let model = load(&tiny("llama-gguf/tiny-llama-q4_1.gguf"));
    let s = &model.spec;
    assert_eq!(
        (
            s.n_layers,
            s.hidden,
            s.n_heads,
            s.n_kv_heads,
            s.head_dim,
            s.intermediate,
            s.vocab,
            s.context_length
        ),
        (2, 64, 4, 2, 16, 160, 512, 128)
    );
    assert!((s.norm_eps - 1e-5).abs() < 1e-9);
    assert!(!s.tied_embeddings, "the tiny GGUF stores output.weight");
    // Every 2-D matrix is quantized: 7 per layer, plus token_embd and output.
    assert_eq!(model.info.dtypes.get("Q4_1"), Some(&16));
    assert_eq!(model.info.dtypes.get("F32"), Some(&5));
}
