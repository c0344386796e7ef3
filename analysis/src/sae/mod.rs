//! Sparse autoencoders: SAELens's format (`cfg.json` + `sae_weights.safetensors`), the hook it
//! names mapped onto Prism's sites, encoding and decoding as SAELens computes them (ReLU,
//! JumpReLU, TopK), and a run's features with the reconstruction's quality: SAELens's MSE and
//! explained variance, and the total surprisal with the reconstruction spliced in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::backend::{Backend, Capture};
use crate::checkpoint::safetensors::SafetensorsCheckpoint;
use crate::error::{PrismError, Result};
use crate::intervene::{
    FeatureEncoder, FeatureRule, FeatureSource, Intervention, Op, PositionSet, Site,
};
use crate::model::Model;
use crate::trace::Trace;
use crate::weights::get;

pub mod card;
mod circuit_tracer;
pub mod dashboard;
mod formats;
mod npz;

/// How hidden pre-activations become features.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Activation {
    Relu,
    /// `x * (x > threshold)`, one threshold per feature.
    JumpRelu(Vec<f32>),
    /// The `k` largest pre-activations, through a ReLU; the rest zero.
    TopK(usize),
}

/// What an SAE or transcoder reads. An SAE reads the site it writes; a transcoder reads the
/// MLP's input, in one of the forms circuit-tracer's hooks name, and writes the MLP's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SaeInput {
    /// The SAE's own site.
    Site,
    /// The MLP's input after its norm (`mlp.hook_in`; sparsify's `layers.L.mlp` transcoders).
    MlpIn,
    /// That input before the norm's gain and bias: the normalized residual alone
    /// (TransformerLens's `ln2.hook_normalized`, Gemma Scope's transcoders).
    MlpNormalized,
    /// The residual stream entering the MLP's norm (`hook_resid_mid`).
    ResidMid,
}

impl SaeInput {
    /// A circuit-tracer / TransformerLens input hook (`mlp.hook_in`, `ln2.hook_normalized`,
    /// `hook_resid_mid`), as circuit-tracer's config names it (without `blocks.L.`).
    pub fn from_hook(hook: &str) -> Option<SaeInput> {
        Some(match hook {
            "mlp.hook_in" => SaeInput::MlpIn,
            "ln2.hook_normalized" => SaeInput::MlpNormalized,
            "hook_resid_mid" => SaeInput::ResidMid,
            _ => return None,
        })
    }
}

/// A sparse autoencoder on one site of one layer.
#[derive(Debug, Clone, Serialize)]
pub struct Sae {
    pub path: PathBuf,
    /// The hook as the file names it (`blocks.12.hook_resid_post`).
    pub hook: String,
    pub site: Site,
    pub layer: usize,
    pub d_in: usize,
    pub d_sae: usize,
    pub architecture: String,
    #[serde(skip)]
    pub activation: Activation,
    pub apply_b_dec_to_input: bool,
    /// `[d_in, d_sae]`.
    #[serde(skip)]
    pub w_enc: Arc<Vec<f32>>,
    #[serde(skip)]
    pub b_enc: Arc<Vec<f32>>,
    /// `[d_sae, d_in]`.
    #[serde(skip)]
    pub w_dec: Vec<f32>,
    #[serde(skip)]
    pub b_dec: Vec<f32>,
    /// sparsify's skip connection `[d_in, d_in]`: the reconstruction adds `x · W_skip^T`.
    #[serde(skip)]
    pub w_skip: Option<Vec<f32>>,
    /// A transcoder: it reads the MLP's normalized input of `layer` and predicts the MLP's output
    /// (`site` is then `mlp_out`, where it writes).
    pub transcoder: bool,
    /// What it reads ([`SaeInput::Site`] for an SAE).
    pub input: SaeInput,
    /// For [`SaeInput::MlpNormalized`]: the MLP norm's gain and bias of the model it was checked
    /// against ([`Sae::check`]), which turn the MLP's input back into the normalized residual.
    #[serde(skip)]
    pub input_norm: std::sync::OnceLock<(Vec<f32>, Option<Vec<f32>>)>,
    /// `W_enc^T` `[d_sae, d_in]` as a weight for [`Backend::project`], made on first use.
    #[serde(skip)]
    pub encoder_t: std::sync::OnceLock<crate::weights::Weight>,
}

/// `x` `[rows, k]` times a weight's transpose, on some backend.
type Projection<'a> = dyn Fn(&[f32], usize, &crate::weights::Weight) -> Result<Vec<f32>> + 'a;

/// An SAE's array by name, checked against a shape.
type ArrayOf<'a> = dyn Fn(&str, &[usize]) -> Result<Vec<f32>> + 'a;

fn bad(path: &Path, m: impl Into<String>) -> PrismError {
    PrismError::format(path, m.into())
}

