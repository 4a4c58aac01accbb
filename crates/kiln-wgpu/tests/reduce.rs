//! Reductions, softmax and cumsum on the GPU against the CPU backend (f64 for float inputs).

mod common;

use kiln_backend::{BackendStorage, DType, Error, HostData, Layout, ReduceOp};
use kiln_cpu::{CpuDevice, CpuStorage};
use kiln_testkit::Rng;
use kiln_wgpu::{GpuDevice, GpuStorage};

fn upload(dev: &GpuDevice, values: &[f64], dtype: DType) -> GpuStorage {
    GpuStorage::from_host(dev, &HostData::from_f64(values, dtype)).expect("upload")
}

fn read(s: &GpuStorage, n: usize) -> Vec<f64> {
    s.to_host(&Layout::contiguous(&[n])).expect("readback").to_f64_vec()
}

/// The elements of `layout` in row-major order, as the dtype stores them.
fn gather(storage: &[f64], layout: &Layout, dtype: DType) -> Vec<f64> {
    let typed = HostData::from_f64(storage, dtype).to_f64_vec();
    layout.indices().map(|i| typed[i]).collect()
}

/// `storage` on the CPU backend (the oracle): floats as f64 holding the values `dtype` stores,
/// integers in `dtype` itself so that wrapping matches.
fn oracle(storage: &[f64], dtype: DType) -> CpuStorage {
    let typed = HostData::from_f64(storage, dtype);
    let host = if dtype.is_float() { HostData::F64(typed.to_f64_vec()) } else { typed };
    CpuStorage::from_host(&CpuDevice, &host).expect("cpu upload")
}

