//! Text corpora: a text file with one document per line, a JSONL file (one object per line with a
//! `"text"` string), or a folder of such files (read in name order). Empty lines are skipped;
//! what cannot be read is named with its file and line.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{PrismError, Result};

/// The documents of a corpus, in order.
pub struct Corpus {
    pub path: PathBuf,
    pub documents: Vec<String>,
}

/// At most this many bytes of corpus text are read into memory at once.
pub const MAX_BYTES: u64 = 4 << 30;

impl Corpus {
    pub fn read(path: &Path) -> Result<Corpus> {
        let files = if path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| PrismError::Io {
                    path: path.to_path_buf(),
                    source: e,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(
                            p.extension().and_then(|e| e.to_str()),
                            Some("txt" | "jsonl")
                        )
                })
                .collect();
            v.sort();
            if v.is_empty() {
                return Err(PrismError::Input(format!(
                    "{}: the folder has no .txt or .jsonl files",
                    path.display()
                )));
            }
            v
        } else {
            vec![path.to_path_buf()]
        };
        let mut documents = Vec::new();
        let mut total = 0u64;
        for f in &files {
            let size = std::fs::metadata(f)
                .map_err(|e| PrismError::Io {
                    path: f.clone(),
                    source: e,
                })?
                .len();
            total += size;
            if total > MAX_BYTES {
                return Err(PrismError::Input(format!(
                    "{}: the corpus is larger than {} GiB; split it",
                    path.display(),
                    MAX_BYTES >> 30
                )));
            }
            let bytes = std::fs::read(f).map_err(|e| PrismError::Io {
                path: f.clone(),
                source: e,
            })?;
            let text = String::from_utf8(bytes).map_err(|e| {
                let at = e.utf8_error().valid_up_to();
                PrismError::format(f, format!("not UTF-8 text (byte {at})"))
            })?;
            let jsonl = f.extension().and_then(|e| e.to_str()) == Some("jsonl");
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                if jsonl {
                    let v: serde_json::Value = serde_json::from_str(line)
                        .map_err(|e| PrismError::format(f, format!("line {}: {e}", i + 1)))?;
                    let t = v.get("text").and_then(|t| t.as_str()).ok_or_else(|| {
                        PrismError::format(f, format!("line {}: no \"text\" string", i + 1))
                    })?;
                    documents.push(t.to_string());
                } else {
                    documents.push(line.to_string());
                }
            }
        }
        if documents.is_empty() {
            return Err(PrismError::Input(format!(
                "{}: the corpus has no documents (no non-empty lines)",
                path.display()
            )));
        }
        Ok(Corpus {
            path: path.to_path_buf(),
            documents,
        })
    }

    /// SHA-256 of the documents (each with its length), hex: what a resumed run checks.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for d in &self.documents {
            h.update((d.len() as u64).to_le_bytes());
            h.update(d.as_bytes());
        }
        format!("{:x}", h.finalize())
    }
}
