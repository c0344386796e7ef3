//! Architecture descriptions: one file per family, each turning a config (HF `config.json` or GGUF
//! metadata) into an [`ArchSpec`] and loading its weights into the canonical [`ModelWeights`].
//! Both backends execute the same spec. Adding an architecture is one file here plus one line in
//! [`REGISTRY`].

pub mod bert;
mod block;
mod experts;
pub mod gemma;
pub mod gemma4;
pub mod gpt2;
pub mod gptneox;
pub mod gptoss;
pub mod llama;
pub mod olmo2;
pub mod phi3;
pub mod qwen3;
pub mod qwen35;
pub mod qwen3moe;
mod rope;
pub mod smollm3;

use std::path::Path;

use serde::Serialize;

pub use block::{
    check_norms, top_k, Block, DeltaNetSpec, ExpertSpec, HeadGrouping, KvSource, LayerHeads,
    LayerKind, LayerRope, Mixer, MlpKind, QkNorm, SublayerNorms, MAX_EXPERTS,
};
pub use rope::{Rope, RopeScaling, Yarn};

use crate::error::{PrismError, Result};
use crate::gguf::GgufMeta;
use crate::weights::{get, get_opt, Linear, ModelWeights, NormWeights, TensorSource};

/// Which file format a checkpoint came in; loaders name tensors accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Format {
    #[serde(rename = "gguf")]
    Gguf,
    #[serde(rename = "safetensors")]
    Safetensors,
}

/// One supported architecture family.
pub struct Architecture {
    /// Short name ("llama", "gemma2").
    pub name: &'static str,
    /// What it covers, for messages and `prism info`.
    pub covers: &'static str,
    /// HF `model_type` values it reads.
    pub hf_model_types: &'static [&'static str],
    /// GGUF `general.architecture` values it reads.
    pub gguf_names: &'static [&'static str],
    pub spec_from_hf: fn(&HfConfig<'_>) -> Result<ArchSpec>,
    pub spec_from_gguf: fn(&GgufConfig<'_>) -> Result<ArchSpec>,
    pub load_weights: fn(&dyn TensorSource, &ArchSpec, Format) -> Result<ModelWeights>,
    /// Stored tensors the computation does not use (training buffers, heads Prism does not run).
    pub unused_tensor: fn(&str) -> bool,
    /// `{arch}.*` GGUF keys that do not change the computation.
    pub harmless_gguf_keys: &'static [&'static str],
}

/// Every architecture Prism runs.
pub static REGISTRY: &[&Architecture] = &[
    &llama::ARCH,
    &qwen3::ARCH,
    &qwen3moe::ARCH,
    &qwen35::ARCH,
    &qwen35::MOE,
    &gptoss::ARCH,
    &gemma::GEMMA2,
    &gemma::GEMMA3,
    &gemma4::ARCH,
    &phi3::ARCH,
    &gptneox::ARCH,
    &gpt2::ARCH,
    &bert::ARCH,
    &olmo2::ARCH,
    &smollm3::ARCH,
];