/// An SAE's tensor as f32, checked against `shape` and for values that are not finite numbers.
fn finite_tensor(
    src: &SafetensorsCheckpoint,
    path: &Path,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>> {
    let v = get(src, name, shape)?.to_f32();
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(bad(
            path,
            format!("{name}: value {i} is not a finite number"),
        ));
    }
    Ok(v)
}

/// A SAELens hook (`blocks.L.hook_resid_pre`, `_resid_post`, `_mlp_out`, `_attn_out`, as
/// TransformerLens places them) or Prism's own site name (`resid_post@L`) as (site, layer).
pub fn parse_hook(hook: &str) -> Option<(Site, usize)> {
    if let Some((site, layer)) = hook.split_once('@') {
        return Some((Site::from_name(site)?, layer.parse().ok()?));
    }
    let rest = hook.strip_prefix("blocks.")?;
    let (layer, name) = rest.split_once('.')?;
    let site = match name {
        "hook_resid_pre" => Site::ResidPre,
        "hook_resid_post" => Site::ResidPost,
        // TransformerLens's hook_mlp_out / hook_attn_out are what the sub-layer adds to the
        // residual: after Gemma's and OLMo 2's post-norms.
        "hook_mlp_out" => Site::MlpAdded,
        "hook_attn_out" => Site::AttnAdded,
        // The heads' outputs before o_proj, all heads flattened (SAELens's hook_z SAEs).
        "attn.hook_z" => Site::Head,
        _ => return None,
    };
    Some((site, layer.parse().ok()?))
}

