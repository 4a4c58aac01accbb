//! Many processes, on one host or many, over MPI (`mpirun -n N`, one process per GPU).
//!
//! A gradient bucket goes GPU → host (an asynchronous readback), then `MPI_Iallreduce` sums it
//! over every process in host memory, then host → GPU. The sum is started non-blocking and
//! polled with `MPI_Test`, which both drives MPI's progress while backward goes on and lets a
//! wait give up at a deadline instead of hanging on a dead rank.
//!
//! A GPU-aware path (no host staging) would need an MPI built with CUDA/ROCm support (UCX) and
//! a device pointer MPI understands; wgpu gives neither: its buffers are Vulkan/Metal/DX12
//! allocations without a CUDA address. It would take Vulkan external-memory export
//! (`VK_KHR_external_memory_fd`) imported into CUDA, which wgpu does not expose, or NCCL on
//! such imported memory. Until then, every byte crosses host memory twice per step.

use crate::comm::{Communicator, PendingSum};
use crate::error::{DistError, Result};
use mpi::collective::{CommunicatorCollectives, SystemOperation};
use mpi::datatype::Equivalence;
use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::{Communicator as _, SimpleCommunicator};
use std::os::raw::c_int;

/// The process group `mpirun` started (`MPI_COMM_WORLD`). Create it once per process, with
/// [`MpiComm::init`] or, better, [`crate::init`], which falls back to one rank without mpirun.
///
/// Dropping it waits (bounded) for every rank to drop theirs, then finalizes MPI; when the
/// ranks are out of step it ends the process instead (see its `Drop`).
pub struct MpiComm {
    world: SimpleCommunicator,
    /// A copy of the world for the goodbye barrier, apart from the gradient collectives.
    goodbye: SimpleCommunicator,
    rank: usize,
    size: usize,
    poisoned: bool,
    // Last: finalizes MPI when dropped, after `world`.
    _universe: mpi::environment::Universe,
}

impl MpiComm {
    /// Initializes MPI (thread level "serialized": MPI is called from one thread at a time,
    /// whichever thread owns this value).
    pub fn init() -> Result<MpiComm> {
        let (universe, level) = mpi::initialize_with_threading(mpi::Threading::Serialized)
            .ok_or_else(|| DistError::Mpi("MPI was already initialized in this process (create one MpiComm)".into()))?;
        if level < mpi::Threading::Serialized {
            return Err(DistError::Mpi(format!(
                "the MPI library offers thread level {level:?}; Kiln needs Serialized"
            )));
        }
        let world = universe.world();
        let goodbye = world.duplicate();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(MpiComm { world, goodbye, rank, size, poisoned: false, _universe: universe })
    }

    /// Ends every process of the job with `code` (`MPI_Abort`).
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

impl Drop for MpiComm {
    /// Finalizes MPI only once every rank got here (a barrier on a communicator of its own,
    /// bounded by `KILN_DIST_TIMEOUT`, default 300 s). Otherwise — a collective failed here, or
    /// another rank never arrives because it is stuck or failed — it ends the process with
    /// status 1 without finalizing, and `mpirun` ends the rest of the job. Finalizing while
    /// other ranks are out of step would wait for them forever, and Open MPI 4.1's mpirun was
    /// seen to hang when one rank sat in `MPI_Finalize` while the others aborted.
    fn drop(&mut self) {
        if !self.poisoned && self.everyone_arrives() {
            return;
        }
        eprintln!(
            "kiln-dist: rank {}: the ranks are out of step; ending this process (status 1) so mpirun ends the job",
            self.rank
        );
        std::process::exit(1);
    }
}

impl MpiComm {
    fn everyone_arrives(&self) -> bool {
        let timeout = crate::DdpConfig::default().timeout;
        let started = std::time::Instant::now();
        let mut request = self.goodbye.immediate_barrier();
        let mut backoff = crate::comm::Backoff::default();
        loop {
            match request.test() {
                Ok(_) => return true,
                Err(pending) => request = pending,
            }
            if started.elapsed() >= timeout {
                // MPI still owns the request; the process is about to exit.
                std::mem::forget(request);
                return false;
            }
            backoff.pause();
        }
    }
}

/// An `MPI_Iallreduce` in flight, with the buffers MPI reads and writes.
struct MpiPending {
    request: ffi::MPI_Request,
    send: Vec<f32>,
    recv: Vec<f32>,
    done: bool,
}

impl PendingSum for MpiPending {
    fn poll(&mut self) -> Result<Option<Vec<f32>>> {
        if self.done {
            return Err(DistError::Invalid { op: "all_reduce", msg: "polled a finished sum".into() });
        }
        let mut flag: c_int = 0;
        // SAFETY: `request` came from MPI_Iallreduce and is tested until complete (MPI then sets
        // it to MPI_REQUEST_NULL); the status is ignored.
        let rc = unsafe { ffi::MPI_Test(&mut self.request, &mut flag, ffi::RSMPI_STATUS_IGNORE) };
        if rc != 0 {
            return Err(DistError::Mpi(format!("MPI_Test failed with code {rc}")));
        }
        if flag == 0 {
            return Ok(None);
        }
        self.done = true;
        self.send = Vec::new();
        Ok(Some(std::mem::take(&mut self.recv)))
    }
}

impl Drop for MpiPending {
    fn drop(&mut self) {
        if !self.done {
            // MPI may still read and write these buffers (a collective cannot be cancelled):
            // leak them rather than free memory MPI owns. Only after a failure, which ends the job.
            std::mem::forget(std::mem::take(&mut self.send));
            std::mem::forget(std::mem::take(&mut self.recv));
        }
    }
}

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.size
    }

    fn start_sum(&mut self, data: Vec<f32>) -> Result<Box<dyn PendingSum>> {
        let count = c_int::try_from(data.len()).map_err(|_| DistError::Invalid {
            op: "all_reduce",
            msg: format!("{} values exceed MPI's count limit; use smaller buckets", data.len()),
        })?;
        let mut pending = Box::new(MpiPending {
            request: unsafe { ffi::RSMPI_REQUEST_NULL },
            recv: vec![0.0; data.len()],
            send: data,
            done: false,
        });
        // SAFETY: both buffers hold `count` f32s and live in `pending` (heap, never reallocated)
        // until the request completes or is leaked by Drop; datatype, op and communicator are
        // valid handles for the life of MPI.
        let rc = unsafe {
            ffi::MPI_Iallreduce(
                pending.send.as_ptr().cast(),
                pending.recv.as_mut_ptr().cast(),
                count,
                f32::equivalent_datatype().as_raw(),
                SystemOperation::sum().as_raw(),
                self.world.as_raw(),
                &mut pending.request,
            )
        };
        if rc != 0 {
            pending.done = true;
            return Err(DistError::Mpi(format!("MPI_Iallreduce failed with code {rc}")));
        }
        Ok(pending)
    }

    fn poison(&mut self) {
        self.poisoned = true;
    }

    fn describe(&self) -> String {
        format!("MPI rank {} of {}", self.rank, self.size)
    }
}