/// The CPU backend's `reduce` of the view, one value per row.
fn reference(storage: &[f64], layout: &Layout, dims: usize, op: ReduceOp, dtype: DType) -> Vec<f64> {
    let rows: usize = layout.shape()[..layout.rank() - dims].iter().product();
    let out = oracle(storage, dtype).reduce(layout, op, dims).expect("cpu reduce");
    out.to_host(&Layout::contiguous(&[rows])).expect("cpu read").to_f64_vec()
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Runs `op` over `layout` of `storage` on the GPU and checks it against the reference.
fn check_reduce(dev: &GpuDevice, storage: &[f64], layout: &Layout, dims: usize, op: ReduceOp, dtype: DType) {
    let what = format!("{} {dtype} {:?} strides {:?} dims {dims}", op.name(), layout.shape(), layout.strides());
    let s = upload(dev, storage, dtype);
    let out = s.reduce(layout, op, dims).unwrap_or_else(|e| panic!("{what}: {e}"));
    let want_dtype = if op.is_arg() { DType::U32 } else { dtype };
    assert_eq!(out.dtype(), want_dtype, "{what}");
    let shape = &layout.shape()[..layout.rank() - dims];
    let rows: usize = shape.iter().product();
    let len: usize = layout.shape()[layout.rank() - dims..].iter().product();
    let got = read(&out, rows);
    let vals = gather(storage, layout, dtype);
    let want = reference(storage, layout, dims, op, dtype);
    for (r, (&g, &w)) in got.iter().zip(&want).enumerate() {
        let ok = same(g, w)
            || match (op, dtype) {
                (ReduceOp::Sum, DType::F32) => {
                    let mag: f64 = vals[r * len..(r + 1) * len].iter().map(|x| x.abs()).sum();
                    (g - w).abs() <= 1e-5 * mag + 1e-6
                }
                (ReduceOp::Sum, DType::F16) => {
                    let mag: f64 = vals[r * len..(r + 1) * len].iter().map(|x| x.abs()).sum();
                    (g - w).abs() <= 1e-3 * mag + 1e-3
                }
                (ReduceOp::Prod, DType::F32) => (g - w).abs() <= 1e-4 * w.abs() + 1e-30,
                (ReduceOp::Prod, DType::F16) => (g - w).abs() <= 2e-3 * w.abs() + 1e-6,
                _ => same(g, w),
            };
        assert!(ok, "{what}: row {r}: gpu {g} vs reference {w}");
    }
}

/// (storage length, view, reduced dims): odd sizes, permuted, sliced, offset and broadcast views.
fn cases() -> Vec<(usize, Layout, usize)> {
    let c = Layout::contiguous;
    let mut v = vec![
        (1, c(&[1]), 1),
        (7, c(&[7]), 1),
        (1023, c(&[1023]), 1),
        (3 * 4097, c(&[3, 4097]), 1),
        // Dim 0 of [4097, 3]: the core permutes it to the back, giving a column reduction.
        (4097 * 3, c(&[4097, 3]).permute(&[1, 0]), 1),
        // Reduced dims that do not collapse to one stride.
        (5 * 7 * 9, c(&[5, 7, 9]).permute(&[2, 0, 1]), 2),
        (5 * 7 * 9, c(&[5, 7, 9]).permute(&[1, 0, 2]), 2),
        // A slice: offset > 0 and row stride > row length.
        (100 * 50, c(&[100, 50]).narrow(0, 3, 90).narrow(1, 5, 40), 1),
        // Broadcasts: stride-0 rows, stride-0 reduced dim, everything stride 0.
        (7, c(&[1, 7]).broadcast_to(&[5, 7]), 1),
        (5, c(&[5, 1]).broadcast_to(&[5, 7]), 1),
        (5, c(&[5, 1]).broadcast_to(&[5, 7]), 2),
        (1, c(&[1]).broadcast_to(&[3, 4097]), 1),
        // Many short rows, and many short columns.
        (4096 * 10, c(&[4096, 10]), 1),
        (10 * 4096, c(&[10, 4096]).permute(&[1, 0]), 1),
        // Few long rows: the two-pass split, contiguous, columns and strided.
        (2 * 20000, c(&[2, 20000]), 1),
        (3000 * 64, c(&[3000, 64]).permute(&[1, 0]), 1),
        (3 * 4 * 5000, c(&[3, 4, 5000]).permute(&[1, 0, 2]), 2),
        (9 * 5000, c(&[9, 5000]).step(1, 1, 2400, 2), 1),
        // Contiguous 4-aligned rows (vec4 loads): with an offset, with strided rows, long.
        (64 * 48, c(&[64, 48]).narrow(1, 4, 40), 1),
        (5 * 7 * 8, c(&[5, 7, 8]).permute(&[1, 0, 2]), 1),
        (3 * 4096, c(&[3, 4096]), 1),
        // Float sums down 4-aligned columns (bias gradients) take the vec4 column kernel: odd
        // row counts, one vec4 column, a slice (offset 4, row stride 20 for 12 columns), stride-0
        // rows, and two leading dims that collapse into 70 rows of 132 columns (33 vec4 columns:
        // a second, nearly empty column block).
        (4097 * 8, c(&[4097, 8]).permute(&[1, 0]), 1),
        (1023 * 4, c(&[1023, 4]).permute(&[1, 0]), 1),
        (300 * 20, c(&[300, 20]).narrow(1, 4, 12).permute(&[1, 0]), 1),
        (8, c(&[1, 8]).broadcast_to(&[4097, 8]).permute(&[1, 0]), 1),
        (7 * 10 * 132, c(&[7, 10, 132]).permute(&[2, 0, 1]), 2),
    ];
    for dims in 0..=3 {
        v.push((24, c(&[2, 3, 4]), dims));
    }
    // 157 chunks of partials for the vec4 column kernel: its second pass's 8 lanes take 19 or
    // 20 each. (Last, so that the cases above keep their random values.)
    v.push((20001 * 8, c(&[20001, 8]).permute(&[1, 0]), 1));
    v
}

#[test]
fn reduce_f32_all_ops_all_layouts() {
    let Some(dev) = common::gpu("reduce_f32_all_ops_all_layouts") else { return };
    let mut rng = Rng::from_state(0x1234_5678_9abc_def1);
    for (n, layout, dims) in cases() {
        let data = rng.vec_in(n, -1.0, 1.0);
        // Products of values near 1 stay representable over thousands of factors.
        let near_one: Vec<f64> = data.iter().map(|x| 1.0 + 0.01 * x).collect();
        for op in ReduceOp::ALL {
            let d = if op == ReduceOp::Prod { &near_one } else { &data };
            check_reduce(&dev, d, &layout, dims, op, DType::F32);
        }
    }
}

#[test]
fn reduce_ints_wrap_and_tie() {
    let Some(dev) = common::gpu("reduce_ints_wrap_and_tie") else { return };
    let mut rng = Rng::from_state(42);
    for (n, layout, dims) in cases() {
        // Few distinct values: ties everywhere, so the Arg ops must keep the first.
        let small: Vec<f64> = rng.vec_in(n, -4.0, 4.0).iter().map(|x| x.floor()).collect();
        let big_i: Vec<f64> = rng.vec_in(n, -2.0e9, 2.0e9).iter().map(|x| x.floor()).collect();
        let big_u: Vec<f64> = rng.vec_in(n, 0.0, 4.0e9).iter().map(|x| x.floor()).collect();
        let small_u: Vec<f64> = small.iter().map(|x| x + 4.0).collect();
        for op in ReduceOp::ALL {
            check_reduce(&dev, &small, &layout, dims, op, DType::I32);
            check_reduce(&dev, &small_u, &layout, dims, op, DType::U32);
            if matches!(op, ReduceOp::Sum | ReduceOp::Prod | ReduceOp::Max) {
                check_reduce(&dev, &big_i, &layout, dims, op, DType::I32);
                check_reduce(&dev, &big_u, &layout, dims, op, DType::U32);
            }
            // Float ties too: the tree and the split must both prefer the earlier position.
            // (Not Prod: f32 overflows to inf where f64 does not, and inf · 0 is NaN.)
            if op != ReduceOp::Prod {
                check_reduce(&dev, &small, &layout, dims, op, DType::F32);
            }
        }
    }
}

#[test]
fn reduce_f16() {
    let Some(dev) = common::gpu("reduce_f16") else { return };
    if !common::has_f16_else_refused(&dev) {
        eprintln!("SKIPPED reduce_f16: adapter lacks SHADER_F16");
        return;
    }
    let mut rng = Rng::from_state(7);
    for (n, layout, dims) in cases() {
        let data = rng.vec_in(n, -1.0, 1.0);
        let near_one: Vec<f64> = data.iter().map(|x| 1.0 + 0.001 * x).collect();
        for op in ReduceOp::ALL {
            let d = if op == ReduceOp::Prod { &near_one } else { &data };
            check_reduce(&dev, d, &layout, dims, op, DType::F16);
        }
    }
}

#[test]
fn argmax_first_of_ties_and_nan() {
    let Some(dev) = common::gpu("argmax_first_of_ties_and_nan") else { return };
    let l = Layout::contiguous(&[4]);
    let s = upload(&dev, &[1.0, 5.0, 5.0, 2.0], DType::F32);
    assert_eq!(read(&s.reduce(&l, ReduceOp::ArgMax, 1).expect("argmax"), 1), vec![1.0]);
    assert_eq!(read(&s.reduce(&l, ReduceOp::ArgMin, 1).expect("argmin"), 1), vec![0.0]);

    // NaN is the max for ArgMax and the min for ArgMin (the first NaN); Max/Min return NaN.
    let nan = f64::NAN;
    let row = [3.0, nan, 9.0, nan, -9.0];
    let s = upload(&dev, &row, DType::F32);
    let l = Layout::contiguous(&[5]);
    assert_eq!(read(&s.reduce(&l, ReduceOp::ArgMax, 1).expect("argmax"), 1), vec![1.0]);
    assert_eq!(read(&s.reduce(&l, ReduceOp::ArgMin, 1).expect("argmin"), 1), vec![1.0]);
    assert!(read(&s.reduce(&l, ReduceOp::Max, 1).expect("max"), 1)[0].is_nan());
    assert!(read(&s.reduce(&l, ReduceOp::Min, 1).expect("min"), 1)[0].is_nan());
    assert!(read(&s.reduce(&l, ReduceOp::Sum, 1).expect("sum"), 1)[0].is_nan());

    // Across lanes, workgroups and the split pass: NaNs far apart in one long row, and in a
    // column reduction; infinities are ordinary extremes.
    let mut rng = Rng::from_state(99);
    for layout_of in [|n: usize| Layout::contiguous(&[1, n]), |n: usize| Layout::contiguous(&[n, 1]).permute(&[1, 0])] {
        let n = 300_000;
        let mut data = rng.vec_in(n, -1.0, 1.0);
        data[123_456] = f64::INFINITY;
        data[7] = f64::NEG_INFINITY;
        data[200_000] = f64::INFINITY;
        let l = layout_of(n);
        for op in ReduceOp::ALL.into_iter().filter(|&op| op != ReduceOp::Prod) {
            check_reduce(&dev, &data, &l, 1, op, DType::F32);
        }
        data[250_001] = nan;
        data[170_000] = nan;
        for op in ReduceOp::ALL {
            check_reduce(&dev, &data, &l, 1, op, DType::F32);
        }
    }
    // -inf everywhere: Max is -inf and ArgMax the first position.
    let s = upload(&dev, &[f64::NEG_INFINITY; 9], DType::F32);
    let l = Layout::contiguous(&[9]);
    assert_eq!(read(&s.reduce(&l, ReduceOp::ArgMax, 1).expect("argmax"), 1), vec![0.0]);
    assert_eq!(read(&s.reduce(&l, ReduceOp::Max, 1).expect("max"), 1), vec![f64::NEG_INFINITY]);
}

#[test]
fn sum_of_a_million_is_accurate() {
    let Some(dev) = common::gpu("sum_of_a_million_is_accurate") else { return };
    let mut rng = Rng::from_state(2024);
    let n = 1 << 20;
    let data = rng.vec_in(n, 0.0, 1.0);
    // The reference sums what the GPU sees: the f32-rounded inputs.
    let want: f64 = data.iter().map(|&x| x as f32 as f64).sum();
    let s = upload(&dev, &data, DType::F32);
    let got = read(&s.reduce(&Layout::contiguous(&[n]), ReduceOp::Sum, 1).expect("sum"), 1)[0];
    let rel = (got - want).abs() / want;
    assert!(rel < 1e-6, "sum of 2^20: {got} vs {want} (relative error {rel:e})");
    check_reduce(&dev, &data, &Layout::contiguous(&[4, n / 4]), 1, ReduceOp::Sum, DType::F32);
    check_reduce(&dev, &data, &Layout::contiguous(&[1024, n / 1024]).permute(&[1, 0]), 1, ReduceOp::Sum, DType::F32);
    // The whole buffer as a [1024, 1024] view reduced over both dims.
    let got = read(&s.reduce(&Layout::contiguous(&[1024, 1024]), ReduceOp::Sum, 2).expect("sum"), 1)[0];
    let rel = (got - want).abs() / want;
    assert!(rel < 1e-6, "sum of [1024, 1024]: {got} vs {want} (relative error {rel:e})");
}

#[test]
fn reduce_over_nothing_and_errors() {
    let Some(dev) = common::gpu("reduce_over_nothing_and_errors") else { return };
    let s = upload(&dev, &[1.0, 2.0], DType::F32);
    let empty_rows = Layout::contiguous(&[3, 0]);
    assert_eq!(read(&s.reduce(&empty_rows, ReduceOp::Sum, 1).expect("sum"), 3), vec![0.0; 3]);
    assert_eq!(read(&s.reduce(&empty_rows, ReduceOp::Prod, 1).expect("prod"), 3), vec![1.0; 3]);
    let si = upload(&dev, &[1.0, 2.0], DType::I32);
    assert_eq!(read(&si.reduce(&empty_rows, ReduceOp::Prod, 1).expect("prod"), 3), vec![1.0; 3]);
    for op in [ReduceOp::Max, ReduceOp::Min, ReduceOp::ArgMax, ReduceOp::ArgMin] {
        match s.reduce(&empty_rows, op, 1) {
            Err(e @ Error::InvalidArgument { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(op.name()) && msg.contains("[3, 0]"), "{msg}");
            }
            Err(e) => panic!("{}: wrong error {e}", op.name()),
            Ok(_) => panic!("{}: reducing nothing must fail", op.name()),
        }
    }
    // No rows: an empty output, for every op.
    for op in ReduceOp::ALL {
        let out = s.reduce(&Layout::contiguous(&[0, 5]), op, 1).expect("empty");
        assert_eq!(out.len(), 0);
    }
    // Rank 0 reduced over zero dims is the element itself.
    let out = s.reduce(&Layout::new(vec![], vec![], 1), ReduceOp::Sum, 0).expect("rank 0");
    assert_eq!(read(&out, 1), vec![2.0]);
    assert!(matches!(s.reduce(&Layout::contiguous(&[2]), ReduceOp::Sum, 2), Err(Error::InvalidArgument { .. })));
    let b = GpuStorage::from_host(&dev, &HostData::Bool(vec![true, false])).expect("upload");
    assert!(matches!(
        b.reduce(&Layout::contiguous(&[2]), ReduceOp::Sum, 1),
        Err(Error::UnsupportedDType { dtype: DType::Bool, .. })
    ));
}

/// The CPU backend's softmax (or log-softmax) over the last dim of the view, in f64.
fn softmax_reference(storage: &[f64], layout: &Layout, log: bool, dtype: DType) -> Vec<f64> {
    let out = oracle(storage, dtype).softmax_last(layout, log).expect("cpu softmax");
    out.to_host(&Layout::contiguous(layout.shape())).expect("cpu read").to_f64_vec()
}

fn check_softmax(dev: &GpuDevice, storage: &[f64], layout: &Layout, log: bool, dtype: DType) {
    let what = format!("softmax(log={log}) {dtype} {:?} strides {:?}", layout.shape(), layout.strides());
    let s = upload(dev, storage, dtype);
    let out = s.softmax_last(layout, log).unwrap_or_else(|e| panic!("{what}: {e}"));
    let numel = layout.numel();
    let got = read(&out, numel);
    let n = layout.shape().last().copied().unwrap_or(1);
    let want = softmax_reference(storage, layout, log, dtype);
    let tol = if dtype == DType::F16 { 2e-3 } else { 1e-5 };
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        let ok = same(g, w) || (g - w).abs() <= tol * w.abs().max(1.0);
        assert!(ok, "{what}: element {i}: gpu {g} vs reference {w}");
    }
    if !log && n > 0 {
        for (r, row) in got.chunks(n).enumerate() {
            if want[r * n].is_nan() {
                continue;
            }
            let sum: f64 = row.iter().sum();
            assert!((sum - 1.0).abs() <= tol * 10.0, "{what}: row {r} sums to {sum}");
        }
    }
}

