//! The `char_transformer` training curve as a PNG: bits per character against optimizer
//! steps, drawn with the MNIST plot's embedded font and PNG writer (`examples/common/plot.rs`).

use std::path::Path;

use plotters::prelude::*;

use super::common::plot::{FAMILY, encode_png, register_font};
use super::train::{AnyResult, EvalPoint};

const WIDTH: u32 = 800;
const HEIGHT: u32 = 480;
const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(255, 127, 14);
const TARGET: RGBColor = RGBColor(120, 120, 120);

/// Draws training and validation bits per character at each evaluation of `history`, with a
/// dashed reference line at `target` bits when given, and writes the chart to `path`.
pub fn write_curves_png(path: &Path, history: &[EvalPoint], target: Option<f64>) -> AnyResult<()> {
    register_font()?;
    let mut pixels = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    draw(&mut pixels, history, target).map_err(|e| format!("drawing {}: {e}", path.display()))?;
    encode_png(path, &pixels, WIDTH, HEIGHT)
}

fn draw(pixels: &mut [u8], history: &[EvalPoint], target: Option<f64>) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let last_step = history.last().map_or(1, |p| p.step).max(1) as f64;
    let values = history.iter().flat_map(|p| [p.train_bpc, p.val_bpc]).chain(target).filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.1).max(0.05);
    let mut chart = ChartBuilder::on(&root)
        .caption("Moby-Dick character model: cross-entropy", (FAMILY, 22))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..last_step * 1.02, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .x_desc("optimizer step")
        .y_desc("bits per character")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .draw()?;
    let series = [
        (
            "train (mean since last eval)",
            TRAIN,
            history.iter().map(|p| (p.step as f64, p.train_bpc)).collect::<Vec<_>>(),
        ),
        ("validation", VAL, history.iter().map(|p| (p.step as f64, p.val_bpc)).collect()),
    ];
    for (name, color, points) in series {
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    if let Some(level) = target {
        // Dashes drawn by hand: the enabled plotters features have no dashed series.
        let dash = last_step / 60.0;
        let segments = (0..60).step_by(2).map(|i| {
            PathElement::new(vec![(i as f64 * dash, level), ((i + 1) as f64 * dash, level)], TARGET.stroke_width(1))
        });
        chart
            .draw_series(segments)?
            .label(format!("target {level} bits/char"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], TARGET.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FAMILY, 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}
