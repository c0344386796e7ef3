//! A loaded model: its architecture spec, its weights as stored, its tokenizer, and what `prism
//! info` shows about it. Opening files is `checkpoint`'s job; this is what opening makes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::arch::{ArchSpec, Format};
use crate::tokenizer::PrismTokenizer;
use crate::weights::ModelWeights;

/// Templates longer than this are refused unread (real ones are a few KiB; the longest
/// published, with tool-calling, are under 64 KiB).
pub const MAX_TEMPLATE_BYTES: usize = 1 << 20;

/// What `prism info` shows about a checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub format: Format,
    /// Total bytes of the weight files.
    pub file_size: u64,
    pub n_params: usize,
    /// Tensors per stored dtype, over every tensor in the file(s).
    pub dtypes: BTreeMap<String, usize>,
    pub tokenizer: Option<String>,
    /// The chat template the checkpoint carries (GGUF `tokenizer.chat_template`, or
    /// `tokenizer_config.json`'s `chat_template`).
    #[serde(skip)]
    pub chat_template: Option<ChatTemplate>,
    /// Token ids that end a generation (EOS, end of turn), from the tokenizer and the config.
    pub end_ids: Vec<u32>,
}

/// A chat template and where it was read from, for error messages that name the file and key.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    /// The template; empty when it is longer than [`MAX_TEMPLATE_BYTES`]
    /// (never copied, refused when rendered).
    pub text: String,
    /// Its length in bytes as stored.
    pub bytes: usize,
    /// `FILE: KEY`, e.g. `model.gguf: tokenizer.chat_template`.
    pub origin: String,
}

impl ChatTemplate {
    pub(crate) fn new(text: &str, origin: String) -> ChatTemplate {
        let bytes = text.len();
        let text = if bytes > MAX_TEMPLATE_BYTES {
            String::new()
        } else {
            text.to_string()
        };
        ChatTemplate {
            text,
            bytes,
            origin,
        }
    }
}

pub struct Model {
    pub spec: ArchSpec,
    pub weights: ModelWeights,
    pub tokenizer: Option<PrismTokenizer>,
    pub info: ModelInfo,
    pub warnings: Vec<String>,
}

impl Model {
    /// A token's text as the tokenizer gives it, or `<id>` without one.
    pub fn token_text(&self, id: u32) -> String {
        self.tokenizer
            .as_ref()
            .map(|t| t.token_text(id))
            .unwrap_or_else(|| format!("<{id}>"))
    }
}
