//! Reading a GGUF file. The header is walked with a bounds check before every read, so a hostile
//! header cannot make Prism allocate more than the file justifies, and every error names the byte
//! offset where the file went wrong. Limits mirror llama.cpp's.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use super::{GgufFile, TensorEntry, Value};
use crate::error::{PrismError, Result};
use crate::quant::ggml_block;

const MAX_STRING: u64 = 1 << 30;
const MAX_COUNT: u64 = 1 << 30;
const MAX_DIMS: u32 = 4;
const MAX_DEPTH: usize = 8;
/// Bytes a parsed metadata array element costs in memory, whatever its size on disk.
const VALUE_BYTES: u64 = std::mem::size_of::<Value>() as u64;

struct Cursor<R> {
    inner: R,
    pos: u64,
    len: u64,
    path: std::path::PathBuf,
    array_elements: u64,
}

impl<R: Read> Cursor<R> {
    fn err<T>(&self, msg: impl std::fmt::Display) -> Result<T> {
        Err(PrismError::format(
            &self.path,
            format!("GGUF header, byte {}: {msg}", self.pos),
        ))
    }

    fn need(&self, n: u64, what: &str) -> Result<()> {
        let left = self.len.saturating_sub(self.pos);
        if n > left {
            return self.err(format!(
                "{what} needs {n} bytes but the file ends after {left} (truncated?)"
            ));
        }
        Ok(())
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        self.need(N as u64, what)?;
        let mut b = [0u8; N];
        self.inner
            .read_exact(&mut b)
            .map_err(|e| PrismError::io(&self.path, e))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes::<4>(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes::<8>(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        if n > MAX_STRING {
            return self.err(format!("{what} claims a string of {n} bytes"));
        }
        self.need(n, what)?;
        let mut v = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut v)
            .map_err(|e| PrismError::io(&self.path, e))?;
        self.pos += n;
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.bytes::<1>(key)?[0]),
            1 => Value::I8(self.bytes::<1>(key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.bytes::<2>(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes::<2>(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(self.u32(key)? as i32),
            6 => Value::F32(f32::from_bits(self.u32(key)?)),
            7 => match self.bytes::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return self.err(format!("metadata {key:?}: bool byte {b}")),
            },
            8 => Value::String(self.string(key)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return self.err(format!(
                        "metadata {key:?}: arrays nested deeper than {MAX_DEPTH}"
                    ));
                }
                let elem_ty = self.u32(key)?;
                let n = self.u64(key)?;
                if n > MAX_COUNT {
                    return self.err(format!("metadata {key:?}: array of {n} elements"));
                }
                let min_size = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    other => {
                        return self.err(format!(
                            "metadata {key:?}: unknown array element type {other}"
                        ))
                    }
                };
                // Parsed values take more room than their bytes on disk: refuse files whose arrays
                // would take far more memory than the file is long.
                self.array_elements = self.array_elements.saturating_add(n);
                let budget = self.len.saturating_mul(8).saturating_add(64 << 20);
                if self.array_elements.saturating_mul(VALUE_BYTES) > budget {
                    return self.err(format!(
                        "metadata {key:?}: {} array elements in all would take more than {} MB to read from a {}-byte file",
                        self.array_elements,
                        budget >> 20,
                        self.len
                    ));
                }
                self.need(
                    n.saturating_mul(min_size),
                    &format!("metadata {key:?} array"),
                )?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem_ty, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(self.u64(key)? as i64),
            12 => Value::F64(f64::from_bits(self.u64(key)?)),
            other => return self.err(format!("metadata {key:?}: unknown value type {other}")),
        })
    }
}

