use half::f16;
use kiln_backend::{BackendStorage, DType, Error, HostData, Layout, ReduceOp};

use super::{Rng, assert_close, assert_rel, assert_unsupported, at, c, f64s, host, st};

fn reduce(data: impl Into<HostData>, layout: &Layout, op: ReduceOp, dims: usize) -> HostData {
    host(&st(data).reduce(layout, op, dims).unwrap_or_else(|e| panic!("{}: {e}", op.name())))
}

#[test]
fn sum_and_prod_over_trailing_dims_of_a_permuted_tensor() {
    // Buffer [4, 3, 5]; logical tensor is its permutation [5, 4, 3] (dims 2, 0, 1).
    let mut rng = Rng::new(7);
    let buf = rng.vec(60);
    let l = c(&[4, 3, 5]).permute(&[2, 0, 1]);
    let mut want_sum = vec![0.0; 5];
    let mut want_prod = vec![1.0; 5];
    for (i, (s, p)) in want_sum.iter_mut().zip(&mut want_prod).enumerate() {
        for j in 0..4 {
            for k in 0..3 {
                *s += at(&buf, &l, &[i, j, k]);
                *p *= at(&buf, &l, &[i, j, k]) + 1.0;
            }
        }
    }
    assert_close(&reduce(buf.clone(), &l, ReduceOp::Sum, 2).to_f64_vec(), &want_sum, 1e-14);
    let plus1: Vec<f64> = buf.iter().map(|x| x + 1.0).collect();
    assert_close(&reduce(plus1, &l, ReduceOp::Prod, 2).to_f64_vec(), &want_prod, 1e-13);

    // Over one dim: [5, 4] of sums over k.
    let mut want = vec![0.0; 20];
    for i in 0..5 {
        for j in 0..4 {
            want[i * 4 + j] = (0..3).map(|k| at(&buf, &l, &[i, j, k])).sum();
        }
    }
    assert_close(&reduce(buf, &l, ReduceOp::Sum, 1).to_f64_vec(), &want, 1e-14);
}

#[test]
fn f32_and_f16_sums_accumulate_in_f64() {
    // In f32, 1e8 + 1 rounds back to 1e8 (ulp 8), so a f32 accumulator would return 1e8.
    let mut x = vec![1e8f32];
    x.extend(std::iter::repeat_n(1.0f32, 16));
    assert_eq!(reduce(x, &c(&[17]), ReduceOp::Sum, 1), HostData::F32(vec![100_000_016.0]));
    // f16 ulp at 2048 is 2: an f16 accumulator would stick at 2048.
    let mut h = vec![f16::from_f32(2048.0)];
    h.extend(std::iter::repeat_n(f16::ONE, 8));
    assert_eq!(reduce(h, &c(&[9]), ReduceOp::Sum, 1), HostData::F16(vec![f16::from_f32(2056.0)]));
}

#[test]
fn max_min_propagate_nan_and_args_pick_first() {
    let nan = f64::NAN;
    let x = vec![1.0, 3.0, 3.0, -2.0, /* row 2 */ 0.0, nan, 5.0, nan, /* row 3 */ -1.0, -1.0, 2.0, 2.0];
    let l = c(&[3, 4]);
    assert_rel(&reduce(x.clone(), &l, ReduceOp::Max, 1).to_f64_vec(), &[3.0, nan, 2.0], 0.0);
    assert_rel(&reduce(x.clone(), &l, ReduceOp::Min, 1).to_f64_vec(), &[-2.0, nan, -1.0], 0.0);
    assert_eq!(reduce(x.clone(), &l, ReduceOp::ArgMax, 1), HostData::U32(vec![1, 1, 2]));
    assert_eq!(reduce(x, &l, ReduceOp::ArgMin, 1), HostData::U32(vec![3, 1, 0]));
}

#[test]
fn arg_reductions_index_the_flattened_reduced_dims() {
    // Logical [2, 2, 3] from a transposed buffer; reduce the last two dims.
    let buf: Vec<i32> = vec![5, 1, 9, 9, 0, 2, 7, 7, 3, 4, 6, 9];
    let l = c(&[2, 3, 2]).permute(&[0, 2, 1]);
    // Logical batch 0: [[5,9,0],[1,9,2]] → max 9 first at flat 1, min 0 at flat 2.
    // Logical batch 1: [[7,3,6],[7,4,9]] → max 9 at flat 5, min 3 at flat 1.
    assert_eq!(reduce(buf.clone(), &l, ReduceOp::ArgMax, 2), HostData::U32(vec![1, 5]));
    assert_eq!(reduce(buf.clone(), &l, ReduceOp::ArgMin, 2), HostData::U32(vec![2, 1]));
    assert_eq!(reduce(buf.clone(), &l, ReduceOp::Max, 2), HostData::I32(vec![9, 9]));
    assert_eq!(reduce(buf, &l, ReduceOp::Sum, 2), HostData::I32(vec![26, 36]));
}

