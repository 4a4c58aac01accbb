//! DataLoader: exact coverage, seeded shuffling, and failure handling.

use kiln_data::{Batcher, DataError, DataLoader, Dataset, VecBatcher, VecDataset};

fn loader(n: usize, batch: usize) -> DataLoader<VecDataset<usize>, VecBatcher> {
    DataLoader::new(VecDataset::new((0..n).collect()), VecBatcher, batch).expect("batch > 0")
}

fn collect(l: &DataLoader<VecDataset<usize>, VecBatcher>, epoch: u64) -> Vec<Vec<usize>> {
    l.epoch(epoch).map(|b| b.expect("batch")).collect()
}

#[test]
fn every_sample_exactly_once_keeping_the_last_batch() {
    for seed in [None, Some(11)] {
        let mut l = loader(103, 10);
        if let Some(s) = seed {
            l = l.shuffle(s);
        }
        assert_eq!(l.len(), 11);
        for epoch in 0..3 {
            let batches = collect(&l, epoch);
            assert_eq!(batches.len(), 11);
            assert!(batches[..10].iter().all(|b| b.len() == 10));
            assert_eq!(batches[10].len(), 3);
            let mut all: Vec<usize> = batches.concat();
            assert_eq!(all, l.indices(epoch));
            all.sort_unstable();
            assert_eq!(all, (0..103).collect::<Vec<_>>());
        }
    }
}

#[test]
fn drop_last_skips_only_the_short_tail() {
    for seed in [None, Some(5)] {
        let mut l = loader(103, 10).drop_last(true);
        if let Some(s) = seed {
            l = l.shuffle(s);
        }
        assert_eq!(l.len(), 10);
        for epoch in 0..3 {
            let batches = collect(&l, epoch);
            assert_eq!(batches.len(), 10);
            assert!(batches.iter().all(|b| b.len() == 10));
            let mut all: Vec<usize> = batches.concat();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), 100, "no sample twice");
            assert!(all.iter().all(|&i| i < 103));
        }
    }
    // Batch larger than the dataset: nothing left with drop_last, one batch without.
    assert!(loader(5, 8).drop_last(true).is_empty());
    assert_eq!(collect(&loader(5, 8).drop_last(true), 0).len(), 0);
    assert_eq!(collect(&loader(5, 8), 0), [vec![0, 1, 2, 3, 4]]);
    assert_eq!(collect(&loader(0, 8), 0).len(), 0);
}

#[test]
fn unshuffled_order_is_dataset_order() {
    assert_eq!(collect(&loader(7, 3), 4), [vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
}

#[test]
fn shuffle_is_seeded_and_differs_per_epoch() {
    let a = loader(1000, 32).shuffle(42);
    let b = loader(1000, 32).shuffle(42);
    let c = loader(1000, 32).shuffle(43);
    assert_eq!(collect(&a, 0), collect(&b, 0), "same seed, same order");
    assert_eq!(collect(&a, 7), collect(&b, 7));
    assert_ne!(a.indices(0), c.indices(0), "different seed, different order");
    assert_ne!(a.indices(0), a.indices(1), "different epochs, different order");
    assert_ne!(a.indices(0), (0..1000).collect::<Vec<_>>(), "actually shuffled");
    // Iterating twice gives the same epoch again.
    assert_eq!(collect(&a, 3), collect(&a, 3));
}

#[test]
fn zero_batch_size_is_an_error() {
    let r = DataLoader::new(VecDataset::new(vec![1u8]), VecBatcher, 0);
    assert!(matches!(r, Err(DataError::InvalidArgument(_))));
}

#[test]
fn dropping_an_epoch_early_stops_the_worker() {
    let l = loader(10_000, 1).prefetch(1);
    let mut it = l.epoch(0);
    assert_eq!(it.next().map(|b| b.expect("batch")), Some(vec![0]));
    drop(it); // must not hang on the blocked worker
    assert_eq!(collect(&l, 0).len(), 10_000);
}

struct Panicky;
impl Batcher<usize> for Panicky {
    type Batch = usize;
    fn batch(&self, items: Vec<usize>) -> usize {
        assert!(!items.contains(&5), "sample 5 is cursed");
        items.len()
    }
}

#[test]
fn a_panicking_batcher_becomes_an_error() {
    let l = DataLoader::new(VecDataset::new((0..10).collect()), Panicky, 2).expect("batch > 0");
    let results: Vec<_> = l.epoch(0).collect();
    assert_eq!(results.len(), 3, "two good batches, then the error");
    assert!(results[..2].iter().all(|r| r.is_ok()));
    match &results[2] {
        Err(DataError::Worker(msg)) => assert!(msg.contains("cursed"), "{msg}"),
        other => panic!("expected Worker error, got {other:?}"),
    }
}

/// A dataset whose `len()` overstates what `get` can return.
struct Liar;
impl Dataset for Liar {
    type Item = u8;
    fn len(&self) -> usize {
        4
    }
    fn get(&self, index: usize) -> Option<u8> {
        (index < 3).then_some(0)
    }
}

#[test]
fn a_dataset_breaking_its_contract_becomes_an_error() {
    let l = DataLoader::new(Liar, VecBatcher, 1).expect("batch > 0");
    let results: Vec<_> = l.epoch(0).collect();
    assert_eq!(results.len(), 4);
    assert!(matches!(results[3], Err(DataError::Worker(_))));
}
