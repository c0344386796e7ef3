//! Every weight decoder against the values gguf-py's `dequantize` gives for real llama.cpp blocks
//! (tests/fixtures/archs/dequant_checks.json, archs/qwen3moe/ for MXFP4, archs/qwen3/ for TQ1_0,
//! TQ2_0, Q1_0 and Q2_0: gguf-py has no Q1_0/Q2_0 decoder, so those two come from ggml's own), bit
//! for bit; Q5_0 and Q5_1, which no reference file uses, against candle-core's ggml port.

use prism_analysis::quant::{dequantize, GgmlType};
use prism_tests::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn type_named(name: &str) -> GgmlType {
    GgmlType::ALL
        .into_iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no type {name}"))
}

#[test]
fn every_decoder_reproduces_gguf_py_bit_for_bit() {
    let files = [
        "archs/dequant_checks.json",
        "archs/qwen3moe/dequant_checks.json",
        "archs/qwen3/dequant_checks.json",
    ];
    let checks: Vec<serde_json::Value> = files
        .iter()
        .flat_map(|f| {
            read_json(&fixtures().join(f))["checks"]
                .as_array()
                .unwrap()
                .clone()
        })
        .collect();
    let mut seen = Vec::new();
    for c in &checks {
        let ty = type_named(c["ggml_type"].as_str().unwrap());
        let bytes = hex(c["first_bytes_hex"].as_str().unwrap());
        let qk = ty.block_values();
        let n = bytes.len() / ty.block_bytes() * qk;
        let mut got = vec![f32::NAN; n];
        dequantize(ty, &bytes, &mut got);
        let first64: Vec<f32> = f64s(&c["first64"]).iter().map(|&v| v as f32).collect();
        assert_eq!(&got[..64], &first64[..], "{}: first 64 values", ty.name());
        if let Some(block) = c.get("first_block_values") {
            let block: Vec<f32> = f64s(block).iter().map(|&v| v as f32).collect();
            assert_eq!(
                &got[..block.len()],
                &block[..],
                "{}: first block",
                ty.name()
            );
        }
        seen.push(ty);
    }
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::IQ4NL,
        GgmlType::IQ4XS,
        GgmlType::MXFP4,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::Q1_0,
        GgmlType::Q2_0,
    ] {
        assert!(seen.contains(&ty), "no check for {}", ty.name());
    }
}

#[test]
fn q5_and_q4_1_decoders_match_candle_core() {
    use candle_core::quantized::{GgmlDType, QTensor};
    for (ty, candle_ty) in [
        (GgmlType::Q5_0, GgmlDType::Q5_0),
        (GgmlType::Q5_1, GgmlDType::Q5_1),
        (GgmlType::Q4_1, GgmlDType::Q4_1),
    ] {
        let data = prism_tests::synth::Rng::new(11).vec(4 * 64, 0.7, 0.1);
        let t = candle_core::Tensor::from_vec(data, (4, 64), &candle_core::Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, candle_ty).unwrap();
        let want: Vec<f32> = q
            .dequantize(&candle_core::Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut got = vec![f32::NAN; 256];
        dequantize(ty, &q.data().unwrap(), &mut got);
        assert_eq!(got, want, "{}", ty.name());
    }
}
