//! `logit_stats.wgsl`: per-row log-sum-exp, entropy, surprisal, rank and top-k, so that logits
//! need not leave the GPU.

use prism_shaders::Shader;

use super::{record, Params};
use crate::backend::gpu::context::GpuContext;
use crate::error::Result;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LogitStatsParams {
    pub rows: u32,
    pub vocab: u32,
    pub k: u32,
    pub row0: u32,
}

// SAFETY: repr(C), all fields u32.
unsafe impl Params for LogitStatsParams {}

/// Statistics of `rows` rows of `logits` `[rows][vocab]`, written at rows `row0..` of the
/// outputs: `stats` (4 per row: lse, entropy bits, surprisal bits, rank), `top_ids` and `top_p`
/// (k per row).
#[allow(clippy::too_many_arguments)]
pub fn logit_stats(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    logits: &wgpu::Buffer,
    targets: &wgpu::Buffer,
    outs: (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
    rows: usize,
    vocab: usize,
    k: usize,
    row0: usize,
) -> Result<()> {
    let p = LogitStatsParams {
        rows: rows as u32,
        vocab: vocab as u32,
        k: k as u32,
        row0: row0 as u32,
    };
    record(
        ctx,
        enc,
        Shader::LogitStats,
        &p,
        &[logits, targets, outs.0, outs.1, outs.2],
        (rows as u32, 1, 1),
    )
}
