//! `feature_edit.wgsl`: an SAE feature clamped to a value on some rows, its error term kept.

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
}

// SAFETY: repr(C), 32-bit fields.
unsafe impl Params for FeatureParams {}

/// Rows `rows` of `x` `[.., width]` (the SAE's input, `width` = d_in) get feature
/// `encoder.feature` set to `target`.
pub fn clamp(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    x: &wgpu::Buffer,
    width: usize,
    rows: &[usize],
    encoder: &FeatureEncoder,
    target: f32,
) -> Result<()> {
    let d_in = encoder.direction.len();
    if d_in != width {
        return Err(PrismError::Backend(format!(
            "feature edit: the SAE reads {d_in} values, the site has {width}"
        )));
    }
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
    };
    record(
        ctx,
        enc,
        Shader::FeatureEdit,
        &p,
        &[&rows_buf, &w_enc, &b_enc, &b_dec, &direction, x],
        per_row(rows.len()),
    )
}
