//! im2col, col2im, max_pool and max_pool_backward on the GPU against the CPU backend (in f64),
//! on random data, strided inputs and several window geometries, plus the adjoint identity
//! ⟨im2col(x), y⟩ = ⟨x, col2im(y)⟩.

mod common;

use kiln_backend::{BackendStorage, ConvGeometry, DType, Error, HostData, Layout};
use kiln_cpu::{CpuDevice, CpuStorage};
use kiln_testkit::Rng;
use kiln_wgpu::{GpuDevice, GpuStorage};

/// A value of `dtype`'s range, exactly representable in it.
fn value(rng: &mut Rng, dtype: DType) -> f64 {
    match dtype {
        DType::I32 => rng.below(201) as f64 - 100.0,
        DType::U32 => rng.below(201) as f64,
        DType::Bool => rng.below(2) as f64,
        _ => rng.unit() * 4.0 - 2.0,
    }
}

fn upload(dev: &GpuDevice, raw: &[f64], dtype: DType) -> (GpuStorage, Vec<f64>) {
    let host = HostData::from_f64(raw, dtype);
    let vals = host.to_f64_vec();
    (GpuStorage::from_host(dev, &host).expect("upload"), vals)
}

fn random(dev: &GpuDevice, rng: &mut Rng, dtype: DType, len: usize) -> (GpuStorage, Vec<f64>) {
    let raw: Vec<f64> = (0..len).map(|_| value(rng, dtype)).collect();
    upload(dev, &raw, dtype)
}

fn read(s: &GpuStorage, shape: &[usize]) -> Vec<f64> {
    s.to_host(&Layout::contiguous(shape)).expect("readback").to_f64_vec()
}

#[allow(clippy::too_many_arguments)]
fn geometry(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: (usize, usize),
    s: (usize, usize),
    p: (usize, usize),
    d: (usize, usize),
) -> ConvGeometry {
    ConvGeometry { n, c, h, w, kh: k.0, kw: k.1, stride: s, padding: p, dilation: d }
}

fn geometries() -> Vec<ConvGeometry> {
    vec![
        geometry(1, 1, 5, 5, (3, 3), (1, 1), (0, 0), (1, 1)),
        geometry(2, 3, 7, 6, (3, 3), (2, 2), (1, 1), (1, 1)),
        geometry(1, 2, 9, 8, (3, 2), (1, 2), (1, 0), (2, 2)),
        geometry(2, 3, 5, 7, (1, 1), (1, 1), (0, 0), (1, 1)),
        geometry(1, 1, 1, 1, (1, 1), (1, 1), (0, 0), (1, 1)),
        geometry(1, 4, 8, 8, (2, 2), (2, 2), (0, 0), (1, 1)),
        geometry(2, 1, 6, 5, (2, 4), (3, 1), (2, 1), (1, 1)),
        geometry(1, 2, 4, 4, (3, 3), (1, 1), (2, 2), (1, 1)),
        geometry(1, 3, 32, 31, (5, 5), (1, 1), (2, 2), (1, 1)),
    ]
}

/// Input views of logical shape [n, c, h, w]: (name, storage elements, layout).
fn views(g: &ConvGeometry) -> Vec<(&'static str, usize, Layout)> {
    let (n, c, h, w) = (g.n, g.c, g.h, g.w);
    let numel = n * c * h * w;
    let nhwc = Layout::contiguous(&[n, h, w, c]).permute(&[0, 3, 1, 2]);
    let big = [n + 1, c + 1, h + 2, w + 3];
    let narrowed = Layout::contiguous(&big).narrow(0, 1, n).narrow(1, 1, c).narrow(2, 2, h).narrow(3, 1, w);
    vec![
        ("contiguous", numel, Layout::contiguous(&[n, c, h, w])),
        ("nhwc", numel, nhwc),
        ("narrowed", big.iter().product(), narrowed),
        ("broadcast-c", n * h * w, Layout::contiguous(&[n, 1, h, w]).broadcast_to(&[n, c, h, w])),
    ]
}

/// `vals` (a storage's values) on the CPU backend, the oracle, as f64: im2col copies and
/// col2im sums, so f64 is exact for every dtype these tests use.
fn oracle(vals: &[f64]) -> CpuStorage {
    CpuStorage::from_host(&CpuDevice, &HostData::F64(vals.to_vec())).expect("cpu upload")
}

/// The CPU backend's im2col of the view `l` of `vals`.
fn im2col_ref(vals: &[f64], l: &Layout, g: &ConvGeometry, pad: f64) -> Vec<f64> {
    let cols = oracle(vals).im2col(l, g, pad).expect("cpu im2col");
    cols.to_host(&Layout::contiguous(&g.cols_shape().expect("cols"))).expect("cpu read").to_f64_vec()
}

