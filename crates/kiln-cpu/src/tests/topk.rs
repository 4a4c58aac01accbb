use kiln_backend::{BackendStorage, DType, Error, HostData};

use super::{assert_rel, assert_unsupported, c, f64s, host, st};

#[test]
fn largest_and_smallest_with_ties_and_nan() {
    let nan = f64::NAN;
    let x = st(vec![3.0f64, 1.0, 3.0, 2.0, nan]);
    let l = c(&[5]);
    let (v, i) = x.topk(&l, 3, true).expect("largest");
    assert_rel(&f64s(&v), &[nan, 3.0, 3.0], 0.0);
    assert_eq!(host(&i), HostData::U32(vec![4, 0, 2]));
    let (v, i) = x.topk(&l, 4, false).expect("smallest");
    assert_rel(&f64s(&v), &[1.0, 2.0, 3.0, 3.0], 0.0);
    assert_eq!(host(&i), HostData::U32(vec![1, 3, 0, 2]));
    let (v, i) = x.topk(&l, 5, false).expect("all");
    assert!(f64s(&v)[4].is_nan());
    assert_eq!(host(&i), HostData::U32(vec![1, 3, 0, 2, 4]));
}

#[test]
fn rows_of_a_transpose() {
    // Logical rows of the transpose of [[5, 1], [2, 7], [2, 0]]: [5, 2, 2] and [1, 7, 0].
    let x = st(vec![5i32, 1, 2, 7, 2, 0]);
    let l = c(&[3, 2]).permute(&[1, 0]);
    let (v, i) = x.topk(&l, 2, true).expect("topk");
    assert_eq!(host(&v), HostData::I32(vec![5, 2, 7, 1]));
    assert_eq!(host(&i), HostData::U32(vec![0, 1, 1, 0]));
    let (v, i) = x.topk(&l, 2, false).expect("bottomk");
    assert_eq!(host(&v), HostData::I32(vec![2, 2, 0, 1]));
    assert_eq!(host(&i), HostData::U32(vec![1, 2, 2, 0]));
}

#[test]
fn topk_edges() {
    let x = st(vec![1.0f32, 2.0]);
    let (v, i) = x.topk(&c(&[2]), 0, true).expect("k=0");
    assert_eq!((host(&v), host(&i)), (HostData::F32(vec![]), HostData::U32(vec![])));
    let r = x.topk(&c(&[2]), 3, true);
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    assert_unsupported(st(vec![true]).topk(&c(&[1]), 1, true), DType::Bool);
}
