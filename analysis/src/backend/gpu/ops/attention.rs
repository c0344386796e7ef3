//! `attention_scores.wgsl`, `softmax.wgsl` and `attention_values.wgsl`: one sequence, one block of
//! queries at a time, so that a block's scores fit one binding.

use prism_shaders::Shader;

use super::{per_row, record, Params};
use crate::backend::forward::AttnShape;
use crate::backend::gpu::context::GpuContext;
use crate::error::Result;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ScoresParams {
    pub q_rows: u32,
    pub q0: u32,
    pub past: u32,
    pub keys: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub causal: u32,
    pub window: u32,
    pub q_row: u32,
    pub k_row: u32,
    pub scale: f32,
    pub softcap: f32,
}

// SAFETY: repr(C), 32-bit fields.
unsafe impl Params for ScoresParams {}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SoftmaxParams {
    pub rows: u32,
    pub width: u32,
}

// SAFETY: repr(C), all fields u32.
unsafe impl Params for SoftmaxParams {}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ValuesParams {
    pub q_rows: u32,
    pub q0: u32,
    pub keys: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub q_row: u32,
    pub k_row: u32,
}

// SAFETY: repr(C), all fields u32.
unsafe impl Params for ValuesParams {}

/// Queries per block, so that `heads * block * keys` scores fit `limit` bytes.
pub fn query_block(sh: &AttnShape, limit: u64) -> usize {
    ((limit as usize / 4) / (sh.heads * sh.keys).max(1)).clamp(1, sh.seq)
}

/// Scores, softmax and values for queries `q0..q0 + qr` of sequence `b`; the probabilities are
/// left in `scores` as `[heads][qr][keys]`.
#[allow(clippy::too_many_arguments)]
pub fn attention_block(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    out: &wgpu::Buffer,
    scores: &wgpu::Buffer,
    sh: &AttnShape,
    b: usize,
    q0: usize,
    qr: usize,
) -> Result<()> {
    let p = ScoresParams {
        q_rows: qr as u32,
        q0: q0 as u32,
        past: sh.past as u32,
        keys: sh.keys as u32,
        heads: sh.heads as u32,
        kv_heads: sh.kv_heads as u32,
        head_dim: sh.head_dim as u32,
        causal: sh.causal as u32,
        window: sh
            .window
            .unwrap_or(u32::MAX as usize)
            .min(u32::MAX as usize) as u32,
        q_row: (b * sh.seq) as u32,
        k_row: (b * sh.key_stride) as u32,
        scale: sh.scale,
        softcap: sh.softcap.unwrap_or(0.0),
    };
    record(
        ctx,
        enc,
        Shader::AttentionScores,
        &p,
        &[q, k, scores],
        (sh.keys.div_ceil(64) as u32, qr as u32, sh.heads as u32),
    )?;
    let rows = sh.heads * qr;
    let sp = SoftmaxParams {
        rows: rows as u32,
        width: sh.keys as u32,
    };
    record(ctx, enc, Shader::Softmax, &sp, &[scores], per_row(rows))?;
    let vp = ValuesParams {
        q_rows: qr as u32,
        q0: q0 as u32,
        keys: sh.keys as u32,
        heads: sh.heads as u32,
        kv_heads: sh.kv_heads as u32,
        head_dim: sh.head_dim as u32,
        q_row: (b * sh.seq) as u32,
        k_row: (b * sh.key_stride) as u32,
    };
    record(
        ctx,
        enc,
        Shader::AttentionValues,
        &vp,
        &[scores, v, out],
        (sh.head_dim.div_ceil(64) as u32, qr as u32, sh.heads as u32),
    )
}
