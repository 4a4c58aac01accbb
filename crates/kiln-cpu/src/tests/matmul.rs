use half::f16;
use kiln_backend::{BackendStorage, DType, Error, HostData, Layout};

use super::{Rng, assert_close, assert_unsupported, c, f64s, host, st};

/// Logical A [b][m][k] stored as [b, k, m] (each matrix transposed), logical B [k][n] shared by
/// every batch (batch stride 0) behind two junk elements. Returns buffers, layouts and the naive
/// triple-loop product computed from the logical arrays.
struct Case {
    a_buf: Vec<f64>,
    al: Layout,
    b_buf: Vec<f64>,
    bl: Layout,
    want: Vec<f64>,
}

fn case(rng: &mut Rng, b: usize, m: usize, k: usize, n: usize) -> Case {
    let a: Vec<Vec<Vec<f64>>> = (0..b).map(|_| (0..m).map(|_| rng.vec(k)).collect()).collect();
    let bm: Vec<Vec<f64>> = (0..k).map(|_| rng.vec(n)).collect();
    let mut a_buf = vec![0.0; b * k * m];
    for (bi, mat) in a.iter().enumerate() {
        for (i, row) in mat.iter().enumerate() {
            for (p, &v) in row.iter().enumerate() {
                a_buf[(bi * k + p) * m + i] = v;
            }
        }
    }
    let al = Layout::new(vec![b, m, k], vec![k * m, 1, m], 0);
    let mut b_buf = vec![f64::NAN, f64::NAN];
    b_buf.extend(bm.iter().flatten());
    let bl = Layout::new(vec![b, k, n], vec![0, n, 1], 2);
    let mut want = Vec::new();
    for mat in &a {
        for row in mat {
            want.extend((0..n).map(|j| (0..k).map(|p| row[p] * bm[p][j]).sum::<f64>()));
        }
    }
    Case { a_buf, al, b_buf, bl, want }
}

#[test]
fn f64_strided_with_broadcast_batch_matches_naive() {
    let mut rng = Rng::new(1);
    for (b, m, k, n) in [(3, 7, 5, 3), (1, 1, 1, 1), (2, 1, 9, 1), (4, 13, 1, 6)] {
        let t = case(&mut rng, b, m, k, n);
        let out = st(t.a_buf).matmul(&t.al, &st(t.b_buf), &t.bl).expect("matmul");
        assert_eq!(out.dtype(), DType::F64);
        assert_close(&f64s(&out), &t.want, 1e-13);
    }
}

#[test]
fn f32_strided_matches_naive_f64() {
    let mut rng = Rng::new(2);
    // The second shape is big enough for the one-batch-at-a-time path.
    for (b, m, k, n) in [(5, 6, 7, 8), (2, 64, 70, 65)] {
        let t = case(&mut rng, b, m, k, n);
        let a32: Vec<f32> = t.a_buf.iter().map(|&x| x as f32).collect();
        let b32: Vec<f32> = t.b_buf.iter().map(|&x| x as f32).collect();
        // Expected from the f32-rounded inputs, in f64.
        let t64 = Case {
            a_buf: a32.iter().map(|&x| x as f64).collect(),
            b_buf: b32.iter().map(|&x| x as f64).collect(),
            ..t
        };
        let want = naive(&t64, b, m, k, n);
        let out = st(a32).matmul(&t64.al, &st(b32), &t64.bl).expect("matmul");
        assert_eq!(out.dtype(), DType::F32);
        assert_close(&f64s(&out), &want, 1e-5);
    }
}

fn naive(t: &Case, b: usize, m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for bi in 0..b {
        for i in 0..m {
            for j in 0..n {
                out.push(
                    (0..k)
                        .map(|p| super::at(&t.a_buf, &t.al, &[bi, i, p]) * super::at(&t.b_buf, &t.bl, &[bi, p, j]))
                        .sum(),
                );
            }
        }
    }
    out
}