impl Sae {
    /// Reads a SAELens SAE: a folder with `cfg.json` and `sae_weights.safetensors`. A pickled
    /// SAE (`.pt`, `.pth`, `.bin`, or a folder of them) is refused unopened, with the conversion.
    pub fn load(dir: &Path) -> Result<Sae> {
        let pickled = |p: &Path| crate::checkpoint::is_pickle_name(p);
        let pickle_in_dir = || {
            std::fs::read_dir(dir).ok().and_then(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .find(|p| pickled(p))
            })
        };
        let found = if dir.is_file() {
            pickled(dir).then(|| dir.to_path_buf())
        } else if !dir.join("sae_weights.safetensors").exists() {
            pickle_in_dir()
        } else {
            None
        };
        if let Some(p) = found {
            return Err(bad(
                &p,
                "a pickled SAE: PyTorch pickles can run arbitrary code, so Prism never opens them. Save it in SAELens's format first, e.g. in Python: `sae.save_model(out_dir)` (cfg.json + sae_weights.safetensors)",
            ));
        }
        if let Some(set) = circuit_tracer::set_of(dir).filter(|_| dir.is_file()) {
            return circuit_tracer::load_member(set, dir);
        }
        if circuit_tracer::is_set(dir) {
            let n = circuit_tracer::load_set(dir)?.len();
            return Err(bad(
                dir,
                format!("a circuit-tracer transcoder set of {n} layers: name one layer's file (for example {}), or give the folder to `prism features --sae`, which reads every layer", dir.join("layer_0.safetensors").display()),
            ));
        }
        if dir.join("params.safetensors").exists() && !dir.join("sae_weights.safetensors").exists()
        {
            return Sae::load_gemma_scope_2(dir);
        }
        if dir.join("params.npz").exists() && !dir.join("sae_weights.safetensors").exists() {
            return Sae::load_gemma_scope_1(dir);
        }
        if dir.join("hyperparams.json").exists() && !dir.join("sae_weights.safetensors").exists() {
            return Sae::load_llama_scope(dir);
        }
        if dir.join("sae.safetensors").exists() && !dir.join("sae_weights.safetensors").exists() {
            return Sae::load_sparsify(dir);
        }
        let cfg_path = dir.join("cfg.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
            bad(
                dir,
                format!("no SAELens cfg.json here ({e}); Prism reads SAELens folders (cfg.json + sae_weights.safetensors)"),
            )
        })?;
        let cfg: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(&cfg_path, format!("cfg.json: {e}")))?;
        let num = |k: &str| -> Result<usize> {
            cfg.get(k)
                .and_then(|v| v.as_u64())
                .filter(|&v| v > 0 && v <= 1 << 24)
                .map(|v| v as usize)
                .ok_or_else(|| {
                    bad(
                        &cfg_path,
                        format!("cfg.json: \"{k}\" is missing or not a positive count"),
                    )
                })
        };
        let (d_in, d_sae) = (num("d_in")?, num("d_sae")?);
        let hook = cfg
            .get("metadata")
            .and_then(|m| m.get("hook_name"))
            .or_else(|| cfg.get("hook_name"))
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad(&cfg_path, "cfg.json: no metadata.hook_name"))?
            .to_string();
        let (site, layer) = parse_hook(&hook).ok_or_else(|| {
            bad(
                &cfg_path,
                format!("cfg.json: hook {hook:?} is not one Prism reads (blocks.L.hook_resid_pre, hook_resid_post, hook_mlp_out, hook_attn_out, or site@L)"),
            )
        })?;
        for (k, plain) in [
            ("normalize_activations", "none"),
            ("reshape_activations", "none"),
        ] {
            if let Some(v) = cfg.get(k).and_then(|v| v.as_str()).filter(|v| *v != plain) {
                return Err(bad(
                    &cfg_path,
                    format!("cfg.json: {k} {v:?} is not supported (only \"{plain}\")"),
                ));
            }
        }
        if cfg
            .get("rescale_acts_by_decoder_norm")
            .and_then(|v| v.as_bool())
            == Some(true)
        {
            return Err(bad(
                &cfg_path,
                "cfg.json: rescale_acts_by_decoder_norm is not supported",
            ));
        }
        let architecture = cfg
            .get("architecture")
            .and_then(|v| v.as_str())
            .unwrap_or("standard")
            .to_string();
        let weights_path = dir.join("sae_weights.safetensors");
        let src = SafetensorsCheckpoint::open(vec![weights_path.clone()])?;
        let tensor = |name: &str, shape: &[usize]| finite_tensor(&src, &weights_path, name, shape);
        let w_enc = tensor("W_enc", &[d_in, d_sae])?;
        let b_enc = tensor("b_enc", &[d_sae])?;
        let w_dec = tensor("W_dec", &[d_sae, d_in])?;
        let b_dec = tensor("b_dec", &[d_in])?;
        let activation = match architecture.as_str() {
            "standard" | "relu" => Activation::Relu,
            "jumprelu" => Activation::JumpRelu(tensor("threshold", &[d_sae])?),
            "topk" => {
                let k = cfg
                    .get("k")
                    .and_then(|v| v.as_u64())
                    .filter(|&k| k > 0 && (k as usize) <= d_sae)
                    .ok_or_else(|| {
                        bad(
                            &cfg_path,
                            format!("cfg.json: a topk SAE needs \"k\" in 1..={d_sae}"),
                        )
                    })?;
                Activation::TopK(k as usize)
            }
            other => {
                return Err(bad(
                    &cfg_path,
                    format!(
                    "cfg.json: architecture {other:?} is not supported (standard, jumprelu, topk)"
                ),
                ))
            }
        };
        Ok(Sae {
            path: dir.to_path_buf(),
            hook,
            site,
            layer,
            d_in,
            d_sae,
            architecture,
            activation,
            apply_b_dec_to_input: cfg
                .get("apply_b_dec_to_input")
                .and_then(|v| v.as_bool())
                .unwrap_or(true),
            w_enc: Arc::new(w_enc),
            b_enc: Arc::new(b_enc),
            w_dec,
            b_dec,
            w_skip: None,
            transcoder: false,
            input: SaeInput::Site,
            input_norm: Default::default(),
            encoder_t: Default::default(),
        })
    }

    /// Every SAE a path holds: each layer's transcoder of a circuit-tracer set (a folder with
    /// `config.yaml`), else the one SAE [`Sae::load`] reads.
    pub fn load_all(path: &Path) -> Result<Vec<Sae>> {
        if path.is_dir() && circuit_tracer::is_set(path) {
            return circuit_tracer::load_set(path);
        }
        Ok(vec![Sae::load(path)?])
    }

    /// Refuses an SAE that does not fit the model: its layer, its width, its site.
    pub fn check(&self, model: &Model) -> Result<()> {
        let s = &model.spec;
        if self.layer >= s.n_layers {
            return Err(bad(
                &self.path,
                format!(
                    "hook {}: layer {} of a {}-layer model",
                    self.hook, self.layer, s.n_layers
                ),
            ));
        }
        if self.site == Site::Head && s.layers[self.layer].mixer != crate::arch::Mixer::Attention {
            return Err(bad(
                &self.path,
                format!(
                    "hook {}: layer {} is a Gated DeltaNet (linear attention) layer, which has no heads",
                    self.hook, self.layer
                ),
            ));
        }
        if self.input != SaeInput::Site {
            self.check_mlp_input(model)?;
        }
        let width = self.site_width(model);
        if self.d_in != width {
            return Err(bad(
                &self.path,
                format!(
                    "cfg.json: d_in {} differs from the width {width} of {} in this model",
                    self.d_in, self.hook
                ),
            ));
        }
        Ok(())
    }

    /// A transcoder's input in `model`: a pre-norm MLP in a sequential block for the residual or
    /// normalized forms, whose norm's gain (and bias) it keeps for [`SaeInput::MlpNormalized`].
    fn check_mlp_input(&self, model: &Model) -> Result<()> {
        let s = &model.spec;
        let hook = match self.input {
            SaeInput::MlpNormalized => "ln2.hook_normalized",
            SaeInput::ResidMid => "hook_resid_mid",
            _ => return Ok(()),
        };
        if !s.block.mlp.input || s.block.parallel {
            return Err(bad(
                &self.path,
                format!(
                    "{hook}: the {} blocks of this model do not normalize the residual stream before a sequential MLP, so there is no such activation",
                    s.family
                ),
            ));
        }
        if self.input != SaeInput::MlpNormalized || self.input_norm.get().is_some() {
            return Ok(());
        }
        let norm = model
            .weights
            .layers
            .get(self.layer)
            .and_then(|l| l.norm(crate::weights::NormId::Mlp))
            .ok_or_else(|| {
                bad(
                    &self.path,
                    format!("{hook}: layer {} has no MLP norm", self.layer),
                )
            })?;
        let gain = norm.weight.to_f32();
        if let Some(i) = gain.iter().position(|&g| g == 0.0 || !g.is_finite()) {
            return Err(bad(
                &self.path,
                format!(
                    "{hook}: the MLP norm's gain of layer {} is {} at {i}, so the normalized residual cannot be read back from the MLP's input",
                    self.layer, gain[i]
                ),
            ));
        }
        let bias = norm.bias.as_ref().map(|b| b.to_f32());
        let _ = self.input_norm.set((gain, bias));
        Ok(())
    }

    /// The width of the SAE's site in `model`: the hidden size, or for hook_z every head's output.
    pub fn site_width(&self, model: &Model) -> usize {
        match self.site {
            Site::Head => model.spec.q_dim_at(self.layer),
            _ => model.spec.hidden,
        }
    }

    /// A direction at the SAE's site as a direction in the residual stream (what the unembedding
    /// reads): itself, or for hook_z through the layer's o_proj.
    pub fn to_residual(&self, model: &Model, direction: &[f32]) -> Result<Vec<f32>> {
        if self.site != Site::Head {
            return Ok(direction.to_vec());
        }
        let o = model
            .weights
            .layers
            .get(self.layer)
            .and_then(|l| l.linear(crate::weights::LinearId::O))
            .ok_or_else(|| {
                PrismError::Input(format!(
                    "{}: layer {} has no o_proj to map hook_z through",
                    self.path.display(),
                    self.layer
                ))
            })?;
        let w = &o.weight;
        if w.cols() != direction.len() {
            return Err(PrismError::Input(format!(
                "{}: o_proj reads {} values, the SAE's directions have {}",
                self.path.display(),
                w.cols(),
                direction.len()
            )));
        }
        let mut row = vec![0f32; w.cols()];
        Ok((0..w.rows())
            .map(|r| {
                w.decode_row(r, 0, &mut row);
                row.iter().zip(direction).map(|(a, b)| a * b).sum()
            })
            .collect())
    }

    /// Feature activations `[rows, d_sae]` of activations `x` `[rows, d_in]` on the CPU (the
    /// packed GEMM on every core).
    pub fn encode(&self, x: &[f32]) -> Result<Vec<f32>> {
        self.encode_with(x, &crate::backend::project_on_cpu)
    }

    /// [`Sae::encode`] with the pre-activations on `backend` (the GPU's matmul on a GPU backend).
    pub fn encode_on(&self, backend: &dyn Backend, x: &[f32]) -> Result<Vec<f32>> {
        self.encode_with(x, &|input, rows, w| backend.project(input, rows, w))
    }

    /// `W_enc^T` as a weight, made once.
    fn encoder_weight(&self) -> Result<&crate::weights::Weight> {
        if let Some(w) = self.encoder_t.get() {
            return Ok(w);
        }
        let (n, m) = (self.d_in, self.d_sae);
        let mut t = vec![0f32; n * m];
        for i in 0..n {
            for j in 0..m {
                t[j * n + i] = self.w_enc[i * m + j];
            }
        }
        let w = crate::weights::Weight::from_f32("W_enc^T", vec![m, n], &t)?;
        Ok(self.encoder_t.get_or_init(|| w))
    }

    fn encode_with(&self, x: &[f32], project: &Projection<'_>) -> Result<Vec<f32>> {
        let (n, m) = (self.d_in, self.d_sae);
        let rows = x.len() / n;
        let shifted;
        let input: &[f32] = if self.apply_b_dec_to_input {
            shifted = x
                .chunks(n)
                .flat_map(|r| r.iter().zip(&self.b_dec).map(|(a, b)| a - b))
                .collect::<Vec<f32>>();
            &shifted
        } else {
            &x[..rows * n]
        };
        let mut out = if rows > 0 {
            project(input, rows, self.encoder_weight()?)?
        } else {
            Vec::new()
        };
        for acc in out.chunks_mut(m) {
            acc.iter_mut()
                .zip(self.b_enc.iter())
                .for_each(|(a, b)| *a += b);
            match &self.activation {
                Activation::Relu => acc.iter_mut().for_each(|a| *a = a.max(0.0)),
                Activation::JumpRelu(t) => acc
                    .iter_mut()
                    .zip(t)
                    .for_each(|(a, &t)| *a = if *a > t { *a } else { 0.0 }),
                Activation::TopK(k) => {
                    let keep = crate::arch::top_k(acc, *k);
                    let mut kept = vec![0f32; m];
                    for j in keep {
                        kept[j] = acc[j].max(0.0);
                    }
                    acc.copy_from_slice(&kept);
                }
            }
        }
        Ok(out)
    }

    /// The reconstruction of activations `x` from their features `f`: the decoder's, plus the
    /// skip connection's `x · W_skip^T` when the SAE has one.
    pub fn reconstruct(&self, x: &[f32], f: &[f32]) -> Vec<f32> {
        let mut out = self.decode(f);
        if let Some(w) = &self.w_skip {
            let n = self.d_in;
            for (o, xr) in out.chunks_mut(n).zip(x.chunks(n)) {
                for (i, oi) in o.iter_mut().enumerate() {
                    let row = &w[i * n..(i + 1) * n];
                    *oi += row.iter().zip(xr).map(|(a, b)| a * b).sum::<f32>();
                }
            }
        }
        out
    }

    /// The reconstruction `[rows, d_in]` of features `[rows, d_sae]`.
    pub fn decode(&self, f: &[f32]) -> Vec<f32> {
        let (n, m) = (self.d_in, self.d_sae);
        let rows = f.len() / m;
        let mut out = vec![0f32; rows * n];
        for (r, row) in f.chunks(m).enumerate() {
            let o = &mut out[r * n..(r + 1) * n];
            o.copy_from_slice(&self.b_dec);
            for (j, &fj) in row.iter().enumerate() {
                if fj != 0.0 {
                    let w = &self.w_dec[j * n..(j + 1) * n];
                    o.iter_mut().zip(w).for_each(|(a, &b)| *a += fj * b);
                }
            }
        }
        out
    }
}