/// The CPU backend's col2im (the adjoint: overlapping entries summed) of the view `l` of `vals`.
fn col2im_ref(vals: &[f64], l: &Layout, g: &ConvGeometry) -> Vec<f64> {
    let img = oracle(vals).col2im(l, g).expect("cpu col2im");
    img.to_host(&Layout::contiguous(&[g.n, g.c, g.h, g.w])).expect("cpu read").to_f64_vec()
}

#[track_caller]
fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    kiln_testkit::assert_close(what, got, want, tol, tol);
}

#[test]
fn im2col_matches_reference() {
    let Some(dev) = common::gpu("im2col_matches_reference") else { return };
    let mut rng = Rng::from_state(0x00c0_ffee_0000_0001);
    for dtype in [DType::F32, DType::F16, DType::I32, DType::U32, DType::Bool] {
        if dtype == DType::F16 && !common::has_f16_else_refused(&dev) {
            continue;
        }
        for g in geometries() {
            for (name, len, layout) in views(&g) {
                let (x, vals) = random(&dev, &mut rng, dtype, len);
                let pads: &[f64] = if dtype == DType::F32 { &[0.0, f64::NEG_INFINITY, 1.5] } else { &[0.0, 3.0] };
                for &pad in pads {
                    let out = x.im2col(&layout, &g, pad).expect("im2col");
                    let shape = g.cols_shape().expect("cols");
                    // What the dtype stores for the pad value.
                    let pad = HostData::from_f64(&[pad], dtype).to_f64_vec()[0];
                    let what = format!("im2col {dtype} {g:?} {name} pad {pad}");
                    assert_close(&read(&out, &shape), &im2col_ref(&vals, &layout, &g, pad), 0.0, &what);
                }
            }
        }
    }
    // Max pooling pads with -inf, which f16 and i32 store as -inf and i32::MIN.
    let g = geometry(1, 1, 2, 2, (2, 2), (1, 1), (1, 1), (1, 1));
    let l = Layout::contiguous(&[1, 1, 2, 2]);
    for (dtype, pad) in [(DType::F16, f64::NEG_INFINITY), (DType::I32, i32::MIN as f64)] {
        if dtype == DType::F16 && !common::has_f16_else_refused(&dev) {
            continue;
        }
        let (x, _) = upload(&dev, &[1.0, 2.0, 3.0, 4.0], dtype);
        let out = read(&x.im2col(&l, &g, f64::NEG_INFINITY).expect("pool pad"), &[1, 4, 9]);
        assert_eq!(out[0], pad, "{dtype}");
        assert_eq!(out[4], 1.0, "{dtype}");
    }
}

#[test]
fn col2im_matches_reference() {
    let Some(dev) = common::gpu("col2im_matches_reference") else { return };
    let mut rng = Rng::from_state(0x00c0_ffee_0000_0002);
    for dtype in [DType::F32, DType::F16, DType::I32, DType::U32] {
        if dtype == DType::F16 && !common::has_f16_else_refused(&dev) {
            continue;
        }
        for g in geometries() {
            let [n, rows, cols] = g.cols_shape().expect("cols");
            // Contiguous columns, and columns stored as [n, oh·ow, rows] viewed transposed.
            let layouts = [
                ("contiguous", Layout::contiguous(&[n, rows, cols])),
                ("transposed", Layout::contiguous(&[n, cols, rows]).permute(&[0, 2, 1])),
            ];
            for (name, layout) in layouts {
                let (y, vals) = random(&dev, &mut rng, dtype, n * rows * cols);
                let out = y.col2im(&layout, &g).expect("col2im");
                let what = format!("col2im {dtype} {g:?} {name}");
                let tol = match dtype {
                    DType::F32 => 1e-5,
                    // The f32 sum is rounded to f16 once.
                    DType::F16 => 1e-3,
                    _ => 0.0,
                };
                assert_close(&read(&out, &[g.n, g.c, g.h, g.w]), &col2im_ref(&vals, &layout, &g), tol, &what);
            }
        }
    }
}

#[test]
fn col2im_is_the_adjoint_of_im2col() {
    let Some(dev) = common::gpu("col2im_is_the_adjoint_of_im2col") else { return };
    let mut rng = Rng::from_state(0x00c0_ffee_0000_0003);
    for g in geometries() {
        let shape = g.cols_shape().expect("cols");
        let xl = Layout::contiguous(&[g.n, g.c, g.h, g.w]);
        let (x, xv) = random(&dev, &mut rng, DType::F32, xl.numel());
        let (y, yv) = random(&dev, &mut rng, DType::F32, shape.iter().product());
        let ax = read(&x.im2col(&xl, &g, 0.0).expect("im2col"), &shape);
        let aty = read(&y.col2im(&Layout::contiguous(&shape), &g).expect("col2im"), xl.shape());
        let lhs: f64 = ax.iter().zip(&yv).map(|(a, b)| a * b).sum();
        let rhs: f64 = xv.iter().zip(&aty).map(|(a, b)| a * b).sum();
        let scale: f64 = ax.iter().zip(&yv).map(|(a, b)| (a * b).abs()).sum::<f64>().max(1.0);
        assert!((lhs - rhs).abs() <= 1e-5 * scale, "{g:?}: {lhs} vs {rhs}");
    }
}

