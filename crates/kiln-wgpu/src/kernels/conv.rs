//! im2col and its adjoint col2im: convolution and pooling are built on them; max pooling and its
//! gradient, which read the windows in place. All run one thread per output element
//! (`shaders/im2col.wgsl`, `col2im.wgsl`, `max_pool.wgsl`, `max_pool_backward.wgsl`) with the
//! geometry in `info`, so one kernel per storage type serves every window shape.

use super::index::{check_fits, index_u32, move_type, numeric_type};
use super::params::{Meta, kernel_params};
use super::{WG, compute_type, enables, module, param_bits};
use crate::shaders::Template;
use crate::storage::GpuStorage;
use kiln_backend::{BackendStorage, ConvGeometry, DType, Error, Layout, Result};

kernel_params! {
    /// The window kernels: the geometry of `ConvGeometry` as u32, the pad value (im2col's,
    /// max_pool's −∞) as the dtype's bits (f16 in the low half), `x`, the input's layout block
    /// base, and `t`, max_pool_backward's second input's (the taps; 0 elsewhere).
    struct ConvParams {
        numel: u32, c: u32, h: u32, w: u32, kh: u32, kw: u32, sh: u32, sw: u32,
        ph: u32, pw: u32, dh: u32, dw: u32, oh: u32, ow: u32, pad: u32, x: u32, t: u32,
    }
}

/// The metadata of a window kernel over the input layout `l` (and `taps`, max_pool_backward's),
/// its sizes checked to fit the u32 arithmetic of the kernels (positions up to h + 2·ph).
fn conv_meta(
    op: &'static str,
    g: &ConvGeometry,
    numel: u32,
    pad: u32,
    l: &Layout,
    taps: Option<&Layout>,
) -> Result<Vec<u32>> {
    let (Some(oh), Some(ow)) = (g.out_h(), g.out_w()) else {
        return Err(Error::invalid(op, format!("window does not fit the padded input: {g:?}")));
    };
    let padded_h = g.padding.0.checked_mul(2).and_then(|p| p.checked_add(g.h));
    let padded_w = g.padding.1.checked_mul(2).and_then(|p| p.checked_add(g.w));
    for p in [padded_h, padded_w] {
        index_u32(op, p.unwrap_or(usize::MAX), "a padded image side")?;
    }
    let u = |v: usize| index_u32(op, v, "a geometry size");
    let mut meta = Meta::new();
    let x = meta.layout(op, l)?;
    let t = match taps {
        Some(l) => meta.layout(op, l)?,
        None => 0,
    };
    Ok(meta.finish(ConvParams {
        numel,
        c: u(g.c)?,
        h: u(g.h)?,
        w: u(g.w)?,
        kh: u(g.kh)?,
        kw: u(g.kw)?,
        sh: u(g.stride.0)?,
        sw: u(g.stride.1)?,
        ph: u(g.padding.0)?,
        pw: u(g.padding.1)?,
        dh: u(g.dilation.0)?,
        dw: u(g.dilation.1)?,
        oh: u(oh)?,
        ow: u(ow)?,
        pad,
        x,
        t,
    }))
}

/// The enable line and the body of `pad_value(bits)` for storage type `t`.
fn pad_source(t: &str) -> (&'static str, &'static str) {
    match t {
        "f16" => (enables(&[DType::F16]), "    return f16(unpack2x16float(bits).x);"),
        "f32" => ("", "    return bitcast<f32>(bits);"),
        _ => ("", "    return bits;"),
    }
}

fn im2col_source(t: &str) -> String {
    let (enable, pad) = pad_source(t);
    let body = Template::new(crate::shaders::IM2COL).params::<ConvParams>().set("T", t).set("PAD", pad).render();
    module(enable, false, &body)
}

