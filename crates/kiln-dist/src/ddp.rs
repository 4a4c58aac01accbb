//! [`DistributedDataParallel`]: every rank holds a replica of the model, runs its share of the
//! batch, and before the optimizer step every gradient is replaced by the mean over the global
//! batch, identical on every rank, so every replica takes the same step.
//!
//! How a step's gradients travel: backward reports each parameter the moment its gradient is
//! final ([`Tensor::backward_with_hook`]); when the last gradient of a bucket arrives, the
//! bucket is flattened on the device and an asynchronous readback starts (GPU → host), and once
//! it lands the bucket's sum over ranks starts (a non-blocking collective). Backward meanwhile
//! goes on with earlier layers, so the copies and the communication overlap the remaining
//! compute. After backward, what is still in flight is awaited (bounded by the timeout), and
//! each gradient is uploaded again (host → GPU), divided by the global sample count.
//!
//! Why sample counts: ranks may hold different numbers of samples (an uneven last batch, or
//! none at all). Each rank backpropagates its loss scaled by its sample count, which turns a
//! mean loss into a sum over its samples, and appends the count to every bucket; dividing the
//! summed gradients by the summed count gives exactly the gradient of the mean loss over the
//! global batch, i.e. what one process would compute with the whole batch (up to rounding).
//! The loss must therefore be a *mean* over the rank's samples (the default reduction of
//! Kiln's losses).

use crate::bucket::{Plan, plan};
use crate::comm::{Backoff, Communicator, PendingSum, sum_blocking};
use crate::error::{DistError, Result};
use kiln_core::{DType, Tensor};
use kiln_nn::Module;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// PyTorch DDP's default bucket size.
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// The environment variable that sets [`DdpConfig::timeout`]'s default, in seconds.
pub const TIMEOUT_ENV: &str = "KILN_DIST_TIMEOUT";

/// Settings of a [`DistributedDataParallel`]; every rank must use the same `bucket_bytes`
/// (it is part of the model digest compared at start).
#[derive(Clone, Debug)]
pub struct DdpConfig {
    /// Gradient bytes per all-reduce (25 MiB by default; the first bucket holds at most 1 MiB,
    /// so communication starts early in backward). Smaller buckets start sooner and
    /// overlap more of backward; larger ones pay less per-message latency.
    pub bucket_bytes: usize,
    /// How long a rank waits for the others in any one collective before failing with
    /// [`DistError::Timeout`] (default: `KILN_DIST_TIMEOUT` seconds, else 300 s). It bounds how
    /// long a dead or failed rank can stall the rest.
    pub timeout: Duration,
}

impl Default for DdpConfig {
    fn default() -> Self {
        let secs = std::env::var(TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0);
        DdpConfig { bucket_bytes: DEFAULT_BUCKET_BYTES, timeout: Duration::from_secs_f64(secs.unwrap_or(300.0)) }
    }
}

/// What the gradient synchronisations cost (this rank's view).
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncStats {
    /// Synchronisations done.
    pub syncs: u64,
    /// Gradient bytes (f32) each rank sends through host memory per sync.
    pub bytes_per_sync: u64,
    /// Last sync: seconds from the first bucket's readback start to the last bucket's gradients
    /// being back on the device (readback, sum over ranks, upload; overlapped with backward).
    pub last_comm_secs: f64,
    /// Last sync: seconds spent waiting after backward returned (the communication that was
    /// not hidden behind compute).
    pub last_wait_secs: f64,
    /// Sums of the two above over every sync.
    pub total_comm_secs: f64,
    pub total_wait_secs: f64,
}

/// Data parallelism over a [`Communicator`]: see the [module docs](self) and the crate docs.
pub struct DistributedDataParallel {
    comm: Box<dyn Communicator>,
    params: Vec<Tensor>,
    plan: Plan,
    cfg: DdpConfig,
    /// Samples backpropagated since the last sync (on this rank).
    samples: usize,
    syncing: bool,
    failed: bool,
    stats: SyncStats,
}

