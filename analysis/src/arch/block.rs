//! Block shapes as data: where each sub-layer's norms sit, how the two sub-layers meet the
//! residual stream, how q and k are normalized, and what each layer's positions are. The forward
//! pass (`backend/forward.rs`) reads these and has no per-architecture branch, so a family with a
//! new arrangement of the same parts (OLMo 2's norms after the sub-layers, SmolLM3's layers
//! without RoPE) is a new value here, set in its own file.

use serde::Serialize;

/// The norms around one sub-layer (attention or MLP) `f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SublayerNorms {
    /// `f(norm(h))`: the input is normalized (pre-norm; weights `attn_norm` / `mlp_norm`).
    pub input: bool,
    /// `h + norm(f(..))`: the output is normalized before the residual add (Gemma's post norms,
    /// OLMo 2; weights `post_attn_norm` / `post_mlp_norm`).
    pub output: bool,
    /// `norm(h + f(..))`: the residual stream is normalized after the add (BERT; weights
    /// `attn_norm` / `mlp_norm`, so never together with `input`).
    pub residual: bool,
}

impl SublayerNorms {
    pub const PRE: SublayerNorms = SublayerNorms {
        input: true,
        output: false,
        residual: false,
    };
    pub const SANDWICH: SublayerNorms = SublayerNorms {
        input: true,
        output: true,
        residual: false,
    };
    pub const OUTPUT: SublayerNorms = SublayerNorms {
        input: false,
        output: true,
        residual: false,
    };
    pub const RESIDUAL: SublayerNorms = SublayerNorms {
        input: false,
        output: false,
        residual: true,
    };

    /// Whether the norm stored in the `attn_norm` / `mlp_norm` slot exists.
    pub fn has_main(self) -> bool {
        self.input || self.residual
    }

    fn describe(self) -> &'static str {
        match (self.input, self.output, self.residual) {
            (true, false, false) => "pre-norm",
            (true, true, false) => "sandwich (norms before and after)",
            (false, true, false) => "norm after the sub-layer",
            (false, false, true) => "post-norm (after the residual add)",
            (false, false, false) => "no norm",
            _ => "norms before, after and on the residual",
        }
    }
}

/// How a block wires its two sub-layers into the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Block {
    /// `h += attn(..h) + mlp(..h)`, both of the same h (GPT-NeoX); otherwise attention first,
    /// then the MLP on the updated stream.
    pub parallel: bool,
    pub attn: SublayerNorms,
    pub mlp: SublayerNorms,
}

impl Block {
    /// h += attn(norm(h)); h += mlp(norm(h)) (Llama, GPT-2).
    pub const PRE_NORM: Block = Block {
        parallel: false,
        attn: SublayerNorms::PRE,
        mlp: SublayerNorms::PRE,
    };
    /// h += attn(norm1(h)) + mlp(norm2(h)) (GPT-NeoX).
    pub const PARALLEL: Block = Block {
        parallel: true,
        attn: SublayerNorms::PRE,
        mlp: SublayerNorms::PRE,
    };
    /// h = norm(h + attn(h)); h = norm(h + mlp(h)) (BERT).
    pub const POST_NORM: Block = Block {
        parallel: false,
        attn: SublayerNorms::RESIDUAL,
        mlp: SublayerNorms::RESIDUAL,
    };
    /// h += post_norm(attn(norm(h))); h += post_norm(mlp(norm(h))) (Gemma 2 and 3).
    pub const SANDWICH: Block = Block {
        parallel: false,
        attn: SublayerNorms::SANDWICH,
        mlp: SublayerNorms::SANDWICH,
    };
    /// h += norm(attn(h)); h += norm(mlp(h)) (OLMo 2).
    pub const OUTPUT_NORM: Block = Block {
        parallel: false,
        attn: SublayerNorms::OUTPUT,
        mlp: SublayerNorms::OUTPUT,
    };

    /// A line for `prism info`.
    pub fn describe(&self) -> String {
        let (a, m) = (self.attn.describe(), self.mlp.describe());
        let norms = if a == m {
            a.to_string()
        } else {
            format!("attention {a}, MLP {m}")
        };
        if self.parallel {
            format!("parallel attention and MLP, {norms}")
        } else {
            norms
        }
    }

