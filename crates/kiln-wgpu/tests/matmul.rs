//! Batched strided matmul on the GPU against the CPU backend in f64: odd shapes, both kernels
//! (tiled and matrix-vector), transposed, broadcast and offset operands, every numeric dtype.

mod common;

use kiln_backend::{BackendStorage, DType, Error, HostData, Layout};
use kiln_cpu::{CpuDevice, CpuStorage};
use kiln_testkit::Rng;
use kiln_wgpu::{GpuDevice, GpuStorage};

fn host(dtype: DType, v: &[f64]) -> HostData {
    match dtype {
        DType::F32 => HostData::F32(v.iter().map(|&x| x as f32).collect()),
        DType::F16 => HostData::F16(v.iter().map(|&x| half::f16::from_f64(x)).collect()),
        // Integers in [-8, 8): products and sums stay exact so the reference can be compared as is.
        DType::I32 => HostData::I32(v.iter().map(|&x| (x * 8.0).floor() as i32).collect()),
        DType::U32 => HostData::U32(v.iter().map(|&x| ((x + 1.0) * 4.0) as u32).collect()),
        _ => unreachable!("no {dtype} in these tests"),
    }
}

/// `out[b, i, j] = Σ_k a[b, i, k] · b[b, k, j]` read through both layouts: the CPU backend's
/// matmul (the oracle) in f64 on the values the GPU holds.
fn reference(a: &[f64], al: &Layout, b: &[f64], bl: &Layout) -> Vec<f64> {
    let cpu = |v: &[f64]| CpuStorage::from_host(&CpuDevice, &HostData::F64(v.to_vec())).expect("cpu upload");
    let out = cpu(a).matmul(al, &cpu(b), bl).expect("cpu matmul");
    let shape = [al.shape()[0], al.shape()[1], bl.shape()[2]];
    out.to_host(&Layout::contiguous(&shape)).expect("cpu read").to_f64_vec()
}

/// Storage of `len` random values, returned with those values as the GPU holds them.
fn upload(dev: &GpuDevice, dtype: DType, len: usize, rng: &mut Rng) -> (GpuStorage, Vec<f64>) {
    let data = host(dtype, &rng.vec(len));
    let exact = data.to_f64_vec();
    (GpuStorage::from_host(dev, &data).expect("upload"), exact)
}

/// Runs `al · bl` over fresh random buffers big enough for both layouts and checks every output.
fn check(dev: &GpuDevice, dtype: DType, al: &Layout, bl: &Layout, seed: u64) {
    let mut rng = Rng::new(seed);
    let (a, av) = upload(dev, dtype, al.storage_extent().max(1), &mut rng);
    let (b, bv) = upload(dev, dtype, bl.storage_extent().max(1), &mut rng);
    let out = a.matmul(al, &b, bl).unwrap_or_else(|e| panic!("{dtype} {al:?} · {bl:?}: {e}"));
    assert_eq!(out.dtype(), dtype);
    let (sa, sb) = (al.shape(), bl.shape());
    let shape = [sa[0], sa[1], sb[2]];
    let got = out.to_host(&Layout::contiguous(&shape)).expect("readback");
    assert_eq!(got.dtype(), dtype);
    let got = got.to_f64_vec();
    let want = reference(&av, al, &bv, bl);
    assert_eq!(got.len(), want.len(), "{dtype} {al:?} · {bl:?}");
    // Values are sums of k products of magnitude < 1: about sqrt(k) in size.
    let scale = (sa[2] as f64).sqrt().max(1.0);
    let tol = match dtype {
        DType::F32 => 1e-4 * scale,
        DType::F16 => 2e-3 * scale + 1e-3 * want.iter().fold(0.0f64, |m, x| m.max(x.abs())),
        _ => 0.0,
    };
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let err = (g - w).abs();
        assert!(err <= tol, "{dtype} {al:?} · {bl:?}: out[{i}] = {g}, want {w} (tolerance {tol})");
    }
}

/// Row-major `[batch, m, k]` and `[batch, k, n]`.
fn plain(batch: usize, m: usize, k: usize, n: usize) -> (Layout, Layout) {
    (Layout::contiguous(&[batch, m, k]), Layout::contiguous(&[batch, k, n]))
}

