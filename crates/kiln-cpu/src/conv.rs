//! im2col and its adjoint col2im: convolution and pooling are built on these.
//!
//! `cols[n, (c·kh + ki)·kw + kj, oy·ow + ox] = x[n, c, oy·sh − ph + ki·dh, ox·sw − pw + kj·dw]`,
//! or `pad_value` where that position falls outside the image. col2im sums each column entry
//! back into the pixel it came from (padding positions are dropped), so
//! ⟨im2col(x), y⟩ = ⟨x, col2im(y)⟩ when `pad_value` is 0.

use kiln_backend::{ConvGeometry, Error, HostData, Layout, Result};

use crate::elem::{Elem, Float, Num};
use crate::kernel::{alloc, for_each_block, product, unsupported};
use crate::strided::read;

/// Sizes derived from a geometry, validated once.
struct Plan {
    g: ConvGeometry,
    oh: usize,
    ow: usize,
    /// Elements of one (n, c) image.
    image: usize,
    /// Elements of the kh·kw rows of cols that one (n, c) image produces.
    block: usize,
    /// Number of (n, c) images.
    images: usize,
}

impl Plan {
    fn new(op: &'static str, g: &ConvGeometry) -> Result<Plan> {
        let (Some(oh), Some(ow)) = (g.out_h(), g.out_w()) else {
            return Err(Error::invalid(op, format!("window does not fit the padded input: {g:?}")));
        };
        Ok(Plan {
            g: *g,
            oh,
            ow,
            image: product(op, &[g.h, g.w])?,
            block: product(op, &[g.kh, g.kw, oh, ow])?,
            images: product(op, &[g.n, g.c])?,
        })
    }

    /// Calls `f(kernel_row, column, pixel)` for every column entry of one image that reads a
    /// pixel inside it; entries in the padding are skipped.
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize)) {
        let g = &self.g;
        let ((sh, sw), (ph, pw), (dh, dw)) = (g.stride, g.padding, g.dilation);
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = ki * g.kw + kj;
                for oy in 0..self.oh {
                    // Unpadded position oy·sh + ki·dh is at most h + 2·ph − 1 (out_h guarantees),
                    // so this stays in usize and compares against the padding without signs.
                    let py = oy * sh + ki * dh;
                    if py < ph || py - ph >= g.h {
                        continue;
                    }
                    for ox in 0..self.ow {
                        let px = ox * sw + kj * dw;
                        if px < pw || px - pw >= g.w {
                            continue;
                        }
                        f(row, oy * self.ow + ox, (py - ph) * g.w + (px - pw));
                    }
                }
            }
        }
    }
}

pub(crate) fn im2col(data: &HostData, layout: &Layout, g: &ConvGeometry, pad_value: f64) -> Result<HostData> {
    const OP: &str = "im2col";
    if layout.shape() != [g.n, g.c, g.h, g.w] {
        return Err(Error::shape(OP, format!("input {:?} does not match geometry {g:?}", layout.shape())));
    }
    let plan = Plan::new(OP, g)?;
    dispatch!(data, v => im2col_typed(v, layout, &plan, pad_value))
}

fn im2col_typed<T: Elem>(v: &[T], layout: &Layout, plan: &Plan, pad_value: f64) -> Result<HostData> {
    const OP: &str = "im2col";
    let x = read(OP, v, layout)?;
    let mut out = alloc(OP, product(OP, &[plan.images, plan.block])?, T::from_f64(pad_value))?;
    if out.is_empty() {
        return Ok(T::wrap(out));
    }
    let cols = plan.oh * plan.ow;
    for_each_block(&mut out, plan.block, |img, o| {
        let src = &x[img * plan.image..(img + 1) * plan.image];
        plan.for_each_tap(|row, col, pixel| o[row * cols + col] = src[pixel]);
    });
    Ok(T::wrap(out))
}

pub(crate) fn col2im(data: &HostData, layout: &Layout, g: &ConvGeometry) -> Result<HostData> {
    const OP: &str = "col2im";
    let plan = Plan::new(OP, g)?;
    let expected = [g.n, g.c * g.kh * g.kw, plan.oh * plan.ow];
    if layout.shape() != expected {
        return Err(Error::shape(OP, format!("columns {:?}, expected {expected:?} for {g:?}", layout.shape())));
    }
    dispatch_num!(data, OP, v => col2im_typed(v, layout, &plan))
}

/// Sums in f64 for f32/f16 (each pixel gathers up to kh·kw terms); integers wrap.
fn col2im_typed<T: Num>(v: &[T], layout: &Layout, plan: &Plan) -> Result<HostData> {
    const OP: &str = "col2im";
    let x = read(OP, v, layout)?;
    let mut out = alloc(OP, product(OP, &[plan.images, plan.image])?, T::default())?;
    if out.is_empty() {
        return Ok(T::wrap(out));
    }
    let cols = plan.oh * plan.ow;
    for_each_block(&mut out, plan.image, |img, o| {
        let src = &x[img * plan.block..(img + 1) * plan.block];
        let mut acc = vec![T::ACC_ZERO; plan.image];
        plan.for_each_tap(|row, col, pixel| acc[pixel] = T::acc_add(acc[pixel], src[row * cols + col].widen()));
        for (o, a) in o.iter_mut().zip(acc) {
            *o = T::narrow(a);
        }
    });
    Ok(T::wrap(out))
}

