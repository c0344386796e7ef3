//! Chat templates in the sandbox process (the `prism` binary re-run with its render argument):
//! the memory limit, the time limit and Stop all end a render, and a good template renders as
//! it does in this process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prism_analysis::checkpoint::ChatTemplate;
use prism_analysis::template::{render, render_bounded, use_sandbox, Limits};
use prism_analysis::PrismError;
use prism_tests::*;

fn template(text: &str) -> ChatTemplate {
    ChatTemplate {
        text: text.into(),
        bytes: text.len(),
        origin: "test.gguf: tokenizer.chat_template".into(),
    }
}

const SPIN: &str =
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";

#[test]
fn the_sandbox_bounds_memory_and_time_and_stops_when_cancelled() {
    use_sandbox(prism_bin());
    let limits = Limits::for_context(2048);
    let msgs = [("user", "Hi")];
    let run = |t: &str, l: &Limits, cancel: &AtomicBool| {
        render_bounded(&template(t), &msgs, "<s>", "</s>", l, cancel)
    };
    let no = AtomicBool::new(false);
    // A real template: the same text as in this process.
    let chatml = "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    assert_eq!(
        run(chatml, &limits, &no).unwrap(),
        render(chatml, &msgs, "<s>", "</s>", &limits).unwrap()
    );
    // Doubling a string: the child's address-space limit ends it.
    let doubling = "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}";
    let e = run(doubling, &limits, &no).unwrap_err().to_string();
    assert!(
        e.contains("memory limit") && e.starts_with("test.gguf: tokenizer.chat_template"),
        "{e}"
    );
    // Endless work with the fuel limit lifted: the wall clock ends it.
    let mut slow = limits;
    slow.fuel = 1 << 40;
    slow.wall_ms = 300;
    let start = Instant::now();
    let e = run(SPIN, &slow, &no).unwrap_err().to_string();
    assert!(e.contains("time limit"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // Stop: a render in progress ends within moments of the flag.
    slow.wall_ms = 60_000;
    let cancel = AtomicBool::new(false);
    let start = Instant::now();
    let e = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            cancel.store(true, Ordering::SeqCst);
        });
        run(SPIN, &slow, &cancel).unwrap_err()
    });
    assert!(matches!(e, PrismError::Cancelled), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}