pub(crate) fn im2col(s: &GpuStorage, l: &Layout, g: &ConvGeometry, pad: f64) -> Result<GpuStorage> {
    const OP: &str = "im2col";
    if l.shape() != [g.n, g.c, g.h, g.w] {
        return Err(Error::shape(OP, format!("input {:?} does not match geometry {g:?}", l.shape())));
    }
    let t = move_type(OP, s.dtype())?;
    check_fits(OP, s, l)?;
    let shape =
        g.cols_shape().ok_or_else(|| Error::invalid(OP, format!("window does not fit the padded input: {g:?}")))?;
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX);
    let n = index_u32(OP, numel, "the column matrix")?;
    // The pad value arrives as the dtype's own bits: f16 in the low half of the word.
    let pad_bits = match s.dtype() {
        DType::F16 => u32::from(half::f16::from_f64(pad).to_bits()),
        d => param_bits(pad, d),
    };
    // One thread per (image, channel, output position); each writes the kh·kw taps.
    let threads = numel / (g.kh * g.kw).max(1);
    let meta = conv_meta(OP, g, threads as u32, pad_bits, l, None)?;
    let ctx = s.context();
    let out = GpuStorage::alloc(ctx, OP, s.dtype(), numel)?;
    if n == 0 {
        return Ok(out);
    }
    let kernel = ctx.cache.get(&ctx.device, OP, &format!("im2col|{t}"), || im2col_source(t))?;
    ctx.dispatch(OP, &kernel, &[s.binding(), out.binding()], &meta, (threads as u32).div_ceil(WG))?;
    Ok(out)
}

fn col2im_source(dtype: DType) -> Result<String> {
    let body = Template::new(crate::shaders::COL2IM)
        .params::<ConvParams>()
        .set("T", numeric_type("col2im", dtype)?)
        .set("C", compute_type(dtype))
        .render();
    Ok(module(enables(&[dtype]), false, &body))
}

pub(crate) fn col2im(s: &GpuStorage, l: &Layout, g: &ConvGeometry) -> Result<GpuStorage> {
    const OP: &str = "col2im";
    let expected =
        g.cols_shape().ok_or_else(|| Error::invalid(OP, format!("window does not fit the padded input: {g:?}")))?;
    if l.shape() != expected {
        return Err(Error::shape(OP, format!("columns {:?}, expected {expected:?} for {g:?}", l.shape())));
    }
    let dtype = s.dtype();
    numeric_type(OP, dtype)?;
    check_fits(OP, s, l)?;
    let numel = [g.n, g.c, g.h, g.w].iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX);
    let n = index_u32(OP, numel, "the image")?;
    let meta = conv_meta(OP, g, n, 0, l, None)?;
    let ctx = s.context();
    let out = GpuStorage::alloc(ctx, OP, dtype, numel)?;
    if n == 0 {
        return Ok(out);
    }
    let kernel =
        ctx.cache.get(&ctx.device, OP, &format!("col2im|{dtype}"), || col2im_source(dtype).unwrap_or_default())?;
    ctx.dispatch(OP, &kernel, &[s.binding(), out.binding()], &meta, n.div_ceil(WG))?;
    Ok(out)
}

/// Float dtypes only: the taps compare values (NaN tested on the bits) and the gradient sums.
fn pool_type(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F16 => Ok("f16"),
        other => Err(Error::UnsupportedDType { op, dtype: other, why: "float dtypes only".into() }),
    }
}

fn max_pool_source(dtype: DType) -> Result<String> {
    let t = pool_type("max_pool", dtype)?;
    let (enable, pad) = pad_source(t);
    let body = Template::new(crate::shaders::MAX_POOL).params::<ConvParams>().set("T", t).set("PAD", pad).render();
    Ok(module(enable, true, &body))
}

