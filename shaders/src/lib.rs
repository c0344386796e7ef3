//! WGSL compute shaders for Prism's GPU backend: one file per op under `wgsl/`, embedded in the
//! binary, and each validated by naga in this crate's tests. `quant.wgsl` holds the weight decoders
//! shared by the matmul and the embedding gather; it is prepended to them, not compiled alone.

/// Every shader Prism ships. The GPU backend asks for a shader's source by this name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shader {
    Embed,
    Add,
    RmsNorm,
    LayerNorm,
    Matmul,
    Rope,
    AttentionScores,
    Softmax,
    AttentionValues,
    Gelu,
    SiluGate,
    LogitStats,
}

const QUANT: &str = include_str!("../wgsl/quant.wgsl");

impl Shader {
    pub const ALL: &'static [Shader] = &[
        Shader::Embed,
        Shader::Add,
        Shader::RmsNorm,
        Shader::LayerNorm,
        Shader::Matmul,
        Shader::Rope,
        Shader::AttentionScores,
        Shader::Softmax,
        Shader::AttentionValues,
        Shader::Gelu,
        Shader::SiluGate,
        Shader::LogitStats,
    ];

    /// Files that are included into other shaders rather than compiled alone.
    pub const LIBRARIES: &'static [&'static str] = &["quant.wgsl"];

    /// The file name under `shaders/wgsl/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Shader::Embed => "embed.wgsl",
            Shader::Add => "add.wgsl",
            Shader::RmsNorm => "rms_norm.wgsl",
            Shader::LayerNorm => "layer_norm.wgsl",
            Shader::Matmul => "matmul.wgsl",
            Shader::Rope => "rope.wgsl",
            Shader::AttentionScores => "attention_scores.wgsl",
            Shader::Softmax => "softmax.wgsl",
            Shader::AttentionValues => "attention_values.wgsl",
            Shader::Gelu => "gelu.wgsl",
            Shader::SiluGate => "silu_gate.wgsl",
            Shader::LogitStats => "logit_stats.wgsl",
        }
    }

    fn own_source(self) -> &'static str {
        match self {
            Shader::Embed => include_str!("../wgsl/embed.wgsl"),
            Shader::Add => include_str!("../wgsl/add.wgsl"),
            Shader::RmsNorm => include_str!("../wgsl/rms_norm.wgsl"),
            Shader::LayerNorm => include_str!("../wgsl/layer_norm.wgsl"),
            Shader::Matmul => include_str!("../wgsl/matmul.wgsl"),
            Shader::Rope => include_str!("../wgsl/rope.wgsl"),
            Shader::AttentionScores => include_str!("../wgsl/attention_scores.wgsl"),
            Shader::Softmax => include_str!("../wgsl/softmax.wgsl"),
            Shader::AttentionValues => include_str!("../wgsl/attention_values.wgsl"),
            Shader::Gelu => include_str!("../wgsl/gelu.wgsl"),
            Shader::SiluGate => include_str!("../wgsl/silu_gate.wgsl"),
            Shader::LogitStats => include_str!("../wgsl/logit_stats.wgsl"),
        }
    }

    /// The complete WGSL source, with the weight decoders prepended where the shader needs them.
    pub fn source(self) -> String {
        match self {
            Shader::Embed | Shader::Matmul => format!("{QUANT}\n{}", self.own_source()),
            _ => self.own_source().to_string(),
        }
    }
}
