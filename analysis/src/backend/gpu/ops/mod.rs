//! The Rust side of every shader, one file per op: its `#[repr(C)]` parameter struct (the WGSL
//! `Params` of the same name, field for field) and the function that records it with its
//! workgroup counts. The backend, the neighbour search and the op tests all go through these.

pub mod attention;
pub mod delta;
pub mod edit;
pub mod elementwise;
pub mod embed;
pub mod experts;
pub mod feature;
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

/// The parameters of `subgroup_probe.wgsl`: how many words it writes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProbeParams {
    pub n: u32,
}

// SAFETY: repr(C), 32-bit fields.
unsafe impl Params for ProbeParams {}

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

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use prism_shaders::Shader;

    use super::attention::AttentionParams;
    use super::delta::{ConvParams, RuleParams};
    use super::edit::EditParams;
    use super::elementwise::{AddParams, ModeParams, ScaleParams};
    use super::embed::EmbedParams;
    use super::experts::{ExpertAddParams, RouteParams};
    use super::feature::FeatureParams;
    use super::logits::LogitStatsParams;
    use super::matmul::MatmulParams;
    use super::norm::NormParams;
    use super::rope::RopeParams;
    use super::ProbeParams;

    /// A Rust parameter struct's size and its fields' offsets by name.
    macro_rules! layout {
        ($t:ty { $($f:ident),* $(,)? }) => {
            (
                stringify!($t),
                size_of::<$t>(),
                vec![$((stringify!($f), offset_of!($t, $f))),*],
            )
        };
    }

    /// The uniform block of a shader as naga reads it: its size and its members' offsets.
    fn uniform_block(shader: Shader) -> (usize, Vec<(String, usize)>) {
        let src = shader.source();
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{shader:?}: {}", e.emit_to_string(&src)));
        let uniforms: Vec<_> = module
            .global_variables
            .iter()
            .filter(|(_, g)| g.space == naga::AddressSpace::Uniform)
            .collect();
        assert_eq!(uniforms.len(), 1, "{shader:?}: one uniform block");
        match &module.types[uniforms[0].1.ty].inner {
            naga::TypeInner::Struct { members, span } => (
                *span as usize,
                members
                    .iter()
                    .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
                    .collect(),
            ),
            other => panic!("{shader:?}: the uniform is not a struct: {other:?}"),
        }
    }

    #[test]
    fn every_params_struct_matches_its_shaders_uniform_block() {
        let table = [
            (vec![Shader::Add], layout!(AddParams { n, x_len, mode })),
            (vec![Shader::Scale], layout!(ScaleParams { n, mode, s })),
            (vec![Shader::Gelu], layout!(ModeParams { n, mode })),
            (
                vec![Shader::DeltaConv],
                layout!(ConvParams {
                    batch,
                    seq,
                    channels,
                    kernel,
                    mode,
                    _pad0,
                    _pad1,
                    _pad2
                }),
            ),
            (
                vec![Shader::DeltaRule],
                layout!(RuleParams {
                    batch,
                    seq,
                    channels,
                    k_heads,
                    v_heads,
                    k_dim,
                    v_dim,
                    tiled,
                    mode,
                    width,
                    eps,
                    scale
                }),
            ),
            (
                vec![Shader::Route],
                layout!(RouteParams {
                    rows,
                    experts,
                    top_k,
                    renormalize
                }),
            ),
            (
                vec![Shader::ExpertAdd],
                layout!(ExpertAddParams {
                    rows,
                    width,
                    experts,
                    expert,
                    mode,
                    _pad0,
                    _pad1,
                    _pad2
                }),
            ),
            (
                vec![Shader::Edit],
                layout!(EditParams {
                    n_rows,
                    n_mean,
                    width,
                    col0,
                    ncols,
                    mode,
                    scale
                }),
            ),
            (
                vec![Shader::FeatureEdit],
                layout!(FeatureParams {
                    n_rows,
                    width,
                    d_in,
                    d_sae,
                    feature,
                    rule,
                    k,
                    has_bdec,
                    threshold,
                    goal,
                    src_width
                }),
            ),
            (
                vec![Shader::Embed],
                layout!(EmbedParams {
                    rows,
                    width,
                    fmt,
                    row0,
                    nrows,
                    accumulate,
                    col0,
                    stride
                }),
            ),
            (
                vec![Shader::LogitStats],
                layout!(LogitStatsParams {
                    rows,
                    vocab,
                    k,
                    row0
                }),
            ),
            (
                vec![Shader::Matmul, Shader::MatmulSmall, Shader::Matvec],
                layout!(MatmulParams {
                    rows,
                    in_dim,
                    out_stride,
                    out_rows,
                    o_offset,
                    fmt,
                    has_bias,
                    epilogue,
                    norm,
                    eps,
                    alpha,
                    limit
                }),
            ),
            (
                vec![Shader::RmsNorm, Shader::LayerNorm],
                layout!(NormParams {
                    rows,
                    width,
                    eps,
                    _pad
                }),
            ),
            (
                vec![Shader::Rope],
                layout!(RopeParams {
                    rows,
                    heads,
                    head_dim,
                    pairing,
                    dims
                }),
            ),
            (
                vec![
                    Shader::Attention,
                    Shader::AttentionTiled,
                    Shader::AttentionMerge,
                ],
                layout!(AttentionParams {
                    seq,
                    past,
                    keys,
                    key_stride,
                    heads,
                    kv_heads,
                    head_dim,
                    causal,
                    window,
                    scale,
                    softcap,
                    write_probs,
                    q0,
                    q_rows,
                    b0,
                    splits,
                    has_sinks,
                    _pad0,
                    _pad1,
                    _pad2
                }),
            ),
            (vec![Shader::SubgroupProbe], layout!(ProbeParams { n })),
        ];
        // Every shader has its row.
        let covered: Vec<Shader> = table.iter().flat_map(|(s, _)| s.clone()).collect();
        for s in Shader::ALL {
            assert!(
                covered.contains(s),
                "{s:?} has no parameter struct in this table"
            );
        }
        for (shaders, (name, size, fields)) in table {
            // Every field is a 32-bit word, in order, with nothing between.
            for (i, (f, off)) in fields.iter().enumerate() {
                assert_eq!(*off, 4 * i, "{name}.{f}");
            }
            assert_eq!(size, 4 * fields.len(), "{name}: 32-bit fields only");
            for shader in shaders {
                let (span, members) = uniform_block(shader);
                // `Params::words` pads the struct to 16 bytes; the WGSL block must be that size.
                assert_eq!(span, size.div_ceil(16) * 16, "{shader:?} vs {name}: size");
                for (i, (m, off)) in members.iter().enumerate() {
                    match fields.get(i) {
                        Some((f, o)) => {
                            assert_eq!((m.as_str(), *off), (*f, *o), "{shader:?} vs {name}")
                        }
                        None => assert!(
                            m.starts_with("_pad"),
                            "{shader:?}: member {m} has no field in {name}"
                        ),
                    }
                }
                assert!(
                    members.len() >= fields.len(),
                    "{shader:?}: fields missing from the shader"
                );
            }
        }
    }
}
