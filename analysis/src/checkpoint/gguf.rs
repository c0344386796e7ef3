//! GGUF files: header checked by [`super::gguf_scan`], then read with candle-core's reader.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::Device;

use super::gguf_scan;
use crate::error::{PrismError, Result};
use crate::weights::{ggml_dtype_name, TensorInfo, TensorSource, Weight, WeightData};

pub struct GgufCheckpoint {
    path: PathBuf,
    content: Content,
    pub version: u32,
    pub file_len: u64,
}

impl GgufCheckpoint {
    pub fn open(path: &Path) -> Result<Self> {
        let scan = gguf_scan::scan(path)?;
        let mut file = std::fs::File::open(path).map_err(|e| PrismError::io(path, e))?;
        let content =
            Content::read(&mut file).map_err(|e| PrismError::format(path, format!("GGUF: {e}")))?;
        if content.tensor_data_offset != scan.data_offset {
            return Err(PrismError::format(
                path,
                format!(
                    "GGUF data offset disagreement ({} vs {}); refusing an ambiguous file",
                    content.tensor_data_offset, scan.data_offset
                ),
            ));
        }
        Ok(GgufCheckpoint {
            path: path.to_path_buf(),
            content,
            version: scan.version,
            file_len: scan.file_len,
        })
    }

    pub fn meta(&self) -> GgufMeta<'_> {
        GgufMeta {
            map: &self.content.metadata,
            path: &self.path,
        }
    }
}

impl TensorSource for GgufCheckpoint {
    fn path(&self) -> &Path {
        &self.path
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.content.tensor_infos.get(name).map(|t| TensorInfo {
            shape: t.shape.dims().to_vec(),
            dtype: ggml_dtype_name(t.ggml_dtype).to_string(),
        })
    }

    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.content.tensor_infos.keys().cloned().collect();
        n.sort();
        n
    }

    fn load(&self, name: &str) -> Result<Weight> {
        let mut file =
            std::fs::File::open(&self.path).map_err(|e| PrismError::io(&self.path, e))?;
        let q = self
            .content
            .tensor(&mut file, name, &Device::Cpu)
            .map_err(|e| PrismError::format(&self.path, format!("GGUF tensor {name:?}: {e}")))?;
        Ok(Weight {
            name: name.to_string(),
            shape: q.shape().dims().to_vec(),
            data: WeightData::Quantized(Arc::new(q)),
        })
    }
}

/// Typed access to GGUF metadata with errors that name the key and the file.
#[derive(Clone, Copy)]
pub struct GgufMeta<'a> {
    map: &'a HashMap<String, Value>,
    path: &'a Path,
}

impl<'a> GgufMeta<'a> {
    pub fn path(&self) -> &Path {
        self.path
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    pub fn str(&self, key: &str) -> Option<&'a str> {
        match self.map.get(key) {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        }
    }

    pub fn u64_opt(&self, key: &str) -> Result<Option<u64>> {
        let v = match self.map.get(key) {
            None => return Ok(None),
            Some(v) => v,
        };
        let n = match v {
            Value::U8(x) => Some(*x as u64),
            Value::U16(x) => Some(*x as u64),
            Value::U32(x) => Some(*x as u64),
            Value::U64(x) => Some(*x),
            Value::I8(x) => u64::try_from(*x).ok(),
            Value::I16(x) => u64::try_from(*x).ok(),
            Value::I32(x) => u64::try_from(*x).ok(),
            Value::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        };
        n.map(Some).ok_or_else(|| {
            PrismError::format(
                self.path,
                format!("GGUF metadata {key:?} is {v:?}, expected a non-negative integer"),
            )
        })
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.u64_opt(key)?.map(|v| v as usize).ok_or_else(|| {
            PrismError::format(self.path, format!("GGUF metadata {key:?} is missing"))
        })
    }

    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x as f64)),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(v) => Err(PrismError::format(
                self.path,
                format!("GGUF metadata {key:?} is {v:?}, expected a float"),
            )),
        }
    }

    pub fn bool_opt(&self, key: &str) -> Option<bool> {
        match self.map.get(key) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    pub fn array(&self, key: &str) -> Option<&'a Vec<Value>> {
        match self.map.get(key) {
            Some(Value::Array(a)) => Some(a),
            _ => None,
        }
    }
}