#[test]
fn f16_small_integers_are_exact() {
    // [[1, 2], [3, 4]] · [[5, 6], [7, 8]] = [[19, 22], [43, 50]].
    let h = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
    let out = st(h(&[1.0, 2.0, 3.0, 4.0])).matmul(&c(&[1, 2, 2]), &st(h(&[5.0, 6.0, 7.0, 8.0])), &c(&[1, 2, 2]));
    assert_eq!(host(&out.expect("f16")), HostData::F16(h(&[19.0, 22.0, 43.0, 50.0])));
    // Transposed rhs: B logical [[5, 7], [6, 8]] gives [[17, 23], [39, 53]].
    let bt = c(&[1, 2, 2]).permute(&[0, 2, 1]);
    let out = st(h(&[1.0, 2.0, 3.0, 4.0])).matmul(&c(&[1, 2, 2]), &st(h(&[5.0, 6.0, 7.0, 8.0])), &bt);
    assert_eq!(host(&out.expect("f16 t")), HostData::F16(h(&[17.0, 23.0, 39.0, 53.0])));
}

#[test]
fn integer_matmul_wraps_and_matches_naive() {
    let out = st(vec![i32::MAX]).matmul(&c(&[1, 1, 1]), &st(vec![2i32]), &c(&[1, 1, 1])).expect("i32");
    assert_eq!(host(&out), HostData::I32(vec![-2]));
    let mut rng = Rng::new(5);
    let (b, m, k, n) = (2, 3, 4, 5);
    let a: Vec<i32> = (0..b * m * k).map(|_| rng.below(21) as i32 - 10).collect();
    let bb: Vec<i32> = (0..k * n).map(|_| rng.below(21) as i32 - 10).collect();
    let mut want = Vec::new();
    for bi in 0..b {
        for i in 0..m {
            for j in 0..n {
                want.push((0..k).map(|p| a[(bi * m + i) * k + p] * bb[p * n + j]).sum::<i32>());
            }
        }
    }
    let bl = Layout::new(vec![b, k, n], vec![0, n, 1], 0);
    let out = st(a).matmul(&c(&[b, m, k]), &st(bb.clone()), &bl).expect("i32 matmul");
    assert_eq!(host(&out), HostData::I32(want));
    let ub: Vec<u32> = bb.iter().map(|&x| x as u32).collect();
    let out = st(vec![1u32; k]).matmul(&c(&[1, 1, k]), &st(ub), &c(&[1, k, n])).expect("u32");
    let col_sums: Vec<u32> = (0..n).map(|j| (0..k).map(|p| bb[p * n + j]).sum::<i32>() as u32).collect();
    assert_eq!(host(&out), HostData::U32(col_sums));
}

#[test]
fn zero_inner_dim_gives_zeros_and_empty_dims_give_empty() {
    let out = st(Vec::<f32>::new()).matmul(&c(&[2, 3, 0]), &st(Vec::<f32>::new()), &c(&[2, 0, 4])).expect("k=0");
    assert_eq!(host(&out), HostData::F32(vec![0.0; 24]));
    let out = st(Vec::<f64>::new()).matmul(&c(&[2, 0, 3]), &st(vec![1.0f64; 12]), &c(&[2, 3, 2])).expect("m=0");
    assert_eq!(host(&out), HostData::F64(vec![]));
    let out = st(Vec::<i32>::new()).matmul(&c(&[1, 2, 0]), &st(Vec::<i32>::new()), &c(&[1, 0, 2])).expect("int k=0");
    assert_eq!(host(&out), HostData::I32(vec![0; 4]));
}

