//! The Rust side of every shader, one file per op: its `#[repr(C)]` parameter struct (the WGSL
//! `Params` of the same name, field for field) and the function that records it with its
//! workgroup counts. The backend, the neighbour search and the op tests all go through these.

pub mod attention;
pub mod edit;
pub mod elementwise;
pub mod embed;
pub mod logits;
pub mod matmul;
pub mod norm;
pub mod rope;

use prism_shaders::Shader;

use super::context::GpuContext;
use crate::error::Result;

/// A shader's parameter block: `#[repr(C)]` and made of 32-bit fields only.
///
/// # Safety
/// Implementors are `#[repr(C)]` structs whose fields are all `u32`, `i32` or `f32`.
pub unsafe trait Params: Copy {
    /// The block as words, padded to 16 bytes (uniform buffers are 16-byte aligned).
    fn words(&self) -> Vec<u32> {
        let n = std::mem::size_of::<Self>() / 4;
        // SAFETY: `Self` is a repr(C) struct of 32-bit fields (the trait's contract).
        let words = unsafe { std::slice::from_raw_parts(self as *const Self as *const u32, n) };
        let mut v = words.to_vec();
        v.resize(n.div_ceil(4) * 4, 0);
        v
    }
}

/// Records `shader` with `params` over `groups` workgroups.
pub(crate) fn record<P: Params>(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    shader: Shader,
    params: &P,
    buffers: &[&wgpu::Buffer],
    groups: (u32, u32, u32),
) -> Result<()> {
    ctx.dispatch(enc, shader, &params.words(), buffers, groups)
}

/// Workgroups for `n` items in groups of `per_group`, spread over x and y so that no dimension
/// exceeds 65535 (shaders index `gid.y * num_workgroups.x * per_group + gid.x`).
pub fn spread(n: usize, per_group: usize) -> (u32, u32, u32) {
    let groups = n.div_ceil(per_group).max(1);
    if groups <= 65535 {
        (groups as u32, 1, 1)
    } else {
        (65535, groups.div_ceil(65535) as u32, 1)
    }
}

/// One workgroup per row, rows beyond 65535 continuing in y (shaders index `wid.y * 65535 + wid.x`).
pub fn per_row(rows: usize) -> (u32, u32, u32) {
    (
        rows.clamp(1, 65535) as u32,
        rows.div_ceil(65535).max(1) as u32,
        1,
    )
}
