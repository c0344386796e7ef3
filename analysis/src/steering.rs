//! Steering vectors as llama.cpp control vectors.
//!
//! A file holds F32 vectors named `direction.N` (N >= 1); llama.cpp adds scale * direction.N to
//! the output of block N (`resid_post@N`) at every position, for N inside the layer range.
//! `llama-cvector-generator --method mean` measures direction.N at the output of block N - 1: for
//! each prompt pair (the shorter right-padded with the last token of " "), the row differences
//! positive - negative at every position, rows with no element above 1e-6 dropped, all pairs'
//! rows pooled, averaged, and scaled to unit length. Prism does both exactly so, so a vector made
//! here steers llama.cpp and one made by llama.cpp steers Prism.

use std::collections::BTreeMap;
use std::path::Path;

use crate::backend::Backend;
use crate::error::{PrismError, Result};
use crate::gguf::{self, Value, WriteTensor};
use crate::intervene::{Intervention, Op, Site};
use crate::model::Model;

#[derive(Debug, Clone, PartialEq)]
pub struct ControlVector {
    /// direction index N -> vector (added at resid_post@N).
    pub directions: BTreeMap<usize, Vec<f32>>,
    /// The `general.architecture` of the model it was made for.
    pub model_hint: String,
}

impl ControlVector {
    /// Reads a control-vector GGUF, checking it as llama.cpp does, and that it fits a model of
    /// `hidden` width.
    pub fn load(path: &Path, hidden: usize) -> Result<ControlVector> {
        let f = gguf::open(path)?;
        let bad = |m: String| PrismError::format(path, m);
        let mut directions = BTreeMap::new();
        for t in &f.tensors {
            let n: usize = t
                .name
                .strip_prefix("direction.")
                .and_then(|n| n.parse().ok())
                .filter(|&n| n >= 1)
                .ok_or_else(|| {
                    bad(format!(
                        "tensor {:?} is not a control vector direction (direction.N with N >= 1)",
                        t.name
                    ))
                })?;
            if t.ggml_type != 0 || t.ne.len() != 1 {
                return Err(bad(format!(
                    "{}: a direction must be a 1-D F32 tensor (found type {} with dims {:?})",
                    t.name,
                    crate::quant::ggml_type_name(t.ggml_type),
                    t.ne
                )));
            }
            if t.ne[0] as usize != hidden {
                return Err(bad(format!(
                    "{} has {} values, but this model's hidden size is {hidden}: the control vector was made for another model",
                    t.name, t.ne[0]
                )));
            }
            let bytes = &f.map()[t.start as usize..(t.start + t.bytes) as usize];
            let v: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if v.iter().any(|x| !x.is_finite()) {
                return Err(bad(format!("{} holds a value that is not finite", t.name)));
            }
            // Several tensors for one N add up, as in llama.cpp.
            let slot = directions.entry(n).or_insert_with(|| vec![0f32; hidden]);
            slot.iter_mut().zip(&v).for_each(|(a, b)| *a += b);
        }
        if directions.is_empty() {
            return Err(bad("the file holds no direction.N tensors".into()));
        }
        let model_hint = f
            .meta()
            .str("controlvector.model_hint")
            .unwrap_or("")
            .to_string();
        Ok(ControlVector {
            directions,
            model_hint,
        })
    }