/// The supported architectures, for error messages.
pub fn supported() -> String {
    REGISTRY
        .iter()
        .map(|a| format!("{} ({})", a.name, a.covers))
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NormKind {
    LayerNorm,
    RmsNorm,
}

/// Which dimensions of a head RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RopePairing {
    /// HF `rotate_half` (NeoX style): dims i and i + d/2 of the rotated part form a pair.
    Half,
    /// llama.cpp "norm" RoPE on raw GGUF q/k rows: dims 2i and 2i+1 form a pair.
    Interleaved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Positions {
    /// A learned position table added to the token embedding (GPT-2).
    Learned,
    /// Learned positions plus token-type 0, then a LayerNorm (BERT).
    LearnedWithTokenType,
    /// Rotary embeddings applied to q and k ([`ArchSpec::rope`]).
    Rope,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Activation {
    /// down(silu(gate) * up).
    SwiGlu,
    /// down(gelu_tanh(gate) * up) (Gemma).
    GeGluTanh,
    /// gpt-oss's clamped SwiGLU: g = min(gate, limit), u = clamp(up, -limit, limit),
    /// down((u + 1) * g * sigmoid(alpha * g)).
    SwiGluClamped { alpha: f32, limit: f32 },
    /// GELU, tanh approximation (`gelu_new`, `gelu_pytorch_tanh`), no gate.
    GeluTanh,
    /// GELU, exact erf form, no gate.
    GeluErf,
}

impl Activation {
    pub fn is_gated(self) -> bool {
        matches!(
            self,
            Activation::SwiGlu | Activation::GeGluTanh | Activation::SwiGluClamped { .. }
        )
    }
}

/// Everything a backend needs to know to execute a model.
#[derive(Debug, Clone, Serialize)]
pub struct ArchSpec {
    /// The registry entry ("llama", "gemma2").
    pub family: &'static str,
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
    pub rope: Option<Rope>,
    pub activation: Activation,
    pub block: Block,
    /// Norms of q and k after the projections, before RoPE.
    pub qk_norm: QkNorm,
    /// The token embedding is multiplied by this (Gemma: sqrt(hidden)).
    pub embed_scale: Option<f32>,
    /// Attention scores are q.k times this.
    pub attn_scale: f32,
    /// Scores become cap * tanh(s / cap) before the mask (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// Logits become cap * tanh(z / cap) (Gemma 2).
    pub final_softcap: Option<f32>,
    pub layers: Vec<LayerKind>,
    /// How the mixture-of-experts layers route ([`MlpKind::Experts`]), when there are any.
    pub experts: Option<ExpertSpec>,
    /// The shape of the linear-attention layers ([`Mixer::DeltaNet`]), when there are any.
    pub delta_net: Option<DeltaNetSpec>,
    /// The q projection holds, per head, the queries and then as many gate values: the attention
    /// output is multiplied by sigmoid(gate) before the output projection (Qwen3.5).
    pub attn_gate: bool,
    /// Each head has a learned sink logit ([`crate::weights::MixerWeights::Attention`]'s
    /// `sinks`): a key with that score and no value joins every softmax (gpt-oss).
    pub attn_sinks: bool,
    /// Values are RMS-normalized per head, without a weight, before attention (Gemma 4).
    pub v_norm: bool,
    /// Per-layer input embeddings of this width (Gemma 4's PLE): each layer ends with
    /// h += norm(proj(act(gate(h)) * ple_l)), ple_l from a token table of its own and a
    /// projection of the embedding ([`crate::weights::PerLayerInput`]).
    pub per_layer_input: Option<usize>,
    /// Each layer's output (the whole residual stream) is multiplied by its factor here
    /// (Gemma 4's `layer_scalar`); empty when there are none. Read from the weights.
    pub layer_scale: Vec<f32>,
    /// Causal decoders predict the next token; encoders (BERT) attend both ways.
    pub causal: bool,
    /// A final norm after the last block (every decoder here).
    pub final_norm: bool,
    /// The output matrix is the token embedding.
    pub tied_embeddings: bool,
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

    /// Layer `l`'s dense MLP width.
    pub fn mlp_width_at(&self, l: usize) -> usize {
        self.layers
            .get(l)
            .and_then(|k| k.mlp_width)
            .unwrap_or(self.intermediate)
    }

    /// Why a run cannot start at block `layer` from a residual stream handed in, if it cannot:
    /// the per-layer inputs read the token ids, and a layer may read an earlier one's keys.
    pub fn cannot_start_at(&self, layer: usize) -> Option<&'static str> {
        if layer == 0 || layer >= self.n_layers {
            return None;
        }
        if self.per_layer_input.is_some() {
            return Some("every layer reads the token ids (per-layer input embeddings)");
        }
        let shared_below = self.layers[layer..]
            .iter()
            .any(|k| matches!(k.kv, KvSource::Shared(src) if src < layer));
        shared_below.then_some("a later layer reads the keys and values of a layer below it")
    }

    /// Layer `l`'s head size.
    pub fn head_dim_at(&self, l: usize) -> usize {
        self.layer_heads(l).head_dim
    }

    /// Layer `l`'s key/value heads.
    pub fn kv_heads_at(&self, l: usize) -> usize {
        self.layer_heads(l).kv_heads
    }

    /// Layer `l`'s head size and key/value heads.
    pub fn layer_heads(&self, l: usize) -> LayerHeads {
        self.layers
            .get(l)
            .and_then(|k| k.heads)
            .unwrap_or(LayerHeads {
                head_dim: self.head_dim,
                kv_heads: self.n_kv_heads,
            })
    }

    /// Layer `l`'s query width (every head's values, the input of o_proj).
    pub fn q_dim_at(&self, l: usize) -> usize {
        self.n_heads * self.head_dim_at(l)
    }

    /// Layer `l`'s key (and value) width.
    pub fn kv_dim_at(&self, l: usize) -> usize {
        let h = self.layer_heads(l);
        h.kv_heads * h.head_dim
    }

    /// The widest query and key widths of any layer (the pass's scratch).
    pub fn max_q_dim(&self) -> usize {
        (0..self.n_layers)
            .map(|l| self.q_dim_at(l))
            .fold(self.q_dim(), usize::max)
    }

    pub fn max_kv_dim(&self) -> usize {
        (0..self.n_layers)
            .map(|l| self.kv_dim_at(l))
            .fold(self.kv_dim(), usize::max)
    }

    /// A spec with the fields every family shares filled in, and the rest at their plainest.
    pub(crate) fn base(family: &'static str, architecture: String) -> ArchSpec {
        ArchSpec {
            family,
            architecture,
            n_layers: 0,
            hidden: 0,
            n_heads: 0,
            n_kv_heads: 0,
            head_dim: 0,
            intermediate: 0,
            vocab: 0,
            context_length: 0,
            norm: NormKind::RmsNorm,
            norm_eps: 1e-5,
            positions: Positions::Rope,
            rope: None,
            activation: Activation::SwiGlu,
            block: Block::PRE_NORM,
            qk_norm: QkNorm::None,
            embed_scale: None,
            attn_scale: 0.0,
            attn_softcap: None,
            final_softcap: None,
            layers: Vec::new(),
            experts: None,
            delta_net: None,
            attn_gate: false,
            attn_sinks: false,
            v_norm: false,
            per_layer_input: None,
            layer_scale: Vec::new(),
            causal: true,
            final_norm: true,
            tied_embeddings: false,
            type_vocab: 0,
        }
    }

    /// Every layer the same: full attention, or one sliding window for all.
    pub(crate) fn uniform_layers(&mut self, window: Option<usize>) {
        self.layers = vec![
            LayerKind {
                window,
                ..LayerKind::FULL
            };
            self.n_layers
        ];
    }

    /// The default attention scale 1/sqrt(head_dim), unless a family set its own.
    fn finish(&mut self) {
        if self.attn_scale == 0.0 {
            self.attn_scale = (1.0 / (self.head_dim as f64).sqrt()) as f32;
        }
        if self.layers.is_empty() {
            self.uniform_layers(None);
        }
    }

    /// Checks the sizes against sane maxima, before anything is allocated from them.
    pub fn check_sizes(&self, path: &Path) -> Result<()> {
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
                return Err(PrismError::format(
                    path,
                    format!("{name} is {value}, expected 1..={max}"),
                ));
            }
        }
        Ok(())
    }

    /// Checks the numbers against each other and against sane maxima.
    pub fn validate(&self, path: &Path) -> Result<()> {
        self.check_sizes(path)?;
        let bad = |m: String| Err(PrismError::format(path, m));
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} attention heads is not a multiple of {} kv heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if self.layers.len() != self.n_layers {
            return bad(format!(
                "{} layer descriptions for {} layers (sliding-window pattern)",
                self.layers.len(),
                self.n_layers
            ));
        }
        if let Some(w) = self
            .layers
            .iter()
            .find_map(|l| l.window.filter(|&w| w == 0))
        {
            return bad(format!("a sliding window of {w} tokens"));
        }
        for (l, k) in self.layers.iter().enumerate() {
            if let Some(h) = k.heads {
                if h.head_dim == 0 || h.head_dim > MAX_HIDDEN || !h.head_dim.is_multiple_of(2) {
                    return bad(format!("layer {l}: a head size of {}", h.head_dim));
                }
                if h.kv_heads == 0 || !self.n_heads.is_multiple_of(h.kv_heads) {
                    return bad(format!(
                        "layer {l}: {} attention heads is not a multiple of {} kv heads",
                        self.n_heads, h.kv_heads
                    ));
                }
            }
            if let KvSource::Shared(src) = k.kv {
                let ok = src < l
                    && !matches!(self.layers[src].kv, KvSource::Shared(_))
                    && self.layers[src].mixer == Mixer::Attention
                    && self.layer_heads(src) == self.layer_heads(l)
                    && self.layers[src].window == k.window
                    && self.layers[src].rope == k.rope;
                if !ok {
                    return bad(format!(
                        "layer {l} shares the keys and values of layer {src}, which is not an earlier attention layer of the same kind"
                    ));
                }
            }
        }
        if let Some(w) = self.per_layer_input {
            if w == 0 || w > MAX_HIDDEN {
                return bad(format!("a per-layer input width of {w}"));
            }
        }
        if !self.layer_scale.is_empty() && self.layer_scale.len() != self.n_layers {
            return bad(format!(
                "{} layer scales for {} layers",
                self.layer_scale.len(),
                self.n_layers
            ));
        }
        match (&self.positions, &self.rope) {
            (Positions::Rope, None) => return bad("RoPE positions without RoPE frequencies".into()),
            (Positions::Rope, Some(r)) => {
                let widest = (0..self.n_layers)
                    .map(|l| self.head_dim_at(l))
                    .fold(self.head_dim, usize::max);
                r.validate(widest, path)?;
                for (l, k) in self.layers.iter().enumerate() {
                    let dims = match k.rope {
                        LayerRope::None => 0,
                        rope => r.dims_for(rope == LayerRope::Local),
                    };
                    if dims > self.head_dim_at(l) {
                        return bad(format!(
                            "layer {l}: RoPE over {dims} dims does not fit a head of {}",
                            self.head_dim_at(l)
                        ));
                    }
                }
            }
            _ => {}
        }
        if let Some(p) = self.block.problem() {
            return bad(p);
        }
        match &self.experts {
            Some(x) => {
                if let Some(p) = x.problem() {
                    return bad(p);
                }
            }
            None if self.layers.iter().any(|l| l.mlp == MlpKind::Experts) => {
                return bad("mixture-of-experts layers without an expert count".into())
            }
            None => {}
        }
        match &self.delta_net {
            Some(d) => {
                if let Some(p) = d.problem() {
                    return bad(p);
                }
            }
            None if self.layers.iter().any(|l| l.mixer == Mixer::DeltaNet) => {
                return bad("linear-attention layers without their head sizes".into())
            }
            None => {}
        }
        if self.layers.iter().any(|l| l.rope == LayerRope::Local)
            && self
                .rope
                .as_ref()
                .is_none_or(|r| r.inv_freq_local.is_none())
        {
            return bad("local RoPE layers without local frequencies".into());
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return bad(format!("norm epsilon {} is out of range", self.norm_eps));
        }
        for (name, v) in [
            ("attention scale", Some(self.attn_scale)),
            ("attention soft-cap", self.attn_softcap),
            ("final soft-cap", self.final_softcap),
            ("embedding scale", self.embed_scale),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return bad(format!("{name} {v} is not a positive number"));
                }
            }
        }
        Ok(())
    }
}

