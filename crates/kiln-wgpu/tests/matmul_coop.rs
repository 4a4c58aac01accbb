//! The cooperative-matrix (tensor-core) f16 matmul: its sources compile with naga to SPIR-V
//! without an adapter; on adapters without cooperative matrices (lavapipe) f16 matmuls of every
//! shape it would take still run, on the tiled kernel; on one with them (run the ignored test
//! there) it matches the CPU backend in f64.

mod common;

use kiln_backend::{BackendStorage, DType, HostData, Layout};
use kiln_cpu::{CpuDevice, CpuStorage};
use kiln_testkit::Rng;
use kiln_wgpu::{GpuDevice, GpuStorage};

#[test]
fn cooperative_sources_compile_to_spirv() {
    let coop: Vec<_> =
        kiln_wgpu::shaders::all_specialisations().into_iter().filter(|(key, _)| key.contains("|coop|")).collect();
    assert!(coop.len() >= 2, "no cooperative specialisations listed");
    for (key, src) in &coop {
        let module = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{key}: {}", e.emit_to_string(src)));
        let mut validator =
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
        let info = validator.validate(&module).unwrap_or_else(|e| panic!("{key}: {}", e.emit_to_string(src)));
        // naga's SPIR-V writer has panicked on cooperative stores the validator accepts.
        let spv = naga::back::spv::write_vec(&module, &info, &Default::default(), None)
            .unwrap_or_else(|e| panic!("{key}: spir-v: {e}"));
        assert!(!spv.is_empty());
    }
}

/// `a · b` for `[batch, m, k] · [batch, k, n]` f16 operands with the given layouts, checked
/// against f64; returns the largest error relative to sqrt(k).
fn check(dev: &GpuDevice, al: &Layout, bl: &Layout, seed: u64) -> f64 {
    let mut rng = Rng::new(seed);
    let mut upload = |len: usize| {
        let data = HostData::F16((0..len).map(|_| half::f16::from_f64(rng.uniform())).collect());
        let exact = data.to_f64_vec();
        (GpuStorage::from_host(dev, &data).expect("upload"), exact)
    };
    let (a, av) = upload(al.storage_extent());
    let (b, bv) = upload(bl.storage_extent());
    let out = a.matmul(al, &b, bl).unwrap_or_else(|e| panic!("{al:?} · {bl:?}: {e}"));
    assert_eq!(out.dtype(), DType::F16);
    let (sa, sb) = (al.shape(), bl.shape());
    let (batch, m, k, n) = (sa[0], sa[1], sa[2], sb[2]);
    let got = out.to_host(&Layout::contiguous(&[batch, m, n])).expect("readback").to_f64_vec();
    // The oracle: the CPU backend's matmul in f64 on the values the GPU holds.
    let cpu = |v: &[f64]| CpuStorage::from_host(&CpuDevice, &HostData::F64(v.to_vec())).expect("cpu upload");
    let want = cpu(&av).matmul(al, &cpu(&bv), bl).expect("cpu matmul");
    let want = want.to_host(&Layout::contiguous(&[batch, m, n])).expect("cpu read").to_f64_vec();
    let mut worst = 0f64;
    for (idx, (&g, &w)) in got.iter().zip(&want).enumerate() {
        // f32 accumulation, then one f16 rounding of a value about sqrt(k) in size.
        let err = (g - w).abs() / (k as f64).sqrt();
        let (bi, i, j) = (idx / (m * n), idx / n % m, idx % n);
        assert!(err < 4e-3, "{al:?} · {bl:?} at [{bi}, {i}, {j}]: got {g}, want {w}");
        worst = worst.max(err);
    }
    worst
}

/// Shapes on both sides of every routing condition: multiples of 16 and 128, ragged m, k and
/// n still multiples of 4, odd n (tiled only), transposed operands, a batch with an offset.
fn layouts() -> Vec<(Layout, Layout)> {
    let pair =
        |b: usize, m: usize, k: usize, n: usize| (Layout::contiguous(&[b, m, k]), Layout::contiguous(&[b, k, n]));
    let mut v = vec![pair(1, 64, 64, 64), pair(1, 130, 36, 100), pair(2, 48, 100, 20), pair(1, 33, 32, 17)];
    // a transposed: [1, k, m] viewed as [1, m, k].
    v.push((Layout::contiguous(&[1, 32, 48]).permute(&[0, 2, 1]), Layout::contiguous(&[1, 32, 64])));
    // An offset of 8 halves and a batch stride past the rows.
    let a = Layout::contiguous(&[3, 40, 24]).narrow(0, 1, 2);
    v.push((a, Layout::contiguous(&[2, 24, 40])));
    // Transposed operands, as backward's `g · bᵀ` and `aᵀ · g` pass them: b alone (ragged m,
    // n), both, and a alone with a batch.
    let t = |b: usize, rows: usize, cols: usize| Layout::contiguous(&[b, cols, rows]).permute(&[0, 2, 1]);
    v.push((Layout::contiguous(&[1, 36, 52]), t(1, 52, 20)));
    v.push((t(1, 64, 40), t(1, 40, 100)));
    v.push((t(2, 20, 48), Layout::contiguous(&[2, 48, 33])));
    v
}