/// The quality of a run's reconstruction, as SAELens's evals define it.
#[derive(Debug, Clone, Serialize)]
pub struct Reconstruction {
    /// Squared error summed over the dims, averaged over the tokens.
    pub mse: f64,
    /// `1 - E||x - x̂||² / (E||x||² - ||E x||²)`.
    pub explained_variance: f64,
    /// Total surprisal of the predicted tokens with the reconstruction in place of the activation.
    pub spliced_bits: f64,
    pub clean_bits: f64,
}

/// One SAE's features over a run.
#[derive(Debug, Clone)]
pub struct FeatureRun {
    /// Per token, the active features by activation (largest first), at most `top`.
    pub features: Vec<Vec<(usize, f32)>>,
    /// Per token, how many features are active.
    pub l0: Vec<usize>,
    pub reconstruction: Reconstruction,
}

/// The activation at an SAE's site `[rows, hidden]` from a trace that captured the residual
/// stream and the sites.
fn site_values(trace: &Trace, sae: &Sae) -> Result<Vec<f32>> {
    trace.site_values(sae.site, sae.layer)
}

/// What the SAE reads `[rows, d_in]`: its site's activation, or a transcoder's MLP input in the
/// form its hook names.
fn input_values(trace: &Trace, sae: &Sae) -> Result<Vec<f32>> {
    let missing = |what: &str| PrismError::Backend(format!("the run did not capture {what}"));
    let out = &trace.output;
    let l = sae.layer;
    let mlp_in = || {
        out.sites
            .as_ref()
            .and_then(|s| s.mlp_in.get(l))
            .filter(|v| !v.is_empty())
            .ok_or_else(|| missing("the MLP's input"))
    };
    match sae.input {
        SaeInput::Site => site_values(trace, sae),
        SaeInput::MlpIn => mlp_in().cloned(),
        SaeInput::MlpNormalized => {
            let (gain, bias) = sae.checked_norm()?;
            let mut x = mlp_in()?.clone();
            for row in x.chunks_mut(gain.len()) {
                for (i, v) in row.iter_mut().enumerate() {
                    let b = bias.as_ref().map_or(0.0, |b| b[i]);
                    *v = (*v - b) / gain[i];
                }
            }
            Ok(x)
        }
        SaeInput::ResidMid => {
            // The block's input plus what its attention added, summed as the pass sums them.
            let pre = out
                .residual
                .as_ref()
                .and_then(|r| r.get(l))
                .ok_or_else(|| missing("the residual stream"))?;
            let attn = out
                .sites
                .as_ref()
                .and_then(|s| s.added(false, l))
                .ok_or_else(|| missing("the attention's output"))?;
            Ok(pre.iter().zip(attn).map(|(a, b)| a + b).collect())
        }
    }
}

