//! The strided elementwise walk (`walk.rs`) against the tests' own reading of each layout
//! (`at`), over odd sizes, both sides of the thread threshold, and every layout form the core
//! hands the backend: dense, offset, transposed, stepped, broadcast (stride 0) and scalars.

use kiln_backend::{BackendStorage, BinaryOp, DType, HostData, Layout, UnaryOp};

use super::{Rng, at, c, st};
use crate::walk::Walk;

/// Every position of `shape` in row-major order.
fn positions(shape: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![vec![]];
    for &d in shape {
        out = out.into_iter().flat_map(|p| (0..d).map(move |i| [p.clone(), vec![i]].concat())).collect();
    }
    out
}

/// Layouts of `shape` in many forms, each with the storage length it needs.
fn layouts(shape: &[usize]) -> Vec<(&'static str, Layout, usize)> {
    let rank = shape.len();
    let mut out = vec![("dense", c(shape)), ("offset", Layout::contiguous_with_offset(shape, 3))];
    // Transposed: stored in reversed dim order, read back permuted.
    let rev: Vec<usize> = shape.iter().rev().copied().collect();
    let order: Vec<usize> = (0..rank).rev().collect();
    out.push(("transposed", c(&rev).permute(&order)));
    // Every other element of a twice-as-long last dim, at offset 1.
    if let Some(&last) = shape.last() {
        let mut wide = shape.to_vec();
        wide[rank - 1] = 2 * last;
        out.push(("stepped", c(&wide).step(rank - 1, 1, last, 2)));
    }
    // Broadcast from size 1 in each dim in turn, and from a scalar.
    for d in 0..rank {
        let mut small = shape.to_vec();
        small[d] = 1;
        out.push(("broadcast", c(&small).broadcast_to(shape)));
    }
    out.push(("scalar", c(&[]).broadcast_to(shape)));
    out.into_iter().map(|(name, l)| (name, l.clone(), l.storage_extent().max(1))).collect()
}

const SHAPES: &[&[usize]] = &[&[], &[1], &[7], &[1023], &[4097], &[3, 5], &[2, 1, 7], &[4, 3, 5, 2], &[3, 11001]];

#[test]
fn binary_sub_and_compare_over_every_layout_pair() {
    let mut rng = Rng::new(11);
    for &shape in SHAPES {
        let ls = layouts(shape);
        for (an, al, alen) in &ls {
            for (bn, bl, blen) in &ls {
                let (a, b) = (rng.vec(*alen), rng.vec(*blen));
                let pos = positions(shape);
                // f64 inputs: the difference is exact in the reference too.
                let want: Vec<f64> = pos.iter().map(|p| at(&a, al, p) - at(&b, bl, p)).collect();
                let got = st(a.clone()).binary(al, &st(b.clone()), bl, BinaryOp::Sub).expect("sub");
                assert_eq!(got.as_host(), &HostData::F64(want), "{shape:?}: {an} - {bn}");
                let want: Vec<bool> = pos.iter().map(|p| at(&a, al, p) < at(&b, bl, p)).collect();
                let got = st(a).binary(al, &st(b), bl, BinaryOp::Lt).expect("lt");
                assert_eq!(got.as_host(), &HostData::Bool(want), "{shape:?}: {an} < {bn}");
            }
        }
    }
}

#[test]
fn f32_binary_on_broadcast_rows_matches_f32_arithmetic() {
    // The bias add of a linear layer: [rows, n] + [n] broadcast over rows, past the thread
    // threshold. f32 + f32 rounded once from f64 equals the f32 sum.
    let mut rng = Rng::new(5);
    let (rows, n) = (129, 511);
    let x: Vec<f32> = rng.vec(rows * n).into_iter().map(|v| v as f32).collect();
    let b: Vec<f32> = rng.vec(n).into_iter().map(|v| v as f32).collect();
    let bl = c(&[n]).broadcast_to(&[rows, n]);
    let got = st(x.clone()).binary(&c(&[rows, n]), &st(b.clone()), &bl, BinaryOp::Add).expect("add");
    let want: Vec<f32> = (0..rows * n).map(|i| x[i] + b[i % n]).collect();
    assert_eq!(got.as_host(), &HostData::F32(want));
    // And the scalar on the left: 0.5 - x.
    let half = st(vec![0.5f32]);
    let got =
        half.binary(&c(&[]).broadcast_to(&[rows, n]), &st(x.clone()), &c(&[rows, n]), BinaryOp::Sub).expect("sub");
    assert_eq!(got.as_host(), &HostData::F32(x.iter().map(|v| 0.5 - v).collect()));
}

