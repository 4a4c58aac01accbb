//! The one collective data parallelism needs: an element-wise sum over every rank, started
//! without blocking and polled. Broadcasts, digest exchanges and barriers are built on it
//! (a broadcast is a sum where every rank but the root contributes zeros), so a transport
//! implements a single operation: [`Solo`] (one rank), [`ThreadComm`](crate::ThreadComm)
//! (replicas on threads of one process) and, with the `mpi` feature,
//! [`MpiComm`](crate::MpiComm) (`MPI_Iallreduce`).

use crate::error::{DistError, Result};
use std::time::{Duration, Instant};

/// A group of ranks that can sum `f32` vectors.
///
/// Every rank must start the same sequence of sums, with the same lengths, in the same order
/// (as with MPI collectives); [`DistributedDataParallel`](crate::DistributedDataParallel)
/// guarantees this by deriving every collective from a digest-checked model.
pub trait Communicator {
    /// This process's (or thread's) index, `0..world()`.
    fn rank(&self) -> usize;
    /// How many ranks take part.
    fn world(&self) -> usize;
    /// Starts summing `data` element-wise over every rank; poll the result.
    fn start_sum(&mut self, data: Vec<f32>) -> Result<Box<dyn PendingSum>>;
    /// Records that a collective failed on this rank, so that dropping the communicator does
    /// not wait on the others (MPI: abort the job instead of finalizing).
    fn poison(&mut self) {}
    /// One line for logs: transport, rank and world.
    fn describe(&self) -> String {
        format!("rank {} of {}", self.rank(), self.world())
    }
}

/// A sum in flight.
pub trait PendingSum {
    /// The summed vector once every rank contributed, `None` while some are missing.
    fn poll(&mut self) -> Result<Option<Vec<f32>>>;
}

/// Polls `pending` until it completes or `deadline` passes: spins briefly, then yields, then
/// sleeps 50 µs between polls, so waiting ranks leave the cores to the ones still computing
/// (CI runs three ranks on two cores).
pub(crate) fn wait(
    pending: &mut dyn PendingSum,
    op: &'static str,
    comm: &dyn Communicator,
    started: Instant,
    timeout: Duration,
) -> Result<Vec<f32>> {
    let mut backoff = Backoff::default();
    loop {
        if let Some(v) = pending.poll()? {
            return Ok(v);
        }
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(DistError::Timeout { op, rank: comm.rank(), world: comm.world(), waited });
        }
        backoff.pause();
    }
}

/// Spin a little, then yield, then sleep 50 µs between polls.
#[derive(Default)]
pub(crate) struct Backoff(u32);

impl Backoff {
    pub(crate) fn pause(&mut self) {
        self.0 = self.0.saturating_add(1);
        match self.0 {
            0..64 => std::hint::spin_loop(),
            64..256 => std::thread::yield_now(),
            _ => std::thread::sleep(Duration::from_micros(50)),
        }
    }
}

/// Starts a sum and waits for it (the blocking form, for set-up and barriers).
pub(crate) fn sum_blocking(
    comm: &mut dyn Communicator,
    op: &'static str,
    data: Vec<f32>,
    timeout: Duration,
) -> Result<Vec<f32>> {
    let started = Instant::now();
    let mut pending = comm.start_sum(data)?;
    let out = wait(pending.as_mut(), op, comm, started, timeout);
    if out.as_ref().is_err_and(DistError::is_fatal_to_group) {
        comm.poison();
    }
    out
}

/// A group of one: every sum is its input. What a program gets without `mpirun`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Solo;

struct Ready(Option<Vec<f32>>);

impl PendingSum for Ready {
    fn poll(&mut self) -> Result<Option<Vec<f32>>> {
        Ok(self.0.take())
    }
}

impl Communicator for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn start_sum(&mut self, data: Vec<f32>) -> Result<Box<dyn PendingSum>> {
        Ok(Box::new(Ready(Some(data))))
    }
    fn describe(&self) -> String {
        "single process (rank 0 of 1)".into()
    }
}
