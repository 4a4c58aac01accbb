use half::f16;
use kiln_backend::{BackendStorage, DType, Error, HostData, Layout};

use super::{c, host, st};

fn cast(data: impl Into<HostData>, dtype: DType) -> HostData {
    let data = data.into();
    let l = c(&[data.len()]);
    host(&st(data).cast(&l, dtype).expect("cast"))
}

#[test]
fn float_to_int_truncates_and_saturates() {
    let x = vec![2.7f32, -2.7, f32::NAN, 1e10, -1e10, f32::INFINITY, -0.5];
    assert_eq!(cast(x.clone(), DType::I32), HostData::I32(vec![2, -2, 0, i32::MAX, i32::MIN, i32::MAX, 0]));
    assert_eq!(cast(x, DType::U32), HostData::U32(vec![2, 0, 0, u32::MAX, 0, u32::MAX, 0]));
    assert_eq!(cast(vec![4294967295.9f64], DType::U32), HostData::U32(vec![u32::MAX]));
    assert_eq!(cast(vec![f16::from_f32(-3.75)], DType::I32), HostData::I32(vec![-3]));
}

#[test]
fn to_bool_is_nonzero_and_from_bool_is_0_1() {
    assert_eq!(cast(vec![0.0f64, -0.0, 0.1, f64::NAN], DType::Bool), HostData::Bool(vec![false, false, true, true]));
    assert_eq!(cast(vec![0i32, -3], DType::Bool), HostData::Bool(vec![false, true]));
    assert_eq!(cast(vec![true, false], DType::F32), HostData::F32(vec![1.0, 0.0]));
    assert_eq!(cast(vec![true, false], DType::I32), HostData::I32(vec![1, 0]));
    assert_eq!(cast(vec![true], DType::F16), HostData::F16(vec![f16::ONE]));
}

#[test]
fn float_conversions_round_to_nearest() {
    // 1 + 2⁻²⁴ is exactly half an f32 ulp above 1: ties to even gives 1; 1 + 3·2⁻²⁴ → 1 + 2⁻²².
    let x = vec![1.0 + 2f64.powi(-24), 1.0 + 3.0 * 2f64.powi(-24), 1e40];
    assert_eq!(cast(x, DType::F32), HostData::F32(vec![1.0, 1.0 + 2f32.powi(-22), f32::INFINITY]));
    // f16 max is 65504; 65520 is the rounding boundary to infinity.
    assert_eq!(
        cast(vec![0.1f32, 65519.0, 65520.0], DType::F16),
        HostData::F16(vec![f16::from_f32(0.1), f16::MAX, f16::INFINITY])
    );
    assert_eq!(cast(vec![16777217i32], DType::F32), HostData::F32(vec![16777216.0]));
    assert_eq!(cast(vec![u32::MAX], DType::F64), HostData::F64(vec![4294967295.0]));
}

#[test]
fn int_to_int_reinterprets_bits() {
    assert_eq!(cast(vec![-1i32, 5], DType::U32), HostData::U32(vec![u32::MAX, 5]));
    assert_eq!(cast(vec![u32::MAX, 2147483648], DType::I32), HostData::I32(vec![-1, i32::MIN]));
}

#[test]
fn same_dtype_cast_is_a_contiguous_copy() {
    let x = st(vec![1u32, 2, 3, 4, 5, 6]);
    let t = c(&[2, 3]).permute(&[1, 0]);
    assert_eq!(host(&x.cast(&t, DType::U32).expect("copy")), HostData::U32(vec![1, 4, 2, 5, 3, 6]));
}

#[test]
fn copy_into_writes_only_the_destination_view() {
    // Source [[1,2,3],[4,5,6]] transposed → [3,2]; destination: columns 1..3 of a [3,4] buffer.
    let src = st(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let sl = c(&[2, 3]).permute(&[1, 0]);
    let mut dst = st(vec![0.0f32; 12]);
    let dl = c(&[3, 4]).narrow(1, 1, 2);
    src.copy_into(&sl, &mut dst, &dl).expect("copy_into");
    assert_eq!(host(&dst), HostData::F32(vec![0.0, 1.0, 4.0, 0.0, 0.0, 2.0, 5.0, 0.0, 0.0, 3.0, 6.0, 0.0]));

    let mut wrong = st(vec![0i32; 12]);
    let r = src.copy_into(&sl, &mut wrong, &dl);
    assert!(matches!(r, Err(Error::DTypeMismatch { .. })), "{r:?}");
    let r = src.copy_into(&sl, &mut dst, &c(&[2, 3]));
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let r = src.copy_into(&sl, &mut dst, &Layout::new(vec![3, 2], vec![4, 1], 11));
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    assert_eq!(host(&dst).len(), 12);
}