#[test]
fn large_unfold_and_errors() {
    let Some(dev) = common::gpu("large_unfold_and_errors") else { return };
    let mut rng = Rng::from_state(0x00c0_ffee_0000_0004);
    // A layer-sized unfold of an NHWC view: 4·27·64·64 = 442,368 entries.
    let g = geometry(4, 3, 64, 64, (3, 3), (1, 1), (1, 1), (1, 1));
    let (_, len, layout) = views(&g).swap_remove(1);
    let (x, vals) = random(&dev, &mut rng, DType::F32, len);
    let shape = g.cols_shape().expect("cols");
    let cols = x.im2col(&layout, &g, 0.0).expect("im2col");
    assert_close(&read(&cols, &shape), &im2col_ref(&vals, &layout, &g, 0.0), 0.0, "large im2col");
    let back = cols.col2im(&Layout::contiguous(&shape), &g).expect("col2im");
    let cl = Layout::contiguous(&shape);
    let cv = read(&cols, &shape);
    assert_close(&read(&back, layout.shape()), &col2im_ref(&cv, &cl, &g), 1e-5, "large col2im");

    // Shape, geometry and dtype errors, and empty batches.
    let small = geometry(1, 1, 3, 3, (2, 2), (1, 1), (0, 0), (1, 1));
    let bad = x.im2col(&Layout::contiguous(&[1, 1, 3, 4]), &small, 0.0);
    assert!(matches!(bad, Err(Error::ShapeMismatch { .. })), "{:?}", bad.err());
    let too_big = geometry(1, 1, 3, 3, (5, 5), (1, 1), (0, 0), (1, 1));
    let bad = x.im2col(&Layout::contiguous(&[1, 1, 3, 3]), &too_big, 0.0);
    assert!(matches!(bad, Err(Error::InvalidArgument { .. })), "{:?}", bad.err());
    let bad = x.col2im(&Layout::contiguous(&[1, 4, 5]), &small);
    assert!(matches!(bad, Err(Error::ShapeMismatch { .. })), "{:?}", bad.err());
    let (b, _) = upload(&dev, &[1.0; 16], DType::Bool);
    let bad = b.col2im(&Layout::contiguous(&[1, 4, 4]), &small);
    assert!(matches!(bad, Err(Error::UnsupportedDType { .. })), "{:?}", bad.err());
    let empty = geometry(0, 1, 3, 3, (2, 2), (1, 1), (0, 0), (1, 1));
    assert!(x.im2col(&Layout::contiguous(&[0, 1, 3, 3]), &empty, 0.0).expect("n = 0").is_empty());
    assert!(x.col2im(&Layout::contiguous(&[0, 4, 4]), &empty).expect("n = 0").is_empty());
}

/// Values with ties (a few levels), and NaN and −∞ sprinkled in: max pooling's taps must pick
/// the first max, the first NaN over any number, and a pixel over the padding.
fn pool_values(rng: &mut Rng, len: usize) -> Vec<f64> {
    (0..len)
        .map(|_| match rng.below(40) {
            0 => f64::NAN,
            1 => f64::NEG_INFINITY,
            k => (k % 5) as f64 - 2.0,
        })
        .collect()
}

fn cpu_taps(vals: &[f64], l: &Layout, g: &ConvGeometry) -> (Vec<f64>, Vec<f64>) {
    let (v, t) = oracle(vals).max_pool(l, g).expect("cpu max_pool");
    let shape = [g.n, g.c, g.out_h().expect("oh"), g.out_w().expect("ow")];
    let read = |s: &CpuStorage| s.to_host(&Layout::contiguous(&shape)).expect("cpu read").to_f64_vec();
    (read(&v), read(&t))
}