/// An HF `config.json`, with helpers that name the file in their errors.
pub struct HfConfig<'a> {
    pub value: &'a serde_json::Value,
    pub path: &'a Path,
    pub model_type: &'a str,
    /// `architectures` joined, or the model type.
    pub named: String,
}

impl<'a> HfConfig<'a> {
    /// Parses a family's serde config, turning serde's message into one that names the file.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(self.value)
            .map_err(|e| PrismError::format(self.path, format!("config.json: {e}")))
    }

    pub fn get(&self, key: &str) -> Option<&'a serde_json::Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    pub fn err(&self, msg: impl Into<String>) -> PrismError {
        PrismError::format(self.path, msg.into())
    }

    /// `rope_theta` at the top level (transformers 4) or inside `rope_parameters` (transformers 5).
    pub fn rope_theta(&self, default: f64) -> f64 {
        self.get("rope_theta")
            .and_then(|v| v.as_f64())
            .or_else(|| {
                self.get("rope_parameters")
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(|v| v.as_f64())
            })
            .unwrap_or(default)
    }

    /// The RoPE scaling a config asks for (`rope_scaling`, or `rope_parameters` in transformers 5).
    pub fn rope_scaling(&self) -> Result<RopeScaling> {
        let params = self
            .get("rope_scaling")
            .or_else(|| self.get("rope_parameters"));
        rope::scaling_from_hf(params, self)
    }

    /// The per-layer kinds from `layer_types` ("sliding_attention" / "full_attention").
    pub fn layer_types(
        &self,
        n_layers: usize,
        window: Option<usize>,
    ) -> Result<Option<Vec<LayerKind>>> {
        let Some(types) = self.get("layer_types").and_then(|v| v.as_array()) else {
            return Ok(None);
        };
        if types.len() != n_layers {
            return Err(self.err(format!(
                "layer_types lists {} layers for num_hidden_layers {n_layers}",
                types.len()
            )));
        }
        types
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(LayerKind::FULL),
                Some("sliding_attention") => Ok(LayerKind {
                    window: Some(window.ok_or_else(|| {
                        self.err("layer_types has sliding layers but sliding_window is not set")
                    })?),
                    rope: LayerRope::Local,
                    ..LayerKind::FULL
                }),
                other => Err(self.err(format!("layer_types entry {other:?} is not supported"))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

/// The fields of an HF config that every decoder family states the same way.
#[derive(Debug, serde::Deserialize)]
pub struct HfCommon {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    pub tie_word_embeddings: Option<bool>,
    pub rms_norm_eps: Option<f64>,
    pub sliding_window: Option<usize>,
}

/// A family's defaults for the fields its config may leave out.
pub struct HfDefaults {
    pub rms_norm_eps: f64,
    pub context: usize,
    pub tied: bool,
}

impl HfConfig<'_> {
    /// Reads [`HfCommon`] into `spec` (sizes checked), returning it for the family's own use.
    pub fn common(&self, spec: &mut ArchSpec, d: HfDefaults) -> Result<HfCommon> {
        let c: HfCommon = self.parse()?;
        spec.n_layers = c.num_hidden_layers;
        spec.hidden = c.hidden_size;
        spec.n_heads = c.num_attention_heads;
        spec.n_kv_heads = c.num_key_value_heads.unwrap_or(c.num_attention_heads);
        spec.head_dim = c
            .head_dim
            .unwrap_or(c.hidden_size / c.num_attention_heads.max(1));
        spec.intermediate = c.intermediate_size;
        spec.vocab = c.vocab_size;
        spec.context_length = c.max_position_embeddings.unwrap_or(d.context);
        spec.norm_eps = c.rms_norm_eps.unwrap_or(d.rms_norm_eps);
        spec.tied_embeddings = c.tie_word_embeddings.unwrap_or(d.tied);
        spec.check_sizes(self.path)?;
        Ok(c)
    }

    /// RoPE with rotate-half pairing from `rope_theta` / `rope_parameters` / `rope_scaling`.
    pub fn rope_half(&self, spec: &ArchSpec, default_theta: f64) -> Result<Rope> {
        Rope::from_hf(
            self.rope_theta(default_theta),
            spec.head_dim,
            RopePairing::Half,
            &self.rope_scaling()?,
            spec.context_length,
            self,
        )
    }
}

/// GGUF metadata for one architecture, with the tensors (some hyperparameters live there).
pub struct GgufConfig<'a> {
    pub meta: GgufMeta<'a>,
    pub arch: &'a str,
    pub src: &'a dyn TensorSource,
}

