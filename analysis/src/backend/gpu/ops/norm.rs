//! `rms_norm.wgsl` and `layer_norm.wgsl`: one workgroup per row.

use prism_shaders::Shader;

use super::{per_row, record, Params};
use crate::backend::gpu::context::GpuContext;
use crate::error::Result;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NormParams {
    pub rows: u32,
    pub width: u32,
    pub eps: f32,
    pub _pad: u32,
}

// SAFETY: repr(C), 32-bit fields.
unsafe impl Params for NormParams {}

/// RMSNorm (`bias` None) or LayerNorm (`bias` Some) of `rows` rows of `width`.
#[allow(clippy::too_many_arguments)]
pub fn norm(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    weight: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
    rows: usize,
    width: usize,
    eps: f32,
) -> Result<()> {
    let p = NormParams {
        rows: rows as u32,
        width: width as u32,
        eps,
        _pad: 0,
    };
    match bias {
        None => record(
            ctx,
            enc,
            Shader::RmsNorm,
            &p,
            &[x, weight, y],
            per_row(rows),
        ),
        Some(b) => record(
            ctx,
            enc,
            Shader::LayerNorm,
            &p,
            &[x, weight, b, y],
            per_row(rows),
        ),
    }
}
