//! Architecture descriptions: one file per family, each turning a config (HF `config.json` or GGUF
//! metadata) into an [`ArchSpec`] and naming its tensors. Both backends execute the same spec.

pub mod bert;
pub mod gpt2;
pub mod llama;

use std::path::Path;

use serde::Serialize;

use crate::error::{PrismError, Result};

/// The families Prism can run, for error messages.
pub const SUPPORTED: &str = "llama, mistral, qwen2, smollm (Llama family), gpt2, bert";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Gpt2,
    Bert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NormKind {
    LayerNorm,
    RmsNorm,
}

/// Which dimensions of a head RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RopePairing {
    /// HF `rotate_half`: dims i and i + d/2 form a pair.
    Half,
    /// llama.cpp "norm" RoPE on raw GGUF q/k rows: dims 2i and 2i+1 form a pair.
    Interleaved,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Positions {
    /// A learned position table added to the token embedding (GPT-2).
    Learned,
    /// Learned positions plus token-type 0, then a LayerNorm (BERT).
    LearnedWithTokenType,
    /// Rotary embeddings applied to q and k.
    Rope { theta: f64, pairing: RopePairing },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Activation {
    /// GELU, tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// GELU, exact erf form.
    GeluErf,
    /// SiLU(gate) * up.
    SwiGlu,
}

/// Everything a backend needs to know to execute a model.
#[derive(Debug, Clone, Serialize)]
pub struct ArchSpec {
    pub family: Family,
    /// The name the checkpoint gave (`LlamaForCausalLM`, GGUF `llama`, ...).
    pub architecture: String,
    pub n_layers: usize,
    pub hidden: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub context_length: usize,
    pub norm: NormKind,
    pub norm_eps: f64,
    pub positions: Positions,
    pub activation: Activation,
    /// Causal decoders predict the next token; encoders (BERT) attend both ways.
    pub causal: bool,
    /// Post-LN blocks (BERT): norm after each residual add instead of before each sub-block.
    pub post_norm: bool,
    /// A final norm after the last block (Llama, GPT-2).
    pub final_norm: bool,
    /// The output matrix is the token embedding.
    pub tied_embeddings: bool,
    pub sliding_window: Option<usize>,
    pub type_vocab: usize,
}

/// Sane upper bounds: a config beyond them is corrupt or hostile, and is refused before anything is allocated.
const MAX_LAYERS: usize = 1024;
const MAX_HIDDEN: usize = 1 << 17;
const MAX_VOCAB: usize = 1 << 24;
const MAX_CONTEXT: usize = 1 << 24;

impl ArchSpec {
    pub fn is_decoder(&self) -> bool {
        self.causal
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Checks the numbers against each other and against sane maxima.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |m: String| Err(PrismError::format(path, m));
        let dims = [
            ("layers", self.n_layers, MAX_LAYERS),
            ("hidden size", self.hidden, MAX_HIDDEN),
            ("attention heads", self.n_heads, MAX_HIDDEN),
            ("kv heads", self.n_kv_heads, MAX_HIDDEN),
            ("head dim", self.head_dim, MAX_HIDDEN),
            ("intermediate size", self.intermediate, MAX_HIDDEN * 8),
            ("vocabulary", self.vocab, MAX_VOCAB),
            ("context length", self.context_length, MAX_CONTEXT),
        ];
        for (name, value, max) in dims {
            if value == 0 || value > max {
                return bad(format!("{name} is {value}, expected 1..={max}"));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} attention heads is not a multiple of {} kv heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if let Positions::Rope { theta, .. } = self.positions {
            if !(theta.is_finite() && theta > 1.0) {
                return bad(format!("RoPE theta {theta} is not a usable base"));
            }
            if !self.head_dim.is_multiple_of(2) {
                return bad(format!(
                    "RoPE needs an even head dim, found {}",
                    self.head_dim
                ));
            }
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return bad(format!("norm epsilon {} is out of range", self.norm_eps));
        }
        Ok(())
    }
}

/// Picks the family from an HF `config.json` and builds its spec.
pub fn spec_from_hf_config(config: &serde_json::Value, path: &Path) -> Result<ArchSpec> {
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let architectures: Vec<String> = config
        .get("architectures")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let named = if architectures.is_empty() {
        model_type.clone()
    } else {
        architectures.join(", ")
    };
    let spec = match model_type.as_str() {
        "llama" | "mistral" | "qwen2" | "smollm" | "smollm2" => {
            llama::spec_from_hf(config, &model_type, &named, path)?
        }
        "gpt2" => gpt2::spec_from_hf(config, &named, path)?,
        "bert" => bert::spec_from_hf(config, &named, path)?,
        "" => {
            return Err(PrismError::format(
                path,
                "config.json has no \"model_type\"; cannot tell the architecture",
            ))
        }
        other => {
            return Err(PrismError::UnsupportedArch {
                path: path.to_path_buf(),
                found: format!("{other} ({named})"),
                supported: SUPPORTED,
            })
        }
    };
    spec.validate(path)?;
    Ok(spec)
}

/// Parses a family's serde config, turning serde's message into one that names the file.
pub(crate) fn parse_config<T: serde::de::DeserializeOwned>(
    config: &serde_json::Value,
    path: &Path,
) -> Result<T> {
    T::deserialize(config).map_err(|e| PrismError::format(path, format!("config.json: {e}")))
}

/// `rope_theta` at the top level (transformers 4) or inside `rope_parameters` (transformers 5).
pub(crate) fn rope_theta_from_hf(config: &serde_json::Value, default: f64) -> f64 {
    config
        .get("rope_theta")
        .and_then(|v| v.as_f64())
        .or_else(|| {
            config
                .get("rope_parameters")
                .and_then(|p| p.get("rope_theta"))
                .and_then(|v| v.as_f64())
        })
        .unwrap_or(default)
}

/// RoPE scaling changes the frequencies; Prism only implements plain RoPE, so anything else is refused
/// rather than run wrongly.
pub(crate) fn check_rope_scaling(config: &serde_json::Value, path: &Path) -> Result<()> {
    for key in ["rope_scaling", "rope_parameters"] {
        if let Some(obj) = config.get(key).filter(|v| !v.is_null()) {
            let kind = obj
                .get("rope_type")
                .or_else(|| obj.get("type"))
                .and_then(|v| v.as_str())
                .unwrap_or("default");
            if kind != "default" {
                return Err(PrismError::format(
                    path,
                    format!("RoPE scaling {kind:?} is not supported yet (only plain RoPE)"),
                ));
            }
        }
    }
    Ok(())
}