impl GgufConfig<'_> {
    /// The key `{arch}.{name}`.
    pub fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.arch)
    }

    pub fn usize(&self, name: &str) -> Result<usize> {
        self.meta.usize(&self.key(name))
    }

    pub fn usize_opt(&self, name: &str) -> Result<Option<usize>> {
        Ok(self.meta.u64_opt(&self.key(name))?.map(|v| v as usize))
    }

    pub fn f64_opt(&self, name: &str) -> Result<Option<f64>> {
        self.meta.f64_opt(&self.key(name))
    }

    pub fn err(&self, msg: impl Into<String>) -> PrismError {
        PrismError::format(self.meta.path(), msg.into())
    }

    /// The hyperparameters every GGUF decoder states the same way.
    pub fn common(&self, spec: &mut ArchSpec) -> Result<()> {
        self.common_with(spec, false)
    }

    /// [`GgufConfig::common`]; with `experts_only`, `feed_forward_length` may be absent (every
    /// MLP is a mixture of experts) and `spec.intermediate` is kept.
    pub fn common_with(&self, spec: &mut ArchSpec, experts_only: bool) -> Result<()> {
        spec.n_layers = self.usize("block_count")?;
        spec.hidden = self.usize("embedding_length")?;
        spec.n_heads = self.usize("attention.head_count")?;
        spec.n_kv_heads = self
            .usize_opt("attention.head_count_kv")?
            .unwrap_or(spec.n_heads);
        match self.usize_opt("feed_forward_length")? {
            Some(f) => spec.intermediate = f,
            None if experts_only => {}
            None => spec.intermediate = self.usize("feed_forward_length")?,
        }
        spec.context_length = self.usize("context_length")?;
        let key_length = self.usize_opt("attention.key_length")?;
        let value_length = self.usize_opt("attention.value_length")?;
        spec.head_dim = key_length.unwrap_or(spec.hidden / spec.n_heads.max(1));
        if let Some(v) = value_length.filter(|&v| v != spec.head_dim) {
            return Err(self.err(format!(
                "attention.value_length {v} differs from the key length {}; Prism needs them equal",
                spec.head_dim
            )));
        }
        spec.vocab = match self.usize_opt("vocab_size")? {
            Some(v) => v,
            None => self
                .src
                .info("token_embd.weight")
                .and_then(|i| i.shape.first().copied())
                .unwrap_or(0),
        };
        spec.check_sizes(self.meta.path())?;
        if let Some(eps) = self.f64_opt("attention.layer_norm_rms_epsilon")? {
            spec.norm = NormKind::RmsNorm;
            spec.norm_eps = eps;
        }
        if let Some(eps) = self.f64_opt("attention.layer_norm_epsilon")? {
            spec.norm = NormKind::LayerNorm;
            spec.norm_eps = eps;
        }
        Ok(())
    }

    /// RoPE from `rope.*` keys and the `rope_freqs` / `rope_factors_*` tensors.
    pub fn rope(&self, spec: &ArchSpec, default_theta: f64, pairing: RopePairing) -> Result<Rope> {
        rope::from_gguf(self, spec, default_theta, pairing)
    }
}