/// The clean run of `ids` with what the SAEs read captured (the residual stream, and the
/// sub-layer outputs when one of them reads those).
pub fn clean_run(model: &Model, backend: &dyn Backend, ids: &[u32], saes: &[Sae]) -> Result<Trace> {
    for s in saes {
        s.check(model)?;
    }
    let capture = Capture {
        residual: true,
        sites: saes
            .iter()
            .any(|s| s.transcoder || !matches!(s.site, Site::ResidPre | Site::ResidPost)),
        ..Capture::default()
    };
    Trace::run(model, backend, ids, capture, 1)
}

/// Every active feature of every token of `trace` (a [`clean_run`]), by activation, largest first;
/// the encoder runs on `backend`.
pub fn active_features(
    backend: &dyn Backend,
    trace: &Trace,
    sae: &Sae,
) -> Result<Vec<Vec<(usize, f32)>>> {
    Ok(sparse(
        &feature_activations(backend, trace, sae)?,
        sae.d_sae,
    ))
}

/// Every feature's activation at every token of `trace` (a [`clean_run`]), `[rows, d_sae]`
/// dense, as SAELens's `encode` gives them; the encoder runs on `backend`.
pub fn feature_activations(backend: &dyn Backend, trace: &Trace, sae: &Sae) -> Result<Vec<f32>> {
    let x = input_values(trace, sae)?;
    sae.encode_on(backend, &x)
}

