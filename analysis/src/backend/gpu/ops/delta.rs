//! Gated DeltaNet shaders: `delta_conv.wgsl` (the causal convolution with SiLU, and the
//! convolution state's update) and `delta_rule.wgsl` (the gated delta rule per value head with
//! the gated RMSNorm, or the rule unrolled into a token-mixing matrix).

use prism_shaders::Shader;

use super::{record, spread, Params};
use crate::arch::{DeltaNetSpec, HeadGrouping};
use crate::backend::gpu::context::GpuContext;
use crate::error::{PrismError, Result};

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConvParams {
    pub batch: u32,
    pub seq: u32,
    pub channels: u32,
    pub kernel: u32,
    pub mode: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

// SAFETY: repr(C), all fields u32.
unsafe impl Params for ConvParams {}

/// y = silu(conv(x)) with the state's inputs before the run, then the state moved on.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    d: &DeltaNetSpec,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    state: &wgpu::Buffer,
    y: &wgpu::Buffer,
    batch: usize,
    seq: usize,
) -> Result<()> {
    let c = d.conv_dim();
    let mut p = ConvParams {
        batch: batch as u32,
        seq: seq as u32,
        channels: c as u32,
        kernel: d.kernel as u32,
        mode: 0,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    let bufs = [x, w, state, y];
    record(
        ctx,
        enc,
        Shader::DeltaConv,
        &p,
        &bufs,
        spread(batch * seq * c, 256),
    )?;
    p.mode = 1;
    record(
        ctx,
        enc,
        Shader::DeltaConv,
        &p,
        &bufs,
        spread(batch * c, 256),
    )
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RuleParams {
    pub batch: u32,
    pub seq: u32,
    pub channels: u32,
    pub k_heads: u32,
    pub v_heads: u32,
    pub k_dim: u32,
    pub v_dim: u32,
    pub tiled: u32,
    pub mode: u32,
    pub width: u32,
    pub eps: f32,
    pub scale: f32,
}

// SAFETY: repr(C), 32-bit fields.
unsafe impl Params for RuleParams {}

/// The buffers of one rule dispatch: the convolution's output, z, b, a, the layer's vectors.
pub struct RuleInputs<'a> {
    pub y: &'a wgpu::Buffer,
    pub z: &'a wgpu::Buffer,
    pub b: &'a wgpu::Buffer,
    pub a: &'a wgpu::Buffer,
    pub vecs: &'a wgpu::Buffer,
}

/// The rule over `seq` tokens of `batch` sequences: with `mixing` false, `out` gets the gated
/// normalized output and `state` `[batch, v_heads, k_dim, v_dim]` moves on; with `mixing` true,
/// `state` is `[batch, v_heads, k_dim, seq]` scratch (zero) and `out` the unrolled rule.
#[allow(clippy::too_many_arguments)]
pub fn rule(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    d: &DeltaNetSpec,
    inp: &RuleInputs<'_>,
    state: &wgpu::Buffer,
    out: &wgpu::Buffer,
    batch: usize,
    seq: usize,
    eps: f32,
    mixing: bool,
) -> Result<()> {
    let groups = batch * d.v_heads;
    if groups > 65535 {
        return Err(PrismError::Input(format!(
            "{batch} sequences of {} linear-attention heads are more than one GPU dispatch holds",
            d.v_heads
        )));
    }
    let p = RuleParams {
        batch: batch as u32,
        seq: seq as u32,
        channels: d.conv_dim() as u32,
        k_heads: d.k_heads as u32,
        v_heads: d.v_heads as u32,
        k_dim: d.k_dim as u32,
        v_dim: d.v_dim as u32,
        tiled: (d.grouping == HeadGrouping::Tiled) as u32,
        mode: mixing as u32,
        width: if mixing { seq } else { d.v_dim } as u32,
        eps,
        scale: 1.0 / (d.k_dim as f32).sqrt(),
    };
    record(
        ctx,
        enc,
        Shader::DeltaRule,
        &p,
        &[inp.y, inp.z, inp.b, inp.a, inp.vecs, state, out],
        (groups as u32, 1, 1),
    )
}
