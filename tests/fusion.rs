//! Elementwise fusion: fused ≡ unfused ≡ CPU on random expression graphs, and fusion really
//! happens (few kernels for long chains, dropped intermediates not written).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use kiln::prelude::*;
use kiln::{BinaryOp, UnaryOp};
use kiln_testkit::Rng;
use std::sync::Mutex;

/// Fusion is a process-wide switch: tests that flip it or count kernels run one at a time.
static SWITCH: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SWITCH.lock().unwrap_or_else(|e| e.into_inner())
}

/// One step of a random graph; indices refer to earlier values of the same dtype family.
#[derive(Clone, Debug)]
enum Step {
    Unary(UnaryOp, usize),
    Binary(BinaryOp, usize, usize),
    Scalar(BinaryOp, usize, f64),
    /// f32 → clamp → i32 → i32 arithmetic → f32.
    IntRoundTrip(usize, usize),
    /// `where(a > b, c, d)`.
    Select(usize, usize, usize, usize),
    Transpose(usize),
    /// Row `k` as `[1, c]`: contiguous at a nonzero offset, broadcast back.
    Row(usize, usize),
    /// Column `k` as `[r, 1]`: strided, broadcast back.
    Col(usize, usize),
    /// A `[1, c]` or `[r, 1]` value expanded to the full shape.
    Expand(usize),
    SumLast(usize),
    MaxFirst(usize),
}

const UNARY: [UnaryOp; 14] = [
    UnaryOp::Neg,
    UnaryOp::Abs,
    UnaryOp::Relu,
    UnaryOp::Tanh,
    UnaryOp::Sigmoid,
    UnaryOp::Sin,
    UnaryOp::Cos,
    UnaryOp::Square,
    UnaryOp::Exp,
    UnaryOp::Sqrt,
    UnaryOp::Log1p,
    UnaryOp::Silu,
    UnaryOp::GeluTanh,
    UnaryOp::Floor,
];

const BINARY: [BinaryOp; 6] =
    [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Maximum, BinaryOp::Minimum, BinaryOp::Div];

struct Graph {
    shape: [usize; 2],
    leaves: Vec<Vec<f32>>,
    steps: Vec<Step>,
    /// Values read back (the rest are dropped before the readback).
    outputs: Vec<usize>,
}

/// Shapes of values as the graph grows: full `[r, c]`, row `[1, c]`, column `[r, 1]`.
/// `big` graphs have at least 1024 elements, a multiple of 4: the kernels' vec4 form.
fn random_graph(seed: u64, big: bool) -> Graph {
    let mut rng = Rng::new(seed);
    let (r, c) = match (big, rng.below(2)) {
        (false, 0) => (1 + rng.below(5), 0),
        (false, _) => (1 + rng.below(5), 1 + rng.below(7)),
        (true, 0) => (32, 0),
        (true, _) => (8 * (1 + rng.below(3)), 128 + 4 * rng.below(32)),
    };
    let c = if c == 0 { r } else { c };
    let n_leaves = 1 + rng.below(3);
    let leaves: Vec<Vec<f32>> =
        (0..n_leaves).map(|_| (0..r * c).map(|_| (rng.unit() * 4.0 - 2.0) as f32).collect()).collect();
    let mut shapes: Vec<[usize; 2]> = vec![[r, c]; n_leaves];
    let mut steps = Vec::new();
    let n_steps = 2 + rng.below(10);
    let full = |shapes: &[[usize; 2]], rng: &mut Rng| {
        let ids: Vec<usize> = (0..shapes.len()).filter(|&i| shapes[i] == [r, c]).collect();
        // Mostly recent values, so chains form.
        let k = ids.len() - 1 - rng.below(ids.len().min(3));
        ids[k]
    };
    let any = |shapes: &[[usize; 2]], rng: &mut Rng| {
        let n = shapes.len();
        n - 1 - rng.below(n.min(4))
    };
    for _ in 0..n_steps {
        let (step, shape) = match rng.below(14) {
            0..=3 => {
                let i = any(&shapes, &mut rng);
                (Step::Unary(UNARY[rng.below(UNARY.len())], i), shapes[i])
            }
            4..=6 => {
                let (i, j) = (full(&shapes, &mut rng), any(&shapes, &mut rng));
                let (i, j) = if rng.below(2) == 0 { (i, j) } else { (j, i) };
                (Step::Binary(BINARY[rng.below(BINARY.len())], i, j), [r, c])
            }
            7 => {
                let i = any(&shapes, &mut rng);
                let op = [BinaryOp::Add, BinaryOp::Mul, BinaryOp::Sub][rng.below(3)];
                (Step::Scalar(op, i, rng.unit() * 3.0 - 1.5), shapes[i])
            }
            8 => {
                let (i, j) = (full(&shapes, &mut rng), full(&shapes, &mut rng));
                (Step::IntRoundTrip(i, j), [r, c])
            }
            9 => {
                let ids: Vec<usize> = (0..4).map(|_| full(&shapes, &mut rng)).collect();
                (Step::Select(ids[0], ids[1], ids[2], ids[3]), [r, c])
            }
            10 if r == c => (Step::Transpose(full(&shapes, &mut rng)), [r, c]),
            10 | 11 => {
                let i = full(&shapes, &mut rng);
                if rng.below(2) == 0 {
                    (Step::Row(i, rng.below(r)), [1, c])
                } else {
                    (Step::Col(i, rng.below(c)), [r, 1])
                }
            }
            12 => {
                let i = any(&shapes, &mut rng);
                (Step::Expand(i), [r, c])
            }
            _ => {
                let i = full(&shapes, &mut rng);
                if rng.below(2) == 0 { (Step::SumLast(i), [r, 1]) } else { (Step::MaxFirst(i), [1, c]) }
            }
        };
        steps.push(step);
        shapes.push(shape);
    }
    let total = shapes.len();
    let mut outputs = vec![total - 1];
    for i in n_leaves..total - 1 {
        if rng.below(4) == 0 {
            outputs.push(i);
        }
    }
    Graph { shape: [r, c], leaves, steps, outputs }
}