/// Feature activations `[rows, d_sae]` as each row's nonzero (feature, activation) pairs,
/// largest first (ties: the lower feature first).
fn sparse(f: &[f32], d_sae: usize) -> Vec<Vec<(usize, f32)>> {
    f.chunks(d_sae)
        .map(|row| {
            let mut v: Vec<(usize, f32)> = row
                .iter()
                .enumerate()
                .filter(|(_, &a)| a != 0.0)
                .map(|(j, &a)| (j, a))
                .collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            v
        })
        .collect()
}

/// `values` (one row per position) in place of the SAE's site at every position (for hook_z,
/// one patch per head).
fn splice(sae: &Sae, values: &[f32], model: &Model) -> Vec<Intervention> {
    let rows = |c0: usize, w: usize| -> Vec<Vec<f32>> {
        values
            .chunks(sae.d_in)
            .map(|r| r[c0..c0 + w].to_vec())
            .collect()
    };
    if sae.site == Site::Head {
        let hd = model.spec.head_dim_at(sae.layer);
        return (0..model.spec.n_heads)
            .map(|h| Intervention {
                positions: PositionSet::All,
                values: Some(rows(h * hd, hd)),
                ..Intervention::new(Site::Head, sae.layer, Op::Patch).head(h)
            })
            .collect();
    }
    vec![Intervention {
        positions: PositionSet::All,
        values: Some(rows(0, sae.d_in)),
        ..Intervention::new(sae.site, sae.layer, Op::Patch)
    }]
}

fn ids_of(trace: &Trace) -> Vec<u32> {
    trace.tokens.iter().map(|t| t.id).collect()
}

/// Each SAE on its site of `clean` (a [`clean_run`]): the features of every token, and the run
/// again with the SAE's reconstruction spliced in for the spliced-in surprisal.
pub fn features(
    model: &Model,
    backend: &dyn Backend,
    clean: &Trace,
    saes: &[Sae],
    top: usize,
) -> Result<Vec<FeatureRun>> {
    let ids = ids_of(clean);
    let clean_bits = clean.total_bits();
    let mut out = Vec::with_capacity(saes.len());
    for sae in saes {
        // A transcoder reads the MLP's input and is scored against the MLP's output.
        let input = input_values(clean, sae)?;
        let x = site_values(clean, sae)?;
        let f = sae.encode_on(backend, &input)?;
        let recon = sae.reconstruct(&input, &f);
        let n = sae.d_in;
        let rows = x.len() / n;
        let all = sparse(&f, sae.d_sae);
        let l0: Vec<usize> = all.iter().map(Vec::len).collect();
        let features: Vec<Vec<(usize, f32)>> = all
            .into_iter()
            .map(|mut v| {
                v.truncate(top);
                v
            })
            .collect();
        let (mut sse, mut sq, mut sum) = (0f64, 0f64, vec![0f64; n]);
        for (xr, rr) in x.chunks(n).zip(recon.chunks(n)) {
            for ((&a, &b), s) in xr.iter().zip(rr).zip(sum.iter_mut()) {
                sse += ((a - b) as f64).powi(2);
                sq += (a as f64).powi(2);
                *s += a as f64;
            }
        }
        let t = rows.max(1) as f64;
        let var = sq / t - sum.iter().map(|s| (s / t).powi(2)).sum::<f64>();
        let spliced = Trace::run_with(
            model,
            backend,
            &ids,
            Capture::default(),
            1,
            &splice(sae, &recon, model),
        )?;
        out.push(FeatureRun {
            features,
            l0,
            reconstruction: Reconstruction {
                mse: sse / t,
                explained_variance: 1.0 - (sse / t) / var,
                spliced_bits: spliced.total_bits(),
                clean_bits,
            },
        });
    }
    Ok(out)
}