/// Max pooling over the windows of `g`: each window's max and its tap `ki·kw + kj` (u32), the
/// first max with a NaN counting as the max; padding is skipped (a window with no pixel inside
/// is −∞ with tap 0).
pub(crate) fn max_pool(data: &HostData, layout: &Layout, g: &ConvGeometry) -> Result<(HostData, HostData)> {
    const OP: &str = "max_pool";
    if layout.shape() != [g.n, g.c, g.h, g.w] {
        return Err(Error::shape(OP, format!("input {:?} does not match geometry {g:?}", layout.shape())));
    }
    let plan = Plan::new(OP, g)?;
    match data {
        HostData::F32(v) => max_pool_typed(v, layout, &plan),
        HostData::F16(v) => max_pool_typed(v, layout, &plan),
        HostData::F64(v) => max_pool_typed(v, layout, &plan),
        other => Err(unsupported(OP, other.dtype(), "float dtypes only")),
    }
}

fn max_pool_typed<T: Float>(v: &[T], layout: &Layout, plan: &Plan) -> Result<(HostData, HostData)> {
    const OP: &str = "max_pool";
    let x = read(OP, v, layout)?;
    let windows = plan.oh * plan.ow;
    // (value, tap, seen a pixel): taps arrive in increasing order, so the first max stays.
    let mut best = alloc(OP, product(OP, &[plan.images, windows])?, (T::from_f64(f64::NEG_INFINITY), 0u32, false))?;
    if !best.is_empty() {
        for_each_block(&mut best, windows, |img, o| {
            let src = &x[img * plan.image..(img + 1) * plan.image];
            plan.for_each_tap(|row, col, pixel| {
                let (v, b) = (src[pixel], &mut o[col]);
                let better = if v.is_nan() { !b.0.is_nan() } else { v > b.0 };
                if !b.2 || better {
                    *b = (v, row as u32, true);
                }
            });
        });
    }
    let taps = best.iter().map(|b| b.1).collect();
    Ok((T::wrap(best.into_iter().map(|b| b.0).collect()), HostData::U32(taps)))
}

/// Max pooling's gradient: each window's gradient added to the pixel its tap reads (in f64 for
/// f32/f16), taps in the padding dropped.
pub(crate) fn max_pool_backward(
    grad: &HostData,
    layout: &Layout,
    taps: &HostData,
    taps_layout: &Layout,
    g: &ConvGeometry,
) -> Result<HostData> {
    const OP: &str = "max_pool_backward";
    let plan = Plan::new(OP, g)?;
    let expected = [g.n, g.c, plan.oh, plan.ow];
    if layout.shape() != expected || taps_layout.shape() != expected {
        let (a, b) = (layout.shape(), taps_layout.shape());
        return Err(Error::shape(OP, format!("gradient {a:?} and taps {b:?}, expected {expected:?} for {g:?}")));
    }
    let HostData::U32(t) = taps else { return Err(unsupported(OP, taps.dtype(), "taps are u32")) };
    let taps = read(OP, t, taps_layout)?;
    match grad {
        HostData::F32(v) => max_pool_backward_typed(v, layout, &taps, &plan),
        HostData::F16(v) => max_pool_backward_typed(v, layout, &taps, &plan),
        HostData::F64(v) => max_pool_backward_typed(v, layout, &taps, &plan),
        other => Err(unsupported(OP, other.dtype(), "float dtypes only")),
    }
}

fn max_pool_backward_typed<T: Float>(v: &[T], layout: &Layout, taps: &[u32], plan: &Plan) -> Result<HostData> {
    const OP: &str = "max_pool_backward";
    let grad = read(OP, v, layout)?;
    let mut out = alloc(OP, product(OP, &[plan.images, plan.image])?, T::default())?;
    if out.is_empty() {
        return Ok(T::wrap(out));
    }
    let windows = plan.oh * plan.ow;
    for_each_block(&mut out, plan.image, |img, o| {
        let (g, t) = (&grad[img * windows..(img + 1) * windows], &taps[img * windows..(img + 1) * windows]);
        let mut acc = vec![0.0f64; plan.image];
        plan.for_each_tap(|row, col, pixel| {
            if t[col] as usize == row {
                acc[pixel] += g[col].widen();
            }
        });
        for (o, a) in o.iter_mut().zip(acc) {
            *o = T::narrow(a);
        }
    });
    Ok(T::wrap(out))
}