/// `[batch, rows, cols]` as the transpose of a row-major `[batch, cols, rows]`.
fn transposed(batch: usize, rows: usize, cols: usize) -> Layout {
    Layout::contiguous(&[batch, cols, rows]).permute(&[0, 2, 1])
}

/// (m, k, n): edge tiles everywhere, the matrix-vector kernel (m or n ≤ 4), long k, and
/// (250, 35, 255) in 128×128 tiles on CPU adapters.
const SHAPES: [(usize, usize, usize); 12] = [
    (1, 1, 1),
    (7, 13, 5),
    (65, 67, 63),
    (1, 512, 10),
    (10, 512, 1),
    (128, 1, 128),
    (3, 300, 70),
    (64, 64, 64),
    (130, 33, 129),
    (250, 35, 255),
    (1, 4097, 9),
    (33, 1023, 47),
];

#[test]
fn row_major_shapes_f32() {
    let Some(dev) = common::gpu("row_major_shapes_f32") else { return };
    for (s, &(m, k, n)) in SHAPES.iter().enumerate() {
        let (al, bl) = plain(1, m, k, n);
        check(&dev, DType::F32, &al, &bl, s as u64);
    }
}

#[test]
fn transposed_operands() {
    let Some(dev) = common::gpu("transposed_operands") else { return };
    for (s, &(m, k, n)) in SHAPES.iter().enumerate() {
        let (al, bl) = plain(2, m, k, n);
        let (at, bt) = (transposed(2, m, k), transposed(2, k, n));
        check(&dev, DType::F32, &at, &bl, 10 + s as u64);
        check(&dev, DType::F32, &al, &bt, 20 + s as u64);
        check(&dev, DType::F32, &at, &bt, 30 + s as u64);
    }
}

/// Views whose m (a) or n (b) dim has stride 1 and whose other strides are multiples of 4 take
/// vec4 fetches; their dims here are not multiples of 4, so edge quads fall back to elements.
#[test]
fn aligned_views_with_ragged_edges() {
    let Some(dev) = common::gpu("aligned_views_with_ragged_edges") else { return };
    for (s, &(m, k, n)) in [(70, 37, 67), (250, 37, 253)].iter().enumerate() {
        let s = 400 + 10 * s as u64;
        let pad = |x: usize| x.next_multiple_of(4) + 4;
        // a: [m, k] rows of pad(k); b: [k, n] rows of pad(n); offsets of 4 and 0.
        let al = Layout::contiguous(&[2, m + 1, pad(k)]).narrow(1, 1, m).narrow(2, 0, k);
        let bl = Layout::contiguous(&[2, k, pad(n)]).narrow(2, 4, n);
        check(&dev, DType::F32, &al, &bl, s);
        // Transposed: a m-contiguous, b k-contiguous.
        let at = Layout::contiguous(&[2, k, pad(m)]).narrow(2, 4, m).permute(&[0, 2, 1]);
        let bt = Layout::contiguous(&[2, n, pad(k)]).narrow(2, 0, k).permute(&[0, 2, 1]);
        check(&dev, DType::F32, &at, &bt, s + 1);
        check(&dev, DType::F32, &al, &bt, s + 2);
        check(&dev, DType::F32, &at, &bl, s + 3);
        if common::has_f16_else_refused(&dev) {
            check(&dev, DType::F16, &al, &bt, s + 4);
            check(&dev, DType::F16, &at, &bl, s + 5);
        }
        // Offset 1: same strides, but no longer 4-aligned.
        let am = Layout::contiguous(&[2, m + 1, pad(k)]).narrow(2, 1, k).narrow(1, 0, m);
        check(&dev, DType::F32, &am, &bt, s + 6);
    }
}