#[test]
fn softmax_and_log_softmax() {
    let Some(dev) = common::gpu("softmax_and_log_softmax") else { return };
    let mut rng = Rng::from_state(5);
    let c = Layout::contiguous;
    let cases = vec![
        (1, c(&[1])),
        (7, c(&[7])),
        (3 * 1023, c(&[3, 1023])),
        (4096 * 10, c(&[4096, 10])),
        (2 * 4097, c(&[2, 4097])),
        (3 * 4096, c(&[3, 4096])),
        (64 * 48, c(&[64, 48]).narrow(1, 4, 40)),
        (5 * 7 * 8, c(&[5, 7, 8]).permute(&[1, 0, 2])),
        (4097 * 3, c(&[4097, 3]).permute(&[1, 0])),
        (5 * 7 * 9, c(&[5, 7, 9]).permute(&[2, 0, 1])),
        (100 * 50, c(&[100, 50]).narrow(0, 3, 90).narrow(1, 5, 40)),
        (7, c(&[1, 7]).broadcast_to(&[5, 7])),
        (5, c(&[5, 1]).broadcast_to(&[5, 7])),
        (3, Layout::new(vec![], vec![], 2)),
    ];
    for (n, layout) in &cases {
        let data = rng.vec_in(*n, -8.0, 8.0);
        for log in [false, true] {
            check_softmax(&dev, &data, layout, log, DType::F32);
        }
    }
    // Large magnitudes: exp must see x - max, never x.
    let big: Vec<f64> = rng.vec_in(3 * 1000, -1.0e4, 1.0e4);
    for log in [false, true] {
        check_softmax(&dev, &big, &c(&[3, 1000]), log, DType::F32);
        check_softmax(&dev, &big, &c(&[1000, 3]).permute(&[1, 0]), log, DType::F32);
    }
    if common::has_f16_else_refused(&dev) {
        for (n, layout) in &cases {
            let data = rng.vec_in(*n, -4.0, 4.0);
            for log in [false, true] {
                check_softmax(&dev, &data, layout, log, DType::F16);
            }
        }
    }
}

