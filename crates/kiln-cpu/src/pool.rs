//! The program's main thread as one of rayon's workers, as PyTorch's caller is one of its
//! OpenMP threads.
//!
//! A thread outside rayon's pool that starts parallel work hands all of it to the pool's
//! threads and sleeps until they finish: every parallel op wakes the workers, then the caller,
//! and on a 2-core machine the 2 workers and the sleeping caller take turns on 2 cores (the
//! scheduler's switches and rayon's yields were ~12 % of W6 `--small`'s step). A worker that
//! starts parallel work runs part of it itself and wakes only the others. So the first time the
//! main thread makes a CPU tensor, rayon's global pool is built with that thread as worker 0
//! (`ThreadPoolBuilder::use_current_thread`), with rayon's usual thread count.
//!
//! Left alone when: the global pool already exists (the program used rayon first), the thread
//! is not the main thread (it may exit; test threads), or the pool would have one thread (work
//! that other threads hand to it would then wait until the main thread entered rayon).

use std::sync::Once;

/// Joins the main thread to rayon's global pool, once per process (see the module docs).
pub(crate) fn join_main_thread() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::thread::current().name() != Some("main") {
            return;
        }
        let threads = threads();
        if threads >= 2 {
            // An `Err` means the pool was built already: keep it as it is.
            let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).use_current_thread().build_global();
        }
    });
}

/// rayon's default thread count: `RAYON_NUM_THREADS` when it is a positive number, else the
/// machine's available parallelism.
fn threads() -> usize {
    let env = std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n > 0);
    env.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
