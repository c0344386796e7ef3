//! Interventions as data: where (a site of a layer, optionally one head, some positions) and what
//! (add, set, zero, mean, patch). Both backends apply them through the same code path
//! (`backend::forward`), to a single pass, to every step of a generation, and to every view.
//!
//! Sites, per 0-based layer L: `resid_pre` (the input of block L), `resid_post` (its output),
//! `attn_out` (the attention sub-layer's output after o_proj, before the residual add),
//! `mlp_out` (the MLP's output after down_proj, before the add), `attn_added` and `mlp_added` (what
//! each sub-layer adds to the residual: its output after the block's post-norm where there is one,
//! as TransformerLens's hook_attn_out / hook_mlp_out), and `head` (head H's slice of the
//! input to o_proj), and `expert` (the routing weights of a mixture-of-experts layer: one value per
//! expert, or expert E's alone; `zero` with an `expert` ablates that expert, `set` with a vector
//! of every expert's weight forces the routing). Several interventions on one site apply in list order; sites apply in forward
//! order; `mean` averages the site over all positions of the same run, as it is at that moment.

use serde::{Deserialize, Serialize};

use crate::arch::ArchSpec;
use crate::error::{PrismError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    ResidPre,
    ResidPost,
    AttnOut,
    MlpOut,
    Head,
    Expert,
    /// What the attention sub-layer adds to the residual stream: attn_out after the block's
    /// post-attention norm when it has one (Gemma 2/3, OLMo 2), attn_out itself elsewhere
    /// (TransformerLens's hook_attn_out).
    AttnAdded,
    /// What the MLP adds to the residual stream: mlp_out after the block's post-MLP norm when it
    /// has one, mlp_out itself elsewhere (TransformerLens's hook_mlp_out).
    MlpAdded,
    /// One feature of a sparse autoencoder, applied at the SAE's own site and layer.
    Feature,
}

impl Site {
    pub const ALL: [Site; 9] = [
        Site::ResidPre,
        Site::ResidPost,
        Site::AttnOut,
        Site::MlpOut,
        Site::Head,
        Site::Expert,
        Site::AttnAdded,
        Site::MlpAdded,
        Site::Feature,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Site::ResidPre => "resid_pre",
            Site::ResidPost => "resid_post",
            Site::AttnOut => "attn_out",
            Site::MlpOut => "mlp_out",
            Site::Head => "head",
            Site::Expert => "expert",
            Site::AttnAdded => "attn_added",
            Site::MlpAdded => "mlp_added",
            Site::Feature => "feature",
        }
    }

    pub fn from_name(s: &str) -> Option<Site> {
        Site::ALL.into_iter().find(|x| x.name() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// x += scale * vector
    Add,
    /// x = vector
    Set,
    /// x = 0
    Zero,
    /// x = the mean of x over all positions of the same run
    Mean,
    /// x = the value of the same site and position in another run
    Patch,
}

/// Which positions an intervention touches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PositionSet {
    #[default]
    All,
    List(Vec<usize>),
}

impl Serialize for PositionSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            PositionSet::All => s.serialize_str("all"),
            PositionSet::List(l) => l.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for PositionSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Word(String),
            List(Vec<usize>),
        }
        match Repr::deserialize(d)? {
            Repr::Word(w) if w == "all" => Ok(PositionSet::All),
            Repr::Word(w) => Err(serde::de::Error::custom(format!(
                "positions {w:?}: expected \"all\" or a list of token indices"
            ))),
            Repr::List(l) => Ok(PositionSet::List(l)),
        }
    }
}

impl PositionSet {
    pub fn contains(&self, p: usize) -> bool {
        match self {
            PositionSet::All => true,
            PositionSet::List(l) => l.contains(&p),
        }
    }
}

/// How a feature intervention reads its feature off the activation: the SAE's encoder for that one
/// feature (filled in from the SAE file by `sae::resolve`), and its decoder direction.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureEncoder {
    /// The SAE's site and layer, where the edit applies.
    pub site: Site,
    pub layer: usize,
    pub feature: usize,
    pub d_sae: usize,
    /// `W_enc[:, feature]` (`[d_in]`), or with TopK the whole `W_enc` `[d_in, d_sae]`.
    pub w_enc: std::sync::Arc<Vec<f32>>,
    /// `b_enc[feature]`, or with TopK the whole `b_enc`.
    pub b_enc: std::sync::Arc<Vec<f32>>,
    /// `b_dec`, subtracted from the input first when the SAE does that.
    pub b_dec_in: Option<std::sync::Arc<Vec<f32>>>,
    pub rule: FeatureRule,
    /// `W_dec[feature]`, as wide as the site it edits.
    pub direction: Vec<f32>,
    /// What the feature is read from: the site it edits (an SAE), or a transcoder's input.
    pub source: FeatureSource,
}

