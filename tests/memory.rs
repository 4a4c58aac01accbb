//! Training does not grow GPU memory: the pool recycles every step's buffers and the graph is
//! freed by backward. Also: the same op run 1000 times builds one pipeline.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use kiln::prelude::*;
use std::sync::{Mutex, MutexGuard};

/// The tests share one GPU device and read its counters: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn thousand_training_steps_keep_memory_flat() {
    let _serial = serial();
    let Some(g) = common::gpu("thousand_training_steps_keep_memory_flat") else { return };
    kiln::manual_seed(1);
    let x = Tensor::randn(&[32, 20], &g).unwrap();
    let y = Tensor::randn(&[32, 1], &g).unwrap();
    let w1 = Tensor::randn(&[20, 16], &g).unwrap().mul_scalar(0.2).unwrap().with_grad();
    let w2 = Tensor::randn(&[16, 1], &g).unwrap().mul_scalar(0.2).unwrap().with_grad();
    let mut at_100 = None;
    let mut first_loss = 0.0;
    for step in 0..1000 {
        let pred = x.matmul(&w1).unwrap().relu().unwrap().matmul(&w2).unwrap();
        let loss = (&pred - &y).unwrap().square().unwrap().mean_all().unwrap();
        loss.backward().unwrap();
        kiln::no_grad(|| {
            for w in [&w1, &w2] {
                let grad = w.grad().unwrap();
                w.set_data(&(w - &grad.mul_scalar(0.05).unwrap()).unwrap()).unwrap();
                w.zero_grad();
            }
        });
        if step == 0 {
            first_loss = loss.item().unwrap();
        }
        if step == 100 {
            g.sync().unwrap();
            at_100 = Some(g.memory_stats());
        }
        if step == 999 {
            assert!(loss.item().unwrap() < first_loss, "the loss must go down");
        }
    }
    g.sync().unwrap();
    let (a, b) = (at_100.unwrap(), g.memory_stats());
    let total = |s: kiln::MemoryStats| (s.live_bytes + s.pooled_bytes) as f64;
    assert!(total(b) <= total(a) * 1.05 + 4096.0, "memory grew: {a:?} -> {b:?}");
    assert!(b.allocations <= a.allocations + 4, "new buffers after warm-up: {a:?} -> {b:?}");
}

/// An MNIST-shaped MLP (784 → 128 → 10, ReLU) with Adam, on synthetic batches of 64.
struct Mlp {
    model: kiln_nn::Sequential,
    opt: kiln_nn::optim::Adam,
}

impl Mlp {
    fn new(g: &Device) -> Mlp {
        use kiln_nn::ModuleExt;
        let model = kiln_nn::Sequential::new()
            .add(kiln_nn::Linear::new(784, 128, true, g).unwrap())
            .add(kiln_nn::Relu)
            .add(kiln_nn::Linear::new(128, 10, true, g).unwrap());
        let opt = kiln_nn::optim::Adam::new(model.parameters(), kiln_nn::optim::AdamConfig::default()).unwrap();
        Mlp { model, opt }
    }

    fn step(&mut self, x: &Tensor, y: &Tensor) -> f64 {
        use kiln_nn::Module;
        use kiln_nn::optim::Optimizer;
        self.opt.zero_grad();
        let loss = kiln_nn::loss::cross_entropy_loss(&self.model.forward(x).unwrap(), y).unwrap();
        loss.backward().unwrap();
        self.opt.step().unwrap();
        loss.item().unwrap()
    }
}

/// Synthetic "images" whose class is readable from them, so that the loss can fall.
fn synthetic_batches(g: &Device, count: usize) -> Vec<(Tensor, Tensor)> {
    (0..count)
        .map(|b| {
            let labels: Vec<u32> = (0..64).map(|i| ((i * 7 + b * 3) % 10) as u32).collect();
            let noise = Tensor::rand(&[64, 784], g).unwrap().mul_scalar(0.1).unwrap();
            let onehot = Tensor::one_hot(&Tensor::from_vec(labels.clone(), &[64], g).unwrap(), 10).unwrap();
            // Class c lights up pixels c·78 .. c·78 + 78.
            let x = (&noise + &onehot.repeat_interleave_cols(78)).unwrap();
            (x, Tensor::from_vec(labels, &[64], g).unwrap())
        })
        .collect()
}

trait SpreadCols {
    fn repeat_interleave_cols(&self, k: usize) -> Tensor;
}

impl SpreadCols for Tensor {
    /// `[n, 10] → [n, 784]`: each column repeated `k` times, zero-padded to 784.
    fn repeat_interleave_cols(&self, k: usize) -> Tensor {
        let n = self.shape()[0];
        let spread = self.unsqueeze(-1).unwrap().expand(&[n, 10, k]).unwrap().reshape(&[n, 10 * k]).unwrap();
        spread.pad(&[(0, 784 - 10 * k)], 0.0).unwrap()
    }
}

