//! Exporting the current view's figure (built in `analysis`, as the CLI builds it) as PNG or SVG,
//! with its data as CSV and JSON.

use std::path::{Path, PathBuf};

use prism_analysis::figure::Figure;

use super::PrismApp;

impl PrismApp {
    /// The current view's figure, for export.
    pub fn current_figure(&mut self) -> Option<Figure> {
        let i = self.current();
        self.with_view(i, |v, cx| v.figure(cx))
    }

    /// Every figure the current view shows (views with several panels have several).
    pub fn current_figures(&mut self) -> Vec<Figure> {
        let i = self.current();
        self.with_view(i, |v, cx| v.figures(cx))
    }

    /// Exports the current view's figures as `path` (svg or png) plus their data; a second panel
    /// goes to `STEM-2.EXT`, and so on. Returns the files written.
    pub fn export_to(&mut self, path: &Path) -> Result<Vec<PathBuf>, String> {
        let figs = self.current_figures();
        if figs.is_empty() {
            return Err("nothing to export in this view yet".into());
        }
        let mut files = Vec::new();
        for (i, fig) in figs.iter().enumerate() {
            let target = if i == 0 {
                path.to_path_buf()
            } else {
                let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                let ext = path.extension().unwrap_or_default().to_string_lossy();
                path.with_file_name(format!("{stem}-{}.{ext}", i + 1))
            };
            files.extend(fig.export(&target).map_err(|e| e.to_string())?);
        }
        self.last_export = Some(
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        );
        self.status = format!("saved {}", path.display());
        Ok(files)
    }

    /// PNG + SVG + data into `$PRISM_EXPORT_DIR` (or a temporary folder), named by view and time.
    pub(super) fn quick_export(&mut self) {
        let dir = std::env::var_os("PRISM_EXPORT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("prism-exports"));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            self.error = Some(format!("{}: {e}", dir.display()));
            return;
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let stem = format!("prism-{}-{stamp}", self.s.view);
        for ext in ["png", "svg"] {
            if let Err(e) = self.export_to(&dir.join(format!("{stem}.{ext}"))) {
                self.error = Some(e);
                return;
            }
        }
        self.status = format!("saved {} (PNG, SVG, CSV, JSON)", dir.join(&stem).display());
    }

    pub(super) fn export_dialog(&mut self, ext: &str) {
        let name = format!("prism-{}.{ext}", self.s.view);
        if let Some(path) = rfd::FileDialog::new()
            .set_file_name(&name)
            .add_filter(ext, &[ext])
            .save_file()
        {
            if let Err(e) = self.export_to(&path) {
                self.error = Some(e);
            }
        }
    }
}
