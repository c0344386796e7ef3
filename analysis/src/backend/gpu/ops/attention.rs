//! `attention_tiled.wgsl` (heads up to 128 dimensions: 8 queries per workgroup sharing each key and
//! value tile) and `attention.wgsl` (any head up to 512: one query per workgroup): scores, mask,
//! softmax and values in one dispatch per layer; the probabilities are written only when they are
//! captured, straight
//! into the capture buffer, or, where it is larger than one binding, in blocks of queries through a
//! scratch buffer and copies.

use prism_shaders::Shader;

use super::{record, Params};
use crate::backend::exec::AttnShape;
use crate::backend::gpu::context::GpuContext;
use crate::error::{PrismError, Result};

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AttentionParams {
    pub seq: u32,
    pub past: u32,
    pub keys: u32,
    pub key_stride: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub causal: u32,
    pub window: u32,
    pub scale: f32,
    pub softcap: f32,
    pub write_probs: u32,
    pub q0: u32,
    pub q_rows: u32,
    pub b0: u32,
    pub splits: u32,
    pub has_sinks: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

// SAFETY: repr(C), 32-bit fields.
unsafe impl Params for AttentionParams {}

/// The largest head dimension the per-query kernel takes (8 slots of 64 threads: Gemma 4's
/// global layers).
pub const MAX_HEAD_DIM: usize = 512;
/// The largest head dimension of the tiled kernel, and its queries per workgroup.
pub const TILED_HEAD_DIM: usize = 128;
pub const TILED_QUERIES: usize = 8;

/// Which attention kernel runs: the tiled one where the head fits it, or one forced (the op tests
/// run both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnKernel {
    Auto,
    PerQuery,
    Tiled,
    /// The per-query kernel with each query's keys in this many parts, then a merge.
    Split(u32),
}

/// Keys per part when decoding splits its keys: the per-query kernel alone leaves a GPU with
/// one workgroup per head and sequence, walking every key in turn.
pub const SPLIT_KEYS: usize = 256;
/// Queries x heads x sequences below which decoding over many keys is split.
pub const SPLIT_BELOW: usize = 256;

/// How many parts `AttnKernel::Auto` splits each query's keys into on the per-query kernel: more
/// than one only when decoding (few queries x heads x sequences) over many keys, without
/// probabilities; at most 32, each of at least SPLIT_KEYS keys.
pub fn auto_parts(sh: &AttnShape, with_probs: bool) -> usize {
    if with_probs || sh.keys < 2 * SPLIT_KEYS || sh.seq * sh.heads * sh.batch >= SPLIT_BELOW {
        return 1;
    }
    (sh.keys / SPLIT_KEYS).min(32)
}

/// out `[batch * seq, heads * head_dim]` from q, the keys and values `[batch * key_stride, kv_heads
/// * head_dim]`; with `probs`, the probabilities `[batch][heads][seq][keys]` as well.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    out: &wgpu::Buffer,
    probs: Option<&wgpu::Buffer>,
    sinks: Option<&wgpu::Buffer>,
    sh: &AttnShape,
) -> Result<()> {
    attention_with(ctx, enc, [q, k, v, out], probs, sinks, sh, AttnKernel::Auto)
}

