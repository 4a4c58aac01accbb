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
//! Without a hardware GPU, `Device::best()` falls back to the CPU backend. Measured with the
//! defaults: on two CPU cores the MLP takes about 15 s (98.5 %) and the CNN about
//! 9 minutes (99.1 %); on an NVIDIA H100 through Vulkan, about 30 s and 10 s.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use common::AnyResult;
use common::cli;
use common::model::ModelKind;
use common::plot::{Panel, write_panels_png};
use common::train::{EpochStats, TrainConfig, load_mnist, train};
use plotters::chart::SeriesLabelPosition;

const ABOUT: &str = "Train an MNIST classifier (MLP or CNN) and save it with its training curves.";

#[derive(Parser, Debug)]
#[command(name = "mnist", about = ABOUT, override_usage = "cargo run --release --example mnist -- [FLAGS]")]
struct Flags {
    /// architecture (default mlp)
    #[arg(long, value_name = "mlp|cnn")]
    model: Option<ModelKind>,
    /// passes over the training set (default: mlp 8, cnn 2)
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// images per step (default: mlp 128, cnn 64)
    #[arg(long, value_name = "N")]
    batch_size: Option<usize>,
    /// peak Adam learning rate, cosine-decayed to 0 (default: mlp 0.001, cnn 0.002)
    #[arg(long, value_name = "F")]
    lr: Option<f64>,
    #[command(flatten)]
    device: cli::DeviceFlag,
    /// seed for initialisation and shuffling (default 0)
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// output directory (default runs/mnist)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// use only the first N training images
    #[arg(long, value_name = "N")]
    train_limit: Option<usize>,
    /// evaluate on only the first N test images
    #[arg(long, value_name = "N")]
    test_limit: Option<usize>,
    /// append device memory (live, pooled bytes) after each epoch to CSV
    #[arg(long, value_name = "CSV")]
    memory_log: Option<PathBuf>,
    /// data parallel over the processes mpirun starts (one per GPU); --batch-size is the global batch
    #[cfg(feature = "mpi")]
    #[arg(long)]
    ddp: bool,
}

fn main() -> std::process::ExitCode {
    common::main_with(run)
}

fn run() -> AnyResult<()> {
    let Some(flags) = cli::parse_args::<Flags>()? else { return Ok(()) };
    let kind = flags.model.unwrap_or(ModelKind::Mlp);
    let (epochs, batch_size, lr) = defaults(kind);
    let cfg = TrainConfig {
        kind,
        epochs: flags.epochs.unwrap_or(epochs),
        batch_size: flags.batch_size.unwrap_or(batch_size),
        lr: flags.lr.unwrap_or(lr),
        seed: flags.seed.unwrap_or(0),
        log_every: 50,
        progress: true,
    };
    let out = flags.out.clone().unwrap_or_else(|| PathBuf::from("runs/mnist"));
    #[cfg(feature = "mpi")]
    if flags.ddp {
        return run_ddp(&cfg, &flags, &out);
    }

    let device = flags.device.device()?;
    println!("device: {}", device.describe());

    let (train_set, test_set) = load_mnist(flags.train_limit, flags.test_limit)?;
    println!(
        "model: {kind}, {} training / {} test images, {} epochs, batch {}, peak lr {}",
        train_set.len(),
        test_set.len(),
        cfg.epochs,
        cfg.batch_size,
        cfg.lr
    );

    let start = Instant::now();
    let mut memory_log = common::memlog::open(flags.memory_log.clone(), "epoch")?;
    let (model, history) = train(&cfg, &device, train_set, &test_set, |s| {
        print_epoch(s);
        memory_log(&s.epoch.to_string(), &device);
    })?;
    let wall = start.elapsed().as_secs_f64();
    let last = history.last().ok_or("no epoch ran")?;
    println!("done in {wall:.1} s: test accuracy {:.2}%", 100.0 * last.test_acc);

    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let weights = out.join("model.safetensors");
    kiln::nn::checkpoint::save(&model, &weights)?;
    let curves = out.join("curves.png");
    write_panels_png(&curves, &panels(&history))?;
    println!("saved {} and {}", weights.display(), curves.display());
    Ok(())
}

/// `--ddp`: the same training, data-parallel over the processes `mpirun` started; rank 0
/// prints, and writes the checkpoint while the others wait at a barrier.
#[cfg(feature = "mpi")]
fn run_ddp(cfg: &TrainConfig, flags: &Flags, out: &std::path::Path) -> AnyResult<()> {
    let device = flags.device.device.as_deref().map(kiln::Device::parse).transpose()?;
    let (train_set, test_set) = load_mnist(flags.train_limit, flags.test_limit)?;
    let start = Instant::now();
    let mut run = common::ddp::train_ddp(cfg, device, train_set, &test_set, |rank, s| {
        if rank == 0 {
            print_epoch(s)
        }
    })?;
    let (rank, world) = (run.ddp.rank(), run.ddp.world());
    let last = run.history.last().ok_or("no epoch ran")?;
    if rank == 0 {
        let wall = start.elapsed().as_secs_f64();
        println!(
            "done in {wall:.1} s: test accuracy {:.2}% ({world} processes, global batch {})",
            100.0 * last.test_acc,
            cfg.batch_size
        );
    }
    let weights = out.join("model.safetensors");
    let model = &run.model;
    run.ddp.save_on_root(|| {
        std::fs::create_dir_all(out)
            .map_err(|e| kiln::Error::invalid("mnist", format!("cannot create {}: {e}", out.display())))?;
        kiln::nn::checkpoint::save(model, &weights)
    })?;
    if rank == 0 {
        let curves = out.join("curves.png");
        write_panels_png(&curves, &panels(&run.history))?;
        println!("saved {} and {}", weights.display(), curves.display());
    }
    Ok(())
}

/// Epochs, batch size and peak learning rate of a default run, chosen to clear the targets
/// (MLP ≥ 98 %, CNN ≥ 99 % test accuracy) with margin over seeds in the least time: the MLP
/// lands at 98.5–98.6 %, the CNN at 99.2–99.3 %.
fn defaults(kind: ModelKind) -> (usize, usize, f64) {
    match kind {
        ModelKind::Mlp => (8, 128, 1e-3),
        ModelKind::Cnn => (2, 64, 2e-3),
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