#[test]
fn integer_sums_wrap() {
    assert_eq!(reduce(vec![i32::MAX, 1, 1], &c(&[3]), ReduceOp::Sum, 1), HostData::I32(vec![i32::MIN + 1]));
    assert_eq!(reduce(vec![65536u32, 65536], &c(&[2]), ReduceOp::Prod, 1), HostData::U32(vec![0]));
}

#[test]
fn empty_reductions() {
    let l = c(&[2, 0]);
    assert_eq!(reduce(Vec::<f32>::new(), &l, ReduceOp::Sum, 1), HostData::F32(vec![0.0, 0.0]));
    assert_eq!(reduce(Vec::<i32>::new(), &l, ReduceOp::Prod, 1), HostData::I32(vec![1, 1]));
    for op in [ReduceOp::Max, ReduceOp::Min, ReduceOp::ArgMax, ReduceOp::ArgMin] {
        let r = st(Vec::<f32>::new()).reduce(&l, op, 1);
        assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    }
    // No groups at all: an empty result, even for max.
    assert_eq!(reduce(Vec::<f32>::new(), &c(&[0, 3]), ReduceOp::Max, 1), HostData::F32(vec![]));
    assert_eq!(reduce(Vec::<f32>::new(), &c(&[0, 3]), ReduceOp::ArgMax, 1), HostData::U32(vec![]));
}

#[test]
fn zero_reduced_dims_is_identity_and_all_dims_is_scalar() {
    let x = vec![3.0f64, -1.0, 2.0, 5.0];
    let t = c(&[2, 2]).permute(&[1, 0]);
    assert_eq!(reduce(x.clone(), &t, ReduceOp::Sum, 0), HostData::F64(vec![3.0, 2.0, -1.0, 5.0]));
    assert_eq!(reduce(x.clone(), &t, ReduceOp::ArgMax, 0), HostData::U32(vec![0; 4]));
    assert_eq!(reduce(x.clone(), &t, ReduceOp::Sum, 2), HostData::F64(vec![9.0]));
    let r = st(x).reduce(&t, ReduceOp::Sum, 3);
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
}

#[test]
fn bool_reductions_are_unsupported() {
    assert_unsupported(st(vec![true, false]).reduce(&c(&[2]), ReduceOp::Sum, 1), DType::Bool);
}

#[test]
fn big_reduction_matches_naive_sum() {
    let mut rng = Rng::new(11);
    let (rows, cols) = (300, 257);
    let buf = rng.vec(rows * cols);
    let want: Vec<f64> = (0..rows).map(|r| buf[r * cols..(r + 1) * cols].iter().sum()).collect();
    assert_close(&reduce(buf, &c(&[rows, cols]), ReduceOp::Sum, 1).to_f64_vec(), &want, 1e-13);
}

#[test]
fn softmax_rows() {
    let x = vec![1.0f64, 2.0, 3.0, 1000.0, 1000.0, f64::NEG_INFINITY];
    let l = c(&[2, 3]);
    let s = f64s(&st(x.clone()).softmax_last(&l, false).expect("softmax"));
    let e = [1f64.exp(), 2f64.exp(), 3f64.exp()];
    let z: f64 = e.iter().sum();
    assert_close(&s, &[e[0] / z, e[1] / z, e[2] / z, 0.5, 0.5, 0.0], 1e-15);
    let ls = f64s(&st(x).softmax_last(&l, true).expect("log_softmax"));
    assert_close(&ls[..5], &[(e[0] / z).ln(), (e[1] / z).ln(), (e[2] / z).ln(), -(2f64.ln()), -(2f64.ln())], 1e-14);
    assert_eq!(ls[5], f64::NEG_INFINITY);
}

#[test]
fn softmax_of_many_rows_matches_naive() {
    let mut rng = Rng::new(12);
    let (rows, n) = (40, 1001);
    let x: Vec<f64> = rng.vec(rows * n).iter().map(|v| 30.0 * v).collect();
    let mut want = Vec::new();
    for row in x.chunks(n) {
        let z: f64 = row.iter().map(|v| v.exp()).sum();
        want.extend(row.iter().map(|v| v.exp() / z));
    }
    let got = f64s(&st(x).softmax_last(&c(&[rows, n]), false).expect("softmax"));
    assert_close(&got, &want, 1e-12);
}

#[test]
fn softmax_of_all_minus_inf_row_is_nan() {
    let ninf = f32::NEG_INFINITY;
    let out = f64s(&st(vec![ninf, ninf, 0.0, ninf]).softmax_last(&c(&[2, 2]), false).expect("softmax"));
    assert!(out[0].is_nan() && out[1].is_nan());
    assert_eq!(&out[2..], &[1.0, 0.0]);
}

