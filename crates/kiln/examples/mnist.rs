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

use common::cli::{self, FlagSpec};
use common::model::ModelKind;
use common::plot::{Panel, write_panels_png};
use plotters::chart::SeriesLabelPosition;
use common::train::{EpochStats, TrainConfig, load_mnist, train};
use common::AnyResult;

const ABOUT: &str = "Train an MNIST classifier (MLP or CNN) and save it with its training curves.";

const FLAGS: &[FlagSpec] = &[
    FlagSpec { name: "model", value: Some("mlp|cnn"), help: "architecture (default mlp)" },
    FlagSpec { name: "epochs", value: Some("N"), help: "passes over the training set (default: mlp 8, cnn 2)" },
    FlagSpec { name: "batch-size", value: Some("N"), help: "images per step (default: mlp 128, cnn 64)" },
    FlagSpec { name: "lr", value: Some("F"), help: "peak Adam learning rate, cosine-decayed to 0 (default: mlp 0.001, cnn 0.002)" },
    cli::DEVICE_FLAG,
    FlagSpec { name: "seed", value: Some("N"), help: "seed for initialisation and shuffling (default 0)" },
    FlagSpec { name: "out", value: Some("DIR"), help: "output directory (default runs/mnist)" },
    FlagSpec { name: "train-limit", value: Some("N"), help: "use only the first N training images" },
    FlagSpec { name: "test-limit", value: Some("N"), help: "evaluate on only the first N test images" },
    FlagSpec { name: "memory-log", value: Some("CSV"), help: "append device memory (live, pooled bytes) after each epoch to CSV" },
];

/// `--ddp` exists only in builds with the `mpi` feature (`--features mpi`).
#[cfg(feature = "mpi")]
const DDP_FLAGS: &[FlagSpec] = &[FlagSpec {
    name: "ddp",
    value: None,
    help: "data parallel over the processes mpirun starts (one per GPU); --batch-size is the global batch",
}];
#[cfg(not(feature = "mpi"))]
const DDP_FLAGS: &[FlagSpec] = &[];

fn main() -> std::process::ExitCode {
    common::main_with(run)
}

fn run() -> AnyResult<()> {
    let spec: Vec<FlagSpec> = FLAGS.iter().chain(DDP_FLAGS).map(|f| FlagSpec { name: f.name, value: f.value, help: f.help }).collect();
    let Some(flags) = cli::parse_args("mnist", ABOUT, &spec)? else { return Ok(()) };
    let kind: ModelKind = flags.get_or("model", ModelKind::Mlp)?;
    let (epochs, batch_size, lr) = defaults(kind);
    let cfg = TrainConfig {
        kind,
        epochs: flags.get_or("epochs", epochs)?,
        batch_size: flags.get_or("batch-size", batch_size)?,
        lr: flags.get_or("lr", lr)?,
        seed: flags.get_or("seed", 0)?,
        log_every: 50,
        progress: true,
    };
    let out: PathBuf = flags.get_or("out", PathBuf::from("runs/mnist"))?;
    #[cfg(feature = "mpi")]
    if flags.switch("ddp") {
        return run_ddp(&cfg, &flags, &out);
    }

    let device = flags.device()?;
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
    let mut memory_log = common::memlog::open(flags.get("memory-log")?, "epoch")?;
    let (model, history) = train(&cfg, &device, train_set, &test_set, |s| {
        print_epoch(s);
        memory_log(&s.epoch.to_string(), &device);
    })?;
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

/// `--ddp`: the same training, data-parallel over the processes `mpirun` started; rank 0
/// prints, and writes the checkpoint while the others wait at a barrier.
#[cfg(feature = "mpi")]
fn run_ddp(cfg: &TrainConfig, flags: &cli::Flags, out: &std::path::Path) -> AnyResult<()> {
    let device = flags.str("device").map(kiln::Device::parse).transpose()?;
    let (train_set, test_set) = load_mnist(flags.get("train-limit")?, flags.get("test-limit")?)?;
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
        println!("done in {wall:.1} s: test accuracy {:.2}% ({world} processes, global batch {})", 100.0 * last.test_acc, cfg.batch_size);
    }
    let weights = out.join("model.safetensors");
    let model = &run.model;
    run.ddp.save_on_root(|| {
        std::fs::create_dir_all(out).map_err(|e| kiln::Error::invalid("mnist", format!("cannot create {}: {e}", out.display())))?;
        kiln_nn::checkpoint::save(model, &weights)
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
