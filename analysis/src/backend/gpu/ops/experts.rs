//! Mixture-of-experts shaders: `route.wgsl` (softmax, top-k and renormalisation per token) and
//! `expert_add.wgsl` (one expert's output times its routing weight into the sum).

use prism_shaders::Shader;

use super::{record, spread, Params};
use crate::arch::ExpertSpec;
use crate::backend::gpu::context::GpuContext;
use crate::error::Result;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RouteParams {
    pub rows: u32,
    pub experts: u32,
    pub top_k: u32,
    pub renormalize: u32,
}

// SAFETY: repr(C), all fields u32.
unsafe impl Params for RouteParams {}

/// probs `[rows, experts]`: router logits in, their softmax out; weights: the chosen experts'.
pub fn route(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    probs: &wgpu::Buffer,
    weights: &wgpu::Buffer,
    rows: usize,
    x: &ExpertSpec,
) -> Result<()> {
    let p = RouteParams {
        rows: rows as u32,
        experts: x.count as u32,
        top_k: x.top_k as u32,
        renormalize: x.renormalize as u32,
    };
    record(
        ctx,
        enc,
        Shader::Route,
        &p,
        &[probs, weights],
        spread(rows, 64),
    )
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExpertAddParams {
    pub rows: u32,
    pub width: u32,
    pub experts: u32,
    pub expert: u32,
    pub mode: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

// SAFETY: repr(C), all fields u32.
unsafe impl Params for ExpertAddParams {}

/// y `[rows, width]` = (or +=, with `add`) weights[r, expert] * x.
#[allow(clippy::too_many_arguments)]
pub fn expert_add(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    weights: &wgpu::Buffer,
    y: &wgpu::Buffer,
    rows: usize,
    width: usize,
    experts: usize,
    expert: usize,
    add: bool,
) -> Result<()> {
    let p = ExpertAddParams {
        rows: rows as u32,
        width: width as u32,
        experts: experts as u32,
        expert: expert as u32,
        mode: add as u32,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    record(
        ctx,
        enc,
        Shader::ExpertAdd,
        &p,
        &[x, weights, y],
        spread(rows * width, 256),
    )
}
