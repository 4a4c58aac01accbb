//! Trains a digit classifier on MNIST, end to end: pick a device, stream shuffled batches,
//! train with Adam and a cosine learning-rate schedule, evaluate on the 10 000 test images
//! after each epoch, then save the weights (`model.safetensors`) and the training curves
//! (`curves.png`).
//!
//! ```text
//! cargo run --release --example mnist                      # MLP, ≥ 98 % test accuracy
//! cargo run --release --example mnist -- --model cnn       # small CNN, ≥ 99 %
//! cargo run --release --example mnist -- --device gpu      # any GPU adapter (lavapipe too)
//! cargo run --release --example mnist_infer                # classify with the saved model
//! ```
//!
//! Without a hardware GPU, `Device::best()` falls back to the CPU backend, where the default
//! MLP run takes a few minutes on two cores.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::cli::{self, FlagSpec, Parsed};
use common::model::ModelKind;
use common::plot::{Panel, write_panels_png};
use plotters::chart::SeriesLabelPosition;
use common::train::{EpochStats, TrainConfig, load_mnist, train};
use common::AnyResult;
use kiln::Device;

const ABOUT: &str = "Train an MNIST classifier (MLP or CNN) and save it with its training curves.";

const FLAGS: &[FlagSpec] = &[
    FlagSpec { name: "model", value: Some("mlp|cnn"), help: "architecture (default mlp)" },
    FlagSpec { name: "epochs", value: Some("N"), help: "passes over the training set (default 8 for mlp, 3 for cnn)" },
    FlagSpec { name: "batch-size", value: Some("N"), help: "images per step (default 128)" },
    FlagSpec { name: "lr", value: Some("F"), help: "peak Adam learning rate, cosine-decayed (default 0.001)" },
    FlagSpec { name: "device", value: Some("WHICH"), help: "best (default), cpu, gpu, vulkan, or part of an adapter name" },
    FlagSpec { name: "seed", value: Some("N"), help: "seed for initialisation and shuffling (default 0)" },
    FlagSpec { name: "out", value: Some("DIR"), help: "output directory (default runs/mnist)" },
    FlagSpec { name: "train-limit", value: Some("N"), help: "use only the first N training images" },
    FlagSpec { name: "test-limit", value: Some("N"), help: "evaluate on only the first N test images" },
];

fn main() -> std::process::ExitCode {
    common::main_with(run)
}

fn run() -> AnyResult<()> {
    let flags = match cli::parse(std::env::args().skip(1), FLAGS)? {
        Parsed::Run(flags) => flags,
        Parsed::Help => {
            print!("{}", cli::usage("mnist", ABOUT, FLAGS));
            return Ok(());
        }
    };
    let kind: ModelKind = flags.get_or("model", ModelKind::Mlp)?;
    let cfg = TrainConfig {
        kind,
        epochs: flags.get_or("epochs", default_epochs(kind))?,
        batch_size: flags.get_or("batch-size", 128)?,
        lr: flags.get_or("lr", 1e-3)?,
        seed: flags.get_or("seed", 0)?,
        log_every: 50,
        progress: true,
    };
    let out: PathBuf = flags.get_or("out", PathBuf::from("runs/mnist"))?;

    let device = match flags.str("device") {
        Some(word) => Device::parse(word)?,
        None => Device::best(),
    };
    println!("device: {}", device.describe());

    let (train_set, test_set) = load_mnist(flags.get("train-limit")?, flags.get("test-limit")?)?;
    println!(
        "model: {kind}, {} training / {} test images, {} epochs, batch {}, peak lr {}",
        train_set.len(),
        test_set.len(),
        cfg.epochs,
        cfg.batch_size,
        cfg.lr
    );

    let start = Instant::now();
    let (model, history) = train(&cfg, &device, train_set, &test_set, print_epoch)?;
    let wall = start.elapsed().as_secs_f64();
    let last = history.last().ok_or("no epoch ran")?;
    println!("done in {wall:.1} s: test accuracy {:.2}%", 100.0 * last.test_acc);

    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let weights = out.join("model.safetensors");
    kiln_nn::checkpoint::save(&model, &weights)?;
    let curves = out.join("curves.png");
    write_panels_png(&curves, &panels(&history))?;
    println!("saved {} and {}", weights.display(), curves.display());
    Ok(())
}

fn default_epochs(kind: ModelKind) -> usize {
    match kind {
        ModelKind::Mlp => 8,
        ModelKind::Cnn => 3,
    }
}

fn print_epoch(s: &EpochStats) {
    println!(
        "epoch {:>2}: train loss {:.4} acc {:6.2}% | test loss {:.4} acc {:6.2}% | {:.1} s, {:.0} img/s",
        s.epoch,
        s.train_loss,
        100.0 * s.train_acc,
        s.test_loss,
        100.0 * s.test_acc,
        s.train_secs,
        s.images_per_sec
    );
}

fn panels(history: &[EpochStats]) -> [Panel<'static>; 2] {
    let col = |f: fn(&EpochStats) -> f64| history.iter().map(f).collect::<Vec<f64>>();
    [
        Panel {
            title: "Cross-entropy loss",
            series: vec![("train", col(|s| s.train_loss)), ("test", col(|s| s.test_loss))],
            y_decimals: 3,
            legend: SeriesLabelPosition::UpperRight,
        },
        Panel {
            title: "Accuracy (%)",
            series: vec![("train", col(|s| 100.0 * s.train_acc)), ("test", col(|s| 100.0 * s.test_acc))],
            y_decimals: 1,
            legend: SeriesLabelPosition::LowerRight,
        },
    ]
}
