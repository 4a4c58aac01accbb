//! The MNIST training loop shared by the `mnist` example and its smoke test.
//!
//! The loop keeps the host off the device's critical path: the running loss and the count of
//! correct predictions are summed into device tensors, and read back only every
//! `log_every` steps and at the end of an epoch.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use kiln::data::{DataLoader, Mnist, MnistBatcher};
use kiln::nn::sched::CosineAnnealingLr;
use kiln::prelude::*;

use super::AnyResult;
use super::model::ModelKind;

/// Hyper-parameters of one run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub kind: ModelKind,
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate; it decays to zero along a cosine over the whole run.
    pub lr: f64,
    /// Seeds both the weight initialisation and the shuffling.
    pub seed: u64,
    /// Steps between reads of the running loss and accuracy.
    pub log_every: usize,
    /// Draw an indicatif progress bar (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

/// What one epoch achieved.
#[derive(Debug, Clone)]
pub struct EpochStats {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    /// Fraction in `[0, 1]`, measured on the training batches as they went by (with dropout on).
    pub train_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    /// Seconds spent in the training steps of this epoch (evaluation excluded).
    pub train_secs: f64,
    pub images_per_sec: f64,
}

/// Test-set images evaluated per forward pass.
const EVAL_BATCH: usize = 1000;

/// The MNIST splits, each truncated to its limit when one is given.
pub fn load_mnist(train_limit: Option<usize>, test_limit: Option<usize>) -> AnyResult<(Mnist, Mnist)> {
    let cut = |m: Mnist, limit: Option<usize>| match limit {
        Some(n) => m.take(n),
        None => m,
    };
    let train = cut(Mnist::train()?, train_limit);
    let test = cut(Mnist::test()?, test_limit);
    if train.is_empty() || test.is_empty() {
        return Err("the training and test sets must each keep at least one image".into());
    }
    Ok((train, test))
}

/// Trains a fresh model of `cfg.kind` on `train`, evaluating on `test` after every epoch;
/// `on_epoch` sees each epoch's statistics as soon as they exist.
pub fn train(
    cfg: &TrainConfig,
    device: &Device,
    train: Mnist,
    test: &Mnist,
    mut on_epoch: impl FnMut(&EpochStats),
) -> AnyResult<(Sequential, Vec<EpochStats>)> {
    if cfg.epochs == 0 || cfg.batch_size == 0 || cfg.log_every == 0 {
        return Err("--epochs and --batch-size must be at least 1".into());
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(format!("--lr must be a positive number, got {}", cfg.lr).into());
    }
    kiln::manual_seed(cfg.seed);
    let began = Instant::now();
    let model = cfg.kind.build(device)?;
    let mut opt = Adam::new(model.parameters(), AdamConfig { lr: cfg.lr, ..Default::default() })?;
    let loader = DataLoader::new(train, MnistBatcher, cfg.batch_size)?.shuffle(cfg.seed);
    let steps_per_epoch = loader.len();
    // Stepped once per batch, so the rate reaches its floor exactly at the last step.
    let mut schedule = CosineAnnealingLr::new(cfg.lr, (steps_per_epoch * cfg.epochs) as u64, 0.0)?;
    schedule.apply(&mut opt);
    let mut history = Vec::with_capacity(cfg.epochs);

    for epoch in 1..=cfg.epochs {
        model.train();
        let bar = progress_bar(cfg, epoch, steps_per_epoch);
        let start = Instant::now();
        let mut loss_sum = Tensor::zeros(&[], device)?;
        let mut correct = Tensor::zeros(&[], device)?.to_dtype(kiln::DType::U32)?;
        let mut seen = 0usize;
        for (i, batch) in loader.epoch(epoch as u64 - 1).enumerate() {
            let batch = batch?;
            let n = batch.size;
            let x = cfg.kind.input(batch.images, n, device)?;
            let y = Tensor::from_vec(batch.labels, &[n], device)?;

            let logits = model.forward(&x)?;
            let loss = kiln::nn::loss::cross_entropy_loss(&logits, &y)?;
            opt.zero_grad();
            loss.backward()?;
            opt.step()?;
            schedule.step(&mut opt);
            if epoch == 1 && i == 0 {
                // Mostly pipeline builds: what a warm pipeline cache (KILN_CACHE_DIR) saves.
                device.sync()?;
                let secs = began.elapsed().as_secs_f64();
                let built = match device.is_cpu() {
                    true => String::new(),
                    false => format!(" ({} pipelines built)", device.memory_stats().pipelines),
                };
                bar.suspend(|| println!("time to first step: {secs:.3} s{built}"));
            }

            // Sums stay on the device; `loss` is a batch mean, so weight it by the batch size.
            loss_sum = (&loss_sum + &(&loss.detach() * n as f64)?)?;
            correct = (&correct + &count_correct(&logits.detach(), &y)?)?;
            seen += n;
            bar.inc(1);
            // The only host reads of the step loop: one sync every `log_every` steps.
            if (i + 1) % cfg.log_every == 0 {
                let (l, c) = (loss_sum.item()?, correct.item()?);
                bar.set_message(format!(
                    "loss {:.4}  acc {:.2}%  {:.0} img/s",
                    l / seen as f64,
                    100.0 * c / seen as f64,
                    seen as f64 / start.elapsed().as_secs_f64()
                ));
            }
        }
        let (train_loss, train_correct) = (loss_sum.item()? / seen as f64, correct.item()?);
        let train_secs = start.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let (test_loss, test_acc) = evaluate(&model, cfg.kind, test, device)?;
        let stats = EpochStats {
            epoch,
            train_loss,
            train_acc: train_correct / seen as f64,
            test_loss,
            test_acc,
            train_secs,
            images_per_sec: seen as f64 / train_secs,
        };
        on_epoch(&stats);
        history.push(stats);
    }
    Ok((model, history))
}

/// Number of rows of `logits` whose arg-max is the label, as a 0-d u32 tensor.
pub fn count_correct(logits: &Tensor, labels: &Tensor) -> kiln::Result<Tensor> {
    logits.argmax(-1, false)?.eq(labels)?.sum_all()
}

/// Mean cross-entropy and accuracy of `model` on `data`, in evaluation mode.
pub fn evaluate(model: &Sequential, kind: ModelKind, data: &Mnist, device: &Device) -> AnyResult<(f64, f64)> {
    model.eval();
    let result = no_grad(|| -> AnyResult<(f64, f64)> {
        let loader = DataLoader::new(data.clone(), MnistBatcher, EVAL_BATCH)?;
        let mut loss_sum = Tensor::zeros(&[], device)?;
        let mut correct = Tensor::zeros(&[], device)?.to_dtype(kiln::DType::U32)?;
        for batch in loader.epoch(0) {
            let batch = batch?;
            let n = batch.size;
            let logits = model.forward(&kind.input(batch.images, n, device)?)?;
            let y = Tensor::from_vec(batch.labels, &[n], device)?;
            let loss = kiln::nn::loss::cross_entropy_loss(&logits, &y)?;
            loss_sum = (&loss_sum + &(&loss * n as f64)?)?;
            correct = (&correct + &count_correct(&logits, &y)?)?;
        }
        Ok((loss_sum.item()? / data.len() as f64, correct.item()? / data.len() as f64))
    });
    model.train();
    result
}

fn progress_bar(cfg: &TrainConfig, epoch: usize, steps: usize) -> ProgressBar {
    if !cfg.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    let style = ProgressStyle::with_template("epoch {prefix} [{bar:30.cyan/blue}] {pos}/{len} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{epoch}/{}", cfg.epochs));
    bar
}