/// Where a feature edit reads its feature. An SAE reads the site it edits; a transcoder reads the
/// MLP's input and edits the MLP's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureSource {
    Site,
    /// The MLP's input after its norm.
    MlpIn,
    /// The residual stream entering the MLP's norm (`hook_resid_mid`).
    ResidMid,
}

/// The activation function of one feature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FeatureRule {
    Relu,
    /// Active above this threshold.
    JumpRelu(f32),
    /// Active when among the `k` largest pre-activations (ties to the lower index), through a ReLU.
    TopK(usize),
}

impl FeatureEncoder {
    /// How many values the encoder reads per row.
    pub fn d_in(&self) -> usize {
        match self.rule {
            FeatureRule::TopK(_) => self.w_enc.len() / self.d_sae.max(1),
            _ => self.w_enc.len(),
        }
    }

    /// The feature's activation on each row of `x` `[rows, d_in]`.
    pub fn activations(&self, x: &[f32]) -> Vec<f32> {
        let n = self.d_in();
        let m = self.d_sae;
        let j = self.feature;
        x.chunks(n)
            .map(|row| {
                let input = |i: usize| match &self.b_dec_in {
                    Some(b) => row[i] - b[i],
                    None => row[i],
                };
                match self.rule {
                    FeatureRule::TopK(k) => {
                        let mut pre: Vec<f32> = self.b_enc.to_vec();
                        let mut acc = vec![0f32; m];
                        for i in 0..n {
                            let v = input(i);
                            let w = &self.w_enc[i * m..(i + 1) * m];
                            acc.iter_mut().zip(w).for_each(|(a, &w)| *a += v * w);
                        }
                        pre.iter_mut().zip(&acc).for_each(|(p, a)| *p += a);
                        let pj = pre[j];
                        let above = pre
                            .iter()
                            .enumerate()
                            .filter(|&(i, &p)| p > pj || (p == pj && i < j))
                            .count();
                        if above < k {
                            pj.max(0.0)
                        } else {
                            0.0
                        }
                    }
                    rule => {
                        let mut dot = 0f32;
                        for i in 0..n {
                            dot += input(i) * self.w_enc[i];
                        }
                        let pre = self.b_enc[0] + dot;
                        match rule {
                            FeatureRule::JumpRelu(t) if pre > t => pre,
                            FeatureRule::JumpRelu(_) => 0.0,
                            _ => pre.max(0.0),
                        }
                    }
                }
            })
            .collect()
    }
}

/// One intervention. In JSON: `{"site", "layer", "head"?, "positions"?, "op", "vector"?, "scale"?}`,
/// or for a feature `{"site": "feature", "sae", "feature", "op", "value"?, "scale"?, "positions"?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intervention {
    pub site: Site,
    /// Every site but `feature` needs it; a feature's layer is its SAE's.
    #[serde(default = "no_layer")]
    pub layer: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<usize>,
    /// For site `expert`: the one expert whose routing weight changes (else every expert's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert: Option<usize>,
    #[serde(default)]
    pub positions: PositionSet,
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f32>,
    /// For `patch`: the other run's values, one vector per position (for `"all"`, one per
    /// position of the run), filled in by Prism from `source_ids` / `source_text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<Vec<f32>>>,
    /// For `patch` in a file: the token ids of the run to take values from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ids: Option<Vec<u32>>,
    /// For `patch` in a file: the text of the run to take values from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_text: Option<String>,
    /// For site `feature`: the SAE (a folder or file Prism reads; relative to the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sae: Option<String>,
    /// For site `feature`: the feature's index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<usize>,
    /// For site `feature` with op `set`: the activation to clamp the feature to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f32>,
    /// For site `feature`: the SAE's encoder of that feature, read from `sae`.
    #[serde(skip)]
    pub encoder: Option<std::sync::Arc<FeatureEncoder>>,
}

