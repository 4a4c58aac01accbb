//! Classifies digits with a model saved by the `mnist` example: the first test images, or
//! a 28×28 grayscale PNG of your own.
//!
//! ```text
//! cargo run --release --example mnist_infer                        # first 10 test images
//! cargo run --release --example mnist_infer -- --count 25
//! cargo run --release --example mnist_infer -- --image digit.png   # white digit on black (or inverted)
//! cargo run --release --example mnist_infer -- --checkpoint runs/mnist-cnn/model.safetensors
//! ```
//!
//! The architecture (MLP or CNN) is read from the checkpoint unless `--model` names it; a
//! missing checkpoint, or one of another architecture, ends with a message and exit status 1.

mod common;

use std::path::{Path, PathBuf};

use clap::Parser;
use common::AnyResult;
use common::cli;
use common::infer::{classify, detect_kind, load_model, read_digit_png};
use common::model::ModelKind;
use kiln::data::{MNIST_PIXELS, Mnist};

const ABOUT: &str = "Classify MNIST digits with a checkpoint written by the mnist example.";

#[derive(Parser, Debug)]
#[command(name = "mnist_infer", about = ABOUT, override_usage = "cargo run --release --example mnist_infer -- [FLAGS]")]
struct Flags {
    /// weights (default runs/mnist/model.safetensors)
    #[arg(long, value_name = "PATH")]
    checkpoint: Option<PathBuf>,
    /// architecture the checkpoint was trained as (default: read from the checkpoint)
    #[arg(long, value_name = "mlp|cnn")]
    model: Option<ModelKind>,
    /// classify the first N test images (default 10)
    #[arg(long, value_name = "N")]
    count: Option<usize>,
    /// classify this 28x28 grayscale PNG instead
    #[arg(long, value_name = "PATH")]
    image: Option<String>,
    #[command(flatten)]
    device: cli::DeviceFlag,
}

fn main() -> std::process::ExitCode {
    common::main_with(run)
}

fn run() -> AnyResult<()> {
    let Some(flags) = cli::parse_args::<Flags>()? else { return Ok(()) };
    let checkpoint = flags.checkpoint.clone().unwrap_or_else(|| PathBuf::from("runs/mnist/model.safetensors"));
    // An explicit --model wins (and a wrong one is reported by the load); otherwise the
    // checkpoint says which architecture it holds.
    let kind = match flags.model {
        Some(kind) => kind,
        None => detect_kind(&checkpoint).unwrap_or(ModelKind::Mlp),
    };
    let count = flags.count.unwrap_or(10);
    let device = flags.device.device()?;

    let model = load_model(kind, &checkpoint, &device)?;
    println!("device: {}", device.describe());
    println!("model: {kind} from {}", checkpoint.display());

    if let Some(path) = flags.image.as_deref() {
        let pixels = read_digit_png(Path::new(path))?;
        let (digit, prob) = classify(&model, kind, pixels, 1, &device)?[0];
        println!("{path}: predicted {digit} (p = {prob:.3})");
        return Ok(());
    }

    let test = Mnist::test()?;
    let n = count.min(test.len());
    if n == 0 {
        return Err("--count must be at least 1".into());
    }
    let mut pixels = Vec::with_capacity(n * MNIST_PIXELS);
    for i in 0..n {
        pixels.extend(test.image_f32(i).ok_or("test image out of range")?);
    }
    let predictions = classify(&model, kind, pixels, n, &device)?;
    let mut right = 0;
    for (i, &(digit, prob)) in predictions.iter().enumerate() {
        let truth = test.label(i).ok_or("test label out of range")?;
        let mark = if u32::from(truth) == digit { "" } else { "   <- wrong" };
        right += usize::from(u32::from(truth) == digit);
        println!("test image {i:>5}: predicted {digit} (p = {prob:.3}), label {truth}{mark}");
    }
    println!("{right}/{n} correct");
    Ok(())
}
