//! `rope.wgsl`: rotary embeddings in place, with per-row cos/sin tables from the host.

use prism_shaders::Shader;

use super::{record, Params};
use crate::arch::RopePairing;
use crate::backend::gpu::context::GpuContext;
use crate::error::Result;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RopeParams {
    pub rows: u32,
    pub heads: u32,
    pub head_dim: u32,
    pub pairing: u32,
    pub dims: u32,
}

// SAFETY: repr(C), all fields u32.
unsafe impl Params for RopeParams {}

#[allow(clippy::too_many_arguments)]
pub fn rope(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    cos: &wgpu::Buffer,
    sin: &wgpu::Buffer,
    rows: usize,
    heads: usize,
    head_dim: usize,
    dims: usize,
    pairing: RopePairing,
) -> Result<()> {
    let p = RopeParams {
        rows: rows as u32,
        heads: heads as u32,
        head_dim: head_dim as u32,
        pairing: (pairing == RopePairing::Interleaved) as u32,
        dims: dims as u32,
    };
    record(
        ctx,
        enc,
        Shader::Rope,
        &p,
        &[cos, sin, x],
        ((dims / 2).div_ceil(64) as u32, heads as u32, rows as u32),
    )
}
