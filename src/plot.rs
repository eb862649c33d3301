//! Training curves as PNG, drawn from a run's `metrics.jsonl` with `plotters`: one panel for
//! the losses, one for the learning rate, one for the dev score (fine-tuning) or the gradient
//! norm (pre-training). Labels use an embedded ASCII cut of DejaVu Sans, so no system fonts
//! are needed.

use crate::error::{Error, Result};
use crate::io::write_atomic;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-ascii.ttf");

/// Panels in drawing order: a title and the metrics it may show.
const PANELS: [(&str, &[&str]); 5] = [
    ("loss", &["loss", "val_loss", "task_loss", "lm_loss"]),
    ("dev score", &["dev_score"]),
    ("learning rate", &["lr"]),
    ("gradient norm (before clipping)", &["grad_norm"]),
    ("tokens/s", &["tokens_per_s"]),
];

/// Values beyond this are left out of the curves: an axis spanning ±1e308 cannot be divided
/// into ticks (its width overflows), and no training metric is that large.
const PLOTTABLE: f64 = 1e100;

/// Series `name -> [(step, value)]` from JSON lines with a `step` field; other numeric fields
/// become series, non-finite and absurd (beyond ±1e100) values are left out.
pub fn read_series(path: &Path) -> Result<BTreeMap<String, Vec<(f64, f64)>>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            Error::invalid(path, format!("line {}: not JSON ({e}); one object per line", i + 1))
        })?;
        let step = v.get("step").and_then(|s| s.as_f64()).filter(|s| s.abs() < PLOTTABLE);
        let (Some(obj), Some(step)) = (v.as_object(), step) else {
            continue;
        };
        for (k, x) in obj {
            if let Some(y) = x.as_f64().filter(|y| y.abs() < PLOTTABLE && k != "step") {
                series.entry(k.clone()).or_default().push((step, y));
            }
        }
    }
    Ok(series)
}

/// Draws `metrics` (a `metrics.jsonl`) to the PNG `out` (written atomically), at most three
/// panels: losses, then the dev score or the learning rate, then what is left.
pub fn curves(metrics: &Path, out: &Path, title: &str) -> Result<()> {
    curves_to(metrics, &crate::io::Output::File(out.to_path_buf()), title)
}

/// [`curves`] written to `out` as the output rule says (a file, a device, standard output).
pub fn curves_to(metrics: &Path, out: &crate::io::Output, title: &str) -> Result<()> {
    let series = read_series(metrics)?;
    let panels: Vec<(&str, Vec<&str>)> = PANELS
        .iter()
        .map(|(name, keys)| {
            let have = keys.iter().copied().filter(|k| series.contains_key(*k)).collect::<Vec<_>>();
            (*name, have)
        })
        .filter(|(_, keys)| !keys.is_empty())
        .take(3)
        .collect();
    if panels.is_empty() {
        return Err(Error::invalid(
            metrics,
            "no metrics with a step to plot (expected lines like {\"step\": 1, \"loss\": 2.5})",
        ));
    }
    let (w, h) = (960u32, 280 * panels.len() as u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    draw(&mut buf, (w, h), &series, &panels, title)
        .map_err(|e| Error::invalid(out.display(), format!("drawing the curves: {e}")))?;
    out.write(&png(&buf, w, h, &out.display())?)
}

/// Encodes an RGB buffer as PNG and writes it atomically.
fn write_png(out: &Path, buf: &[u8], w: u32, h: u32) -> Result<()> {
    write_atomic(out, &png(buf, w, h, &out.display().to_string())?)
}

/// An RGB buffer as PNG bytes (`name` for the error).
fn png(buf: &[u8], w: u32, h: u32, name: &str) -> Result<Vec<u8>> {
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()
            .and_then(|mut wr| wr.write_image_data(buf))
            .map_err(|e| Error::invalid(name, format!("encoding PNG: {e}")))?;
    }
    Ok(png_bytes)
}

