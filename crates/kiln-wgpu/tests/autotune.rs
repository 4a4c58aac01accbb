//! The matmul autotuner: every candidate tile is correct against an f64 reference on odd shapes
//! and strided operands, a tuned choice is persisted and reloaded, and tuning leaves results
//! unchanged.

mod common;

use kiln_backend::{BackendStorage, DType, HostData, Layout};
use kiln_wgpu::{ContextOptions, GpuDevice, GpuStorage};

/// `n` values in [-1, 1) for `seed`.
fn values(n: usize, seed: u64) -> Vec<f64> {
    kiln_testkit::Rng::new(seed).vec(n)
}

/// `al · bl` on the GPU against the f64 product of the values the GPU holds.
fn check(dev: &GpuDevice, dtype: DType, al: &Layout, bl: &Layout, seed: u64, what: &str) {
    let host = |v: &[f64]| match dtype {
        DType::F16 => HostData::F16(v.iter().map(|&x| half::f16::from_f64(x)).collect()),
        _ => HostData::F32(v.iter().map(|&x| x as f32).collect()),
    };
    let (da, db) = (host(&values(al.storage_extent(), seed)), host(&values(bl.storage_extent(), seed + 1)));
    let (av, bv) = (da.to_f64_vec(), db.to_f64_vec());
    let a = GpuStorage::from_host(dev, &da).expect("upload a");
    let b = GpuStorage::from_host(dev, &db).expect("upload b");
    let (sa, sb) = (al.shape(), bl.shape());
    let (batch, m, k, n) = (sa[0], sa[1], sa[2], sb[2]);
    let got = a.matmul(al, &b, bl).unwrap_or_else(|e| panic!("{what}: {e}"));
    let got = got.to_host(&Layout::contiguous(&[batch, m, n])).expect("read").to_f64_vec();
    let at = |bi: usize, i: usize, kk: usize| {
        av[al.offset() + bi * al.strides()[0] + i * al.strides()[1] + kk * al.strides()[2]]
    };
    let bt = |bi: usize, kk: usize, j: usize| {
        bv[bl.offset() + bi * bl.strides()[0] + kk * bl.strides()[1] + j * bl.strides()[2]]
    };
    let tol = if dtype == DType::F16 { 2e-2 } else { 1e-4 } * (k as f64).sqrt().max(1.0);
    for bi in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|kk| at(bi, i, kk) * bt(bi, kk, j)).sum();
                let g = got[(bi * m + i) * n + j];
                assert!(
                    (g - want).abs() <= tol,
                    "{what} {dtype}: out[{bi},{i},{j}] = {g}, want {want} (tolerance {tol})"
                );
            }
        }
    }
}

/// Odd shapes with edge tiles in every direction, in each layout class: row-major, transposed,
/// broadcast batch, and an offset view with vec4-aligned strides.
fn all_layouts(dev: &GpuDevice, dtype: DType, what: &str) {
    for (s, &(batch, m, k, n)) in [(1, 37, 29, 45), (2, 70, 33, 131), (3, 129, 17, 65)].iter().enumerate() {
        let seed = 100 * s as u64;
        let (al, bl) = (Layout::contiguous(&[batch, m, k]), Layout::contiguous(&[batch, k, n]));
        check(dev, dtype, &al, &bl, seed, what);
        let at = Layout::contiguous(&[batch, k, m]).permute(&[0, 2, 1]);
        let bt = Layout::contiguous(&[batch, n, k]).permute(&[0, 2, 1]);
        check(dev, dtype, &at, &bt, seed + 2, &format!("{what} transposed"));
        let b1 = Layout::contiguous(&[1, k, n]).broadcast_to(&[batch, k, n]);
        check(dev, dtype, &al, &b1, seed + 4, &format!("{what} broadcast"));
        let pad = |x: usize| x.next_multiple_of(4) + 4;
        let av = Layout::contiguous(&[batch, k, pad(m)]).narrow(2, 4, m).permute(&[0, 2, 1]);
        let bv = Layout::contiguous(&[batch, k, pad(n)]).narrow(2, 4, n);
        check(dev, dtype, &av, &bv, seed + 6, &format!("{what} aligned views"));
    }
}

