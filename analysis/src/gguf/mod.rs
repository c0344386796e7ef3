//! GGUF, llama.cpp's file format: Prism's own reader (every count, length, dimension and offset
//! checked against the file before anything is allocated; tensor data memory-mapped, never copied)
//! and a writer (control vectors, test files).

mod read;
mod write;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use read::open;
pub use write::{write, WriteTensor};

use crate::error::{PrismError, Result};
use crate::quant::GgmlType;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The GGUF type id of this value.
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::F32(_) => "f32",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F64(_) => "f64",
        }
    }

    /// The value as an integer, when it is one.
    pub fn as_i64(&self) -> Option<i64> {
        Some(match self {
            Value::U8(x) => *x as i64,
            Value::I8(x) => *x as i64,
            Value::U16(x) => *x as i64,
            Value::I16(x) => *x as i64,
            Value::U32(x) => *x as i64,
            Value::I32(x) => *x as i64,
            Value::U64(x) => i64::try_from(*x).ok()?,
            Value::I64(x) => *x,
            _ => return None,
        })
    }

    /// The value as a float, when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F32(x) => Some(*x as f64),
            Value::F64(x) => Some(*x),
            other => other.as_i64().map(|i| i as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor of the file, checked against the file's length.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub name: String,
    /// ggml order: `ne[0]` is the row length.
    pub ne: Vec<u64>,
    pub ggml_type: u32,
    /// Absolute byte offset of the data in the file.
    pub start: u64,
    pub bytes: u64,
}

impl TensorEntry {
    /// Shape in row-major order (`[rows, cols]` for a matrix), the reverse of `ne`.
    pub fn shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }
}

/// An open GGUF file: metadata, tensor table and the mapped data.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub alignment: u64,
    pub data_offset: u64,
    pub file_len: u64,
    pub metadata: HashMap<String, Value>,
    pub tensors: Vec<TensorEntry>,
    index: HashMap<String, usize>,
    map: Arc<memmap2::Mmap>,
    /// Metadata keys something has read, so that a loader can refuse keys it does not understand.
    used: RefCell<BTreeSet<String>>,
}

impl GgufFile {
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    pub fn map(&self) -> &Arc<memmap2::Mmap> {
        &self.map
    }

    pub fn meta(&self) -> GgufMeta<'_> {
        GgufMeta { file: self }
    }

    /// The tensor's element type, or an error naming the tensor and the type.
    pub fn tensor_type(&self, t: &TensorEntry) -> Result<GgmlType> {
        GgmlType::from_id(t.ggml_type).ok_or_else(|| {
            PrismError::format(
                &self.path,
                format!(
                    "tensor {:?} has ggml type {} ({}), which Prism cannot decode; supported: {}",
                    t.name,
                    t.ggml_type,
                    crate::quant::ggml_type_name(t.ggml_type),
                    GgmlType::supported_names()
                ),
            )
        })
    }
}

/// Typed access to GGUF metadata, with errors that name the key and the file. Every key read is
/// remembered ([`GgufMeta::unread`] lists the rest).
#[derive(Clone, Copy)]
pub struct GgufMeta<'a> {
    file: &'a GgufFile,
}

impl<'a> GgufMeta<'a> {
    pub fn path(&self) -> &'a Path {
        &self.file.path
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        let v = self.file.metadata.get(key);
        if v.is_some() {
            self.file.used.borrow_mut().insert(key.to_string());
        }
        v
    }

    fn bad(&self, key: &str, v: &Value, expected: &str) -> PrismError {
        PrismError::format(
            self.path(),
            format!(
                "GGUF metadata {key:?} is a {} ({}), expected {expected}",
                v.type_name(),
                short(v)
            ),
        )
    }

    pub fn str(&self, key: &str) -> Option<&'a str> {
        self.get(key).and_then(|v| v.as_str())
    }

    pub fn u64_opt(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                Some(i) if i >= 0 => Ok(Some(i as u64)),
                _ => Err(self.bad(key, v, "a non-negative integer")),
            },
        }
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.u64_opt(key)?.map(|v| v as usize).ok_or_else(|| {
            PrismError::format(self.path(), format!("GGUF metadata {key:?} is missing"))
        })
    }

    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v @ (Value::F32(_) | Value::F64(_))) => Ok(v.as_f64()),
            Some(v) => Err(self.bad(key, v, "a float")),
        }
    }

    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.bad(key, v, "a bool")),
        }
    }

    pub fn array(&self, key: &str) -> Option<&'a Vec<Value>> {
        match self.get(key) {
            Some(Value::Array(a)) => Some(a),
            _ => None,
        }
    }

    /// Keys under `prefix` that nothing has read, except the ones in `harmless`.
    pub fn unread(&self, prefix: &str, harmless: &[&str]) -> Vec<String> {
        let used = self.file.used.borrow();
        let mut keys: Vec<String> = self
            .file
            .metadata
            .keys()
            .filter(|k| k.starts_with(prefix) && !used.contains(*k))
            .filter(|k| !harmless.iter().any(|h| k[prefix.len()..] == **h))
            .cloned()
            .collect();
        keys.sort();
        keys
    }
}

/// A value for an error message, without dumping a whole vocabulary.
fn short(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("array of {}", a.len()),
        Value::String(s) if s.chars().count() > 60 => {
            format!("{:?}...", s.chars().take(60).collect::<String>())
        }
        other => format!("{other:?}"),
    }
}
