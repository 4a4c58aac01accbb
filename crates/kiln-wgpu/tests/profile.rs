//! KILN_PROFILE: the per-kernel table in each timing mode (inside-pass timestamps, one pass per
//! dispatch, counts only), its format and order, and that profiling leaves results unchanged.

mod common;

use kiln_backend::{BackendStorage, DType, HostData, Layout};
use kiln_wgpu::{ContextOptions, GpuDevice, GpuStorage, ProfileMode};

/// Autotuning off: on hardware adapters it times extra matmul dispatches, which the tables
/// would count.
fn options(profile: ProfileMode) -> ContextOptions {
    ContextOptions { profile, autotune: Some(false), ..ContextOptions::default() }
}

/// Three 37×29 · 29×45 matmuls and two 200-row sums; checks the first product on the host.
fn work(dev: &GpuDevice) {
    let (m, k, n) = (37usize, 29usize, 45usize);
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
    let ga = GpuStorage::from_host(dev, &HostData::F32(a.clone())).expect("upload a");
    let gb = GpuStorage::from_host(dev, &HostData::F32(b.clone())).expect("upload b");
    let (al, bl) = (Layout::contiguous(&[1, m, k]), Layout::contiguous(&[1, k, n]));
    let mut first = None;
    for _ in 0..3 {
        let out = ga.matmul(&al, &gb, &bl).expect("matmul");
        first.get_or_insert(out);
    }
    let got = first.expect("ran").to_host(&Layout::contiguous(&[1, m, n])).expect("read").to_f64_vec();
    for i in 0..m {
        for j in 0..n {
            let want: f64 = (0..k).map(|kk| a[i * k + kk] as f64 * b[kk * n + j] as f64).sum();
            assert!(
                (got[i * n + j] - want).abs() < 1e-4,
                "profiled matmul out[{i},{j}] = {}, want {want}",
                got[i * n + j]
            );
        }
    }
    let x = GpuStorage::from_host(dev, &HostData::F32(vec![1.0; 200 * 3])).expect("upload x");
    for _ in 0..2 {
        let s = x.reduce(&Layout::contiguous(&[3, 200]), kiln_backend::ReduceOp::Sum, 1).expect("sum");
        let v = s.to_host(&Layout::contiguous(&[3])).expect("read sum").to_f64_vec();
        assert_eq!(v, vec![200.0; 3]);
    }
    assert_eq!(ga.dtype(), DType::F32);
}

/// The table's data rows: (name, count, total ms or None).
fn rows(table: &str) -> Vec<(String, u64, Option<f64>)> {
    table
        .lines()
        .skip(3)
        .filter(|l| !l.starts_with("total"))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert!(cols.len() >= 5, "malformed row {l:?} in\n{table}");
            let name = cols[..cols.len() - 4].join(" ");
            let count = cols[cols.len() - 4].parse().unwrap_or_else(|_| panic!("count in {l:?}"));
            (name, count, cols[cols.len() - 3].parse().ok())
        })
        .collect()
}

fn matmul_count(rows: &[(String, u64, Option<f64>)]) -> u64 {
    rows.iter().filter(|r| r.0.starts_with("matmul|")).map(|r| r.1).sum()
}

fn check_timed(test: &str, mode: ProfileMode, how: &str) {
    let Some(dev) = common::gpu_with(test, &options(mode)) else { return };
    work(&dev);
    let table = dev.profile_report();
    eprintln!("{table}");
    if !dev.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
        assert!(table.contains("counts only"), "{table}");
        return;
    }
    assert!(table.lines().nth(1).is_some_and(|l| l.contains(how)), "expected {how:?} in\n{table}");
    assert!(table.lines().nth(2).is_some_and(|l| l.starts_with("kernel") && l.contains("share")), "{table}");
    let rows = rows(&table);
    assert_eq!(matmul_count(&rows), 3, "{table}");
    assert!(rows.iter().any(|r| r.0.starts_with("reduce") && r.1 >= 2), "{table}");
    let totals: Vec<f64> = rows.iter().map(|r| r.2.expect("a timed row has a total")).collect();
    assert!(totals.windows(2).all(|w| w[0] >= w[1]), "rows not sorted by total time:\n{table}");
    assert!(totals.iter().sum::<f64>() > 0.0, "no GPU time measured:\n{table}");
    let shares: f64 = table
        .lines()
        .skip(3)
        .filter_map(|l| l.trim_end().strip_suffix('%')?.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!((shares - 100.0).abs() < 1.0, "shares add up to {shares}:\n{table}");
    // A second report adds what ran since.
    work(&dev);
    assert_eq!(matmul_count(&self::rows(&dev.profile_report())), 6);
}

#[test]
fn timestamps_inside_the_shared_pass() {
    let test = "timestamps_inside_the_shared_pass";
    let Some(probe) = common::gpu(test) else { return };
    let how = if probe.features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES) {
        "inside the shared pass"
    } else {
        "one compute pass per dispatch"
    };
    check_timed(test, ProfileMode::Timestamps, how);
}

#[test]
fn timestamps_with_a_pass_per_dispatch() {
    check_timed("timestamps_with_a_pass_per_dispatch", ProfileMode::PassTimestamps, "one compute pass per dispatch");
}

#[test]
fn counts_only_fallback() {
    let Some(dev) = common::gpu_with("counts_only_fallback", &options(ProfileMode::Counts)) else { return };
    work(&dev);
    let table = dev.profile_report();
    assert!(table.starts_with("kiln profile: "), "{table}");
    assert!(table.contains("counts only"), "{table}");
    let rows = rows(&table);
    assert_eq!(matmul_count(&rows), 3, "{table}");
    assert!(rows.iter().all(|r| r.2.is_none()), "counts-only rows show no time:\n{table}");
    let counts: Vec<u64> = rows.iter().map(|r| r.1).collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "rows not sorted by count:\n{table}");
    let total: u64 = table
        .lines()
        .find(|l| l.starts_with("total"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .expect("total line");
    assert_eq!(total, counts.iter().sum::<u64>(), "{table}");
}

#[test]
fn off_by_default() {
    let Some(dev) = common::gpu_with("off_by_default", &options(ProfileMode::Off)) else { return };
    work(&dev);
    let table = dev.profile_report();
    assert!(table.contains("off (set KILN_PROFILE=1"), "{table}");
    assert!(kiln_wgpu::profile_report_all().contains("kiln profile"));
}

#[test]
fn long_keys_are_shortened() {
    let Some(dev) = common::gpu_with("long_keys_are_shortened", &options(ProfileMode::Counts)) else { return };
    // Strided elementwise kernels have the longest keys.
    let x = GpuStorage::from_host(&dev, &HostData::F32((0..60).map(|i| i as f32).collect())).expect("upload");
    let t = Layout::contiguous(&[6, 10]).permute(&[1, 0]);
    let y = x.unary(&t, kiln_backend::UnaryOp::Exp).expect("exp");
    y.to_host(&Layout::contiguous(&[10, 6])).expect("read");
    let table = dev.profile_report();
    for l in table.lines().skip(2) {
        let name = l.split_whitespace().next().unwrap_or("");
        assert!(name.chars().count() <= 60, "{name:?} is too long:\n{table}");
    }
}
