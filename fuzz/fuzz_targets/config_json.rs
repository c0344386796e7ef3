//! Any bytes as config.json next to the tiny Llama weights (read once, reused).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Panics Prism contains (third-party parsers on bad input) are errors, as in the app; any other
    // panic still aborts and counts as a crash.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(prism_analysis::guard::install_quiet_hook_for_guarded);
    let dir = std::env::temp_dir().join(format!("prism-fuzz-cfg-{}", std::process::id()));
    let weights = dir.join("model.safetensors");
    if !weights.exists() {
        let _ = std::fs::create_dir_all(&dir);
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/reference/tiny/llama/model.safetensors");
        let _ = std::fs::copy(src, &weights);
    }
    if std::fs::write(dir.join("config.json"), data).is_ok() {
        let _ = prism_analysis::checkpoint::load(&dir);
    }
});