#[test]
fn k_zero_gives_zeros_and_empty_outputs_dispatch_nothing() {
    let Some(dev) = common::gpu("k_zero_gives_zeros_and_empty_outputs_dispatch_nothing") else { return };
    for (m, n) in [(5, 7), (1, 9), (70, 66)] {
        let (al, bl) = plain(2, m, 0, n);
        let a = GpuStorage::from_host(&dev, &HostData::F32(vec![])).expect("upload");
        let out = a.matmul(&al, &a, &bl).expect("k = 0");
        let got = out.to_host(&Layout::contiguous(&[2, m, n])).expect("read").to_f64_vec();
        assert_eq!(got, vec![0.0; 2 * m * n], "{m}x0x{n}");
    }
    let x = GpuStorage::from_host(&dev, &HostData::F32(vec![1.0; 64])).expect("upload");
    let before = dev.memory_stats();
    for (m, k, n) in [(0, 4, 5), (5, 4, 0), (0, 0, 0)] {
        let (al, bl) = plain(3, m, k, n);
        let out = x.matmul(&al, &x, &bl).expect("empty");
        assert_eq!(out.len(), 0);
        let (al, bl) = plain(0, 4, 4, 4);
        assert_eq!(x.matmul(&al, &x, &bl).expect("empty batch").len(), 0);
    }
    assert_eq!(dev.memory_stats().pipelines, before.pipelines, "an empty matmul built a kernel");
}

#[test]
fn broadcast_batch_and_offsets() {
    let Some(dev) = common::gpu("broadcast_batch_and_offsets") else { return };
    for (s, &(m, k, n)) in [(7, 13, 5), (65, 67, 63), (1, 40, 9), (9, 40, 1)].iter().enumerate() {
        let s = s as u64 * 100;
        // a shared by all three batch entries (stride 0), b per entry; and the other way round.
        let a1 = Layout::contiguous(&[1, m, k]).broadcast_to(&[3, m, k]);
        let b1 = Layout::contiguous(&[1, k, n]).broadcast_to(&[3, k, n]);
        let (al, bl) = plain(3, m, k, n);
        check(&dev, DType::F32, &a1, &bl, s + 1);
        check(&dev, DType::F32, &al, &b1, s + 2);
        check(&dev, DType::F32, &transposed(1, m, k).broadcast_to(&[3, m, k]), &transposed(3, k, n), s + 3);
        // Narrowed views: offsets > 0 and row strides wider than the rows.
        let an = Layout::contiguous(&[4, m + 3, k + 5]).narrow(0, 1, 3).narrow(1, 2, m).narrow(2, 3, k);
        let bn = Layout::contiguous(&[3, k + 2, n + 7]).narrow(1, 1, k).narrow(2, 6, n);
        check(&dev, DType::F32, &an, &bn, s + 4);
        // A transposed narrow view, and a stepped one (neither stride 1).
        let at = Layout::contiguous(&[3, k + 4, m + 1]).narrow(1, 4, k).narrow(2, 1, m).permute(&[0, 2, 1]);
        let bs = Layout::contiguous(&[3, 2 * k, n + 1]).step(1, 1, k, 2).narrow(2, 1, n);
        check(&dev, DType::F32, &at, &bs, s + 5);
    }
}

/// Every candidate tile the autotuner may pick, forced in turn (on a context of its own: forcing
/// is context-wide), on products spanning several of the largest tiles (256 wide) with ragged
/// edges, and k an odd and an even number of 8- and 16-deep slabs (double-buffered tiles run
/// two slabs per iteration): row-major, transposed, broadcast-batch and offset operands. The
/// third shape has 9 rows of 128-row tiles: a full group of 8 and a short one in grouped tiles.
#[test]
fn every_candidate_over_several_tiles() {
    let test = "every_candidate_over_several_tiles";
    let Some(dev) = common::gpu_with(test, &kiln_wgpu::ContextOptions::default()) else { return };
    for i in 0..dev.matmul_candidates() {
        dev.force_matmul_candidate(Some(i));
        for (s, &(m, k, n)) in [(300, 75, 520), (520, 48, 263), (1100, 21, 140)].iter().enumerate() {
            let seed = 1000 + 100 * i as u64 + 10 * s as u64;
            let (al, bl) = plain(1, m, k, n);
            check(&dev, DType::F32, &al, &bl, seed);
            // W10's forward x·Wᵀ (b transposed) and weight gradient xᵀ·g (a transposed).
            check(&dev, DType::F32, &al, &transposed(1, k, n), seed + 1);
            check(&dev, DType::F32, &transposed(1, m, k), &bl, seed + 2);
            // b shared by a batch of 2; narrowed a with an offset and padded rows.
            let b1 = Layout::contiguous(&[1, k, n]).broadcast_to(&[2, k, n]);
            let an = Layout::contiguous(&[3, m + 3, k + 5]).narrow(0, 1, 2).narrow(1, 2, m).narrow(2, 3, k);
            check(&dev, DType::F32, &an, &b1, seed + 3);
        }
    }
    dev.force_matmul_candidate(None);
}

