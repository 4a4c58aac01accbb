//! index_select, gather, scatter_add, scatter_reduce, topk. The first four run one thread per
//! output element (`shaders/index_select.wgsl`, `gather.wgsl`, `scatter_add.wgsl`,
//! `scatter_reduce.wgsl`); topk runs one workgroup per row (`shaders/topk.wgsl`). Shapes and
//! strides travel in `info`, so the specialisations are only per storage type (and per
//! contiguity for index_select, the embedding lookup). Dims, id dtypes and shapes were checked
//! before these run, by `BackendStorage`'s provided methods (kiln-backend's `checks.rs`).

use super::{WG, compute_type, enables, module, push_layout, storage_type};
use crate::storage::GpuStorage;
use kiln_backend::{BackendStorage, DType, Error, Layout, Result, ScatterOp};

/// Storage word of a pure data move: every 4-byte dtype travels as u32, f16 as itself.
pub(crate) fn move_type(op: &'static str, dtype: DType) -> Result<&'static str> {
    storage_type(op, dtype)?;
    Ok(if dtype == DType::F16 { "f16" } else { "u32" })
}

/// Dtypes that add (scatter_add, col2im) or order (topk): bool has neither.
pub(crate) fn numeric_type(op: &'static str, dtype: DType) -> Result<&'static str> {
    if dtype == DType::Bool {
        return Err(Error::UnsupportedDType { op, dtype, why: " (numeric dtypes only)".into() });
    }
    storage_type(op, dtype)
}

/// Element count as a u32 kernel index, or an error naming the op.
pub(crate) fn index_u32(op: &'static str, n: usize, what: &str) -> Result<u32> {
    u32::try_from(n)
        .map_err(|_| Error::OutOfMemory { op, msg: format!("{what} of {n} elements needs indices past u32") })
}

/// The layout must stay inside its buffer: a kernel never reads past what the tensor owns.
pub(crate) fn check_fits(op: &'static str, s: &GpuStorage, l: &Layout) -> Result<()> {
    if l.storage_extent() > s.len() {
        return Err(Error::invalid(op, format!("layout {l:?} reaches past a buffer of {} elements", s.len())));
    }
    Ok(())
}

fn workgroups(numel: u32) -> u32 {
    numel.div_ceil(WG)
}

fn index_select_source(t: &str, contiguous: bool) -> String {
    let enable = if t == "f16" { enables(&[DType::F16]) } else { "" };
    let body = crate::shaders::INDEX_SELECT
        .replace("{{T}}", t)
        .replace("{{CONTIGUOUS}}", if contiguous { "true" } else { "false" });
    module(enable, false, &body)
}

fn index_select_key(t: &str, contiguous: bool) -> String {
    format!("index_select|{t}|{}", if contiguous { "c" } else { "s" })
}

pub(crate) fn index_select(
    s: &GpuStorage,
    l: &Layout,
    ids: &GpuStorage,
    il: &Layout,
    dim: usize,
) -> Result<GpuStorage> {
    const OP: &str = "index_select";
    check_fits(OP, s, l)?;
    check_fits(OP, ids, il)?;
    let t = move_type(OP, s.dtype())?;
    let mut shape = l.shape().to_vec();
    shape[dim] = il.shape()[0];
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX);
    let n = index_u32(OP, numel, "the output")?;
    let ctx = s.context();
    let out = GpuStorage::alloc(ctx, OP, s.dtype(), numel)?;
    if n == 0 {
        return Ok(out);
    }
    let inner: usize = l.shape()[dim + 1..].iter().product();
    let mut meta =
        vec![n, dim as u32, il.shape()[0] as u32, il.offset() as u32, index_u32(OP, il.strides()[0], "an ids stride")?];
    meta.push(inner as u32);
    push_layout(OP, &mut meta, l)?;
    let contiguous = l.is_contiguous();
    let kernel =
        ctx.cache.get(&ctx.device, OP, &index_select_key(t, contiguous), || index_select_source(t, contiguous))?;
    ctx.dispatch(OP, &kernel, &[s.buffer(), ids.buffer(), out.buffer()], &meta, workgroups(n))?;
    Ok(out)
}

fn gather_source(t: &str) -> String {
    let enable = if t == "f16" { enables(&[DType::F16]) } else { "" };
    module(enable, false, &crate::shaders::GATHER.replace("{{T}}", t))
}

pub(crate) fn gather(s: &GpuStorage, l: &Layout, ids: &GpuStorage, il: &Layout, dim: usize) -> Result<GpuStorage> {
    const OP: &str = "gather";
    check_fits(OP, s, l)?;
    check_fits(OP, ids, il)?;
    let t = move_type(OP, s.dtype())?;
    let n = index_u32(OP, il.numel(), "the output")?;
    let ctx = s.context();
    let out = GpuStorage::alloc(ctx, OP, s.dtype(), il.numel())?;
    if n == 0 {
        return Ok(out);
    }
    let mut meta = vec![n, dim as u32, 0, 0];
    meta[2] = meta.len() as u32;
    push_layout(OP, &mut meta, l)?;
    meta[3] = meta.len() as u32;
    push_layout(OP, &mut meta, il)?;
    let kernel = ctx.cache.get(&ctx.device, OP, &format!("gather|{t}"), || gather_source(t))?;
    ctx.dispatch(OP, &kernel, &[s.buffer(), ids.buffer(), out.buffer()], &meta, workgroups(n))?;
    Ok(out)
}

fn scatter_add_source(dtype: DType) -> Result<String> {
    let body = crate::shaders::SCATTER_ADD
        .replace("{{T}}", numeric_type("scatter_add", dtype)?)
        .replace("{{C}}", compute_type(dtype));
    Ok(module(enables(&[dtype]), false, &body))
}

pub(crate) fn scatter_add(
    s: &GpuStorage,
    l: &Layout,
    ids: &GpuStorage,
    il: &Layout,
    src: &GpuStorage,
    sl: &Layout,
    dim: usize,
) -> Result<GpuStorage> {
    const OP: &str = "scatter_add";
    check_fits(OP, s, l)?;
    check_fits(OP, ids, il)?;
    check_fits(OP, src, sl)?;
    numeric_type(OP, s.dtype())?;
    let n = index_u32(OP, l.numel(), "the output")?;
    let ctx = s.context();
    let out = GpuStorage::alloc(ctx, OP, s.dtype(), l.numel())?;
    if n == 0 {
        return Ok(out);
    }
    let mut meta = vec![n, dim as u32, 0, 0, 0];
    for (k, layout) in [l, il, sl].into_iter().enumerate() {
        meta[2 + k] = meta.len() as u32;
        push_layout(OP, &mut meta, layout)?;
    }
    let dtype = s.dtype();
    let kernel = ctx
        .cache
        .get(&ctx.device, OP, &format!("scatter_add|{dtype}"), || scatter_add_source(dtype).unwrap_or_default())?;
    ctx.dispatch(OP, &kernel, &[s.buffer(), ids.buffer(), src.buffer(), out.buffer()], &meta, workgroups(n))?;
    Ok(out)
}

fn scatter_reduce_source(dtype: DType) -> Result<String> {
    let (nan, mean) = match dtype {
        DType::I32 => (
            "    return false;",
            // WGSL's i32 division truncates; PyTorch's integer mean floors.
            "    let d = i32(n);\n    let q = s / d;\n    return select(q, q - 1, s % d != 0 && s < 0);",
        ),
        DType::U32 => ("    return false;", "    return s / n;"),
        _ => ("    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;", "    return s / f32(n);"),
    };
    let body = crate::shaders::SCATTER_REDUCE
        .replace("{{T}}", numeric_type("scatter_reduce", dtype)?)
        .replace("{{C}}", compute_type(dtype))
        .replace("{{NAN}}", nan)
        .replace("{{MEAN}}", mean);
    Ok(module(enables(&[dtype]), false, &body))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn scatter_reduce(
    s: &GpuStorage,
    l: &Layout,
    ids: &GpuStorage,
    il: &Layout,
    src: &GpuStorage,
    sl: &Layout,
    dim: usize,
    op: ScatterOp,
    include_self: bool,
) -> Result<GpuStorage> {
    const OP: &str = "scatter_reduce";
    check_fits(OP, s, l)?;
    check_fits(OP, ids, il)?;
    check_fits(OP, src, sl)?;
    numeric_type(OP, s.dtype())?;
    let n = index_u32(OP, l.numel(), "the output")?;
    let ctx = s.context();
    let out = GpuStorage::alloc(ctx, OP, s.dtype(), l.numel())?;
    if n == 0 {
        return Ok(out);
    }
    let code = ScatterOp::ALL.iter().position(|&o| o == op).unwrap_or(0) as u32;
    let mut meta = vec![n, dim as u32, 0, 0, 0, code, u32::from(include_self)];
    for (k, layout) in [l, il, sl].into_iter().enumerate() {
        meta[2 + k] = meta.len() as u32;
        push_layout(OP, &mut meta, layout)?;
    }
    let dtype = s.dtype();
    let kernel = ctx.cache.get(&ctx.device, OP, &format!("scatter_reduce|{dtype}"), || {
        scatter_reduce_source(dtype).unwrap_or_default()
    })?;
    ctx.dispatch(OP, &kernel, &[s.buffer(), ids.buffer(), src.buffer(), out.buffer()], &meta, workgroups(n))?;
    Ok(out)
}

/// WGSL body of `order_key(x)`: a u32 whose unsigned order is the value order.
fn order_key(dtype: DType) -> &'static str {
    match dtype {
        DType::I32 => "    return bitcast<u32>(x) ^ 0x80000000u;",
        DType::U32 => "    return x;",
        // Floats: NaN (any payload or sign) above +inf, -0 equal to +0, negatives flipped so
        // that a larger magnitude sorts lower.
        _ => concat!(
            "    let b = bitcast<u32>(f32(x));\n",
            "    if (b & 0x7fffffffu) > 0x7f800000u { return 0xffffffffu; }\n",
            "    if (b & 0x7fffffffu) == 0u { return 0x80000000u; }\n",
            "    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);"
        ),
    }
}

fn topk_source(dtype: DType) -> Result<String> {
    let body = crate::shaders::TOPK.replace("{{T}}", numeric_type("topk", dtype)?).replace("{{KEY}}", order_key(dtype));
    Ok(module(enables(&[dtype]), false, &body))
}

pub(crate) fn topk(s: &GpuStorage, l: &Layout, k: usize, largest: bool) -> Result<(GpuStorage, GpuStorage)> {
    const OP: &str = "topk";
    numeric_type(OP, s.dtype())?;
    check_fits(OP, s, l)?;
    // A rank-0 tensor is one row of one element.
    let len = l.shape().last().copied().unwrap_or(1);
    if k > len {
        return Err(Error::invalid(OP, format!("k = {k} exceeds the last dim of {:?}", l.shape())));
    }
    let rows = l.numel().checked_div(len).unwrap_or(0);
    let numel = rows.saturating_mul(k);
    let n = index_u32(OP, numel, "the output")?;
    let ctx = s.context();
    let values = GpuStorage::alloc(ctx, OP, s.dtype(), numel)?;
    let indices = GpuStorage::alloc(ctx, OP, DType::U32, numel)?;
    if n == 0 {
        return Ok((values, indices));
    }
    let step = l.strides().last().copied().unwrap_or(0);
    let mut meta = vec![rows as u32, len as u32, k as u32, largest as u32, index_u32(OP, step, "a last-dim stride")?];
    push_layout(OP, &mut meta, l)?;
    let dtype = s.dtype();
    let kernel = ctx.cache.get(&ctx.device, OP, &format!("topk|{dtype}"), || topk_source(dtype).unwrap_or_default())?;
    ctx.dispatch(OP, &kernel, &[s.buffer(), values.buffer(), indices.buffer()], &meta, rows as u32)?;
    Ok((values, indices))
}

pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for t in ["u32", "f16"] {
        for c in [true, false] {
            all.push((index_select_key(t, c), index_select_source(t, c)));
        }
        all.push((format!("gather|{t}"), gather_source(t)));
    }
    for dtype in [DType::F32, DType::F16, DType::I32, DType::U32] {
        all.extend(scatter_add_source(dtype).ok().map(|src| (format!("scatter_add|{dtype}"), src)));
        all.extend(scatter_reduce_source(dtype).ok().map(|src| (format!("scatter_reduce|{dtype}"), src)));
        all.extend(topk_source(dtype).ok().map(|src| (format!("topk|{dtype}"), src)));
    }
    all
}
