//! WGSL compute shaders for Prism's GPU backend: one file per op under `wgsl/`, embedded in the
//! binary, and each validated by naga in this crate's tests. Libraries are prepended to the shaders
//! that use them rather than compiled alone: `quant.wgsl` (the weight decoders, for the matmuls and
//! the embedding gather), `linear.wgsl` (what the two matmul kernels share) and `reduce.wgsl`
//! (workgroup reductions).

/// Declares every shader once: its variant, its file, and the libraries prepended to it.
macro_rules! shaders {
    ($($variant:ident => $file:literal, [$($lib:ident),*];)*) => {
        /// Every shader Prism ships. The GPU backend asks for a shader's source by this name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Shader {
            $($variant,)*
        }

        impl Shader {
            pub const ALL: &'static [Shader] = &[$(Shader::$variant,)*];

            /// The file name under `shaders/wgsl/`.
            pub fn file_name(self) -> &'static str {
                match self {
                    $(Shader::$variant => $file,)*
                }
            }

            fn own_source(self) -> &'static str {
                match self {
                    $(Shader::$variant => include_str!(concat!("../wgsl/", $file)),)*
                }
            }

            /// The libraries prepended to the shader, in order.
            pub fn libraries(self) -> &'static [Library] {
                match self {
                    $(Shader::$variant => &[$(Library::$lib),*],)*
                }
            }
        }
    };
}

shaders! {
    Embed => "embed.wgsl", [Quant];
    Add => "add.wgsl", [];
    Scale => "scale.wgsl", [];
    RmsNorm => "rms_norm.wgsl", [Reduce];
    LayerNorm => "layer_norm.wgsl", [Reduce];
    Matmul => "matmul.wgsl", [Staged, Tile64, Quant, Linear];
    MatmulSmall => "matmul.wgsl", [Staged, Tile32, Quant, Linear];
    Matvec => "matvec.wgsl", [Quant, Linear];
    Rope => "rope.wgsl", [];
    Attention => "attention.wgsl", [AttentionIo, Reduce];
    AttentionTiled => "attention_tiled.wgsl", [AttentionIo];
    AttentionMerge => "attention_merge.wgsl", [AttentionIo];
    Gelu => "gelu.wgsl", [];
    Edit => "edit.wgsl", [];
    FeatureEdit => "feature_edit.wgsl", [Reduce];
    LogitStats => "logit_stats.wgsl", [Reduce];
    Route => "route.wgsl", [];
    ExpertAdd => "expert_add.wgsl", [];
    DeltaConv => "delta_conv.wgsl", [];
    DeltaRule => "delta_rule.wgsl", [Reduce];
    SubgroupProbe => "subgroup_probe.wgsl", [SubgroupOps];
}

const QUANT: &str = include_str!("../wgsl/quant.wgsl");
const LINEAR: &str = include_str!("../wgsl/linear.wgsl");
const REDUCE: &str = include_str!("../wgsl/reduce.wgsl");
const ATTENTION_IO: &str = include_str!("../wgsl/attention_io.wgsl");
const REDUCE_SUBGROUP: &str = include_str!("../wgsl/reduce_subgroup.wgsl");

/// A piece of WGSL prepended to the shaders that use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    /// `quant.wgsl`: the weight decoders.
    Quant,
    /// `linear.wgsl`: what the two matmul kernels share.
    Linear,
    /// `attention_io.wgsl`: what the two attention kernels share.
    AttentionIo,
    /// `reduce.wgsl`, or `reduce_subgroup.wgsl` on the subgroup path: workgroup reductions.
    Reduce,
    /// `alias Staged = f32;`, or `f16` on the f16 path: the type weights are staged in.
    Staged,
    /// No text: the shader uses subgroup operations on every path (the subgroup probe).
    SubgroupOps,
    /// `const T: u32 = 64u;`: the matmul's tile (64 x 64, 256 threads).
    Tile64,
    /// `const T: u32 = 32u;`: a smaller tile (32 x 32, 64 threads) for small problems.
    Tile32,
}

/// The feature paths a shader can be built for, chosen once per device (`GpuContext`). The
/// default is the exact path that every adapter runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Paths {
    /// Reductions with subgroup operations (`SUBGROUP`); the same numbers up to summation order.
    pub subgroups: bool,
    /// Matmul weights staged in shared memory as f16 (`SHADER_F16`), accumulation in f32: the
    /// "fast" mode, each weight rounded to f16.
    pub f16_weights: bool,
}

impl Paths {
    /// Every combination, for validation.
    pub const ALL: [Paths; 4] = [
        Paths {
            subgroups: false,
            f16_weights: false,
        },
        Paths {
            subgroups: true,
            f16_weights: false,
        },
        Paths {
            subgroups: false,
            f16_weights: true,
        },
        Paths {
            subgroups: true,
            f16_weights: true,
        },
    ];
}

impl Shader {
    /// Files that are included into other shaders rather than compiled alone.
    pub const LIBRARIES: &'static [&'static str] = &[
        "quant.wgsl",
        "linear.wgsl",
        "attention_io.wgsl",
        "reduce.wgsl",
        "reduce_subgroup.wgsl",
    ];

    /// The complete WGSL source on the exact path.
    pub fn source(self) -> String {
        self.source_with(Paths::default())
    }

    /// The complete WGSL source for `paths`: the `enable` directives it needs, its libraries in
    /// their form for those paths, then the shader.
    pub fn source_with(self, paths: Paths) -> String {
        let mut directives = String::new();
        let mut body = String::new();
        for lib in self.libraries() {
            let text = match lib {
                Library::Quant => QUANT,
                Library::Linear => LINEAR,
                Library::AttentionIo => ATTENTION_IO,
                // Naga takes subgroup operations without an `enable` (it refuses `enable subgroups`).
                Library::Reduce if paths.subgroups => REDUCE_SUBGROUP,
                Library::Reduce => REDUCE,
                Library::Staged if paths.f16_weights => {
                    directives.push_str("enable f16;\n");
                    "alias Staged = f16;\n"
                }
                Library::Staged => "alias Staged = f32;\n",
                Library::SubgroupOps => "",
                Library::Tile64 => "const T: u32 = 64u;\n",
                Library::Tile32 => "const T: u32 = 32u;\n",
            };
            body.push_str(text);
            body.push('\n');
        }
        directives + &body + self.own_source()
    }

    /// Whether the shader differs between the two values of a path (the pipeline cache keys on
    /// this).
    pub fn uses_subgroups(self) -> bool {
        self.libraries().contains(&Library::Reduce)
    }

    /// The shader's name in profiles and labels: its file, or for a variant of a shared file,
    /// the file with the variant's suffix.
    pub fn label(self) -> &'static str {
        match self {
            Shader::MatmulSmall => "matmul_small.wgsl",
            s => s.file_name(),
        }
    }

    /// Whether the shader needs subgroup operations whatever the path.
    pub fn needs_subgroups(self) -> bool {
        self.libraries().contains(&Library::SubgroupOps)
    }

    pub fn uses_f16(self) -> bool {
        self.libraries().contains(&Library::Staged)
    }
}
