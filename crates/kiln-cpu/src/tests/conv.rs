use kiln_backend::{BackendStorage, ConvGeometry, DType, Error, HostData, Layout};

use super::{Rng, assert_close, at, c, f64s, host, st};

#[allow(clippy::too_many_arguments)]
fn geom(
    n: usize,
    ch: usize,
    h: usize,
    w: usize,
    k: (usize, usize),
    s: (usize, usize),
    p: (usize, usize),
    d: (usize, usize),
) -> ConvGeometry {
    ConvGeometry { n, c: ch, h, w, kh: k.0, kw: k.1, stride: s, padding: p, dilation: d }
}

#[test]
fn im2col_by_hand_without_padding() {
    // 3×3 image 1..9, 2×2 kernel: each row is one kernel tap over the 2×2 output positions.
    let x = st((1..=9).map(|v| v as f32).collect::<Vec<_>>());
    let g = geom(1, 1, 3, 3, (2, 2), (1, 1), (0, 0), (1, 1));
    let out = x.im2col(&c(&[1, 1, 3, 3]), &g, 0.0).expect("im2col");
    #[rustfmt::skip]
    let want = vec![
        1.0, 2.0, 4.0, 5.0,
        2.0, 3.0, 5.0, 6.0,
        4.0, 5.0, 7.0, 8.0,
        5.0, 6.0, 8.0, 9.0,
    ];
    assert_eq!(host(&out), HostData::F32(want));
}

#[test]
fn im2col_by_hand_with_padding_value() {
    // 2×2 image [[1, 2], [3, 4]], 2×2 kernel, stride 2, padding 1: 2×2 outputs, each window
    // holds exactly one real pixel.
    let p = f32::NEG_INFINITY;
    let x = st(vec![1.0f32, 2.0, 3.0, 4.0]);
    let g = geom(1, 1, 2, 2, (2, 2), (2, 2), (1, 1), (1, 1));
    let out = x.im2col(&c(&[1, 1, 2, 2]), &g, f64::NEG_INFINITY).expect("im2col");
    #[rustfmt::skip]
    let want = vec![
        p, p, p, 4.0,
        p, p, 3.0, p,
        p, 2.0, p, p,
        1.0, p, p, p,
    ];
    assert_eq!(host(&out), HostData::F32(want));
}