#[test]
fn softmax_reads_strided_rows_and_refuses_ints() {
    // Logical rows of the transpose of [[0, 1], [2, 3]]: [0, 2] and [1, 3].
    let out =
        f64s(&st(vec![0.0f64, 1.0, 2.0, 3.0]).softmax_last(&c(&[2, 2]).permute(&[1, 0]), false).expect("softmax"));
    let p = 1.0 / (1.0 + 2f64.exp());
    assert_close(&out, &[p, 1.0 - p, p, 1.0 - p], 1e-15);
    assert_unsupported(st(vec![1i32, 2]).softmax_last(&c(&[2]), false), DType::I32);
    assert_unsupported(st(vec![true]).softmax_last(&c(&[1]), true), DType::Bool);
}

#[test]
fn cumsum_along_each_dim_of_a_transpose() {
    // Logical [[1, 4], [2, 5], [3, 6]].
    let x = vec![1i32, 2, 3, 4, 5, 6];
    let t = c(&[2, 3]).permute(&[1, 0]);
    let run = |dim| host(&st(x.clone()).cumsum(&t, dim).expect("cumsum"));
    assert_eq!(run(0), HostData::I32(vec![1, 4, 3, 9, 6, 15]));
    assert_eq!(run(1), HostData::I32(vec![1, 5, 2, 7, 3, 9]));
    assert_eq!(
        host(&st(vec![i32::MAX, 1]).cumsum(&c(&[2]), 0).expect("wrap")),
        HostData::I32(vec![i32::MAX, i32::MIN])
    );
    let mut f = vec![1e8f32];
    f.extend([1.0f32; 8]);
    let HostData::F32(out) = host(&st(f).cumsum(&c(&[9]), 0).expect("f32")) else { panic!("dtype") };
    assert_eq!(out[8], 100_000_008.0);
    assert_unsupported(st(vec![true]).cumsum(&c(&[1]), 0), DType::Bool);
    assert!(matches!(st(vec![1.0f32]).cumsum(&c(&[1]), 1), Err(Error::InvalidArgument { .. })));
}

#[test]
fn sums_over_leading_dims_match_row_major_f64_sums() {
    // The bias-gradient shape: the kept dims are a dense run, the reduced dims lead. Each output
    // must equal its elements added in f64 in row-major order and rounded once.
    let mut rng = Rng::new(17);
    // (buffer shape, logical layout, reduced dims) with the reduced dims moved last, as the core does.
    let cases: Vec<(Vec<usize>, Layout, usize)> = vec![
        (vec![128, 511], c(&[128, 511]).permute(&[1, 0]), 1),
        (vec![3, 5, 7], c(&[3, 5, 7]).permute(&[2, 0, 1]), 2),
        // A column block of a wider matrix: rows step past the block.
        (vec![9, 20], c(&[9, 20]).narrow(1, 4, 11).permute(&[1, 0]), 1),
        // [2, 3, 4] summed over dims 0 and 2 cannot take the fast path; must still be right.
        (vec![2, 3, 4], c(&[2, 3, 4]).permute(&[1, 0, 2]), 2),
        (vec![1, 6], c(&[1, 6]).permute(&[1, 0]), 1),
    ];
    for (buf_shape, l, dims) in cases {
        let buf: Vec<f32> = rng.vec(buf_shape.iter().product()).into_iter().map(|v| v as f32).collect();
        let wide: Vec<f64> = buf.iter().map(|&v| v as f64).collect();
        let (kept, reduced) = l.shape().split_at(l.rank() - dims);
        let (nk, nr): (usize, usize) = (kept.iter().product(), reduced.iter().product());
        let mut want = Vec::new();
        for i in 0..nk {
            let mut acc = 0.0f64;
            for j in 0..nr {
                // Unflatten (i, j) into a position of the logical layout, row-major.
                let mut pos = vec![0; l.rank()];
                let (mut a, mut b) = (i, j);
                for d in (0..l.rank()).rev() {
                    let (flat, n) = if d >= kept.len() { (&mut b, l.shape()[d]) } else { (&mut a, l.shape()[d]) };
                    pos[d] = *flat % n;
                    *flat /= n;
                }
                acc += at(&wide, &l, &pos);
            }
            want.push(acc as f32);
        }
        assert_eq!(reduce(buf, &l, ReduceOp::Sum, dims), HostData::F32(want), "{buf_shape:?} as {l:?}");
    }
    // Integers wrap on the fast path too.
    let l = c(&[2, 2]).permute(&[1, 0]);
    assert_eq!(reduce(vec![i32::MAX, 1, 1, 2], &l, ReduceOp::Sum, 1), HostData::I32(vec![i32::MIN, 3]));
}