pub(crate) fn max_pool(s: &GpuStorage, l: &Layout, g: &ConvGeometry) -> Result<(GpuStorage, GpuStorage)> {
    const OP: &str = "max_pool";
    if l.shape() != [g.n, g.c, g.h, g.w] {
        return Err(Error::shape(OP, format!("input {:?} does not match geometry {g:?}", l.shape())));
    }
    let dtype = s.dtype();
    pool_type(OP, dtype)?;
    check_fits(OP, s, l)?;
    let (Some(oh), Some(ow)) = (g.out_h(), g.out_w()) else {
        return Err(Error::invalid(OP, format!("window does not fit the padded input: {g:?}")));
    };
    let numel = [g.n, g.c, oh, ow].iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX);
    let n = index_u32(OP, numel, "the pooled output")?;
    let neg_inf = match dtype {
        DType::F16 => u32::from(half::f16::NEG_INFINITY.to_bits()),
        _ => f32::NEG_INFINITY.to_bits(),
    };
    let meta = conv_meta(OP, g, n, neg_inf, l, None)?;
    let ctx = s.context();
    let values = GpuStorage::alloc(ctx, OP, dtype, numel)?;
    let taps = GpuStorage::alloc(ctx, OP, DType::U32, numel)?;
    if n == 0 {
        return Ok((values, taps));
    }
    let kernel =
        ctx.cache.get(&ctx.device, OP, &format!("max_pool|{dtype}"), || max_pool_source(dtype).unwrap_or_default())?;
    ctx.dispatch(OP, &kernel, &[s.binding(), values.binding(), taps.binding()], &meta, n.div_ceil(WG))?;
    Ok((values, taps))
}

fn max_pool_backward_source(dtype: DType) -> Result<String> {
    let body = Template::new(crate::shaders::MAX_POOL_BACKWARD)
        .params::<ConvParams>()
        .set("T", pool_type("max_pool_backward", dtype)?)
        .set("C", compute_type(dtype))
        .render();
    Ok(module(enables(&[dtype]), false, &body))
}

pub(crate) fn max_pool_backward(
    s: &GpuStorage,
    l: &Layout,
    taps: &GpuStorage,
    tl: &Layout,
    g: &ConvGeometry,
) -> Result<GpuStorage> {
    const OP: &str = "max_pool_backward";
    let (Some(oh), Some(ow)) = (g.out_h(), g.out_w()) else {
        return Err(Error::invalid(OP, format!("window does not fit the padded input: {g:?}")));
    };
    let expected = [g.n, g.c, oh, ow];
    if l.shape() != expected || tl.shape() != expected {
        let (a, b) = (l.shape(), tl.shape());
        return Err(Error::shape(OP, format!("gradient {a:?} and taps {b:?}, expected {expected:?} for {g:?}")));
    }
    let dtype = s.dtype();
    pool_type(OP, dtype)?;
    if taps.dtype() != DType::U32 {
        return Err(Error::UnsupportedDType { op: OP, dtype: taps.dtype(), why: "taps are u32".into() });
    }
    check_fits(OP, s, l)?;
    check_fits(OP, taps, tl)?;
    let numel = [g.n, g.c, g.h, g.w].iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX);
    let n = index_u32(OP, numel, "the image")?;
    let meta = conv_meta(OP, g, n, 0, l, Some(tl))?;
    let ctx = s.context();
    let out = GpuStorage::alloc(ctx, OP, dtype, numel)?;
    if n == 0 {
        return Ok(out);
    }
    let key = format!("max_pool_backward|{dtype}");
    let kernel = ctx.cache.get(&ctx.device, OP, &key, || max_pool_backward_source(dtype).unwrap_or_default())?;
    ctx.dispatch(OP, &kernel, &[s.binding(), taps.binding(), out.binding()], &meta, n.div_ceil(WG))?;
    Ok(out)
}

pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for t in ["u32", "f16"] {
        all.push((format!("im2col|{t}"), im2col_source(t)));
    }
    for dtype in [DType::F32, DType::F16, DType::I32, DType::U32] {
        all.extend(col2im_source(dtype).ok().map(|src| (format!("col2im|{dtype}"), src)));
    }
    for dtype in [DType::F32, DType::F16] {
        all.extend(max_pool_source(dtype).ok().map(|src| (format!("max_pool|{dtype}"), src)));
        all.extend(max_pool_backward_source(dtype).ok().map(|src| (format!("max_pool_backward|{dtype}"), src)));
    }
    all
}
