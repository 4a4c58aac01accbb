//! What can go wrong between ranks, each a variant a caller can match on.

use std::time::Duration;

/// A data-parallel failure. Every wait on other ranks is bounded (see
/// [`DdpConfig::timeout`](crate::DdpConfig::timeout)), so each failure surfaces as one of these
/// instead of a hang.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DistError {
    /// The other ranks did not finish a collective in time: one died, errored before reaching
    /// it, or is stuck. The group is unusable afterwards (MPI cannot cancel a collective).
    #[error(
        "{op}: rank {rank} of {world} waited {waited:.1?} for the other ranks (timeout); a rank died, failed or is stuck"
    )]
    Timeout { op: &'static str, rank: usize, world: usize, waited: Duration },
    /// A rank of an in-process group left (its thread returned an error or panicked) before
    /// joining a collective the others started.
    #[error("{op}: rank {peer} left the group before joining this collective")]
    PeerGone { op: &'static str, peer: usize },
    /// The ranks hold different models: a digest of every parameter's and buffer's name, shape
    /// and dtype differs from rank 0's. Detected before any gradient is exchanged.
    #[error(
        "model mismatch: rank {rank}'s parameter digest {digest:016x} differs from rank 0's {root:016x} (names, shapes or dtypes differ; rank {rank} has {detail})"
    )]
    ModelMismatch { rank: usize, digest: u64, root: u64, detail: String },
    /// Another rank reported a failure through a collective (e.g. rank 0 could not write the
    /// checkpoint every rank waits for).
    #[error("{op}: rank {rank} failed: {msg}")]
    Remote { op: &'static str, rank: usize, msg: String },
    /// A bad argument or use (unsupported dtype, a group already failed, ...).
    #[error("{op}: {msg}")]
    Invalid { op: &'static str, msg: String },
    /// The MPI layer refused (initialisation, thread support).
    #[error("MPI: {0}")]
    Mpi(String),
    /// A replica thread panicked.
    #[error("replica {rank} panicked: {msg}")]
    Panicked { rank: usize, msg: String },
    /// A Kiln op failed (out of memory, a lost device, a shape error in the model).
    #[error(transparent)]
    Kiln(#[from] kiln_core::Error),
}

impl DistError {
    /// Whether the group can still be used after this error: false for failures of a
    /// collective, which leave the ranks out of step.
    pub fn is_fatal_to_group(&self) -> bool {
        matches!(
            self,
            DistError::Timeout { .. } | DistError::PeerGone { .. } | DistError::Mpi(_) | DistError::Panicked { .. }
        )
    }
}

/// Shorthand for results carrying a [`DistError`].
pub type Result<T> = std::result::Result<T, DistError>;
