//! Drawing a [`Figure`] with plotters: SVG into a string, PNG into bytes. The font (DejaVu Sans) is
//! compiled into the binary, so a PNG looks the same on every machine.

use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use super::{Colormap, Figure, FigureKind, Rgb};
use crate::error::{PrismError, Result};

pub static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FONT: &str = "sans-serif";

fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TTF compiled in; a failure here would only lose text, not crash.
        let _ = register_font(FONT, FontStyle::Normal, FONT_BYTES);
    });
}

fn color(c: Rgb) -> RGBColor {
    RGBColor(c.0, c.1, c.2)
}

fn err<E: std::fmt::Debug>(e: E) -> PrismError {
    PrismError::Backend(format!("drawing the figure failed: {e:?}"))
}

pub fn to_svg(fig: &Figure, width: u32, height: u32) -> Result<String> {
    ensure_font();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        draw(&root, fig)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

pub fn to_png(fig: &Figure, width: u32, height: u32) -> Result<Vec<u8>> {
    ensure_font();
    let mut rgb = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        draw(&root, fig)?;
        root.present().map_err(err)?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(err)?;
        w.write_image_data(&rgb).map_err(err)?;
    }
    Ok(png_bytes)
}

fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (-1.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 1.0, hi + 1.0);
    }
    let pad = (hi - lo) * 0.08;
    (lo - pad, hi + pad)
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, fig: &Figure) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let (_, height) = root.dim_in_pixel();
    let notes_px = (fig.notes.len() as u32 * 18 + 8).min(height / 3);
    let (plot, notes) = root.split_vertically(height - notes_px);
    for (i, n) in fig.notes.iter().enumerate() {
        notes
            .draw(&Text::new(
                n.clone(),
                (16, 4 + 18 * i as i32),
                (FONT, 13).into_font().color(&RGBColor(80, 80, 80)),
            ))
            .map_err(err)?;
    }
    match &fig.kind {
        FigureKind::Scatter { points } => {
            let (x0, x1) = padded_range(points.iter().map(|p| p.x));
            let (y0, y1) = padded_range(points.iter().map(|p| p.y));
            let mut chart = ChartBuilder::on(&plot)
                .caption(&fig.title, (FONT, 22))
                .margin(16)
                .x_label_area_size(44)
                .y_label_area_size(56)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc(&fig.x_label)
                .y_desc(&fig.y_label)
                .label_style((FONT, 13))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(err)?;
            chart
                .draw_series(points.iter().map(|p| {
                    EmptyElement::at((p.x, p.y))
                        + Circle::new((0, 0), 6, color(p.color).filled())
                        + Circle::new((0, 0), 6, RGBColor(60, 60, 60).stroke_width(1))
                        + Text::new(p.label.clone(), (8, -8), (FONT, 13).into_font())
                }))
                .map_err(err)?;
        }
        FigureKind::Heatmap {
            row_labels,
            col_labels,
            values,
            range,
            colormap,
        } => {
            let (w, _) = plot.dim_in_pixel();
            let (main, bar) = plot.split_horizontally(w.saturating_sub(90));
            let (nr, nc) = (row_labels.len(), col_labels.len());
            let longest = row_labels
                .iter()
                .chain(col_labels)
                .map(|l| l.chars().count())
                .max()
                .unwrap_or(4)
                .min(28) as u32;
            let label_px = 7 * longest + 20;
            let mut chart = ChartBuilder::on(&main)
                .caption(&fig.title, (FONT, 22))
                .margin(16)
                .x_label_area_size(label_px)
                .y_label_area_size(label_px)
                .build_cartesian_2d(0.0..nc as f64, 0.0..nr as f64)
                .map_err(err)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(0)
                .y_labels(0)
                .x_desc(&fig.x_label)
                .y_desc(&fig.y_label)
                .draw()
                .map_err(err)?;
            let (lo, hi) = *range;
            let t = |v: f64| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
            chart
                .draw_series(values.iter().enumerate().flat_map(|(i, row)| {
                    let y = (nr - 1 - i) as f64;
                    row.iter().enumerate().map(move |(j, &v)| {
                        // Not applicable (NaN): gray, never a color of the scale.
                        let fill = if v.is_nan() {
                            RGBColor(200, 200, 200).filled()
                        } else {
                            color(colormap.at(t(v))).filled()
                        };
                        Rectangle::new([(j as f64, y), (j as f64 + 1.0, y + 1.0)], fill)
                    })
                }))
                .map_err(err)?;
            // Labels at cell centres, drawn on the whole area so the plot does not clip them.
            let base = main.get_base_pixel();
            let font = (FONT, 12).into_font();
            for (i, l) in row_labels.iter().enumerate() {
                let (px, py) = chart.backend_coord(&(0.0, (nr - 1 - i) as f64 + 0.5));
                let style = TextStyle::from(font.clone()).pos(Pos::new(HPos::Right, VPos::Center));
                main.draw(&Text::new(l.clone(), (px - base.0 - 6, py - base.1), style))
                    .map_err(err)?;
            }
            for (j, l) in col_labels.iter().enumerate() {
                let (px, py) = chart.backend_coord(&(j as f64 + 0.5, 0.0));
                let style = TextStyle::from(font.clone().transform(FontTransform::Rotate90))
                    .pos(Pos::new(HPos::Left, VPos::Center));
                main.draw(&Text::new(l.clone(), (px - base.0, py - base.1 + 6), style))
                    .map_err(err)?;
            }
            draw_color_bar(&bar, *colormap, lo, hi)?;
        }
        FigureKind::Tokens {
            tokens,
            value_name,
            legend,
            ..
        } => draw_tokens(&plot, &fig.title, tokens, value_name, legend)?,
        FigureKind::Lines {
            series,
            band,
            x_ticks,
        } => {
            let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
            let (x0, x1) = padded_range(xs);
            let ys = series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1))
                .chain(
                    band.iter()
                        .flat_map(|b| b.points.iter().flat_map(|p| [p.1, p.2])),
                );
            let (y0, y1) = padded_range(ys);
            let mut chart = ChartBuilder::on(&plot)
                .caption(&fig.title, (FONT, 22))
                .margin(16)
                .x_label_area_size(44)
                .y_label_area_size(56)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(err)?;
            let tick = |x: &f64| match x_ticks {
                Some(t) if (x - x.round()).abs() < 1e-9 && *x >= 0.0 => {
                    t.get(x.round() as usize).cloned().unwrap_or_default()
                }
                Some(_) => String::new(),
                None => format!("{x:.2}"),
            };
            chart
                .configure_mesh()
                .x_desc(&fig.x_label)
                .y_desc(&fig.y_label)
                .x_label_formatter(&tick)
                .label_style((FONT, 13))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(err)?;
            if let Some(b) = band {
                let mut poly: Vec<(f64, f64)> = b.points.iter().map(|p| (p.0, p.2)).collect();
                poly.extend(b.points.iter().rev().map(|p| (p.0, p.1)));
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        poly,
                        RGBColor(200, 200, 200).mix(0.5).filled(),
                    )))
                    .map_err(err)?
                    .label(b.label.clone())
                    .legend(|(x, y)| {
                        Rectangle::new(
                            [(x, y - 5), (x + 16, y + 5)],
                            RGBColor(200, 200, 200).filled(),
                        )
                    });
            }
            for s in series {
                let c = color(s.color);
                chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                    .map_err(err)?
                    .label(s.name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                    });
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(err)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font((FONT, 13))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .draw()
                .map_err(err)?;
        }
    }
    Ok(())
}

