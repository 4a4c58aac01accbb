//! Data-parallel training for Kiln: one model replica per device, each device a share of the
//! batch, gradients averaged over the global batch before every optimizer step, so that N
//! devices train exactly like one device with the whole batch (up to float rounding).
//!
//! - In one process, over several devices: [`run_replicas`] runs one thread per [`Device`]
//!   (several adapters, or several devices opened on one with [`Device::open_gpu`]).
//! - Over processes and hosts, with the `mpi` feature: launch with `mpirun -n N`, one process
//!   per GPU; [`init`] joins the job (or gives one rank without mpirun) and [`local_device`]
//!   picks this process's GPU.
//!
//! Either way, [`DistributedDataParallel`] does the work: it checks every rank holds the same
//! model, copies rank 0's parameters to all, and turns `backward` into "backward, then average
//! the gradients", in buckets whose all-reduce starts while backward is still running.
//! [`kiln_data::DataLoader::shard`] gives each rank its part of every global batch.
//!
//! ```no_run
//! use kiln_core::Tensor;
//! use kiln_dist::{DdpConfig, DistributedDataParallel};
//! use kiln_nn::optim::{Adam, AdamConfig, Optimizer};
//! use kiln_nn::{Linear, Module, ModuleExt};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let comm = kiln_dist::init()?;                 // MPI under mpirun, else one rank
//! let device = kiln_dist::local_device()?;       // gpu:<local rank>, or KILN_DEVICE
//! let model = Linear::new(784, 10, true, &device)?;
//! let mut ddp = DistributedDataParallel::new(&model, comm, DdpConfig::default())?;
//! let mut opt = Adam::new(model.parameters(), AdamConfig::default())?;
//! # let (x, y): (Tensor, Tensor) = todo!();
//! let loss = kiln_nn::loss::cross_entropy_loss(&model.forward(&x)?, &y)?;
//! opt.zero_grad();
//! ddp.backward(&loss, x.shape()[0])?;            // gradients: the mean over every rank's samples
//! opt.step()?;                                   // the same step on every rank
//! # Ok(()) }
//! ```
//!
//! [`Device`]: kiln_core::Device
//! [`Device::open_gpu`]: kiln_core::Device::open_gpu
//! [`kiln_data::DataLoader::shard`]: https://docs.rs/kiln-data

mod bucket;
mod comm;
mod ddp;
mod error;
#[cfg(feature = "mpi")]
mod mpi;
mod threads;

pub use comm::{Communicator, PendingSum, Solo};
pub use ddp::{DEFAULT_BUCKET_BYTES, DdpConfig, DistributedDataParallel, SyncStats, TIMEOUT_ENV};
pub use error::{DistError, Result};
#[cfg(feature = "mpi")]
pub use mpi::MpiComm;
pub use threads::{Replica, ThreadComm, run_replicas};

/// Whether this process was started by an MPI launcher (`mpirun`, `srun`): Open MPI's, PMI's
/// or PMIx's environment variables are set.
pub fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"].iter().any(|v| std::env::var_os(v).is_some())
}

/// The group this process belongs to: MPI's world when started by `mpirun` (and built with the
/// `mpi` feature), else a group of one ([`Solo`]), so the same program runs alone unchanged.
/// Under mpirun without the feature it is an error rather than N independent runs.
pub fn init() -> Result<Box<dyn Communicator>> {
    if !launched_by_mpi() {
        return Ok(Box::new(Solo));
    }
    #[cfg(feature = "mpi")]
    {
        Ok(Box::new(MpiComm::init()?))
    }
    #[cfg(not(feature = "mpi"))]
    {
        Err(DistError::Mpi("started by an MPI launcher, but kiln-dist was built without its `mpi` feature".into()))
    }
}

/// This process's index among those on the same host (`OMPI_COMM_WORLD_LOCAL_RANK`,
/// `MPI_LOCALRANKID` or `SLURM_LOCALID`; 0 when none is set).
pub fn local_rank() -> usize {
    ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

/// The device this process should train on: `KILN_DEVICE` when set (`cpu`, `gpu:1`, ...);
/// otherwise, under a launcher, GPU `local_rank()` (modulo the GPUs present, so 2 processes
/// on a 1-GPU machine share it), and alone, [`Device::best`](kiln_core::Device::best).
pub fn local_device() -> kiln_core::Result<kiln_core::Device> {
    match std::env::var("KILN_DEVICE") {
        Ok(word) => kiln_core::Device::parse(&word),
        Err(_) if launched_by_mpi() => kiln_core::Device::parse(&format!("gpu:{}", local_rank())),
        Err(_) => Ok(kiln_core::Device::best()),
    }
}
