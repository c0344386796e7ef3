//! The published SAE layouts besides SAELens's own (which `Sae::load` reads itself): Gemma Scope 1
//! (`params.npz`) and 2 (`params.safetensors`), Llama Scope (`hyperparams.json`), EleutherAI
//! sparsify (`cfg.json` + `sae.safetensors`), each read as the field's own loader reads it.

use std::path::Path;
use std::sync::Arc;

use super::{bad, finite_tensor, npz, parse_hook, Activation, ArrayOf, Sae, SaeInput};
use crate::checkpoint::safetensors::SafetensorsCheckpoint;
use crate::error::{PrismError, Result};
use crate::intervene::Site;
use crate::weights::TensorSource;

/// A sparsify hookpoint (the module path, with or without the model's prefix) as (site, layer).
fn sparsify_hook(name: &str) -> Option<(Site, usize)> {
    if name == "embed_tokens" || name.ends_with(".embed_tokens") {
        return Some((Site::ResidPre, 0));
    }
    let rest = &name[name
        .rfind("layers.")
        .map(|i| i + 7)
        .or_else(|| name.rfind("h.").map(|i| i + 2))?..];
    let (layer, module) = match rest.split_once('.') {
        Some((l, m)) => (l, Some(m)),
        None => (rest, None),
    };
    let layer = layer.parse().ok()?;
    let site = match module {
        None => Site::ResidPost,
        Some("mlp") => Site::MlpOut,
        Some("self_attn" | "attn" | "attention") => Site::AttnOut,
        _ => return None,
    };
    Some((site, layer))
}

