//! Any bytes as tokenizer.json: loading, then encoding and decoding a text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Panics Prism contains (third-party parsers on bad input) are errors, as in the app; any other
    // panic still aborts and counts as a crash.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(prism_analysis::guard::install_quiet_hook_for_guarded);
    let path = std::env::temp_dir().join(format!("prism-fuzz-tok-{}.json", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        if let Ok(t) = prism_analysis::tokenizer::PrismTokenizer::from_file(&path) {
            if let Ok(ids) = t.encode("Fuzz text: 12 café 🙂\n", true) {
                for id in ids.iter().take(64) {
                    let _ = t.token_text(*id);
                }
            }
        }
    }
});
