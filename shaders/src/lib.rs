//! WGSL compute shaders for Prism's GPU backend: one file per op under `wgsl/`, embedded in the
//! binary, and each validated by naga in this crate's tests.

/// Every shader Prism ships. The GPU backend asks for a shader's source by this name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shader {
    RmsNorm,
}

impl Shader {
    pub const ALL: &'static [Shader] = &[Shader::RmsNorm];

    /// The file name under `shaders/wgsl/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Shader::RmsNorm => "rms_norm.wgsl",
        }
    }

    /// The WGSL source.
    pub fn source(self) -> &'static str {
        match self {
            Shader::RmsNorm => include_str!("../wgsl/rms_norm.wgsl"),
        }
    }
}
