//! Smoke tests of the `char_transformer` example: the very training loop
//! `cargo run --example char_transformer` runs (included by path), on a CI-sized model, on the
//! CPU backend and on a GPU adapter (lavapipe in CI), plus the example's handling of bad flags.
//!
//! A broken model stays near log2(83) ≈ 6.4 bits per character (uniform guessing) or the
//! unigram entropy of Moby-Dick, about 4.4; a working one passes 3.5 within a few hundred
//! small steps because it learns which letters follow which.

#[path = "../common/mod.rs"]
mod common;
#[path = "../char/train.rs"]
mod train;

use kiln::Device;
use kiln_data::TextDataset;
use train::{Activation, SampleConfig, TrainConfig, generate, load_moby_dick};

/// Well below the unigram entropy (≈ 4.4 bits/char) and the uniform guess (≈ 6.4).
const MAX_BPC: f64 = 3.5;

/// A model and run small enough for CI: two blocks of width 64, 32-character windows.
fn tiny(steps: usize, batch_size: usize) -> TrainConfig {
    TrainConfig {
        d_model: 64,
        layers: 2,
        heads: 4,
        mlp_ratio: 4,
        activation: Activation::Relu,
        dropout: 0.0,
        attn_dropout: 0.0,
        steps,
        batch_size,
        seq_len: 32,
        lr: 1e-2,
        final_lr_frac: 0.1,
        warmup: 10,
        weight_decay: 0.1,
        grad_clip: 1.0,
        seed: 0,
        eval_every: steps,
        eval_windows: 64,
        progress: false,
        max_minutes: None,
        memory_log: None,
    }
}

/// Trains `cfg` on `device`, checks the validation loss and that generation returns exactly
/// the requested number of characters.
fn trains_and_generates(cfg: &TrainConfig, device: &Device, text: &(TextDataset, TextDataset)) {
    let (train_text, val_text) = text;
    let start = std::time::Instant::now();
    let (model, history) = train::train(cfg, device, train_text, val_text, |_| {}).expect("training runs");
    let last = history.last().expect("one evaluation ran");
    eprintln!(
        "{device:?}: {} steps in {:.1} s, validation {:.3} bits/char",
        cfg.steps,
        start.elapsed().as_secs_f64(),
        last.val_bpc
    );
    assert!(
        last.val_bpc < MAX_BPC,
        "{device:?}: validation {:.3} bits/char after {} steps (history {history:?})",
        last.val_bpc,
        cfg.steps
    );

    for (temperature, top_k) in [(0.8, None), (1.0, Some(5)), (0.0, None)] {
        let sample = SampleConfig { temperature, top_k, seed: 1 };
        let out = generate(&model, train_text, "The whale", 40, sample, device).expect("generation runs");
        assert_eq!(out.chars().count(), 40, "temperature {temperature}, top-k {top_k:?}: {out:?}");
        assert!(!out.contains(kiln_data::UNKNOWN_ID_CHAR), "{out:?}");
    }
    // Prompts longer than the context are cropped, not rejected.
    let long = "Call me Ishmael. Some years ago, never mind how long precisely, having little money";
    let out = generate(&model, train_text, long, 5, SampleConfig { temperature: 1.0, top_k: None, seed: 2 }, device)
        .expect("long prompt");
    assert_eq!(out.chars().count(), 5);
}

/// The GPU adapter, or `None` (loudly) when there is none; `KILN_REQUIRE_GPU=1` makes that a failure.
fn gpu() -> Option<Device> {
    kiln_testkit::gpu(std::thread::current().name().unwrap_or("smoke"))
}

// 300 steps of 16 windows: about 3.2 bits/char, some 20 s on two cores.
#[test]
fn char_transformer_learns_on_cpu() {
    let text = load_moby_dick().expect("vendored Moby-Dick loads");
    trains_and_generates(&tiny(300, 16), &Device::cpu(), &text);
}

// Lavapipe runs this model at about a second per step, too slow to train it far: instead, a
// few steps must follow the CPU run (same seed, so same initial weights and batches) and the
// loss must already have left the uniform guess (log2 83 ≈ 6.4) behind (4.29 bits/char after 20 steps).
#[test]
fn char_transformer_trains_on_gpu_like_on_cpu() {
    let Some(gpu) = gpu() else { return };
    let (train_text, val_text) = load_moby_dick().expect("vendored Moby-Dick loads");
    let cfg = TrainConfig { eval_every: 10, eval_windows: 16, ..tiny(20, 8) };
    let run = |device: &Device| train::train(&cfg, device, &train_text, &val_text, |_| {}).expect("training runs");
    let (_, on_cpu) = run(&Device::cpu());
    let start = std::time::Instant::now();
    let (model, on_gpu) = run(&gpu);
    let bpc = |h: &[train::EvalPoint]| h.iter().map(|p| format!("{:.4}", p.val_bpc)).collect::<Vec<_>>().join(", ");
    eprintln!(
        "{gpu:?}: {} steps in {:.1} s, validation {} bits/char (cpu: {})",
        cfg.steps,
        start.elapsed().as_secs_f64(),
        bpc(&on_gpu),
        bpc(&on_cpu)
    );
    for (c, g) in on_cpu.iter().zip(&on_gpu) {
        assert!(
            (c.val_bpc - g.val_bpc).abs() < 0.02,
            "step {}: cpu {:.4} vs gpu {:.4} bits/char",
            c.step,
            c.val_bpc,
            g.val_bpc
        );
    }
    let last = on_gpu.last().expect("evaluated");
    assert!(last.val_bpc < 4.6, "gpu: {:.3} bits/char after {} steps", last.val_bpc, last.step);
    let out =
        generate(&model, &train_text, "Ahab", 10, SampleConfig { temperature: 1.0, top_k: Some(5), seed: 0 }, &gpu)
            .expect("generation");
    assert_eq!(out.chars().count(), 10, "{out:?}");
}

