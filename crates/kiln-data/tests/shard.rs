//! Sharded loading for data-parallel ranks: disjoint parts whose union is the unsharded batch,
//! equal step counts on every rank, reproducible from the seed.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use kiln_data::{DataLoader, VecBatcher, VecDataset, shard_range};

fn batches(n: u32, batch: usize, seed: u64, shard: Option<(usize, usize)>, drop_last: bool) -> Vec<Vec<u32>> {
    let data = VecDataset::new((0..n).collect());
    let mut loader = DataLoader::new(data, VecBatcher, batch).unwrap().shuffle(seed).drop_last(drop_last);
    if let Some((rank, world)) = shard {
        loader = loader.shard(rank, world).unwrap();
    }
    loader.epoch(3).collect::<Result<_, _>>().unwrap()
}

#[test]
fn ranks_split_every_batch_into_disjoint_parts_that_rebuild_it() {
    for (n, batch) in [(10u32, 4usize), (23, 5), (7, 7), (5, 8), (31, 6)] {
        for world in 1..=4 {
            for drop_last in [false, true] {
                let whole = batches(n, batch, 11, None, drop_last);
                let parts: Vec<Vec<Vec<u32>>> =
                    (0..world).map(|r| batches(n, batch, 11, Some((r, world)), drop_last)).collect();
                for (r, p) in parts.iter().enumerate() {
                    assert_eq!(p.len(), whole.len(), "rank {r} of {world}: steps per epoch (n {n}, batch {batch})");
                }
                for (k, b) in whole.iter().enumerate() {
                    let rebuilt: Vec<u32> = parts.iter().flat_map(|p| p[k].clone()).collect();
                    assert_eq!(&rebuilt, b, "step {k}, world {world}, n {n}, batch {batch}");
                    let sizes: Vec<usize> = parts.iter().map(|p| p[k].len()).collect();
                    let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                    assert!(hi - lo <= 1, "uneven split {sizes:?}");
                    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "earlier ranks take the extra samples: {sizes:?}");
                }
            }
        }
    }
}

#[test]
fn shard_range_covers_the_batch_in_order() {
    for len in 0..20 {
        for world in 1..6 {
            let mut next = 0;
            for rank in 0..world {
                let r = shard_range(len, rank, world);
                assert_eq!(r.start, next);
                next = r.end;
            }
            assert_eq!(next, len);
        }
    }
}

#[test]
fn a_rank_outside_the_world_is_an_error() {
    let data = VecDataset::new(vec![1u32, 2, 3]);
    let err = DataLoader::new(data, VecBatcher, 2).unwrap().shard(2, 2).err().expect("rank 2 of 2 must be refused");
    assert!(err.to_string().contains("rank 2"), "{err}");
}
