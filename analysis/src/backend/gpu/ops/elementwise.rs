//! Element-wise shaders: `add.wgsl`, `scale.wgsl`, `gelu.wgsl` (the gated activation is the up matmul's epilogue).

use prism_shaders::Shader;

use super::{record, spread, Params};
use crate::arch::Activation;
use crate::backend::gpu::context::GpuContext;
use crate::error::Result;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AddParams {
    pub n: u32,
    pub x_len: u32,
    /// 0: y += x; 1: y *= sigmoid(x); 2: y *= x.
    pub mode: u32,
}

// SAFETY: repr(C), all fields u32.
unsafe impl Params for AddParams {}

/// y[i] += x[i % x_len] for i < n.
pub fn add(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    n: usize,
    x_len: usize,
) -> Result<()> {
    let p = AddParams {
        n: n as u32,
        x_len: x_len as u32,
        mode: 0,
    };
    record(ctx, enc, Shader::Add, &p, &[x, y], spread(n, 256))
}

/// y[i] *= x[i % x_len] for i < n.
pub fn mul(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    n: usize,
    x_len: usize,
) -> Result<()> {
    let p = AddParams {
        n: n as u32,
        x_len: x_len.max(1) as u32,
        mode: 2,
    };
    record(ctx, enc, Shader::Add, &p, &[x, y], spread(n, 256))
}

/// y[i] *= sigmoid(gate[i / per]) for i < n.
pub fn sigmoid_gate(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    gate: &wgpu::Buffer,
    y: &wgpu::Buffer,
    n: usize,
    per: usize,
) -> Result<()> {
    let p = AddParams {
        n: n as u32,
        x_len: per.max(1) as u32,
        mode: 1,
    };
    record(ctx, enc, Shader::Add, &p, &[gate, y], spread(n, 256))
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ScaleParams {
    pub n: u32,
    pub mode: u32,
    pub s: f32,
}

// SAFETY: repr(C), 32-bit fields.
unsafe impl Params for ScaleParams {}

/// x *= s (or, with `softcap`, x = s * tanh(x / s)).
pub fn scale(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    n: usize,
    s: f32,
    softcap: bool,
) -> Result<()> {
    let p = ScaleParams {
        n: n as u32,
        mode: softcap as u32,
        s,
    };
    record(ctx, enc, Shader::Scale, &p, &[x], spread(n, 256))
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModeParams {
    pub n: u32,
    pub mode: u32,
}

// SAFETY: repr(C), all fields u32.
unsafe impl Params for ModeParams {}

/// x = gelu(x) in place (tanh or exact form).
pub fn gelu(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    n: usize,
    act: Activation,
) -> Result<()> {
    let p = ModeParams {
        n: n as u32,
        mode: (act == Activation::GeluErf) as u32,
    };
    record(ctx, enc, Shader::Gelu, &p, &[x], spread(n, 256))
}
