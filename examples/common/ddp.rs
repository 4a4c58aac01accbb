//! `mnist --ddp`: the MNIST loop of `train.rs`, data-parallel over the processes `mpirun`
//! started (one per GPU), or alone without mpirun. Built only with the `mpi` feature.
//!
//! `--batch-size` is the global batch: each of N ranks trains on its 1/N of every batch
//! (`DataLoader::shard`), and the gradients are averaged over the whole batch before each
//! step, so N processes follow the one-process run. Every rank evaluates the test set (its
//! parameters are the same) and rank 0 prints and saves.

use std::time::Instant;

use kiln::data::{DataLoader, Mnist, MnistBatcher};
use kiln::dist::{DdpConfig, DistributedDataParallel};
use kiln::nn::sched::CosineAnnealingLr;
use kiln::prelude::*;

use super::AnyResult;
use super::train::{EpochStats, TrainConfig, count_correct, evaluate};

/// What a data-parallel run returns: the model, its history and the group (for the rank and
/// for saving on rank 0 behind a barrier).
pub struct DdpRun {
    pub model: Sequential,
    pub history: Vec<EpochStats>,
    pub ddp: DistributedDataParallel,
}

/// Trains like [`super::train::train`] on this rank's shards; `on_epoch` runs on every rank.
pub fn train_ddp(
    cfg: &TrainConfig,
    device: Option<Device>,
    train: Mnist,
    test: &Mnist,
    mut on_epoch: impl FnMut(usize, &EpochStats),
) -> AnyResult<DdpRun> {
    let comm = kiln::dist::init()?;
    let (rank, world) = (comm.rank(), comm.world());
    let device = match device {
        Some(d) => d,
        None => kiln::dist::local_device()?,
    };
    if rank == 0 {
        println!("data parallel: {world} process(es); rank 0 on {}", device.describe());
    }
    kiln::manual_seed(cfg.seed);
    let model = cfg.kind.build(&device)?;
    // Rank 0's initial weights go to every rank.
    let mut ddp = DistributedDataParallel::new(&model, comm, DdpConfig::default())?;
    // Different dropout masks per rank, as different samples get them.
    kiln::manual_seed(cfg.seed.wrapping_add(1 + rank as u64));
    let mut opt = Adam::new(model.parameters(), AdamConfig { lr: cfg.lr, ..Default::default() })?;
    let loader = DataLoader::new(train, MnistBatcher, cfg.batch_size)?.shuffle(cfg.seed).shard(rank, world)?;
    let steps_per_epoch = loader.len();
    let mut schedule = CosineAnnealingLr::new(cfg.lr, (steps_per_epoch * cfg.epochs) as u64, 0.0)?;
    schedule.apply(&mut opt);
    let mut history = Vec::with_capacity(cfg.epochs);
    for epoch in 1..=cfg.epochs {
        model.train();
        let start = Instant::now();
        let mut loss_sum = Tensor::zeros(&[], &device)?;
        let mut correct = Tensor::zeros(&[], &device)?.to_dtype(kiln::DType::U32)?;
        let mut seen = 0usize;
        for batch in loader.epoch(epoch as u64 - 1) {
            let batch = batch?;
            let n = batch.size;
            opt.zero_grad();
            if n == 0 {
                // A short last batch left this rank nothing: it still takes part in the sync.
                ddp.sync()?;
            } else {
                let x = cfg.kind.input(batch.images, n, &device)?;
                let y = Tensor::from_vec(batch.labels, &[n], &device)?;
                let logits = model.forward(&x)?;
                let loss = kiln::nn::loss::cross_entropy_loss(&logits, &y)?;
                ddp.backward(&loss, n)?;
                loss_sum = (&loss_sum + &(&loss.detach() * n as f64)?)?;
                correct = (&correct + &count_correct(&logits.detach(), &y)?)?;
                seen += n;
            }
            opt.step()?;
            schedule.step(&mut opt);
        }
        let seen_f = seen.max(1) as f64;
        let (train_loss, train_acc) = (loss_sum.item()? / seen_f, correct.item()? / seen_f);
        let train_secs = start.elapsed().as_secs_f64();
        let (test_loss, test_acc) = evaluate(&model, cfg.kind, test, &device)?;
        let stats = EpochStats {
            epoch,
            train_loss,
            train_acc,
            test_loss,
            test_acc,
            train_secs,
            images_per_sec: (seen * world) as f64 / train_secs,
        };
        on_epoch(rank, &stats);
        history.push(stats);
    }
    Ok(DdpRun { model, history, ddp })
}