#[test]
fn softmax_infinities_nan_and_empty() {
    let Some(dev) = common::gpu("softmax_infinities_nan_and_empty") else { return };
    let (inf, nan) = (f64::INFINITY, f64::NAN);
    let rows = [
        [f64::NEG_INFINITY; 4],  // all -inf: NaN, as in torch
        [-inf, 1.0, -inf, 1.0],  // -inf entries: 0 (log: -inf)
        [-inf, -inf, -inf, 3.0], // -inf before the max
        [1.0, inf, 2.0, 3.0],    // +inf: NaN
        [1.0, nan, 2.0, 3.0],    // NaN: NaN
        [1.0e4, -1.0e4, 1.0e4 - 1.0, 0.0],
    ];
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    for log in [false, true] {
        check_softmax(&dev, &flat, &Layout::contiguous(&[6, 4]), log, DType::F32);
        // Long rows too, so the -inf and NaN handling crosses lanes.
        let mut long = vec![f64::NEG_INFINITY; 3 * 2000];
        long[2000 + 1500] = 0.5;
        long[2000 + 3] = -2.0;
        long[4000 + 1999] = nan;
        long[4000] = 1.0;
        check_softmax(&dev, &long, &Layout::contiguous(&[3, 2000]), log, DType::F32);
    }
    let s = upload(&dev, &[1.0, 2.0], DType::F32);
    let out = s.softmax_last(&Layout::contiguous(&[3, 0]), false).expect("empty last dim");
    assert_eq!(out.len(), 0);
    let si = upload(&dev, &[1.0, 2.0], DType::I32);
    assert!(matches!(
        si.softmax_last(&Layout::contiguous(&[2]), false),
        Err(Error::UnsupportedDType { dtype: DType::I32, .. })
    ));
}

