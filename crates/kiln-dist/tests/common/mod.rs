//! What the equality tests share, in-process and under mpirun: two small models (an MLP and a
//! transformer block with a head, no dropout), a deterministic dataset, the single-process
//! reference training and one rank's data-parallel training of the same run.
#![allow(dead_code)]

use kiln_core::{Device, Tensor};
use kiln_data::{DataLoader, VecBatcher, VecDataset};
use kiln_dist::{Communicator, DdpConfig, DistError, DistributedDataParallel};
use kiln_nn::module::prefixed;
use kiln_nn::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use kiln_nn::{Linear, Module, ModuleExt, Relu, Sequential, TransformerBlock};
use std::sync::{Mutex, MutexGuard};

pub const CLASSES: usize = 5;
/// Samples in the dataset: with a global batch of 8, every epoch ends with a batch of 1, so
/// ranks 1 and 2 get nothing in that step (the uneven-last-batch case).
pub const SAMPLES: u32 = 17;
pub const GLOBAL_BATCH: usize = 8;
pub const STEPS: usize = 10;
pub const SEQ: usize = 4;
pub const WIDTH: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Mlp,
    Transformer,
}

impl Kind {
    pub fn parse(s: &str) -> Kind {
        if s == "transformer" { Kind::Transformer } else { Kind::Mlp }
    }
}

/// Kiln's generator is process-global: builds that must be reproducible hold this lock.
pub fn seeded(seed: u64) -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    kiln_core::manual_seed(seed);
    guard
}

pub struct Tiny {
    kind: Kind,
    body: Sequential,
    block: Option<TransformerBlock>,
    head: Linear,
}

impl Tiny {
    /// `hidden` lets a test build a mismatched model on purpose.
    pub fn build(kind: Kind, seed: u64, hidden: usize, device: &Device) -> kiln_core::Result<Tiny> {
        let _g = seeded(seed);
        Ok(match kind {
            Kind::Mlp => Tiny {
                kind,
                body: Sequential::new()
                    .add(Linear::new(13, hidden, true, device)?)
                    .add(Relu)
                    .add(Linear::new(hidden, hidden, true, device)?)
                    .add(Relu),
                block: None,
                head: Linear::new(hidden, CLASSES, true, device)?,
            },
            Kind::Transformer => Tiny {
                kind,
                body: Sequential::new(),
                block: Some(TransformerBlock::new(WIDTH, 2, 2, 0.0, device)?),
                head: Linear::new(WIDTH, CLASSES, true, device)?,
            },
        })
    }

    pub fn input_width(&self) -> usize {
        match self.kind {
            Kind::Mlp => 13,
            Kind::Transformer => SEQ * WIDTH,
        }
    }

    /// Mean cross-entropy over the samples `ids` (each sample: one label, or one per token).
    pub fn loss(&self, ids: &[u32], device: &Device) -> kiln_core::Result<Tensor> {
        let n = ids.len();
        let w = self.input_width();
        let x: Vec<f32> = ids.iter().flat_map(|&i| sample(i, w)).collect();
        match self.kind {
            Kind::Mlp => {
                let y: Vec<u32> = ids.iter().map(|&i| label(i, 0)).collect();
                let logits = self.forward(&Tensor::from_vec(x, &[n, w], device)?)?;
                kiln_nn::loss::cross_entropy_loss(&logits, &Tensor::from_vec(y, &[n], device)?)
            }
            Kind::Transformer => {
                let y: Vec<u32> = ids.iter().flat_map(|&i| (0..SEQ).map(move |t| label(i, t))).collect();
                let logits =
                    self.forward(&Tensor::from_vec(x, &[n, SEQ, WIDTH], device)?)?.reshape(&[n * SEQ, CLASSES])?;
                kiln_nn::loss::cross_entropy_loss(&logits, &Tensor::from_vec(y, &[n * SEQ], device)?)
            }
        }
    }
}

impl Module for Tiny {
    fn forward(&self, x: &Tensor) -> kiln_core::Result<Tensor> {
        let h = match &self.block {
            Some(b) => b.forward(x)?,
            None => self.body.forward(x)?,
        };
        self.head.forward(&h)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = match &self.block {
            Some(b) => prefixed("block", b.named_parameters()),
            None => prefixed("body", self.body.named_parameters()),
        };
        out.extend(prefixed("head", self.head.named_parameters()));
        out
    }
}

