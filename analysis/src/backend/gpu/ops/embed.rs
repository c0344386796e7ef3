//! `embed.wgsl`: y[t] (+)= W[ids[t]], for the token embedding and learned position tables.

use prism_shaders::Shader;

use super::{record, Params};
use crate::backend::gpu::context::GpuContext;
use crate::backend::gpu::upload::GpuMatrix;
use crate::error::Result;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EmbedParams {
    pub rows: u32,
    pub width: u32,
    pub fmt: u32,
    pub row0: u32,
    pub nrows: u32,
    pub accumulate: u32,
    /// The first column read, and the table's row width (`width` columns are read).
    pub col0: u32,
    pub stride: u32,
}

// SAFETY: repr(C), all fields u32.
unsafe impl Params for EmbedParams {}

/// `cols` = (first, count) reads only those columns of each row (a layer's share of Gemma 4's
/// per-layer table); otherwise whole rows.
#[allow(clippy::too_many_arguments)]
pub fn embed(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    table: &GpuMatrix,
    ids: &wgpu::Buffer,
    y: &wgpu::Buffer,
    rows: usize,
    accumulate: bool,
    cols: Option<(usize, usize)>,
) -> Result<()> {
    let (col0, width) = cols.unwrap_or((0, table.cols));
    for c in &table.chunks {
        let p = EmbedParams {
            rows: rows as u32,
            width: width as u32,
            fmt: table.fmt,
            row0: c.row0 as u32,
            nrows: c.rows as u32,
            accumulate: accumulate as u32,
            col0: col0 as u32,
            stride: table.cols as u32,
        };
        record(
            ctx,
            enc,
            Shader::Embed,
            &p,
            &[&c.buffer, ids, y],
            (width.div_ceil(64) as u32, rows as u32, 1),
        )?;
    }
    Ok(())
}