/// A layer the file did not give (an error for every site but `feature`).
pub const NO_LAYER: usize = usize::MAX;

fn no_layer() -> usize {
    NO_LAYER
}

impl Intervention {
    /// A bare intervention of `op` at a site.
    pub fn new(site: Site, layer: usize, op: Op) -> Intervention {
        Intervention {
            site,
            layer,
            head: None,
            expert: None,
            positions: PositionSet::All,
            op,
            vector: None,
            scale: None,
            values: None,
            source_ids: None,
            source_text: None,
            sae: None,
            feature: None,
            value: None,
            encoder: None,
        }
    }

    /// Whether the intervention edits `site` of `layer` (a feature edits its SAE's site).
    pub fn applies_at(&self, site: Site, layer: usize) -> bool {
        match (&self.encoder, self.site) {
            (Some(f), Site::Feature) => f.site == site && f.layer == layer,
            (None, Site::Feature) => false,
            (_, s) => s == site && self.layer == layer,
        }
    }

    pub fn head(mut self, head: usize) -> Self {
        self.head = Some(head);
        self
    }

    pub fn expert(mut self, expert: usize) -> Self {
        self.expert = Some(expert);
        self
    }

    pub fn at(mut self, positions: Vec<usize>) -> Self {
        self.positions = PositionSet::List(positions);
        self
    }

    pub fn with_vector(mut self, v: Vec<f32>, scale: Option<f32>) -> Self {
        self.vector = Some(v);
        self.scale = scale;
        self
    }

    /// Width of the site's vectors.
    pub fn width(&self, spec: &ArchSpec) -> usize {
        match (self.site, self.expert) {
            (Site::Head, _) => spec.head_dim_at(self.layer),
            (Site::Expert, Some(_)) => 1,
            (Site::Expert, None) => spec.experts.map_or(0, |x| x.count),
            (Site::Feature, _) => 1,
            _ => spec.hidden,
        }
    }

