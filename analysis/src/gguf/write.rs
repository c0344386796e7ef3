//! Writing GGUF v3 files: metadata and tensors, data aligned to 32 bytes (control vectors, tests).

use std::io::Write;
use std::path::Path;

use super::Value;
use crate::error::{PrismError, Result};
use crate::quant::ggml_block;

/// A tensor to write: its name, ggml dimensions (`ne[0]` first), ggml type and raw bytes.
pub struct WriteTensor<'a> {
    pub name: &'a str,
    pub ne: Vec<u64>,
    pub ggml_type: u32,
    pub data: &'a [u8],
}

const ALIGNMENT: usize = 32;

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) -> Result<()> {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::Bool(b) => out.push(*b as u8),
        Value::String(s) => put_string(out, s),
        Value::Array(items) => {
            let ty = items.first().map(Value::type_id).unwrap_or(4);
            if items.iter().any(|i| i.type_id() != ty) {
                return Err(PrismError::Input(
                    "a GGUF array must hold values of one type".into(),
                ));
            }
            out.extend(ty.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i)?;
            }
        }
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
    }
    Ok(())
}

/// Writes a GGUF file atomically (a temporary file next to it, then a rename).
pub fn write(path: &Path, metadata: &[(&str, Value)], tensors: &[WriteTensor<'_>]) -> Result<()> {
    let mut out = Vec::new();
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_string(&mut out, k);
        out.extend(v.type_id().to_le_bytes());
        put_value(&mut out, v)?;
    }
    let mut offset = 0usize;
    let mut offsets = Vec::with_capacity(tensors.len());
    for t in tensors {
        let (block, block_bytes) = ggml_block(t.ggml_type).ok_or_else(|| {
            PrismError::Input(format!("ggml type {} cannot be written", t.ggml_type))
        })?;
        let elems: u64 = t.ne.iter().product();
        if t.ne.is_empty()
            || !elems.is_multiple_of(block)
            || elems / block * block_bytes != t.data.len() as u64
        {
            return Err(PrismError::Input(format!(
                "tensor {:?}: {} bytes do not match dimensions {:?}",
                t.name,
                t.data.len(),
                t.ne
            )));
        }
        put_string(&mut out, t.name);
        out.extend((t.ne.len() as u32).to_le_bytes());
        for d in &t.ne {
            out.extend(d.to_le_bytes());
        }
        out.extend(t.ggml_type.to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.data.len()).div_ceil(ALIGNMENT) * ALIGNMENT;
    }
    out.resize(out.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
    let base = out.len();
    for (t, off) in tensors.iter().zip(offsets) {
        out.resize(base + off, 0);
        out.extend(t.data);
    }
    let tmp = path.with_extension("gguf.part");
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        PrismError::io(path, e)
    })
}
