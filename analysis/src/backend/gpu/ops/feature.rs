//! `feature_edit.wgsl`: an SAE or transcoder feature clamped to a value on some rows, its error
//! term kept.

use prism_shaders::Shader;

use super::{per_row, record, Params};
use crate::backend::gpu::context::{f32_bytes, u32_bytes, GpuContext};
use crate::error::{PrismError, Result};
use crate::intervene::{FeatureEncoder, FeatureRule};

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FeatureParams {
    pub n_rows: u32,
    pub width: u32,
    pub d_in: u32,
    pub d_sae: u32,
    pub feature: u32,
    pub rule: u32,
    pub k: u32,
    pub has_bdec: u32,
    pub threshold: f32,
    pub goal: f32,
    pub src_width: u32,
}

// SAFETY: repr(C), 32-bit fields.
unsafe impl Params for FeatureParams {}

/// Rows `rows` of `x` `[.., width]` get feature `encoder.feature` set to `target`, the feature
/// read from the same rows of `source` `[.., d_in]` (a transcoder's input) or of `x` (an SAE's).
#[allow(clippy::too_many_arguments)]
pub fn clamp(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    width: usize,
    rows: &[usize],
    encoder: &FeatureEncoder,
    target: f32,
    source: Option<&wgpu::Buffer>,
) -> Result<()> {
    let d_in = encoder.d_in();
    let d_out = encoder.direction.len();
    if d_out != width || (source.is_none() && d_in != width) {
        return Err(PrismError::Backend(format!(
            "feature edit: the SAE reads {d_in} values and writes {d_out}, the site has {width}"
        )));
    }
    // The shader writes x and reads the source: an SAE's source is a copy of x.
    let copy;
    let src = match source {
        Some(s) => s,
        None => {
            copy = ctx.scratch("feature edit input", (x.size() / 4) as usize)?;
            enc.copy_buffer_to_buffer(x, 0, &copy, 0, None);
            &copy
        }
    };
    let bytes = encoder.w_enc.len() as u64 * 4;
    if bytes > ctx.max_binding() {
        return Err(PrismError::Input(format!(
            "feature {}: this TopK SAE's encoder ({} MiB) is larger than this GPU binds at once ({} MiB); run it with --backend cpu",
            encoder.feature,
            bytes >> 20,
            ctx.max_binding() >> 20
        )));
    }
    let (rule, k, threshold) = match encoder.rule {
        FeatureRule::Relu => (0, 0, 0.0),
        FeatureRule::JumpRelu(t) => (1, 0, t),
        FeatureRule::TopK(k) => (2, k as u32, 0.0),
    };
    let rows32: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    let rows_buf = ctx.upload("feature rows", &u32_bytes(&rows32));
    let w_enc = ctx.upload("feature encoder", &f32_bytes(&encoder.w_enc));
    let b_enc = ctx.upload("feature encoder bias", &f32_bytes(&encoder.b_enc));
    let b_dec = ctx.upload(
        "feature decoder bias",
        &f32_bytes(encoder.b_dec_in.as_deref().map_or(&[][..], |b| &b[..])),
    );
    let direction = ctx.upload("feature direction", &f32_bytes(&encoder.direction));
    let p = FeatureParams {
        n_rows: rows.len() as u32,
        width: width as u32,
        d_in: d_in as u32,
        d_sae: encoder.d_sae as u32,
        feature: encoder.feature as u32,
        rule,
        k,
        has_bdec: encoder.b_dec_in.is_some() as u32,
        threshold,
        goal: target,
        src_width: d_in as u32,
    };
    record(
        ctx,
        enc,
        Shader::FeatureEdit,
        &p,
        &[&rows_buf, &w_enc, &b_enc, &b_dec, &direction, src, x],
        per_row(rows.len()),
    )
}