#[test]
fn f16_storage_with_f32_accumulation() {
    let Some(dev) = common::gpu("f16_storage_with_f32_accumulation") else { return };
    if !common::has_f16_else_refused(&dev) {
        eprintln!("SKIPPED f16_storage_with_f32_accumulation: adapter lacks SHADER_F16");
        return;
    }
    for (s, &(m, k, n)) in [(1, 1, 1), (7, 13, 5), (65, 67, 63), (1, 512, 10), (128, 1, 128)].iter().enumerate() {
        let (al, bl) = plain(2, m, k, n);
        check(&dev, DType::F16, &al, &bl, 200 + s as u64);
        check(&dev, DType::F16, &transposed(2, m, k), &transposed(2, k, n), 210 + s as u64);
    }
    // k = 1000 of f16 inputs: an f16 accumulator would drift well past the tolerance.
    let (al, bl) = plain(1, 33, 1000, 35);
    check(&dev, DType::F16, &al, &bl, 220);
}

#[test]
fn integers_wrap() {
    let Some(dev) = common::gpu("integers_wrap") else { return };
    for (s, &(m, k, n)) in [(1, 1, 1), (7, 13, 5), (65, 67, 63), (1, 512, 10), (128, 1, 128)].iter().enumerate() {
        let (al, bl) = plain(2, m, k, n);
        check(&dev, DType::I32, &al, &bl, 300 + s as u64);
        check(&dev, DType::I32, &transposed(2, m, k), &bl, 310 + s as u64);
        check(&dev, DType::U32, &al, &transposed(2, k, n), 320 + s as u64);
    }
    // 65536 · 65536 · 3 wraps to 0 in 32 bits; 46341² wraps past i32::MAX.
    let a = GpuStorage::from_host(&dev, &HostData::U32(vec![65536; 3])).expect("upload");
    let l = Layout::contiguous(&[1, 1, 3]);
    let out = a.matmul(&l, &a, &l.permute(&[0, 2, 1])).expect("u32");
    assert_eq!(out.to_host(&Layout::contiguous(&[1, 1, 1])).expect("read"), HostData::U32(vec![0]));
    let a = GpuStorage::from_host(&dev, &HostData::I32(vec![46341; 64 * 64])).expect("upload");
    let l = Layout::contiguous(&[1, 64, 64]);
    let out = a.matmul(&l, &a, &l).expect("i32");
    let want = (46341i32.wrapping_mul(46341)).wrapping_mul(64);
    assert_eq!(out.to_host(&l).expect("read"), HostData::I32(vec![want; 64 * 64]));
}

#[test]
fn mismatches_are_errors() {
    let Some(dev) = common::gpu("mismatches_are_errors") else { return };
    let x = GpuStorage::from_host(&dev, &HostData::F32(vec![1.0; 64])).expect("upload");
    let cases = [
        (Layout::contiguous(&[1, 2, 3]), Layout::contiguous(&[1, 4, 2])),
        (Layout::contiguous(&[2, 2, 3]), Layout::contiguous(&[3, 3, 2])),
        (Layout::contiguous(&[2, 3]), Layout::contiguous(&[3, 2])),
    ];
    for (al, bl) in cases {
        match x.matmul(&al, &x, &bl) {
            Err(e @ Error::ShapeMismatch { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("matmul"), "{msg}");
                assert!(
                    msg.contains(&format!("{:?}", al.shape())) && msg.contains(&format!("{:?}", bl.shape())),
                    "{msg}"
                );
            }
            other => panic!("{al:?} · {bl:?}: {:?}", other.map(|_| ())),
        }
    }
    let l = Layout::contiguous(&[1, 2, 2]);
    let flags = GpuStorage::from_host(&dev, &HostData::Bool(vec![true; 4])).expect("upload");
    assert!(matches!(
        flags.matmul(&l, &flags, &l),
        Err(Error::UnsupportedDType { op: "matmul", dtype: DType::Bool, .. })
    ));
    // A view reaching past its buffer is refused rather than read out of bounds.
    let big = Layout::contiguous(&[1, 10, 10]);
    assert!(matches!(x.matmul(&big, &x, &big), Err(Error::InvalidArgument { op: "matmul", .. })));
    let ints = GpuStorage::from_host(&dev, &HostData::I32(vec![1; 4])).expect("upload");
    assert!(matches!(x.matmul(&l, &ints, &l), Err(Error::DTypeMismatch { op: "matmul", .. })));
}

