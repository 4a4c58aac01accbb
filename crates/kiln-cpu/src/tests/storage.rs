use half::f16;
use kiln_backend::{BackendStorage, DType, Error, HostData, Layout};

use super::{c, host, st};
use crate::{CpuDevice, CpuStorage};

#[test]
fn full_casts_the_value() {
    let full = |v, d| host(&CpuStorage::full(&CpuDevice, 2, v, d).expect("full"));
    assert_eq!(full(2.5, DType::F32), HostData::F32(vec![2.5; 2]));
    assert_eq!(full(2.5, DType::F16), HostData::F16(vec![f16::from_f32(2.5); 2]));
    assert_eq!(full(-2.7, DType::I32), HostData::I32(vec![-2; 2]));
    assert_eq!(full(-1.0, DType::U32), HostData::U32(vec![0; 2]));
    assert_eq!(full(0.5, DType::Bool), HostData::Bool(vec![true; 2]));
    assert_eq!(full(0.1, DType::F64), HostData::F64(vec![0.1; 2]));
    assert_eq!(host(&CpuStorage::full(&CpuDevice, 0, 1.0, DType::F32).expect("empty")), HostData::F32(vec![]));
}

#[test]
fn absurd_allocation_is_an_error() {
    let r = CpuStorage::full(&CpuDevice, usize::MAX, 0.0, DType::F64);
    assert!(matches!(r, Err(Error::OutOfMemory { .. })), "{r:?}");
}

#[test]
fn host_round_trip_and_strided_reads() {
    let data = HostData::U32(vec![0, 1, 2, 3, 4, 5]);
    let s = CpuStorage::from_host(&CpuDevice, &data).expect("from_host");
    assert_eq!(s.dtype(), DType::U32);
    assert_eq!(s.as_host(), &data);
    assert_eq!(s.to_host(&c(&[2, 3])).expect("contiguous"), data);
    assert_eq!(s.to_host(&c(&[2, 3]).permute(&[1, 0])).expect("t"), HostData::U32(vec![0, 3, 1, 4, 2, 5]));
    assert_eq!(s.to_host(&Layout::new(vec![2, 2], vec![0, 2], 1)).expect("bcast"), HostData::U32(vec![1, 3, 1, 3]));
    assert_eq!(s.to_host(&Layout::new(vec![], vec![], 4)).expect("scalar"), HostData::U32(vec![4]));
    assert_eq!(s.to_host(&c(&[2, 3]).narrow(1, 3, 0)).expect("empty view"), HostData::U32(vec![]));
    let r = s.to_host(&Layout::new(vec![3], vec![3], 0));
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    assert_eq!(st(vec![1.0f32]).into_host(), HostData::F32(vec![1.0]));
}