/// Training the MNIST MLP for a few hundred steps keeps the device's memory (tensors plus the
/// pool's free buffers) within ±5 % of what it was after the first epoch.
#[test]
fn mlp_training_memory_stays_within_5_percent_after_the_first_epoch() {
    let _serial = serial();
    let Some(g) = common::gpu("mlp_training_memory_stays_within_5_percent_after_the_first_epoch") else { return };
    kiln::manual_seed(3);
    const EPOCH: usize = 20;
    const EPOCHS: usize = 15;
    let batches = synthetic_batches(&g, EPOCH);
    let mut mlp = Mlp::new(&g);
    let total = |s: kiln::MemoryStats| (s.live_bytes + s.pooled_bytes) as f64;
    let (mut after_first, mut first_loss, mut last_loss) = (None, 0.0, 0.0);
    for epoch in 0..EPOCHS {
        let mut sum = 0.0;
        for (x, y) in &batches {
            sum += mlp.step(x, y);
        }
        let loss = sum / EPOCH as f64;
        g.sync().unwrap();
        let now = g.memory_stats();
        match after_first {
            None => (after_first, first_loss) = (Some(now), loss),
            Some(base) => {
                let ratio = total(now) / total(base);
                assert!(
                    (0.95..=1.05).contains(&ratio),
                    "epoch {}: memory moved {:+.1} % since epoch 1: {base:?} -> {now:?}",
                    epoch + 1,
                    (ratio - 1.0) * 100.0
                );
            }
        }
        last_loss = loss;
    }
    assert!(last_loss < first_loss * 0.5, "the MLP did not train: loss {first_loss} -> {last_loss}");
}

/// Dropping a model and its optimizer gives its memory back: live bytes return to their level
/// before the model was built (the pool may keep the freed buffers for reuse).
#[test]
fn dropping_a_model_and_its_optimizer_frees_their_memory() {
    let _serial = serial();
    let Some(g) = common::gpu("dropping_a_model_and_its_optimizer_frees_their_memory") else { return };
    kiln::manual_seed(4);
    let batches = synthetic_batches(&g, 2);
    let train = |steps: usize| {
        let mut mlp = Mlp::new(&g);
        for (x, y) in batches.iter().cycle().take(steps) {
            mlp.step(x, y);
        }
        g.sync().unwrap();
        mlp
    };
    // A first model warms what the device keeps for good (cached scalar operands, pipelines).
    drop(train(2));
    g.sync().unwrap();
    let before = g.memory_stats();
    let mlp = train(5);
    let with_model = g.memory_stats();
    // Weights, gradients and Adam's two moments: at least 4 × 4 bytes × 101 770 parameters.
    let params = 784 * 128 + 128 + 128 * 10 + 10;
    assert!(
        with_model.live_bytes >= before.live_bytes + 16 * params,
        "the model does not show in live memory: {before:?} -> {with_model:?}"
    );
    drop(mlp);
    g.sync().unwrap();
    let after = g.memory_stats();
    assert_eq!(
        after.live_bytes, before.live_bytes,
        "live memory not returned: {before:?} -> {with_model:?} -> {after:?}"
    );
}

/// Deterministic values in [-0.5, 0.5) for the big-tensor test, cheap to make and to recompute.
fn pattern(i: usize) -> f32 {
    ((i.wrapping_mul(7919) ^ (i >> 7)) % 1000) as f32 / 1000.0 - 0.5
}

