//! GGUF checkpoints as a [`TensorSource`]: tensors are views of the mapped file in their stored
//! format; ggml's `ne` order is turned into row-major shapes.

use std::path::Path;

use crate::error::{PrismError, Result};
use crate::gguf::{self, GgufFile};
use crate::quant::ggml_type_name;
use crate::weights::{Bytes, TensorInfo, TensorSource, Weight};

pub struct GgufCheckpoint {
    pub file: GgufFile,
}

impl GgufCheckpoint {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(GgufCheckpoint {
            file: gguf::open(path)?,
        })
    }
}

impl TensorSource for GgufCheckpoint {
    fn path(&self) -> &Path {
        &self.file.path
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.file.tensor(name).map(|t| TensorInfo {
            shape: t.shape(),
            dtype: ggml_type_name(t.ggml_type).to_string(),
        })
    }

    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.file.tensors.iter().map(|t| t.name.clone()).collect();
        n.sort();
        n
    }

    fn load(&self, name: &str) -> Result<Weight> {
        self.load_shaped(name, false)
    }

    fn load_rows(&self, name: &str) -> Result<Weight> {
        self.load_shaped(name, true)
    }
}

impl GgufCheckpoint {
    /// The tensor as a vector or matrix; `flatten` views a stack as one matrix of its rows.
    fn load_shaped(&self, name: &str, flatten: bool) -> Result<Weight> {
        let t = self
            .file
            .tensor(name)
            .ok_or_else(|| PrismError::MissingTensor {
                path: self.file.path.clone(),
                tensor: name.to_string(),
            })?;
        let ty = self.file.tensor_type(t)?;
        let mut shape = t.shape();
        if flatten && shape.len() > 2 {
            let cols = shape[shape.len() - 1];
            shape = vec![shape[..shape.len() - 1].iter().product(), cols];
        }
        if shape.len() > 2 && shape[..shape.len() - 2].iter().any(|&d| d != 1) {
            return Err(PrismError::format(
                &self.file.path,
                format!("tensor {name:?} has shape {shape:?}; Prism reads vectors and matrices"),
            ));
        }
        let shape: Vec<usize> = if shape.len() > 2 {
            shape[shape.len() - 2..].to_vec()
        } else {
            shape
        };
        Weight::new(
            name,
            shape,
            ty,
            Bytes::Mapped(self.file.map().clone()),
            t.start as usize,
        )
        .map_err(|e| PrismError::format(&self.file.path, e.to_string()))
    }
}
