//! `fetch-samples` against a package index served on loopback: verification, atomic unpacking,
//! resuming an interrupted download, and refusing corrupt or hostile wheels.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prism_analysis::samples::{fetch_into, parse_manifest, Progress, Sample};
use prism_analysis::PrismError;
use prism_tests::TempDir;
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn wheel(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, data) in entries {
            z.start_file(*name, opts).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }
    buf.into_inner()
}

#[derive(Default)]
struct Log {
    requests: Vec<String>,
    ranges: Vec<String>,
}

/// A tiny HTTP server on 127.0.0.1 for one project. `cut_first` drops the first wheel download
/// after that many bytes; it serves at most 50 connections and then stops.
struct Index {
    port: u16,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
}

impl Index {
    fn start(
        wheel_name: &str,
        wheel_bytes: Vec<u8>,
        listed_sha: String,
        cut_first: Option<usize>,
    ) -> Index {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2, name) = (log.clone(), stop.clone(), wheel_name.to_string());
        std::thread::spawn(move || {
            let mut cut = cut_first;
            for conn in listener.incoming().take(50) {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut s) = conn else { continue };
                let mut req = Vec::new();
                let mut b = [0u8; 1];
                while !req.ends_with(b"\r\n\r\n") && s.read(&mut b).map(|n| n == 1).unwrap_or(false)
                {
                    req.push(b[0]);
                }
                let req = String::from_utf8_lossy(&req).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                let range = req
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("Range: bytes=")
                            .or_else(|| l.strip_prefix("range: bytes="))
                    })
                    .map(|r| r.trim().to_string());
                {
                    let mut l = log2.lock().unwrap();
                    l.requests.push(path.clone());
                    if let Some(r) = &range {
                        l.ranges.push(r.clone());
                    }
                }
                if path.starts_with("/simple/") {
                    let body = format!(
                        r#"{{"meta":{{"api-version":"1.0"}},"name":"p","files":[{{"filename":"{name}","url":"http://127.0.0.1:{port}/files/{name}","hashes":{{"sha256":"{listed_sha}"}}}}]}}"#
                    );
                    let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.pypi.simple.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                } else if path == format!("/files/{name}") {
                    let start: usize = range
                        .as_deref()
                        .and_then(|r| r.trim_end_matches('-').parse().ok())
                        .unwrap_or(0);
                    let body = &wheel_bytes[start.min(wheel_bytes.len())..];
                    let status = if start > 0 {
                        "206 Partial Content"
                    } else {
                        "200 OK"
                    };
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    match cut.take() {
                        Some(n) => {
                            let _ = s.write_all(&body[..n.min(body.len())]);
                        }
                        None => {
                            let _ = s.write_all(body);
                        }
                    }
                } else {
                    let _ = write!(
                        s,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        });
        Index { port, log, stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/simple", self.port)
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn sample(wheel_name: &str, wheel_sha: &str, model_sha: &str) -> Sample {
    let text = format!(
        "[toy]\nproject = toy-model\nversion = 1.0\nwheel = {wheel_name}\nwheel_sha256 = {wheel_sha}\nextract = toy/model/\nopen = .\nsha256 weights.bin = {model_sha}\n"
    );
    parse_manifest(&text).unwrap().remove(0)
}

fn payload() -> (Vec<u8>, Vec<u8>) {
    let weights: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let w = wheel(&[
        ("toy/__init__.py", b"" as &[u8]),
        ("toy/model/weights.bin", &weights),
        ("toy/model/sub/config.json", b"{}"),
    ]);
    (w, weights)
}

fn run(s: &Sample, root: &Path, index: &str) -> Result<std::path::PathBuf, PrismError> {
    let cancel = AtomicBool::new(false);
    let mut events = Vec::new();
    fetch_into(
        s,
        root,
        index,
        &mut |p: Progress| events.push(format!("{p:?}")),
        &cancel,
    )
}

#[test]
fn fetch_verifies_unpacks_and_then_does_nothing() {
    let (w, weights) = payload();
    let s = sample("toy-1.0-py3-none-any.whl", &sha(&w), &sha(&weights));
    let server = Index::start(&s.wheel, w.clone(), sha(&w), None);
    let root = TempDir::new("fetch-ok");
    let path = run(&s, root.path(), &server.url()).expect("fetch");
    assert_eq!(path, root.path().join("toy"));
    assert_eq!(std::fs::read(path.join("weights.bin")).unwrap(), weights);
    assert!(path.join("sub/config.json").exists());
    assert!(
        !path.join("__init__.py").exists(),
        "only the model folder is unpacked"
    );
    let leftovers: Vec<_> = std::fs::read_dir(root.path().join(".downloads"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "download folder is cleaned up");
    let before = server.log.lock().unwrap().requests.len();
    run(&s, root.path(), &server.url()).expect("second fetch");
    assert_eq!(
        server.log.lock().unwrap().requests.len(),
        before,
        "a present sample is not downloaded again"
    );
}

#[test]
fn interrupted_download_leaves_nothing_and_resumes() {
    let (w, weights) = payload();
    let s = sample("toy-1.0-py3-none-any.whl", &sha(&w), &sha(&weights));
    let server = Index::start(&s.wheel, w.clone(), sha(&w), Some(70_000));
    let root = TempDir::new("fetch-resume");
    let err = run(&s, root.path(), &server.url()).expect_err("the first download is cut");
    assert!(
        !root.path().join("toy").exists(),
        "no half-written sample: {err}"
    );
    let part = root
        .path()
        .join(".downloads")
        .join(format!("{}.part", s.wheel));
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 70_000);
    run(&s, root.path(), &server.url()).expect("resumed fetch");
    assert_eq!(
        server.log.lock().unwrap().ranges,
        vec!["70000-".to_string()],
        "the second try asked for the rest only"
    );
    assert_eq!(
        std::fs::read(root.path().join("toy/weights.bin")).unwrap(),
        weights
    );
}

#[test]
fn corrupt_download_is_discarded() {
    let (w, weights) = payload();
    let s = sample("toy-1.0-py3-none-any.whl", &sha(&w), &sha(&weights));
    let mut bad = w.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    let server = Index::start(&s.wheel, bad, sha(&w), None);
    let root = TempDir::new("fetch-corrupt");
    let err = run(&s, root.path(), &server.url()).expect_err("sha mismatch");
    assert!(err.to_string().contains("sha256"), "{err}");
    assert!(!root.path().join("toy").exists());
    assert!(
        !root
            .path()
            .join(".downloads")
            .join(format!("{}.part", s.wheel))
            .exists(),
        "a corrupt partial file is not kept for resuming"
    );
}

#[test]
fn index_disagreeing_with_the_pin_is_refused() {
    let (w, weights) = payload();
    let s = sample("toy-1.0-py3-none-any.whl", &sha(&w), &sha(&weights));
    let server = Index::start(&s.wheel, w, "0".repeat(64), None);
    let root = TempDir::new("fetch-pin");
    let err = run(&s, root.path(), &server.url()).expect_err("pin mismatch");
    assert!(err.to_string().contains("manifest pins"), "{err}");
}

#[test]
fn wheel_entries_cannot_escape_the_sample_folder() {
    let evil = wheel(&[
        ("toy/model/../../../evil.txt", b"x" as &[u8]),
        ("toy/model/weights.bin", b"w"),
    ]);
    let s = sample("toy-1.0-py3-none-any.whl", &sha(&evil), &sha(b"w"));
    let server = Index::start(&s.wheel, evil.clone(), sha(&evil), None);
    let root = TempDir::new("fetch-slip");
    let err = run(&s, root.path(), &server.url()).expect_err("zip slip");
    assert!(err.to_string().contains("escape"), "{err}");
    assert!(!root.path().join("toy").exists());
    assert!(!root.path().parent().unwrap().join("evil.txt").exists());
}
