//! Widgets the views share, apart from the views themselves: the layer x head grid, the background
//! run that fills it, and the token strip. Views use widgets; widgets never use views.

use egui::Color32;
use prism_analysis::figure::Colormap;

pub mod grid;
pub mod gridrun;
pub mod strip;

pub use prism_analysis::figure::build::show_token;

pub fn color32(map: Colormap, t: f64) -> Color32 {
    let c = map.at(t);
    Color32::from_rgb(c.0, c.1, c.2)
}

/// Readable text on a background: black on light colors, white on dark ones.
pub fn text_on(bg: Color32) -> Color32 {
    let c =
        prism_analysis::figure::strip::text_on(prism_analysis::figure::Rgb(bg.r(), bg.g(), bg.b()));
    Color32::from_rgb(c.0, c.1, c.2)
}
