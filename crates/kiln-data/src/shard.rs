//! How data-parallel ranks split each batch (used by [`DataLoader::shard`](crate::DataLoader::shard)).
//!
//! The rule: every rank walks the same seeded epoch order in the same global batches; global
//! batch `k` (the last one may be short) is cut into `world` contiguous parts whose sizes
//! differ by at most one, the first `len % world` ranks taking one more. So each rank has the
//! same number of steps per epoch, the ranks' parts are disjoint and together are exactly the
//! batch one process would use, and a rank's part may be empty in a short last batch (that
//! rank then contributes no samples to the step: with sample-count weighting, as kiln-dist
//! does, the averaged gradient still equals the single-process one). Nothing is padded or
//! repeated, unlike PyTorch's `DistributedSampler`, which repeats samples to even out shards.

use std::ops::Range;

/// The part of a batch of `len` samples that rank `rank` of `world` takes.
///
/// ```
/// use kiln_data::shard_range;
/// assert_eq!(shard_range(10, 0, 3), 0..4);
/// assert_eq!(shard_range(10, 1, 3), 4..7);
/// assert_eq!(shard_range(10, 2, 3), 7..10);
/// assert_eq!(shard_range(1, 2, 3), 1..1); // a short last batch leaves rank 2 empty
/// ```
pub fn shard_range(len: usize, rank: usize, world: usize) -> Range<usize> {
    let world = world.max(1);
    let (base, extra) = (len / world, len % world);
    let start = rank * base + rank.min(extra);
    let size = base + usize::from(rank < extra);
    start.min(len)..(start + size).min(len)
}
