//! `prism`: the command line (and, later, the desktop app) of Prism.

use prism_app::cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A chat template from a model file renders in a child process of this binary, under limits.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == prism_analysis::template::SANDBOX_ARG)
    {
        return ExitCode::from(prism_analysis::template::sandbox_main() as u8);
    }
    if let Ok(exe) = std::env::current_exe() {
        prism_analysis::template::use_sandbox(exe);
    }
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
    // `prism ... | head` ends quietly, as other command-line tools do, instead of failing to print.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    quiet_graphics_probe();
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

/// Vulkan's window-system layers print "XDG_RUNTIME_DIR is invalid or not set" on every adapter
/// probe when the variable is missing (servers, containers, CI). Prism draws no windows from the
/// command line, so it gives them a private folder instead of letting them print noise.
fn quiet_graphics_probe() {
    let valid = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .is_some_and(|d| d.is_dir());
    if valid {
        return;
    }
    let dir = std::env::temp_dir().join(format!("prism-xdg-{}", user_id()));
    if std::fs::create_dir_all(&dir).is_ok() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        // Called first thing in main, before any thread exists.
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
}

fn user_id() -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata("/proc/self") {
            return m.uid().to_string();
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "user".into())
}