impl DistributedDataParallel {
    /// Joins the group: checks that every rank holds the same model (a digest of parameter and
    /// buffer names, shapes and dtypes, compared with rank 0's: [`DistError::ModelMismatch`]),
    /// then copies rank 0's parameters and buffers into every other rank's model.
    ///
    /// Parameters must be f32 (keep f32 master weights under autocast).
    pub fn new(model: &(impl Module + ?Sized), comm: Box<dyn Communicator>, cfg: DdpConfig) -> Result<Self> {
        let op = "DistributedDataParallel::new";
        let named = model.named_parameters();
        let buffers = model.named_buffers();
        if named.is_empty() {
            return Err(DistError::Invalid { op, msg: "the model has no parameters".into() });
        }
        if cfg.bucket_bytes == 0 {
            return Err(DistError::Invalid { op, msg: "bucket_bytes must be at least 1".into() });
        }
        if let Some((name, t)) = named.iter().find(|(_, t)| t.dtype() != DType::F32) {
            return Err(DistError::Invalid {
                op,
                msg: format!("parameter {name:?} is {}; only f32 parameters can be synchronised", t.dtype()),
            });
        }
        let params: Vec<Tensor> = named.iter().map(|(_, t)| t.clone()).collect();
        let plan = plan(&params, cfg.bucket_bytes);
        let mut ddp = DistributedDataParallel {
            comm,
            params,
            plan,
            cfg,
            samples: 0,
            syncing: true,
            failed: false,
            stats: SyncStats::default(),
        };
        ddp.stats.bytes_per_sync = ddp.params.iter().map(|p| p.numel() as u64 * 4).sum();
        ddp.check_same_model(&named, &buffers)?;
        let mut all: Vec<Tensor> = ddp.params.clone();
        all.extend(buffers.into_iter().map(|(_, t)| t));
        ddp.broadcast_from_root(&all)?;
        Ok(ddp)
    }

    /// This rank's index.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// How many ranks train together.
    pub fn world(&self) -> usize {
        self.comm.world()
    }

    /// The transport, rank and world, for logs.
    pub fn describe(&self) -> String {
        self.comm.describe()
    }

    /// Gives the communicator back (to build another `DistributedDataParallel` on the same
    /// group: MPI can be initialized once per process).
    pub fn into_communicator(self) -> Box<dyn Communicator> {
        self.comm
    }

    /// What the synchronisations so far cost.
    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    /// The synchronised parameters, in the model's order.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// Backpropagates `loss` (a mean over this rank's `samples` samples of the global batch)
    /// and, unless inside [`no_sync`](Self::no_sync), synchronises: afterwards every
    /// parameter's gradient is the mean over all samples of all ranks since the last sync, the
    /// same on every rank. `samples` must be at least 1; a rank without samples in a step calls
    /// [`sync`](Self::sync) instead, as the others call `backward`.
    ///
    /// Any error here leaves the ranks out of step: the group is unusable afterwards.
    pub fn backward(&mut self, loss: &Tensor, samples: usize) -> Result<()> {
        self.usable("backward")?;
        if samples == 0 {
            return Err(DistError::Invalid {
                op: "backward",
                msg: "samples must be at least 1 (a rank without samples calls sync())".into(),
            });
        }
        let outcome = self.backward_inner(loss, samples);
        self.fail_on_error(outcome)
    }

    /// Synchronises the gradients accumulated since the last sync (a rank with no samples this
    /// step contributes zeros and a count of 0). Every rank must call `backward` (outside
    /// `no_sync`) or `sync` the same number of times.
    pub fn sync(&mut self) -> Result<()> {
        self.usable("sync")?;
        let outcome = {
            let mut round = Round::new(&self.plan, self.samples);
            self.finish(&mut round, Instant::now())
        };
        self.fail_on_error(outcome)
    }

