//! How a request's interventions become edits of the forward pass's buffers: per site and layer,
//! per sequence, with the positions and head they name.

use super::exec::{Edit, EditKind, Exec};
use crate::backend::Request;
use crate::error::{PrismError, Result};
use crate::intervene::{Intervention, Op, PositionSet, Site};

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
