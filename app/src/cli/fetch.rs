//! `prism fetch-samples`: download the sample models with a progress bar.

use std::sync::atomic::AtomicBool;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use prism_analysis::samples::{self, Progress, Sample};

use super::UsageError;

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// Samples to fetch (default: all of them).
    pub names: Vec<String>,
}

pub fn fetch(a: FetchArgs) -> anyhow::Result<()> {
    let chosen: Vec<&Sample> = if a.names.is_empty() {
        samples::all().iter().collect()
    } else {
        a.names
            .iter()
            .map(|n| {
                samples::find(n).ok_or_else(|| {
                    UsageError(format!(
                        "unknown sample {n:?} (known: {})",
                        samples::names().join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?
    };
    for s in chosen {
        fetch_one(s)?;
    }
    Ok(())
}

pub fn fetch_one(s: &Sample) -> anyhow::Result<()> {
    let bar = ProgressBar::new(s.wheel_size.unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(s.name.clone());
    let cancel = AtomicBool::new(false);
    let mut on_progress = |p: Progress| match p {
        Progress::Started { total, .. } => {
            if let Some(t) = total {
                bar.set_length(t);
            }
            bar.set_message(format!("{} {}", s.project, s.version));
        }
        Progress::Downloaded { done, .. } => bar.set_position(done),
        Progress::Verifying => bar.set_message("verifying sha256"),
        Progress::Extracting => bar.set_message("unpacking"),
        Progress::Done { path } => bar.finish_with_message(format!("ready: {}", path.display())),
        Progress::AlreadyPresent { path } => {
            bar.finish_and_clear();
            eprintln!("{}: already present at {}", s.name, path.display());
        }
    };
    let result = samples::fetch(s, &mut on_progress, &cancel);
    if result.is_err() {
        bar.abandon();
    }
    result?;
    Ok(())
}
