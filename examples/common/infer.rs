//! Loading a trained MNIST model and classifying images with it (used by `mnist_infer`).

use std::path::Path;

use kiln::data::{MNIST_SIDE, normalize_pixel};
use kiln::prelude::*;

use super::AnyResult;
use super::model::ModelKind;

/// Builds a `kind` model and fills it from `path`, with messages that say what to do when the
/// file is missing or holds another architecture.
pub fn load_model(kind: ModelKind, path: &Path, device: &Device) -> AnyResult<Sequential> {
    if !path.is_file() {
        return Err(format!(
            "checkpoint {} not found; train one first with `cargo run --release --example mnist{}` \
             or pass --checkpoint PATH",
            path.display(),
            if kind == ModelKind::Cnn { " -- --model cnn" } else { "" }
        )
        .into());
    }
    let model = kind.build(device)?;
    kiln::nn::checkpoint::load(&model, path).map_err(|e| {
        format!("cannot load {} into the {kind} model (was it trained with --model {kind}?): {e}", path.display())
    })?;
    model.eval();
    Ok(model)
}

/// The architecture a checkpoint was saved from, told by the rank of its first weight
/// (a matrix for the MLP's first `Linear`, a 4-d kernel for the CNN's first `Conv2d`).
/// `None` when the file cannot be read or matches neither.
pub fn detect_kind(path: &Path) -> Option<ModelKind> {
    let tensors = kiln::nn::checkpoint::load_state_dict(path).ok()?;
    let (_, first) = tensors.iter().find(|(name, _)| name == "0.weight")?;
    match first.rank() {
        2 => Some(ModelKind::Mlp),
        4 => Some(ModelKind::Cnn),
        _ => None,
    }
}

/// Predicted digit and its softmax probability for each of the `n` images in `pixels`.
pub fn classify(
    model: &Sequential,
    kind: ModelKind,
    pixels: Vec<f32>,
    n: usize,
    device: &Device,
) -> AnyResult<Vec<(u32, f64)>> {
    no_grad(|| {
        let probs = model.forward(&kind.input(pixels, n, device)?)?.softmax(-1)?;
        let (top, idx) = (probs.max(&[-1], false)?.to_f64_vec()?, probs.argmax(-1, false)?.to_vec::<u32>()?);
        Ok(idx.into_iter().zip(top).collect())
    })
}

/// Reads a 28×28 PNG (any colour type and bit depth) as normalised MNIST pixels. MNIST digits
/// are light on a dark background; a mostly light image is inverted to match.
pub fn read_digit_png(path: &Path) -> AnyResult<Vec<f32>> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| format!("{}: not a readable PNG: {e}", path.display()))?;
    let size = reader.output_buffer_size().ok_or_else(|| format!("{}: image too large", path.display()))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(|e| format!("{}: corrupt PNG: {e}", path.display()))?;
    let side = MNIST_SIDE as u32;
    if (info.width, info.height) != (side, side) {
        return Err(
            format!("{}: image is {}x{}, expected {side}x{side}", path.display(), info.width, info.height).into()
        );
    }
    let channels = info.color_type.samples();
    let gray: Vec<u8> = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|px| match px.len() {
            // Gray or gray+alpha: the first sample; colour: the mean of R, G and B.
            1 | 2 => px[0],
            _ => ((u16::from(px[0]) + u16::from(px[1]) + u16::from(px[2])) / 3) as u8,
        })
        .collect();
    let mean = gray.iter().map(|&p| f64::from(p)).sum::<f64>() / gray.len() as f64;
    let invert = mean > 127.0;
    if invert {
        eprintln!("note: {} is mostly light; inverting it to MNIST's light-on-dark", path.display());
    }
    Ok(gray.into_iter().map(|p| normalize_pixel(if invert { 255 - p } else { p })).collect())
}
