//! WGSL compute shaders for Prism's GPU backend: one file per op under `wgsl/`, embedded in the
//! binary, and each validated by naga in this crate's tests. `quant.wgsl` holds the weight decoders
//! shared by the matmul and the embedding gather; it is prepended to them, not compiled alone.

/// Declares every shader once: its variant, its file, and whether it reads weights.
macro_rules! shaders {
    ($($variant:ident => $file:literal, $weights:literal;)*) => {
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

            /// True for shaders that decode weights (they get `quant.wgsl` prepended).
            pub fn reads_weights(self) -> bool {
                match self {
                    $(Shader::$variant => $weights,)*
                }
            }
        }
    };
}

shaders! {
    Embed => "embed.wgsl", true;
    Add => "add.wgsl", false;
    Scale => "scale.wgsl", false;
    RmsNorm => "rms_norm.wgsl", false;
    LayerNorm => "layer_norm.wgsl", false;
    Matmul => "matmul.wgsl", true;
    Rope => "rope.wgsl", false;
    AttentionScores => "attention_scores.wgsl", false;
    Softmax => "softmax.wgsl", false;
    AttentionValues => "attention_values.wgsl", false;
    Gelu => "gelu.wgsl", false;
    Gated => "gated.wgsl", false;
    Edit => "edit.wgsl", false;
    LogitStats => "logit_stats.wgsl", false;
}

const QUANT: &str = include_str!("../wgsl/quant.wgsl");

impl Shader {
    /// Files that are included into other shaders rather than compiled alone.
    pub const LIBRARIES: &'static [&'static str] = &["quant.wgsl"];

    /// The complete WGSL source, with the weight decoders prepended where the shader needs them.
    pub fn source(self) -> String {
        if self.reads_weights() {
            format!("{QUANT}\n{}", self.own_source())
        } else {
            self.own_source().to_string()
        }
    }
}
