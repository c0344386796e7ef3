//! The views of the desktop app, one file each, all reading the same shared state.

pub mod attention;
pub mod colors;
pub mod embeddings;
pub mod lens;
pub mod text;

use egui::Color32;
use prism_analysis::figure::Colormap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum View {
    Text,
    Attention,
    Lens,
    Embeddings,
    Colors,
}

impl View {
    pub const ALL: [View; 5] = [
        View::Text,
        View::Attention,
        View::Lens,
        View::Embeddings,
        View::Colors,
    ];

    pub fn label(self) -> &'static str {
        match self {
            View::Text => "Text",
            View::Attention => "Attention",
            View::Lens => "Logit lens",
            View::Embeddings => "Embeddings",
            View::Colors => "Color study",
        }
    }

    pub fn from_name(name: &str) -> Option<View> {
        match name {
            "text" => Some(View::Text),
            "attention" => Some(View::Attention),
            "lens" => Some(View::Lens),
            "embeddings" => Some(View::Embeddings),
            "colors" => Some(View::Colors),
            _ => None,
        }
    }
}

pub fn color32(map: Colormap, t: f64) -> Color32 {
    let c = map.at(t);
    Color32::from_rgb(c.0, c.1, c.2)
}

/// Readable text on a background: black on light colors, white on dark ones.
pub fn text_on(bg: Color32) -> Color32 {
    let l = 0.299 * bg.r() as f32 + 0.587 * bg.g() as f32 + 0.114 * bg.b() as f32;
    if l > 140.0 {
        Color32::BLACK
    } else {
        Color32::WHITE
    }
}

/// A token as it should appear on screen: visible whitespace.
pub fn show_token(s: &str) -> String {
    s.replace('\n', "↵").replace('\t', "⇥").replace(' ', "·")
}