#[test]
fn sampling_rejects_bad_input() {
    let (train_text, _) = load_moby_dick().expect("vendored Moby-Dick loads");
    let cpu = Device::cpu();
    kiln::manual_seed(0);
    let model = train::CharTransformer::new(tiny(1, 1).model_config(train_text.vocab_size()), &cpu).expect("model");
    let ok = SampleConfig { temperature: 1.0, top_k: None, seed: 0 };
    let err = |prompt: &str, sample: SampleConfig| {
        generate(&model, &train_text, prompt, 3, sample, &cpu).expect_err("an error").to_string()
    };
    assert!(err("", ok).contains("at least one character"));
    assert!(err("日本", ok).contains("cannot be encoded"));
    assert!(err("a", SampleConfig { temperature: -1.0, ..ok }).contains("temperature"));
    assert!(err("a", SampleConfig { temperature: f64::NAN, ..ok }).contains("temperature"));
    assert_eq!(generate(&model, &train_text, "a", 0, ok, &cpu).expect("zero tokens"), "");

    let bad = TrainConfig { lr: -1.0, ..tiny(1, 1) };
    assert!(bad.validate().expect_err("negative lr").to_string().contains("--lr"));
    let bad = TrainConfig { seq_len: 0, ..tiny(1, 1) };
    assert!(bad.validate().expect_err("zero seq").to_string().contains("--seq-len"));
}

/// A leak through the causal mask would make the loss fall far below any honest model's, so
/// check it directly: changing the last character must not change any earlier prediction.
#[test]
fn predictions_ignore_later_characters() {
    let cpu = Device::cpu();
    kiln::manual_seed(0);
    let model = train::CharTransformer::new(tiny(1, 1).model_config(83), &cpu).expect("model");
    let logits = |ids: Vec<u32>| {
        let x = kiln::Tensor::from_vec(ids, &[1, 6], &cpu).expect("ids");
        kiln::no_grad(|| model.logits(&x)).expect("forward").to_vec::<f32>().expect("read")
    };
    let (a, b) = (logits(vec![5, 9, 1, 40, 2, 7]), logits(vec![5, 9, 1, 40, 2, 60]));
    let before_last = 5 * 83;
    assert_eq!(a[..before_last], b[..before_last], "earlier positions saw the last character");
    assert_ne!(a[before_last..], b[before_last..], "the last position ignores its own character");
}

/// What the example saves, a fresh model loads back to the same predictions.
#[test]
fn checkpoint_round_trip() {
    let cpu = Device::cpu();
    let config = tiny(1, 1).model_config(83);
    kiln::manual_seed(1);
    let saved = train::CharTransformer::new(config, &cpu).expect("model");
    kiln::manual_seed(2);
    let loaded = train::CharTransformer::new(config, &cpu).expect("model");
    let path = std::env::temp_dir().join(format!("kiln-char-smoke-{}.safetensors", std::process::id()));
    kiln_nn::checkpoint::save(&saved, &path).expect("save");
    kiln_nn::checkpoint::load(&loaded, &path).expect("load");
    let _ = std::fs::remove_file(&path);
    let x = kiln::Tensor::from_vec(vec![3u32, 1, 4, 1, 5], &[1, 5], &cpu).expect("ids");
    let (a, b) = kiln::no_grad(|| Ok::<_, kiln::Error>((saved.logits(&x)?, loaded.logits(&x)?))).expect("forward");
    assert_eq!(a.to_vec::<f32>().expect("read"), b.to_vec::<f32>().expect("read"));
}

/// The binary itself, when `cargo test` has built the examples (it does unless a single test
/// target is selected): bad flags give exit status 1 and an `Error:` line, never a panic.
#[test]
fn example_rejects_bad_flags() {
    let exe = std::env::current_exe().expect("test path");
    let target = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let bin = target.join("examples").join(format!("char_transformer{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        eprintln!("note: {} not built (single test target selected); skipped", bin.display());
        return;
    }
    let cases: &[(&[&str], &str)] = &[
        (&["--size", "huge"], "small or large"),
        (&["--steps", "0", "--device", "cpu"], "--steps"),
        (&["--lr", "fast"], "--lr"),
        (&["--device", "cpu", "--prompt", "日本"], "--prompt"),
        (&["--bogus"], "unexpected argument '--bogus'"),
    ];
    for (args, needle) in cases {
        let out = std::process::Command::new(&bin).args(*args).output().expect("run char_transformer");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("Error:") && stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