#[test]
fn f16_matmul_routes_and_matches() {
    let Some(dev) = common::gpu("f16_matmul_routes_and_matches") else {
        return;
    };
    if !dev.has_f16() {
        eprintln!("SKIPPED f16_matmul_routes_and_matches: no SHADER_F16");
        return;
    }
    for (seed, (al, bl)) in layouts().iter().enumerate() {
        check(&dev, al, bl, seed as u64);
    }
}

/// On an adapter with cooperative matrices (an NVIDIA GPU through Vulkan): the tensor-core path
/// at the sizes that take each block size, plus the edge shapes. `KILN_COOP=0` runs the same on
/// the tiled kernel. Skipped (loudly) without cooperative matrices unless `KILN_REQUIRE_COOP=1`.
#[test]
fn cooperative_matches_reference_on_gpu() {
    let Some(dev) = common::coop_gpu("cooperative_matches_reference_on_gpu") else {
        return;
    };
    eprintln!("adapter {} coop {:?}", dev.summary, dev.coop);
    let mut all = layouts();
    for n in [256, 1024] {
        all.push((Layout::contiguous(&[1, n, n]), Layout::contiguous(&[1, n, n])));
    }
    // Transposed operands in 128×128 blocks (8 × 16 blocks reach the LARGE threshold).
    let t = |rows: usize, cols: usize| Layout::contiguous(&[8, cols, rows]).permute(&[0, 2, 1]);
    let c = |rows: usize, cols: usize| Layout::contiguous(&[8, rows, cols]);
    all.push((t(512, 256), c(256, 512)));
    all.push((c(512, 256), t(256, 512)));
    all.push((t(512, 256), t(256, 512)));
    // 16 × 2 × 4 blocks of 128×256: the HUGE block's threshold.
    all.push((Layout::contiguous(&[16, 512, 128]), Layout::contiguous(&[16, 128, 1024])));
    // Split k (few blocks, long k): a W6-like weight gradient xᵀ·g, ragged k, a batch, bᵀ.
    let t1 = |b: usize, rows: usize, cols: usize| Layout::contiguous(&[b, cols, rows]).permute(&[0, 2, 1]);
    let c1 = |b: usize, rows: usize, cols: usize| Layout::contiguous(&[b, rows, cols]);
    all.push((t1(1, 256, 4096), c1(1, 4096, 256)));
    all.push((c1(1, 64, 2048), c1(1, 2048, 64)));
    all.push((c1(1, 48, 1000), c1(1, 1000, 36)));
    all.push((c1(2, 40, 768), t1(2, 768, 36)));
    for (seed, (al, bl)) in all.iter().enumerate() {
        let worst = check(&dev, al, bl, seed as u64);
        eprintln!("{:?} · {:?}: max error / sqrt(k) {worst:.3e}", al.shape(), bl.shape());
    }
}

/// Every block the cooperative autotuner can pick, forced in turn on a context of its own
/// (profiled, to see that each ran): the edge shapes, every operand order in blocks big enough
/// to fill, a batch, and split k. Skipped like the test above without cooperative matrices.
#[test]
fn every_cooperative_candidate_matches_reference_on_gpu() {
    let test = "every_cooperative_candidate_matches_reference_on_gpu";
    if common::coop_gpu(test).is_none() {
        return;
    }
    let options = kiln_wgpu::ContextOptions { profile: kiln_wgpu::ProfileMode::Counts, ..Default::default() };
    let dev = common::gpu_with(test, &options).expect("a second context on the same adapter");
    let t = |b: usize, rows: usize, cols: usize| Layout::contiguous(&[b, cols, rows]).permute(&[0, 2, 1]);
    let c = |b: usize, rows: usize, cols: usize| Layout::contiguous(&[b, rows, cols]);
    let mut all = layouts();
    // Each operand order over several blocks of the largest candidates, ragged edges, a k that
    // is an odd number of 16- and 32-deep slabs (double-buffered blocks stage a zero slab last).
    all.push((c(1, 300, 208), c(1, 208, 520)));
    all.push((t(2, 264, 176), c(2, 176, 260)));
    all.push((c(1, 260, 112), t(1, 112, 516)));
    all.push((t(1, 516, 80), t(1, 80, 264)));
    // Split k: a weight gradient xᵀ·g, and ragged k.
    all.push((t(1, 128, 2048), c(1, 2048, 192)));
    all.push((c(1, 48, 1000), c(1, 1000, 36)));
    for i in 0..dev.coop_candidates() {
        dev.force_coop_candidate(Some(i));
        for (seed, (al, bl)) in all.iter().enumerate() {
            check(&dev, al, bl, 1000 * i as u64 + seed as u64);
        }
    }
    dev.force_coop_candidate(None);
    let blocks: std::collections::BTreeSet<String> = dev
        .profile_counts()
        .into_iter()
        .filter_map(|(name, _)| name.strip_prefix("matmul|coop|").and_then(|r| r.split('|').next()).map(str::to_string))
        .filter(|b| b.contains('x'))
        .collect();
    assert_eq!(blocks.len(), dev.coop_candidates(), "each candidate should have run its own block: {blocks:?}");
}
