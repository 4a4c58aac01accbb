//! Training curves as a PNG: plotters draws into an RGB buffer with a vendored font, and the
//! `png` crate encodes it, so nothing depends on system fonts or image libraries.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use super::AnyResult;

/// Roboto Regular (SIL OFL 1.1, see `assets/fonts/README.md`), embedded because a fresh
/// machine may have no fonts installed at all.
static FONT: &[u8] = include_bytes!("../../assets/fonts/Roboto-Regular.ttf");

/// The family name the embedded font is registered under.
pub const FAMILY: &str = "sans-serif";
const PANEL_W: u32 = 560;
const HEIGHT: u32 = 420;
const COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40)];

/// One chart: a title and named series, each with one value per epoch (epoch 1 first).
pub struct Panel<'a> {
    pub title: &'a str,
    pub series: Vec<(&'a str, Vec<f64>)>,
    /// Decimals shown on the y axis.
    pub y_decimals: usize,
    /// Where the legend goes: upper right suits falling curves, lower right rising ones.
    pub legend: SeriesLabelPosition,
}

/// Makes the embedded font available to plotters (once per process).
pub fn register_font() -> AnyResult<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .map_err(|_| "the embedded font does not parse".to_owned())
    })
    .clone()
    .map_err(Into::into)
}

/// Draws `panels` side by side and writes them to `path` as an RGB PNG.
pub fn write_panels_png(path: &Path, panels: &[Panel<'_>]) -> AnyResult<()> {
    register_font()?;
    let width = PANEL_W * panels.len().max(1) as u32;
    let mut pixels = vec![255u8; (width * HEIGHT * 3) as usize];
    draw(&mut pixels, width, panels).map_err(|e| format!("drawing {}: {e}", path.display()))?;
    encode_png(path, &pixels, width, HEIGHT)
}

fn draw(pixels: &mut [u8], width: u32, panels: &[Panel<'_>]) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(pixels, (width, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, panel) in areas.iter().zip(panels) {
        let epochs = panel.series.iter().map(|(_, v)| v.len()).max().unwrap_or(0).max(1);
        let (lo, hi) = value_range(panel);
        let mut chart = ChartBuilder::on(area)
            .caption(panel.title, (FAMILY, 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.5f64..epochs as f64 + 0.5, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_labels(epochs.min(12) + 1)
            .x_label_formatter(&|x| if x.fract() == 0.0 { format!("{x:.0}") } else { String::new() })
            .y_label_formatter(&|y| format!("{y:.*}", panel.y_decimals))
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .draw()?;
        for (i, (name, values)) in panel.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points: Vec<(f64, f64)> = values.iter().enumerate().map(|(e, &v)| (e as f64 + 1.0, v)).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FAMILY, 14))
            .position(panel.legend.clone())
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// The y range covering every finite value with a margin, never empty.
fn value_range(panel: &Panel<'_>) -> (f64, f64) {
    let finite = panel.series.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.1).max(1e-3);
    (lo - pad, hi + pad)
}

/// Writes an RGB buffer as a PNG file.
pub fn encode_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> AnyResult<()> {
    let file = std::fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(())
}
