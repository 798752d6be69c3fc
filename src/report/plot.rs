//! The accuracy-vs-FLOPs-reduction trade-off plot (SVG or PNG, chosen by the file extension),
//! drawn with `plotters` and a TrueType font found on the system.

use super::write_atomic;
use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// One operating point of a sweep.
#[derive(Debug, Clone)]
pub struct TradeoffPoint {
    /// The point's name on the plot, e.g. `L=14` or `max drop 1`.
    pub label: String,
    /// FLOPs reduction in percent (overhead included).
    pub flops_reduction: f64,
    /// Top-1 accuracy in percent.
    pub top1: f64,
}

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers a system font as "sans-serif" once; errors if none is found.
fn ensure_font() -> Result<()> {
    static FONT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let from_env = std::env::var("HASTE_FONT").ok();
        let candidates = from_env.iter().map(String::as_str).chain(FONT_PATHS.iter().copied());
        for path in candidates {
            if let Ok(bytes) = std::fs::read(path) {
                // plotters keeps fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
        }
        Err("no TrueType font found for the plot's text: install fonts-dejavu-core or set HASTE_FONT to a .ttf file".into())
    })
    .clone()
    .map_err(Error::InvalidArgument)
}

/// Draws top-1 accuracy against FLOPs reduction, one point per L (labelled), with dense
/// accuracy marked at 0 % reduction. The file type follows the extension (`.svg` or `.png`);
/// the file is written atomically.
pub fn plot_tradeoff(
    path: &Path,
    title: &str,
    dense_top1: f64,
    points: &[TradeoffPoint],
) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext != "svg" && ext != "png" {
        return Err(Error::InvalidArgument(format!(
            "{}: the plot must end in .svg or .png",
            path.display()
        )));
    }
    ensure_font()?;
    let (w, h) = (900u32, 600u32);
    let draw_err = |e: String| Error::Internal(format!("drawing {}: {e}", path.display()));
    if ext == "svg" {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            draw(&root, title, dense_top1, points).map_err(draw_err)?;
            root.present().map_err(|e| draw_err(e.to_string()))?;
        }
        write_atomic(path, svg.as_bytes())
    } else {
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            draw(&root, title, dense_top1, points).map_err(draw_err)?;
            root.present().map_err(|e| draw_err(e.to_string()))?;
        }
        let img =
            image::RgbImage::from_raw(w, h, rgb).ok_or_else(|| draw_err("buffer size".into()))?;
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png)
            .map_err(|e| draw_err(e.to_string()))?;
        write_atomic(path, png.get_ref())
    }
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    dense_top1: f64,
    points: &[TradeoffPoint],
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let max_x = points.iter().map(|p| p.flops_reduction).fold(5.0, f64::max) * 1.1;
    let min_x = points
        .iter()
        .map(|p| p.flops_reduction)
        .fold(0.0, f64::min)
        .min(0.0)
        - 1.0;
    let accs = points
        .iter()
        .map(|p| p.top1)
        .chain(std::iter::once(dense_top1));
    let (lo, hi) = accs.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let pad = ((hi - lo) * 0.1).max(0.5);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(min_x..max_x, (lo - pad)..(hi + pad))
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("FLOPs reduction (%, hashing and merging included)")
        .y_desc("top-1 accuracy (%)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.flops_reduction.total_cmp(&b.flops_reduction));
    let line = std::iter::once((0.0, dense_top1))
        .chain(sorted.iter().map(|p| (p.flops_reduction, p.top1)));
    chart
        .draw_series(LineSeries::new(line, BLUE.stroke_width(2)))
        .map_err(e)?
        .label("HASTE")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(
            sorted
                .iter()
                .map(|p| Circle::new((p.flops_reduction, p.top1), 5, BLUE.filled())),
        )
        .map_err(e)?;
    chart
        .draw_series(sorted.iter().map(|p| {
            Text::new(
                p.label.clone(),
                (p.flops_reduction, p.top1 + pad * 0.25),
                ("sans-serif", 14),
            )
        }))
        .map_err(e)?;
    chart
        .draw_series(std::iter::once(TriangleMarker::new(
            (0.0, dense_top1),
            9,
            RED.filled(),
        )))
        .map_err(e)?
        .label(format!("dense {dense_top1:.2} %"))
        .legend(|(x, y)| TriangleMarker::new((x + 10, y), 7, RED.filled()));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    Ok(())
}
