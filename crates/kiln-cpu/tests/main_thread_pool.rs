//! The first CPU tensor made on the main thread joins that thread to rayon's global pool as
//! worker 0 (kiln-cpu's `pool` module), when the pool would have two threads or more. Runs
//! without the test harness, whose tests run on threads of their own, not the main thread.

use kiln_backend::{BackendStorage, BinaryOp, HostData, Layout};
use kiln_cpu::{CpuDevice, CpuStorage};

fn main() {
    assert_eq!(std::thread::current().name(), Some("main"), "must run on the main thread");
    assert_eq!(rayon::current_thread_index(), None, "in the pool before any CPU tensor");
    // rayon's default count, as documented: RAYON_NUM_THREADS when positive, else the cores.
    let env = std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0);
    let threads = env.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));

    // Big enough (2¹⁷ elements) that the addition below splits across threads.
    let n = 1 << 17;
    let l = Layout::contiguous(&[n]);
    let x = CpuStorage::from_host(&CpuDevice, &HostData::F32((0..n).map(|i| i as f32).collect())).expect("upload");
    let want_index = if threads >= 2 { Some(0) } else { None };
    assert_eq!(rayon::current_thread_index(), want_index, "{threads} threads");
    assert_eq!(rayon::current_num_threads(), threads);

    // A parallel op started by the main thread, now a worker, gives the exact sums.
    let y = x.binary(&l, &x, &l, BinaryOp::Add).expect("add");
    let want: Vec<f32> = (0..n).map(|i| 2.0 * i as f32).collect();
    assert_eq!(y.to_host(&l).expect("read"), HostData::F32(want.clone()));

    // Work handed to the pool by another thread finishes while the main thread (worker 0) is
    // blocked outside rayon: the other workers run it.
    let other = std::thread::spawn(move || {
        let z = x.binary(&l, &x, &l, BinaryOp::Add).expect("add on another thread");
        z.to_host(&l).expect("read")
    });
    assert_eq!(other.join().expect("other thread"), HostData::F32(want));
    println!("main_thread_pool: ok ({threads} threads, main thread index {want_index:?})");
}