/// Max pooling's values and taps on the GPU equal the CPU backend's (a copy and a position:
/// exact), for every geometry, strided inputs, f32 and f16; one geometry has a window with no
/// pixel inside (−∞, tap 0).
#[test]
fn max_pool_matches_reference() {
    let Some(dev) = common::gpu("max_pool_matches_reference") else { return };
    let mut rng = Rng::from_state(0x00c0_ffee_0000_0005);
    let mut all = geometries();
    all.push(geometry(1, 2, 3, 3, (2, 2), (1, 1), (1, 1), (4, 4)));
    for dtype in [DType::F32, DType::F16] {
        if dtype == DType::F16 && !common::has_f16_else_refused(&dev) {
            continue;
        }
        for g in &all {
            for (name, len, layout) in views(g) {
                let (x, vals) = upload(&dev, &pool_values(&mut rng, len), dtype);
                let (v, t) = x.max_pool(&layout, g).expect("max_pool");
                let shape = [g.n, g.c, g.out_h().expect("oh"), g.out_w().expect("ow")];
                let (want_v, want_t) = cpu_taps(&vals, &layout, g);
                let what = format!("max_pool {dtype} {g:?} {name}");
                assert_eq!(t.dtype(), DType::U32, "{what}");
                assert_eq!(read(&t, &shape), want_t, "{what}: taps");
                let got_v = read(&v, &shape);
                for (i, (a, b)) in got_v.iter().zip(&want_v).enumerate() {
                    assert!(a == b || (a.is_nan() && b.is_nan()), "{what}: value {i}: {a} vs {b}");
                }
            }
        }
    }
    let g = geometry(1, 2, 3, 3, (2, 2), (1, 1), (1, 1), (4, 4));
    let (x, _) = upload(&dev, &[1.0; 18], DType::F32);
    let (v, t) = x.max_pool(&Layout::contiguous(&[1, 2, 3, 3]), &g).expect("max_pool");
    assert_eq!(read(&v, &[1, 2, 1, 1]), vec![f64::NEG_INFINITY; 2]);
    assert_eq!(read(&t, &[1, 2, 1, 1]), vec![0.0; 2]);
}

/// Max pooling's gradient on the GPU against the CPU backend's (f64 sums): random gradients,
/// random taps (one value past the window, which no pixel takes), contiguous and transposed
/// layouts, overlapping windows (stride below the kernel) summed per pixel.
#[test]
fn max_pool_backward_matches_reference() {
    let Some(dev) = common::gpu("max_pool_backward_matches_reference") else { return };
    let mut rng = Rng::from_state(0x00c0_ffee_0000_0006);
    for dtype in [DType::F32, DType::F16] {
        if dtype == DType::F16 && !common::has_f16_else_refused(&dev) {
            continue;
        }
        for g in geometries() {
            let (oh, ow) = (g.out_h().expect("oh"), g.out_w().expect("ow"));
            let shape = [g.n, g.c, oh, ow];
            let numel: usize = shape.iter().product();
            let layouts = [
                ("contiguous", Layout::contiguous(&shape)),
                ("transposed", Layout::contiguous(&[g.n, g.c, ow, oh]).permute(&[0, 1, 3, 2])),
            ];
            for (name, layout) in layouts {
                let (grad, gv) = random(&dev, &mut rng, dtype, numel);
                let taps: Vec<f64> = (0..numel).map(|_| rng.below(g.kh * g.kw + 1) as f64).collect();
                let (t, tv) = upload(&dev, &taps, DType::U32);
                let got = grad.max_pool_backward(&layout, &t, &layout, &g).expect("max_pool_backward");
                let tcpu = CpuStorage::from_host(&CpuDevice, &HostData::from_f64(&tv, DType::U32)).expect("taps");
                let want = oracle(&gv).max_pool_backward(&layout, &tcpu, &layout, &g).expect("cpu backward");
                let want = want.to_host(&Layout::contiguous(&[g.n, g.c, g.h, g.w])).expect("cpu read").to_f64_vec();
                let tol = if dtype == DType::F32 { 1e-5 } else { 1e-3 };
                let what = format!("max_pool_backward {dtype} {g:?} {name}");
                assert_close(&read(&got, &[g.n, g.c, g.h, g.w]), &want, tol, &what);
            }
        }
    }
    // Errors: integer input, non-u32 taps, shapes that do not match the geometry.
    let g = geometry(1, 1, 4, 4, (2, 2), (2, 2), (0, 0), (1, 1));
    let l = Layout::contiguous(&[1, 1, 2, 2]);
    let (gi, _) = upload(&dev, &[1.0; 4], DType::I32);
    let (tf, _) = upload(&dev, &[0.0; 4], DType::F32);
    let bad = gi.max_pool_backward(&l, &gi, &l, &g);
    assert!(matches!(bad, Err(Error::UnsupportedDType { .. })), "{:?}", bad.err());
    let bad = tf.max_pool_backward(&l, &tf, &l, &g);
    assert!(matches!(bad, Err(Error::UnsupportedDType { .. })), "{:?}", bad.err());
    let bad = tf.max_pool_backward(&Layout::contiguous(&[1, 1, 1, 4]), &gi, &l, &g);
    assert!(matches!(bad, Err(Error::ShapeMismatch { .. })), "{:?}", bad.err());
    let bad = gi.max_pool(&Layout::contiguous(&[1, 1, 2, 2]), &g);
    assert!(matches!(bad, Err(Error::ShapeMismatch { .. })), "{:?}", bad.err());
}
