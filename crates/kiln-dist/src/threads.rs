//! Data parallelism inside one process: one thread per device, each holding its own model
//! replica, summing gradients through host memory. wgpu devices cannot read each other's
//! buffers, so every transport stages through the host; here the host *is* shared, so a sum is
//! a vector add under a lock, done by whichever rank contributes last, in rank order (the same
//! result whatever the timing).

use crate::comm::{Communicator, PendingSum};
use crate::error::{DistError, Result};
use kiln_core::Device;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct Slot {
    parts: Vec<Option<Vec<f32>>>,
    result: Option<Arc<Vec<f32>>>,
    unread: usize,
    error: Option<String>,
}

struct State {
    slots: HashMap<u64, Slot>,
    /// Ranks whose communicator was dropped: they will never contribute again.
    gone: Vec<bool>,
}

struct Shared {
    world: usize,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One rank of an in-process group (made by [`ThreadComm::group`] or [`run_replicas`]).
/// Dropping it tells the others this rank is gone, so they fail at once with
/// [`DistError::PeerGone`] instead of waiting for the timeout.
pub struct ThreadComm {
    shared: Arc<Shared>,
    rank: usize,
    next: u64,
}

impl ThreadComm {
    /// `world` connected ranks, to be moved one to each thread.
    pub fn group(world: usize) -> Vec<ThreadComm> {
        let state = State { slots: HashMap::new(), gone: vec![false; world] };
        let shared = Arc::new(Shared { world, state: Mutex::new(state) });
        (0..world).map(|rank| ThreadComm { shared: shared.clone(), rank, next: 0 }).collect()
    }
}

impl Drop for ThreadComm {
    fn drop(&mut self) {
        self.shared.lock().gone[self.rank] = true;
    }
}

struct ThreadPending {
    shared: Arc<Shared>,
    seq: u64,
}

impl PendingSum for ThreadPending {
    fn poll(&mut self) -> Result<Option<Vec<f32>>> {
        let mut st = self.shared.lock();
        let State { slots, gone } = &mut *st;
        let Some(slot) = slots.get_mut(&self.seq) else {
            return Err(DistError::Invalid { op: "all_reduce", msg: "polled a finished sum".into() });
        };
        if let Some(msg) = &slot.error {
            return Err(DistError::Invalid { op: "all_reduce", msg: msg.clone() });
        }
        if let Some(result) = &slot.result {
            let out = result.as_ref().clone();
            slot.unread -= 1;
            if slot.unread == 0 {
                slots.remove(&self.seq);
            }
            return Ok(Some(out));
        }
        if let Some(peer) = (0..gone.len()).find(|&r| gone[r] && slot.parts[r].is_none()) {
            return Err(DistError::PeerGone { op: "all_reduce", peer });
        }
        Ok(None)
    }
}

impl Communicator for ThreadComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.shared.world
    }

    fn start_sum(&mut self, data: Vec<f32>) -> Result<Box<dyn PendingSum>> {
        let seq = self.next;
        self.next += 1;
        let world = self.shared.world;
        let mut st = self.shared.lock();
        let slot = st.slots.entry(seq).or_insert_with(|| Slot { parts: vec![None; world], ..Default::default() });
        if let Some(other) = slot.parts.iter().flatten().next()
            && other.len() != data.len()
        {
            // Every rank learns of it, rather than the others waiting for the timeout.
            slot.error = Some(format!(
                "collective {seq}: rank {} sent {} values, another rank {}",
                self.rank,
                data.len(),
                other.len()
            ));
        }
        slot.parts[self.rank] = Some(data);
        if slot.error.is_none() && slot.parts.iter().all(Option::is_some) {
            let mut parts = std::mem::take(&mut slot.parts).into_iter().flatten();
            let mut sum = parts.next().unwrap_or_default();
            for part in parts {
                for (s, x) in sum.iter_mut().zip(&part) {
                    *s += x;
                }
            }
            slot.result = Some(Arc::new(sum));
            slot.unread = world;
        }
        drop(st);
        Ok(Box::new(ThreadPending { shared: self.shared.clone(), seq }))
    }

    fn describe(&self) -> String {
        format!("in-process replica {} of {}", self.rank, self.shared.world)
    }
}