/// A token strip: the title, the legend, then the tokens wrapped like text on their colors. What
/// does not fit the image is said on its last line (the CSV holds every token).
fn draw_tokens<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    tokens: &[super::StripToken],
    value_name: &str,
    legend: &[(String, Rgb)],
) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let margin = 16;
    area.draw(&Text::new(
        title.to_string(),
        (margin, 10),
        (FONT, 22).into_font(),
    ))
    .map_err(err)?;
    let small = (FONT, 13).into_font();
    let font = (FONT, 16).into_font();
    let width_of = |text: &str, f: &FontDesc<'_>| -> Result<i32> {
        Ok(area
            .estimate_text_size(text, &TextStyle::from(f.clone()))
            .map_err(err)?
            .0 as i32)
    };
    let mut x = margin;
    let y = 44;
    let label = format!("{value_name}:");
    area.draw(&Text::new(label.clone(), (x, y + 3), small.clone()))
        .map_err(err)?;
    x += width_of(&label, &small)? + 8;
    for (text, c) in legend {
        let tw = width_of(text, &small)? + 8;
        area.draw(&Rectangle::new(
            [(x, y), (x + tw, y + 20)],
            color(*c).filled(),
        ))
        .map_err(err)?;
        area.draw(&Text::new(
            text.clone(),
            (x + 4, y + 3),
            small.clone().color(&color(super::strip::text_on(*c))),
        ))
        .map_err(err)?;
        x += tw + 4;
    }
    let line = 26;
    let (mut x, mut y) = (margin, y + 34);
    for (i, t) in tokens.iter().enumerate() {
        let shown = crate::tokenizer::show_token(&t.text);
        let tw = width_of(&shown, &font)? + 4;
        if x + tw > w - margin && x > margin {
            x = margin;
            y += line;
        }
        if y + 2 * line > h {
            let rest = format!("… {} more tokens (all are in the CSV)", tokens.len() - i);
            area.draw(&Text::new(rest, (margin, y + 4), small.clone()))
                .map_err(err)?;
            break;
        }
        area.draw(&Rectangle::new(
            [(x, y), (x + tw, y + line - 4)],
            color(t.color).filled(),
        ))
        .map_err(err)?;
        area.draw(&Text::new(
            shown,
            (x + 2, y + 2),
            font.clone().color(&color(super::strip::text_on(t.color))),
        ))
        .map_err(err)?;
        x += tw + 2;
        if t.text.ends_with('\n') {
            x = margin;
            y += line;
        }
    }
    Ok(())
}

fn draw_color_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    map: Colormap,
    lo: f64,
    hi: f64,
) -> Result<()> {
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, lo + 1.0)
    };
    let mut chart = ChartBuilder::on(area)
        .margin_top(60)
        .margin_bottom(60)
        .margin_right(8)
        .y_label_area_size(44)
        .build_cartesian_2d(0.0..1.0, lo..hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .label_style((FONT, 12))
        .draw()
        .map_err(err)?;
    let steps = 64;
    chart
        .draw_series((0..steps).map(|i| {
            let a = lo + (hi - lo) * i as f64 / steps as f64;
            let b = lo + (hi - lo) * (i + 1) as f64 / steps as f64;
            Rectangle::new(
                [(0.0, a), (1.0, b)],
                color(map.at((i as f64 + 0.5) / steps as f64)).filled(),
            )
        }))
        .map_err(err)?;
    Ok(())
}
