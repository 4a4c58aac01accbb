//! Batching, seeded shuffling and background prefetching.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::dataset::{Batcher, Dataset};
use crate::error::{DataError, Result};
use crate::rng::Rng;

/// Batches prepared ahead of the consumer unless told otherwise: enough that
/// the next batch is ready the moment the GPU asks, few enough to bound memory.
const DEFAULT_PREFETCH: usize = 2;

/// Iterates a [`Dataset`] in batches, optionally shuffled, with the next
/// batches prepared on a background thread while the caller works.
///
/// Every epoch visits every sample exactly once (or, with `drop_last`, every
/// sample but the ones that would form a final short batch). With
/// [`shuffle`](Self::shuffle), epoch `e` uses a permutation derived from
/// `(seed, e)`, so a run is reproducible and each epoch is ordered differently.
///
/// ```
/// use kiln_data::{DataLoader, VecBatcher, VecDataset};
/// let data = VecDataset::new((0..10u32).collect());
/// let loader = DataLoader::new(data, VecBatcher, 4)?.shuffle(42);
/// assert_eq!(loader.len(), 3); // 4 + 4 + 2
/// let mut seen = Vec::new();
/// for batch in loader.epoch(0) {
///     seen.extend(batch?);
/// }
/// seen.sort();
/// assert_eq!(seen, (0..10).collect::<Vec<_>>());
/// # Ok::<(), kiln_data::DataError>(())
/// ```
pub struct DataLoader<D, B> {
    dataset: Arc<D>,
    batcher: Arc<B>,
    batch_size: usize,
    seed: Option<u64>,
    drop_last: bool,
    prefetch: usize,
    /// `(rank, world)`: yield only this rank's part of every batch.
    shard: Option<(usize, usize)>,
}

impl<D, B> DataLoader<D, B>
where
    D: Dataset + 'static,
    B: Batcher<D::Item> + 'static,
{
    /// A loader of `batch_size` samples a batch, in dataset order, keeping the
    /// last short batch. Pass an `Arc<D>` to share the dataset with others.
    ///
    /// Fails with [`DataError::InvalidArgument`] if `batch_size` is 0.
    pub fn new(dataset: impl Into<Arc<D>>, batcher: B, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(DataError::InvalidArgument("DataLoader batch_size must be at least 1".into()));
        }
        Ok(Self {
            dataset: dataset.into(),
            batcher: Arc::new(batcher),
            batch_size,
            seed: None,
            drop_last: false,
            prefetch: DEFAULT_PREFETCH,
            shard: None,
        })
    }

    /// Shuffle every epoch with a permutation derived from `seed` and the epoch number.
    #[must_use]
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Skip the final batch of an epoch when it would be smaller than `batch_size`.
    #[must_use]
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// How many batches the background thread may prepare ahead (default 2).
    /// 0 still uses the thread, which then works one batch ahead at most.
    #[must_use]
    pub fn prefetch(mut self, batches: usize) -> Self {
        self.prefetch = batches;
        self
    }

    /// For data-parallel training: yield only rank `rank`'s part of every batch, `batch_size`
    /// being the *global* batch over all `world` ranks. Every rank shuffles the same way (give
    /// each the same seed), so the parts are disjoint; see [`shard_range`](crate::shard_range)
    /// for how a batch is cut and why a part can be empty. [`len`](Self::len) stays the number
    /// of steps, equal on every rank.
    ///
    /// ```
    /// use kiln_data::{DataLoader, VecBatcher, VecDataset};
    /// let data = VecDataset::new((0..7u32).collect());
    /// let rank1 = DataLoader::new(data, VecBatcher, 4)?.shard(1, 3)?;
    /// let parts: Vec<Vec<u32>> = rank1.epoch(0).collect::<Result<_, _>>()?;
    /// assert_eq!(parts, vec![vec![2], vec![5]]); // batches [0..4] and [4..7]
    /// # Ok::<(), kiln_data::DataError>(())
    /// ```
    ///
    /// Fails with [`DataError::InvalidArgument`] unless `rank < world`.
    pub fn shard(mut self, rank: usize, world: usize) -> Result<Self> {
        if rank >= world {
            return Err(DataError::InvalidArgument(format!(
                "DataLoader::shard: rank {rank} is not below world size {world}"
            )));
        }
        self.shard = Some((rank, world));
        Ok(self)
    }

    /// Number of batches in an epoch.
    pub fn len(&self) -> usize {
        let n = self.dataset.len();
        if self.drop_last { n / self.batch_size } else { n.div_ceil(self.batch_size) }
    }

    /// Whether an epoch yields no batch at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples per (full) batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The dataset being iterated.
    pub fn dataset(&self) -> &D {
        &self.dataset
    }

    /// The sample indices epoch `epoch` visits, in order (without the dropped
    /// tail when `drop_last` is set). Consecutive runs of `batch_size` form
    /// the batches (before a [`shard`](Self::shard) takes its part of each).
    pub fn indices(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if let Some(seed) = self.seed {
            Rng::with_stream(seed, epoch).shuffle(&mut order);
        }
        if self.drop_last {
            order.truncate(self.len() * self.batch_size);
        }
        order
    }

    /// The batches of epoch `epoch`. Preparation starts on a background thread
    /// immediately; dropping the iterator early stops it.
    ///
    /// Each item is a `Result` because the batch is built by user code
    /// ([`Dataset`], [`Batcher`]) on another thread: a panic there, or a
    /// dataset that returns `None` for an index below its `len()`, surfaces
    /// as [`DataError::Worker`] instead of tearing down the caller.
    pub fn epoch(&self, epoch: u64) -> Epoch<B::Batch> {
        let order = self.indices(epoch);
        let total = self.len();
        let (tx, rx) = sync_channel(self.prefetch);
        let dataset = Arc::clone(&self.dataset);
        let batcher = Arc::clone(&self.batcher);
        let batch_size = self.batch_size;
        let shard = self.shard;
        if cfg!(target_arch = "wasm32") {
            // A browser page has one thread: build each batch when it is asked for.
            let mut chunks = order.chunks(batch_size).map(<[usize]>::to_vec).collect::<Vec<_>>().into_iter();
            let make = move || Some(make_batch(&*dataset, &*batcher, &chunks.next()?, shard));
            return Epoch {
                rx: None,
                worker: None,
                remaining: total,
                pending_error: None,
                inline: Some(Box::new(make)),
            };
        }
        let spawned = std::thread::Builder::new()
            .name("kiln-data-loader".into())
            .spawn(move || produce(&*dataset, &*batcher, &order, batch_size, shard, &tx));
        match spawned {
            Ok(worker) => {
                Epoch { rx: Some(rx), worker: Some(worker), remaining: total, pending_error: None, inline: None }
            }
            Err(e) => Epoch {
                rx: None,
                worker: None,
                remaining: 0,
                pending_error: Some(DataError::Worker(format!("cannot spawn thread: {e}"))),
                inline: None,
            },
        }
    }
}