pub fn attention_with(
    ctx: &GpuContext,
    enc: &mut wgpu::CommandEncoder,
    [q, k, v, out]: [&wgpu::Buffer; 4],
    probs: Option<&wgpu::Buffer>,
    sinks: Option<&wgpu::Buffer>,
    sh: &AttnShape,
    kernel: AttnKernel,
) -> Result<()> {
    // Each head's sink logit `[heads]`, or nothing to read (the dummy binding).
    let sink_buf = sinks.unwrap_or(&ctx.dummy2);
    let tiled = match kernel {
        // A tile of 8 queries pays off from a few queries on; decoding (1 query per sequence)
        // takes the per-query kernel, whose 64 threads each score a key.
        AttnKernel::Auto => sh.head_dim <= TILED_HEAD_DIM && sh.seq >= TILED_QUERIES / 2,
        AttnKernel::PerQuery => false,
        AttnKernel::Tiled if sh.head_dim > TILED_HEAD_DIM => {
            return Err(PrismError::Backend(format!(
                "attention_tiled.wgsl takes heads of up to {TILED_HEAD_DIM} dimensions, not {}",
                sh.head_dim
            )))
        }
        AttnKernel::Tiled => true,
        AttnKernel::Split(_) => false,
    };
    let splits = match kernel {
        AttnKernel::Split(n) => n.max(1) as usize,
        AttnKernel::Auto if !tiled => auto_parts(sh, probs.is_some()),
        _ => 1,
    };
    if splits > 1 && probs.is_some() {
        return Err(PrismError::Backend(
            "split attention does not write probabilities".into(),
        ));
    }
    let (shader, per_group) = if tiled {
        (Shader::AttentionTiled, TILED_QUERIES)
    } else {
        (Shader::Attention, 1)
    };
    if sh.head_dim > MAX_HEAD_DIM {
        return Err(PrismError::Backend(format!(
            "attention.wgsl takes heads of up to {MAX_HEAD_DIM} dimensions, not {}",
            sh.head_dim
        )));
    }
    if sh.keys == 0 || sh.kv_heads == 0 || !sh.heads.is_multiple_of(sh.kv_heads) {
        return Err(PrismError::Backend(format!(
            "attention over {} keys with {} query heads and {} key/value heads",
            sh.keys, sh.heads, sh.kv_heads
        )));
    }
    let mut p = AttentionParams {
        seq: sh.seq as u32,
        past: sh.past as u32,
        keys: sh.keys as u32,
        key_stride: sh.key_stride as u32,
        heads: sh.heads as u32,
        kv_heads: sh.kv_heads as u32,
        head_dim: sh.head_dim as u32,
        causal: sh.causal as u32,
        window: sh
            .window
            .unwrap_or(u32::MAX as usize)
            .min(u32::MAX as usize) as u32,
        scale: sh.scale,
        softcap: sh.softcap.unwrap_or(0.0),
        write_probs: probs.is_some() as u32,
        q0: 0,
        q_rows: sh.seq as u32,
        b0: 0,
        splits: 1,
        has_sinks: sinks.is_some() as u32,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    if splits > 1 {
        p.splits = splits as u32;
        let parts = ctx.scratch(
            "attention parts",
            sh.batch * sh.seq * sh.heads * splits * (sh.head_dim + 2),
        )?;
        let groups = ((sh.seq * splits) as u32, sh.heads as u32, sh.batch as u32);
        record(
            ctx,
            enc,
            shader,
            &p,
            &[q, k, v, out, &parts, sink_buf],
            groups,
        )?;
        let groups = (sh.seq as u32, sh.heads as u32, sh.batch as u32);
        let bufs = [q, k, v, out, &parts];
        return record(ctx, enc, Shader::AttentionMerge, &p, &bufs, groups);
    }
    let limit = ctx.max_binding();
    let probs = match probs {
        Some(pr) if pr.size() > limit => pr,
        direct => {
            let groups = (
                sh.seq.div_ceil(per_group) as u32,
                sh.heads as u32,
                sh.batch as u32,
            );
            let pr = direct.unwrap_or(&ctx.dummy);
            return record(ctx, enc, shader, &p, &[q, k, v, out, pr, sink_buf], groups);
        }
    };
    let row = sh.heads * sh.keys * 4;
    let block = (limit as usize / row.max(1)).clamp(1, sh.seq.max(1));
    let scratch = ctx.buffer("attention probabilities", sh.heads * block * sh.keys)?;
    for b in 0..sh.batch {
        let mut q0 = 0;
        while q0 < sh.seq {
            let qr = block.min(sh.seq - q0);
            (p.q0, p.q_rows, p.b0) = (q0 as u32, qr as u32, b as u32);
            let groups = (qr as u32, sh.heads as u32, 1);
            record(
                ctx,
                enc,
                Shader::Attention,
                &p,
                &[q, k, v, out, &scratch, sink_buf],
                groups,
            )?;
            for h in 0..sh.heads {
                let dst = ((b * sh.heads + h) * sh.seq + q0) * sh.keys;
                enc.copy_buffer_to_buffer(
                    &scratch,
                    (h * qr * sh.keys * 4) as u64,
                    probs,
                    (dst * 4) as u64,
                    Some((qr * sh.keys * 4) as u64),
                );
            }
            q0 += qr;
        }
    }
    Ok(())
}
