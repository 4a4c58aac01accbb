//! The desktop app end to end, under Xvfb on lavapipe: a checkpoint is trained here (300 steps
//! of the app's own trainer on the CPU backend, a few seconds, ~95 % test accuracy), then the
//! app starts with `--script`, draws MNIST test digits itself through pointer events, waits
//! for the prediction, screenshots its window, and prints the digit; the test checks the digit
//! against the label and that the screenshot shows the drawing. The screenshots stay in
//! `target/tmp/digits_app-xvfb/`.
//!
//! Needs `xvfb-run` (Debian `xvfb`) and a Vulkan adapter (lavapipe: `mesa-vulkan-drivers`).
//! Without them the test says so and passes, unless `KILN_REQUIRE_GPU=1` (CI), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use digits_app::trainer::{TrainConfig, TrainEvent, train};
use kiln::Device;
use kiln_data::Mnist;

fn required() -> bool {
    std::env::var("KILN_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

fn have(program: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().is_ok_and(|o| o.status.success())
}

/// A checkpoint of the app's MLP after 300 Adam steps on the CPU backend, and its test accuracy.
fn quick_checkpoint(dir: &Path) -> (PathBuf, f64) {
    let out = dir.join("model.safetensors");
    let cfg = TrainConfig { max_steps: Some(300), log_every: 100, out: out.clone(), ..Default::default() };
    let mut acc = None;
    train(&cfg, &Device::cpu(), &AtomicBool::new(false), |e| {
        if let TrainEvent::Evaluated { test_acc, .. } = e {
            acc = Some(test_acc);
        }
    })
    .expect("training the checkpoint");
    (out, acc.expect("an accuracy was reported"))
}

/// Pixels of the screenshot that are (almost) pure white: the drawn ink. Everything else in
/// the dark theme (text, bars, panels) is darker.
fn white_pixels(path: &Path) -> (u32, u32, usize) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("screenshot {}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().expect("a PNG");
    let mut buf = vec![0u8; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("PNG data");
    assert_eq!(info.color_type, png::ColorType::Rgba);
    let white = buf[..info.buffer_size()].chunks_exact(4).filter(|p| p[..3].iter().all(|&c| c >= 250)).count();
    (info.width, info.height, white)
}

#[test]
fn draws_test_digits_and_predicts_their_labels_under_xvfb() {
    if !have("xvfb-run") {
        assert!(!required(), "KILN_REQUIRE_GPU=1 but xvfb-run is missing (apt-get install -y xvfb)");
        eprintln!(
            "SKIPPED draws_test_digits_and_predicts_their_labels_under_xvfb: no xvfb-run (apt-get install -y xvfb)"
        );
        return;
    }
    if Device::gpu().is_err() {
        assert!(!required(), "KILN_REQUIRE_GPU=1 but there is no GPU adapter (lavapipe: mesa-vulkan-drivers)");
        eprintln!("SKIPPED draws_test_digits_and_predicts_their_labels_under_xvfb: no GPU adapter");
        return;
    }
    let began = Instant::now();
    // Kept after the run (under target/tmp) so the screenshots can be looked at.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("digits_app-xvfb");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (checkpoint, acc) = quick_checkpoint(&dir);
    assert!(acc > 0.9, "300 steps should reach 90 % test accuracy, got {acc}");
    let trained = began.elapsed().as_secs_f64();

    let test = Mnist::test().expect("MNIST test set");
    // The first three test images (a 7, a 2 and a 1).
    for index in 0..3 {
        let label = test.label(index).expect("label");
        let shot = dir.join(format!("digit-{index}.png"));
        let started = Instant::now();
        let out = Command::new("xvfb-run")
            .args(["-a", "-s", "-screen 0 1024x768x24"])
            .arg(env!("CARGO_BIN_EXE_digits_app"))
            .arg("--checkpoint")
            .arg(&checkpoint)
            .arg("--script")
            .arg(format!("draw={index},screenshot={}", shot.display()))
            .env("XDG_RUNTIME_DIR", std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()))
            .output()
            .expect("running xvfb-run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "digits_app failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
        let line = stdout
            .lines()
            .find(|l| l.starts_with("predicted "))
            .unwrap_or_else(|| panic!("no prediction printed:\n{stdout}\n{stderr}"));
        let digit: u8 =
            line["predicted ".len()..].split_whitespace().next().and_then(|d| d.parse().ok()).expect("a digit");
        assert_eq!(digit, label, "test image {index}: the app predicted {digit}, the label is {label} ({line})");
        let (w, h, white) = white_pixels(&shot);
        assert!(w >= 600 && h >= 400, "screenshot is {w}x{h}");
        // The canvas is 336 points for 28 cells: each fully inked cell is 144 white pixels.
        assert!(white >= 20 * 144, "screenshot shows only {white} white pixels: no drawing on it");
        eprintln!("test image {index}: {line}; {white} white pixels; {:.1} s", started.elapsed().as_secs_f64());
    }
    // Without a checkpoint the Draw tab says how to make one; the script screenshots that
    // and exits with status 1.
    let shot = dir.join("no-checkpoint.png");
    let out = Command::new("xvfb-run")
        .args(["-a", "-s", "-screen 0 1024x768x24"])
        .arg(env!("CARGO_BIN_EXE_digits_app"))
        .arg("--checkpoint")
        .arg(dir.join("missing.safetensors"))
        .arg("--script")
        .arg(format!("draw=0,screenshot={}", shot.display()))
        .env("XDG_RUNTIME_DIR", std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into()))
        .output()
        .expect("running xvfb-run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a missing checkpoint should end the script with status 1:\n{stderr}");
    assert!(stderr.contains("cargo run --release --example mnist"), "the message should name the command:\n{stderr}");
    assert!(shot.is_file(), "no screenshot of the missing-checkpoint message");

    eprintln!(
        "checkpoint {trained:.1} s (test accuracy {:.2} %), total {:.1} s",
        100.0 * acc,
        began.elapsed().as_secs_f64()
    );
    eprintln!("screenshots in {}", dir.display());
}
