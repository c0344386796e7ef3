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
            pub fn libraries(self) -> &'static [&'static str] {
                match self {
                    $(Shader::$variant => &[$($lib),*],)*
                }
            }
        }
    };
}

shaders! {
    Embed => "embed.wgsl", [QUANT];
    Add => "add.wgsl", [];
    Scale => "scale.wgsl", [];
    RmsNorm => "rms_norm.wgsl", [];
    LayerNorm => "layer_norm.wgsl", [];
    Matmul => "matmul.wgsl", [QUANT, LINEAR];
    Matvec => "matvec.wgsl", [QUANT, LINEAR];
    Rope => "rope.wgsl", [];
    Attention => "attention.wgsl", [REDUCE];
    Gelu => "gelu.wgsl", [];
    Gated => "gated.wgsl", [];
    Edit => "edit.wgsl", [];
    LogitStats => "logit_stats.wgsl", [];
}

const QUANT: &str = include_str!("../wgsl/quant.wgsl");
const LINEAR: &str = include_str!("../wgsl/linear.wgsl");
const REDUCE: &str = include_str!("../wgsl/reduce.wgsl");

impl Shader {
    /// Files that are included into other shaders rather than compiled alone.
    pub const LIBRARIES: &'static [&'static str] = &["quant.wgsl", "linear.wgsl", "reduce.wgsl"];

    /// The complete WGSL source, with its libraries prepended.
    pub fn source(self) -> String {
        let mut s = String::new();
        for lib in self.libraries() {
            s.push_str(lib);
            s.push('\n');
        }
        s.push_str(self.own_source());
        s
    }
}