    /// Why this arrangement cannot run, if it cannot.
    pub fn problem(&self) -> Option<String> {
        for (name, n) in [("attention", self.attn), ("MLP", self.mlp)] {
            if n.input && n.residual {
                return Some(format!(
                    "the {name} sub-layer normalizes both its input and the residual stream"
                ));
            }
            if self.parallel && n.residual {
                return Some(format!(
                    "a parallel block cannot normalize the residual stream after the {name}"
                ));
            }
        }
        None
    }
}

/// How q and k are normalized after their projections, before RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum QkNorm {
    None,
    /// Each head's `head_dim` values on their own, one weight of `[head_dim]` (Qwen3, Gemma 3).
    PerHead,
    /// The whole projection at once, weights `[heads * head_dim]` (OLMo 2).
    Whole,
}

impl QkNorm {
    /// Rows the norm sees in a projection of `rows` tokens with `heads` heads.
    pub fn groups(self, rows: usize, heads: usize) -> usize {
        match self {
            QkNorm::PerHead => rows * heads,
            _ => rows,
        }
    }

    /// The norm weights' width for `heads` heads of `head_dim`, or none.
    pub fn width(self, heads: usize, head_dim: usize) -> Option<usize> {
        match self {
            QkNorm::None => None,
            QkNorm::PerHead => Some(head_dim),
            QkNorm::Whole => Some(heads * head_dim),
        }
    }
}

/// Which RoPE frequencies a layer rotates q and k with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LayerRope {
    /// The model's frequencies ([`super::Rope::inv_freq`]).
    Global,
    /// The local frequencies of sliding layers ([`super::Rope::inv_freq_local`], Gemma 3).
    Local,
    /// No rotation at all (NoPE layers: SmolLM3).
    None,
}

/// Which MLP a layer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MlpKind {
    /// One MLP for every token ([`crate::weights::Mlp::Dense`]).
    Dense,
    /// A mixture of experts ([`ExpertSpec`]): each token goes to its top-k experts.
    Experts,
}

/// What mixes the tokens in a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mixer {
    /// Softmax attention over the keys (the window and RoPE of [`LayerKind`] apply).
    Attention,
    /// Gated DeltaNet linear attention ([`DeltaNetSpec`]): a causal convolution, then a
    /// recurrent state per value head updated by the gated delta rule (Qwen3.5, Qwen3-Next).
    DeltaNet,
}

/// What differs from layer to layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LayerKind {
    /// Sliding-window attention over this many keys (the query's own included), or full attention.
    pub window: Option<usize>,
    pub rope: LayerRope,
    pub mlp: MlpKind,
    pub mixer: Mixer,
    /// This layer's head size and key/value heads where they differ from the model's
    /// ([`super::ArchSpec::head_dim`], [`super::ArchSpec::n_kv_heads`]): Gemma 4's global layers.
    pub heads: Option<LayerHeads>,
    /// Where the layer's keys and values come from.
    pub kv: KvSource,
    /// The dense MLP's width where it is not the model's (Gemma 4's double-wide MLPs).
    pub mlp_width: Option<usize>,
}

impl LayerKind {
    /// Full attention with the model's RoPE and a dense MLP.
    pub const FULL: LayerKind = LayerKind {
        window: None,
        rope: LayerRope::Global,
        mlp: MlpKind::Dense,
        mixer: Mixer::Attention,
        heads: None,
        kv: KvSource::Own,
        mlp_width: None,
    };
}

/// A layer's attention shape where it is not the model's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LayerHeads {
    pub head_dim: usize,
    pub kv_heads: usize,
}

/// Where an attention layer's keys and values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum KvSource {
    /// Its own k and v projections.
    Own,
    /// Its own k projection, which also gives the values (before the key norm and RoPE):
    /// Gemma 4's `attention_k_eq_v` on its global layers.
    KeysAsValues,
    /// The keys and values of an earlier layer, as that layer computed them (Gemma 4's KV
    /// sharing, `num_kv_shared_layers`): no projections of its own.
    Shared(usize),
}

/// Which key head a value head of a Gated DeltaNet layer reads when there are fewer key heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HeadGrouping {
    /// Value head h reads key head h / (v_heads / k_heads) (transformers' `repeat_interleave`).
    Grouped,
    /// Value head h reads key head h % k_heads (llama.cpp's converter reorders the value heads
    /// into this tiled order).
    Tiled,
}