/// A 208 MB f32 tensor (52 M elements) is past lavapipe's 128 MiB binding limit: elementwise
/// ops, reductions and matmul run on it in pieces, and agree with the same arithmetic done here
/// in Rust (all elements for elementwise ops and row reductions, sampled rows for matmul).
#[test]
fn ops_on_a_tensor_past_the_binding_limit_match_the_cpu() {
    let _serial = serial();
    let Some(g) = common::gpu("ops_on_a_tensor_past_the_binding_limit_match_the_cpu") else { return };
    const ROWS: usize = 4000;
    const COLS: usize = 13_000;
    const N: usize = ROWS * COLS;
    let limit = match &g {
        Device::Gpu(ctx) => ctx.limits.max_storage_buffer_binding_size as usize,
        Device::Cpu => unreachable!("common::gpu gives a GPU"),
    };
    if N * 4 <= limit {
        eprintln!(
            "SKIPPED ops_on_a_tensor_past_the_binding_limit_match_the_cpu: this adapter binds {limit} bytes, more than the 208 MB tensor"
        );
        if std::env::var("KILN_REQUIRE_GPU").is_ok_and(|v| v == "1") && limit <= 256 << 20 {
            panic!("the binding limit is {limit}, yet the test tensor fits");
        }
        return;
    }
    let host: Vec<f32> = (0..N).map(pattern).collect();
    let x = Tensor::from_vec(host.clone(), &[ROWS, COLS], &g).unwrap();

    // Elementwise: unary, binary with a scalar, binary of two big tensors, broadcast of a row.
    let y = (&x.mul_scalar(3.0).unwrap().exp().unwrap() - &x).unwrap();
    let row = Tensor::from_vec((0..COLS).map(|j| j as f32 * 1e-4).collect::<Vec<f32>>(), &[COLS], &g).unwrap();
    let z = (&y * &row).unwrap();
    let got = z.to_vec::<f32>().unwrap();
    assert_eq!(got.len(), N);
    for (i, (&v, &a)) in got.iter().zip(&host).enumerate() {
        let want = ((3.0 * a).exp() - a) * ((i % COLS) as f32 * 1e-4);
        assert!((v - want).abs() <= 1e-5 + 1e-5 * want.abs(), "elementwise: element {i}: gpu {v} vs {want}");
    }
    drop((got, y, z));

    // Reductions: over each row (pieces of rows) and over everything (partial sums reduced again).
    let sums = x.sum(&[1], false).unwrap().to_vec::<f32>().unwrap();
    let maxes = x.max(&[1], false).unwrap().to_vec::<f32>().unwrap();
    for r in 0..ROWS {
        let xs = &host[r * COLS..(r + 1) * COLS];
        let s: f64 = xs.iter().map(|&v| v as f64).sum();
        let m = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert!((sums[r] as f64 - s).abs() <= 1e-3 + 1e-5 * s.abs(), "row sum {r}: gpu {} vs {s}", sums[r]);
        assert_eq!(maxes[r], m, "row max {r}");
    }
    let total: f64 = host.iter().map(|&v| v as f64).sum();
    let got_total = x.sum_all().unwrap().item().unwrap();
    assert!((got_total - total).abs() <= 1.0 + 1e-5 * total.abs(), "sum of everything: gpu {got_total} vs {total}");
    let got_min = x.reshape(&[N]).unwrap().min(&[0], false).unwrap().item().unwrap();
    assert_eq!(got_min, host.iter().copied().fold(f32::INFINITY, f32::min) as f64, "min of everything");
    // Positions: per row, and over everything (the part holding the first extreme wins).
    let first_of = |xs: &[f32], better: fn(f32, f32) -> bool| {
        xs.iter().enumerate().fold(0, |best, (i, &v)| if better(v, xs[best]) { i } else { best })
    };
    let row_args = x.argmax(1, false).unwrap().to_vec::<u32>().unwrap();
    for r in (0..ROWS).step_by(7) {
        assert_eq!(row_args[r] as usize, first_of(&host[r * COLS..(r + 1) * COLS], |a, b| a > b), "row argmax {r}");
    }
    // Plant the unique extremes in the second half, so that finding them needs the part offset.
    let mut planted = host.clone();
    planted[N - 12_345] = 7.0;
    planted[N / 2 + 3] = -7.0;
    let flat = Tensor::from_vec(planted, &[N], &g).unwrap();
    assert_eq!(flat.argmax(0, false).unwrap().item().unwrap(), (N - 12_345) as f64, "argmax of everything");
    assert_eq!(flat.argmin(0, false).unwrap().item().unwrap(), (N / 2 + 3) as f64, "argmin of everything");
    drop(flat);
    let flat = x.reshape(&[N]).unwrap();
    assert_eq!(
        flat.argmax(0, false).unwrap().item().unwrap(),
        first_of(&host, |a, b| a > b) as f64,
        "first of tied maxima"
    );

    // Matmul: [400 000, 130] · [130, 8], A past the limit, checked on every 97th row.
    let (m, k, n) = (N / 130, 130, 8);
    let b_host: Vec<f32> = (0..k * n).map(|i| pattern(i * 31 + 5)).collect();
    let b = Tensor::from_vec(b_host.clone(), &[k, n], &g).unwrap();
    let c = x.reshape(&[m, k]).unwrap().matmul(&b).unwrap().to_vec::<f32>().unwrap();
    for i in (0..m).step_by(97).chain([m - 1]) {
        for j in 0..n {
            let want: f64 = (0..k).map(|t| host[i * k + t] as f64 * b_host[t * n + j] as f64).sum();
            let v = c[i * n + j] as f64;
            assert!((v - want).abs() <= 1e-4 + 1e-4 * want.abs(), "matmul [{i}, {j}]: gpu {v} vs {want}");
        }
    }

    // A layout spread thin over the whole buffer (the transpose) cannot be cut into windows:
    // a typed error, not a crawl through thousands of near-whole copies.
    match x.t().unwrap().contiguous() {
        Err(Error::OutOfMemory { op, msg }) => assert!(msg.contains("binding"), "{op}: {msg}"),
        other => panic!("a huge transposed copy: expected OutOfMemory, got {:?}", other.map(|t| t.shape().to_vec())),
    }

    // Ops without a split still refuse such a tensor with a typed error, and the device goes on.
    let ids = Tensor::from_vec(vec![0u32, 5], &[2], &g).unwrap();
    match x.index_select(1, &ids) {
        Err(Error::OutOfMemory { .. }) | Ok(_) => {}
        Err(e) => panic!("index_select on a huge tensor: {e}"),
    }
    assert_eq!(Tensor::ones(&[3], &g).unwrap().sum_all().unwrap().item().unwrap(), 3.0);
}

/// MiB, for messages and sizes.
const MIB: u64 = 1 << 20;

/// `mib` MiB of f32 whose values say where they came from: `seed + i`.
fn filled(mib: u64, seed: f32, g: &Device) -> (Tensor, Vec<f32>) {
    let n = (mib * MIB / 4) as usize;
    let host: Vec<f32> = (0..n).map(|i| seed + (i % 1000) as f32).collect();
    (Tensor::from_vec(host.clone(), &[n], g).unwrap(), host)
}

/// The device's stats after its recorded work has finished.
fn settled(g: &Device) -> kiln::MemoryStats {
    g.sync().unwrap();
    g.memory_stats()
}

/// Lifts the pool limit when a test ends, passing or not, so the shared device stays usable.
struct NoLimitAfter<'a>(&'a Device);

impl Drop for NoLimitAfter<'_> {
    fn drop(&mut self) {
        self.0.set_pool_limit(None);
    }
}

