//! Chat templates: the Jinja programs that model files carry, rendered as transformers renders
//! them (`trim_blocks`, `lstrip_blocks`, Python string methods, `raise_exception`), on a budget.
//!
//! A model file comes from a stranger and its template is a program, so every render is bounded:
//! by work (minijinja's fuel), by recursion depth, by output size (no prompt longer than the
//! model's context can hold), by wall time, and by memory. Memory can only be bounded in a process
//! of its own: when the running program has registered itself with [`use_sandbox`] (the `prism`
//! binary does), a render runs in a child process started with [`SANDBOX_ARG`], under an
//! address-space limit, killed at the deadline or when the caller cancels. Without a sandbox
//! (library users, tests) it runs on a thread of this process with the other four bounds.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{PrismError, Result};
use crate::model::{ChatTemplate, Model};

pub use crate::model::MAX_TEMPLATE_BYTES;

/// The argument that makes the `prism` binary serve one render on stdin/stdout.
pub const SANDBOX_ARG: &str = "__render-chat-template";

/// The bounds on one render.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// minijinja instructions (a real chat template uses a few thousand per turn).
    pub fuel: u64,
    /// Nested macro calls, includes and recursive loops.
    pub recursion: usize,
    /// Bytes of rendered text.
    pub max_output: usize,
    pub wall_ms: u64,
    /// Address space of the sandbox process.
    pub memory_bytes: u64,
}

/// Bytes a rendered prompt may take per token of context: no token of any vocabulary Prism
/// opens is longer, so a longer prompt could not fit the context anyway.
const BYTES_PER_TOKEN: usize = 16;

impl Limits {
    /// The bounds for a model with this context length.
    pub fn for_context(context_length: usize) -> Limits {
        Limits {
            fuel: 20_000_000,
            recursion: 100,
            max_output: context_length.saturating_mul(BYTES_PER_TOKEN).max(64 << 10),
            wall_ms: 3_000,
            memory_bytes: 768 << 20,
        }
    }
}

/// Why a render failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Failure {
    /// The template is not valid Jinja, or raised, or failed at run time.
    Template(String),
    Fuel,
    Recursion,
    Output,
    Wall,
    Memory,
    TooLong(usize),
    Cancelled,
}

impl Failure {
    fn describe(&self, l: &Limits) -> String {
        match self {
            Failure::Template(m) => format!("the chat template does not render: {m}"),
            Failure::Fuel => format!(
                "the chat template ran past its work limit ({} steps) and was stopped",
                l.fuel
            ),
            Failure::Recursion => format!(
                "the chat template recursed deeper than its limit ({} levels)",
                l.recursion
            ),
            Failure::Output => format!(
                "the chat template rendered more than its output limit ({} bytes, more than the model's context can hold)",
                l.max_output
            ),
            Failure::Wall => format!(
                "the chat template ran longer than its time limit ({} s) and was stopped",
                l.wall_ms as f64 / 1000.0
            ),
            Failure::Memory => format!(
                "the chat template needed more than its memory limit ({} MiB) and was stopped",
                l.memory_bytes >> 20
            ),
            Failure::TooLong(n) => format!(
                "the chat template is {n} bytes, over the limit of {MAX_TEMPLATE_BYTES}; Prism does not run it"
            ),
            Failure::Cancelled => "cancelled".into(),
        }
    }

    fn into_error(self, origin: &str, l: &Limits) -> PrismError {
        match self {
            Failure::Cancelled => PrismError::Cancelled,
            f => PrismError::Input(format!("{origin}: {}", f.describe(l))),
        }
    }
}