impl Sae {
    /// Gemma Scope 2's layout (a folder `<site>/layer_<L>_width_<W>_l0_<size>` with
    /// `params.safetensors`: `w_enc` `[d_in, d_sae]`, `w_dec`, `b_enc`, `b_dec`, `threshold`, and an
    /// optional `config.json` naming the HF hook point), JumpReLU without `b_dec` subtracted from
    /// the input, as SAELens's Gemma Scope 2 loader reads it. Residual-stream SAEs only for now.
    pub(super) fn load_gemma_scope_2(dir: &Path) -> Result<Sae> {
        let weights_path = dir.join("params.safetensors");
        let cfg_path = dir.join("config.json");
        let cfg: Option<serde_json::Value> = match std::fs::read_to_string(&cfg_path) {
            Ok(t) => Some(
                serde_json::from_str(&t)
                    .map_err(|e| bad(&cfg_path, format!("config.json: {e}")))?,
            ),
            Err(_) => None,
        };
        if let Some(a) = cfg
            .as_ref()
            .and_then(|c| c.get("architecture"))
            .and_then(|v| v.as_str())
            .filter(|a| *a != "jump_relu")
        {
            return Err(bad(
                &cfg_path,
                format!("config.json: architecture {a:?}; Gemma Scope 2 SAEs are jump_relu"),
            ));
        }
        // The hook: config.json's HF hook point, else the folder's names (as SAELens infers it).
        let hook_point = cfg
            .as_ref()
            .and_then(|c| c.get("hf_hook_point_in"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let names = dir.to_string_lossy().to_string();
        let layer_of = |s: &str| -> Option<usize> {
            let rest = &s[s.rfind("layer_")? + 6..];
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        };
        let folder = dir.file_name().map(|f| f.to_string_lossy().to_string());
        let kind = match &hook_point {
            Some(p) => {
                let rest = p.strip_prefix("model.layers.").unwrap_or("");
                let (l, module) = rest.split_once('.').unwrap_or((rest, ""));
                let kind = match module {
                    "output" => Some("resid_post"),
                    "self_attn.o_proj.input" => Some("attn_out"),
                    "post_feedforward_layernorm.output" => Some("mlp_out"),
                    "pre_feedforward_layernorm.output" => Some("transcoder"),
                    _ => None,
                };
                kind.zip(l.parse::<usize>().ok())
            }
            None => {
                let parent = dir.parent().map(|p| p.to_string_lossy().to_string());
                let has = |k: &str| {
                    folder.as_deref().is_some_and(|f| f.contains(k))
                        || parent.as_deref().is_some_and(|f| f.ends_with(k))
                };
                ["transcoder", "resid_post", "attn_out", "mlp_out"]
                    .into_iter()
                    .find(|k| has(k))
                    .zip(layer_of(&names))
            }
        };
        if names.contains("clt") && kind.is_some_and(|(k, _)| k == "transcoder") {
            return Err(bad(
                dir,
                "a cross-layer transcoder (clt): each of its features writes to every later layer; Prism reads single-layer transcoders",
            ));
        }
        let Some((kind, layer)) = kind else {
            let what = hook_point.unwrap_or_else(|| names.clone());
            return Err(bad(
                dir,
                format!("Gemma Scope 2 hook {what:?}: expected model.layers.L.output, .self_attn.o_proj.input, .post_feedforward_layernorm.output or .pre_feedforward_layernorm.output (folders resid_post/, attn_out/, mlp_out/, transcoder/ with layer_L_...)"),
            ));
        };
        let src = SafetensorsCheckpoint::open(vec![weights_path.clone()])?;
        if kind == "transcoder" {
            // The MLP's input after pre_feedforward_layernorm, to the MLP's output after
            // post_feedforward_layernorm, as SAELens's loader maps them.
            let mut t = super::circuit_tracer::from_safetensors(&weights_path, layer)?;
            t.path = dir.to_path_buf();
            t.input = SaeInput::MlpIn;
            t.site = Site::MlpAdded;
            t.hook = format!("blocks.{layer}.mlp.hook_in -> blocks.{layer}.hook_mlp_out");
            return Ok(t);
        }
        if src.info("affine_skip_connection").is_some() {
            return Err(bad(
                &weights_path,
                format!("affine_skip_connection: a transcoder's skip connection, in a {kind} SAE"),
            ));
        }
        let shape = src.info("w_enc").map(|i| i.shape).ok_or_else(|| {
            bad(
                &weights_path,
                "no w_enc tensor (Gemma Scope 2 params.safetensors)",
            )
        })?;
        let [d_in, d_sae] = shape[..] else {
            return Err(bad(
                &weights_path,
                format!("w_enc has shape {shape:?}, expected [d_in, d_sae]"),
            ));
        };
        let hook = match kind {
            "resid_post" => format!("blocks.{layer}.hook_resid_post"),
            "attn_out" => format!("blocks.{layer}.attn.hook_z"),
            _ => format!("blocks.{layer}.hook_mlp_out"),
        };
        let tensor = |name: &str, shape: &[usize]| finite_tensor(&src, &weights_path, name, shape);
        Sae::gemma_scope(dir, &hook, [d_in, d_sae], &|name, shape| {
            tensor(&name.to_lowercase(), shape)
        })
    }

    /// A Gemma Scope SAE on `hook` (a TransformerLens hook): JumpReLU, `b_dec` not subtracted
    /// from the input, its five arrays by SAELens's names (`W_enc`, `b_enc`, `W_dec`, `b_dec`,
    /// `threshold`) from `tensor`.
    fn gemma_scope(
        dir: &Path,
        hook: &str,
        [d_in, d_sae]: [usize; 2],
        tensor: &ArrayOf<'_>,
    ) -> Result<Sae> {
        let (site, layer) =
            parse_hook(hook).ok_or_else(|| bad(dir, format!("hook {hook:?} names no site")))?;
        Ok(Sae {
            path: dir.to_path_buf(),
            hook: hook.to_string(),
            site,
            layer,
            d_in,
            d_sae,
            architecture: "jumprelu".into(),
            activation: Activation::JumpRelu(tensor("threshold", &[d_sae])?),
            apply_b_dec_to_input: false,
            w_enc: Arc::new(tensor("W_enc", &[d_in, d_sae])?),
            b_enc: Arc::new(tensor("b_enc", &[d_sae])?),
            w_dec: tensor("W_dec", &[d_sae, d_in])?,
            b_dec: tensor("b_dec", &[d_in])?,
            w_skip: None,
            transcoder: false,
            input: SaeInput::Site,
            input_norm: Default::default(),
            encoder_t: Default::default(),
        })
    }

    /// EleutherAI sparsify's layout (`cfg.json` with `k`, `activation`, `transcode`,
    /// `skip_connection`, `d_in`; `sae.safetensors` with `encoder.weight` `[latents, d_in]`,
    /// `encoder.bias`, `W_dec` `[latents, d_in]`, `b_dec`, optional `W_skip` `[d_in, d_in]`), as
    /// sparsify's own `SparseCoder.load_from_disk` reads it: TopK of the ReLU'd pre-activations,
    /// `b_dec` subtracted from the input. The hook is the folder's name, sparsify's hookpoint
    /// (`layers.L` the block's output, `layers.L.mlp`, `layers.L.self_attn`, `embed_tokens`).
    pub(super) fn load_sparsify(dir: &Path) -> Result<Sae> {
        let cfg_path = dir.join("cfg.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| PrismError::Io {
            path: cfg_path.clone(),
            source: e,
        })?;
        let cfg: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(&cfg_path, format!("cfg.json: {e}")))?;
        let flag = |k: &str| cfg.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
        let transcoder = flag("transcode");
        if let Some(a) = cfg
            .get("activation")
            .and_then(|v| v.as_str())
            .filter(|a| *a != "topk")
        {
            return Err(bad(
                &cfg_path,
                format!("cfg.json: activation {a:?}; Prism reads sparsify's topk SAEs"),
            ));
        }
        let size = |k: &str| -> Result<usize> {
            cfg.get(k)
                .and_then(|v| v.as_u64())
                .filter(|x| (1..=1 << 27).contains(x))
                .map(|x| x as usize)
                .ok_or_else(|| bad(&cfg_path, format!("cfg.json: {k:?} is not a size")))
        };
        let d_in = size("d_in")?;
        let weights_path = dir.join("sae.safetensors");
        let src = SafetensorsCheckpoint::open(vec![weights_path.clone()])?;
        let d_sae = src
            .info("encoder.weight")
            .and_then(|i| i.shape.first().copied())
            .ok_or_else(|| {
                bad(
                    &weights_path,
                    "no encoder.weight tensor (sparsify sae.safetensors)",
                )
            })?;
        let k = size("k")?;
        if k > d_sae {
            return Err(bad(
                &cfg_path,
                format!("cfg.json: k {k} is more than the {d_sae} latents"),
            ));
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let (site, layer) = sparsify_hook(&name).ok_or_else(|| {
            bad(
                dir,
                format!("the folder's name {name:?} is not a sparsify hookpoint Prism maps (layers.L, layers.L.mlp, layers.L.self_attn, embed_tokens)"),
            )
        })?;
        if transcoder && site != Site::MlpOut {
            return Err(bad(
                dir,
                format!("a transcoder on {name:?}: Prism reads MLP transcoders (layers.L.mlp: the MLP's normalized input to its output)"),
            ));
        }
        let tensor = |name: &str, shape: &[usize]| finite_tensor(&src, &weights_path, name, shape);
        let enc = tensor("encoder.weight", &[d_sae, d_in])?;
        let mut w_enc = vec![0f32; d_in * d_sae];
        for j in 0..d_sae {
            for i in 0..d_in {
                w_enc[i * d_sae + j] = enc[j * d_in + i];
            }
        }
        let w_skip = match (flag("skip_connection"), src.info("W_skip").is_some()) {
            (true, true) => Some(tensor("W_skip", &[d_in, d_in])?),
            (false, false) => None,
            (true, false) => {
                return Err(bad(
                    &weights_path,
                    "cfg.json says skip_connection, but there is no W_skip tensor",
                ))
            }
            (false, true) => {
                return Err(bad(
                    &weights_path,
                    "W_skip is there, but cfg.json's skip_connection is not true",
                ))
            }
        };
        Ok(Sae {
            path: dir.to_path_buf(),
            hook: name.clone(),
            site,
            layer,
            d_in,
            d_sae,
            architecture: "topk".into(),
            activation: Activation::TopK(k),
            // sparsify subtracts b_dec from an autoencoder's input, not from a transcoder's.
            apply_b_dec_to_input: !transcoder,
            w_enc: Arc::new(w_enc),
            b_enc: Arc::new(tensor("encoder.bias", &[d_sae])?),
            w_dec: tensor("W_dec", &[d_sae, d_in])?,
            b_dec: tensor("b_dec", &[d_in])?,
            w_skip,
            transcoder,
            input: if transcoder {
                SaeInput::MlpIn
            } else {
                SaeInput::Site
            },
            input_norm: Default::default(),
            encoder_t: Default::default(),
        })
    }

    /// Llama Scope's layout (`hyperparams.json` + `checkpoints/final.safetensors` with
    /// `encoder.weight` `[d_sae, d_in]`, `encoder.bias`, `decoder.weight` `[d_in, d_sae]`,
    /// `decoder.bias`), as SAELens reads it: JumpReLU with the scalar `jump_relu_threshold`, no
    /// `b_dec` subtracted from the input, and the dataset-wise input norm folded into the weights
    /// (f = sqrt(d_model) / dataset_average_activation_norm.in: W_enc times f, W_dec and b_dec over
    /// f, the threshold times f, as SAELens's loader and `fold_activation_norm_scaling_factor` do).
    pub(super) fn load_llama_scope(dir: &Path) -> Result<Sae> {
        let cfg_path = dir.join("hyperparams.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| PrismError::Io {
            path: cfg_path.clone(),
            source: e,
        })?;
        let cfg: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| bad(&cfg_path, format!("hyperparams.json: {e}")))?;
        let num = |k: &str| -> Result<f64> {
            let mut v = &cfg;
            for part in k.split('.') {
                v = v
                    .get(part)
                    .ok_or_else(|| bad(&cfg_path, format!("hyperparams.json: no {k:?}")))?;
            }
            v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                bad(
                    &cfg_path,
                    format!("hyperparams.json: {k:?} is not a finite number"),
                )
            })
        };
        let size = |k: &str| -> Result<usize> {
            let x = num(k)?;
            if x < 1.0 || x.fract() != 0.0 || x > 1e8 {
                return Err(bad(
                    &cfg_path,
                    format!("hyperparams.json: {k:?} = {x} is not a size"),
                ));
            }
            Ok(x as usize)
        };
        let (d_in, d_sae) = (size("d_model")?, size("d_sae")?);
        let hook = cfg
            .get("hook_point_in")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad(&cfg_path, "hyperparams.json: no \"hook_point_in\""))?
            .to_string();
        if let Some(out) = cfg.get("hook_point_out").and_then(|v| v.as_str()) {
            if out != hook {
                return Err(bad(
                    &cfg_path,
                    format!("hyperparams.json: hook_point_out {out:?} differs from hook_point_in {hook:?}: a transcoder; Llama Scope transcoders are not read yet"),
                ));
            }
        }
        let (site, layer) = parse_hook(&hook).ok_or_else(|| {
            bad(
                &cfg_path,
                format!("hyperparams.json: hook_point_in {hook:?} names no site Prism knows (blocks.L.hook_resid_pre/post, hook_mlp_out, hook_attn_out)"),
            )
        })?;
        let norm_in = num("dataset_average_activation_norm.in")?;
        if norm_in <= 0.0 {
            return Err(bad(
                &cfg_path,
                "hyperparams.json: dataset_average_activation_norm.in must be positive",
            ));
        }
        let f = ((d_in as f64).sqrt() / norm_in) as f32;
        let theta = num("jump_relu_threshold")? as f32 * f;
        let weights_path = dir.join("checkpoints").join("final.safetensors");
        let src = SafetensorsCheckpoint::open(vec![weights_path.clone()])?;
        let tensor = |name: &str, shape: &[usize]| finite_tensor(&src, &weights_path, name, shape);
        let enc = tensor("encoder.weight", &[d_sae, d_in])?;
        let dec = tensor("decoder.weight", &[d_in, d_sae])?;
        let mut w_enc = vec![0f32; d_in * d_sae];
        for j in 0..d_sae {
            for i in 0..d_in {
                w_enc[i * d_sae + j] = enc[j * d_in + i] * f;
            }
        }
        let mut w_dec = vec![0f32; d_sae * d_in];
        for i in 0..d_in {
            for j in 0..d_sae {
                w_dec[j * d_in + i] = dec[i * d_sae + j] / f;
            }
        }
        let b_dec: Vec<f32> = tensor("decoder.bias", &[d_in])?
            .iter()
            .map(|b| b / f)
            .collect();
        Ok(Sae {
            path: dir.to_path_buf(),
            hook,
            site,
            layer,
            d_in,
            d_sae,
            architecture: "jumprelu".into(),
            activation: Activation::JumpRelu(vec![theta; d_sae]),
            apply_b_dec_to_input: false,
            w_enc: Arc::new(w_enc),
            b_enc: Arc::new(tensor("encoder.bias", &[d_sae])?),
            w_dec,
            b_dec,
            w_skip: None,
            transcoder: false,
            input: SaeInput::Site,
            input_norm: Default::default(),
            encoder_t: Default::default(),
        })
    }

    /// Gemma Scope 1's layout (`gemma-scope-<size>-pt-res/layer_<L>/width_<W>/average_l0_<N>/
    /// params.npz` with `W_enc` `[d_in, d_sae]`, `W_dec`, `b_enc`, `b_dec`, `threshold`), JumpReLU
    /// without `b_dec` subtracted from the input, as SAELens's Gemma Scope loader reads it. The
    /// npz is read by Prism's own bounds-checked reader (uncompressed zip of .npy arrays; nothing
    /// is unpickled). Residual-stream SAEs (`-res` releases) only for now.
    pub(super) fn load_gemma_scope_1(dir: &Path) -> Result<Sae> {
        let path = dir.join("params.npz");
        let names = dir.to_string_lossy().to_string();
        let layer = names
            .rfind("layer_")
            .map(|i| &names[i + 6..])
            .map(|r| {
                r.chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect::<String>()
            })
            .and_then(|d| d.parse::<usize>().ok());
        if let (Some(layer), true) = (layer, names.contains("-transcoders")) {
            // Gemma Scope's transcoders read ln2.hook_normalized and write hook_mlp_out, as
            // circuit-tracer's Gemma config has them.
            let mut t = super::circuit_tracer::gemma_scope_npz(&path, layer)?;
            t.path = dir.to_path_buf();
            t.hook = format!("blocks.{layer}.ln2.hook_normalized -> blocks.{layer}.hook_mlp_out");
            return Ok(t);
        }
        // The release names the hook, as SAELens's loader reads it.
        let release = ["-res", "-mlp", "-att"]
            .into_iter()
            .find(|r| names.contains(&format!("{r}/")) || names.contains(&format!("{r}-")));
        let (Some(layer), Some(release)) = (layer, release) else {
            return Err(bad(
                dir,
                "a Gemma Scope 1 SAE whose path names no release and layer (gemma-scope-*-res/, -mlp/, -att/ or -transcoders/, then layer_L/...)",
            ));
        };
        if names.contains("embedding") {
            return Err(bad(
                dir,
                "a Gemma Scope embedding SAE: Prism reads the layers' SAEs (hook_embed is not a site)",
            ));
        }
        let hook = match release {
            "-res" => format!("blocks.{layer}.hook_resid_post"),
            "-mlp" => format!("blocks.{layer}.hook_mlp_out"),
            _ => format!("blocks.{layer}.attn.hook_z"),
        };
        let arrays = npz::read(&path)?;
        let shape = npz::shape_of(&arrays, "W_enc").ok_or_else(|| bad(&path, "no W_enc array"))?;
        let [d_in, d_sae] = shape[..] else {
            return Err(bad(
                &path,
                format!("W_enc has shape {shape:?}, expected [d_in, d_sae]"),
            ));
        };
        let take = |name: &str, shape: &[usize]| npz::take(&arrays, &path, name, Some(shape));
        Sae::gemma_scope(dir, &hook, [d_in, d_sae], &take)
    }
}
