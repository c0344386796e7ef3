//! Any bytes as a .gguf file: header scan, candle's reader, metadata, spec, tensors, tokenizer.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Panics Prism contains (third-party parsers on bad input) are errors, as in the app; any other
    // panic still aborts and counts as a crash.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(prism_analysis::guard::install_quiet_hook_for_guarded);
    let path = std::env::temp_dir().join(format!("prism-fuzz-{}.gguf", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        if let Ok(model) = prism_analysis::checkpoint::load(&path) {
            if let Some(t) = &model.tokenizer {
                let _ = t.encode("Fuzz text: 12 café 🙂", true);
            }
        }
    }
});