    /// Runs `f` with synchronisation off: backward only accumulates gradients (and sample
    /// counts) locally, without communicating, like PyTorch DDP's `no_sync()`. The next
    /// `backward` outside it (or `sync`) averages everything accumulated.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// # use kiln_dist::{DdpConfig, DistributedDataParallel, Solo};
    /// # use kiln_nn::{Linear, Module};
    /// # let d = Device::cpu();
    /// # let model = Linear::new(2, 1, false, &d).unwrap();
    /// let mut ddp = DistributedDataParallel::new(&model, Box::new(Solo), DdpConfig::default()).unwrap();
    /// let micro = |v: f64| model.forward(&Tensor::full(&[4, 2], v, &d).unwrap()).unwrap().mean_all().unwrap();
    /// ddp.no_sync(|ddp| ddp.backward(&micro(1.0), 4)).unwrap(); // local only
    /// ddp.backward(&micro(3.0), 4).unwrap();                    // syncs both micro-batches
    /// assert_eq!(model.weight.grad().unwrap().to_vec::<f32>().unwrap(), vec![2.0, 2.0]);
    /// ```
    pub fn no_sync<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let previous = std::mem::replace(&mut self.syncing, false);
        let out = f(self);
        self.syncing = previous;
        out
    }

    /// Waits until every rank reaches this point (bounded by the timeout).
    pub fn barrier(&mut self) -> Result<()> {
        self.usable("barrier")?;
        let outcome = sum_blocking(self.comm.as_mut(), "barrier", vec![0.0], self.cfg.timeout).map(|_| ());
        self.fail_on_error(outcome)
    }

    /// Runs `save` on rank 0 only (write a checkpoint there), then a barrier, so that no rank
    /// goes on (and, say, reads the file) before it is completely written. A failure on rank 0
    /// is reported on every rank ([`DistError::Remote`] on the others).
    pub fn save_on_root(&mut self, save: impl FnOnce() -> kiln_core::Result<()>) -> Result<()> {
        self.usable("save_on_root")?;
        let local = if self.rank() == 0 { save() } else { Ok(()) };
        let flag = if local.is_err() { 1.0 } else { 0.0 };
        let outcome = sum_blocking(self.comm.as_mut(), "save_on_root", vec![flag], self.cfg.timeout);
        let summed = self.fail_on_error(outcome)?;
        local?;
        if summed[0] != 0.0 {
            return Err(DistError::Remote { op: "save_on_root", rank: 0, msg: "saving failed on rank 0".into() });
        }
        Ok(())
    }

    fn usable(&self, op: &'static str) -> Result<()> {
        if self.failed {
            return Err(DistError::Invalid {
                op,
                msg: "an earlier collective failed on this rank; the group is out of step".into(),
            });
        }
        Ok(())
    }

    fn fail_on_error<T>(&mut self, outcome: Result<T>) -> Result<T> {
        if outcome.is_err() {
            self.failed = true;
            self.comm.poison();
        }
        outcome
    }

    fn backward_inner(&mut self, loss: &Tensor, samples: usize) -> Result<()> {
        let seed = Tensor::full(loss.shape(), samples as f64, loss.device())?.to_dtype(loss.dtype())?;
        self.samples += samples;
        if !self.syncing {
            loss.backward_with(&seed)?;
            return Ok(());
        }
        let mut round = Round::new(&self.plan, self.samples);
        let mut failure: Option<DistError> = None;
        {
            let DistributedDataParallel { comm, params, plan, .. } = self;
            let comm: &mut dyn Communicator = comm.as_mut();
            let result = loss.backward_with_hook(&seed, &mut |leaf| {
                let Some(i) = params.iter().position(|p| p.same(leaf)) else { return Ok(()) };
                match round.gradient_ready(plan, params, plan.bucket_of[i]).and_then(|()| round.advance(comm)) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let msg = e.to_string();
                        failure = Some(e);
                        Err(kiln_core::Error::Autograd { op: "DistributedDataParallel", msg })
                    }
                }
            });
            if let Err(e) = result {
                return Err(failure.take().unwrap_or(DistError::Kiln(e)));
            }
        }
        let after_backward = Instant::now();
        self.finish(&mut round, after_backward)
    }

    /// Stages the buckets backward never completed (parameters without gradients count as
    /// zeros), waits for every sum, and writes the averaged gradients.
    fn finish(&mut self, round: &mut Round, waiting_since: Instant) -> Result<()> {
        for b in 0..self.plan.buckets.len() {
            if matches!(round.stages[b], Stage::Filling { .. }) {
                round.stage(&self.plan, &self.params, b)?;
            }
        }
        let mut backoff = Backoff::default();
        loop {
            round.advance(self.comm.as_mut())?;
            if round.stages.iter().all(|s| matches!(s, Stage::Reduced(_))) {
                break;
            }
            let waited = waiting_since.elapsed();
            if waited >= self.cfg.timeout {
                return Err(DistError::Timeout {
                    op: "gradient all-reduce",
                    rank: self.rank(),
                    world: self.world(),
                    waited,
                });
            }
            backoff.pause();
        }
        for (b, members) in self.plan.buckets.iter().enumerate() {
            let Stage::Reduced(sum) = &round.stages[b] else { unreachable!("checked above") };
            let count = sum.last().copied().unwrap_or(0.0);
            if count <= 0.0 {
                return Err(DistError::Invalid {
                    op: "sync",
                    msg: "no rank had any samples since the last sync".into(),
                });
            }
            let scale = 1.0 / count;
            let mut offset = 0;
            for &i in members {
                let p = &self.params[i];
                let n = p.numel();
                let mean: Vec<f32> = sum[offset..offset + n].iter().map(|g| g * scale).collect();
                offset += n;
                p.set_grad(Some(Tensor::from_vec(mean, p.shape(), p.device())?))?;
            }
        }
        self.samples = 0;
        let (comm, wait) =
            (round.first_start.map_or(0.0, |t| t.elapsed().as_secs_f64()), waiting_since.elapsed().as_secs_f64());
        self.stats.syncs += 1;
        self.stats.last_comm_secs = comm;
        self.stats.last_wait_secs = wait;
        self.stats.total_comm_secs += comm;
        self.stats.total_wait_secs += wait;
        Ok(())
    }

    /// Compares model digests across ranks (one sum of a `world × 4` vector: each rank writes
    /// its digest, in 16-bit pieces that f32 holds exactly, into its own slot).
    fn check_same_model(&mut self, named: &[(String, Tensor)], buffers: &[(String, Tensor)]) -> Result<()> {
        let digest = model_digest(named, buffers, self.cfg.bucket_bytes);
        let (rank, world) = (self.rank(), self.world());
        let mut slots = vec![0.0f32; world * 4];
        for k in 0..4 {
            slots[rank * 4 + k] = ((digest >> (16 * k)) & 0xffff) as f32;
        }
        let outcome = sum_blocking(self.comm.as_mut(), "model digest", slots, self.cfg.timeout);
        let all = self.fail_on_error(outcome)?;
        let of = |r: usize| (0..4).fold(0u64, |d, k| d | ((all[r * 4 + k] as u64) << (16 * k)));
        let root = of(0);
        if let Some(r) = (1..world).find(|&r| of(r) != root) {
            let detail = if r == rank {
                format!("{} parameters, {} buffers", named.len(), buffers.len())
            } else {
                "a different model".into()
            };
            self.failed = true;
            return Err(DistError::ModelMismatch { rank: r, digest: of(r), root, detail });
        }
        Ok(())
    }

    /// Copies rank 0's values of `tensors` into every rank's, a bucket at a time.
    fn broadcast_from_root(&mut self, tensors: &[Tensor]) -> Result<()> {
        let root = self.rank() == 0;
        for members in plan(tensors, self.cfg.bucket_bytes).buckets {
            let len: usize = members.iter().map(|&i| tensors[i].numel()).sum();
            let mut data = Vec::with_capacity(len);
            if root {
                for &i in &members {
                    data.extend(tensors[i].to_dtype(DType::F32)?.to_vec::<f32>()?);
                }
            } else {
                data.resize(len, 0.0);
            }
            let outcome = sum_blocking(self.comm.as_mut(), "broadcast of rank 0's parameters", data, self.cfg.timeout);
            let values = self.fail_on_error(outcome)?;
            if root {
                continue;
            }
            let mut offset = 0;
            for &i in &members {
                let t = &tensors[i];
                let n = t.numel();
                let fresh = Tensor::from_vec(values[offset..offset + n].to_vec(), t.shape(), t.device())?
                    .to_dtype(t.dtype())?;
                offset += n;
                kiln_core::no_grad(|| t.set_data(&fresh))?;
            }
        }
        Ok(())
    }
}