/// Opens a GGUF file: walks and checks the whole header, then maps the file.
pub fn open(path: &Path) -> Result<GgufFile> {
    let file = std::fs::File::open(path).map_err(|e| PrismError::io(path, e))?;
    let len = file.metadata().map_err(|e| PrismError::io(path, e))?.len();
    let mut c = Cursor {
        inner: BufReader::new(&file),
        pos: 0,
        len,
        path: path.to_path_buf(),
        array_elements: 0,
    };
    let magic = c.bytes::<4>("magic")?;
    if &magic != b"GGUF" {
        return c.err(format!(
            "not a GGUF file (magic {:02x?}, expected \"GGUF\")",
            magic
        ));
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return c.err(format!(
            "GGUF version {version} is not supported (2 and 3 are)"
        ));
    }
    let n_tensors = c.u64("tensor count")?;
    let n_kv = c.u64("metadata count")?;
    // Each metadata entry takes at least 13 bytes and each tensor entry at least 24.
    let min = n_kv
        .saturating_mul(13)
        .saturating_add(n_tensors.saturating_mul(24));
    if n_tensors > MAX_COUNT || n_kv > MAX_COUNT || min > len {
        return c.err(format!(
            "header declares {n_tensors} tensors and {n_kv} metadata entries, more than a {len}-byte file can hold"
        ));
    }
    let mut metadata = HashMap::with_capacity(n_kv as usize);
    let mut alignment = 32u64;
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let ty = c.u32(&format!("type of metadata {key:?}"))?;
        let value = c.value(ty, &key, 0)?;
        if key == "general.alignment" {
            match value.as_i64() {
                Some(a) if a > 0 && (a as u64).is_power_of_two() && a <= 1 << 20 => {
                    alignment = a as u64
                }
                _ => return c.err(format!("general.alignment {value:?} is not a power of two")),
            }
        }
        if metadata.insert(key.clone(), value).is_some() {
            return c.err(format!("metadata key {key:?} appears twice"));
        }
    }
    struct Raw {
        name: String,
        ne: Vec<u64>,
        ggml_type: u32,
        offset: u64,
    }
    let mut raw = Vec::with_capacity(n_tensors.min(1 << 16) as usize);
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let n_dims = c.u32(&format!("tensor {name:?} dimension count"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return c.err(format!(
                "tensor {name:?} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
            ));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(c.u64(&format!("tensor {name:?} dimensions"))?);
        }
        let ggml_type = c.u32(&format!("tensor {name:?} type"))?;
        let offset = c.u64(&format!("tensor {name:?} offset"))?;
        raw.push(Raw {
            name,
            ne,
            ggml_type,
            offset,
        });
    }
    let data_offset = c.pos.div_ceil(alignment) * alignment;
    let mut tensors = Vec::with_capacity(raw.len());
    for t in raw {
        let bad = |m: String| {
            Err(PrismError::format(
                path,
                format!("GGUF tensor {:?}: {m}", t.name),
            ))
        };
        let Some((block, block_bytes)) = ggml_block(t.ggml_type) else {
            return bad(format!("unknown ggml type {}", t.ggml_type));
        };
        let Some(elems) = t.ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d)) else {
            return bad(format!("dimensions {:?} overflow", t.ne));
        };
        if elems == 0 || elems > 1 << 40 {
            return bad(format!("dimensions {:?} give {elems} elements", t.ne));
        }
        if t.ne[0] % block != 0 {
            return bad(format!(
                "row length {} is not a multiple of {}'s block size {block}",
                t.ne[0],
                crate::quant::ggml_type_name(t.ggml_type)
            ));
        }
        let bytes = elems / block * block_bytes;
        if t.offset % alignment != 0 {
            return bad(format!("offset {} is not aligned to {alignment}", t.offset));
        }
        let start = data_offset.checked_add(t.offset);
        match (start, start.and_then(|s| s.checked_add(bytes))) {
            (Some(s), Some(e)) if e <= len => tensors.push(TensorEntry {
                name: t.name,
                ne: t.ne,
                ggml_type: t.ggml_type,
                start: s,
                bytes,
            }),
            _ => {
                return bad(format!(
                    "data at offset {} + {} bytes runs past the end of the {len}-byte file (truncated?)",
                    data_offset.saturating_add(t.offset),
                    bytes
                ))
            }
        }
    }
    let mut extents: Vec<(u64, u64, &str)> = tensors
        .iter()
        .map(|t| (t.start, t.start + t.bytes, t.name.as_str()))
        .collect();
    extents.sort_unstable();
    for pair in extents.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(PrismError::format(
                path,
                format!("GGUF tensors {:?} and {:?} overlap", pair[0].2, pair[1].2),
            ));
        }
    }
    let mut index = HashMap::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        if index.insert(t.name.clone(), i).is_some() {
            return Err(PrismError::format(
                path,
                format!("GGUF tensor {:?} appears twice", t.name),
            ));
        }
    }
    // SAFETY: the file is mapped read-only and Prism never writes to it; a checkpoint changing under
    // a running viewer is outside what any loader can defend against.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| PrismError::io(path, e))?;
    if map.len() as u64 != len {
        return Err(PrismError::format(
            path,
            "the file changed size while it was being opened",
        ));
    }
    Ok(GgufFile {
        path: path.to_path_buf(),
        version,
        alignment,
        data_offset,
        file_len: len,
        metadata,
        tensors,
        index,
        map: Arc::new(map),
        used: RefCell::new(BTreeSet::new()),
    })
}