/// `empty_cache` gives every free buffer back and leaves tensors alone: their data reads back
/// unchanged and new work runs (on buffers asked from the driver again). The tensors are 10 MiB
/// and more, so each has a segment of its own when the pool lends blocks (a segment a tensor
/// still holds a block of keeps its free blocks, as PyTorch's does).
#[test]
fn empty_cache_releases_free_buffers_and_keeps_tensors() {
    let _serial = serial();
    let Some(g) = common::gpu("empty_cache_releases_free_buffers_and_keeps_tensors") else { return };
    g.sync().unwrap();
    g.empty_cache();
    let (keep, keep_host) = filled(10, 0.5, &g);
    drop(filled(12, 1.0, &g).0);
    drop(filled(14, 2.0, &g).0);
    let before = settled(&g);
    assert!(before.pooled_bytes >= 26 * MIB, "dropped tensors were not pooled: {before:?}");
    g.empty_cache();
    let after = g.memory_stats();
    assert_eq!(after.pooled_bytes, 0, "{before:?} -> {after:?}");
    assert_eq!(after.live_bytes, before.live_bytes, "tensors lost memory: {before:?} -> {after:?}");
    assert_eq!(keep.to_vec::<f32>().unwrap(), keep_host);
    // New buffers now come from the driver: the free lists are empty.
    let doubled = keep.mul_scalar(2.0).unwrap().to_vec::<f32>().unwrap();
    assert!(doubled.iter().zip(&keep_host).all(|(d, k)| *d == 2.0 * k));
    let (again, again_host) = filled(12, 3.0, &g);
    assert_eq!(again.to_vec::<f32>().unwrap(), again_host);
    assert!(settled(&g).allocations > after.allocations, "no new buffer after empty_cache");
    assert_eq!(Device::cpu().memory_stats(), kiln::MemoryStats::default());
    Device::cpu().empty_cache(); // a no-op, not a panic
}

/// The peaks follow live bytes and live + free bytes through an allocation and its drop, and
/// `reset_peak_memory_stats` restarts them from the current values.
#[test]
fn peak_memory_stats_follow_allocations_and_reset() {
    let _serial = serial();
    let Some(g) = common::gpu("peak_memory_stats_follow_allocations_and_reset") else { return };
    g.sync().unwrap();
    g.empty_cache();
    g.reset_peak_memory_stats();
    let start = g.memory_stats();
    assert_eq!(
        (start.peak_live_bytes, start.peak_total_bytes),
        (start.live_bytes, start.live_bytes + start.pooled_bytes)
    );
    let (t, _) = filled(4, 0.0, &g);
    let with = settled(&g);
    assert!(with.peak_live_bytes >= start.live_bytes + 4 * MIB, "{start:?} -> {with:?}");
    assert!(with.peak_total_bytes >= with.live_bytes + with.pooled_bytes, "{with:?}");
    drop(t);
    let after = settled(&g);
    assert!(after.live_bytes + 4 * MIB <= with.live_bytes, "the drop did not free: {with:?} -> {after:?}");
    assert!(after.peak_live_bytes >= with.peak_live_bytes, "a peak went down: {with:?} -> {after:?}");
    g.reset_peak_memory_stats();
    let reset = g.memory_stats();
    assert_eq!(reset.peak_live_bytes, reset.live_bytes, "{reset:?}");
    assert_eq!(reset.peak_total_bytes, reset.live_bytes + reset.pooled_bytes, "{reset:?}");
}

/// With a pool limit, allocations that would pass it let free buffers go first (largest
/// first) instead of failing; live + free stays under the limit whenever live bytes alone do;
/// tensors bigger than the limit still get their memory; a lower limit trims at once.
#[test]
fn pool_limit_trims_free_buffers_instead_of_failing() {
    let _serial = serial();
    let Some(g) = common::gpu("pool_limit_trims_free_buffers_instead_of_failing") else { return };
    let _lift = NoLimitAfter(&g);
    // The scalars this test's ops use are cached device buffers: made before `base` is read.
    let warm = Tensor::from_vec(vec![1.0f32; 4], &[4], &g).unwrap();
    drop(warm.mul_scalar(0.5).unwrap().add_scalar(1.0).unwrap().to_vec::<f32>().unwrap());
    drop(warm);
    g.sync().unwrap();
    g.empty_cache();
    let base = g.memory_stats().live_bytes;
    let limit = base + 8 * MIB;
    g.set_pool_limit(Some(limit));
    assert_eq!(g.pool_limit(), Some(limit));
    let total = |s: kiln::MemoryStats| s.live_bytes + s.pooled_bytes;

    // Fill the free lists: 2 + 3 MiB dropped, 1/2 MiB kept (in a buffer of its own: a smaller
    // request than a block's; blocks share segments, and a segment a tensor holds cannot go).
    let keep_host: Vec<f32> = (0..(MIB / 8) as usize).map(|i| 7.0 + (i % 1000) as f32).collect();
    let keep = Tensor::from_vec(keep_host.clone(), &[keep_host.len()], &g).unwrap();
    drop(filled(2, 1.0, &g).0);
    drop(filled(3, 2.0, &g).0);
    let full = settled(&g);
    assert!(full.pooled_bytes >= 5 * MIB && total(full) <= limit, "{full:?} (limit {limit})");

    // 5 MiB more does not fit beside 6 MiB held: the 3 MiB buffer goes first, then the 2 MiB.
    let (big, big_host) = filled(5, 3.0, &g);
    let s = settled(&g);
    assert!(total(s) <= limit, "past the limit: {s:?} (limit {limit})");
    assert_eq!(big.to_vec::<f32>().unwrap(), big_host);
    assert_eq!(keep.to_vec::<f32>().unwrap(), keep_host);

    // Live bytes alone past the limit: the tensor is made anyway, the pool keeps nothing free,
    // and its buffer goes back to the driver when dropped. (With blocks, `big` holds a block of
    // the segment the limit sized at 7.5 MiB, whose other 2.5 MiB stay free.)
    let (huge, huge_host) = filled(12, 4.0, &g);
    let s = settled(&g);
    assert_eq!(huge.to_vec::<f32>().unwrap(), huge_host);
    let unused = if blocks_on() { 5 * MIB / 2 } else { 0 };
    assert!(s.live_bytes > limit && s.pooled_bytes <= unused, "{s:?} (limit {limit})");
    drop(huge);
    let s = settled(&g);
    assert!(total(s) <= limit, "the dropped 12 MiB stayed in the pool: {s:?} (limit {limit})");

    // Work under the limit gives the same results as without one.
    let y = big.mul_scalar(0.5).unwrap().add_scalar(1.0).unwrap().to_vec::<f32>().unwrap();
    assert!(y.iter().zip(&big_host).all(|(y, x)| *y == 0.5 * x + 1.0));
    let s = settled(&g);
    assert!(total(s) <= limit, "{s:?} (limit {limit})");

    // A lower limit lets free buffers go at once; lifting it keeps drops in the pool again.
    drop(big);
    let before = settled(&g);
    assert!(before.pooled_bytes >= 5 * MIB, "{before:?}");
    g.set_pool_limit(Some(base + 2 * MIB));
    let after = g.memory_stats();
    assert!(total(after) <= base + 2 * MIB, "{before:?} -> {after:?}");
    assert_eq!(after.live_bytes, before.live_bytes);
    g.set_pool_limit(None);
    assert_eq!(g.pool_limit(), None);
    drop(filled(3, 5.0, &g).0);
    assert!(settled(&g).pooled_bytes >= 3 * MIB, "without a limit the pool keeps buffers again");
    drop(keep);
}