#[test]
fn every_candidate_matches_the_reference() {
    // Profiled (counts) so that the kernels each candidate built can be seen.
    let options = ContextOptions { profile: kiln_wgpu::ProfileMode::Counts, ..ContextOptions::default() };
    let Some(dev) = common::gpu_with("every_candidate_matches_the_reference", &options) else { return };
    let count = dev.matmul_candidates();
    assert!(count >= 2, "the autotuner needs a choice");
    for i in 0..count {
        dev.force_matmul_candidate(Some(i));
        all_layouts(&dev, DType::F32, &format!("candidate {i}"));
        if dev.has_f16() && dev.coop.is_none() {
            all_layouts(&dev, DType::F16, &format!("candidate {i}"));
        }
    }
    dev.force_matmul_candidate(None);
    all_layouts(&dev, DType::F32, "size rule");
    let table = dev.profile_report();
    let tiles: std::collections::BTreeSet<&str> =
        table.lines().filter(|l| l.starts_with("matmul|")).filter_map(|l| l.split('|').nth(1)).collect();
    assert_eq!(tiles.len(), count, "each candidate should have run its own tile: {tiles:?}\n{table}");
}

#[test]
fn tuned_choices_persist_and_reload() {
    let test = "tuned_choices_persist_and_reload";
    let dir = common::temp_dir("autotune");
    let options = ContextOptions { cache_dir: Some(dir.clone()), autotune: Some(true), ..ContextOptions::default() };
    let Some(dev) = common::gpu_with(test, &options) else { return };
    assert!(dev.autotune_enabled());
    assert_eq!(dev.autotuned_classes(), 0);
    all_layouts(&dev, DType::F32, "tuned");
    let classes = dev.autotuned_classes();
    assert!(classes >= 3, "{classes} classes tuned");
    let file = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("matmul-tune-"))
        .expect("a tuning file");
    let text = std::fs::read_to_string(file.path()).expect("read");
    assert_eq!(text.lines().count(), classes, "{text}");
    drop(dev);
    // A new context starts from the file and tunes nothing new for the same shapes.
    let again = common::gpu_with(test, &options).expect("second context");
    assert_eq!(again.autotuned_classes(), classes);
    all_layouts(&again, DType::F32, "reloaded");
    assert_eq!(again.autotuned_classes(), classes);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn software_adapters_do_not_tune_by_default() {
    let Some(dev) = common::gpu_with("software_adapters_do_not_tune_by_default", &ContextOptions::default()) else {
        return;
    };
    assert_eq!(dev.autotune_enabled(), !dev.summary.software);
    let off = ContextOptions { autotune: Some(false), ..ContextOptions::default() };
    let dev = common::gpu_with("software_adapters_do_not_tune_by_default", &off).expect("context");
    assert!(!dev.autotune_enabled());
    all_layouts(&dev, DType::F32, "untuned");
    assert_eq!(dev.autotuned_classes(), 0);
}

