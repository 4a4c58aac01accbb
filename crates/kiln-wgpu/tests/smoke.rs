//! The GPU machinery end to end: upload, a batched chain of kernels, readback, pool and cache.

mod common;

use kiln_backend::{BackendStorage, BinaryOp, DType, HostData, Layout, UnaryOp};
use kiln_wgpu::GpuStorage;

/// The tests share one device: the one that counts allocations must not see the other's.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn chain_of_ops_reads_back_and_reuses_buffers() {
    let Some(dev) = common::gpu("chain_of_ops_reads_back_and_reuses_buffers") else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let n = 4097;
    let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 100.0).collect();
    let l = Layout::contiguous(&[n]);
    let a = GpuStorage::from_host(&dev, &HostData::F32(x.clone())).expect("upload");
    let before = dev.memory_stats();
    let mut y = a.unary(&l, UnaryOp::Relu).expect("relu");
    for _ in 0..1000 {
        y = y.binary(&l, &a, &l, BinaryOp::Add).expect("add");
    }
    let out = y.to_host(&l).expect("readback");
    let after = dev.memory_stats();
    let HostData::F32(out) = out else { panic!("dtype") };
    for i in 0..n {
        let want = x[i].max(0.0) + 1000.0 * x[i];
        assert!((out[i] - want).abs() <= 1e-3 * want.abs().max(1.0), "{i}: {} vs {want}", out[i]);
    }
    assert!(after.allocations - before.allocations <= 8, "{before:?} -> {after:?}");
    assert!(after.pipelines - before.pipelines <= 8, "{before:?} -> {after:?}");
}

#[test]
fn strided_read_and_f16_and_bool() {
    let Some(dev) = common::gpu("strided_read_and_f16_and_bool") else { return };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let x: Vec<i32> = (0..6).collect();
    let a = GpuStorage::from_host(&dev, &HostData::I32(x)).expect("upload");
    let t = Layout::contiguous(&[2, 3]).permute(&[1, 0]);
    assert_eq!(a.to_host(&t).expect("read"), HostData::I32(vec![0, 3, 1, 4, 2, 5]));
    let b = a.cast(&t, DType::Bool).expect("cast");
    let l = Layout::contiguous(&[6]);
    assert_eq!(b.to_host(&l).expect("read"), HostData::Bool(vec![false, true, true, true, true, true]));
    if common::has_f16_else_refused(&dev) {
        let h = a.cast(&l, DType::F16).expect("f16");
        assert_eq!(h.to_host(&l).expect("read").to_f64_vec(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }
    let z = GpuStorage::full(&dev, 5, 2.5, DType::F32).expect("full");
    assert_eq!(z.to_host(&Layout::contiguous(&[5])).expect("read"), HostData::F32(vec![2.5; 5]));
}