/// FNV-1a over every name, shape and dtype (and the bucket size, which fixes the collectives).
fn model_digest(named: &[(String, Tensor)], buffers: &[(String, Tensor)], bucket_bytes: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&(bucket_bytes as u64).to_le_bytes());
    for (kind, list) in [("param", named), ("buffer", buffers)] {
        for (name, t) in list {
            eat(kind.as_bytes());
            eat(name.as_bytes());
            eat(&[0]);
            eat(format!("{}", t.dtype()).as_bytes());
            for &d in t.shape() {
                eat(&(d as u64).to_le_bytes());
            }
        }
    }
    h
}

type Readback = Pin<Box<dyn Future<Output = kiln_core::Result<Vec<f32>>>>>;

/// Where one bucket is in a synchronisation.
enum Stage {
    /// Waiting for this many more gradients from backward.
    Filling(usize),
    /// Flattened on the device, being read back to the host.
    Staging(Readback),
    /// On the host (count appended), waiting for the earlier buckets' sums to start.
    Staged(Vec<f32>),
    /// Its sum over ranks is in flight.
    Reducing(Box<dyn PendingSum>),
    /// Summed over every rank.
    Reduced(Vec<f32>),
}

/// One synchronisation's buckets. Sums start strictly in bucket order, so every rank issues
/// the same collectives in the same sequence even if their backwards report gradients in a
/// different order.
struct Round {
    stages: Vec<Stage>,
    next_start: usize,
    first_start: Option<Instant>,
    samples: f32,
}