/// The CPU backend's cumsum of the view along `dim` (f64 for floats, wrapping for integers).
fn cumsum_reference(storage: &[f64], layout: &Layout, dim: usize, dtype: DType) -> Vec<f64> {
    let out = oracle(storage, dtype).cumsum(layout, dim).expect("cpu cumsum");
    out.to_host(&Layout::contiguous(layout.shape())).expect("cpu read").to_f64_vec()
}

fn check_cumsum(dev: &GpuDevice, storage: &[f64], layout: &Layout, dim: usize, dtype: DType) {
    let what = format!("cumsum {dtype} {:?} strides {:?} dim {dim}", layout.shape(), layout.strides());
    let s = upload(dev, storage, dtype);
    let out = s.cumsum(layout, dim).unwrap_or_else(|e| panic!("{what}: {e}"));
    let got = read(&out, layout.numel());
    let want = cumsum_reference(storage, layout, dim, dtype);
    let len = layout.shape()[dim] as f64;
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        let ok = match dtype {
            DType::F32 => (g - w).abs() <= 1e-6 * len + 1e-6 * w.abs(),
            DType::F16 => (g - w).abs() <= 2e-3 * w.abs().max(1.0),
            _ => g == w,
        };
        assert!(ok, "{what}: element {i}: gpu {g} vs reference {w}");
    }
}