/// Tensor names in either format: a layer's tensors are `blk.{i}.{gguf name}` in GGUF and
/// `{layers}.{i}.{hf name}` in a Hugging Face folder (`layers` like "model.layers").
pub(crate) struct Names {
    pub gguf: bool,
    pub layers: &'static str,
}

impl Names {
    pub fn layer(&self, i: usize, hf: &str, gg: &str) -> String {
        if self.gguf {
            format!("blk.{i}.{gg}")
        } else {
            format!("{}.{i}.{hf}", self.layers)
        }
    }

    /// (token embedding, final norm, output head): GGUF's names, or the folder's `hf`.
    pub fn top(&self, hf: [&'static str; 3]) -> [&'static str; 3] {
        if self.gguf {
            ["token_embd.weight", "output_norm", "output.weight"]
        } else {
            hf
        }
    }
}

/// Shared tensor-loading helpers, with shapes checked against the spec.
pub(crate) struct Loader<'a> {
    pub src: &'a dyn TensorSource,
    pub spec: &'a ArchSpec,
}

/// Whether a linear map has a bias.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bias {
    No,
    Maybe,
    Yes,
}

impl Loader<'_> {
    /// `{base}.weight` `[out, in]` and, per `bias`, `{base}.bias` `[out]`.
    pub fn linear(&self, base: &str, out: usize, inp: usize, bias: Bias) -> Result<Linear> {
        let weight = get(self.src, &format!("{base}.weight"), &[out, inp])?;
        let bias = match bias {
            Bias::No => None,
            Bias::Maybe => get_opt(self.src, &format!("{base}.bias"), &[out])?,
            Bias::Yes => Some(get(self.src, &format!("{base}.bias"), &[out])?),
        };
        Ok(Linear { weight, bias })
    }

    /// `{base}.weight` (and `{base}.bias` for LayerNorm) of width `width`; `plus_one` turns a
    /// stored Gemma offset w into the scale 1 + w, computed in f32 exactly as transformers does.
    pub fn norm(&self, base: &str, width: usize, plus_one: bool) -> Result<NormWeights> {
        let mut weight = get(self.src, &format!("{base}.weight"), &[width])?;
        if plus_one {
            weight = weight.map_f32(|w| 1.0 + w)?;
        }
        let bias = match self.spec.norm {
            NormKind::LayerNorm => Some(get(self.src, &format!("{base}.bias"), &[width])?),
            NormKind::RmsNorm => None,
        };
        Ok(NormWeights { weight, bias })
    }

    /// [`Loader::norm`] when `on`, else none.
    pub fn norm_if(
        &self,
        on: bool,
        base: &str,
        width: usize,
        plus_one: bool,
    ) -> Result<Option<NormWeights>> {
        on.then(|| self.norm(base, width, plus_one)).transpose()
    }

    /// A fused projection split into row ranges (Phi-3's qkv and gate_up, GPT-2's c_attn).
    pub fn split(&self, fused: &Linear, sizes: &[usize]) -> Result<Vec<Linear>> {
        let mut out = Vec::with_capacity(sizes.len());
        let mut start = 0;
        for &n in sizes {
            out.push(Linear {
                weight: fused.weight.narrow_rows(start, n)?,
                bias: fused
                    .bias
                    .as_ref()
                    .map(|b| b.narrow_rows(start, n))
                    .transpose()?,
            });
            start += n;
        }
        Ok(out)
    }

    /// The output matrix: `name` when the model is untied, else none (the embedding is used).
    pub fn lm_head(&self, name: &str) -> Result<Option<crate::weights::Weight>> {
        if self.spec.tied_embeddings {
            // Some checkpoints store a copy of the tied matrix; it is the embedding by definition.
            let _ = self.src.info(name);
            return Ok(None);
        }
        get(self.src, name, &[self.spec.vocab, self.spec.hidden]).map(Some)
    }
}