/// A writer that refuses to grow past a limit.
struct Bounded {
    out: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders in this thread with the work, recursion and output bounds (not time or memory).
pub fn render(
    template: &str,
    messages: &[(&str, &str)],
    bos: &str,
    eos: &str,
    limits: &Limits,
) -> std::result::Result<String, Failure> {
    if template.len() > MAX_TEMPLATE_BYTES {
        return Err(Failure::TooLong(template.len()));
    }
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_fuel(Some(limits.fuel));
    env.set_recursion_limit(limits.recursion);
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    let bad = |e: minijinja::Error| {
        if e.kind() == minijinja::ErrorKind::OutOfFuel {
            return Failure::Fuel;
        }
        let mut msg = e.to_string();
        if msg.contains("recursion limit exceeded") {
            return Failure::Recursion;
        }
        if let Some(line) = e.line() {
            if !msg.contains("line") {
                msg = format!("line {line}: {msg}");
            }
        }
        Failure::Template(msg)
    };
    env.add_template("chat", template).map_err(bad)?;
    let msgs: Vec<serde_json::Value> = messages
        .iter()
        .map(|(r, c)| serde_json::json!({"role": r, "content": c}))
        .collect();
    let ctx = minijinja::context! {
        messages => msgs,
        add_generation_prompt => true,
        bos_token => bos,
        eos_token => eos,
    };
    let mut out = Bounded {
        out: Vec::new(),
        limit: limits.max_output,
        overflowed: false,
    };
    let tmpl = env.get_template("chat").map_err(bad)?;
    let rendered = tmpl.render_captured_to(ctx, &mut out);
    if out.overflowed {
        return Err(Failure::Output);
    }
    rendered.map_err(bad)?;
    String::from_utf8(out.out).map_err(|_| Failure::Template("the output is not UTF-8".into()))
}

static SANDBOX: OnceLock<PathBuf> = OnceLock::new();

/// Makes renders run in child processes of `exe`, which must call [`sandbox_main`] when its
/// first argument is [`SANDBOX_ARG`].
pub fn use_sandbox(exe: PathBuf) {
    let _ = SANDBOX.set(exe);
}

#[derive(Serialize, Deserialize)]
struct Job {
    template: String,
    messages: Vec<(String, String)>,
    bos: String,
    eos: String,
    limits: Limits,
}

/// The child's side: reads a job on stdin, renders it under the memory limit, writes the
/// result as JSON on stdout. Returns the exit code.
pub fn sandbox_main() -> i32 {
    let mut input = Vec::new();
    if std::io::stdin()
        .take(4 * MAX_TEMPLATE_BYTES as u64)
        .read_to_end(&mut input)
        .is_err()
    {
        return 3;
    }
    let Ok(job) = serde_json::from_slice::<Job>(&input) else {
        return 3;
    };
    limit_address_space(job.limits.memory_bytes);
    let messages: Vec<(&str, &str)> = job
        .messages
        .iter()
        .map(|(r, c)| (r.as_str(), c.as_str()))
        .collect();
    let result = render(&job.template, &messages, &job.bos, &job.eos, &job.limits);
    let Ok(json) = serde_json::to_vec(&result) else {
        return 3;
    };
    let mut out = std::io::stdout().lock();
    if out.write_all(&json).and_then(|_| out.flush()).is_err() {
        return 3;
    }
    0
}

#[cfg(unix)]
fn limit_address_space(bytes: u64) {
    let lim = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct it is given and changes only this process's limit; a
    // failure (a lower limit already set) leaves the stricter one in place.
    unsafe {
        libc::setrlimit(libc::RLIMIT_AS, &lim);
    }
}

#[cfg(not(unix))]
fn limit_address_space(_bytes: u64) {}

/// Renders with every bound, in the sandbox when there is one: the result, or why not.
pub fn render_bounded(
    template: &ChatTemplate,
    messages: &[(&str, &str)],
    bos: &str,
    eos: &str,
    limits: &Limits,
    cancel: &AtomicBool,
) -> Result<String> {
    if template.bytes > MAX_TEMPLATE_BYTES {
        return Err(Failure::TooLong(template.bytes).into_error(&template.origin, limits));
    }
    let job = Job {
        template: template.text.clone(),
        messages: messages
            .iter()
            .map(|(r, c)| (r.to_string(), c.to_string()))
            .collect(),
        bos: bos.to_string(),
        eos: eos.to_string(),
        limits: *limits,
    };
    let result = match SANDBOX.get() {
        Some(exe) => match in_child(exe, &job, cancel) {
            Some(r) => r,
            None => on_thread(job, cancel),
        },
        None => on_thread(job, cancel),
    };
    result.map_err(|f| f.into_error(&template.origin, limits))
}

/// Waits for `done` until the deadline or a cancel, polling every few milliseconds.
fn wait_bounded<T>(
    limits: &Limits,
    cancel: &AtomicBool,
    mut done: impl FnMut() -> Option<T>,
) -> std::result::Result<T, Failure> {
    let deadline = Instant::now() + Duration::from_millis(limits.wall_ms);
    loop {
        if let Some(v) = done() {
            return Ok(v);
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(Failure::Cancelled);
        }
        if Instant::now() >= deadline {
            return Err(Failure::Wall);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// In this process on a thread of its own, abandoned at the deadline (its fuel ends it soon).
fn on_thread(job: Job, cancel: &AtomicBool) -> std::result::Result<String, Failure> {
    let limits = job.limits;
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("chat-template".into())
        .spawn(move || {
            let messages: Vec<(&str, &str)> = job
                .messages
                .iter()
                .map(|(r, c)| (r.as_str(), c.as_str()))
                .collect();
            let _ = tx.send(render(
                &job.template,
                &messages,
                &job.bos,
                &job.eos,
                &job.limits,
            ));
        });
    if spawned.is_err() {
        return Err(Failure::Template(
            "cannot start a thread to render it".into(),
        ));
    }
    wait_bounded(&limits, cancel, || rx.try_recv().ok())?
}

/// In a child process under the memory limit; `None` when the child cannot be started.
fn in_child(
    exe: &std::path::Path,
    job: &Job,
    cancel: &AtomicBool,
) -> Option<std::result::Result<String, Failure>> {
    use std::process::{Command, Stdio};
    let input = serde_json::to_vec(job).ok()?;
    let mut child = Command::new(exe)
        .arg(SANDBOX_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let mut stdout = child.stdout.take()?;
    let mut stderr = child.stderr.take()?;
    let cap = job.limits.max_output as u64 * 8 + 4096;
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout).take(cap).read_to_end(&mut out);
        out
    });
    let err_reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stderr).take(64 << 10).read_to_end(&mut out);
        out
    });
    let status = wait_bounded(&job.limits, cancel, || child.try_wait().ok().flatten());
    let status = match status {
        Ok(s) => s,
        Err(f) => {
            let _ = child.kill();
            let _ = child.wait();
            return Some(Err(f));
        }
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let err = String::from_utf8_lossy(&err);
    if status.success() {
        if let Ok(r) = serde_json::from_slice::<std::result::Result<String, Failure>>(&out) {
            return Some(r);
        }
    }
    if err.contains("memory allocation") || err.contains("out of memory") {
        return Some(Err(Failure::Memory));
    }
    let first = err.lines().next().unwrap_or("").trim();
    Some(Err(Failure::Template(format!(
        "the renderer stopped ({status}){}",
        if first.is_empty() {
            String::new()
        } else {
            format!(": {first}")
        }
    ))))
}