/// The run of `clean` (a [`clean_run`]) with features of `sae` clamped to values at every
/// position, the SAE's error term kept: the site's activation x becomes
/// `x + sum_j (v_j - f_j(x)) W_dec[j]`, so that only those features change (`v = 0` ablates one).
/// The clamps are feature interventions of the forward pass, as an interventions file gives them.
pub fn clamped(
    model: &Model,
    backend: &dyn Backend,
    clean: &Trace,
    sae: &Sae,
    clamps: &[(usize, f32)],
) -> Result<Trace> {
    sae.check(model)?;
    let mut list = Vec::with_capacity(clamps.len());
    for &(j, v) in clamps {
        if !v.is_finite() {
            return Err(PrismError::Input(format!(
                "feature {j}: the value {v} is not a finite number"
            )));
        }
        list.push(sae.intervention(j, Op::Set, v)?);
    }
    Trace::run_with(model, backend, &ids_of(clean), Capture::default(), 5, &list)
}

/// An interventions list as JSON (the `--interventions` file's text) made ready to run: parsed,
/// the SAEs its `feature` entries name read (paths relative to `base`), and the values of every
/// `patch` entry taken from its source run (`source_ids`, or `source_text` tokenized).
pub fn prepare_interventions(
    text: &str,
    base: &Path,
    model: &Model,
    backend: &dyn Backend,
) -> Result<Vec<Intervention>> {
    let mut list = crate::intervene::parse_list(text)?;
    resolve(&mut list, base, model)?;
    for iv in list
        .iter_mut()
        .filter(|iv| iv.op == Op::Patch && iv.values.is_none())
    {
        let ids = match (&iv.source_ids, &iv.source_text) {
            (Some(ids), _) => ids.clone(),
            (None, Some(t)) => model
                .tokenizer
                .as_ref()
                .ok_or_else(|| {
                    PrismError::Input(format!(
                        "{} has no tokenizer; give the patch's source as \"source_ids\"",
                        model.info.path.display()
                    ))
                })?
                .encode(t, false)?,
            (None, None) => {
                return Err(PrismError::Input(
                    "a \"patch\" intervention needs \"source_ids\" or \"source_text\" (the run to take values from)".into(),
                ))
            }
        };
        iv.values = Some(crate::patching::source_values(model, backend, &ids, iv)?);
    }
    Ok(list)
}

/// Reads the SAEs that the `feature` interventions of `list` name (paths relative to `base`),
/// each once, checks them against the model and fills in each intervention's encoder and layer.
pub fn resolve(list: &mut [Intervention], base: &Path, model: &Model) -> Result<()> {
    let mut read: Vec<(PathBuf, Arc<Sae>)> = Vec::new();
    for (i, iv) in list.iter_mut().enumerate() {
        if iv.site != Site::Feature || iv.encoder.is_some() {
            continue;
        }
        let (Some(path), Some(j)) = (&iv.sae, iv.feature) else {
            // validate() names what is missing.
            continue;
        };
        let path = base.join(path);
        let sae = match read.iter().find(|(p, _)| *p == path) {
            Some((_, s)) => s.clone(),
            None => {
                let s = Arc::new(Sae::load(&path)?);
                s.check(model)?;
                read.push((path.clone(), s.clone()));
                s
            }
        };
        if iv.layer != crate::intervene::NO_LAYER && iv.layer != sae.layer {
            return Err(PrismError::Input(format!(
                "intervention {i}: \"layer\" {} differs from the layer {} of the SAE {} ({}); leave \"layer\" out for a feature",
                iv.layer,
                sae.layer,
                path.display(),
                sae.hook
            )));
        }
        if j >= sae.d_sae {
            return Err(PrismError::Input(format!(
                "intervention {i}: feature {j} is out of range: {} has features 0..{}",
                path.display(),
                sae.d_sae - 1
            )));
        }
        iv.layer = sae.layer;
        iv.encoder = Some(Arc::new(sae.encoder(j)?));
    }
    Ok(())
}

impl Sae {
    /// The MLP norm's gain and bias that [`Sae::check`] took from the model, for
    /// [`SaeInput::MlpNormalized`].
    fn checked_norm(&self) -> Result<&(Vec<f32>, Option<Vec<f32>>)> {
        self.input_norm.get().ok_or_else(|| {
            PrismError::Backend(format!(
                "{}: the transcoder was not checked against the model",
                self.path.display()
            ))
        })
    }