#[test]
fn cumsum_layouts_and_dtypes() {
    let Some(dev) = common::gpu("cumsum_layouts_and_dtypes") else { return };
    let mut rng = Rng::from_state(77);
    let c = Layout::contiguous;
    let cases = vec![
        (1, c(&[1]), 0),
        (7, c(&[7]), 0),
        (1023, c(&[1023]), 0),
        (3 * 4097, c(&[3, 4097]), 1),
        (3 * 4097, c(&[3, 4097]), 0),
        (4097 * 3, c(&[4097, 3]).permute(&[1, 0]), 1),
        (4097 * 3, c(&[4097, 3]).permute(&[1, 0]), 0),
        (64 * 33, c(&[64, 33]).permute(&[1, 0]), 1),
        (5 * 7 * 9, c(&[5, 7, 9]), 1),
        (5 * 7 * 9, c(&[5, 7, 9]).permute(&[2, 0, 1]), 2),
        (100 * 50, c(&[100, 50]).narrow(0, 3, 90).narrow(1, 5, 40), 1),
        (7, c(&[1, 7]).broadcast_to(&[5, 7]), 1),
        (5, c(&[5, 1]).broadcast_to(&[5, 7]), 1),
        (5, c(&[5, 1]).broadcast_to(&[5, 7]), 0),
    ];
    for (n, layout, dim) in &cases {
        let data = rng.vec_in(*n, -1.0, 1.0);
        check_cumsum(&dev, &data, layout, *dim, DType::F32);
        let ints: Vec<f64> = rng.vec_in(*n, -2.0e9, 2.0e9).iter().map(|x| x.floor()).collect();
        check_cumsum(&dev, &ints, layout, *dim, DType::I32);
        let uints: Vec<f64> = rng.vec_in(*n, 0.0, 4.0e9).iter().map(|x| x.floor()).collect();
        check_cumsum(&dev, &uints, layout, *dim, DType::U32);
        if common::has_f16_else_refused(&dev) {
            let small = rng.vec_in(*n, 0.0, 0.01);
            check_cumsum(&dev, &small, layout, *dim, DType::F16);
        }
    }
    let s = upload(&dev, &[1.0, 2.0], DType::F32);
    assert_eq!(s.cumsum(&c(&[0, 3]), 1).expect("empty").len(), 0);
    assert!(matches!(s.cumsum(&c(&[2]), 1), Err(Error::InvalidArgument { .. })));
    let b = GpuStorage::from_host(&dev, &HostData::Bool(vec![true, false])).expect("upload");
    assert!(matches!(b.cumsum(&c(&[2]), 0), Err(Error::UnsupportedDType { dtype: DType::Bool, .. })));
}

