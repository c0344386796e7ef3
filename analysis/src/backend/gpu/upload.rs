//! Weights on the GPU. Matrices keep their stored format (F32, F16, BF16, Q8_0, Q4_0, Q4_1) and
//! are decoded inside the matmul; block scales are widened to f32 and blocks repacked so every
//! read is word-aligned. K-quants have no decoder in the shaders yet: they are dequantized to f16
//! at upload. Matrices larger than one binding are split into row chunks.

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};

use super::context::{f32_bytes, u32_bytes, GpuContext};
use crate::error::{backend_err, PrismError, Result};
use crate::weights::{Weight, WeightData};

pub const FMT_F32: u32 = 0;
pub const FMT_F16: u32 = 1;
pub const FMT_BF16: u32 = 2;
pub const FMT_Q8_0: u32 = 3;
pub const FMT_Q4_0: u32 = 4;
pub const FMT_Q4_1: u32 = 5;

pub struct WeightChunk {
    pub row0: usize,
    pub rows: usize,
    pub nblocks: u32,
    pub buffer: wgpu::Buffer,
}

pub struct GpuMatrix {
    pub fmt: u32,
    pub rows: usize,
    pub cols: usize,
    pub chunks: Vec<WeightChunk>,
    pub bytes: u64,
    /// True when the stored format had to be widened (K-quants to f16).
    pub converted: bool,
}

/// A matrix as words in a shader format, before it is split and uploaded.
struct Packed {
    fmt: u32,
    /// Words per row for dense formats; for block formats, the per-block scale words and data words.
    scale_words_per_block: usize,
    data_words_per_block: usize,
    scales: Vec<u32>,
    data: Vec<u32>,
    converted: bool,
}