/// Ad-hoc timing, not an assertion: `cargo test -p kiln-wgpu --test matmul --release --
/// --ignored --nocapture bench_matmul`, or the test binary alone (`cargo test ... --release
/// --no-run` names it) with the same arguments. Environment:
/// - `KILN_MM_DTYPE`: `f32`, `f16` or `f32,f16` (default f32);
/// - `KILN_MM_SIZES`: square sizes, each in the layout classes of `KILN_MM_LAYOUTS` (default
///   `nn,tn,nt,tt`; `n` row-major, `t` transposed), default 512; `KILN_MM_SIZES=` (empty) none;
/// - `KILN_MM_W10=1`: also the W10 products (nanoGPT char model, 16384 tokens, d 384, MLP 1536):
///   forward `x·Wᵀ`, input gradients `g·W`, weight gradients `xᵀ·g`;
/// - `KILN_MM_TILE`: `rule` (default: the size rule alone), `all` (the size rule, the size rule
///   with naga's runtime checks, every candidate forced in turn, and the autotuner's choice),
///   or candidate indices `0,3,7`. f16 on an adapter with cooperative matrices forces the
///   cooperative candidates, otherwise the tiled ones. Each row names the kernel that ran.
/// - `KILN_MM_SECS`: GPU time per timed repeat (default 0.02; the best of 5 repeats counts).
#[test]
#[ignore]
fn bench_matmul() {
    let test = "bench_matmul";
    let counts = |autotune| kiln_wgpu::ContextOptions {
        profile: kiln_wgpu::ProfileMode::Counts,
        autotune: Some(autotune),
        ..kiln_wgpu::ContextOptions::default()
    };
    // The size rule and forced candidates on one context, the autotuner on another.
    let Some(dev) = common::gpu_with(test, &counts(false)) else { return };
    let tuned = common::gpu_with(test, &counts(true)).expect("a second context");
    println!("adapter: {} (cooperative matrices: {:?})", dev.summary, dev.coop);
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let secs_target: f64 = env("KILN_MM_SECS", "0.02").parse().expect("KILN_MM_SECS");
    let dtypes: Vec<DType> = env("KILN_MM_DTYPE", "f32")
        .split(',')
        .map(|d| match d.trim() {
            "f16" => DType::F16,
            "f32" => DType::F32,
            other => panic!("KILN_MM_DTYPE: {other:?} is neither f32 nor f16"),
        })
        .collect();
    let mut shapes: Vec<(usize, usize, usize, usize, String)> = Vec::new();
    let layouts = env("KILN_MM_LAYOUTS", "nn,tn,nt,tt");
    for size in env("KILN_MM_SIZES", "512").split(',').filter(|s| !s.trim().is_empty()) {
        let s: usize = size.trim().parse().expect("KILN_MM_SIZES");
        for class in layouts.split(',') {
            shapes.push((1, s, s, s, class.trim().to_string()));
        }
    }
    if env("KILN_MM_W10", "0") == "1" {
        let (tokens, d, mlp) = (16384, 384, 1536);
        for n in [d, 3 * d, mlp] {
            shapes.push((1, tokens, d, n, "nt".into()));
        }
        shapes.push((1, tokens, mlp, d, "nt".into()));
        for k in [d, 3 * d, mlp] {
            shapes.push((1, tokens, k, d, "nn".into()));
        }
        shapes.push((1, tokens, d, mlp, "nn".into()));
        for n in [d, 3 * d, mlp] {
            shapes.push((1, d, tokens, n, "tn".into()));
        }
        shapes.push((1, mlp, tokens, d, "tn".into()));
    }
    let tile = env("KILN_MM_TILE", "rule");
    for dtype in dtypes {
        let coop = dtype == DType::F16 && dev.coop.is_some() && std::env::var("KILN_COOP").map_or(true, |v| v != "0");
        let count = if coop { dev.coop_candidates() } else { dev.matmul_candidates() };
        let forced: Vec<usize> = match tile.as_str() {
            "rule" => vec![],
            "all" => (0..count).collect(),
            list => list.split(',').map(|i| i.trim().parse().expect("KILN_MM_TILE")).filter(|&i| i < count).collect(),
        };
        let force = |i: Option<usize>| if coop { dev.force_coop_candidate(i) } else { dev.force_matmul_candidate(i) };
        for (batch, m, k, n, class) in &shapes {
            let (batch, m, k, n) = (*batch, *m, *k, *n);
            let al = if class.starts_with('t') { transposed(batch, m, k) } else { Layout::contiguous(&[batch, m, k]) };
            let bl = if class.ends_with('t') { transposed(batch, k, n) } else { Layout::contiguous(&[batch, k, n]) };
            let flop = 2.0 * (batch * m * n * k) as f64;
            println!("{dtype} {batch}x{m}x{k}x{n} {class}:");
            let operands = |ctx: &GpuDevice| {
                let mut rng = Rng::from_state(7);
                (upload(ctx, dtype, batch * m * k, &mut rng).0, upload(ctx, dtype, batch * k * n, &mut rng).0)
            };
            let (on_dev, on_tuned) = (operands(&dev), if tile == "all" { Some(operands(&tuned)) } else { None });
            let mut rows: Vec<(String, f64)> = Vec::new();
            let mut time = |ctx: &GpuDevice, (a, b): &(GpuStorage, GpuStorage), label: String| {
                let (secs, kernels) = time_product(ctx, a, &al, b, &bl, secs_target);
                let tflops = flop / secs / 1e12;
                println!("  {label:<8} {tflops:8.3} TFLOP/s {:9.3} ms  {kernels}", secs * 1e3);
                rows.push((format!("{label} {kernels}"), tflops));
            };
            time(&dev, &on_dev, "rule".into());
            if tile == "all" {
                dev.force_matmul_checks(true);
                time(&dev, &on_dev, "checked".into());
                dev.force_matmul_checks(false);
            }
            for &i in &forced {
                force(Some(i));
                time(&dev, &on_dev, format!("#{i}"));
            }
            force(None);
            if let Some(operands) = &on_tuned {
                time(&tuned, operands, "auto".into());
            }
            let rule = rows[0].1;
            if let Some((best, tflops)) = rows.iter().max_by(|x, y| x.1.total_cmp(&y.1)) {
                println!("  best: {best}: {tflops:.2} TFLOP/s, {:.2}x the size rule", tflops / rule);
            }
        }
    }
    if tile == "all" {
        println!("autotuner choices:");
        for (class, choice) in tuned.autotuned_choices() {
            println!("  {class} {choice}");
        }
    }
}