/// The kernel keys a profiled context ran.
fn kernels_run(dev: &GpuDevice) -> Vec<String> {
    dev.profile_report()
        .lines()
        .filter(|l| l.starts_with("matmul|"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_candidate_split_along_k_matches_the_reference() {
    // Three k ranges over k = 17..33 and 16-deep slabs: short last ranges and empty ones.
    let options = ContextOptions { profile: kiln_wgpu::ProfileMode::Counts, ..ContextOptions::default() };
    let Some(dev) = common::gpu_with("every_candidate_split_along_k_matches_the_reference", &options) else { return };
    dev.force_matmul_split(Some(3));
    for i in 0..dev.matmul_candidates() {
        dev.force_matmul_candidate(Some(i));
        all_layouts(&dev, DType::F32, &format!("candidate {i} split 3"));
        if dev.has_f16() && dev.coop.is_none() {
            all_layouts(&dev, DType::F16, &format!("candidate {i} split 3"));
        }
    }
    dev.force_matmul_candidate(None);
    dev.force_matmul_split(None);
    let run = kernels_run(&dev);
    let split = run.iter().filter(|k| k.ends_with("|split")).count();
    assert!(split >= dev.matmul_candidates(), "every tile should have run split: {run:?}");
    assert!(run.iter().any(|k| k.starts_with("matmul|splitk-sum|f32|v1")), "{run:?}");
    assert!(run.iter().any(|k| k.starts_with("matmul|splitk-sum|f32|v4")), "{run:?}");
    assert!(!run.iter().any(|k| k.contains("|i32|") || k.contains("|u32|")), "{run:?}");
}

/// A weight-gradient-like product: one 64×64 output tile, k = 1024.
fn long_k(dev: &GpuDevice, what: &str) {
    let (al, bl) = (Layout::contiguous(&[1, 1024, 64]).permute(&[0, 2, 1]), Layout::contiguous(&[1, 1024, 64]));
    check(dev, DType::F32, &al, &bl, 7, what);
}

#[test]
fn the_size_rule_splits_long_k_where_split_k_is_on() {
    let test = "the_size_rule_splits_long_k_where_split_k_is_on";
    let profiled = |split: Option<bool>| ContextOptions {
        profile: kiln_wgpu::ProfileMode::Counts,
        autotune: Some(false),
        matmul_splitk: split,
        ..ContextOptions::default()
    };
    let split_ran = |dev: &GpuDevice| kernels_run(dev).iter().any(|k| k.ends_with("|split"));
    let Some(on) = common::gpu_with(test, &profiled(Some(true))) else { return };
    long_k(&on, "split k on");
    assert!(split_ran(&on), "{}", on.profile_report());
    // Integers never split.
    let (al, bl) = (Layout::contiguous(&[1, 64, 1024]), Layout::contiguous(&[1, 1024, 64]));
    let data = GpuStorage::from_host(&on, &HostData::I32((0..65536).map(|i| i % 3 - 1).collect())).expect("upload");
    data.matmul(&al, &data, &bl).expect("i32 matmul");
    assert!(!kernels_run(&on).iter().any(|k| k.contains("|i32|") && k.ends_with("|split")));
    let off = common::gpu_with(test, &profiled(Some(false))).expect("context");
    long_k(&off, "split k off");
    assert!(!split_ran(&off), "{}", off.profile_report());
    // By default only hardware adapters split.
    let default = common::gpu_with(test, &profiled(None)).expect("context");
    long_k(&default, "split k by adapter kind");
    assert_eq!(split_ran(&default), !default.summary.software, "{}", default.profile_report());
}

#[test]
fn split_choices_persist_and_damaged_ones_are_tuned_again() {
    let test = "split_choices_persist_and_damaged_ones_are_tuned_again";
    let dir = common::temp_dir("autotune-split");
    let options = ContextOptions {
        cache_dir: Some(dir.clone()),
        autotune: Some(true),
        matmul_splitk: Some(true),
        ..ContextOptions::default()
    };
    let Some(dev) = common::gpu_with(test, &options) else { return };
    long_k(&dev, "tuned with split candidates");
    assert_eq!(dev.autotuned_classes(), 1);
    drop(dev);
    let file = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("matmul-tune-"))
        .expect("a tuning file")
        .path();
    let text = std::fs::read_to_string(&file).expect("read");
    let (class, choice) = text.trim().rsplit_once(' ').expect("one line");
    assert!(class.ends_with("|sk"), "split candidates should mark the class: {text}");
    assert!(choice.contains('x'), "{text}");
    // Reloaded: the stored choice (whole or split) is reused, nothing is tuned again.
    let again = common::gpu_with(test, &options).expect("second context");
    long_k(&again, "reloaded");
    assert_eq!(again.autotuned_classes(), 1);
    drop(again);
    // A choice this build cannot read is tuned again, never trusted or fatal.
    for bad in ["64x64x16/4x4/s", "64x64x16/4x4/s0", "12x12x12/4x4/s3", "junk"] {
        std::fs::write(&file, format!("{class} {bad}\n")).expect("write");
        let dev = common::gpu_with(test, &options).expect("context");
        long_k(&dev, &format!("after a stored {bad:?}"));
        drop(dev);
        let text = std::fs::read_to_string(&file).expect("read");
        let (_, choice) = text.trim().rsplit_once(' ').expect("one line");
        assert_ne!(choice, bad, "{text}");
    }
    // A readable split count the shape cannot use well still runs correctly.
    std::fs::write(&file, format!("{class} 64x64x16/4x4/s200\n")).expect("write");
    let dev = common::gpu_with(test, &options).expect("context");
    long_k(&dev, "stored s200");
    let _ = std::fs::remove_dir_all(&dir);
}