/// Picks the family from an HF `config.json` and builds its spec.
pub fn spec_from_hf(
    config: &serde_json::Value,
    path: &Path,
) -> Result<(&'static Architecture, ArchSpec)> {
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("");
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
        model_type.to_string()
    } else {
        architectures.join(", ")
    };
    if model_type.is_empty() {
        return Err(PrismError::format(
            path,
            "config.json has no \"model_type\"; cannot tell the architecture",
        ));
    }
    let arch = REGISTRY
        .iter()
        .find(|a| a.hf_model_types.contains(&model_type))
        .ok_or_else(|| PrismError::UnsupportedArch {
            path: path.to_path_buf(),
            found: format!("{model_type} ({named})"),
            supported: supported(),
        })?;
    let cfg = HfConfig {
        value: config,
        path,
        model_type,
        named,
    };
    let mut spec = (arch.spec_from_hf)(&cfg)?;
    spec.finish();
    spec.validate(path)?;
    Ok((arch, spec))
}

/// Picks the family from GGUF metadata and builds its spec, refusing keys it would ignore.
pub fn spec_from_gguf(
    meta: GgufMeta<'_>,
    src: &dyn TensorSource,
) -> Result<(&'static Architecture, ArchSpec)> {
    let path = meta.path();
    let name = meta
        .str("general.architecture")
        .ok_or_else(|| PrismError::format(path, "GGUF metadata has no general.architecture"))?;
    let arch = REGISTRY
        .iter()
        .find(|a| a.gguf_names.contains(&name))
        .ok_or_else(|| PrismError::UnsupportedArch {
            path: path.to_path_buf(),
            found: format!("GGUF {name:?}"),
            supported: supported(),
        })?;
    let cfg = GgufConfig {
        meta,
        arch: name,
        src,
    };
    let mut spec = (arch.spec_from_gguf)(&cfg)?;
    spec.finish();
    spec.validate(path)?;
    const ALWAYS_HARMLESS: &[&str] = &["vocab_size", "rope.dimension_count"];
    let mut harmless = ALWAYS_HARMLESS.to_vec();
    harmless.extend_from_slice(arch.harmless_gguf_keys);
    let unread = meta.unread(&format!("{name}."), &harmless);
    if !unread.is_empty() {
        return Err(PrismError::format(
            path,
            format!(
                "GGUF metadata {} may change what the model computes, and Prism does not implement {}; refusing rather than computing something else",
                unread.join(", "),
                if unread.len() == 1 { "it" } else { "them" }
            ),
        ));
    }
    Ok((arch, spec))
}