#[test]
fn matmul_errors() {
    let a = st(vec![1.0f32; 6]);
    let r = a.matmul(&c(&[1, 2, 3]), &a, &c(&[1, 2, 3]));
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let r = a.matmul(&c(&[2, 3]), &a, &c(&[3, 2]));
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let r = a.matmul(&c(&[1, 2, 3]), &st(vec![1.0f64; 6]), &c(&[1, 3, 2]));
    assert!(matches!(r, Err(Error::DTypeMismatch { .. })), "{r:?}");
    let r = a.matmul(&c(&[1, 2, 3]), &a, &c(&[1, 3, 3]));
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    let b = st(vec![true; 4]);
    assert_unsupported(b.matmul(&c(&[1, 2, 2]), &b, &c(&[1, 2, 2])), DType::Bool);
}

/// `f` run in a rayon pool of `threads` threads.
fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool").install(f)
}

#[test]
fn threaded_products_match_naive_and_do_not_depend_on_the_thread_count() {
    let mut rng = Rng::new(6);
    // Above the threading threshold (2²¹ multiply-adds per matrix): wider than tall splits by
    // columns, taller than wide by rows; odd sizes leave a short last band.
    for (b, m, k, n) in [(2, 33, 257, 301), (1, 301, 257, 33), (1, 129, 130, 129)] {
        let t = case(&mut rng, b, m, k, n);
        // A transposed, B broadcast over the batch (from `case`); then B transposed too (a
        // Linear layer's `Wᵀ`); then A row-major with both Bs (single products with a row-major A
        // or a transposed B are transposed into a copy before the gemm).
        let bt_buf: Vec<f64> = rng.vec(n * k);
        let btl = Layout::new(vec![b, k, n], vec![0, 1, k], 0);
        let ar_buf: Vec<f64> = rng.vec(b * m * k + 3);
        let arl = Layout::new(vec![b, m, k], vec![m * k, k, 1], 3);
        let bs = [(t.b_buf.clone(), t.bl.clone()), (bt_buf, btl)];
        let pairs = [(t.a_buf.clone(), t.al.clone())].into_iter().chain([(ar_buf, arl)]);
        for ((a_buf, al), (b_buf, bl)) in pairs.flat_map(|a| bs.clone().map(|b| (a.clone(), b))) {
            let t = Case { a_buf, al, b_buf, bl, want: vec![] };
            let a32: Vec<f32> = t.a_buf.iter().map(|&x| x as f32).collect();
            let b32: Vec<f32> = t.b_buf.iter().map(|&x| x as f32).collect();
            let t64 = Case {
                a_buf: a32.iter().map(|&x| x as f64).collect(),
                b_buf: b32.iter().map(|&x| x as f64).collect(),
                ..t
            };
            let want = naive(&t64, b, m, k, n);
            let run = |threads| {
                let (a, bb) = (st(a32.clone()), st(b32.clone()));
                in_pool(threads, || host(&a.matmul(&t64.al, &bb, &t64.bl).expect("f32 matmul")))
            };
            let one = run(1);
            assert_close(&one.to_f64_vec(), &want, 1e-4);
            assert_eq!(run(2), one, "f32 {b}x{m}x{k}x{n}: 2 threads differ from 1");
            assert_eq!(run(3), one, "f32 {b}x{m}x{k}x{n}: 3 threads differ from 1");
            let run64 = |threads| {
                let (a, bb) = (st(t64.a_buf.clone()), st(t64.b_buf.clone()));
                in_pool(threads, || host(&a.matmul(&t64.al, &bb, &t64.bl).expect("f64 matmul")))
            };
            let one = run64(1);
            assert_close(&one.to_f64_vec(), &want, 1e-12);
            assert_eq!(run64(3), one, "f64 {b}x{m}x{k}x{n}: 3 threads differ from 1");
        }
    }
}

