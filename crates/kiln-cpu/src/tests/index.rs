use kiln_backend::{BackendStorage, DType, Error, HostData, Layout};

use super::{assert_unsupported, c, host, st};

/// Logical [[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]], stored transposed.
fn table() -> (crate::CpuStorage, Layout) {
    let mut buf = vec![0.0f32; 12];
    for i in 0..3 {
        for j in 0..4 {
            buf[j * 3 + i] = (10 * i + j) as f32;
        }
    }
    (st(buf), c(&[4, 3]).permute(&[1, 0]))
}

#[test]
fn index_select_along_each_dim() {
    let (x, l) = table();
    let out = x.index_select(&l, &st(vec![2i32, 0, 2]), &c(&[3]), 1).expect("dim 1");
    assert_eq!(host(&out), HostData::F32(vec![2.0, 0.0, 2.0, 12.0, 10.0, 12.0, 22.0, 20.0, 22.0]));
    let out = x.index_select(&l, &st(vec![1u32]), &c(&[1]), 0).expect("dim 0");
    assert_eq!(host(&out), HostData::F32(vec![10.0, 11.0, 12.0, 13.0]));
    let out = x.index_select(&l, &st(Vec::<u32>::new()), &c(&[0]), 0).expect("empty ids");
    assert_eq!(host(&out), HostData::F32(vec![]));
    // Ids read through their own (strided) layout: every other element.
    let out = x.index_select(&l, &st(vec![3u32, 99, 1]), &Layout::new(vec![2], vec![2], 0), 1).expect("strided ids");
    assert_eq!(host(&out), HostData::F32(vec![3.0, 1.0, 13.0, 11.0, 23.0, 21.0]));
}

#[test]
fn index_select_checks_ids() {
    let (x, l) = table();
    match x.index_select(&l, &st(vec![0i32, -1]), &c(&[2]), 1) {
        Err(Error::IndexOutOfRange { index: -1, size: 4, .. }) => {}
        other => panic!("{other:?}"),
    }
    match x.index_select(&l, &st(vec![3u32]), &c(&[1]), 0) {
        Err(Error::IndexOutOfRange { index: 3, size: 3, .. }) => {}
        other => panic!("{other:?}"),
    }
    let r = x.index_select(&l, &st(vec![0.0f32]), &c(&[1]), 0);
    assert!(matches!(r, Err(Error::DTypeMismatch { .. })), "{r:?}");
    let r = x.index_select(&l, &st(vec![0u32; 4]), &c(&[2, 2]), 0);
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let r = x.index_select(&l, &st(vec![0u32]), &c(&[1]), 2);
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
}

#[test]
fn gather_with_ids_smaller_than_self() {
    let (x, l) = table();
    // out[i][j] = x[i][ids[i][j]] for the first two rows.
    let ids = st(vec![3i32, 0, 1, 1]);
    let out = x.gather(&l, &ids, &c(&[2, 2]), 1).expect("gather dim 1");
    assert_eq!(host(&out), HostData::F32(vec![3.0, 0.0, 11.0, 11.0]));
    // out[i][j] = x[ids[i][j]][j].
    let ids = st(vec![2u32, 0, 1]);
    let out = x.gather(&l, &ids, &c(&[1, 3]), 0).expect("gather dim 0");
    assert_eq!(host(&out), HostData::F32(vec![20.0, 1.0, 12.0]));
    let r = x.gather(&l, &st(vec![4u32]), &c(&[1, 1]), 1);
    assert!(matches!(r, Err(Error::IndexOutOfRange { index: 4, size: 4, .. })), "{r:?}");
    let r = x.gather(&l, &st(vec![0u32; 4]), &c(&[4, 1]), 1);
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let r = x.gather(&l, &st(vec![0u32; 3]), &c(&[3]), 0);
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
}

#[test]
fn scatter_add_accumulates_repeats() {
    let x = st(vec![0.0f64; 3]);
    let out =
        x.scatter_add(&c(&[3]), &st(vec![0u32, 2, 0, 1]), &c(&[4]), &st(vec![1.0f64, 2.0, 3.0, 4.0]), &c(&[4]), 0);
    assert_eq!(host(&out.expect("1-D")), HostData::F64(vec![4.0, 4.0, 2.0]));

    // 2-D along dim 1 with ids covering only the first row; self read through a transpose.
    let (t, l) = table();
    let ids = st(vec![1i32, 1, 3]);
    let src = st(vec![0.5f32, 0.25, 100.0]);
    let out = t.scatter_add(&l, &ids, &c(&[1, 3]), &src, &c(&[1, 3]), 1).expect("2-D");
    let mut want: Vec<f32> = (0..3).flat_map(|i| (0..4).map(move |j| (10 * i + j) as f32)).collect();
    want[1] += 0.75;
    want[3] += 100.0;
    assert_eq!(host(&out), HostData::F32(want));

    let ints = st(vec![i32::MAX, 0]);
    let out = ints.scatter_add(&c(&[2]), &st(vec![0u32, 1]), &c(&[2]), &st(vec![1i32, -5]), &c(&[2]), 0);
    assert_eq!(host(&out.expect("i32")), HostData::I32(vec![i32::MIN, -5]));
}

#[test]
fn scatter_add_checks() {
    let x = st(vec![0.0f32; 3]);
    let l = c(&[3]);
    let r = x.scatter_add(&l, &st(vec![3u32]), &c(&[1]), &st(vec![1.0f32]), &c(&[1]), 0);
    assert!(matches!(r, Err(Error::IndexOutOfRange { index: 3, .. })), "{r:?}");
    let r = x.scatter_add(&l, &st(vec![0u32, 1]), &c(&[2]), &st(vec![1.0f32]), &c(&[1]), 0);
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let r = x.scatter_add(&l, &st(vec![0u32]), &c(&[1]), &st(vec![1.0f64]), &c(&[1]), 0);
    assert!(matches!(r, Err(Error::DTypeMismatch { .. })), "{r:?}");
    let b = st(vec![false; 3]);
    assert_unsupported(b.scatter_add(&l, &st(vec![0u32]), &c(&[1]), &st(vec![true]), &c(&[1]), 0), DType::Bool);
}