/// The worker's loop: build each batch in order and hand it over, stopping
/// early when the consumer has gone away.
fn produce<D: Dataset, B: Batcher<D::Item>>(
    dataset: &D,
    batcher: &B,
    order: &[usize],
    batch_size: usize,
    shard: Option<(usize, usize)>,
    tx: &SyncSender<Result<B::Batch>>,
) {
    for batch in order.chunks(batch_size) {
        match make_batch(dataset, batcher, batch, shard) {
            Ok(b) => {
                if tx.send(Ok(b)).is_err() {
                    return;
                }
            }
            Err(e) => {
                // Ignoring a send error is right: nobody is listening.
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// One batch of the samples at `batch` (this rank's part of them when sharded).
fn make_batch<D: Dataset, B: Batcher<D::Item>>(
    dataset: &D,
    batcher: &B,
    batch: &[usize],
    shard: Option<(usize, usize)>,
) -> Result<B::Batch> {
    let chunk = match shard {
        Some((rank, world)) => &batch[crate::shard_range(batch.len(), rank, world)],
        None => batch,
    };
    let mut items = Vec::with_capacity(chunk.len());
    for &i in chunk {
        match dataset.get(i) {
            Some(item) => items.push(item),
            None => {
                let len = dataset.len();
                return Err(DataError::Worker(format!("dataset returned no sample for index {i} (len {len})")));
            }
        }
    }
    Ok(batcher.batch(items))
}

/// The batches of one epoch; see [`DataLoader::epoch`].
pub struct Epoch<T> {
    rx: Option<Receiver<Result<T>>>,
    worker: Option<JoinHandle<()>>,
    remaining: usize,
    pending_error: Option<DataError>,
    /// Where threads cannot be spawned (wasm32): builds the next batch on the caller's thread.
    inline: Option<Box<dyn FnMut() -> Option<Result<T>> + Send>>,
}

impl<T> Epoch<T> {
    /// Stops the iteration and reports why the worker ended early.
    fn finish_with_worker_status(&mut self) -> Option<Result<T>> {
        self.remaining = 0;
        self.rx = None;
        let worker = self.worker.take()?;
        match worker.join() {
            Ok(()) => None,
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into());
                Some(Err(DataError::Worker(format!("worker panicked: {msg}"))))
            }
        }
    }
}

impl<T> Iterator for Epoch<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if let Some(err) = self.pending_error.take() {
            return Some(Err(err));
        }
        if self.remaining == 0 {
            return None;
        }
        if let Some(make) = self.inline.as_mut() {
            let next = make();
            self.remaining = match next {
                Some(Ok(_)) => self.remaining - 1,
                _ => 0,
            };
            return next;
        }
        let received = self.rx.as_ref()?.recv();
        match received {
            Ok(Ok(batch)) => {
                self.remaining -= 1;
                Some(Ok(batch))
            }
            Ok(Err(e)) => {
                self.remaining = 0;
                Some(Err(e))
            }
            // The worker hung up before sending every batch: it panicked.
            Err(_) => self.finish_with_worker_status(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let extra = usize::from(self.pending_error.is_some());
        (0, Some(self.remaining + extra))
    }
}

impl<T> Drop for Epoch<T> {
    fn drop(&mut self) {
        // Hang up first so a worker blocked on a full channel wakes and exits;
        // then wait for it so no thread outlives the iterator.
        self.rx = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