#[test]
fn unary_cast_and_where_over_every_layout() {
    let mut rng = Rng::new(13);
    for &shape in SHAPES {
        let pos = positions(shape);
        for (name, l, len) in layouts(shape) {
            let a = rng.vec(len);
            let want: Vec<f64> = pos.iter().map(|p| at(&a, &l, p).max(0.0)).collect();
            let got = st(a.clone()).unary(&l, UnaryOp::Relu).expect("relu");
            assert_eq!(got.as_host(), &HostData::F64(want), "{shape:?}: relu of {name}");
            let scaled: Vec<f64> = a.iter().map(|v| v * 100.0).collect();
            let want: Vec<i32> = pos.iter().map(|p| at(&scaled, &l, p).trunc() as i32).collect();
            let got = st(scaled).cast(&l, DType::I32).expect("cast");
            assert_eq!(got.as_host(), &HostData::I32(want), "{shape:?}: cast of {name}");
        }
        // where: the condition, on_true and on_false each take a different layout form.
        let ls = layouts(shape);
        for i in 0..ls.len() {
            let ((cn, cl, clen), (tn, tl, tlen), (fname, fl, flen)) =
                (&ls[i], &ls[(i + 1) % ls.len()], &ls[(i + 2) % ls.len()]);
            let cond: Vec<bool> = rng.vec(*clen).into_iter().map(|v| v > 0.0).collect();
            let (t, f) = (rng.vec(*tlen), rng.vec(*flen));
            let cond_f: Vec<f64> = cond.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
            let want: Vec<f64> =
                pos.iter().map(|p| if at(&cond_f, cl, p) == 1.0 { at(&t, tl, p) } else { at(&f, fl, p) }).collect();
            let got = st(cond).where_cond(cl, &st(t), tl, &st(f), fl).expect("where");
            assert_eq!(got.as_host(), &HostData::F64(want), "{shape:?}: where({cn}, {tn}, {fname})");
        }
    }
}

#[test]
fn walk_collapses_dense_runs_and_drops_unit_dims() {
    // Dense: one run.
    assert_eq!(Walk::new(&[4, 3, 5], [&c(&[4, 3, 5])]).dims(), &[60]);
    // A [3, 5] block broadcast over a leading 4: the broadcast dim stays, the block merges.
    let b = c(&[3, 5]).broadcast_to(&[4, 3, 5]);
    assert_eq!(Walk::new(&[4, 3, 5], [&c(&[4, 3, 5]), &b]).dims(), &[4, 15]);
    // Both broadcast over the same dims: nothing to keep apart.
    assert_eq!(Walk::new(&[4, 3, 5], [&b, &b]).dims(), &[4, 15]);
    // A transpose cannot merge; unit dims vanish; a scalar is one element.
    let t = c(&[5, 1, 3]).permute(&[2, 1, 0]);
    assert_eq!(Walk::new(&[3, 1, 5], [&t]).dims(), &[3, 5]);
    assert_eq!(Walk::new(&[1, 1], [&c(&[1, 1])]).dims(), &[1]);
    assert_eq!(Walk::new(&[], [&c(&[])]).dims(), &[1]);
}

#[test]
fn out_of_bounds_layouts_are_refused() {
    let l = Layout::new(vec![3, 4], vec![4, 1], 1);
    let err = st(vec![0.0f32; 12]).unary(&l, UnaryOp::Neg).expect_err("past the end");
    assert!(err.to_string().contains("reaches past"), "{err}");
    let err = st(vec![0.0f32; 12])
        .binary(&c(&[3, 4]), &st(vec![0.0f32; 12]), &l, BinaryOp::Add)
        .expect_err("rhs past the end");
    assert!(err.to_string().contains("reaches past"), "{err}");
}

#[test]
fn empty_layouts_with_huge_dims_give_empty_outputs() {
    // A 0 dim beside dims whose product overflows usize: nothing to walk, and no overflow.
    let l = Layout::new(vec![usize::MAX / 2, 4, 0], vec![0, 0, 0], 0);
    let one = || st(vec![1.0f32]);
    assert_eq!(one().unary(&l, UnaryOp::Neg).expect("neg").as_host(), &HostData::F32(vec![]));
    assert_eq!(one().binary(&l, &one(), &l, BinaryOp::Add).expect("add").as_host(), &HostData::F32(vec![]));
    assert_eq!(one().cast(&l, DType::I32).expect("cast").as_host(), &HostData::I32(vec![]));
    let cond = st(vec![true]);
    assert_eq!(cond.where_cond(&l, &one(), &l, &one(), &l).expect("where").as_host(), &HostData::F32(vec![]));
}