/// A row-major A (with a row-major B) and a column-major B (with a column-major A) are
/// transposed into scratch before the gemm; the copy must hold exactly the same values, so the
/// product has the same bits as the same matrices stored in the layouts matrixmultiply packs
/// directly (A column-major, B row-major), for sizes under, at and around the 8×8 tiles, and
/// one product big enough to be threaded. (Both at once is `x · Wᵀ`, the dot-product kernel.)
#[test]
fn transposed_operands_give_the_same_bits_as_dense_ones() {
    let mut rng = Rng::new(12);
    for (m, k, n) in [(1, 7, 9), (7, 8, 9), (8, 8, 8), (13, 70, 65), (128, 256, 384), (33, 1023, 17)] {
        let a: Vec<f32> = rng.vec(m * k).iter().map(|&x| x as f32).collect(); // row-major m×k
        let b: Vec<f32> = rng.vec(k * n).iter().map(|&x| x as f32).collect(); // row-major k×n
        let a_cm: Vec<f32> = (0..m * k).map(|q| a[(q % m) * k + q / m]).collect(); // column-major
        let b_cm: Vec<f32> = (0..k * n).map(|q| b[(q % k) * n + q / k]).collect(); // column-major
        let rm_a = Layout::new(vec![1, m, k], vec![m * k, k, 1], 0);
        let cm_a = Layout::new(vec![1, m, k], vec![m * k, 1, m], 0);
        let rm_b = Layout::new(vec![1, k, n], vec![k * n, n, 1], 0);
        let cm_b = Layout::new(vec![1, k, n], vec![k * n, 1, k], 0);
        let dense = host(&st(a_cm.clone()).matmul(&cm_a, &st(b.clone()), &rm_b).expect("dense"));
        let want: Vec<f64> =
            (0..m * n).map(|q| (0..k).map(|p| a[(q / n) * k + p] as f64 * b[p * n + q % n] as f64).sum()).collect();
        assert_close(&dense.to_f64_vec(), &want, 1e-4);
        for (name, (x, xl), (y, yl)) in
            [("row-major A", (&a, &rm_a), (&b, &rm_b)), ("column-major B", (&a_cm, &cm_a), (&b_cm, &cm_b))]
        {
            let got = host(&st(x.clone()).matmul(xl, &st(y.clone()), yl).expect("matmul"));
            assert_eq!(got, dense, "{m}x{k}x{n}, {name}: bits differ from the dense layouts");
        }
    }
}

/// f32 `x · Wᵀ` (A row-major, B column-major, both transposed into scratch before the gemm)
/// against the naive f64 sum at sizes under and around the 8×8 transpose tiles (k = 1, 7, 8,
/// 9, 1023), rows of A and of W padded (strides wider than k), an offset, a batch sharing W,
/// and a tall product (m = 600).
#[test]
fn x_times_w_transposed_matches_naive_at_odd_sizes() {
    let mut rng = Rng::new(13);
    for (b, m, k, n) in
        [(1, 1, 1, 1), (1, 7, 7, 7), (2, 4, 8, 2), (1, 5, 9, 3), (1, 9, 1023, 65), (3, 130, 17, 129), (1, 600, 33, 5)]
    {
        let (lda, ldb) = (k + 3, k + 1);
        let a: Vec<f64> = rng.vec(b * m * lda + 2).iter().map(|&x| x as f32 as f64).collect();
        let w: Vec<f64> = rng.vec(n * ldb).iter().map(|&x| x as f32 as f64).collect();
        let al = Layout::new(vec![b, m, k], vec![m * lda, lda, 1], 2);
        let bl = Layout::new(vec![b, k, n], vec![0, 1, ldb], 0);
        let t = Case { a_buf: a, al, b_buf: w, bl, want: vec![] };
        let want = naive(&t, b, m, k, n);
        let a32: Vec<f32> = t.a_buf.iter().map(|&x| x as f32).collect();
        let w32: Vec<f32> = t.b_buf.iter().map(|&x| x as f32).collect();
        let out = st(a32).matmul(&t.al, &st(w32), &t.bl).expect("matmul");
        assert_eq!(out.dtype(), DType::F32);
        assert_close(&f64s(&out), &want, 1e-4);
    }
}
