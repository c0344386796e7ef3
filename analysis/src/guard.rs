//! Containing panics in third-party parsers. Some libraries panic on malformed input instead of
//! returning an error (the `tokenizers` crate did, on a mangled `tokenizer.json`, found by fuzzing).
//! [`guarded`] turns such a panic into an error; while it runs, [`is_guarded`] tells a process-wide
//! panic hook to stay quiet and let the unwinding reach it.

use std::cell::Cell;

thread_local! {
    static GUARDED: Cell<u32> = const { Cell::new(0) };
}

/// True while the current thread is inside [`guarded`].
pub fn is_guarded() -> bool {
    GUARDED.with(|g| g.get() > 0)
}

/// Runs `f`; a panic inside it becomes `Err` with the panic's message.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    GUARDED.with(|g| g.set(g.get() + 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get().saturating_sub(1)));
    result.map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into())
    })
}

/// Installs a panic hook that stays silent for guarded panics and otherwise defers to `outer`.
pub fn install_quiet_hook_for_guarded() {
    let outer = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_guarded() {
            outer(info);
        }
    }));
}