/// A prompt through the model's chat template: one user turn, with the generation prompt,
/// on the model's limits; `cancel` stops a render in progress.
pub fn chat_prompt(model: &Model, user: &str, cancel: &AtomicBool) -> Result<String> {
    let template = model.info.chat_template.as_ref().ok_or_else(|| {
        PrismError::Input(format!(
            "{} has no chat template (GGUF tokenizer.chat_template or tokenizer_config.json chat_template)",
            model.info.path.display()
        ))
    })?;
    render_chat(template, model, &[("user", user)], cancel)
}

/// Renders `template` for `messages` (role, content) with `add_generation_prompt`, with the
/// model's BOS and EOS texts, on the model's limits.
pub fn render_chat(
    template: &ChatTemplate,
    model: &Model,
    messages: &[(&str, &str)],
    cancel: &AtomicBool,
) -> Result<String> {
    let tok = model.tokenizer.as_ref();
    let piece = |id: Option<u32>| {
        id.and_then(|i| tok.and_then(|t| t.token_piece(i)))
            .unwrap_or_default()
    };
    render_bounded(
        template,
        messages,
        &piece(tok.and_then(|t| t.bos_id)),
        &piece(tok.and_then(|t| t.eos_id)),
        &Limits::for_context(model.spec.context_length),
        cancel,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`render`] with default limits, as the `Result` callers see.
    fn render_template(
        template: &str,
        messages: &[(&str, &str)],
        bos: &str,
        eos: &str,
    ) -> Result<String> {
        let limits = Limits::for_context(8192);
        render(template, messages, bos, eos, &limits)
            .map_err(|f| f.into_error("chat template", &limits))
    }

    #[test]
    fn chat_templates_render_like_transformers() {
        // trim_blocks and lstrip_blocks, Python's str methods, bos/eos, the generation prompt.
        let t = "{{ bos_token }}{% for m in messages %}\n    {% if m.role == 'user' %}\n<|{{ m.role }}|>{{ m.content.strip() }}{{ eos_token }}\n    {% endif %}\n{% endfor %}\n{% if add_generation_prompt %}<|assistant|>{% endif %}";
        let out = render_template(t, &[("user", "  hi  ")], "<s>", "</s>").unwrap();
        assert_eq!(out, "<s><|user|>hi</s>\n<|assistant|>");
    }

    #[test]
    fn a_broken_or_raising_template_is_an_error_not_a_panic() {
        let e = render_template("{% for m in messages %}", &[("user", "x")], "", "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("chat template does not render"), "{e}");
        let e = render_template(
            "{{ raise_exception('Only user and assistant roles are supported') }}",
            &[("system", "x")],
            "",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("Only user and assistant"), "{e}");
    }

    fn limits() -> Limits {
        Limits::for_context(1024)
    }

    #[test]
    fn each_bound_stops_its_own_kind_of_hostile_template() {
        let l = limits();
        let r = |t: &str| render(t, &[("user", "hi")], "", "", &l);
        let start = Instant::now();
        assert_eq!(
            r("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
            Err(Failure::Fuel)
        );
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(
            r("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
            Err(Failure::Recursion)
        );
        assert_eq!(
            r("{% for i in range(100000) %}xxxxxxxxxxxxxxxx{% endfor %}"),
            Err(Failure::Output)
        );
        // Within every bound: the same text as without them.
        assert_eq!(
            r("{% for i in range(3) %}{{ i }}{% endfor %}").as_deref(),
            Ok("012")
        );
        assert!(matches!(
            r(&"x".repeat(MAX_TEMPLATE_BYTES + 1)),
            Err(Failure::TooLong(_))
        ));
    }

    #[test]
    fn the_wall_clock_and_cancel_end_a_render_on_a_thread() {
        // Enough fuel for a few seconds of work (the abandoned thread ends when it runs out).
        let mut l = limits();
        l.fuel = 100_000_000;
        l.wall_ms = 100;
        let job = |l: Limits| Job {
            template:
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
                    .into(),
            messages: vec![],
            bos: String::new(),
            eos: String::new(),
            limits: l,
        };
        let start = Instant::now();
        assert_eq!(
            on_thread(job(l), &AtomicBool::new(false)),
            Err(Failure::Wall)
        );
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(
            on_thread(job(l), &AtomicBool::new(true)),
            Err(Failure::Cancelled)
        );
    }

    #[test]
    fn errors_name_the_file_and_key_and_the_limit() {
        let l = limits();
        let e = Failure::Fuel
            .into_error("m.gguf: tokenizer.chat_template", &l)
            .to_string();
        assert!(e.starts_with("m.gguf: tokenizer.chat_template: "), "{e}");
        assert!(e.contains("20000000 steps"), "{e}");
    }
}