/// `ContextOptions::pool_limit` (what `KILN_POOL_LIMIT=<MiB>` sets) is the limit a new device starts with.
#[test]
fn pool_limit_option_applies_to_a_new_device() {
    let _serial = serial();
    if common::gpu("pool_limit_option_applies_to_a_new_device").is_none() {
        return;
    }
    let options = kiln_wgpu::ContextOptions { pool_limit: Some(64 * MIB), ..Default::default() };
    let ctx = kiln_wgpu::GpuContext::new_with(&kiln_wgpu::context::AdapterChoice::from_env(), &options)
        .expect("a second context");
    let d = Device::Gpu(ctx);
    assert_eq!(d.pool_limit(), Some(64 * MIB));
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], &d).unwrap();
    assert_eq!(x.mul_scalar(2.0).unwrap().to_vec::<f32>().unwrap(), [2.0, 4.0, 6.0]);
}

/// The graph keeps what gradient rules read, not every forward intermediate: an op output no
/// rule saves is freed as soon as the user drops it, though backward still runs through it.
#[test]
fn graph_frees_intermediates_no_gradient_needs() {
    let _serial = serial();
    let Some(g) = common::gpu("graph_frees_intermediates_no_gradient_needs") else { return };
    kiln::manual_seed(5);
    let x = Tensor::randn(&[256, 256], &g).unwrap().with_grad();
    let w = Tensor::randn(&[256, 4096], &g).unwrap();
    let before = settled(&g).live_bytes;
    // `a` is 4 MiB; `sum`'s gradient needs only its shape, `matmul`'s needs x and w.
    let a = x.matmul(&w).unwrap();
    let loss = a.sum(&[1], false).unwrap().sum_all().unwrap();
    let with_a = settled(&g).live_bytes;
    assert!(with_a >= before + 4 * MIB, "{before} -> {with_a}");
    drop(a);
    let without_a = settled(&g).live_bytes;
    assert!(without_a + 4 * MIB <= with_a, "the graph kept the intermediate alive: {with_a} -> {without_a}");
    loss.backward().unwrap();
    // d loss / dx = 1 · wᵀ summed over columns: every row of the gradient is w's row sums.
    let rows = w.sum(&[1], false).unwrap().to_vec::<f32>().unwrap();
    let grad = x.grad().unwrap().to_vec::<f32>().unwrap();
    for (i, v) in grad.iter().enumerate() {
        let want = rows[i % 256];
        assert!((v - want).abs() <= 1e-3 * want.abs().max(1.0), "grad[{i}] = {v}, want {want}");
    }
}

