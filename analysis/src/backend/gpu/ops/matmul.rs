//! `matmul.wgsl`: y[rows][out] (+)= x[rows][in] W^T + b, over every row chunk of W.

use prism_shaders::Shader;

use super::{record, Params};
use crate::backend::gpu::context::GpuContext;
use crate::backend::gpu::upload::GpuMatrix;
use crate::error::Result;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MatmulParams {
    pub rows: u32,
    pub in_dim: u32,
    pub out_stride: u32,
    pub out_rows: u32,
    pub o_offset: u32,
    pub fmt: u32,
    pub has_bias: u32,
    pub accumulate: u32,
}

// SAFETY: repr(C), all fields u32.
unsafe impl Params for MatmulParams {}

/// Outputs per workgroup (x) and tokens per workgroup (y), as in the shader.
pub const OUTPUTS_PER_GROUP: usize = 64;
pub const TOKENS_PER_GROUP: usize = 16;

#[allow(clippy::too_many_arguments)]
pub fn matmul(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    w: &GpuMatrix,
    bias: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
    rows: usize,
    accumulate: bool,
) -> Result<()> {
    for c in &w.chunks {
        let p = MatmulParams {
            rows: rows as u32,
            in_dim: w.cols as u32,
            out_stride: w.rows as u32,
            out_rows: c.rows as u32,
            o_offset: c.row0 as u32,
            fmt: w.fmt,
            has_bias: bias.is_some() as u32,
            accumulate: accumulate as u32,
        };
        let groups = (
            c.rows.div_ceil(OUTPUTS_PER_GROUP) as u32,
            rows.div_ceil(TOKENS_PER_GROUP) as u32,
            1,
        );
        record(
            ctx,
            enc,
            Shader::Matmul,
            &p,
            &[&c.buffer, x, bias.unwrap_or(&ctx.dummy), y],
            groups,
        )?;
    }
    Ok(())
}
