//! `kiln-mnist-steps`: N training steps of the `mnist` example's MLP (784-512-256-10, ReLU,
//! dropout 0.2, Adam + cosine schedule, batch 128), exactly its step loop, on synthetic batches
//! so that nothing else (IDX parsing, checksums, the loader thread) shows in a profile:
//!
//! ```text
//! cargo build --release -p kiln-bench --bin kiln-mnist-steps
//! valgrind --tool=callgrind target/release/kiln-mnist-steps 20      # instruction counts
//! target/release/kiln-mnist-steps 500 --device gpu                  # ms per step
//! ```
//!
//! Prints the mean ms per step after two warm-up steps, and the final loss (a sanity check
//! that the steps trained: it falls from ~2.3).

use kiln_core::{DType, Device, Result, Tensor};
use kiln_nn::optim::{Adam, AdamConfig, Optimizer};
use kiln_nn::sched::{CosineAnnealingLr, LrScheduler};
use kiln_nn::{Dropout, Linear, Module, ModuleExt, Relu, Sequential};
use std::time::Instant;

const BATCH: usize = 128;
/// Distinct synthetic batches cycled through (so the model sees the same data again).
const BATCHES: usize = 8;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut steps = 50usize;
    let mut device = Device::cpu();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--device" => device = Device::parse(&args.next().unwrap_or_default())?,
            n => {
                steps = n.parse().map_err(|_| {
                    kiln_core::Error::invalid(
                        "kiln-mnist-steps",
                        format!("usage: kiln-mnist-steps [STEPS] [--device D], got {n:?}"),
                    )
                })?
            }
        }
    }
    kiln_core::manual_seed(0);
    let model = Sequential::new()
        .add(Linear::new(784, 512, true, &device)?)
        .add(Relu)
        .add(Dropout::new(0.2))
        .add(Linear::new(512, 256, true, &device)?)
        .add(Relu)
        .add(Dropout::new(0.2))
        .add(Linear::new(256, 10, true, &device)?);
    let mut opt = Adam::new(model.parameters(), AdamConfig { lr: 1e-3, ..Default::default() })?;
    let mut schedule = CosineAnnealingLr::new(1e-3, steps as u64 + 2, 0.0)?;
    schedule.apply(&mut opt);
    // Inputs like normalised MNIST pixels; each label a function of its image, so there is
    // something to learn.
    let batches: Vec<(Tensor, Tensor)> = (0..BATCHES)
        .map(|_| -> Result<(Tensor, Tensor)> {
            let x = Tensor::randn(&[BATCH, 784], &device)?;
            let y = x.narrow(1, 0, 10)?.argmax(-1, false)?;
            Ok((x, y))
        })
        .collect::<Result<_>>()?;

    let mut loss_sum = Tensor::zeros(&[], &device)?;
    let mut correct = Tensor::zeros(&[], &device)?.to_dtype(DType::U32)?;
    let mut last = 0.0;
    let mut start = Instant::now();
    for i in 0..steps + 2 {
        if i == 2 {
            device.sync()?;
            start = Instant::now();
        }
        let (x, y) = &batches[i % BATCHES];
        let logits = model.forward(x)?;
        let loss = kiln_nn::loss::cross_entropy_loss(&logits, y)?;
        opt.zero_grad();
        loss.backward()?;
        opt.step()?;
        schedule.step(&mut opt);
        // The example's running sums, read every 50 steps.
        loss_sum = (&loss_sum + &(&loss.detach() * BATCH as f64)?)?;
        correct = (&correct + &logits.detach().argmax(-1, false)?.eq(y)?.sum_all()?)?;
        if (i + 1) % 50 == 0 {
            let _ = (loss_sum.item()?, correct.item()?);
        }
        if i == steps + 1 {
            last = loss.item()?;
        }
    }
    device.sync()?;
    let ms = start.elapsed().as_secs_f64() * 1e3 / steps.max(1) as f64;
    println!("{steps} steps on {}: {ms:.3} ms/step, final loss {last:.4}", device.describe());
    Ok(())
}
