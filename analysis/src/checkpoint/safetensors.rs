//! Safetensors files (single or sharded), memory-mapped through candle-core.

use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::Device;

use crate::error::{PrismError, Result};
use crate::weights::{TensorInfo, TensorSource, Weight, WeightData};

pub struct SafetensorsCheckpoint {
    /// The first file, for messages; `files` lists every shard.
    path: PathBuf,
    pub files: Vec<PathBuf>,
    inner: MmapedSafetensors,
}

impl SafetensorsCheckpoint {
    pub fn open(files: Vec<PathBuf>) -> Result<Self> {
        let Some(path) = files.first().cloned() else {
            return Err(PrismError::Input("no safetensors files given".into()));
        };
        for f in &files {
            check_header(f)?;
        }
        // SAFETY: the files are mapped read-only; Prism never writes to them, and a checkpoint
        // changing under a running viewer is outside what any loader can defend against.
        let inner = unsafe { MmapedSafetensors::multi(&files) }
            .map_err(|e| PrismError::format(&path, format!("safetensors: {e}")))?;
        Ok(SafetensorsCheckpoint { path, files, inner })
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
        let view = self.inner.get(name).ok()?;
        Some(TensorInfo {
            shape: view.shape().to_vec(),
            dtype: format!("{:?}", view.dtype()),
        })
    }

    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .inner
            .tensors()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        n.sort();
        n
    }

    fn load(&self, name: &str) -> Result<Weight> {
        let t = self.inner.load(name, &Device::Cpu).map_err(|e| {
            PrismError::format(&self.path, format!("safetensors tensor {name:?}: {e}"))
        })?;
        let dtype = t.dtype();
        if !matches!(
            dtype,
            candle_core::DType::F32 | candle_core::DType::F16 | candle_core::DType::BF16
        ) {
            return Err(PrismError::format(
                &self.path,
                format!(
                    "tensor {name:?} has dtype {dtype:?}; Prism reads F32, F16 and BF16 weights"
                ),
            ));
        }
        Ok(Weight {
            name: name.to_string(),
            shape: t.dims().to_vec(),
            data: WeightData::Dense(t),
        })
    }
}