/// What one replica thread of [`run_replicas`] is given.
pub struct Replica {
    /// This replica's index; replica 0's parameters are broadcast to the others.
    pub rank: usize,
    /// How many replicas run.
    pub world: usize,
    /// The device this replica's model lives on.
    pub device: Device,
    /// Its connection to the other replicas: hand it to
    /// [`DistributedDataParallel::new`](crate::DistributedDataParallel::new).
    pub comm: ThreadComm,
}

/// Runs `body` once per device, each on its own thread with a [`Replica`] (rank, device and a
/// connected [`ThreadComm`]), and returns every replica's result in rank order.
///
/// The first failure wins: a replica that fails drops its communicator, so the others stop
/// at their next collective with [`DistError::PeerGone`]; the error returned is the original
/// one, not the others' reaction to it. A panicking replica becomes [`DistError::Panicked`].
///
/// ```
/// use kiln_core::{Device, Tensor};
/// use kiln_dist::{DdpConfig, DistributedDataParallel, run_replicas};
/// use kiln_nn::{Linear, Module};
///
/// let devices = vec![Device::cpu(), Device::cpu()];
/// let sums = run_replicas(&devices, |r| {
///     let model = Linear::new(3, 1, true, &r.device)?;
///     let mut ddp = DistributedDataParallel::new(&model, Box::new(r.comm), DdpConfig::default())?;
///     // Each replica sees its own half of the batch.
///     let x = Tensor::full(&[2, 3], (r.rank + 1) as f64, &r.device)?;
///     let loss = model.forward(&x)?.mean_all()?;
///     ddp.backward(&loss, 2)?; // gradients are now the mean over all 4 samples, on both
///     Ok(model.weight.grad().unwrap().to_vec::<f32>()?)
/// })
/// .unwrap();
/// assert_eq!(sums[0], vec![1.5, 1.5, 1.5]);
/// assert_eq!(sums[0], sums[1]);
/// ```
pub fn run_replicas<T: Send>(devices: &[Device], body: impl Fn(Replica) -> Result<T> + Sync) -> Result<Vec<T>> {
    if devices.is_empty() {
        return Err(DistError::Invalid { op: "run_replicas", msg: "no devices given".into() });
    }
    let world = devices.len();
    let comms = ThreadComm::group(world);
    let body = &body;
    let outcomes: Vec<Result<T>> = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .zip(devices)
            .enumerate()
            .map(|(rank, (comm, device))| {
                let replica = Replica { rank, world, device: device.clone(), comm };
                std::thread::Builder::new()
                    .name(format!("kiln-replica-{rank}"))
                    .spawn_scoped(s, move || body(replica))
                    .map_err(|e| DistError::Invalid { op: "run_replicas", msg: format!("cannot spawn a thread: {e}") })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, h)| match h?.join() {
                Ok(r) => r,
                Err(payload) => Err(DistError::Panicked { rank, msg: panic_message(&*payload) }),
            })
            .collect()
    });
    let mut results = Vec::with_capacity(world);
    let mut first_error: Option<DistError> = None;
    for outcome in outcomes {
        match outcome {
            Ok(v) => results.push(v),
            // A peer's departure is a consequence; keep looking for the cause.
            Err(e) => {
                // A peer's departure is a consequence of another replica's failure: keep the cause.
                let cause_known = first_error.as_ref().is_some_and(|f| !matches!(f, DistError::PeerGone { .. }));
                if first_error.is_none() || (!matches!(e, DistError::PeerGone { .. }) && !cause_known) {
                    first_error = Some(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}