    /// A one-line description ("zero head 2.4 at all positions").
    pub fn describe(&self) -> String {
        let place = match (self.site, self.head) {
            (Site::Head, Some(h)) => format!("head {}.{h}", self.layer),
            (Site::Expert, _) => match self.expert {
                Some(x) => format!("expert {}.{x}", self.layer),
                None => format!("the routing of layer {}", self.layer),
            },
            (Site::Feature, _) => {
                let j = self.feature.map_or("?".to_string(), |j| j.to_string());
                match &self.encoder {
                    Some(f) => format!("feature {j} at {}@{}", f.site.name(), f.layer),
                    None => format!("feature {j} of {}", self.sae.as_deref().unwrap_or("?")),
                }
            }
            (s, _) if self.layer == NO_LAYER => format!("{}@?", s.name()),
            (s, _) => format!("{}@{}", s.name(), self.layer),
        };
        let at = match &self.positions {
            PositionSet::All => "all positions".to_string(),
            PositionSet::List(l) => format!(
                "positions {}",
                l.iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        let what = match (self.op, self.site) {
            (Op::Add, Site::Feature) => {
                format!(
                    "steer by {} x the decoder direction of",
                    self.scale.unwrap_or(1.0)
                )
            }
            (Op::Set, Site::Feature) => match self.value {
                Some(v) => format!("clamp to {v}"),
                None => "clamp".into(),
            },
            (Op::Zero, Site::Feature) => "ablate".into(),
            (op, _) => self.op_word(op),
        };
        format!("{what} {place} at {at}")
    }

    fn op_word(&self, op: Op) -> String {
        match op {
            Op::Add => format!("add {} x vector", self.scale.unwrap_or(1.0)),
            Op::Set => "set".into(),
            Op::Zero => "zero".into(),
            Op::Mean => "mean-ablate".into(),
            Op::Patch => "patch".into(),
        }
    }

    /// Refuses an intervention the model cannot take, saying why. `seq_len` is the number of
    /// positions of the run it applies to.
    pub fn validate(&self, spec: &ArchSpec, seq_len: usize) -> Result<()> {
        let bad = |m: String| {
            Err(PrismError::Input(format!(
                "intervention ({}): {m}",
                self.describe()
            )))
        };
        if self.site == Site::Feature {
            return self.validate_feature(spec, seq_len);
        }
        if self.layer == NO_LAYER {
            return bad(format!("site {:?} needs a \"layer\"", self.site.name()));
        }
        if let Some(field) = [
            ("sae", self.sae.is_some()),
            ("feature", self.feature.is_some()),
            ("value", self.value.is_some()),
        ]
        .iter()
        .find_map(|&(f, given)| given.then_some(f))
        {
            return bad(format!(
                "\"{field}\" only applies to site \"feature\", not {:?}",
                self.site.name()
            ));
        }
        if self.layer >= spec.n_layers {
            return bad(format!(
                "layer {} is out of range: the model has layers 0..{}",
                self.layer,
                spec.n_layers - 1
            ));
        }
        let linear =
            spec.layers.get(self.layer).map(|k| k.mixer) == Some(crate::arch::Mixer::DeltaNet);
        if self.site == Site::Head && linear {
            return bad(format!(
                "layer {} is a Gated DeltaNet (linear attention) layer: it has no attention heads; use site \"attn_out\" for its output",
                self.layer
            ));
        }
        match (self.site, self.head) {
            (Site::Head, None) => return bad("site \"head\" needs a \"head\"".into()),
            (Site::Head, Some(h)) if h >= spec.n_heads => {
                return bad(format!(
                    "head {h} is out of range: the model has heads 0..{}",
                    spec.n_heads - 1
                ))
            }
            (s, Some(_)) if s != Site::Head => {
                return bad(format!(
                    "\"head\" only applies to site \"head\", not {:?}",
                    s.name()
                ))
            }
            _ => {}
        }
        match (self.site, self.expert) {
            (Site::Expert, e) => {
                let moe = spec.layers.get(self.layer).map(|k| k.mlp)
                    == Some(crate::arch::MlpKind::Experts);
                let count = spec.experts.map_or(0, |x| x.count);
                if !moe {
                    return bad(format!(
                        "layer {} has a dense MLP, not experts{}",
                        self.layer,
                        if count == 0 {
                            " (the model has no mixture-of-experts layer)"
                        } else {
                            ""
                        }
                    ));
                }
                if let Some(x) = e.filter(|&x| x >= count) {
                    return bad(format!(
                        "expert {x} is out of range: the layer has experts 0..{}",
                        count - 1
                    ));
                }
                if self.op == Op::Patch {
                    return bad(
                        "the routing cannot be patched from another run; patch mlp_out instead"
                            .into(),
                    );
                }
            }
            (s, Some(_)) => {
                return bad(format!(
                    "\"expert\" only applies to site \"expert\", not {:?}",
                    s.name()
                ))
            }
            _ => {}
        }
        self.check_positions(seq_len)?;
        let width = self.width(spec);
        match self.op {
            Op::Add | Op::Set => match &self.vector {
                None => return bad(format!("op {:?} needs a \"vector\"", self.op_name())),
                Some(v) if v.len() != width => {
                    return bad(format!(
                        "the vector has {} values, but {} vectors of this model have {width}",
                        v.len(),
                        match (self.site, self.expert) {
                            (Site::Head, _) => "head",
                            (Site::Expert, Some(_)) => "one expert's routing",
                            (Site::Expert, None) => "routing",
                            _ => "residual",
                        }
                    ))
                }
                Some(v) if v.iter().any(|x| !x.is_finite()) => {
                    return bad("the vector holds a value that is not a finite number".into())
                }
                _ => {}
            },
            Op::Patch => {
                let Some(values) = &self.values else {
                    return bad(
                        "op \"patch\" needs a source run (\"source_ids\" or \"source_text\")"
                            .into(),
                    );
                };
                // How many positions the source must cover is known only when the run happens
                // (a generation grows); the forward pass says so then.
                if values.is_empty() || values.iter().any(|v| v.len() != width) {
                    return bad(format!(
                        "the patch source gives {} vectors; each must have {width} values",
                        values.len()
                    ));
                }
            }
            Op::Zero | Op::Mean => {}
        }
        if let Some(s) = self.scale {
            if !s.is_finite() {
                return bad(format!("scale {s} is not a finite number"));
            }
        }
        Ok(())
    }

    fn check_positions(&self, seq_len: usize) -> Result<()> {
        let bad = |m: String| {
            Err(PrismError::Input(format!(
                "intervention ({}): {m}",
                self.describe()
            )))
        };
        if let PositionSet::List(l) = &self.positions {
            if l.is_empty() {
                return bad("the position list is empty".into());
            }
            if let Some(p) = l.iter().find(|&&p| p >= seq_len) {
                return bad(format!(
                    "position {p} is out of range: the text has {seq_len} tokens (0..{})",
                    seq_len.saturating_sub(1)
                ));
            }
        }
        Ok(())
    }

    /// A feature intervention: `add` steers along the decoder direction (`scale`), `set` clamps
    /// the feature to `value`, `zero` ablates it; the SAE's error term is kept either way.
    fn validate_feature(&self, spec: &ArchSpec, seq_len: usize) -> Result<()> {
        let bad = |m: String| {
            Err(PrismError::Input(format!(
                "intervention ({}): {m}",
                self.describe()
            )))
        };
        if self.sae.is_none() && self.encoder.is_none() {
            return bad("site \"feature\" needs \"sae\" (the SAE's folder or file)".into());
        }
        let Some(j) = self.feature else {
            return bad("site \"feature\" needs \"feature\" (the feature's index)".into());
        };
        let Some(f) = &self.encoder else {
            return bad("the SAE was not read (Prism reads \"sae\" with the file)".into());
        };
        if j >= f.d_sae {
            return bad(format!(
                "feature {j} is out of range: the SAE has features 0..{}",
                f.d_sae - 1
            ));
        }
        let width = match f.site {
            Site::Head => spec.q_dim_at(f.layer),
            _ => spec.hidden,
        };
        if f.layer >= spec.n_layers || f.direction.len() != width {
            return bad(format!(
                "the SAE reads {}@{} with width {}; this model has {} layers of width {}",
                f.site.name(),
                f.layer,
                f.direction.len(),
                spec.n_layers,
                width
            ));
        }
        for (field, given) in [
            ("head", self.head.is_some()),
            ("expert", self.expert.is_some()),
            ("vector", self.vector.is_some()),
            ("values", self.values.is_some()),
            ("source_ids", self.source_ids.is_some()),
            ("source_text", self.source_text.is_some()),
        ] {
            if given {
                return bad(format!(
                    "\"{field}\" does not apply to site \"feature\" (its direction is the SAE's)"
                ));
            }
        }
        match self.op {
            Op::Add => {}
            Op::Set => match self.value {
                None => return bad("op \"set\" on a feature needs a \"value\" (the activation to clamp it to)".into()),
                Some(v) if !v.is_finite() => return bad(format!("value {v} is not a finite number")),
                Some(_) => {}
            },
            Op::Zero => {}
            Op::Mean | Op::Patch => {
                return bad(format!(
                    "op {:?} does not apply to a feature: use \"add\" (steer), \"set\" (clamp) or \"zero\" (ablate)",
                    self.op_name()
                ))
            }
        }
        if self.value.is_some() && self.op != Op::Set {
            return bad("\"value\" only applies to op \"set\"".into());
        }
        if let Some(s) = self.scale {
            if !s.is_finite() {
                return bad(format!("scale {s} is not a finite number"));
            }
        }
        self.check_positions(seq_len)
    }

    fn op_name(&self) -> &'static str {
        match self.op {
            Op::Add => "add",
            Op::Set => "set",
            Op::Zero => "zero",
            Op::Mean => "mean",
            Op::Patch => "patch",
        }
    }
}

/// Parses an interventions file (a JSON list), naming the entry and field that is wrong.
pub fn parse_list(text: &str) -> Result<Vec<Intervention>> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        PrismError::Input(format!(
            "interventions file, line {} column {}{}: {inner}",
            inner.line(),
            inner.column(),
            if path.is_empty() || path == "." {
                String::new()
            } else {
                format!(", at {path}")
            }
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_shape() {
        let list = parse_list(
            r#"[{"site":"head","layer":2,"head":4,"op":"zero","positions":"all"},
                {"site":"resid_post","layer":1,"op":"add","vector":[1,2],"scale":-3.5,"positions":[0,2]}]"#,
        )
        .unwrap();
        assert_eq!(list[0].site, Site::Head);
        assert_eq!(list[1].positions, PositionSet::List(vec![0, 2]));
        assert_eq!(list[1].scale, Some(-3.5));
    }

    #[test]
    fn a_bad_field_is_named_with_its_line() {
        let e = parse_list("[\n{\"site\":\"resid_pre\",\"layer\":0,\"op\":\"double\"}]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("[0].op"), "{e}");
    }
}