    /// Writes the file the way llama-cvector-generator does.
    pub fn save(&self, path: &Path) -> Result<()> {
        let data: Vec<(String, Vec<u8>)> = self
            .directions
            .iter()
            .map(|(n, v)| {
                (
                    format!("direction.{n}"),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            })
            .collect();
        let tensors: Vec<WriteTensor<'_>> = data
            .iter()
            .zip(self.directions.values())
            .map(|((name, bytes), v)| WriteTensor {
                name,
                ne: vec![v.len() as u64],
                ggml_type: 0,
                data: bytes,
            })
            .collect();
        let meta = [
            (
                "general.architecture",
                Value::String("controlvector".into()),
            ),
            (
                "controlvector.model_hint",
                Value::String(self.model_hint.clone()),
            ),
            (
                "controlvector.layer_count",
                Value::I32(self.directions.len() as i32),
            ),
        ];
        gguf::write(path, &meta, &tensors)
    }

    /// The interventions llama.cpp's `--control-vector-scaled FILE:scale` applies: scale *
    /// direction.N added to resid_post@N at every position, for 1 <= N < n_layers inside the
    /// inclusive `layers` range.
    pub fn interventions(
        &self,
        scale: f32,
        layers: Option<(usize, usize)>,
        n_layers: usize,
    ) -> Vec<Intervention> {
        self.directions
            .iter()
            .filter(|(&n, _)| n >= 1 && n < n_layers)
            .filter(|(&n, _)| layers.is_none_or(|(a, b)| a <= n && n <= b))
            .map(|(&n, v)| {
                Intervention::new(Site::ResidPost, n, Op::Add).with_vector(v.clone(), Some(scale))
            })
            .collect()
    }
}

/// llama-cvector-generator's `--method mean` on prompt pairs (token ids, the shorter of each pair
/// padded with `pad`): direction.(L+1) from the outputs of blocks L = 0..n_layers-2.
pub fn mean_difference(
    model: &Model,
    backend: &dyn Backend,
    positive: &[Vec<u32>],
    negative: &[Vec<u32>],
    pad: u32,
) -> Result<ControlVector> {
    let s = &model.spec;
    if positive.len() != negative.len() || positive.is_empty() {
        return Err(PrismError::Input(format!(
            "{} positive and {} negative prompts: the lists must be the same length, and not empty",
            positive.len(),
            negative.len()
        )));
    }
    if s.n_layers < 2 {
        return Err(PrismError::Input(
            "a control vector needs a model of at least two layers".into(),
        ));
    }
    let h = s.hidden;
    // rows[L] for block outputs L = 0..n-2.
    let mut rows: Vec<Vec<Vec<f32>>> = vec![Vec::new(); s.n_layers - 1];
    for (p, n) in positive.iter().zip(negative) {
        let len = p.len().max(n.len());
        let padded = |v: &Vec<u32>| {
            let mut v = v.clone();
            v.resize(len, pad);
            v
        };
        let (p, n) = (padded(p), padded(n));
        crate::backend::check_ids(model, &p)?;
        crate::backend::check_ids(model, &n)?;
        let run = |ids: &[u32]| -> Result<Vec<Vec<f32>>> {
            Ok(backend
                .run(&crate::backend::Request::residual(ids))?
                .residual
                .unwrap_or_default())
        };
        let (rp, rn) = (run(&p)?, run(&n)?);
        for (layer, out) in rows.iter_mut().enumerate() {
            // The output of block `layer` is residual entry layer + 1.
            let (a, b) = (&rp[layer + 1], &rn[layer + 1]);
            for pos in 0..len {
                let d: Vec<f32> = (0..h).map(|j| a[pos * h + j] - b[pos * h + j]).collect();
                if d.iter().any(|&x| x > 1e-6) {
                    out.push(d);
                }
            }
        }
    }
    let mut directions = BTreeMap::new();
    for (layer, rs) in rows.iter().enumerate() {
        if rs.is_empty() {
            continue;
        }
        let mut mean = vec![0f64; h];
        for r in rs {
            mean.iter_mut().zip(r).for_each(|(m, &x)| *m += x as f64);
        }
        let mean: Vec<f64> = mean.iter().map(|m| m / rs.len() as f64).collect();
        let norm = mean.iter().map(|m| m * m).sum::<f64>().sqrt();
        if norm == 0.0 {
            continue;
        }
        directions.insert(layer + 1, mean.iter().map(|m| (m / norm) as f32).collect());
    }
    if directions.is_empty() {
        return Err(PrismError::Input(
            "the positive and negative prompts give the same residual stream everywhere: there is no direction".into(),
        ));
    }
    Ok(ControlVector {
        directions,
        model_hint: model_hint(model),
    })
}

/// A direction from a concept axis: the residual stream after block `layer` at the last token
/// of `to` minus that of `from` (each inside `template`), unit length, named so that it is added
/// where it was measured (direction.`layer`).
pub fn axis_direction(
    model: &Model,
    backend: &dyn Backend,
    from: &str,
    to: &str,
    layer: usize,
    template: &str,
) -> Result<ControlVector> {
    let s = &model.spec;
    if layer == 0 || layer >= s.n_layers {
        return Err(PrismError::Input(format!(
            "layer {layer}: a control vector is added after blocks 1..{} (llama.cpp never adds one after block 0)",
            s.n_layers - 1
        )));
    }
    let mut ex = crate::geometry::vectors::Extractor::new(model, backend);
    let words = vec![from.to_string(), to.to_string()];
    let ctx = ex.contextual_all(&words, template)?;
    let (a, b) = (&ctx[0].1[layer + 1], &ctx[1].1[layer + 1]);
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| y as f64 - x as f64)
        .collect();
    let norm = d.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm == 0.0 {
        return Err(PrismError::Input(format!(
            "{from:?} and {to:?} have the same representation at layer {layer}"
        )));
    }
    let mut directions = BTreeMap::new();
    directions.insert(layer, d.iter().map(|x| (x / norm) as f32).collect());
    Ok(ControlVector {
        directions,
        model_hint: model_hint(model),
    })
}

/// What cvector-generator writes as `controlvector.model_hint`: the GGUF `general.architecture`,
/// or for a Hugging Face checkpoint the Prism family it runs as (llama.cpp does not read it).
fn model_hint(model: &Model) -> String {
    match model.info.format {
        crate::arch::Format::Gguf => model.spec.architecture.clone(),
        crate::arch::Format::Safetensors => model.spec.family.to_string(),
    }
}

/// Ids of the prompts in a cvector-generator prompt file: one prompt per line, `\n` escapes
/// processed, each tokenized with the vocabulary's BOS setting and special tokens parsed.
pub fn prompt_file_ids(model: &Model, text: &str) -> Result<Vec<Vec<u32>>> {
    let tok = model.tokenizer.as_ref().ok_or_else(|| {
        PrismError::Input("this model has no tokenizer: prompt files need one".into())
    })?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let unescaped = l.replace("\\n", "\n").replace("\\t", "\t");
            tok.encode(&unescaped, false)
        })
        .collect()
}

/// The padding token llama.cpp uses: the last token of " ".
pub fn pad_token(model: &Model) -> Result<u32> {
    let tok = model
        .tokenizer
        .as_ref()
        .ok_or_else(|| PrismError::Input("this model has no tokenizer".into()))?;
    tok.encode_plain(" ")?
        .last()
        .copied()
        .ok_or_else(|| PrismError::Input("\" \" has no tokens in this vocabulary".into()))
}