fn f16_words(halves: &[u16]) -> Vec<u32> {
    halves
        .chunks(2)
        .map(|p| p[0] as u32 | ((p.get(1).copied().unwrap_or(0) as u32) << 16))
        .collect()
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn half_f32(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

fn words_of(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .collect()
}

fn pack(w: &Weight, cols: usize) -> Result<Packed> {
    let dense = |fmt, data: Vec<u32>, converted| Packed {
        fmt,
        scale_words_per_block: 0,
        data_words_per_block: 0,
        scales: Vec::new(),
        data,
        converted,
    };
    let odd = cols % 2 == 1;
    match &w.data {
        WeightData::Dense(t) => match t.dtype() {
            DType::F16 if !odd => {
                let v: Vec<half::f16> = t
                    .flatten_all()
                    .and_then(|t| t.to_vec1())
                    .map_err(backend_err)?;
                Ok(dense(
                    FMT_F16,
                    f16_words(&v.iter().map(|h| h.to_bits()).collect::<Vec<_>>()),
                    false,
                ))
            }
            DType::BF16 if !odd => {
                let v: Vec<half::bf16> = t
                    .flatten_all()
                    .and_then(|t| t.to_vec1())
                    .map_err(backend_err)?;
                Ok(dense(
                    FMT_BF16,
                    f16_words(&v.iter().map(|h| h.to_bits()).collect::<Vec<_>>()),
                    false,
                ))
            }
            _ => {
                let v: Vec<f32> = w
                    .to_f32()?
                    .flatten_all()
                    .and_then(|t| t.to_vec1())
                    .map_err(backend_err)?;
                Ok(dense(
                    FMT_F32,
                    v.iter().map(|x| x.to_bits()).collect(),
                    false,
                ))
            }
        },
        WeightData::Quantized(q) => {
            let raw = q.data().map_err(backend_err)?;
            let blocks = |size: usize| raw.len() / size;
            match q.dtype() {
                GgmlDType::F32 => Ok(dense(FMT_F32, words_of(&raw), false)),
                GgmlDType::F16 if !odd => Ok(dense(FMT_F16, words_of(&raw), false)),
                GgmlDType::BF16 if !odd => Ok(dense(FMT_BF16, words_of(&raw), false)),
                GgmlDType::Q8_0 => {
                    let n = blocks(34);
                    let mut scales = Vec::with_capacity(n);
                    let mut data = Vec::with_capacity(n * 8);
                    for b in raw.chunks_exact(34) {
                        scales.push(half_f32(le_u16(b, 0)).to_bits());
                        data.extend(words_of(&b[2..34]));
                    }
                    Ok(Packed {
                        fmt: FMT_Q8_0,
                        scale_words_per_block: 1,
                        data_words_per_block: 8,
                        scales,
                        data,
                        converted: false,
                    })
                }
                GgmlDType::Q4_0 => {
                    let n = blocks(18);
                    let mut scales = Vec::with_capacity(n);
                    let mut data = Vec::with_capacity(n * 4);
                    for b in raw.chunks_exact(18) {
                        scales.push(half_f32(le_u16(b, 0)).to_bits());
                        data.extend(words_of(&b[2..18]));
                    }
                    Ok(Packed {
                        fmt: FMT_Q4_0,
                        scale_words_per_block: 1,
                        data_words_per_block: 4,
                        scales,
                        data,
                        converted: false,
                    })
                }
                GgmlDType::Q4_1 => {
                    let n = blocks(20);
                    let mut scales = Vec::with_capacity(2 * n);
                    let mut data = Vec::with_capacity(n * 4);
                    for b in raw.chunks_exact(20) {
                        scales.push(half_f32(le_u16(b, 0)).to_bits());
                        scales.push(half_f32(le_u16(b, 2)).to_bits());
                        data.extend(words_of(&b[4..20]));
                    }
                    Ok(Packed {
                        fmt: FMT_Q4_1,
                        scale_words_per_block: 2,
                        data_words_per_block: 4,
                        scales,
                        data,
                        converted: false,
                    })
                }
                _ => {
                    // K-quants and the rest: f16 at upload (or f32 for odd widths).
                    let t = q.dequantize(&Device::Cpu).map_err(backend_err)?;
                    let v: Vec<f32> = t
                        .flatten_all()
                        .and_then(|t| t.to_vec1())
                        .map_err(backend_err)?;
                    if odd {
                        Ok(dense(
                            FMT_F32,
                            v.iter().map(|x| x.to_bits()).collect(),
                            true,
                        ))
                    } else {
                        let h: Vec<u16> = v
                            .iter()
                            .map(|&x| half::f16::from_f32(x).to_bits())
                            .collect();
                        Ok(dense(FMT_F16, f16_words(&h), true))
                    }
                }
            }
        }
    }
}

impl GpuMatrix {
    pub fn upload(ctx: &GpuContext, w: &Weight) -> Result<GpuMatrix> {
        let (rows, cols) = match w.shape.as_slice() {
            [r, c] => (*r, *c),
            other => {
                return Err(PrismError::Backend(format!(
                    "{}: expected a matrix, found shape {other:?}",
                    w.name
                )))
            }
        };
        let p = pack(w, cols)?;
        let block_fmt = p.data_words_per_block > 0;
        if block_fmt && cols % 32 != 0 {
            return Err(PrismError::Backend(format!(
                "{}: {cols} columns is not a multiple of the 32-value block",
                w.name
            )));
        }
        // Bytes per row, to pick a chunk size that fits one binding.
        let row_words = if block_fmt {
            cols / 32 * (p.scale_words_per_block + p.data_words_per_block)
        } else if p.fmt == FMT_F32 {
            cols
        } else {
            cols / 2
        };
        let max_rows = ((ctx.max_binding() as usize / 4) / row_words.max(1)).max(1);
        let mut chunks = Vec::new();
        let mut bytes = 0u64;
        let mut row0 = 0;
        while row0 < rows {
            let n = max_rows.min(rows - row0);
            let (words, nblocks) = if block_fmt {
                let bpr = cols / 32;
                let (b0, b1) = (row0 * bpr, (row0 + n) * bpr);
                let mut words =
                    p.scales[b0 * p.scale_words_per_block..b1 * p.scale_words_per_block].to_vec();
                words.extend_from_slice(
                    &p.data[b0 * p.data_words_per_block..b1 * p.data_words_per_block],
                );
                (words, (b1 - b0) as u32)
            } else {
                (p.data[row0 * row_words..(row0 + n) * row_words].to_vec(), 0)
            };
            bytes += words.len() as u64 * 4;
            chunks.push(WeightChunk {
                row0,
                rows: n,
                nblocks,
                buffer: ctx.upload(&w.name, &u32_bytes(&words)),
            });
            row0 += n;
        }
        Ok(GpuMatrix {
            fmt: p.fmt,
            rows,
            cols,
            chunks,
            bytes,
            converted: p.converted,
        })
    }
}

/// A vector (norm weight, bias) or small table (positions) as f32.
pub fn upload_vector(ctx: &GpuContext, w: &Weight) -> Result<(wgpu::Buffer, u64)> {
    let v: Vec<f32> = w
        .to_f32()?
        .flatten_all()
        .and_then(|t| t.to_vec1())
        .map_err(backend_err)?;
    Ok((ctx.upload(&w.name, &f32_bytes(&v)), v.len() as u64 * 4))
}
