//! Any bytes as a chat template, rendered as Prism renders a model's template: in the sandbox
//! process (the `prism` binary named by `PRISM_BIN`) with every limit on (work, recursion, output,
//! time, memory). It must end with text or an error; a panic of the renderer (in the child or
//! here) or a hang is a crash.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prism_analysis::checkpoint::ChatTemplate;
use prism_analysis::template::{render_bounded, use_sandbox, Limits};

fuzz_target!(|data: &[u8]| {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let bin = std::env::var_os("PRISM_BIN").expect("PRISM_BIN: the prism binary to sandbox in");
        use_sandbox(bin.into());
    });
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let template = ChatTemplate {
        text: text.to_string(),
        bytes: text.len(),
        origin: "fuzz: tokenizer.chat_template".into(),
    };
    let mut limits = Limits::for_context(2048);
    limits.wall_ms = 2_000;
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let messages = [("system", "Be brief."), ("user", "Hi there"), ("assistant", "Hello.")];
    if let Err(e) = render_bounded(&template, &messages, "<s>", "</s>", &limits, &cancel) {
        let e = e.to_string();
        assert!(!e.contains("panicked"), "the renderer panicked: {e}");
    }
});
