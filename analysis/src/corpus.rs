//! Text corpora: a text file with one document per line, a JSONL file (one object per line with a
//! `"text"` string), a Parquet file (its `text` column), or a folder of such files (read in name
//! order). Empty lines are skipped;
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
                            Some("txt" | "jsonl" | "parquet")
                        )
                })
                .collect();
            v.sort();
            if v.is_empty() {
                return Err(PrismError::Input(format!(
                    "{}: the folder has no .txt, .jsonl or .parquet files",
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
            if f.extension().and_then(|e| e.to_str()) == Some("parquet") {
                documents.extend(
                    parquet_texts(f)?
                        .into_iter()
                        .filter(|t| !t.trim().is_empty()),
                );
                continue;
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

/// The `text` column of a Parquet file (a string column; other columns are not read). The
/// parquet crate's reader runs guarded: a hostile file that makes it panic is a format error.
fn parquet_texts(f: &Path) -> Result<Vec<String>> {
    crate::guard::guarded(|| parquet_texts_unguarded(f)).unwrap_or_else(|panic| {
        Err(PrismError::format(
            f,
            format!("not a readable Parquet file (its reader failed: {panic})"),
        ))
    })
}

fn parquet_texts_unguarded(f: &Path) -> Result<Vec<String>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let bad = |m: String| PrismError::format(f, m);
    let file = std::fs::File::open(f).map_err(|e| PrismError::Io {
        path: f.to_path_buf(),
        source: e,
    })?;
    let r = SerializedFileReader::new(file)
        .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?;
    let schema = r.metadata().file_metadata().schema();
    let col = schema
        .get_fields()
        .iter()
        .position(|c| c.name() == "text")
        .ok_or_else(|| bad("the Parquet file has no \"text\" column".into()))?;
    let projection = parquet::schema::types::Type::group_type_builder(schema.name())
        .with_fields(vec![schema.get_fields()[col].clone()])
        .build()
        .map_err(|e| bad(format!("its text column: {e}")))?;
    let rows = r
        .get_row_iter(Some(projection))
        .map_err(|e| bad(format!("cannot read its rows: {e}")))?;
    rows.enumerate()
        .map(|(i, row)| {
            let row = row.map_err(|e| bad(format!("row {i}: {e}")))?;
            row.get_string(0)
                .cloned()
                .map_err(|e| bad(format!("row {i}: the text column is not a string ({e})")))
        })
        .collect()
}
