//! Batched strided matmul on the GPU against a naive f64 reference: odd shapes, both kernels
//! (tiled and matrix-vector), transposed, broadcast and offset operands, every numeric dtype.

mod common;

use kiln_backend::{BackendStorage, DType, Error, HostData, Layout};
use kiln_wgpu::{GpuDevice, GpuStorage};

/// xorshift64*: deterministic values in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.next()).collect()
    }
}

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

/// `out[b, i, j] = Σ_k a[b, i, k] · b[b, k, j]` read through both layouts, in f64.
fn reference(a: &[f64], al: &Layout, b: &[f64], bl: &Layout) -> Vec<f64> {
    let (sa, sb) = (al.shape(), bl.shape());
    let (batch, m, k, n) = (sa[0], sa[1], sa[2], sb[2]);
    let at = |bi: usize, i: usize, kk: usize| {
        a[al.offset() + bi * al.strides()[0] + i * al.strides()[1] + kk * al.strides()[2]]
    };
    let bt = |bi: usize, kk: usize, j: usize| {
        b[bl.offset() + bi * bl.strides()[0] + kk * bl.strides()[1] + j * bl.strides()[2]]
    };
    let mut out = Vec::with_capacity(batch * m * n);
    for bi in 0..batch {
        for i in 0..m {
            for j in 0..n {
                out.push((0..k).map(|kk| at(bi, i, kk) * bt(bi, kk, j)).sum());
            }
        }
    }
    out
}

/// Storage of `len` random values, returned with those values as the GPU holds them.
fn upload(dev: &GpuDevice, dtype: DType, len: usize, rng: &mut Rng) -> (GpuStorage, Vec<f64>) {
    let data = host(dtype, &rng.vec(len));
    let exact = data.to_f64_vec();
    (GpuStorage::from_host(dev, &data).expect("upload"), exact)
}

/// Runs `al · bl` over fresh random buffers big enough for both layouts and checks every output.
fn check(dev: &GpuDevice, dtype: DType, al: &Layout, bl: &Layout, seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
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
        if dev.has_f16() {
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

#[test]
fn f16_storage_with_f32_accumulation() {
    let Some(dev) = common::gpu("f16_storage_with_f32_accumulation") else { return };
    if !dev.has_f16() {
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

/// Ad-hoc timing, not an assertion: `cargo test -p kiln-wgpu --test matmul -- --ignored --nocapture`.
/// `KILN_MM_SIZES` (comma-separated square sizes, default 512), `KILN_MM_FLOP` (work per timed
/// run, default 1e9) and `KILN_MM_DTYPE` (f32 or f16) adjust it.
#[test]
#[ignore]
fn bench_matmul() {
    let Some(dev) = common::gpu("bench_matmul") else { return };
    println!("adapter: {}", dev.summary);
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let flop_target: f64 = env("KILN_MM_FLOP", "1e9").parse().expect("KILN_MM_FLOP");
    let dtype = if env("KILN_MM_DTYPE", "f32") == "f16" { DType::F16 } else { DType::F32 };
    let mut shapes = Vec::new();
    for size in env("KILN_MM_SIZES", "512").split(',') {
        let s: usize = size.parse().expect("KILN_MM_SIZES");
        for class in ["nn", "tn", "nt", "tt"] {
            shapes.push((1, s, s, s, class));
        }
        shapes.push((1, 1, s, s, "nt"));
    }
    // Attention-like batches: q·kᵀ and p·v.
    shapes.push((16, 512, 64, 512, "nt"));
    shapes.push((16, 512, 512, 64, "nn"));
    for (batch, m, k, n, class) in shapes {
        let mut rng = Rng(7);
        let al = if class.starts_with('t') { transposed(batch, m, k) } else { Layout::contiguous(&[batch, m, k]) };
        let bl = if class.ends_with('t') { transposed(batch, k, n) } else { Layout::contiguous(&[batch, k, n]) };
        let (a, _) = upload(&dev, dtype, batch * m * k, &mut rng);
        let (b, _) = upload(&dev, dtype, batch * k * n, &mut rng);
        let one = Layout::contiguous(&[1]);
        let warm = a.matmul(&al, &b, &bl).expect("matmul");
        warm.to_host(&one).expect("read");
        let flop = 2.0 * (batch * m * n * k) as f64;
        let reps = (flop_target / flop).ceil().clamp(1.0, 2000.0) as usize;
        // Best of several runs: the machine's cores are shared with other work.
        let mut secs = f64::INFINITY;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            let mut last = None;
            for _ in 0..reps {
                last = Some(a.matmul(&al, &b, &bl).expect("matmul"));
            }
            last.expect("ran").to_host(&one).expect("read");
            secs = secs.min(start.elapsed().as_secs_f64() / reps as f64);
        }
        let gflops = flop / secs / 1e9;
        println!("{dtype} {batch}x{m}x{k}x{n} {class}: {:.3} ms, {gflops:.2} GFLOP/s", secs * 1e3);
    }
}
