//! Smoke tests of the MNIST examples: the very training loop `cargo run --example mnist` runs
//! (included by path), on slices small enough for CI, on the CPU backend and on a GPU adapter
//! (lavapipe in CI), plus `mnist_infer`'s handling of a missing checkpoint.

#[path = "../common/mod.rs"]
mod common;

use common::infer::{detect_kind, load_model};
use common::model::ModelKind;
use common::train::{TrainConfig, load_mnist, train};
use kiln::Device;

fn config(kind: ModelKind, epochs: usize, batch_size: usize, lr: f64) -> TrainConfig {
    TrainConfig { kind, epochs, batch_size, lr, seed: 0, log_every: 20, progress: false }
}

/// Trains on the first `train_n` images and returns the accuracy on the first `test_n` test images.
fn accuracy(cfg: &TrainConfig, device: &Device, train_n: usize, test_n: usize) -> f64 {
    let (train_set, test_set) = load_mnist(Some(train_n), Some(test_n)).expect("vendored MNIST loads");
    let (_, history) = train(cfg, device, train_set, &test_set, |_| {}).expect("training runs");
    let last = history.last().expect("one epoch ran");
    assert!(last.train_loss.is_finite(), "loss diverged: {last:?}");
    last.test_acc
}

/// The GPU adapter, or `None` (loudly) when there is none; `KILN_REQUIRE_GPU=1` makes that a failure.
fn gpu() -> Option<Device> {
    kiln_testkit::gpu(std::thread::current().name().unwrap_or("smoke"))
}

// One epoch over 5 000 images (79 steps): a working MLP reaches about 89 %; chance is 10 %.
fn mlp_beats_85_percent(device: &Device) {
    let acc = accuracy(&config(ModelKind::Mlp, 1, 64, 2e-3), device, 5_000, 1_000);
    assert!(acc > 0.85, "MLP on {device:?}: test accuracy {acc:.3} after one epoch on 5k images");
}

// A broken conv, pool or gradient leaves the CNN near chance (10 %). When all is right one
// epoch reaches about 86 % on 1 500 images (batch 32) and about 58 % on 320 (batch 16, the
// slice lavapipe can afford).
fn cnn_learns(device: &Device, train_n: usize, batch_size: usize, test_n: usize, threshold: f64) {
    let acc = accuracy(&config(ModelKind::Cnn, 1, batch_size, 2e-3), device, train_n, test_n);
    assert!(acc > threshold, "CNN on {device:?}: test accuracy {acc:.3} after one epoch on {train_n} images");
}

#[test]
fn mlp_trains_on_cpu() {
    mlp_beats_85_percent(&Device::cpu());
}

#[test]
fn cnn_trains_on_cpu() {
    cnn_learns(&Device::cpu(), 1_500, 32, 500, 0.7);
}

#[test]
fn mlp_trains_on_gpu() {
    if let Some(d) = gpu() {
        mlp_beats_85_percent(&d);
    }
}

#[test]
fn cnn_trains_on_gpu() {
    if let Some(d) = gpu() {
        cnn_learns(&d, 320, 16, 200, 0.4);
    }
}

#[test]
fn mnist_infer_rejects_missing_and_mismatched_checkpoints() {
    let dir = std::env::temp_dir().join(format!("kiln-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cpu = Device::cpu();

    let missing = dir.join("no-such-model.safetensors");
    let err = load_model(ModelKind::Mlp, &missing, &cpu).err().expect("a missing checkpoint is an error");
    assert!(err.to_string().contains("not found"), "{err}");

    // An MLP checkpoint offered as a CNN must be refused with a message, not a panic.
    let mlp_file = dir.join("mlp.safetensors");
    let mlp = ModelKind::Mlp.build(&cpu).expect("build MLP");
    kiln_nn::checkpoint::save(&mlp, &mlp_file).expect("save MLP");
    let err = load_model(ModelKind::Cnn, &mlp_file, &cpu).err().expect("mismatched checkpoint is an error");
    assert!(err.to_string().contains("--model cnn"), "{err}");
    load_model(ModelKind::Mlp, &mlp_file, &cpu).expect("the matching model loads");
    assert_eq!(detect_kind(&mlp_file), Some(ModelKind::Mlp));
    assert_eq!(detect_kind(&missing), None);

    // The binary itself, when `cargo test` has built the examples (it does unless a single
    // test target is selected): exit status 1 and an `Error:` line.
    let exe = std::env::current_exe().expect("test path");
    let target = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let infer = target.join("examples").join(format!("mnist_infer{}", std::env::consts::EXE_SUFFIX));
    if infer.is_file() {
        let out = std::process::Command::new(&infer)
            .args(["--device", "cpu", "--checkpoint"])
            .arg(&missing)
            .output()
            .expect("run mnist_infer");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
        assert!(stderr.contains("Error:") && stderr.contains("not found"), "stderr: {stderr}");
        assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    } else {
        eprintln!("note: {} not built (single test target selected); checked load_model only", infer.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
