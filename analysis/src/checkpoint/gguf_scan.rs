//! A bounds-checking walk over a GGUF header, run before candle's reader sees the file.
//!
//! It skips values instead of storing them, so a hostile header cannot make it allocate, and it
//! reports the byte offset of the first thing that is wrong. Limits mirror llama.cpp's.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{PrismError, Result};

const MAX_STRING: u64 = 1 << 30;
const MAX_COUNT: u64 = 1 << 30;
const MAX_DIMS: u32 = 4;
const MAX_DEPTH: usize = 8;

/// What the scan learned about one tensor: enough to check sizes and overlaps.
#[derive(Debug, Clone)]
pub struct ScannedTensor {
    pub name: String,
    /// ggml order (ne[0] first).
    pub ne: Vec<u64>,
    pub ggml_type: u32,
    pub offset: u64,
}

#[derive(Debug)]
pub struct Scan {
    pub version: u32,
    pub tensors: Vec<ScannedTensor>,
    pub alignment: u64,
    pub data_offset: u64,
    pub file_len: u64,
}

/// (block size in elements, bytes per block) of the ggml types candle can read.
pub fn ggml_block(ty: u32) -> Option<(u64, u64)> {
    Some(match ty {
        0 => (1, 4),     // F32
        1 => (1, 2),     // F16
        30 => (1, 2),    // BF16
        2 => (32, 18),   // Q4_0
        3 => (32, 20),   // Q4_1
        6 => (32, 22),   // Q5_0
        7 => (32, 24),   // Q5_1
        8 => (32, 34),   // Q8_0
        9 => (32, 36),   // Q8_1
        10 => (256, 84), // Q2_K
        11 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210),
        15 => (256, 292),
        _ => return None,
    })
}

struct Cursor<R> {
    inner: R,
    pos: u64,
    len: u64,
    path: std::path::PathBuf,
    /// Array elements seen in the metadata: candle's reader keeps each as a 32-byte value.
    array_elements: u64,
}

/// Bytes candle's reader spends per metadata array element, whatever its size on disk.
const VALUE_BYTES: u64 = 32;

impl<R: Read + Seek> Cursor<R> {
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

    fn skip(&mut self, n: u64, what: &str) -> Result<()> {
        self.need(n, what)?;
        self.inner
            .seek(SeekFrom::Current(n as i64))
            .map_err(|e| PrismError::io(&self.path, e))?;
        self.pos += n;
        Ok(())
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

    fn skip_string(&mut self, what: &str) -> Result<()> {
        let n = self.u64(what)?;
        if n > MAX_STRING {
            return self.err(format!("{what} claims a string of {n} bytes"));
        }
        self.skip(n, what)
    }

    /// Skips one value of type `ty`, returning it as an integer when it is one (for `general.alignment`).
    fn skip_value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Option<u64>> {
        let fixed = |ty: u32| -> Option<u64> {
            match ty {
                0 | 1 | 7 => Some(1),
                2 | 3 => Some(2),
                4..=6 => Some(4),
                10..=12 => Some(8),
                _ => None,
            }
        };
        if let Some(size) = fixed(ty) {
            return Ok(match size {
                1 => Some(self.bytes::<1>(key)?[0] as u64),
                2 => Some(u16::from_le_bytes(self.bytes::<2>(key)?) as u64),
                4 => Some(self.u32(key)? as u64),
                _ => Some(self.u64(key)?),
            });
        }
        match ty {
            8 => self.skip_string(key).map(|_| None),
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
                // Reading the metadata costs about 32 bytes per element; refuse files whose arrays
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
                match fixed(elem_ty) {
                    Some(size) => {
                        let total = n.saturating_mul(size);
                        self.skip(total, &format!("metadata {key:?} array"))?;
                    }
                    None if elem_ty == 8 || elem_ty == 9 => {
                        // Each string needs at least its 8-byte length.
                        self.need(n.saturating_mul(8), &format!("metadata {key:?} array"))?;
                        for _ in 0..n {
                            self.skip_value(elem_ty, key, depth + 1)?;
                        }
                    }
                    None => {
                        return self.err(format!(
                            "metadata {key:?}: unknown array element type {elem_ty}"
                        ))
                    }
                }
                Ok(None)
            }
            _ => self.err(format!("metadata {key:?}: unknown value type {ty}")),
        }
    }
}

/// Walks the whole header and checks every tensor's extent against the file.
pub fn scan(path: &Path) -> Result<Scan> {
    let file = std::fs::File::open(path).map_err(|e| PrismError::io(path, e))?;
    let len = file.metadata().map_err(|e| PrismError::io(path, e))?.len();
    let mut c = Cursor {
        inner: BufReader::new(file),
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
    let mut alignment = 32u64;
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let ty = c.u32(&format!("type of metadata {key:?}"))?;
        let value = c.skip_value(ty, &key, 0)?;
        if key == "general.alignment" {
            match value {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => alignment = a,
                _ => return c.err(format!("general.alignment {value:?} is not a power of two")),
            }
        }
    }
    let mut tensors = Vec::with_capacity(n_tensors.min(1 << 16) as usize);
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
        tensors.push(ScannedTensor {
            name,
            ne,
            ggml_type,
            offset,
        });
    }
    let data_offset = c.pos.div_ceil(alignment) * alignment;
    let mut extents = Vec::with_capacity(tensors.len());
    for t in &tensors {
        let bad = |m: String| {
            Err(PrismError::format(
                path,
                format!("GGUF tensor {:?}: {m}", t.name),
            ))
        };
        let Some((block, block_bytes)) = ggml_block(t.ggml_type) else {
            return bad(format!("unknown or unsupported ggml type {}", t.ggml_type));
        };
        let Some(elems) = t.ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d)) else {
            return bad(format!("dimensions {:?} overflow", t.ne));
        };
        if elems == 0 || elems > 1 << 40 {
            return bad(format!("dimensions {:?} give {elems} elements", t.ne));
        }
        if t.ne[0] % block != 0 {
            return bad(format!(
                "row length {} is not a multiple of the block size {block}",
                t.ne[0]
            ));
        }
        let bytes = elems / block * block_bytes;
        if t.offset % alignment != 0 {
            return bad(format!("offset {} is not aligned to {alignment}", t.offset));
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(bytes));
        match (start, end) {
            (Some(s), Some(e)) if e <= len => extents.push((s, e, t.name.as_str())),
            _ => {
                return bad(format!(
                    "data at offset {} + {} bytes runs past the end of the {len}-byte file (truncated?)",
                    data_offset.saturating_add(t.offset),
                    bytes
                ))
            }
        }
    }
    extents.sort_unstable();
    for pair in extents.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(PrismError::format(
                path,
                format!("GGUF tensors {:?} and {:?} overlap", pair[0].2, pair[1].2),
            ));
        }
    }
    let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(PrismError::format(
            path,
            format!("GGUF tensor {:?} appears twice", w[0]),
        ));
    }
    Ok(Scan {
        version,
        tensors,
        alignment,
        data_offset,
        file_len: len,
    })
}
