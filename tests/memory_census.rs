//! `KILN_MEMORY_CENSUS=1`: the live bytes at the peak, broken down by the op that allocated
//! them, add up to the peak and name the ops that made it. Its own test binary because the
//! switch is read when the device opens.

mod common;

use kiln::prelude::*;

const MIB: usize = 1 << 20;

#[test]
fn census_at_the_peak_names_the_ops_and_adds_up() {
    // SAFETY: the only test in this binary, run before any device (or other thread) exists.
    unsafe { std::env::set_var("KILN_MEMORY_CENSUS", "1") };
    let Some(g) = common::gpu("census_at_the_peak_names_the_ops_and_adds_up") else { return };
    kiln::manual_seed(3);
    let a = Tensor::randn(&[512, 512], &g).unwrap(); // 1 MiB
    let b = Tensor::randn(&[512, 2048], &g).unwrap(); // 4 MiB
    g.sync().unwrap();
    g.reset_peak_memory_stats();
    // 2 MiB from the product, then 2 MiB more from sin while the product is alive.
    let p = a.matmul(&b.narrow(1, 0, 1024).unwrap()).unwrap();
    let e = p.sin().unwrap();
    let total = e.sum_all().unwrap().item().unwrap();
    assert!(total.is_finite());
    drop((p, e));
    g.sync().unwrap();
    let stats = g.memory_stats();
    let census = g.memory_census();
    let sum: u64 = census.iter().map(|c| c.2).sum();
    assert_eq!(sum, stats.peak_live_bytes, "census {census:?} vs {stats:?}");
    assert!(census.windows(2).all(|w| w[0].2 >= w[1].2), "not largest first: {census:?}");
    let bytes_of = |op: &str| census.iter().filter(|c| c.0 == op).map(|c| c.2).sum::<u64>();
    assert!(bytes_of("matmul") >= 2 * MIB as u64, "no 2 MiB product at the peak: {census:?}");
    // The two inputs were alive throughout.
    assert!(sum >= 9 * MIB as u64, "{census:?}");
    // Off by default on the CPU: nothing to count.
    assert!(Device::cpu().memory_census().is_empty());
}