/// A small CNN (conv 1→8, ReLU, conv 8→16, ReLU, 2×2 max-pool, linear) keeps for backward what
/// its gradients read, as PyTorch does: each ReLU's output (the next layer's input too), the
/// pool's argmax positions and the linear layer's input. Not the convolutions' im2col columns
/// (9× their input: conv2's are 2.3 MiB here), not each ReLU's input beside its output, not the
/// pool's windows. The bound is computed from the shapes; the old graph kept ~3.7× it.
#[test]
fn conv_net_keeps_activations_not_im2col_columns() {
    use kiln_nn::{Conv2d, Flatten, Linear, MaxPool2d, Module, Relu, Sequential};
    let _serial = serial();
    let Some(g) = common::gpu("conv_net_keeps_activations_not_im2col_columns") else { return };
    kiln::manual_seed(11);
    let (n, h, w, c1, c2) = (8usize, 28usize, 28usize, 8usize, 16usize);
    let same = Conv2dOptions { padding: (1, 1), ..Default::default() };
    let model = Sequential::new()
        .add(Conv2d::new(1, c1, (3, 3), same, true, &g).unwrap())
        .add(Relu)
        .add(Conv2d::new(c1, c2, (3, 3), same, true, &g).unwrap())
        .add(Relu)
        .add(MaxPool2d::new((2, 2), (2, 2), (0, 0)))
        .add(Flatten)
        .add(Linear::new(c2 * (h / 2) * (w / 2), 10, true, &g).unwrap());
    let x = Tensor::randn(&[n, 1, h, w], &g).unwrap();
    let before = settled(&g).live_bytes;
    let out = model.forward(&x).unwrap();
    let kept = settled(&g).live_bytes - before;
    let f32s = |count: usize| (count * 4) as u64;
    let relu1 = f32s(n * c1 * h * w);
    let relu2 = f32s(n * c2 * h * w);
    let pooled = f32s(n * c2 * h * w / 4); // the linear layer's input
    let taps = pooled; // u32 argmax positions
    let logits = f32s(n * 10);
    // Size classes round up by at most a quarter; small buffers take at least 256 bytes.
    let bound = (relu1 + relu2 + pooled + taps + logits) * 5 / 4 + 16 * 256;
    let columns = f32s(n * c1 * 9 * h * w);
    assert!(kept <= bound, "forward kept {kept} bytes for backward, bound {bound} (conv2's columns alone: {columns})");
    // And backward still runs from what was kept: the same gradients as on the CPU.
    let loss = out.square().unwrap().mean_all().unwrap();
    loss.backward().unwrap();
    let cpu = Device::cpu();
    let cpu_model = Sequential::new()
        .add(Conv2d::new(1, c1, (3, 3), same, true, &cpu).unwrap())
        .add(Relu)
        .add(Conv2d::new(c1, c2, (3, 3), same, true, &cpu).unwrap())
        .add(Relu)
        .add(MaxPool2d::new((2, 2), (2, 2), (0, 0)))
        .add(Flatten)
        .add(Linear::new(c2 * (h / 2) * (w / 2), 10, true, &cpu).unwrap());
    use kiln_nn::ModuleExt;
    for (p, q) in model.parameters().iter().zip(cpu_model.parameters()) {
        kiln::no_grad(|| q.set_data(&p.to(&cpu).unwrap())).unwrap();
    }
    let cpu_loss = cpu_model.forward(&x.to(&cpu).unwrap()).unwrap().square().unwrap().mean_all().unwrap();
    cpu_loss.backward().unwrap();
    for (p, q) in model.parameters().iter().zip(cpu_model.parameters()) {
        let (a, b) = (p.grad().unwrap().to_f64_vec().unwrap(), q.grad().unwrap().to_f64_vec().unwrap());
        common::assert_close(&format!("grad of {:?}", p.shape()), &a, &b, 1e-3, 1e-5);
    }
}

/// Without `KILN_POOL_BUDGET_MB`, once the live peak passes the pool's floor (256 MiB) the pool
/// keeps about that peak, not every size class a step ever used: a step whose tensors change
/// size between phases (three 100 MiB tensors, then five 60 MiB ones) serves the second phase
/// from the first phase's free buffers where a new one would take the pool past the peak, and
/// after the first step asks the driver for nothing. The old policy (keep up to 2 GiB) pooled
/// both phases side by side: 336 + 320 MiB of buffers.
#[test]
fn pool_keeps_about_the_live_peak_when_sizes_shift() {
    let _serial = serial();
    let Some(g) = common::gpu("pool_keeps_about_the_live_peak_when_sizes_shift") else { return };
    g.sync().unwrap();
    g.empty_cache();
    g.reset_peak_memory_stats();
    let elems = |mib: u64| (mib * MIB / 4) as usize;
    let step = || {
        let big: Vec<Tensor> = (0..3).map(|_| Tensor::zeros(&[elems(100)], &g).unwrap()).collect();
        g.sync().unwrap();
        drop(big);
        let small: Vec<Tensor> = (0..5).map(|_| Tensor::zeros(&[elems(60)], &g).unwrap()).collect();
        g.sync().unwrap();
        drop(small);
    };
    step();
    let after_first = settled(&g);
    for _ in 0..3 {
        step();
    }
    let end = settled(&g);
    assert_eq!(end.allocations, after_first.allocations, "buffers asked for after the first step: {end:?}");
    // 100 MiB tensors take 112 MiB buffers, 60 MiB ones 64 MiB: the first phase is 336 MiB;
    // two of the second phase's tensors may get new buffers before the pool is full.
    // (1 MiB for the small buffers other work keeps.)
    assert!(end.peak_total_bytes <= (336 + 2 * 64 + 1) * MIB, "pool grew past the live peak: {end:?}");
    g.empty_cache();
}

