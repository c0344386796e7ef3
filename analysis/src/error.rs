//! One error type for everything the analysis crate can refuse, with enough context to act on.

use std::path::PathBuf;

/// Errors carry the file, the tensor or the setting they are about.
///
/// [`PrismError::is_bad_input`] separates "the input is wrong" (exit code 2 in the CLI)
/// from "something else went wrong" (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum PrismError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: unsupported architecture {found}; Prism supports {supported}")]
    UnsupportedArch {
        path: PathBuf,
        found: String,
        supported: String,
    },
    #[error("{path}: tensor {tensor:?} has shape {found:?} and dtype {found_dtype}, expected shape {expected:?}")]
    Shape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        found_dtype: String,
    },
    #[error("{path}: tensor {tensor:?} is missing")]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("{0}")]
    Input(String),
    #[error("{path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("fetching {what}: {message}")]
    Fetch { what: String, message: String },
    #[error("{0}")]
    Backend(String),
    /// A model or a capture that would not fit in memory, refused before allocating.
    #[error("{0}")]
    TooLarge(String),
    #[error("cancelled")]
    Cancelled,
}

impl PrismError {
    /// True when the user's input (a file, a text, an option) is at fault.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            PrismError::Format { .. }
                | PrismError::UnsupportedArch { .. }
                | PrismError::Shape { .. }
                | PrismError::MissingTensor { .. }
                | PrismError::Input(_)
                | PrismError::Tokenizer { .. }
                | PrismError::TooLarge(_)
        ) || matches!(self, PrismError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound
            || source.kind() == std::io::ErrorKind::UnexpectedEof
            || source.kind() == std::io::ErrorKind::InvalidData
            || source.kind() == std::io::ErrorKind::PermissionDenied
            || source.kind() == std::io::ErrorKind::IsADirectory)
    }

    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        PrismError::Format {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PrismError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Errors from candle inside the forward pass are not the user's fault: they are bugs or resource limits.
pub(crate) fn backend_err(e: candle_core::Error) -> PrismError {
    PrismError::Backend(format!("candle: {e}"))
}

pub type Result<T, E = PrismError> = std::result::Result<T, E>;
