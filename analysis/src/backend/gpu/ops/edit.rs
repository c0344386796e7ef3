//! `edit.wgsl`: interventions on rows and columns of a buffer; an SAE feature's clamp goes to
//! `feature_edit.wgsl`.

use prism_shaders::Shader;

use super::{record, Params};
use crate::backend::exec::{Edit, EditKind};
use crate::backend::gpu::context::{f32_bytes, u32_bytes, GpuContext};
use crate::error::Result;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EditParams {
    pub n_rows: u32,
    pub n_mean: u32,
    pub width: u32,
    pub col0: u32,
    pub ncols: u32,
    pub mode: u32,
    pub scale: f32,
}

// SAFETY: repr(C), 32-bit fields.
unsafe impl Params for EditParams {}

pub fn edit(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    width: usize,
    e: &Edit<'_>,
    source: Option<&wgpu::Buffer>,
) -> Result<()> {
    let mut rows: Vec<u32> = e.rows.iter().map(|&r| r as u32).collect();
    let (mode, scale, values, n_mean): (u32, f32, Vec<f32>, usize) = match &e.kind {
        EditKind::Add { vector, scale } => (0, *scale, vector.to_vec(), 0),
        EditKind::Set(v) => (1, 1.0, v.clone(), 0),
        EditKind::Zero => (2, 1.0, Vec::new(), 0),
        EditKind::Mean { over } => {
            rows.extend(over.iter().map(|&r| r as u32));
            (3, 1.0, Vec::new(), over.len())
        }
        EditKind::Feature { encoder, target } => {
            return super::feature::clamp(ctx, enc, x, width, &e.rows, encoder, *target, source)
        }
    };
    let rows_buf = ctx.upload("edit rows", &u32_bytes(&rows));
    let values_buf = ctx.upload("edit values", &f32_bytes(&values));
    let p = EditParams {
        n_rows: e.rows.len() as u32,
        n_mean: n_mean as u32,
        width: width as u32,
        col0: e.col0 as u32,
        ncols: e.ncols as u32,
        mode,
        scale,
    };
    record(
        ctx,
        enc,
        Shader::Edit,
        &p,
        &[&rows_buf, &values_buf, x],
        (e.ncols.div_ceil(64) as u32, 1, 1),
    )
}
