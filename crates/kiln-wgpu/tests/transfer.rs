//! Uploads and readbacks from a few bytes to several MiB: odd byte counts, every dtype, buffer
//! reuse while recorded work still reads the old contents, and many uploads between two
//! synchronisations.

mod common;

use kiln_backend::{BackendStorage, DType, HostData, Layout};
use kiln_wgpu::GpuStorage;

fn data(dtype: DType, n: usize, seed: u32) -> HostData {
    let v = |i: usize| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
    match dtype {
        DType::F32 => HostData::F32((0..n).map(|i| v(i) as f32 / 1024.0 - 4096.0).collect()),
        DType::F16 => HostData::F16((0..n).map(|i| half::f16::from_f32((v(i) % 2048) as f32 - 1024.0)).collect()),
        DType::I32 => HostData::I32((0..n).map(|i| v(i) as i32 - (1 << 23)).collect()),
        DType::U32 => HostData::U32((0..n).map(v).collect()),
        DType::Bool => HostData::Bool((0..n).map(|i| v(i) % 3 == 0).collect()),
        DType::F64 => unreachable!(),
    }
}

#[test]
fn round_trips_of_every_dtype_and_size() {
    let Some(dev) = common::gpu("round_trips_of_every_dtype_and_size") else { return };
    for dtype in [DType::F32, DType::F16, DType::I32, DType::U32, DType::Bool] {
        if dtype == DType::F16 && !common::has_f16_else_refused(&dev) {
            continue;
        }
        let per = if dtype == DType::F16 { 2 } else { 4 };
        // Just under and over 256 KiB, an odd count (f16: a padded tail), and several MiB.
        for n in [(256 << 10) / per - 1, (256 << 10) / per + 1, 300_001, (3 << 20) + 7] {
            let host = data(dtype, n, n as u32);
            let g = GpuStorage::from_host(&dev, &host).expect("upload");
            let back = g.to_host(&Layout::contiguous(&[n])).expect("readback");
            assert!(back == host, "{dtype} × {n} came back different");
            // A view at an offset reads through a copy kernel, then the same readback path.
            let tail = g.to_host(&Layout::contiguous(&[n]).narrow(0, 3, n - 3)).expect("offset readback");
            assert_eq!(tail.to_f64_vec(), host.to_f64_vec()[3..], "{dtype} × {n} offset view");
        }
    }
}

#[test]
fn recycled_buffers_keep_recorded_work_in_order() {
    let Some(dev) = common::gpu("recycled_buffers_keep_recorded_work_in_order") else { return };
    let n = 200_000;
    let l = Layout::contiguous(&[n]);
    let (a, b) = (data(DType::F32, n, 1), data(DType::F32, n, 2));
    let mut outs = Vec::new();
    for round in 0..4 {
        let x = GpuStorage::from_host(&dev, &a).expect("upload a");
        // Recorded, not yet run: reads x.
        let y = x.unary(&l, kiln_backend::UnaryOp::Neg).expect("neg");
        drop(x);
        // Likely gets x's buffer back from the pool; must not overwrite it before `neg` ran.
        let z = GpuStorage::from_host(&dev, &b).expect("upload b");
        outs.push((round, y, z));
    }
    let want_y: Vec<f64> = a.to_f64_vec().iter().map(|v| -v).collect();
    for (round, y, z) in outs {
        assert_eq!(y.to_host(&l).expect("y").to_f64_vec(), want_y, "round {round}: neg saw overwritten input");
        assert!(z.to_host(&l).expect("z") == b, "round {round}: second upload");
    }
}

#[test]
fn many_uploads_between_syncs() {
    let Some(dev) = common::gpu("many_uploads_between_syncs") else { return };
    let n = 300_000;
    let hosts: Vec<HostData> = (0..24).map(|s| data(DType::F32, n, s)).collect();
    let gpus: Vec<GpuStorage> = hosts.iter().map(|h| GpuStorage::from_host(&dev, h).expect("upload")).collect();
    for (i, (h, g)) in hosts.iter().zip(&gpus).enumerate() {
        assert!(g.to_host(&Layout::contiguous(&[n])).expect("read") == *h, "upload {i}");
    }
    // And again, into recycled buffers.
    for (i, h) in hosts.iter().enumerate().rev() {
        let g = GpuStorage::from_host(&dev, h).expect("upload");
        assert!(g.to_host(&Layout::contiguous(&[n])).expect("read") == *h, "reupload {i}");
    }
}