/// Builds the graph on `device` and reads back its outputs, dropping everything else first.
fn evaluate(g: &Graph, device: &Device) -> Vec<Vec<f32>> {
    let [r, c] = g.shape;
    let mut vals: Vec<Option<Tensor>> =
        g.leaves.iter().map(|v| Some(Tensor::from_vec(v.clone(), &[r, c], device).unwrap())).collect();
    let get = |vals: &Vec<Option<Tensor>>, i: usize| vals[i].clone().unwrap();
    for step in &g.steps {
        let t = match *step {
            Step::Unary(op, i) => get(&vals, i).unary(op),
            Step::Binary(op, i, j) => {
                let b = get(&vals, j);
                // Keep divisors away from zero: what is tested is fusion, not cancellation.
                let b = if op == BinaryOp::Div { b.abs().unwrap().add_scalar(0.5).unwrap() } else { b };
                get(&vals, i).binary(&b, op)
            }
            Step::Scalar(op, i, s) => {
                get(&vals, i).binary(&Tensor::from_vec(vec![s as f32], &[1], device).unwrap(), op)
            }
            Step::IntRoundTrip(i, j) => {
                let a =
                    get(&vals, i).mul_scalar(10.0).unwrap().clamp(-100.0, 100.0).unwrap().to_dtype(DType::I32).unwrap();
                let b = get(&vals, j).clamp(-10.0, 10.0).unwrap().to_dtype(DType::I32).unwrap();
                let m = a.mul(&b).unwrap().add(&a).unwrap().maximum(&b).unwrap();
                m.to_dtype(DType::F32).unwrap().mul_scalar(0.01)
            }
            Step::Select(a, b, x, y) => {
                let cond = get(&vals, a).binary(&get(&vals, b), BinaryOp::Gt).unwrap();
                Tensor::where_(&cond, &get(&vals, x), &get(&vals, y))
            }
            Step::Transpose(i) => get(&vals, i).transpose(0, 1),
            Step::Row(i, k) => get(&vals, i).narrow(0, k, 1),
            Step::Col(i, k) => get(&vals, i).narrow(1, k, 1),
            Step::Expand(i) => get(&vals, i).expand(&[r, c]),
            Step::SumLast(i) => get(&vals, i).sum(&[-1], true),
            Step::MaxFirst(i) => get(&vals, i).max(&[0], true),
        };
        vals.push(Some(t.unwrap_or_else(|e| panic!("{step:?}: {e}"))));
    }
    // Drop what is not read back, so fusion may skip writing it.
    for (i, v) in vals.iter_mut().enumerate() {
        if !g.outputs.contains(&i) {
            *v = None;
        }
    }
    g.outputs.iter().map(|&i| vals[i].as_ref().unwrap().to_vec::<f32>().unwrap()).collect()
}

