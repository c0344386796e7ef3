//! Activations at chosen sites in the layout SAELens reads as an activation cache: a Hugging Face
//! `datasets` folder (what `Dataset.save_to_disk` writes and `datasets.load_from_disk` reads):
//! Arrow IPC stream files, one row per context window, a column per site holding an
//! `Array2D(shape=(context, d_in))` and `token_ids` a fixed-length list of int32, with
//! `dataset_info.json` and `state.json` beside them. SAELens's `ActivationsStore` takes the folder
//! as `cached_activations_path` and the column named by its `hook_name`, so the sites are named
//! as TransformerLens names them (`blocks.12.hook_resid_post`); a site TransformerLens has no hook
//! for (Prism's `mlp_out` before a post-MLP norm) keeps Prism's name (`mlp_out@3`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float16Array, Float32Array, Int32Array, ListArray,
    RecordBatch,
};
use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::arch::ArchSpec;
use crate::error::{PrismError, Result};
use crate::intervene::Site;

/// The float type the activations are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActDtype {
    #[default]
    Float32,
    Float16,
}

impl ActDtype {
    pub fn parse(s: &str) -> Result<ActDtype> {
        match s {
            "f32" | "float32" => Ok(ActDtype::Float32),
            "f16" | "float16" => Ok(ActDtype::Float16),
            _ => Err(PrismError::Input(format!(
                "activation dtype {s:?}: expected f32 or f16"
            ))),
        }
    }

    /// The name `datasets` gives it.
    pub fn name(self) -> &'static str {
        match self {
            ActDtype::Float32 => "float32",
            ActDtype::Float16 => "float16",
        }
    }
}

/// One site whose activations are cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActSite {
    pub site: Site,
    pub layer: usize,
}

impl ActSite {
    /// Prism's name, `site@layer`, as the manifest records it.
    pub fn name(&self) -> String {
        format!("{}@{}", self.site.name(), self.layer)
    }

    /// The column's name: TransformerLens's hook where it has one for this site.
    pub fn hook(&self, spec: &ArchSpec) -> String {
        let l = self.layer;
        match self.site {
            Site::ResidPre => format!("blocks.{l}.hook_resid_pre"),
            Site::ResidPost => format!("blocks.{l}.hook_resid_post"),
            Site::MlpAdded => format!("blocks.{l}.hook_mlp_out"),
            Site::AttnAdded => format!("blocks.{l}.hook_attn_out"),
            Site::Head => format!("blocks.{l}.attn.hook_z"),
            // Before a post-norm the output is not what TransformerLens's hook holds.
            Site::MlpOut if !spec.block.mlp.output => format!("blocks.{l}.hook_mlp_out"),
            Site::AttnOut if !spec.block.attn.output => format!("blocks.{l}.hook_attn_out"),
            _ => self.name(),
        }
    }

    /// Values per position.
    pub fn width(&self, spec: &ArchSpec) -> usize {
        match self.site {
            Site::Head => spec.n_heads * spec.head_dim_at(self.layer),
            _ => spec.hidden,
        }
    }

    /// Whether the run must capture the sub-layer sites (not only the residual stream).
    pub fn needs_sites(&self) -> bool {
        !matches!(self.site, Site::ResidPre | Site::ResidPost)
    }
}