impl Round {
    fn new(plan: &Plan, samples: usize) -> Round {
        let stages = plan.buckets.iter().map(|members| Stage::Filling(members.len())).collect();
        Round { stages, next_start: 0, first_start: None, samples: samples as f32 }
    }

    /// Backward finished one gradient of bucket `b`; stages the bucket when it was the last.
    fn gradient_ready(&mut self, plan: &Plan, params: &[Tensor], b: usize) -> Result<()> {
        if let Stage::Filling(left) = &mut self.stages[b] {
            *left -= 1;
            if *left == 0 {
                self.stage(plan, params, b)?;
            }
        }
        Ok(())
    }

    /// Flattens bucket `b`'s gradients into one device tensor and starts reading it back.
    fn stage(&mut self, plan: &Plan, params: &[Tensor], b: usize) -> Result<()> {
        self.first_start.get_or_insert_with(Instant::now);
        let mut flat = Vec::with_capacity(plan.buckets[b].len());
        for &i in &plan.buckets[b] {
            let p = &params[i];
            let g = match p.grad() {
                Some(g) => g.contiguous()?,
                None => Tensor::zeros(p.shape(), p.device())?,
            };
            flat.push(g.reshape(&[g.numel()])?);
        }
        let joined = if flat.len() == 1 { flat.remove(0) } else { Tensor::cat(&flat, 0)? };
        self.stages[b] = Stage::Staging(Box::pin(async move { joined.to_vec_async::<f32>().await }));
        Ok(())
    }

    /// Moves every bucket as far as it can go without blocking.
    fn advance(&mut self, comm: &mut dyn Communicator) -> Result<()> {
        let mut cx = Context::from_waker(Waker::noop());
        for stage in &mut self.stages {
            if let Stage::Staging(readback) = stage
                && let Poll::Ready(values) = readback.as_mut().poll(&mut cx)
            {
                let mut values = values?;
                values.push(self.samples);
                *stage = Stage::Staged(values);
            }
        }
        while let Some(stage) = self.stages.get_mut(self.next_start) {
            if !matches!(stage, Stage::Staged(_)) {
                break;
            }
            let Stage::Staged(values) = std::mem::replace(stage, Stage::Filling(0)) else { unreachable!() };
            *stage = Stage::Reducing(comm.start_sum(values)?);
            self.next_start += 1;
        }
        for stage in &mut self.stages {
            if let Stage::Reducing(pending) = stage
                && let Some(sum) = pending.poll()?
            {
                *stage = Stage::Reduced(sum);
            }
        }
        Ok(())
    }
}