/// Throughput on the adapter at hand: `cargo test -p kiln-wgpu --test reduce -- --ignored
/// --nocapture bench` (`KILN_BENCH_ONLY=<text>` keeps the lines containing it; `KILN_BENCH_BIG=1`
/// adds 256 MB inputs). Each line: the op, the view, GPU microseconds per call (best of 5 rounds
/// of 20 calls recorded, then submitted at once), GB/s counting each input element read once and
/// each output written once, and the host's recording time per call.
#[test]
#[ignore]
fn bench_reduce_family() {
    let Some(dev) = common::gpu("bench_reduce_family") else { return };
    eprintln!("adapter: {}", dev.summary);
    let n = 1 << 24;
    let data: Vec<f64> = Rng::from_state(1).vec_in(n, -1.0, 1.0);
    let x = upload(&dev, &data, DType::F32);
    let c = Layout::contiguous;
    let only = std::env::var("KILN_BENCH_ONLY").unwrap_or_default();
    let time = |label: &str, layout: &Layout, out_elems: usize, f: &dyn Fn(&Layout) -> GpuStorage| {
        if !format!("{label} {:?}", layout.shape()).contains(&only) {
            return;
        }
        for _ in 0..3 {
            drop(f(layout));
        }
        dev.sync().expect("sync");
        // Recorded work is submitted at the sync, so the GPU's share is the time after
        // recording. The best of five rounds: clocks and neighbours make single rounds noisy.
        let iters = 20;
        let (mut secs, mut record) = (f64::MAX, 0.0);
        for _ in 0..5 {
            let t = std::time::Instant::now();
            for _ in 0..iters {
                drop(f(layout));
            }
            let r = t.elapsed().as_secs_f64();
            dev.sync().expect("sync");
            let gpu = (t.elapsed().as_secs_f64() - r) / iters as f64;
            if gpu < secs {
                (secs, record) = (gpu, r);
            }
        }
        let bytes = 4.0 * (layout.numel() + out_elems) as f64;
        let shape = format!("{:?}", layout.shape());
        let host = record / iters as f64 * 1e6;
        eprintln!(
            "{label:<10} {shape:<16} {:>9.1} us {:>8.1} GB/s (recording {host:.1} us)",
            secs * 1e6,
            bytes / secs / 1e9
        );
    };
    time("copy", &c(&[n]), n, &|l| x.cast(l, DType::F32).expect("copy"));
    // The fixed cost of one recorded dispatch, and a 4x larger input, to tell it apart.
    time("sum", &c(&[256]), 1, &|l| x.reduce(l, ReduceOp::Sum, 1).expect("sum"));
    time("copy", &c(&[256]), 256, &|l| x.cast(l, DType::F32).expect("copy"));
    if std::env::var("KILN_BENCH_BIG").is_ok() {
        let big = upload(&dev, &Rng::from_state(3).vec_in(4 * n, -1.0, 1.0), DType::F32);
        time("sum", &c(&[16384, 4096]), 16384, &|l| big.reduce(l, ReduceOp::Sum, 1).expect("sum"));
        time("sum", &c(&[4 * n]), 1, &|l| big.reduce(l, ReduceOp::Sum, 1).expect("sum"));
        time("softmax", &c(&[16384, 4096]), 4 * n, &|l| big.softmax_last(l, false).expect("softmax"));
    }
    let reductions = [
        ("sum", c(&[n]), ReduceOp::Sum),
        ("sum", c(&[4096, 4096]), ReduceOp::Sum),
        ("sum", c(&[4097, 4095]), ReduceOp::Sum),
        ("sum", c(&[4096, 4096]).permute(&[1, 0]), ReduceOp::Sum),
        ("sum", c(&[1 << 20, 16]), ReduceOp::Sum),
        ("sum", c(&[1 << 20, 16]).permute(&[1, 0]), ReduceOp::Sum),
        ("sum", c(&[16, 1 << 20]).permute(&[1, 0]), ReduceOp::Sum),
        ("sum", c(&[1 << 22, 4]), ReduceOp::Sum),
        ("sum", c(&[128, 512, 256]).permute(&[0, 2, 1]), ReduceOp::Sum),
        ("max", c(&[32768, 512]), ReduceOp::Max),
        ("argmax", c(&[4096, 4096]), ReduceOp::ArgMax),
        ("argmax", c(&[n]), ReduceOp::ArgMax),
        ("argmax", c(&[4096, 4096]).permute(&[1, 0]), ReduceOp::ArgMax),
    ];
    for (label, l, op) in &reductions {
        let rows = l.shape()[0];
        let rows = if l.rank() == 1 {
            1
        } else if l.rank() == 3 {
            rows * l.shape()[1]
        } else {
            rows
        };
        time(label, l, rows, &|l| x.reduce(l, *op, 1).expect("reduce"));
    }
    for l in [
        c(&[4096, 4096]),
        c(&[4097, 4095]),
        c(&[131072, 128]),
        c(&[1 << 20, 16]),
        c(&[256, 65536]),
        c(&[4096, 4096]).permute(&[1, 0]),
    ] {
        time("softmax", &l, n, &|l| x.softmax_last(l, false).expect("softmax"));
    }
    time("cumsum", &c(&[4096, 4096]), n, &|l| x.cumsum(l, 1).expect("cumsum"));
    time("cumsum", &c(&[4096, 4096]), n, &|l| x.cumsum(l, 0).expect("cumsum"));
    time("cumsum", &c(&[16, 1 << 20]), n, &|l| x.cumsum(l, 1).expect("cumsum"));
}
