//! `prism features`: a sparse autoencoder's features of every token of a text, with the
//! reconstruction's quality (SAELens's MSE and explained variance, the spliced-in surprisal).

use clap::Args;
use prism_analysis::backend;
use prism_analysis::sae::{self, Sae};
use prism_analysis::trace::Trace;
use serde_json::json;

use super::{load_model, read_input, BackendArg, ModelArg, TextInput, UsageError};

#[derive(Args, Debug)]
pub struct FeaturesArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// An SAE folder in SAELens's format (cfg.json + sae_weights.safetensors); repeat for several
    /// (one per layer, say).
    #[arg(long, required = true)]
    pub sae: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub input: TextInput,
    #[command(flatten)]
    pub backend: BackendArg,
    /// Prepend the BOS token even if the model's tokenizer settings do not.
    #[arg(long)]
    pub bos: bool,
    /// How many features to show per token.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub top: u32,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn features(a: FeaturesArgs) -> anyhow::Result<()> {
    let model = load_model(&a.model.model)?;
    if !model.spec.causal {
        return Err(UsageError(format!(
            "{} is an encoder: the spliced-in loss needs next-token predictions",
            model.info.path.display()
        ))
        .into());
    }
    let saes: Vec<Sae> = a
        .sae
        .iter()
        .map(|p| Sae::load(p))
        .collect::<Result<_, _>>()?;
    for s in &saes {
        s.check(&model)?;
    }
    let (ids, _) = read_input(&a.input, &model, a.bos)?;
    backend::check_ids(&model, &ids)?;
    if ids.len() < 2 {
        return Err(UsageError(
            "the text needs at least two tokens: the first one is not predicted".into(),
        )
        .into());
    }
    let (b, notes) = backend::create(&model, a.backend.backend)?;
    for n in &notes {
        eprintln!("prism: {n}");
    }
    let runs = sae::features(&model, b.as_ref(), &ids, &saes, a.top as usize)?;
    let plain = Trace::run(&model, b.as_ref(), &ids, Default::default(), 1)?;
    let tokens = &plain.tokens;
    if a.json {
        let one = |s: &Sae, r: &sae::FeatureRun| {
            json!({
                "sae": {"path": s.path, "hook": s.hook, "site": s.site.name(), "layer": s.layer,
                        "architecture": s.architecture, "d_in": s.d_in, "d_sae": s.d_sae},
                "features": r.features.iter().map(|f| f.iter().map(|(id, act)| json!({"id": id, "act": act})).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "l0": r.l0,
                "reconstruction": r.reconstruction,
            })
        };
        let v = if saes.len() == 1 {
            let mut v = one(&saes[0], &runs[0]);
            v["tokens"] = serde_json::to_value(tokens)?;
            v["backend"] = json!(plain.backend);
            v
        } else {
            json!({
                "tokens": tokens,
                "backend": plain.backend,
                "runs": saes.iter().zip(&runs).map(|(s, r)| one(s, r)).collect::<Vec<_>>(),
            })
        };
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    for (s, r) in saes.iter().zip(&runs) {
        let rc = &r.reconstruction;
        println!(
            "{} ({} {}@{}, {} features of {}): MSE {:.4}, explained variance {:.4}, {:.2} bits spliced in against {:.2} clean ({:+.2})",
            s.path.display(),
            s.architecture,
            s.site.name(),
            s.layer,
            s.d_sae,
            s.d_in,
            rc.mse,
            rc.explained_variance,
            rc.spliced_bits,
            rc.clean_bits,
            rc.spliced_bits - rc.clean_bits
        );
        for (i, (t, f)) in tokens.iter().zip(&r.features).enumerate() {
            let shown: Vec<String> = f.iter().map(|(id, act)| format!("{id} {act:.3}")).collect();
            println!(
                "{i:>5}  {:<18} {:>4} active  {}",
                format!("{:?}", t.text),
                r.l0[i],
                shown.join(", ")
            );
        }
    }
    Ok(())
}
