//! `prism gui --screenshot out.png`: wait until the view shows its result (the worked example),
//! let the layout settle for a few frames, save the window as PNG, and close.

use std::path::PathBuf;
use std::time::Duration;

use super::PrismApp;

pub struct Screenshot {
    path: Option<PathBuf>,
    frames: u32,
    sent: bool,
}

impl Screenshot {
    pub fn new(path: Option<PathBuf>) -> Screenshot {
        Screenshot {
            path,
            frames: 0,
            sent: false,
        }
    }
}

impl PrismApp {
    pub(super) fn screenshot_step(&mut self, ctx: &egui::Context) {
        let Some(path) = self.screenshot.path.clone() else {
            return;
        };
        if self.screenshot.sent {
            return;
        }
        let i = self.current();
        let view_ready = self.loaded.is_some() && self.with_view(i, |v, cx| v.ready(cx));
        let ready = view_ready && self.loading.is_none();
        let failed = self.error.is_some() && !self.busy() && self.loading.is_none();
        if !(ready || failed) {
            ctx.request_repaint_after(Duration::from_millis(100));
            return;
        }
        // A few frames for layout to settle (textures, plots) before the picture.
        self.screenshot.frames += 1;
        if self.screenshot.frames < 5 {
            ctx.request_repaint();
            return;
        }
        self.screenshot.sent = true;
        let ctx2 = ctx.clone();
        ctx.request_screenshot(move |image| {
            match save_png(&path, &image) {
                Ok(()) => eprintln!("prism: screenshot saved to {}", path.display()),
                Err(e) => eprintln!("prism: cannot save the screenshot: {e}"),
            }
            ctx2.send_viewport_cmd(egui::ViewportCommand::Close);
        });
        ctx.request_repaint();
    }
}

fn save_png(path: &std::path::Path, image: &egui::ColorImage) -> Result<(), String> {
    let [w, h] = image.size;
    let mut rgba = Vec::with_capacity(w * h * 4);
    for p in &image.pixels {
        rgba.extend_from_slice(&p.to_array());
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, w as u32, h as u32);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().map_err(|e| e.to_string())?;
        wr.write_image_data(&rgba).map_err(|e| e.to_string())?;
    }
    prism_analysis::figure::write_atomic(path, &bytes).map_err(|e| e.to_string())
}