/// One figure of lines with markers: `series` are `(label, [(x, y)])`, drawn over the given
/// axis ranges, written as PNG to `out` (the analyses' figures, in the paper's axes).
pub fn line_chart(
    out: &Path,
    title: &str,
    (x_desc, x_range): (&str, (f64, f64)),
    (y_desc, y_range): (&str, (f64, f64)),
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let finite = |(a, b): (f64, f64)| a.is_finite() && b.is_finite();
    if !finite(x_range) || !finite(y_range) {
        // plotters loops forever placing ticks on an infinite range.
        return Err(Error::invalid(
            out,
            "the figure's axes would be infinite (a non-finite value)",
        ));
    }
    let (w, h) = (720u32, 480u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    draw_lines(&mut buf, (w, h), title, (x_desc, x_range), (y_desc, y_range), series)
        .map_err(|e| Error::invalid(out, format!("drawing the figure: {e}")))?;
    write_png(out, &buf, w, h)
}

fn register_font() {
    static FONT_ONCE: std::sync::Once = std::sync::Once::new();
    FONT_ONCE.call_once(|| {
        // The embedded font is valid (checked by the tests); a failure here only loses text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn draw_lines(
    buf: &mut [u8],
    size: (u32, u32),
    title: &str,
    (x_desc, (x0, x1)): (&str, (f64, f64)),
    (y_desc, (y0, y1)): (&str, (f64, f64)),
    series: &[(String, Vec<(f64, f64)>)],
) -> DrawResult {
    register_font();
    let root = BitMapBackend::with_buffer(buf, size).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| {
            if x.fract() == 0.0 { format!("{x:.0}") } else { format!("{x:.1}") }
        })
        .y_label_formatter(&|y| format!("{y:.2}"))
        .label_style(("sans-serif", 13))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (ci, (label, pts)) in series.iter().enumerate() {
        let color = COLORS[ci % COLORS.len()];
        let line = LineSeries::new(pts.iter().copied(), color.stroke_width(2)).point_size(3);
        chart
            .draw_series(line)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// [`curves`] at the end of a run: a curve that cannot be drawn must not fail the training
/// that produced it, so this only warns.
pub fn curves_or_warn(metrics: &Path, out: &Path, title: &str) {
    if let Err(e) = curves(metrics, out, title) {
        eprintln!("warning: no training curves: {e}");
    }
}

/// Line colours, distinct on white.
const COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(255, 127, 14)];

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Width in pixels of the strip right of each curves panel that holds its legend.
const LEGEND_W: u32 = 120;

/// The step axis from `lo` to `hi` with a margin on each side (2 % of the span, at least half
/// a step), so that a marker at either end, a lone evaluation included, is drawn whole.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let pad = ((hi - lo) * 0.02).max(0.5);
    (lo - pad, hi + pad)
}

/// A value axis' tick label, for an axis whose largest magnitude is `scale`: "0" for zero
/// (and for the rounding residue of a tick computed as a sum, such as 1.4e-20 on an axis of
/// learning rates near 2.5e-4), three significant digits in scientific notation for small or
/// large axes ("2.5e-4", not "0.000"), three decimals otherwise.
fn tick_label(v: f64, scale: f64) -> String {
    if v == 0.0 || v.abs() <= scale * 1e-9 {
        return "0".into();
    }
    if !(1e-2..1e5).contains(&scale) {
        let s = format!("{v:.2e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        return format!("{mantissa}e{exp}");
    }
    format!("{v:.3}")
}

fn draw(
    buf: &mut [u8],
    size: (u32, u32),
    series: &BTreeMap<String, Vec<(f64, f64)>>,
    panels: &[(&str, Vec<&str>)],
    title: &str,
) -> DrawResult {
    register_font();
    let root = BitMapBackend::with_buffer(buf, size).into_drawing_area();
    root.fill(&WHITE)?;
    // One step axis for every panel, so that evaluations line up with the losses.
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    for (x, _) in panels.iter().flat_map(|(_, k)| k.iter().flat_map(|k| series[*k].iter())) {
        (x0, x1) = (x0.min(*x), x1.max(*x));
    }
    let (x0, x1) = padded(x0, x1);
    for (area, (name, keys)) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
        let (mut y0, mut y1) = (f64::MAX, f64::MIN);
        for &(_, y) in keys.iter().flat_map(|k| series[*k].iter()) {
            (y0, y1) = (y0.min(y), y1.max(y));
        }
        // A flat series gets a band of ±5 % around its value.
        let pad = if y1 > y0 { (y1 - y0) * 0.05 } else { (y1.abs() * 0.05).max(1e-6) };
        let (y0, y1) = (y0 - pad, y1 + pad);
        // The legend sits in a strip right of the plot, where it cannot hide a curve.
        let (plot, key) = area.split_horizontally(size.0.saturating_sub(LEGEND_W) as i32);
        let mut chart = ChartBuilder::on(&plot)
            .caption(format!("{title}: {name}"), ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        let y_scale = y0.abs().max(y1.abs());
        chart
            .configure_mesh()
            .x_desc("step")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| tick_label(*y, y_scale))
            .label_style(("sans-serif", 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (ci, k) in keys.iter().enumerate() {
            let color = COLORS[ci % COLORS.len()];
            let s = &series[*k];
            let line = LineSeries::new(s.iter().copied(), color.stroke_width(2));
            // Sparse series (evaluations) get markers so that a single point still shows.
            let line = if s.len() < 50 { line.point_size(3) } else { line };
            chart.draw_series(line)?;
            let y = 40 + 20 * ci as i32;
            key.draw(&PathElement::new(vec![(6, y), (26, y)], color.stroke_width(2)))?;
            key.draw(&Text::new(*k, (32, y - 7), ("sans-serif", 13)))?;
        }
    }
    root.present()?;
    Ok(())
}

/// Grouped bars: one group per `groups` label, one bar per series in each (`values[s][g]`,
/// `None` leaves a gap), written as PNG to `out` (Table 5's figure).
pub fn bar_chart(
    out: &Path,
    title: &str,
    y_desc: &str,
    groups: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> Result<()> {
    let (w, h) = (900u32, 480u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    draw_bars(&mut buf, (w, h), title, y_desc, groups, series)
        .map_err(|e| Error::invalid(out, format!("drawing the figure: {e}")))?;
    write_png(out, &buf, w, h)
}

fn draw_bars(
    buf: &mut [u8],
    size: (u32, u32),
    title: &str,
    y_desc: &str,
    groups: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> DrawResult {
    register_font();
    let root = BitMapBackend::with_buffer(buf, size).into_drawing_area();
    root.fill(&WHITE)?;
    let vals = series.iter().flat_map(|(_, v)| v.iter().flatten().copied());
    let (lo, hi) = vals.fold((0.0f64, 0.0f64), |(a, b), y| (a.min(y), b.max(y)));
    let pad = ((hi - lo) * 0.1).max(0.05);
    let n = groups.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n, (lo - if lo < 0.0 { pad } else { 0.0 })..(hi + pad))?;
    let names = groups.to_vec();
    chart
        .configure_mesh()
        .y_desc(y_desc)
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.26 {
                names.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.2}"))
        .label_style(("sans-serif", 13))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let k = series.len().max(1) as f64;
    let width = 0.8 / k;
    for (si, (label, values)) in series.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        let bars = values.iter().enumerate().filter_map(|(g, v)| {
            let x0 = g as f64 + 0.1 + si as f64 * width;
            v.map(|y| Rectangle::new([(x0, 0.0), (x0 + width * 0.9, y)], color.filled()))
        });
        chart
            .draw_series(bars)?
            .label(label.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_from_metrics_and_rejects_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("metrics.jsonl");
        let mut text = String::new();
        for s in 1..=120 {
            let loss = 5.0 / (s as f64).sqrt();
            text.push_str(&format!("{{\"step\": {s}, \"loss\": {loss}, \"lr\": 0.001}}\n"));
            if s % 40 == 0 {
                text.push_str(&format!("{{\"step\": {s}, \"dev_score\": {}}}\n", s as f64 / 200.0));
            }
        }
        text.push_str("{\"step\": 121, \"loss\": NaN}\n".replace("NaN", "null").as_str());
        std::fs::write(&m, text).unwrap();
        let out = dir.path().join("curves.png");
        curves(&m, &out, "run").unwrap();
        let png = std::fs::read(&out).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let dec = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = dec.read_info().unwrap();
        let info = reader.info();
        assert_eq!((info.width, info.height), (960, 3 * 280));
        // Something other than white was drawn (axes, lines, text).
        let mut img = vec![0u8; reader.output_buffer_size()];
        reader.next_frame(&mut img).unwrap();
        let dark = img.chunks(3).filter(|p| p.iter().all(|&c| c < 100)).count();
        assert!(dark > 1000, "{dark} dark pixels");
        let series = read_series(&m).unwrap();
        assert_eq!(series["loss"].len(), 120);
        assert_eq!(series["dev_score"].len(), 3);
        // The embedded font parses.
        assert!(ab_glyph_font_ok());

        std::fs::write(&m, "{\"step\": 1, \"loss\": 2}\nnot json\n").unwrap();
        let e = curves(&m, &out, "run").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        std::fs::write(&m, "{\"epoch\": 1}\n").unwrap();
        let e = curves(&m, &out, "run").unwrap_err().to_string();
        assert!(e.contains("no metrics"), "{e}");
    }

    #[test]
    fn tick_labels_are_short_and_zero_is_0() {
        let lr = 2.5e-4;
        assert_eq!(tick_label(1.4e-20, lr), "0");
        assert_eq!(tick_label(0.0, lr), "0");
        assert_eq!(tick_label(-0.0, lr), "0");
        assert_eq!(tick_label(2.5e-4, lr), "2.5e-4");
        assert_eq!(tick_label(1e-4, lr), "1e-4");
        assert_eq!(tick_label(1.234e-4, lr), "1.23e-4");
        assert_eq!(tick_label(-5e-5, lr), "-5e-5");
        assert_eq!(tick_label(2.5, 6.0), "2.500");
        assert_eq!(tick_label(1.5e5, 2e5), "1.5e5");
        assert_eq!(tick_label(1e-15, 6.0), "0");
    }

    #[test]
    fn the_step_axis_leaves_room_for_a_marker_at_either_end() {
        assert_eq!(padded(40.0, 40.0), (39.5, 40.5));
        let (lo, hi) = padded(0.0, 1000.0);
        assert!(lo < 0.0 && hi > 1000.0 && hi - lo < 1100.0, "{lo} {hi}");
    }

    /// A lone dev point at the last step shows whole, and no legend box covers a curve: every
    /// pixel of the dev score's color lies in the plot, left of the legend strip, except the
    /// legend's own swatch.
    #[test]
    fn a_lone_dev_point_is_drawn_whole_and_the_legend_is_beside_the_plot() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("metrics.jsonl");
        let mut text = String::new();
        for s in 1..=60 {
            let line = format!("{{\"step\": {s}, \"loss\": {}, \"lr\": 2.5e-4}}\n", 1.0 / s as f64);
            text.push_str(&line);
        }
        text.push_str("{\"step\": 60, \"dev_score\": 0.75}\n");
        std::fs::write(&m, text).unwrap();
        let out = dir.path().join("curves.png");
        curves(&m, &out, "run").unwrap();
        let png = std::fs::read(&out).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
        let mut img = vec![0u8; reader.output_buffer_size()];
        reader.next_frame(&mut img).unwrap();
        // The dev panel is the second; its only series has the first color.
        let c = COLORS[0];
        let (w, panel) = (960usize, 280usize);
        let blue: Vec<(usize, usize)> = (panel..2 * panel)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let p = &img[(y * w + x) * 3..][..3];
                (p[0], p[1], p[2]) == (c.0, c.1, c.2)
            })
            .collect();
        let plot_edge = w - LEGEND_W as usize;
        let marker: Vec<_> = blue.iter().filter(|(x, _)| *x < plot_edge).collect();
        // A disc of radius 3 is about 29 pixels; clipped at the edge it would be half that.
        assert!(marker.len() >= 25, "{} marker pixels", marker.len());
        let xs = marker.iter().map(|(x, _)| *x);
        let (lo, hi) = (xs.clone().min().unwrap(), xs.max().unwrap());
        assert!(hi - lo >= 6, "the marker is {} pixels wide", hi - lo + 1);
    }

    fn ab_glyph_font_ok() -> bool {
        plotters::style::register_font("test-font", FontStyle::Normal, FONT).is_ok()
    }
}