/// Sample `i`'s `w` inputs, from a generator of its own (any rank can make any sample).
pub fn sample(i: u32, w: usize) -> Vec<f32> {
    let mut s = 0x9e37_79b9_7f4a_7c15u64 ^ (u64::from(i) * 0x1000_0001);
    (0..w)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn label(i: u32, t: usize) -> u32 {
    ((i as usize * 7 + t * 3) % CLASSES) as u32
}

fn loader(shard: Option<(usize, usize)>) -> DataLoader<VecDataset<u32>, VecBatcher> {
    let l =
        DataLoader::new(VecDataset::new((0..SAMPLES).collect()), VecBatcher, GLOBAL_BATCH).expect("loader").shuffle(5);
    match shard {
        Some((rank, world)) => l.shard(rank, world).expect("shard"),
        None => l,
    }
}

/// The first `STEPS` batches (of `shard`'s part), across epochs.
pub fn schedule(shard: Option<(usize, usize)>) -> Vec<Vec<u32>> {
    let l = loader(shard);
    (0..).flat_map(|e| l.epoch(e).map(|b| b.expect("batch")).collect::<Vec<_>>()).take(STEPS).collect()
}

/// Adam for the MLP. SGD with momentum for the transformer: its key projection's bias has a
/// gradient of exactly zero in exact arithmetic (softmax ignores a shift shared by a row's
/// scores), so in floats it is rounding noise, which Adam would scale up to full-size steps
/// whose signs depend on the summation order.
fn optimizer(kind: Kind, model: &Tiny) -> Box<dyn Optimizer> {
    match kind {
        Kind::Mlp => {
            Box::new(Adam::new(model.parameters(), AdamConfig { lr: 1e-2, ..Default::default() }).expect("adam"))
        }
        Kind::Transformer => {
            Box::new(Sgd::new(model.parameters(), SgdConfig { momentum: 0.9, ..SgdConfig::new(0.05) }).expect("sgd"))
        }
    }
}

pub fn values(model: &Tiny) -> Vec<Vec<f32>> {
    model.parameters().iter().map(|p| p.to_vec::<f32>().expect("read")).collect()
}

/// One process, whole batches: what data parallelism must reproduce.
pub fn train_reference(kind: Kind, device: &Device) -> Vec<Vec<f32>> {
    let model = Tiny::build(kind, 100, 17, device).expect("model");
    let mut opt = optimizer(kind, &model);
    for ids in schedule(None) {
        let loss = model.loss(&ids, device).expect("loss");
        opt.zero_grad();
        loss.backward().expect("backward");
        opt.step().expect("step");
    }
    values(&model)
}

/// One rank's data-parallel run of the same training. Every rank initialises differently
/// (seed 100 + rank): the broadcast from rank 0 must make them equal. `micro` splits each
/// rank's part into that many micro-batches, all but the last under `no_sync`.
pub fn train_rank(
    kind: Kind,
    device: &Device,
    comm: Box<dyn Communicator>,
    cfg: DdpConfig,
    micro: usize,
) -> Result<Vec<Vec<f32>>, DistError> {
    train_rank_keep(kind, device, comm, cfg, micro).map(|(v, _)| v)
}

/// What [`train_rank_keep`] hands back: the trained parameters' values (as [`values`] reads
/// them) and the communicator.
pub type ValuesAndComm = (Vec<Vec<f32>>, Box<dyn Communicator>);

/// [`train_rank`], handing the communicator back for the next run.
pub fn train_rank_keep(
    kind: Kind,
    device: &Device,
    comm: Box<dyn Communicator>,
    cfg: DdpConfig,
    micro: usize,
) -> Result<ValuesAndComm, DistError> {
    let (rank, world) = (comm.rank(), comm.world());
    let model = Tiny::build(kind, 100 + rank as u64, 17, device)?;
    let mut ddp = DistributedDataParallel::new(&model, comm, cfg)?;
    let mut opt = optimizer(kind, &model);
    for ids in schedule(Some((rank, world))) {
        opt.zero_grad();
        if ids.is_empty() {
            ddp.sync()?;
        } else {
            let parts: Vec<&[u32]> = ids.chunks(ids.len().div_ceil(micro)).collect();
            let (last, early) = parts.split_last().expect("non-empty");
            for part in early {
                let loss = model.loss(part, device)?;
                ddp.no_sync(|ddp| ddp.backward(&loss, part.len()))?;
            }
            ddp.backward(&model.loss(last, device)?, last.len())?;
        }
        opt.step()?;
    }
    Ok((values(&model), ddp.into_communicator()))
}

/// Largest |a − b| over largest |b|, per tensor; panics past `tol`.
pub fn assert_close(what: &str, got: &[Vec<f32>], want: &[Vec<f32>], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: parameter count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let scale = w.iter().fold(0f64, |m, x| m.max(f64::from(x.abs()))).max(1e-6);
        let diff = g.iter().zip(w).fold(0f64, |m, (a, b)| m.max(f64::from((a - b).abs())));
        assert!(
            diff / scale <= tol,
            "{what}: parameter {i} differs by {:.3e} relative (max |diff| {diff:.3e})",
            diff / scale
        );
    }
}
