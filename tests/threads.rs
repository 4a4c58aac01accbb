//! Concurrency: `Tensor` and `Device` cross threads, several threads share one GPU device and
//! still get the CPU's answers, and a tensor dropped on another thread than the one that made
//! it gives its buffer back to the pool.

mod common;

use kiln::prelude::*;
use std::sync::{Barrier, Mutex, MutexGuard};

/// Compile-time check: both types must be usable from any thread.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Tensor>();
    send_sync::<Device>();
    send_sync::<kiln::Error>();
};

/// The GPU tests here read process-wide memory counters; serialise them so that one test's
/// buffers do not show up in another's numbers.
fn gpu_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn tensor_and_device_are_send_and_sync() {
    fn send_sync<T: Send + Sync + 'static>(_: &T) {}
    let t = Tensor::ones(&[2], &Device::cpu()).unwrap();
    send_sync(&t);
    send_sync(&Device::cpu());
    // Moving a tensor into a thread and back is the everyday use of those bounds.
    let back = std::thread::spawn(move || t.mul_scalar(3.0).unwrap()).join().unwrap();
    assert_eq!(back.to_vec::<f32>().unwrap(), vec![3.0, 3.0]);
}

/// One thread's work: a fixed mix of matmul, softmax, reductions and an elementwise chain on
/// `device`, every result read back as f64.
fn workload(x: &Tensor, w: &Tensor, shared: &Tensor, salt: f64) -> Result<Vec<Vec<f64>>> {
    let h = x.matmul(w)?; // [16, 24]
    let sm = h.softmax(-1)?;
    let sums = h.sum(&[0], false)?;
    let col_max = h.max(&[1], true)?;
    let chain = h.mul_scalar(0.5)?.add_scalar(salt)?.tanh()?.exp()?.sub(&sm)?.relu()?.sqrt()?;
    let mixed = (&chain + shared)?.log_softmax(0)?.mean(&[1], false)?;
    let total = sm.sum_all()?;
    [sm, sums, col_max, chain, mixed, total].iter().map(|t| t.to_f64_vec()).collect()
}

#[test]
fn four_threads_share_one_gpu_and_match_the_cpu() {
    let Some(gpu) = common::gpu("four_threads_share_one_gpu_and_match_the_cpu") else { return };
    let _serial = gpu_lock();
    let cpu = Device::cpu();
    // A tensor every thread reads at once.
    let shared_cpu = common::random(&[16, 24], DType::F32, 99, -1.0, 1.0);
    let shared_gpu = shared_cpu.to(&gpu).unwrap();
    const THREADS: usize = 4;
    const ROUNDS: usize = 40;
    let start = Barrier::new(THREADS);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (gpu, cpu, start) = (gpu.clone(), cpu.clone(), &start);
                let (shared_cpu, shared_gpu) = (shared_cpu.clone(), shared_gpu.clone());
                s.spawn(move || {
                    start.wait();
                    for round in 0..ROUNDS {
                        let seed = (t * 1000 + round) as u64;
                        let x = common::random(&[16, 32], DType::F32, seed, -2.0, 2.0);
                        let w = common::random(&[32, 24], DType::F32, seed + 500, -0.5, 0.5);
                        let salt = t as f64 * 0.1;
                        let want = workload(&x, &w, &shared_cpu, salt).unwrap();
                        let (xg, wg) = (x.to(&gpu).unwrap(), w.to(&gpu).unwrap());
                        let got = workload(&xg, &wg, &shared_gpu, salt).unwrap();
                        for (i, (g, c)) in got.iter().zip(&want).enumerate() {
                            common::assert_close(&format!("thread {t} round {round} output {i}"), g, c, 1e-4, 1e-5);
                        }
                        assert_eq!(x.device(), &cpu);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("a worker thread panicked");
        }
    });
    // Nobody wrote to the shared input.
    assert_eq!(shared_gpu.to_f64_vec().unwrap(), shared_cpu.to_f64_vec().unwrap());
}

