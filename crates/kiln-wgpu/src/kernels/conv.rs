//! im2col and its adjoint col2im: convolution and pooling are built on them. Both run one thread
//! per output element (`shaders/im2col.wgsl`, `shaders/col2im.wgsl`) with the geometry in
//! `info`, so one kernel per storage type serves every window shape.

use super::index::{check_fits, index_u32, move_type, numeric_type};
use super::{WG, compute_type, enables, module, param_bits, push_layout};
use crate::storage::GpuStorage;
use kiln_backend::{BackendStorage, ConvGeometry, DType, Error, Layout, Result};

/// `[numel, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, pad]`, checked to fit the u32
/// arithmetic of the kernels (positions up to h + 2·ph).
fn geometry_words(op: &'static str, g: &ConvGeometry, numel: u32, pad: u32) -> Result<Vec<u32>> {
    let (Some(oh), Some(ow)) = (g.out_h(), g.out_w()) else {
        return Err(Error::invalid(op, format!("window does not fit the padded input: {g:?}")));
    };
    let padded_h = g.padding.0.checked_mul(2).and_then(|p| p.checked_add(g.h));
    let padded_w = g.padding.1.checked_mul(2).and_then(|p| p.checked_add(g.w));
    let mut words = vec![numel];
    for v in [
        g.c,
        g.h,
        g.w,
        g.kh,
        g.kw,
        g.stride.0,
        g.stride.1,
        g.padding.0,
        g.padding.1,
        g.dilation.0,
        g.dilation.1,
        oh,
        ow,
    ] {
        words.push(index_u32(op, v, "a geometry size")?);
    }
    for p in [padded_h, padded_w] {
        index_u32(op, p.unwrap_or(usize::MAX), "a padded image side")?;
    }
    words.push(pad);
    Ok(words)
}

fn im2col_source(t: &str) -> String {
    let (enable, pad) = if t == "f16" {
        (enables(&[DType::F16]), "    return f16(unpack2x16float(info[14]).x);")
    } else {
        ("", "    return info[14];")
    };
    module(enable, false, &crate::shaders::IM2COL.replace("{{T}}", t).replace("{{PAD}}", pad))
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
    let mut meta = geometry_words(OP, g, n, pad_bits)?;
    let ctx = s.context();
    let out = GpuStorage::alloc(ctx, OP, s.dtype(), numel)?;
    if n == 0 {
        return Ok(out);
    }
    push_layout(OP, &mut meta, l)?;
    let kernel = ctx.cache.get(&ctx.device, OP, &format!("im2col|{t}"), || im2col_source(t))?;
    ctx.dispatch(OP, &kernel, &[s.buffer(), out.buffer()], &meta, n.div_ceil(WG))?;
    Ok(out)
}

fn col2im_source(dtype: DType) -> Result<String> {
    let body =
        crate::shaders::COL2IM.replace("{{T}}", numeric_type("col2im", dtype)?).replace("{{C}}", compute_type(dtype));
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
    let mut meta = geometry_words(OP, g, n, 0)?;
    let ctx = s.context();
    let out = GpuStorage::alloc(ctx, OP, dtype, numel)?;
    if n == 0 {
        return Ok(out);
    }
    push_layout(OP, &mut meta, l)?;
    let kernel =
        ctx.cache.get(&ctx.device, OP, &format!("col2im|{dtype}"), || col2im_source(dtype).unwrap_or_default())?;
    ctx.dispatch(OP, &kernel, &[s.buffer(), out.buffer()], &meta, n.div_ceil(WG))?;
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
    all
}
