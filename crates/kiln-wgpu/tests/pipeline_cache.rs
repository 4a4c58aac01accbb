//! The persistent pipeline cache: written where asked, loaded by the next context, and harmless
//! when the file is garbage or the directory cannot be written.

mod common;

use kiln_backend::{BackendStorage, HostData, Layout};
use kiln_wgpu::{ContextOptions, GpuDevice, GpuStorage};
use std::path::Path;

fn options(dir: &Path) -> ContextOptions {
    ContextOptions { cache_dir: Some(dir.to_path_buf()), ..ContextOptions::default() }
}

/// Builds a few pipelines (matmul, exp, sum) and checks their results.
fn work(dev: &GpuDevice) {
    let x = GpuStorage::from_host(dev, &HostData::F32((0..30).map(|i| i as f32 / 10.0).collect())).expect("upload");
    let (al, bl) = (Layout::contiguous(&[1, 5, 6]), Layout::contiguous(&[1, 6, 5]));
    let p =
        x.matmul(&al, &x, &bl).expect("matmul").to_host(&Layout::contiguous(&[1, 5, 5])).expect("read").to_f64_vec();
    let want: f64 = (0..6).map(|k| (k as f64 / 10.0) * (k as f64 * 5.0 / 10.0)).sum();
    assert!((p[0] - want).abs() < 1e-4, "matmul gave {}, want {want}", p[0]);
    let e = x.unary(&Layout::contiguous(&[30]), kiln_backend::UnaryOp::Exp).expect("exp");
    let e = e.to_host(&Layout::contiguous(&[30])).expect("read").to_f64_vec();
    assert!((e[10] - 1f64.exp()).abs() < 1e-5, "exp(1) = {}", e[10]);
    dev.check("work").expect("no wgpu error");
}

#[test]
fn second_context_loads_what_the_first_saved() {
    let test = "second_context_loads_what_the_first_saved";
    let dir = common::temp_dir("pc-roundtrip");
    let Some(first) = common::gpu_with(test, &options(&dir)) else { return };
    let has = first.features.contains(wgpu::Features::PIPELINE_CACHE);
    let path = first.pipeline_cache_path();
    assert_eq!(path.is_some(), has, "a cache exactly where the adapter has PIPELINE_CACHE ({path:?})");
    let Some(path) = path else {
        eprintln!("SKIPPED {test}: this adapter has no PIPELINE_CACHE (checked above that none is made)");
        return;
    };
    assert!(path.starts_with(&dir));
    assert!(!first.pipeline_cache_loaded(), "a fresh directory has nothing to load");
    work(&first);
    first.save_pipeline_cache();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(size > 16, "{path:?} holds {size} bytes after saving");
    let second = common::gpu_with(test, &options(&dir)).expect("a second context");
    assert!(second.pipeline_cache_loaded(), "the second context ignored {path:?}");
    work(&second);
    // No stray temp files: saving renames into place. (Hardware adapters also keep their
    // matmul autotuning choices here, in a file of their own.)
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("matmul-tune-"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    drop(first);
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn garbage_cache_files_are_ignored() {
    let test = "garbage_cache_files_are_ignored";
    let dir = common::temp_dir("pc-garbage");
    let Some(probe) = common::gpu_with(test, &options(&dir)) else { return };
    let Some(path) = probe.pipeline_cache_path() else {
        eprintln!("SKIPPED {test}: this adapter has no PIPELINE_CACHE");
        return;
    };
    drop(probe);
    let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let frame = |payload: &[u8]| {
        let mut f = b"KILNPC01".to_vec();
        f.extend_from_slice(&fnv1a(payload).to_le_bytes());
        f.extend_from_slice(payload);
        f
    };
    let wgpu_like = [b"WGPUPLCH".as_slice(), &junk].concat();
    // Plain junk, a truncated frame, a frame whose checksum fails, and junk in a valid frame:
    // Kiln refuses all of these itself.
    let mut bad_sum = frame(&wgpu_like);
    bad_sum[20] ^= 1;
    for bytes in [junk.clone(), b"KILNPC01\x01\x02".to_vec(), bad_sum, frame(&junk)] {
        std::fs::write(&path, &bytes).expect("writing garbage");
        let dev = common::gpu_with(test, &options(&dir)).expect("a context despite a garbage cache");
        assert!(!dev.pipeline_cache_loaded());
        work(&dev);
    }
    // wgpu's magic followed by junk, intact frame: wgpu's header check must refuse it quietly.
    std::fs::write(&path, frame(&wgpu_like)).expect("writing garbage");
    let dev = common::gpu_with(test, &options(&dir)).expect("a context despite a garbage cache");
    work(&dev);
    dev.save_pipeline_cache();
    drop(dev);
    // The last context replaced the garbage with a real cache.
    let dev = common::gpu_with(test, &options(&dir)).expect("context");
    assert!(dev.pipeline_cache_loaded());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unwritable_cache_dir_means_no_persistence() {
    let test = "unwritable_cache_dir_means_no_persistence";
    let dir = common::temp_dir("pc-unwritable");
    // A directory "inside" a regular file can never be created.
    let file = dir.join("not-a-dir");
    std::fs::write(&file, b"x").expect("file");
    let Some(dev) = common::gpu_with(test, &options(&file.join("cache"))) else { return };
    assert_eq!(dev.pipeline_cache_path(), None);
    work(&dev);
    dev.save_pipeline_cache();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The frame's checksum, as pipeline_cache.rs computes it (FNV-1a, 64-bit).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}