    /// What a feature intervention on feature `j` (< d_sae) needs of this SAE. A transcoder reading
    /// `ln2.hook_normalized` gets the norm's gain and bias folded into its encoder, so that it
    /// reads the MLP's input as the pass has it: `W'[i] = W[i] / gain[i]`,
    /// `b' = b_enc - Σ_i W'[i] (bias[i] + gain[i] b_dec[i])`.
    pub fn encoder(&self, j: usize) -> Result<FeatureEncoder> {
        let (m, n) = (self.d_sae, self.d_in);
        // Under TopK the edit needs every feature's pre-activation (the whole encoder, shared),
        // else feature j's column.
        let (mut w_enc, mut b_enc) = match self.activation {
            Activation::TopK(_) => (self.w_enc.clone(), self.b_enc.clone()),
            _ => (
                Arc::new((0..n).map(|i| self.w_enc[i * m + j]).collect()),
                Arc::new(vec![self.b_enc[j]]),
            ),
        };
        let mut b_dec_in = self.apply_b_dec_to_input.then(|| self.b_dec.clone());
        let source = match self.input {
            SaeInput::Site => FeatureSource::Site,
            SaeInput::MlpIn => FeatureSource::MlpIn,
            SaeInput::ResidMid => FeatureSource::ResidMid,
            SaeInput::MlpNormalized => {
                let (gain, bias) = self.checked_norm()?;
                let (w, b) = (Arc::make_mut(&mut w_enc), Arc::make_mut(&mut b_enc));
                let k = b.len();
                for i in 0..n {
                    let shift = bias.as_ref().map_or(0.0, |b| b[i])
                        + b_dec_in.as_ref().map_or(0.0, |b| gain[i] * b[i]);
                    for (c, w) in w[i * k..(i + 1) * k].iter_mut().enumerate() {
                        *w /= gain[i];
                        b[c] -= *w * shift;
                    }
                }
                b_dec_in = None;
                FeatureSource::MlpIn
            }
        };
        let rule = match &self.activation {
            Activation::TopK(k) => FeatureRule::TopK(*k),
            Activation::JumpRelu(t) => FeatureRule::JumpRelu(t[j]),
            _ => FeatureRule::Relu,
        };
        let d_out = self.w_dec.len() / m.max(1);
        Ok(FeatureEncoder {
            site: self.site,
            layer: self.layer,
            feature: j,
            d_sae: m,
            w_enc,
            b_enc,
            b_dec_in: b_dec_in.map(Arc::new),
            rule,
            direction: self.w_dec[j * d_out..(j + 1) * d_out].to_vec(),
            source,
        })
    }

    /// A feature intervention on feature `j` at every position: `Set` clamps it to `value`,
    /// `Zero` ablates it, `Add` steers by `value` times its decoder direction.
    pub fn intervention(&self, j: usize, op: Op, value: f32) -> Result<Intervention> {
        if j >= self.d_sae {
            return Err(PrismError::Input(format!(
                "feature {j} is out of range: {} has features 0..{}",
                self.path.display(),
                self.d_sae - 1
            )));
        }
        let mut iv = Intervention::new(Site::Feature, self.layer, op);
        iv.sae = Some(self.path.display().to_string());
        iv.feature = Some(j);
        match op {
            Op::Set => iv.value = Some(value),
            Op::Add => iv.scale = Some(value),
            _ => {}
        }
        iv.encoder = Some(Arc::new(self.encoder(j)?));
        Ok(iv)
    }
}

impl Sae {
    /// Feature j's decoder direction `[d_in]`.
    pub fn direction(&self, j: usize) -> Option<&[f32]> {
        self.w_dec.get(j * self.d_in..(j + 1) * self.d_in)
    }

    /// The llama.cpp control-vector layer (`direction.N`, added at resid_post@N) that adds to this
    /// SAE's site, when there is one: resid_post@L is N = L, resid_pre@L is N = L - 1, mlp_out@L is
    /// N = L in a block with no norm after its MLP.
    pub fn control_layer(&self, model: &Model) -> Option<usize> {
        let s = &model.spec;
        let n = match self.site {
            Site::ResidPost => Some(self.layer),
            Site::ResidPre => self.layer.checked_sub(1),
            Site::MlpOut if !s.block.mlp.output && !s.block.mlp.residual && !s.block.parallel => {
                Some(self.layer)
            }
            Site::MlpAdded if !s.block.mlp.residual && !s.block.parallel => Some(self.layer),
            _ => None,
        }?;
        // llama.cpp applies direction.N only for 1 <= N < n_layers.
        (n >= 1 && n < s.n_layers).then_some(n)
    }
}