/// Parses `resid_post@12,mlp_out@3` (or SAELens hooks, `blocks.12.hook_resid_post`) for `spec`;
/// an unknown site, a layer past the model's, a repeated site or a site that holds no
/// activation (expert, feature) is refused.
pub fn parse_sites(list: &str, spec: &ArchSpec) -> Result<Vec<ActSite>> {
    let mut out: Vec<ActSite> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (site, layer) = crate::sae::parse_hook(item).ok_or_else(|| {
            PrismError::Input(format!(
                "site {item:?}: expected site@layer (resid_pre, resid_post, attn_out, mlp_out, attn_added, mlp_added, head) or a SAELens hook such as blocks.3.hook_resid_post"
            ))
        })?;
        if matches!(site, Site::Expert | Site::Feature) {
            return Err(PrismError::Input(format!(
                "site {item:?}: {} holds no activation vector to cache",
                site.name()
            )));
        }
        if layer >= spec.n_layers {
            return Err(PrismError::Input(format!(
                "site {item:?}: layer {layer}, but the model has layers 0..{}",
                spec.n_layers
            )));
        }
        let s = ActSite { site, layer };
        if out.iter().any(|o| o.hook(spec) == s.hook(spec)) {
            return Err(PrismError::Input(format!("site {item:?} is listed twice")));
        }
        out.push(s);
    }
    if out.is_empty() {
        return Err(PrismError::Input(
            "--sites lists no site (e.g. resid_post@12,mlp_out@3)".into(),
        ));
    }
    Ok(out)
}

/// The columns of a cache: each site's hook name and width, the window length and the dtype.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub hooks: Vec<(String, usize)>,
    pub context: usize,
    pub dtype: ActDtype,
}

impl Layout {
    pub fn new(sites: &[ActSite], spec: &ArchSpec, context: usize, dtype: ActDtype) -> Layout {
        Layout {
            hooks: sites
                .iter()
                .map(|s| (s.hook(spec), s.width(spec)))
                .collect(),
            context,
            dtype,
        }
    }

    /// The `datasets` Features, as `dataset_info.json` and the schema's metadata hold them.
    pub fn features(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (hook, width) in &self.hooks {
            m.insert(
                hook.clone(),
                json!({"shape": [self.context, width], "dtype": self.dtype.name(), "_type": "Array2D"}),
            );
        }
        m.insert(
            "token_ids".into(),
            json!({"feature": {"dtype": "int32", "_type": "Value"}, "length": self.context, "_type": "List"}),
        );
        serde_json::Value::Object(m)
    }