/// The shape of the Gated DeltaNet layers (Yang et al. 2024, <https://arxiv.org/abs/2412.06464>;
/// reference implementation: transformers' `Qwen3_5GatedDeltaNet`). Per token: `qkv` (keys and
/// queries `k_heads * k_dim` each, values `v_heads * v_dim`) through a causal depthwise
/// convolution of `kernel` taps and SiLU; q and k L2-normalized, q scaled by 1/sqrt(k_dim);
/// beta = sigmoid(b), decay = exp(A * softplus(a + dt_bias)); per value head the state
/// S `[k_dim, v_dim]` becomes decay S + k (beta (v - decay S^T k))^T and the output is S^T q,
/// RMS-normalized per head and multiplied by silu(z).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeltaNetSpec {
    pub k_heads: usize,
    pub v_heads: usize,
    pub k_dim: usize,
    pub v_dim: usize,
    pub kernel: usize,
    pub grouping: HeadGrouping,
}

impl DeltaNetSpec {
    /// Channels of the convolution: queries, keys and values.
    pub fn conv_dim(&self) -> usize {
        2 * self.k_heads * self.k_dim + self.v_heads * self.v_dim
    }

    pub fn value_dim(&self) -> usize {
        self.v_heads * self.v_dim
    }

    /// The key head value head `h` reads.
    pub fn key_head(&self, h: usize) -> usize {
        match self.grouping {
            HeadGrouping::Grouped => h / (self.v_heads / self.k_heads),
            HeadGrouping::Tiled => h % self.k_heads,
        }
    }

    /// The index value head `h` has in the original checkpoint's order (transformers' grouped
    /// order: a GGUF's tiled head r * k_heads + g is the checkpoint's g * (v_heads / k_heads) + r).
    pub fn checkpoint_head(&self, h: usize) -> usize {
        match self.grouping {
            HeadGrouping::Grouped => h,
            HeadGrouping::Tiled => {
                let per = self.v_heads / self.k_heads;
                (h % self.k_heads) * per + h / self.k_heads
            }
        }
    }

    /// Floats of one sequence's recurrent state.
    pub fn state_len(&self) -> usize {
        self.v_heads * self.k_dim * self.v_dim
    }

    /// Floats of one sequence's convolution state (the last kernel - 1 inputs).
    pub fn conv_state_len(&self) -> usize {
        (self.kernel - 1) * self.conv_dim()
    }

    /// Why these numbers cannot run, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if self.k_heads == 0 || self.v_heads == 0 || !self.v_heads.is_multiple_of(self.k_heads) {
            return Some(format!(
                "{} linear-attention value heads is not a multiple of {} key heads",
                self.v_heads, self.k_heads
            ));
        }
        // The GPU kernel keeps a head's key and its value columns in one workgroup.
        if self.k_dim == 0 || self.k_dim > 256 || self.v_dim == 0 || self.v_dim > 256 {
            return Some(format!(
                "linear-attention head sizes {} (keys) and {} (values), expected 1..=256",
                self.k_dim, self.v_dim
            ));
        }
        if !(2..=16).contains(&self.kernel) {
            return Some(format!(
                "a convolution kernel of {} taps, expected 2..=16",
                self.kernel
            ));
        }
        if self.v_heads > 1 << 12 || self.k_heads > 1 << 12 {
            return Some(format!(
                "{} linear-attention value heads and {} key heads",
                self.v_heads, self.k_heads
            ));
        }
        None
    }
}

/// How a mixture-of-experts layer routes: softmax over the router's logits, the `top_k` largest
/// probabilities chosen (ties to the lower index), divided by their sum when `renormalize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExpertSpec {
    pub count: usize,
    pub top_k: usize,
    /// Each expert's intermediate width.
    pub width: usize,
    pub renormalize: bool,
    /// A shared expert every token goes through, of this width, its output times
    /// sigmoid(x . gate) (Qwen3.5-MoE, Qwen3-Next), added to the routed experts' sum.
    pub shared: Option<usize>,
    /// The experts run beside the layer's dense MLP (Gemma 4): the router reads the residual
    /// stream through its own norm, the experts through theirs, and the two outputs are each
    /// normalized and summed ([`crate::weights::BesideDense`]); each chosen expert's weight is
    /// multiplied by its per-expert scale after the renormalization.
    pub beside_dense: bool,
}

