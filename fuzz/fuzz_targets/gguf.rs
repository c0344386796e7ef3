//! Any bytes as a .gguf file: header scan, candle's reader, metadata, spec, tensors, tokenizer.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("prism-fuzz-{}.gguf", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        if let Ok(model) = prism_analysis::checkpoint::load(&path) {
            if let Some(t) = &model.tokenizer {
                let _ = t.encode("Fuzz text: 12 café 🙂", true);
            }
        }
    }
});