fn close(a: f32, b: f32, rtol: f32) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a.is_infinite() || b.is_infinite() {
        return a == b || (a - b).abs() <= rtol * a.abs().max(b.abs());
    }
    (a - b).abs() <= rtol * (1.0 + a.abs().max(b.abs()))
}

fn compare(
    what: &str,
    seed: u64,
    g: &Graph,
    x: &[Vec<f32>],
    y: &[Vec<f32>],
    rtol: f32,
) -> std::result::Result<(), String> {
    for (k, (a, b)) in x.iter().zip(y).enumerate() {
        for (e, (&p, &q)) in a.iter().zip(b).enumerate() {
            if !close(p, q, rtol) {
                return Err(format!(
                    "graph {seed} {what}: output {k} (value {}) element {e}: {p} vs {q}\nshape {:?}, steps {:?}",
                    g.outputs[k], g.shape, g.steps
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn random_graphs_fused_unfused_and_cpu_agree() {
    let Some(gpu) = common::gpu("random_graphs_fused_unfused_and_cpu_agree") else { return };
    let _g = lock();
    let ctx = gpu.gpu_context().unwrap().clone();
    let cpu = Device::cpu();
    let before = ctx.fusion_stats();
    let pipelines_before = ctx.memory_stats().pipelines;
    // 1000 small graphs (scalar kernels) and 100 big ones (vec4 kernels).
    let graphs = 1100;
    let mut failures = Vec::new();
    for seed in 0..graphs {
        let g = random_graph(seed, seed >= 1000);
        kiln::set_fusion(true);
        let fused = evaluate(&g, &gpu);
        kiln::set_fusion(false);
        let unfused = evaluate(&g, &gpu);
        kiln::set_fusion(true);
        let reference = evaluate(&g, &cpu);
        // Fused and unfused run the same expressions: only contraction may differ.
        if let Err(e) = compare("fused vs unfused", seed, &g, &fused, &unfused, 1e-4) {
            failures.push(e);
        }
        if let Err(e) = compare("fused vs cpu", seed, &g, &fused, &reference, 2e-3) {
            failures.push(e);
        }
    }
    let after = ctx.fusion_stats();
    eprintln!(
        "{graphs} graphs: {} ops fused into {} kernels writing {} outputs; {} pipelines built",
        after.recorded - before.recorded,
        after.kernels - before.kernels,
        after.outputs_written - before.outputs_written,
        ctx.memory_stats().pipelines - pipelines_before
    );
    assert!(after.kernels > before.kernels, "no fused kernel ran");
    assert!(
        failures.is_empty(),
        "{} of {graphs} graphs differ:\n{}",
        failures.len(),
        failures[..failures.len().min(5)].join("\n")
    );
}

#[test]
fn thousand_chained_ops_are_a_handful_of_kernels() {
    let Some(gpu) = common::gpu("thousand_chained_ops_are_a_handful_of_kernels") else { return };
    let _g = lock();
    kiln::set_fusion(true);
    let ctx = gpu.gpu_context().unwrap().clone();
    // The first adds also build the cached scalar operands (0 and 1): not part of the count.
    // (Whether 1.0 is cached already depends on which tests ran before on this device: on the
    // H100 with 8 test threads it was not, and its fill was counted.)
    let mut y = Tensor::zeros(&[3], &gpu).unwrap().add_scalar(0.0).unwrap();
    let _one = Tensor::zeros(&[3], &gpu).unwrap().add_scalar(1.0).unwrap();
    gpu.sync().unwrap();
    let before = ctx.fusion_stats();
    for _ in 0..1000 {
        y = y.add_scalar(1.0).unwrap();
    }
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![1000.0; 3]);
    let after = ctx.fusion_stats();
    assert_eq!(after.recorded - before.recorded, 1000);
    let kernels = after.kernels - before.kernels;
    assert!(kernels <= 20, "1000 chained adds took {kernels} kernels");
    // Each kernel writes only the value the next one starts from (the last: the result).
    assert_eq!(after.outputs_written - before.outputs_written, kernels, "{before:?} -> {after:?}");
}

#[test]
fn dropped_intermediates_are_not_written() {
    let Some(gpu) = common::gpu("dropped_intermediates_are_not_written") else { return };
    let _g = lock();
    kiln::set_fusion(true);
    let ctx = gpu.gpu_context().unwrap().clone();
    let a = Tensor::from_vec((0..1000).map(|i| i as f32 / 500.0 - 1.0).collect::<Vec<_>>(), &[10, 100], &gpu).unwrap();
    let b = Tensor::from_vec((0..1000).map(|i| (i % 7) as f32).collect::<Vec<_>>(), &[10, 100], &gpu).unwrap();
    let c = Tensor::from_vec((0..100).map(|i| i as f32 * 0.01).collect::<Vec<_>>(), &[100], &gpu).unwrap();
    gpu.sync().unwrap();
    let before = ctx.fusion_stats();
    // W3's shape: gelu(a·b + c), with c broadcast; only the gelu is held.
    let kept_mid = a.mul(&b).unwrap();
    let y = kept_mid.add(&c).unwrap().gelu_tanh().unwrap();
    let got = y.to_vec::<f32>().unwrap();
    let after = ctx.fusion_stats();
    assert_eq!(after.kernels - before.kernels, 1, "{before:?} -> {after:?}");
    assert_eq!(after.outputs_written - before.outputs_written, 2, "a·b is still held, a·b + c is not");
    let cpu = Device::cpu();
    let want =
        a.to(&cpu).unwrap().mul(&b.to(&cpu).unwrap()).unwrap().add(&c.to(&cpu).unwrap()).unwrap().gelu_tanh().unwrap();
    for (p, q) in got.iter().zip(want.to_vec::<f32>().unwrap()) {
        assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{p} vs {q}");
    }
    let want_mid = a.to(&cpu).unwrap().mul(&b.to(&cpu).unwrap()).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(kept_mid.to_vec::<f32>().unwrap(), want_mid);
}

#[test]
fn strided_reads_of_a_pending_value_and_in_place_writes_keep_order() {
    let Some(gpu) = common::gpu("strided_reads_of_a_pending_value_and_in_place_writes_keep_order") else { return };
    let _g = lock();
    kiln::set_fusion(true);
    let x = Tensor::from_vec((0..12).map(|i| i as f32).collect::<Vec<_>>(), &[3, 4], &gpu).unwrap();
    // The transpose of a pending value must be written before it is read through the view;
    // the intermediate itself is dropped.
    let t = x.add_scalar(1.0).unwrap().transpose(0, 1).unwrap();
    let y = t.mul_scalar(2.0).unwrap().add(&t).unwrap();
    drop(t);
    let want: Vec<f32> = (0..12).map(|k| (((k % 3) * 4 + k / 3) as f32 + 1.0) * 3.0).collect();
    assert_eq!(y.to_vec::<f32>().unwrap(), want);
    // A matmul (not fused) reading a pending value sees it written.
    let s = x.mul_scalar(0.5).unwrap();
    let m = s.matmul(&Tensor::ones(&[4, 1], &gpu).unwrap()).unwrap();
    assert_eq!(m.to_vec::<f32>().unwrap(), vec![3.0, 11.0, 19.0]);
}

#[test]
fn views_with_contiguous_rows_read_every_element_in_place() {
    // Views whose last dimension is contiguous and a multiple of 4 long (a [b, t, h, d] tensor
    // transposed to [b, h, t, d]; a slice of rows starting at an odd element) take the load that
    // indexes once per four elements in vec4 kernels. Against the CPU, element by element, at
    // sizes above and below the vec4 threshold; a last dimension of 6 takes the general path.
    let Some(gpu) = common::gpu("views_with_contiguous_rows_read_every_element_in_place") else { return };
    let _g = lock();
    kiln::set_fusion(true);
    let cpu = Device::cpu();
    let mut rng = Rng::new(0x0005_7a1d_e0ef_0001);
    for (shape, d) in [([3usize, 40, 5, 8], 8usize), ([2, 7, 3, 4], 4), ([2, 33, 3, 12], 12), ([2, 50, 3, 6], 6)] {
        let shape = [shape[0], shape[1], shape[2], d];
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = (0..n).map(|_| (rng.unit() * 4.0 - 2.0) as f32).collect();
        let on = |dev: &Device| {
            let x = Tensor::from_vec(vals.clone(), &shape, dev).unwrap();
            let heads = x.transpose(1, 2).unwrap();
            // Rows 1..d-3 of the last dimension (length d - 4, offset 1) when that is a
            // multiple of 4 and not empty.
            let cut = if d > 4 { x.narrow(3, 1, d - 4).unwrap() } else { x.clone() };
            let a = heads.mul_scalar(2.0).unwrap().add_scalar(0.5).unwrap().to_vec::<f32>().unwrap();
            let b = heads.contiguous().unwrap().to_vec::<f32>().unwrap();
            let c = cut.exp().unwrap().to_vec::<f32>().unwrap();
            (a, b, c)
        };
        let (ga, gb, gc) = on(&gpu);
        let (ca, cb, cc) = on(&cpu);
        assert_eq!(gb, cb, "copy of {shape:?} transposed");
        assert_eq!(ga, ca, "2x + 0.5 of {shape:?} transposed");
        assert_eq!(gc.len(), cc.len());
        for (k, (p, q)) in gc.iter().zip(&cc).enumerate() {
            assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "exp of the narrowed {shape:?} at {k}: {p} vs {q}");
        }
    }
}

#[test]
fn switching_fusion_off_dispatches_eagerly() {
    let Some(gpu) = common::gpu("switching_fusion_off_dispatches_eagerly") else { return };
    let _g = lock();
    let ctx = gpu.gpu_context().unwrap().clone();
    kiln::set_fusion(false);
    let before = ctx.fusion_stats();
    let y = Tensor::ones(&[5], &gpu).unwrap().add_scalar(1.0).unwrap().exp().unwrap();
    let v = y.to_vec::<f32>().unwrap();
    kiln::set_fusion(true);
    assert_eq!(ctx.fusion_stats(), before);
    assert!(v.iter().all(|&e| (e - 2f32.exp()).abs() < 1e-5));
}

/// A named chain step: the op applied again and again.
type ChainStep<'a> = (&'a str, &'a dyn Fn(&Tensor) -> Tensor);

/// `n` applications of `step` to `y`, on `device`.
fn chain(device: &Device, y0: &[f32], n: usize, step: &dyn Fn(&Tensor) -> Tensor) -> Tensor {
    let mut y = Tensor::from_vec(y0.to_vec(), &[y0.len()], device).unwrap();
    for _ in 0..n {
        y = step(&y);
    }
    y
}

#[test]
fn scalar_chains_of_any_length_agree_with_the_cpu_and_share_a_few_pipelines() {
    // A device of its own: its pipeline and sync counts are this test's alone.
    let Some(gpu) = common::own_gpu("scalar_chains_of_any_length_agree_with_the_cpu", |_| {}) else { return };
    let _g = lock();
    kiln::set_fusion(true);
    let cpu = Device::cpu();
    let mut lengths: Vec<usize> = (1..=70).collect();
    lengths.extend([127, 1000, 1023, 1024, 1025, 2000]);
    let mut warm = None;
    for n in [1, 7, 4096, 4097] {
        let y0: Vec<f32> = (0..n).map(|k| (k % 13) as f32 * 0.5 - 2.0).collect();
        let c: Vec<f32> = (0..n).map(|k| 0.25 * k as f32 - 3.0).collect();
        let (c_gpu, c_cpu) =
            (Tensor::from_vec(c.clone(), &[n], &gpu).unwrap(), Tensor::from_vec(c, &[n], &cpu).unwrap());
        // W8b's add, a product (rounding at every step), and a chain through the second operand.
        let steps: [ChainStep; 3] = [
            ("y + 1", &|y| y.add_scalar(1.0).unwrap()),
            ("y * 1.0001", &|y| y.mul_scalar(1.0001).unwrap()),
            ("c - y", &|y| (if y.device().is_gpu() { &c_gpu } else { &c_cpu }).sub(y).unwrap()),
        ];
        for (name, step) in &steps {
            for &len in &lengths {
                if n > 1 && len < 1000 && len % 9 != 0 {
                    continue; // every length at n = 1; a sample of them at the larger sizes
                }
                let got = chain(&gpu, &y0, len, step).to_vec::<f32>().unwrap();
                let want = chain(&cpu, &y0, len, step).to_vec::<f32>().unwrap();
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{name} x{len}, n={n}, element {k}: {g} vs {w}");
                }
            }
        }
        if n == 1 {
            warm = Some(gpu.memory_stats().pipelines);
        }
    }
    let (warm, end) = (warm.unwrap(), gpu.memory_stats().pipelines);
    // Per op: the chains shorter than a loop written out (3), the loop, and the first chain
    // with the scalar constant's fill in it. Unrolled, chains of 1..=2000 ops gave 64 per op.
    assert!(warm <= 3 * 6, "{warm} pipelines for scalar chains of 1..=2000 ops");
    // Per op, for contiguous inputs (n = 7; 4097 reuses them) and again for four lanes per
    // invocation (vec4, n = 4096): the loop, the loop and one op (the flush at 1024 pending ops
    // comes while the previous value is still held, so it ends the run), one op alone.
    assert!(end <= warm + 2 * 3 * 3, "{end} pipelines after the larger sizes ({warm} at n = 1)");
}

#[test]
fn a_long_chain_is_one_kernel_and_waits_only_when_read() {
    let Some(gpu) = common::own_gpu("a_long_chain_is_one_kernel_and_waits_only_when_read", |_| {}) else { return };
    let _g = lock();
    kiln::set_fusion(true);
    let ctx = gpu.gpu_context().unwrap().clone();
    // The first add also builds the cached scalar operand: not part of the count.
    let mut y = Tensor::zeros(&[1], &gpu).unwrap().add_scalar(1.0).unwrap().sub_scalar(1.0).unwrap();
    gpu.sync().unwrap();
    let (before, syncs) = (ctx.fusion_stats(), gpu.sync_count());
    for _ in 0..1000 {
        y = y.add_scalar(1.0).unwrap();
    }
    assert_eq!(gpu.sync_count(), syncs, "recording 1000 ops waited for the GPU");
    assert_eq!(y.item().unwrap(), 1000.0);
    assert_eq!(gpu.sync_count(), syncs + 1, "the readback is the one wait");
    let after = ctx.fusion_stats();
    assert_eq!(
        (after.recorded - before.recorded, after.kernels - before.kernels),
        (1000, 1),
        "{before:?} -> {after:?}"
    );
}

#[test]
fn a_run_reads_each_ops_own_parameters() {
    let Some(gpu) = common::gpu("a_run_reads_each_ops_own_parameters") else { return };
    let _g = lock();
    kiln::set_fusion(true);
    let cpu = Device::cpu();
    // Clamps with a different window each time: one run whose parameters are all different,
    // then leaky ReLUs with changing slopes (a second run in the same kernel).
    let run = |x: &Tensor, len: usize| {
        let mut y = x.clone();
        for k in 0..len {
            y = y.clamp(-3.0 + 0.05 * (k % 50) as f64, 3.0 - 0.04 * (k % 60) as f64).unwrap();
        }
        for k in 0..len {
            y = y.leaky_relu(0.5 + 0.001 * k as f64).unwrap();
        }
        y
    };
    for n in [1, 7, 4096] {
        let data: Vec<f32> = (0..n).map(|k| ((k * 37) % 101) as f32 * 0.07 - 3.5).collect();
        let (xg, xc) =
            (Tensor::from_vec(data.clone(), &[n], &gpu).unwrap(), Tensor::from_vec(data, &[n], &cpu).unwrap());
        for len in [3, 4, 5, 100, 400] {
            let got = run(&xg, len).to_vec::<f32>().unwrap();
            let want = run(&xc, len).to_vec::<f32>().unwrap();
            // The slope multiplies in f32 here and in f64 on the CPU: an ulp apart at most.
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "n={n}, {len} of each, element {k}: {g} vs {w}");
            }
        }
    }
}
