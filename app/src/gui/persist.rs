//! What survives a restart: `state.json` in the user's config folder, read when the app starts
//! and written when it closes. Unknown or corrupt state is ignored, never fatal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::PrismApp;

#[derive(Serialize, Deserialize)]
#[serde(default)]
pub struct Persisted {
    pub recent: Vec<String>,
    pub last_model: Option<String>,
    pub prompt: String,
    /// The id of the view shown.
    pub view: String,
    pub dark: bool,
    pub bos: bool,
    /// Each view's own settings, by view id.
    pub views: BTreeMap<String, serde_json::Value>,
}

impl Default for Persisted {
    fn default() -> Self {
        Persisted {
            recent: Vec::new(),
            last_model: None,
            prompt: "Purple is a mix of red and blue. The sky at dusk turned orange, then violet."
                .into(),
            view: "text".into(),
            dark: true,
            bos: false,
            views: BTreeMap::new(),
        }
    }
}

/// Where the app keeps its state: `$PRISM_STATE_DIR/state.json`, else the user's config folder.
pub fn state_path() -> Option<PathBuf> {
    let dir = match std::env::var_os("PRISM_STATE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => match std::env::var_os("XDG_CONFIG_HOME") {
            Some(d) if !d.is_empty() => PathBuf::from(d).join("prism"),
            _ => PathBuf::from(std::env::var_os("HOME")?)
                .join(".config")
                .join("prism"),
        },
    };
    Some(dir.join("state.json"))
}

/// The saved state, or `None` when there is none or it cannot be read (a corrupt file is ignored).
pub fn load_state(path: &Path) -> Option<Persisted> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!(
                "prism: ignoring the unreadable saved state {} ({e})",
                path.display()
            );
            None
        }
    }
}

/// Writes the state atomically (temporary file, then rename).
pub fn save_state(path: &Path, s: &Persisted) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let json = serde_json::to_vec_pretty(s).map_err(|e| e.to_string())?;
    prism_analysis::figure::write_atomic(path, &json).map_err(|e| e.to_string())
}

impl PrismApp {
    /// The state as it would be saved now (every view's settings included).
    pub fn snapshot_state(&mut self) -> &Persisted {
        for v in &self.views {
            let value = v.save();
            if !value.is_null() {
                self.s.views.insert(v.id().to_string(), value);
            }
        }
        &self.s
    }

    /// Writes `state.json`, when this app was started with the saved state.
    pub fn save_now(&mut self) {
        if !self.persist {
            return;
        }
        let Some(p) = state_path() else { return };
        let s = self.snapshot_state();
        if let Err(e) = save_state(&p, s) {
            eprintln!("prism: cannot save the app state: {e}");
        }
    }
}
