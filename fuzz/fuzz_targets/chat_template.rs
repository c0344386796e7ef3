//! Any bytes as a chat template, rendered in this process with the limits on (work, recursion,
//! output): it must end with text or an error, never a panic, a hang or unbounded memory.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(template) = std::str::from_utf8(data) else {
        return;
    };
    let limits = prism_analysis::template::Limits::for_context(2048);
    let _ = prism_analysis::template::render(
        template,
        &[("system", "Be brief."), ("user", "Hi there"), ("assistant", "Hello.")],
        "<s>",
        "</s>",
        &limits,
    );
});
