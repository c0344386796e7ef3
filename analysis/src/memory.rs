//! Memory limits: a model or a capture that would not fit is refused before anything is
//! allocated, with the estimate and what the machine has, so that the OS's out-of-memory killer
//! is never what stops Prism.
//!
//! What is available comes from `/proc/meminfo` (`MemAvailable`) on Linux; elsewhere no check is
//! made. `PRISM_MEMORY_LIMIT` (bytes, or with a K/M/G suffix) overrides it, to test the refusal or
//! to keep Prism inside a budget.

use crate::error::{PrismError, Result};

/// What loading costs beyond the weights: the tokenizer, tables, thread stacks and one pass's
/// scratch at ordinary lengths.
pub const OVERHEAD: u64 = 300 << 20;

/// Bytes the process may still allocate, if known.
pub fn available() -> Option<u64> {
    if let Some(v) = std::env::var_os("PRISM_MEMORY_LIMIT") {
        return parse_size(&v.to_string_lossy());
    }
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some((v * mult as f64) as u64)
}

/// Bytes for people: "1.2 GB", "340 MB".
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.0} MB", b / 1e6)
    } else {
        format!("{:.0} KB", b / 1e3)
    }
}

/// Refuses `need` bytes for `what` when more than is available, saying what to do instead.
pub fn check(need: u64, what: &str, advice: &str) -> Result<()> {
    match available() {
        Some(have) if need > have => Err(PrismError::TooLarge(format!(
            "{what} needs about {} of memory, and {} is available; {advice}",
            human(need),
            human(have)
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("2K"), Some(2048));
        assert_eq!(parse_size("1.5g"), Some(3 << 29));
        assert_eq!(parse_size("lots"), None);
    }
}
