//! Safetensors files (single or sharded), memory-mapped; tensors are views of the mapped bytes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::tensor::Dtype;

use crate::error::{PrismError, Result};
use crate::quant::GgmlType;
use crate::weights::{Bytes, TensorInfo, TensorSource, Weight};

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte offset in the file.
    start: usize,
}

pub struct SafetensorsCheckpoint {
    /// The first file, for messages; `files` lists every shard.
    path: PathBuf,
    pub files: Vec<PathBuf>,
    maps: Vec<Arc<memmap2::Mmap>>,
    tensors: HashMap<String, Entry>,
}

impl SafetensorsCheckpoint {
    pub fn open(files: Vec<PathBuf>) -> Result<Self> {
        let Some(path) = files.first().cloned() else {
            return Err(PrismError::Input("no safetensors files given".into()));
        };
        let mut maps = Vec::new();
        let mut tensors = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            check_header(f)?;
            let file = std::fs::File::open(f).map_err(|e| PrismError::io(f, e))?;
            // SAFETY: the file is mapped read-only; Prism never writes to it, and a checkpoint
            // changing under a running viewer is outside what any loader can defend against.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| PrismError::io(f, e))?;
            let (n, meta) = safetensors::SafeTensors::read_metadata(&map)
                .map_err(|e| PrismError::format(f, format!("safetensors: {e}")))?;
            for (name, info) in meta.tensors() {
                let entry = Entry {
                    file: i,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: 8 + n + info.data_offsets.0,
                };
                if tensors.insert(name.clone(), entry).is_some() {
                    return Err(PrismError::format(
                        f,
                        format!("tensor {name:?} appears in more than one shard"),
                    ));
                }
            }
            maps.push(Arc::new(map));
        }
        Ok(SafetensorsCheckpoint {
            path,
            files,
            maps,
            tensors,
        })
    }
}

/// The safetensors crate validates offsets; this adds a readable message for the commonest
/// corruption (a header length that exceeds the file) before mapping anything.
fn check_header(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| PrismError::io(path, e))?;
    let len = f.metadata().map_err(|e| PrismError::io(path, e))?.len();
    let mut n = [0u8; 8];
    if len < 8 || f.read_exact(&mut n).is_err() {
        return Err(PrismError::format(
            path,
            format!("safetensors: file is {len} bytes, too short for a header"),
        ));
    }
    let header = u64::from_le_bytes(n);
    if header > len - 8 {
        return Err(PrismError::format(
            path,
            format!("safetensors: header claims {header} bytes but the file has only {} after the length", len - 8),
        ));
    }
    if header > 100 << 20 {
        return Err(PrismError::format(
            path,
            format!("safetensors: header of {header} bytes exceeds the 100 MB limit"),
        ));
    }
    Ok(())
}

impl TensorSource for SafetensorsCheckpoint {
    fn path(&self) -> &Path {
        &self.path
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.tensors.get(name).map(|e| TensorInfo {
            shape: e.shape.clone(),
            dtype: format!("{:?}", e.dtype),
        })
    }

    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.tensors.keys().cloned().collect();
        n.sort();
        n
    }

    fn load(&self, name: &str) -> Result<Weight> {
        self.load_shaped(name, false)
    }

    fn load_rows(&self, name: &str) -> Result<Weight> {
        self.load_shaped(name, true)
    }

    fn load_u8(&self, name: &str) -> Result<&[u8]> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| PrismError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })?;
        if e.dtype != Dtype::U8 {
            return Err(PrismError::format(
                &self.files[e.file],
                format!("tensor {name:?} has dtype {:?}, expected U8", e.dtype),
            ));
        }
        let n: usize = e.shape.iter().product();
        self.maps[e.file].get(e.start..e.start + n).ok_or_else(|| {
            PrismError::format(&self.files[e.file], format!("tensor {name:?} is truncated"))
        })
    }
}

impl SafetensorsCheckpoint {
    /// The tensor as a vector or matrix; `flatten` views a stack as one matrix of its rows.
    fn load_shaped(&self, name: &str, flatten: bool) -> Result<Weight> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| PrismError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })?;
        let file = &self.files[e.file];
        let dtype = match e.dtype {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
            other => {
                return Err(PrismError::format(
                    file,
                    format!(
                    "tensor {name:?} has dtype {other:?}; Prism reads F32, F16 and BF16 weights"
                ),
                ))
            }
        };
        let shape = match e.shape.len() {
            0 => vec![1],
            n if flatten && n > 2 => vec![e.shape[..n - 1].iter().product(), e.shape[n - 1]],
            _ => e.shape.clone(),
        };
        Weight::new(
            name,
            shape,
            dtype,
            Bytes::Mapped(self.maps[e.file].clone()),
            e.start,
        )
        .map_err(|err| PrismError::format(file, err.to_string()))
    }
}
