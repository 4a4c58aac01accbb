//! The trainer thread: trains the `mnist` example's MLP on MNIST (Adam, cosine schedule, as
//! the example does) and reports its progress as events the UI reads without blocking.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread::JoinHandle;

use eframe::egui;
use kiln::{Device, Tensor, no_grad};
use kiln_data::{DataLoader, Mnist, MnistBatcher};
use kiln_nn::optim::{Adam, AdamConfig, Optimizer};
use kiln_nn::sched::{CosineAnnealingLr, LrScheduler};
use kiln_nn::{Module, ModuleExt, Sequential};

use crate::AnyResult;
use crate::model::ModelKind;

/// One training run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak Adam learning rate, cosine-decayed to 0 over the run.
    pub lr: f64,
    pub seed: u64,
    /// Stop after this many steps (all epochs when `None`).
    pub max_steps: Option<usize>,
    /// Steps between loss reports (each report reads the loss back: one sync).
    pub log_every: usize,
    /// Where the trained model is saved.
    pub out: PathBuf,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 1,
            batch_size: 128,
            lr: 1e-3,
            seed: 0,
            max_steps: None,
            log_every: 10,
            out: PathBuf::from(crate::APP_CHECKPOINT),
        }
    }
}

/// What the trainer reports, in order.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    Started {
        total_steps: usize,
        device: String,
    },
    /// Mean training loss over the steps since the last report.
    Loss {
        step: usize,
        loss: f64,
    },
    /// Test-set accuracy (fraction) after an epoch (or after the last step).
    Evaluated {
        epoch: usize,
        test_acc: f64,
    },
    Saved {
        path: PathBuf,
    },
    Stopped,
    Failed(String),
}

/// The UI's end of a training run.
pub struct Trainer {
    events: Receiver<TrainEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Trainer {
    /// Starts training on its own thread; it wakes the UI after each event.
    pub fn spawn(cfg: TrainConfig, device: Device, ctx: egui::Context) -> std::io::Result<Trainer> {
        let (tx, events) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("kiln-trainer".into()).spawn(move || {
            let emit = |event: TrainEvent| {
                let _ = tx.send(event);
                ctx.request_repaint();
            };
            if let Err(e) = train(&cfg, &device, &flag, emit) {
                let _ = tx.send(TrainEvent::Failed(e.to_string()));
                ctx.request_repaint();
            }
        })?;
        Ok(Trainer { events, stop, thread: Some(thread) })
    }

    /// Asks the run to stop after its current step.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The events that arrived since the last call, without waiting.
    pub fn poll(&self) -> Vec<TrainEvent> {
        let mut out = Vec::new();
        loop {
            match self.events.try_recv() {
                Ok(e) => out.push(e),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return out,
            }
        }
    }

    /// Whether the thread has ended.
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for Trainer {
    /// Closing the window stops the run rather than leaving a thread training.
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Trains the MLP on MNIST's training set on `device`, reporting through `emit`, and saves it
/// to `cfg.out`; returns early (without saving) when `stop` is set.
pub fn train(cfg: &TrainConfig, device: &Device, stop: &AtomicBool, mut emit: impl FnMut(TrainEvent)) -> AnyResult<()> {
    if cfg.epochs == 0 || cfg.batch_size == 0 || cfg.log_every == 0 || cfg.max_steps == Some(0) {
        return Err("epochs, batch size, log interval and step limit must each be at least 1".into());
    }
    let kind = ModelKind::Mlp;
    let (train_set, test_set) = (Mnist::train()?, Mnist::test()?);
    kiln::manual_seed(cfg.seed);
    let model = kind.build(device)?;
    let mut opt = Adam::new(model.parameters(), AdamConfig { lr: cfg.lr, ..Default::default() })?;
    let loader = DataLoader::new(train_set, MnistBatcher, cfg.batch_size)?.shuffle(cfg.seed);
    let total = (loader.len() * cfg.epochs).min(cfg.max_steps.unwrap_or(usize::MAX));
    let mut schedule = CosineAnnealingLr::new(cfg.lr, total as u64, 0.0)?;
    schedule.apply(&mut opt);
    emit(TrainEvent::Started { total_steps: total, device: device.describe() });

    let mut step = 0;
    'epochs: for epoch in 1..=cfg.epochs {
        model.train();
        // The loss is summed on the device and read back once per report.
        let mut window = Tensor::zeros(&[], device)?;
        let mut in_window = 0usize;
        for batch in loader.epoch(epoch as u64 - 1) {
            if stop.load(Ordering::Relaxed) {
                emit(TrainEvent::Stopped);
                return Ok(());
            }
            let batch = batch?;
            let n = batch.size;
            let x = kind.input(batch.images, n, device)?;
            let y = Tensor::from_vec(batch.labels, &[n], device)?;
            let loss = kiln_nn::loss::cross_entropy_loss(&model.forward(&x)?, &y)?;
            opt.zero_grad();
            loss.backward()?;
            opt.step()?;
            schedule.step(&mut opt);
            window = (&window + &loss.detach())?;
            in_window += 1;
            step += 1;
            if step % cfg.log_every == 0 || step == total {
                emit(TrainEvent::Loss { step, loss: window.item()? / in_window as f64 });
                window = Tensor::zeros(&[], device)?;
                in_window = 0;
            }
            if step == total {
                emit(TrainEvent::Evaluated { epoch, test_acc: accuracy(&model, kind, &test_set, device)? });
                break 'epochs;
            }
        }
        emit(TrainEvent::Evaluated { epoch, test_acc: accuracy(&model, kind, &test_set, device)? });
    }
    if let Some(dir) = cfg.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    kiln_nn::checkpoint::save(&model, &cfg.out)?;
    emit(TrainEvent::Saved { path: cfg.out.clone() });
    Ok(())
}

/// Fraction of `data` that `model` classifies right (evaluation mode, batches of 1000).
fn accuracy(model: &Sequential, kind: ModelKind, data: &Mnist, device: &Device) -> AnyResult<f64> {
    model.eval();
    let result = no_grad(|| -> AnyResult<f64> {
        let loader = DataLoader::new(data.clone(), MnistBatcher, 1000)?;
        let mut correct = Tensor::zeros(&[], device)?.to_dtype(kiln::DType::U32)?;
        for batch in loader.epoch(0) {
            let batch = batch?;
            let logits = model.forward(&kind.input(batch.images, batch.size, device)?)?;
            let y = Tensor::from_vec(batch.labels, &[batch.size], device)?;
            correct = (&correct + &logits.argmax(-1, false)?.eq(&y)?.sum_all()?)?;
        }
        Ok(correct.item()? / data.len() as f64)
    });
    model.train();
    result
}
