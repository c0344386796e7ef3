//! Any bytes as model.safetensors next to a valid tiny Llama config.json.
#![no_main]
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = include_str!("../../tests/fixtures/reference/tiny/llama/config.json");

fuzz_target!(|data: &[u8]| {
    // Panics Prism contains (third-party parsers on bad input) are errors, as in the app; any other
    // panic still aborts and counts as a crash.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(prism_analysis::guard::install_quiet_hook_for_guarded);
    let dir = std::env::temp_dir().join(format!("prism-fuzz-st-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("config.json"), CONFIG);
    if std::fs::write(dir.join("model.safetensors"), data).is_ok() {
        let _ = prism_analysis::checkpoint::load(&dir);
    }
});