/// Under f16 autocast GELU keeps an f16 copy of its f32 input for backward (PyTorch's GELU there
/// reads, and saves, the f16 output of the product before it): a linear layer and a GELU keep,
/// once the forward returns, the GELU's output (f32), 2 bytes per element of its input and the
/// product's f16 operand copies; the old graph kept the f32 input (1 MiB more here). The
/// gradients through the f16 copy match the CPU backend's under autocast within f16 tolerance
/// (the backward products round to f16: a few ulps apart where the sums' orders differ), and a
/// GELU's gradient on a leaf matches f32 GELU' at the input within f16 tolerance.
#[test]
fn gelu_under_autocast_saves_its_input_in_f16() {
    let _serial = serial();
    let Some(g) = common::gpu("gelu_under_autocast_saves_its_input_in_f16") else { return };
    if !common::has_f16_else_refused(&g) {
        return;
    }
    kiln::manual_seed(5);
    let (n, k, m) = (256usize, 64usize, 1024usize);
    let cpu = Device::cpu();
    let a = Tensor::randn(&[n, k], &cpu).unwrap();
    let w = Tensor::randn(&[k, m], &cpu).unwrap().mul_scalar(0.3).unwrap();
    let b = Tensor::randn(&[m], &cpu).unwrap();
    let grads = |d: &Device, measure: bool| {
        let (a, w, b) = (a.to(d).unwrap(), w.to(d).unwrap().with_grad(), b.to(d).unwrap().with_grad());
        let before = if measure { settled(d).live_bytes } else { 0 };
        let y = kiln::autocast(DType::F16, || (&a.matmul(&w)? + &b)?.gelu()).unwrap();
        let kept = if measure { settled(d).live_bytes - before } else { 0 };
        y.square().unwrap().sum_all().unwrap().backward().unwrap();
        (kept, w.grad().unwrap().to_f64_vec().unwrap(), b.grad().unwrap().to_f64_vec().unwrap())
    };
    let (kept, gw, gb) = grads(&g, true);
    let f32_bytes = (n * m * 4) as u64;
    let f16_bytes = (n * m * 2) as u64;
    let operands = ((n * k + k * m) * 2) as u64;
    let bound = f32_bytes + f16_bytes + operands + 16 * 256;
    assert!(kept <= bound, "forward kept {kept} bytes, bound {bound} (GELU's f32 input alone: {f32_bytes})");
    let (_, cw, cb) = grads(&cpu, false);
    common::assert_close("w's gradient vs the CPU under autocast", &gw, &cw, 1e-2, 1e-2);
    common::assert_close("b's gradient vs the CPU under autocast", &gb, &cb, 1e-2, 1e-2);

    // A leaf input: the gradient is GELU' at x rounded to f16, computed in f32.
    let x = Tensor::randn(&[7, 1023], &cpu).unwrap().mul_scalar(2.0).unwrap().to(&g).unwrap().with_grad();
    let y = kiln::autocast(DType::F16, || x.gelu()).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    y.sum_all().unwrap().backward().unwrap();
    let got = x.grad().unwrap();
    assert_eq!(got.dtype(), DType::F32);
    let xc = x.detach().to(&cpu).unwrap().with_grad();
    xc.gelu().unwrap().sum_all().unwrap().backward().unwrap();
    let want = xc.grad().unwrap().to_f64_vec().unwrap();
    // GELU'' is at most ~0.5 in size, and f16 rounds |x| ≤ 8 by at most 2^-8.
    common::assert_close("GELU' from the f16 copy", &got.to_f64_vec().unwrap(), &want, 0.0, 3e-3);
}

/// Whether the pool lends blocks of shared buffers (`KILN_POOL_SPLIT=0` turns them off).
fn blocks_on() -> bool {
    std::env::var("KILN_POOL_SPLIT").map(|v| !matches!(v.trim(), "0" | "off" | "false")).unwrap_or(true)
}

/// Tensors of 4–6 MiB are blocks of one shared buffer (a 48 MiB segment a dropped tensor left
/// free): each is uploaded, computed on (elementwise, a product whose operands and result share
/// the segment, a reduction, a strided copy) and read back at its own offset, also after blocks
/// between them were freed and taken by other sizes. A binding, upload or copy that ignored a
/// block's offset would see a neighbour's data, and a kernel that bound an input read-only beside
/// a writable block of the same buffer would be refused by wgpu.
#[test]
fn tensors_in_one_segment_keep_their_own_bytes() {
    let Some(g) = common::own_gpu("tensors_in_one_segment_keep_their_own_bytes", |_| {}) else { return };
    let values = |tag: usize, n: usize| -> Vec<f32> { (0..n).map(|j| (tag * 1000 + j % 997) as f32).collect() };
    let upload = |tag: usize, n: usize| {
        let host = values(tag, n);
        (Tensor::from_vec(host.clone(), &[n], &g).unwrap(), host)
    };
    drop(Tensor::zeros(&[(48 * MIB / 4) as usize], &g).unwrap());
    g.sync().unwrap();
    // Odd element counts of 4 to 6 MiB of f32: 31 MiB in all.
    let start = g.memory_stats().allocations;
    let mut tensors: Vec<(Tensor, Vec<f32>)> = [1_048_577usize, 1_310_721, 1_572_863, 1_048_833, 1_376_257, 1_769_473]
        .iter()
        .enumerate()
        .map(|(i, &n)| upload(i, n))
        .collect();
    if blocks_on() {
        assert_eq!(g.memory_stats().allocations, start, "six blocks should share the free segment");
        let (first, _) = tensors[0].0.wgpu_buffer().unwrap();
        let mut offsets: Vec<u64> = tensors
            .iter()
            .map(|(t, _)| {
                let (buffer, offset) = t.wgpu_buffer().unwrap();
                assert!(buffer == first, "a block outside the shared segment");
                offset
            })
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(offsets.len(), 6, "blocks at the same offset");
    }
    let check_all = |tensors: &[(Tensor, Vec<f32>)]| {
        for (i, (t, host)) in tensors.iter().enumerate() {
            assert_eq!(&t.to_vec::<f32>().unwrap(), host, "tensor {i} read back changed");
            let y = t.mul_scalar(2.0).unwrap().add_scalar(1.0).unwrap().to_vec::<f32>().unwrap();
            assert!(y.iter().zip(host).all(|(y, x)| *y == 2.0 * x + 1.0), "tensor {i}: 2x + 1 wrong");
            let sum = t.sum_all().unwrap().item().unwrap();
            let want: f64 = host.iter().map(|&v| v as f64).sum();
            assert!((sum - want).abs() <= 1e-5 * want, "tensor {i}: sum {sum}, want {want}");
        }
    };
    check_all(&tensors);
    // A product whose operands and result are blocks of the same segment (4 MiB each, in the
    // 17 MiB the tensors left), and a strided copy.
    let (m, k, n) = (1025usize, 1024usize, 1025usize);
    let a_cpu = common::random(&[m, k], DType::F32, 3, -1.0, 1.0);
    let b_cpu = common::random(&[k, n], DType::F32, 4, -1.0, 1.0);
    let (a, b) = (a_cpu.to(&g).unwrap(), b_cpu.to(&g).unwrap());
    let want = a_cpu.matmul(&b_cpu).unwrap().to_f64_vec().unwrap();
    common::assert_close("a·b over blocks", &a.matmul(&b).unwrap().to_f64_vec().unwrap(), &want, 1e-4, 1e-4);
    let a_host = a_cpu.to_vec::<f32>().unwrap();
    let at = a.t().unwrap().contiguous().unwrap().to_vec::<f32>().unwrap();
    assert!((0..k * m).all(|i| at[i] == a_host[(i % m) * k + i / m]), "the transposed copy is wrong");
    // Free blocks between others and fill the gaps with other sizes and other data.
    let allocated = g.memory_stats().allocations;
    tensors.remove(3);
    tensors.remove(1);
    tensors.push(upload(7, 1_200_001));
    tensors.push(upload(8, 1_048_579));
    if blocks_on() {
        assert_eq!(g.memory_stats().allocations, allocated, "the freed blocks should serve the new tensors");
    }
    check_all(&tensors);
}