    fn schema(&self) -> Schema {
        let float = match self.dtype {
            ActDtype::Float32 => DataType::Float32,
            ActDtype::Float16 => DataType::Float16,
        };
        let mut fields: Vec<Field> = self
            .hooks
            .iter()
            .map(|(hook, width)| {
                let inner = DataType::List(Arc::new(Field::new("item", float.clone(), true)));
                let outer = DataType::List(Arc::new(Field::new("item", inner, true)));
                Field::new(hook, outer, true).with_metadata(HashMap::from([
                    (
                        "ARROW:extension:name".to_string(),
                        "datasets.features.features.Array2DExtensionType".to_string(),
                    ),
                    (
                        "ARROW:extension:metadata".to_string(),
                        format!("[[{}, {width}], \"{}\"]", self.context, self.dtype.name()),
                    ),
                ]))
            })
            .collect();
        fields.push(Field::new(
            "token_ids",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Int32, true)),
                self.context as i32,
            ),
            true,
        ));
        let meta = json!({"info": {"features": self.features()}}).to_string();
        Schema::new(fields).with_metadata(HashMap::from([("huggingface".to_string(), meta)]))
    }

    /// One Arrow IPC stream of `windows`: each its `context` token ids and, per hook, its values
    /// `[context, width]`.
    pub fn write(&self, windows: &[(Vec<u32>, Vec<Vec<f32>>)]) -> Result<Vec<u8>> {
        let rows = windows.len();
        let ctx = self.context;
        let too_big = |what: &str| {
            PrismError::Input(format!(
                "a shard's {what} do not fit an Arrow list (2^31 values): use fewer documents per shard"
            ))
        };
        let mut cols: Vec<ArrayRef> = Vec::new();
        for (h, (hook, width)) in self.hooks.iter().enumerate() {
            let n = rows * ctx * width;
            if n > i32::MAX as usize {
                return Err(too_big("activations"));
            }
            let mut flat = Vec::with_capacity(n);
            for (ids, values) in windows {
                let v = &values[h];
                if ids.len() != ctx || v.len() != ctx * width {
                    return Err(PrismError::Backend(format!(
                        "{hook}: a window of {} tokens and {} values, not {ctx} and {}",
                        ids.len(),
                        v.len(),
                        ctx * width
                    )));
                }
                flat.extend_from_slice(v);
            }
            let values: ArrayRef = match self.dtype {
                ActDtype::Float32 => Arc::new(Float32Array::from(flat)),
                ActDtype::Float16 => Arc::new(Float16Array::from(
                    flat.into_iter()
                        .map(half::f16::from_f32)
                        .collect::<Vec<_>>(),
                )),
            };
            let item = |dt: DataType| Arc::new(Field::new("item", dt, true));
            let inner = ListArray::try_new(
                item(values.data_type().clone()),
                offsets(rows * ctx, *width),
                values,
                None,
            )
            .map_err(arrow_err)?;
            let outer = ListArray::try_new(
                item(inner.data_type().clone()),
                offsets(rows, ctx),
                Arc::new(inner),
                None,
            )
            .map_err(arrow_err)?;
            cols.push(Arc::new(outer));
        }
        if rows * ctx > i32::MAX as usize {
            return Err(too_big("token ids"));
        }
        let ids: Vec<i32> = windows
            .iter()
            .flat_map(|(ids, _)| ids.iter().map(|&i| i as i32))
            .collect();
        cols.push(Arc::new(
            FixedSizeListArray::try_new(
                Arc::new(Field::new("item", DataType::Int32, true)),
                ctx as i32,
                Arc::new(Int32Array::from(ids)),
                None,
            )
            .map_err(arrow_err)?,
        ));
        let schema = Arc::new(self.schema());
        let batch = RecordBatch::try_new(schema.clone(), cols).map_err(arrow_err)?;
        let mut buf = Vec::new();
        {
            let mut w =
                arrow_ipc::writer::StreamWriter::try_new(&mut buf, &schema).map_err(arrow_err)?;
            w.write(&batch).map_err(arrow_err)?;
            w.finish().map_err(arrow_err)?;
        }
        Ok(buf)
    }

    /// Writes `dir/state.json` and `dir/dataset_info.json` for the data files `files` (names in
    /// `dir` and their sha256, in order), atomically: the folder is then a `datasets` dataset of
    /// those files.
    pub fn write_meta(&self, dir: &Path, files: &[(String, String)]) -> Result<()> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (_, sha) in files {
            h.update(sha.as_bytes());
        }
        let fingerprint: String = format!("{:x}", h.finalize()).chars().take(16).collect();
        let state = json!({
            "_data_files": files.iter().map(|(f, _)| json!({"filename": f})).collect::<Vec<_>>(),
            "_fingerprint": fingerprint,
            "_format_columns": null,
            "_format_kwargs": {},
            "_format_type": null,
            "_output_all_columns": false,
            "_split": null,
        });
        let info = json!({
            "citation": "",
            "description": "Activations written by Prism (prism batch --sites)",
            "features": self.features(),
            "homepage": "",
            "license": "",
        });
        let pretty = |v: &serde_json::Value| {
            serde_json::to_vec_pretty(v)
                .map_err(|e| PrismError::Backend(format!("cannot write the cache's metadata: {e}")))
        };
        crate::atomic::write_atomic(&dir.join("dataset_info.json"), &pretty(&info)?)?;
        crate::atomic::write_atomic(&dir.join("state.json"), &pretty(&state)?)
    }
}

fn offsets(lists: usize, len: usize) -> arrow_buffer::OffsetBuffer<i32> {
    arrow_buffer::OffsetBuffer::from_lengths(std::iter::repeat_n(len, lists))
}

fn arrow_err(e: arrow_schema::ArrowError) -> PrismError {
    PrismError::Backend(format!("arrow: {e}"))
}