/// The indices of the `k` largest values, largest first, ties to the lower index.
pub fn top_k(p: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// At most this many experts per layer (the largest released models have 512).
pub const MAX_EXPERTS: usize = 4096;

impl ExpertSpec {
    /// One token's routing: `probs` holds the router's logits and becomes their softmax (in f32,
    /// as transformers computes it); `weights` gets the chosen experts' weights and zero for the
    /// others. The GPU's `route.wgsl` computes the same.
    pub fn route(&self, probs: &mut [f32], weights: &mut [f32]) {
        let max = probs.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0f32;
        for p in probs.iter_mut() {
            *p = (*p - max).exp();
            sum += *p;
        }
        for p in probs.iter_mut() {
            *p /= sum;
        }
        weights.fill(0.0);
        let chosen = top_k(probs, self.top_k);
        let total: f32 = chosen.iter().map(|&e| probs[e]).sum();
        for &e in &chosen {
            weights[e] = if self.renormalize {
                probs[e] / total
            } else {
                probs[e]
            };
        }
    }

    /// Why these numbers cannot run, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if self.count == 0 || self.count > MAX_EXPERTS {
            return Some(format!(
                "an expert count of {}, expected 1..={MAX_EXPERTS}",
                self.count
            ));
        }
        if self.top_k == 0 || self.top_k > self.count {
            return Some(format!(
                "{} experts per token of {} experts",
                self.top_k, self.count
            ));
        }
        if self.width == 0 || self.width > 1 << 20 {
            return Some(format!("an expert width of {}", self.width));
        }
        if let Some(w) = self.shared.filter(|&w| w == 0 || w > 1 << 20) {
            return Some(format!("a shared expert width of {w}"));
        }
        None
    }
}

/// Checks that every layer has exactly the norms its block shape and q/k norm kind name, of the
/// right widths: a loader that forgets one, or a file that lacks one, fails here rather than
/// running a different block.
pub fn check_norms(
    spec: &super::ArchSpec,
    weights: &crate::weights::ModelWeights,
    path: &std::path::Path,
) -> crate::error::Result<()> {
    use crate::weights::NormId;
    let b = spec.block;
    for (layer, l) in weights.layers.iter().enumerate() {
        let kind = spec.layers.get(layer).copied().unwrap_or(LayerKind::FULL);
        let delta = kind.mixer == Mixer::DeltaNet;
        let attn = |w: Option<usize>| w.filter(|_| !delta);
        // A layer sharing an earlier one's keys and values has no key or value norm of its own.
        let own_kv = |w: Option<usize>| attn(w).filter(|_| !matches!(kind.kv, KvSource::Shared(_)));
        let hd = spec.head_dim_at(layer);
        let qk = |heads| spec.qk_norm.width(heads, hd);
        let want = [
            (NormId::Attn, b.attn.has_main().then_some(spec.hidden)),
            (NormId::PostAttn, b.attn.output.then_some(spec.hidden)),
            (NormId::Mlp, b.mlp.has_main().then_some(spec.hidden)),
            (NormId::PostMlp, b.mlp.output.then_some(spec.hidden)),
            (NormId::Q, attn(qk(spec.n_heads))),
            (NormId::K, own_kv(qk(spec.kv_heads_at(layer)))),
            (NormId::V, own_kv(spec.v_norm.then_some(hd))),
            (
                NormId::Delta,
                spec.delta_net.filter(|_| delta).map(|d| d.v_dim),
            ),
            (NormId::PleProj, spec.per_layer_input),
            (NormId::PlePost, spec.per_layer_input.map(|_| spec.hidden)),
        ];
        let beside = (kind.mlp == MlpKind::Experts && spec.experts.is_some_and(|x| x.beside_dense))
            .then_some(spec.hidden);
        let want = want.into_iter().chain(
            [
                NormId::Router,
                NormId::PreExperts,
                NormId::PostDense,
                NormId::PostExperts,
            ]
            .map(|id| (id, beside)),
        );
        for (id, width) in want {
            let have = l.norm(id).map(|n| n.weight.element_count());
            if have != width {
                let say = |w: Option<usize>| w.map_or("none".to_string(), |w| format!("{w} wide"));
                return Err(crate::error::PrismError::format(
                    path,
                    format!(
                        "layer {layer}: the {id:?} norm is {} where the {} block needs {}",
                        say(have),
                        spec.family,
                        say(width)
                    ),
                ));
            }
        }
    }
    Ok(())
}
