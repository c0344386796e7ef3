//! Writing a file so that a crash never leaves it half-written: a temporary file in the same
//! folder, synced, then renamed over the target.

use std::io::Write;
use std::path::Path;

use crate::error::{PrismError, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a crash
/// never leaves a truncated file behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(PrismError::Input(format!(
            "{}: the folder does not exist",
            dir.display()
        )));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("figure");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        PrismError::io(path, e)
    })
}