/// im2col straight from its definition, over logical coordinates.
fn naive_im2col(x: &[f64], l: &Layout, g: &ConvGeometry, pad: f64) -> Vec<f64> {
    let (oh, ow) = (g.out_h().expect("oh"), g.out_w().expect("ow"));
    let mut out = Vec::new();
    for n in 0..g.n {
        for ch in 0..g.c {
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let iy = (oy * g.stride.0 + ki * g.dilation.0) as i64 - g.padding.0 as i64;
                            let ix = (ox * g.stride.1 + kj * g.dilation.1) as i64 - g.padding.1 as i64;
                            let inside = iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w;
                            out.push(if inside { at(x, l, &[n, ch, iy as usize, ix as usize]) } else { pad });
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn im2col_matches_definition_on_strided_input() {
    let mut rng = Rng::new(9);
    let g = geom(2, 3, 7, 5, (3, 2), (2, 1), (1, 2), (2, 1));
    // NHWC buffer viewed as NCHW.
    let buf = rng.vec(2 * 7 * 5 * 3);
    let l = c(&[2, 7, 5, 3]).permute(&[0, 3, 1, 2]);
    let out = st(buf.clone()).im2col(&l, &g, 0.5).expect("im2col");
    let cols = g.cols_shape().expect("cols");
    assert_eq!(out.len(), cols.iter().product::<usize>());
    assert_eq!(f64s(&out), naive_im2col(&buf, &l, &g, 0.5));
}

#[test]
fn col2im_is_the_adjoint_of_im2col() {
    let mut rng = Rng::new(10);
    for g in [
        geom(2, 3, 7, 5, (3, 2), (2, 1), (1, 2), (2, 1)),
        geom(1, 2, 1, 7, (1, 3), (1, 3), (0, 1), (1, 1)),
        geom(3, 1, 6, 6, (3, 3), (1, 1), (1, 1), (1, 1)),
        geom(1, 1, 5, 4, (2, 2), (3, 2), (2, 0), (3, 2)),
        // Big enough for both kernels to split across threads.
        geom(64, 8, 9, 9, (3, 3), (1, 1), (1, 1), (1, 1)),
    ] {
        let cols = g.cols_shape().expect("cols");
        let x = rng.vec(g.n * g.c * g.h * g.w);
        let y = rng.vec(cols.iter().product());
        let ix = f64s(&st(x.clone()).im2col(&c(&[g.n, g.c, g.h, g.w]), &g, 0.0).expect("im2col"));
        let cy = f64s(&st(y.clone()).col2im(&c(&cols), &g).expect("col2im"));
        let lhs: f64 = ix.iter().zip(&y).map(|(a, b)| a * b).sum();
        let rhs: f64 = x.iter().zip(&cy).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() <= 1e-12 * lhs.abs().max(1.0), "{g:?}: {lhs} vs {rhs}");
    }
}

#[test]
fn col2im_counts_overlaps() {
    // All-ones columns for a 3×3 image and 2×2 kernel: each pixel gets one per window covering it.
    let g = geom(1, 1, 3, 3, (2, 2), (1, 1), (0, 0), (1, 1));
    let out = st(vec![1i32; 16]).col2im(&c(&[1, 4, 4]), &g).expect("col2im");
    assert_eq!(host(&out), HostData::I32(vec![1, 2, 1, 2, 4, 2, 1, 2, 1]));
    // Transposed columns layout, f32.
    let cols: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let lt = c(&[1, 4, 4]).permute(&[0, 2, 1]);
    let out = st(cols.clone()).col2im(&lt, &g).expect("col2im strided");
    // Logical cols[r][q] = buf[q*4 + r]; row r = tap (ki, kj), column q = (oy, ox).
    let mut want = [0.0f64; 9];
    for (r, (ki, kj)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
        for (q, (oy, ox)) in [(0, 0), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
            want[(oy + ki) * 3 + ox + kj] += cols[q * 4 + r] as f64;
        }
    }
    assert_close(&f64s(&out), &want, 0.0);
}

#[test]
fn conv_shape_errors() {
    let g = geom(1, 1, 3, 3, (2, 2), (1, 1), (0, 0), (1, 1));
    let x = st(vec![0.0f32; 9]);
    let r = x.im2col(&c(&[1, 1, 9, 1]), &g, 0.0);
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    let big = geom(1, 1, 3, 3, (5, 5), (1, 1), (0, 0), (1, 1));
    let r = x.im2col(&c(&[1, 1, 3, 3]), &big, 0.0);
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    let r = st(vec![0.0f32; 16]).col2im(&c(&[1, 4, 3]), &g);
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    super::assert_unsupported(st(vec![true; 16]).col2im(&c(&[1, 4, 4]), &g), DType::Bool);
    // im2col is a pure data movement, so bool works.
    let out = st(vec![true; 9]).im2col(&c(&[1, 1, 3, 3]), &g, 0.0).expect("bool im2col");
    assert_eq!(host(&out), HostData::Bool(vec![true; 16]));
}

#[test]
fn max_pool_by_hand() {
    // 3×3 image [[1, 5, NaN], [5, 0, 2], [−∞, 3, 4]], 2×2 windows, stride 1: window (0,0) holds
    // a tie (5 at taps 1 and 2: the first wins), window (0,1) a NaN at tap 1 (a NaN is the
    // max), window (1,0) its max at tap 0 beside a −∞, window (1,1) a plain max at tap 3.
    let nan = f32::NAN;
    let x = st(vec![1.0f32, 5.0, nan, 5.0, 0.0, 2.0, f32::NEG_INFINITY, 3.0, 4.0]);
    let g = geom(1, 1, 3, 3, (2, 2), (1, 1), (0, 0), (1, 1));
    let (v, t) = x.max_pool(&c(&[1, 1, 3, 3]), &g).expect("max_pool");
    let v = f64s(&v);
    assert_eq!((v[0], v[2], v[3]), (5.0, 5.0, 4.0));
    assert!(v[1].is_nan());
    assert_eq!(host(&t), HostData::U32(vec![1, 1, 0, 3]));
    // With padding 1 and a dilation that puts both taps of a window outside: −∞, tap 0.
    let g = geom(1, 1, 3, 3, (2, 2), (1, 1), (1, 1), (4, 4));
    let (v, t) = x.max_pool(&c(&[1, 1, 3, 3]), &g).expect("padded max_pool");
    assert_eq!(f64s(&v), vec![f64::NEG_INFINITY]);
    assert_eq!(host(&t), HostData::U32(vec![0]));
    super::assert_unsupported(st(vec![1i32; 9]).max_pool(&c(&[1, 1, 3, 3]), &g).map(|p| p.0), DType::I32);
}

#[test]
fn max_pool_backward_by_hand() {
    // 3×3 image, 2×2 windows, stride 1, taps [1, 2, 0, 3]: window q's gradient (10, 20, 30,
    // 40) goes to the pixel its tap reads: (0,1), (1,1), (1,0), (2,2).
    let g = geom(1, 1, 3, 3, (2, 2), (1, 1), (0, 0), (1, 1));
    let grad = st(vec![10.0f32, 20.0, 30.0, 40.0]);
    let taps = st(vec![1u32, 2, 0, 3]);
    let out = grad.max_pool_backward(&c(&[1, 1, 2, 2]), &taps, &c(&[1, 1, 2, 2]), &g).expect("backward");
    assert_eq!(host(&out), HostData::F32(vec![0.0, 10.0, 0.0, 30.0, 20.0, 0.0, 0.0, 0.0, 40.0]));
    // Two windows choosing one pixel sum there; a tap past the window is dropped.
    let taps = st(vec![3u32, 2, 1, 4]);
    let out = grad.max_pool_backward(&c(&[1, 1, 2, 2]), &taps, &c(&[1, 1, 2, 2]), &g).expect("backward");
    assert_eq!(host(&out), HostData::F32(vec![0.0, 0.0, 0.0, 0.0, 60.0, 0.0, 0.0, 0.0, 0.0]));
    let r = grad.max_pool_backward(&c(&[1, 1, 2, 2]), &grad, &c(&[1, 1, 2, 2]), &g);
    super::assert_unsupported(r, DType::F32);
    let r = grad.max_pool_backward(&c(&[1, 1, 4, 1]), &taps, &c(&[1, 1, 2, 2]), &g);
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
}
