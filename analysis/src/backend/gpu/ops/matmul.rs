//! `matmul.wgsl` (tiled, for more than 8 tokens) and `matvec.wgsl` (1 to 8 tokens), sharing
//! `linear.wgsl`: y[rows][out] (op)= norm(x) W^T + b, over every row chunk of W.

use prism_shaders::Shader;

use super::{record, spread, Params};
use crate::arch::Activation;
use crate::backend::gpu::context::GpuContext;
use crate::backend::gpu::upload::GpuMatrix;
use crate::error::{PrismError, Result};

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
    pub epilogue: u32,
    pub norm: u32,
    pub eps: f32,
    /// The clamped SwiGLU's alpha and limit (epilogue 4).
    pub alpha: f32,
    pub limit: f32,
}

// SAFETY: repr(C), 32-bit fields.
unsafe impl Params for MatmulParams {}

/// The tiled kernel's tile: outputs (x) and tokens (y) per workgroup, and the small tile's side.
pub const TILE_OUTPUTS: usize = 64;
pub const TILE_TOKENS: usize = 64;
pub const SMALL_TILE: usize = 32;
/// On a hardware GPU, fewer 64 x 64 workgroups than this take the 32 x 32 tile (four times the
/// workgroups), so that small matrices (SmolLM2's 576 x 576 at 512 tokens: 72 large tiles) still
/// spread over the GPU's compute units. Software adapters have few cores and keep the large tile.
pub const MIN_LARGE_GROUPS: usize = 256;
/// The matrix-vector kernel: outputs per workgroup, and the most tokens it takes.
pub const VEC_OUTPUTS: usize = 8;
pub const VEC_TOKENS: usize = 8;

/// What happens to the output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Epilogue {
    /// y = result.
    Store,
    /// y += result (a residual add).
    Accumulate,
    /// y = act(y) * result: y holds the gate projection, the matrix is the up projection.
    Gated(Activation),
}

impl Epilogue {
    fn code(self) -> Result<u32> {
        Ok(match self {
            Epilogue::Store => 0,
            Epilogue::Accumulate => 1,
            Epilogue::Gated(Activation::SwiGlu) => 2,
            Epilogue::Gated(Activation::GeGluTanh) => 3,
            Epilogue::Gated(Activation::SwiGluClamped { .. }) => 4,
            Epilogue::Gated(a) => {
                return Err(PrismError::Backend(format!(
                    "{a:?} is not a gated activation"
                )))
            }
        })
    }
}

/// Which kernel runs: chosen by the number of tokens, or forced (the op tests run both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Auto,
    /// 64 x 64 tiles.
    Tiled,
    /// 32 x 32 tiles.
    TiledSmall,
    Vector,
}

/// One linear layer's work.
pub struct Linear<'a> {
    pub x: &'a wgpu::Buffer,
    pub w: &'a GpuMatrix,
    pub bias: Option<&'a wgpu::Buffer>,
    pub y: &'a wgpu::Buffer,
    pub rows: usize,
    pub epilogue: Epilogue,
    /// A norm of x folded in.
    pub norm: Option<FoldedNorm<'a>>,
}

/// A norm computed inside the matmul: RMSNorm without a bias, LayerNorm with one.
#[derive(Clone, Copy)]
pub struct FoldedNorm<'a> {
    pub weight: &'a wgpu::Buffer,
    pub bias: Option<&'a wgpu::Buffer>,
    pub eps: f32,
}

impl<'a> Linear<'a> {
    pub fn new(x: &'a wgpu::Buffer, w: &'a GpuMatrix, y: &'a wgpu::Buffer, rows: usize) -> Self {
        Linear {
            x,
            w,
            bias: None,
            y,
            rows,
            epilogue: Epilogue::Store,
            norm: None,
        }
    }
}

/// The kernel `Kernel::Auto` takes for `outputs` x `tokens` on a hardware or software adapter.
pub fn auto_kernel(outputs: usize, tokens: usize, software: bool) -> Kernel {
    if tokens <= VEC_TOKENS {
        return Kernel::Vector;
    }
    let large = outputs.div_ceil(TILE_OUTPUTS) * tokens.div_ceil(TILE_TOKENS);
    if large < MIN_LARGE_GROUPS && !software {
        Kernel::TiledSmall
    } else {
        Kernel::Tiled
    }
}

pub fn matmul(ctx: &GpuContext, enc: &mut wgpu::CommandEncoder, l: &Linear<'_>) -> Result<()> {
    matmul_with(ctx, enc, l, Kernel::Auto)
}

pub fn matmul_with(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    l: &Linear<'_>,
    kernel: Kernel,
) -> Result<()> {
    let kernel = match kernel {
        Kernel::Auto => auto_kernel(l.w.rows, l.rows, ctx.adapter.is_software()),
        Kernel::Vector if l.rows > VEC_TOKENS => {
            return Err(PrismError::Backend(format!(
                "the matrix-vector kernel takes at most {VEC_TOKENS} tokens, not {}",
                l.rows
            )))
        }
        k => k,
    };
    let epilogue = l.epilogue.code()?;
    let (alpha, limit) = match l.epilogue {
        Epilogue::Gated(Activation::SwiGluClamped { alpha, limit }) => (alpha, limit),
        _ => (0.0, 0.0),
    };
    for c in &l.w.chunks {
        let p = MatmulParams {
            rows: l.rows as u32,
            in_dim: l.w.cols as u32,
            out_stride: l.w.rows as u32,
            out_rows: c.rows as u32,
            o_offset: c.row0 as u32,
            fmt: l.w.fmt,
            has_bias: l.bias.is_some() as u32,
            epilogue,
            norm: match l.norm {
                None => 0,
                Some(FoldedNorm { bias: None, .. }) => 1,
                Some(FoldedNorm { bias: Some(_), .. }) => 2,
            },
            eps: l.norm.map_or(0.0, |n| n.eps),
            alpha,
            limit,
        };
        let tiles = |shader, side: usize| {
            let groups = (
                c.rows.div_ceil(side) as u32,
                l.rows.div_ceil(side) as u32,
                1,
            );
            (shader, groups)
        };
        let (shader, groups) = match kernel {
            Kernel::Vector => (Shader::Matvec, spread(c.rows, VEC_OUTPUTS)),
            Kernel::TiledSmall => tiles(Shader::MatmulSmall, SMALL_TILE),
            _ => tiles(Shader::Matmul, TILE_OUTPUTS),
        };
        let dummy = &ctx.dummy;
        let buffers = [
            &c.buffer,
            l.x,
            l.bias.unwrap_or(dummy),
            l.y,
            l.norm.map_or(dummy, |n| n.weight),
            l.norm.and_then(|n| n.bias).unwrap_or(dummy),
        ];
        record(ctx, enc, shader, &p, &buffers, groups)?;
    }
    Ok(())
}
