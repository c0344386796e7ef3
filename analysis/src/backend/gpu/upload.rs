//! Weights on the GPU in their stored format: every ggml block format Prism decodes keeps its
//! block bytes, each block padded to whole 32-bit words (at most 1.12x the file's bytes; MXFP4's
//! 17-byte blocks unpadded, read by byte offset), and is
//! decoded inside the matmul by `quant.wgsl`; F16 and BF16 keep two values per word. Matrices
//! larger than one binding are split into row chunks.

use super::context::{f32_bytes, GpuContext};
use crate::error::{PrismError, Result};
use crate::quant::GgmlType;
use crate::weights::Weight;

/// The shader's format number of a stored type (see `quant.wgsl`).
pub fn shader_format(t: GgmlType) -> u32 {
    match t {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::BF16 => 2,
        GgmlType::Q8_0 => 3,
        GgmlType::Q4_0 => 4,
        GgmlType::Q4_1 => 5,
        GgmlType::Q5_0 => 6,
        GgmlType::Q5_1 => 7,
        GgmlType::Q2K => 8,
        GgmlType::Q3K => 9,
        GgmlType::Q4K => 10,
        GgmlType::Q5K => 11,
        GgmlType::Q6K => 12,
        GgmlType::IQ4NL => 13,
        GgmlType::IQ4XS => 14,
        GgmlType::MXFP4 => 15,
        GgmlType::TQ1_0 => 16,
        GgmlType::TQ2_0 => 17,
        GgmlType::Q1_0 => 18,
        GgmlType::Q2_0 => 19,
    }
}

pub struct WeightChunk {
    pub row0: usize,
    pub rows: usize,
    pub buffer: wgpu::Buffer,
}

pub struct GpuMatrix {
    pub fmt: u32,
    pub rows: usize,
    pub cols: usize,
    pub chunks: Vec<WeightChunk>,
    /// Bytes held on the GPU.
    pub bytes: u64,
    /// Bytes the same rows take in the file.
    pub stored_bytes: u64,
}

/// Rows of a weight as words in the shader's layout.
fn pack_rows(w: &Weight, row0: usize, n: usize, dtype: GgmlType) -> Vec<u8> {
    let cols = w.cols();
    match dtype {
        GgmlType::F32 if w.dtype != GgmlType::F32 || !w.is_contiguous() => {
            // Views the shader cannot read directly (transposed, odd-width halves): f32 rows.
            let mut row = vec![0f32; cols];
            let mut out = Vec::with_capacity(n * cols * 4);
            for r in row0..row0 + n {
                w.decode_row(r, 0, &mut row);
                out.extend(f32_bytes(&row));
            }
            out
        }
        t if t.is_dense() => w.row_bytes(row0, n).to_vec(),
        GgmlType::MXFP4 => {
            // Unpadded (17-byte blocks): the shader reads bytes at any offset.
            let mut out = w.row_bytes(row0, n).to_vec();
            out.resize(out.len().div_ceil(4) * 4, 0);
            out
        }
        t => {
            let bb = t.block_bytes();
            let padded = bb.div_ceil(4) * 4;
            let raw = w.row_bytes(row0, n);
            let mut out = Vec::with_capacity(raw.len() / bb * padded);
            for block in raw.chunks_exact(bb) {
                out.extend_from_slice(block);
                out.resize(out.len() + (padded - bb), 0);
            }
            out
        }
    }
}

impl GpuMatrix {
    pub fn upload(ctx: &GpuContext, w: &Weight) -> Result<GpuMatrix> {
        let (rows, cols) = match w.shape.as_slice() {
            [r, c] => (*r, *c),
            [n] => (1, *n),
            other => {
                return Err(PrismError::Backend(format!(
                    "{}: expected a matrix, found shape {other:?}",
                    w.name
                )))
            }
        };
        // The layout the shader reads: the stored one, except for views it cannot index.
        let dtype = match w.dtype {
            t if !w.is_contiguous() => {
                let _ = t;
                GgmlType::F32
            }
            GgmlType::F16 | GgmlType::BF16 if cols % 2 == 1 => GgmlType::F32,
            t => t,
        };
        let row_bytes = match dtype {
            t if t.is_dense() => (cols * t.block_bytes()).div_ceil(4) * 4,
            GgmlType::MXFP4 => dtype.bytes_for(cols),
            t => cols / t.block_values() * t.block_bytes().div_ceil(4) * 4,
        };
        let max_rows = (ctx.max_binding() as usize / row_bytes.max(1)).max(1);
        let mut chunks = Vec::new();
        let mut bytes = 0u64;
        let mut row0 = 0;
        while row0 < rows {
            let n = max_rows.min(rows - row0);
            let data = pack_rows(w, row0, n, dtype);
            bytes += data.len() as u64;
            chunks.push(WeightChunk {
                row0,
                rows: n,
                buffer: ctx.upload(&w.name, &data),
            });
            row0 += n;
        }
        Ok(GpuMatrix {
            fmt: shader_format(dtype),
            rows,
            cols,
            chunks,
            bytes,
            stored_bytes: w.stored_bytes() as u64,
        })
    }
}

/// A vector (norm weight, bias) as f32.
pub fn upload_vector(ctx: &GpuContext, w: &Weight) -> (wgpu::Buffer, u64) {
    let v = w.to_f32();
    (ctx.upload(&w.name, &f32_bytes(&v)), v.len() as u64 * 4)
}