/// Repeated dispatches over recycled buffers reuse their bind groups (metadata at a dynamic
/// offset), and the results stay right.
#[test]
fn repeated_dispatches_reuse_bind_groups() {
    let Some(dev) = common::gpu("repeated_dispatches_reuse_bind_groups") else { return };
    let (m, k, n) = (9, 7, 5);
    let a: Vec<f32> = (0..m * k).map(|i| i as f32 / 8.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| 1.0 - i as f32 / 16.0).collect();
    let ga = GpuStorage::from_host(&dev, &HostData::F32(a.clone())).expect("a");
    let gb = GpuStorage::from_host(&dev, &HostData::F32(b.clone())).expect("b");
    let (al, bl, ol) = (Layout::contiguous(&[1, m, k]), Layout::contiguous(&[1, k, n]), Layout::contiguous(&[1, m, n]));
    let before = dev.memory_stats().bind_groups_reused;
    let mut last = None;
    for _ in 0..20 {
        last = Some(ga.matmul(&al, &gb, &bl).expect("matmul"));
    }
    let got = last.expect("ran").to_host(&ol).expect("read").to_f64_vec();
    let reused = dev.memory_stats().bind_groups_reused - before;
    assert!(reused >= 10, "only {reused} of 20 dispatches reused a bind group");
    for i in 0..m {
        for j in 0..n {
            let want: f64 = (0..k).map(|kk| a[i * k + kk] as f64 * b[kk * n + j] as f64).sum();
            assert!((got[i * n + j] - want).abs() < 1e-4, "out[{i},{j}] = {}, want {want}", got[i * n + j]);
        }
    }
}

/// A sync may spin on non-blocking polls, fall back to a blocking wait when the spin runs out,
/// or block at once; and a batch whose metadata repeats the last one (or a prefix of it) skips
/// rewriting it. Every combination must read back what was computed.
#[test]
fn waits_and_repeated_metadata_read_back_the_right_values() {
    use kiln_backend::{BinaryOp, UnaryOp};
    use std::time::Duration;
    for spin in [Duration::ZERO, Duration::from_nanos(1), Duration::from_secs(5)] {
        let options = kiln_wgpu::ContextOptions { spin: Some(spin), ..Default::default() };
        let Some(dev) = common::gpu_with("waits_and_repeated_metadata_read_back_the_right_values", &options) else {
            return;
        };
        let (n, m) = (1_001, 37);
        let (l, lm) = (Layout::contiguous(&[n]), Layout::contiguous(&[m]));
        let (a, b) = (data(DType::F32, n, 3), data(DType::F32, m, 4));
        let x = GpuStorage::from_host(&dev, &a).expect("upload");
        let w = GpuStorage::from_host(&dev, &b).expect("upload");
        let neg: Vec<f64> = a.to_f64_vec().iter().map(|v| -v).collect();
        let twice: Vec<f64> = b.to_f64_vec().iter().map(|v| v + v).collect();
        // Same batch twice, then a longer one, then its prefix again, then a different one.
        for round in ["neg", "neg", "neg+sum", "neg", "twice", "neg"] {
            let y = x.unary(&l, UnaryOp::Neg).expect("neg");
            if round == "twice" {
                let t = w.binary(&lm, &w, &lm, BinaryOp::Add).expect("add");
                assert_eq!(t.to_host(&lm).expect("read").to_f64_vec(), twice, "spin {spin:?}, round {round}");
                continue;
            }
            if round == "neg+sum" {
                let t = y.binary(&l, &x, &l, BinaryOp::Add).expect("add");
                assert!(
                    t.to_host(&l).expect("read").to_f64_vec().iter().all(|v| *v == 0.0),
                    "spin {spin:?}, round {round}"
                );
            }
            assert_eq!(y.to_host(&l).expect("read").to_f64_vec(), neg, "spin {spin:?}, round {round}");
        }
    }
}

/// A long chain of dependent dispatches goes to the GPU in several early submits while the GPU
/// has run dry (or in one at the sync when early submission is off), with the same result: 200
/// products with a permutation matrix, exact in f32.
#[test]
fn early_submits_keep_a_dependent_chain_exact() {
    let n = 6;
    let perm = |i: usize| (i * 5 + 1) % n;
    let mut w = vec![0.0f32; n * n];
    for i in 0..n {
        w[i * n + perm(i)] = 1.0;
    }
    let x: Vec<f32> = (0..2 * n).map(|i| i as f32 * 1.5 - 4.0).collect();
    let steps = 200;
    // Row r of x·W moves column i to column perm(i); `steps` times over.
    let mut want = x.clone();
    for _ in 0..steps {
        let mut next = vec![0.0f32; 2 * n];
        for r in 0..2 {
            for i in 0..n {
                next[r * n + perm(i)] = want[r * n + i];
            }
        }
        want = next;
    }
    for early in [true, false] {
        let options = kiln_wgpu::ContextOptions { early_submit: early, ..Default::default() };
        let Some(dev) = common::gpu_with("early_submits_keep_a_dependent_chain_exact", &options) else { return };
        let (xl, wl) = (Layout::contiguous(&[1, 2, n]), Layout::contiguous(&[1, n, n]));
        let ws = GpuStorage::from_host(&dev, &HostData::F32(w.clone())).expect("upload");
        let mut y = GpuStorage::from_host(&dev, &HostData::F32(x.clone())).expect("upload");
        dev.sync().expect("sync");
        let before = dev.memory_stats().submits;
        for _ in 0..steps {
            y = y.matmul(&xl, &ws, &wl).expect("matmul");
        }
        let got = y.to_host(&Layout::contiguous(&[2 * n])).expect("read");
        assert_eq!(got, HostData::F32(want.clone()), "early submission {early}");
        let submits = dev.memory_stats().submits - before;
        if early {
            assert!(submits > 1, "{steps} dispatches went in {submits} submit(s) with early submission on");
        } else {
            assert_eq!(submits, 1, "early submission off: one submit at the readback");
        }
    }
}