#[test]
fn threads_share_tensors_and_autograd_graphs_stay_separate() {
    let Some(gpu) = common::gpu("threads_share_tensors_and_autograd_graphs_stay_separate") else { return };
    let _serial = gpu_lock();
    let w = common::random(&[8, 8], DType::F32, 7, -1.0, 1.0).to(&gpu).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let w = w.clone();
            s.spawn(move || {
                for round in 0..10 {
                    // Each thread builds its own graph on its own leaf over the shared weight.
                    let x = Tensor::full(&[3, 8], (t + round) as f64, &w.device().clone()).unwrap().with_grad();
                    let loss = x.matmul(&w).unwrap().sum_all().unwrap();
                    loss.backward().unwrap();
                    // d/dx sum(x·w) = row sums of w, broadcast over x's rows.
                    let want = w.sum(&[1], false).unwrap().to_f64_vec().unwrap();
                    let grad = x.grad().unwrap().to_f64_vec().unwrap();
                    for row in grad.chunks(8) {
                        common::assert_close(&format!("thread {t} grad"), row, &want, 1e-5, 1e-5);
                    }
                }
            });
        }
    });
    assert!(w.grad().is_none(), "a tensor without with_grad collected a gradient");
}

#[test]
fn a_tensor_dropped_on_another_thread_returns_its_buffer_to_the_pool() {
    let Some(gpu) = common::gpu("a_tensor_dropped_on_another_thread_returns_its_buffer_to_the_pool") else { return };
    let _serial = gpu_lock();
    // 1 MiB: big enough to stand out from any small buffer still settling.
    const N: usize = 1 << 18;
    const BYTES: u64 = (N * 4) as u64;
    // Scalar operands are cached per device (one small buffer each): create the one this test
    // uses before measuring, so the cache does not count as a leak.
    Tensor::ones(&[1], &gpu).unwrap().add_scalar(1.0).unwrap();
    for round in 0..3 {
        gpu.sync().unwrap();
        let before = gpu.memory_stats();
        let (tx, rx) = std::sync::mpsc::channel::<Tensor>();
        let maker = {
            let gpu = gpu.clone();
            std::thread::spawn(move || {
                let t = Tensor::full(&[N], round as f64, &gpu).unwrap().add_scalar(1.0).unwrap();
                gpu.sync().unwrap();
                let during = gpu.memory_stats();
                tx.send(t).unwrap();
                during
            })
        };
        let during = maker.join().unwrap();
        assert!(
            during.live_bytes >= before.live_bytes + BYTES,
            "round {round}: the tensor's buffer is not counted as live: {before:?} -> {during:?}"
        );
        let t = rx.recv().unwrap();
        assert_eq!(t.to_f64_vec().unwrap()[N - 1], round as f64 + 1.0);
        std::thread::spawn(move || drop(t)).join().unwrap();
        gpu.sync().unwrap();
        let after = gpu.memory_stats();
        assert!(
            after.live_bytes <= before.live_bytes,
            "round {round}: live bytes did not go back down after the drop: {before:?} -> {during:?} -> {after:?}"
        );
        // Between `during` and `after` only the drop (and a readback's staging buffer, which
        // also goes back) happened: the tensor's whole buffer must now sit in the pool.
        assert!(
            after.pooled_bytes >= during.pooled_bytes + BYTES,
            "round {round}: the dropped buffer did not reach the pool: {before:?} -> {during:?} -> {after:?}"
        );
    }
    // Later rounds reuse the pooled buffer instead of asking the driver for new ones.
    let s0 = gpu.memory_stats();
    let t = Tensor::full(&[N], 5.0, &gpu).unwrap().add_scalar(1.0).unwrap();
    drop(t);
    gpu.sync().unwrap();
    let s1 = gpu.memory_stats();
    assert_eq!(s1.allocations, s0.allocations, "a pooled buffer of the right size was not reused: {s0:?} -> {s1:?}");
}