/// Seconds per run of `a · b` (best of 5 repeats of enough runs to take about `target`
/// seconds), and the matmul kernels one run dispatched.
fn time_product(
    dev: &GpuDevice,
    a: &GpuStorage,
    al: &Layout,
    b: &GpuStorage,
    bl: &Layout,
    target: f64,
) -> (f64, String) {
    let one = Layout::contiguous(&[1]);
    let run = || a.matmul(al, b, bl).expect("matmul");
    // Warm-up (builds pipelines, tunes), then one run alone to see its kernels and its time.
    run().to_host(&one).expect("read");
    let before = dev.profile_counts();
    let start = std::time::Instant::now();
    run().to_host(&one).expect("read");
    let once = start.elapsed().as_secs_f64();
    let after = dev.profile_counts();
    let kernels: Vec<String> = after
        .iter()
        .filter(|(name, count)| {
            name.starts_with("matmul") && before.iter().find(|(b, _)| b == name).map_or(0, |b| b.1) < *count
        })
        .map(|(name, _)| name.clone())
        .collect();
    let reps = (target / once.max(1e-6)).ceil().clamp(1.0, 2000.0) as usize;
    let mut secs = f64::INFINITY;
    for _ in 0..5 {
        let start = std::time::Instant::now();
        let mut last = None;
        for _ in 0..reps {
            last = Some(run());
        }
        last.expect("ran").to_host(&one).expect("read");
        secs = secs.min(start.elapsed().as_secs_f64() / reps as f64);
    }
    (secs, kernels.join(" + "))
}