/// W7's CNN (conv 1→32, conv 32→64, max-pool, two linear layers; SGD with momentum) at batch 32
/// on a device of its own: its tensors shift size through the step (im2col columns of 27.6 MiB,
/// activations and their gradients of 3 and 6 MiB, weight gradients), which whole buffers of
/// fixed size classes could only serve by keeping one of every size. Blocks split and merge:
/// the pool stays within CNN_PEAK_RATIO of the live peak, and after two steps asks the driver
/// for nothing.
/// The most W7's step at batch 32 may pool over its live peak. Lavapipe, 2026-12-08: 97.6 MiB
/// for 59.4 live with blocks (1.64×), 100.4 for 63.4 with whole buffers; PyTorch's W7 (batch
/// 128) reserves 1.37× what it allocates at most.
const CNN_PEAK_RATIO: f64 = 1.8;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[test]
fn cnn_step_pools_little_more_than_its_live_peak() {
    use kiln_nn::optim::{Optimizer, Sgd, SgdConfig};
    use kiln_nn::{Conv2d, Flatten, Linear, MaxPool2d, Module, ModuleExt, Relu, Sequential};
    let Some(g) = common::own_gpu("cnn_step_pools_little_more_than_its_live_peak", |_| {}) else { return };
    kiln::manual_seed(7);
    let same = Conv2dOptions { padding: (1, 1), ..Default::default() };
    let model = Sequential::new()
        .add(Conv2d::new(1, 32, (3, 3), same, true, &g).unwrap())
        .add(Relu)
        .add(Conv2d::new(32, 64, (3, 3), same, true, &g).unwrap())
        .add(Relu)
        .add(MaxPool2d::new((2, 2), (2, 2), (0, 0)))
        .add(Flatten)
        .add(Linear::new(64 * 14 * 14, 128, true, &g).unwrap())
        .add(Relu)
        .add(Linear::new(128, 10, true, &g).unwrap());
    let mut opt = Sgd::new(model.parameters(), SgdConfig { momentum: 0.9, ..SgdConfig::new(1e-2) }).unwrap();
    let x = Tensor::randn(&[32, 1, 28, 28], &g).unwrap();
    let y = Tensor::from_vec((0..32u32).map(|i| i % 10).collect::<Vec<u32>>(), &[32], &g).unwrap();
    let mut step = || {
        opt.zero_grad();
        let loss = kiln_nn::loss::cross_entropy_loss(&model.forward(&x).unwrap(), &y).unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
        g.sync().unwrap();
    };
    // Two steps first: the second is the first with momentum buffers to read.
    step();
    step();
    let warm = g.memory_stats();
    for _ in 0..3 {
        step();
    }
    let end = g.memory_stats();
    let ratio = end.peak_total_bytes as f64 / end.peak_live_bytes as f64;
    eprintln!(
        "cnn step: pool peak {:.1} MiB for a live peak of {:.1} MiB ({ratio:.2}x)",
        mib(end.peak_total_bytes),
        mib(end.peak_live_bytes)
    );
    assert_eq!(end.allocations, warm.allocations, "buffers asked for after two steps: {warm:?} -> {end:?}");
    assert!(ratio <= CNN_PEAK_RATIO, "pool peak {ratio:.2}x the live peak (at most {CNN_PEAK_RATIO}): {end:?}");
}
