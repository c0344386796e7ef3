//! How a request's interventions become edits of the forward pass's buffers: per site and layer,
//! per sequence, with the positions and head they name.

use super::exec::{Edit, EditKind, Exec};
use crate::backend::Request;
use crate::error::{PrismError, Result};
use crate::intervene::{FeatureSource, Intervention, Op, PositionSet, Site};

/// The inputs transcoder features are read from, materialized by the pass before the MLP where a
/// feature edit at the MLP's output needs them (`[rows, hidden]` each).
pub(super) struct FeatureInputs<B> {
    pub mlp_in: Option<B>,
    pub resid_mid: Option<B>,
}

impl<B> FeatureInputs<B> {
    fn get(&self, source: FeatureSource) -> Option<&B> {
        match source {
            FeatureSource::Site => None,
            FeatureSource::MlpIn => self.mlp_in.as_ref(),
            FeatureSource::ResidMid => self.resid_mid.as_ref(),
        }
    }
}

/// Interventions of a request, looked up by site.
pub(super) struct Edits<'a> {
    pub req: &'a Request<'a>,
    pub past: usize,
}

impl<'a> Edits<'a> {
    /// (sequence, intervention) pairs for a site of a layer, in application order.
    pub fn at(&self, site: Site, layer: usize) -> Vec<(usize, &'a Intervention)> {
        let mut out = Vec::new();
        for b in 0..self.req.batch {
            for iv in self.req.interventions {
                if iv.applies_at(site, layer) {
                    out.push((b, iv));
                }
            }
            if let Some(list) = self.req.per_sequence.get(b) {
                for iv in list {
                    if iv.applies_at(site, layer) {
                        out.push((b, iv));
                    }
                }
            }
        }
        out
    }

    /// Every intervention of the request, shared and per sequence.
    fn all(&self) -> impl Iterator<Item = &'a Intervention> {
        let req = self.req;
        req.interventions
            .iter()
            .chain(req.per_sequence.iter().flatten())
    }

    /// Whether some feature edit of the request (at `layer`, or at any layer) reads `source`.
    pub fn reads(&self, source: FeatureSource, layer: Option<usize>) -> bool {
        self.all().any(|iv| {
            iv.encoder.as_deref().is_some_and(|f| {
                iv.site == Site::Feature && f.source == source && layer.is_none_or(|l| f.layer == l)
            })
        })
    }

    /// Applies the interventions of a site to `buf` `[rows, width]`.
    pub fn apply<E: Exec>(
        &self,
        e: &mut E,
        site: Site,
        layer: usize,
        buf: &E::Buf,
        width: usize,
        head_dim: usize,
    ) -> Result<()> {
        self.apply_reading(e, site, layer, buf, width, head_dim, None)
    }

    /// [`Edits::apply`], with the transcoder inputs that feature edits there may read.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_reading<E: Exec>(
        &self,
        e: &mut E,
        site: Site,
        layer: usize,
        buf: &E::Buf,
        width: usize,
        head_dim: usize,
        inputs: Option<&FeatureInputs<E::Buf>>,
    ) -> Result<()> {
        let t = self.req.seq;
        for (b, iv) in self.at(site, layer) {
            // Rows of this sequence the intervention touches, with each row's index into
            // the intervention's own position list (for patch values).
            let mut rows = Vec::new();
            let mut value_index = Vec::new();
            for local in 0..t {
                let pos = self.past + local;
                let idx = match &iv.positions {
                    PositionSet::All => Some(pos),
                    PositionSet::List(l) => l.iter().position(|&p| p == pos),
                };
                if let Some(i) = idx {
                    rows.push(b * t + local);
                    value_index.push(i);
                }
            }
            if rows.is_empty() {
                continue;
            }
            let (col0, ncols) = match (site, iv.head, iv.expert) {
                (Site::Head, Some(h), _) => (h * head_dim, head_dim),
                (Site::Expert, _, Some(x)) => (x, 1),
                _ => (0, width),
            };
            let feature = iv.encoder.as_deref().filter(|_| iv.site == Site::Feature);
            let source = match feature.map(|f| f.source) {
                None | Some(FeatureSource::Site) => None,
                Some(s) => Some(inputs.and_then(|i| i.get(s)).ok_or_else(|| {
                    PrismError::Backend(format!(
                        "intervention ({}): the pass did not keep the transcoder's input (a bug in Prism)",
                        iv.describe()
                    ))
                })?),
            };
            let kind = match (iv.op, feature) {
                (Op::Add, Some(f)) => EditKind::Add {
                    vector: &f.direction,
                    scale: iv.scale.unwrap_or(1.0),
                },
                (Op::Set | Op::Zero, Some(f)) => EditKind::Feature {
                    encoder: f,
                    target: if iv.op == Op::Set {
                        iv.value.unwrap_or(0.0)
                    } else {
                        0.0
                    },
                },
                (Op::Mean | Op::Patch, Some(_)) => {
                    return Err(PrismError::Input(format!(
                        "intervention ({}): a feature is steered, clamped or ablated",
                        iv.describe()
                    )))
                }
                (op, None) => self.kind(op, iv, b, &rows, &value_index, ncols)?,
            };
            e.edit(
                buf,
                width,
                &Edit {
                    rows,
                    col0,
                    ncols,
                    kind,
                },
                source,
            )?;
        }
        Ok(())
    }

    /// The edit of a site's own intervention (not a feature's).
    fn kind(
        &self,
        op: Op,
        iv: &'a Intervention,
        b: usize,
        rows: &[usize],
        value_index: &[usize],
        ncols: usize,
    ) -> Result<EditKind<'a>> {
        let t = self.req.seq;
        Ok(match op {
            Op::Add => EditKind::Add {
                vector: iv.vector.as_deref().unwrap_or(&[]),
                scale: iv.scale.unwrap_or(1.0),
            },
            Op::Set => {
                let v = iv.vector.as_deref().unwrap_or(&[]);
                EditKind::Set(rows.iter().flat_map(|_| v.iter().copied()).collect())
            }
            Op::Zero => EditKind::Zero,
            Op::Mean => EditKind::Mean {
                over: (b * t..(b + 1) * t).collect(),
            },
            Op::Patch => {
                let values = iv.values.as_deref().unwrap_or(&[]);
                let mut flat = Vec::with_capacity(rows.len() * ncols);
                for &i in value_index {
                    let v = values.get(i).ok_or_else(|| {
                            PrismError::Input(format!(
                                "intervention ({}): the patch source run has {} positions; this run needs position {i} (patch from a source at least as long)",
                                iv.describe(),
                                values.len()
                            ))
                        })?;
                    flat.extend_from_slice(v);
                }
                EditKind::Set(flat)
            }
        })
    }
}
