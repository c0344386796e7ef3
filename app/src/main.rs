//! `prism`: the command line (and, later, the desktop app) of Prism.

use prism_app::cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A panic is a bug, never an answer to bad input; report it as one and exit 1, not 101.
    // Panics contained by `prism_analysis::guard::guarded` (third-party parsers on bad files) unwind
    // to their guard and become ordinary errors.
    std::panic::set_hook(Box::new(|info| {
        if prism_analysis::guard::is_guarded() {
            return;
        }
        eprintln!("prism: internal error (a bug, please report it): {info}");
        std::process::exit(1);
    }));
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let bad_input = e
                .downcast_ref::<prism_analysis::PrismError>()
                .map(|p| p.is_bad_input())
                .unwrap_or(false)
                || e.downcast_ref::<cli::UsageError>().is_some();
            eprintln!("prism: {e:#}");
            if bad_input {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
