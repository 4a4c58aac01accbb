//! index_select, gather, scatter_add, scatter_reduce, topk. The first four run one thread per
//! output element (`shaders/index_select.wgsl`, `gather.wgsl`, `scatter_add.wgsl`,
//! `scatter_reduce.wgsl`); topk runs one workgroup per row (`shaders/topk.wgsl`). Shapes and
//! strides travel in `info`, so the specialisations are only per storage type (and per
//! contiguity for index_select, the embedding lookup). Dims, id dtypes and shapes were checked
//! before these run, by `BackendStorage`'s provided methods (kiln-backend's `checks.rs`).

use super::params::{Meta, kernel_params};
use super::{WG, compute_type, enables, module, storage_type};
use crate::shaders::Template;
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

kernel_params! {
    /// `shaders/index_select.wgsl`: ids are read as `ids[ids_offset + j * ids_stride]`.
    struct IndexSelectParams { numel: u32, dim: u32, n_ids: u32, ids_offset: u32, ids_stride: u32, inner: u32, src: u32 }
}

kernel_params! {
    /// `shaders/gather.wgsl`: `src` and `ids` are layout block bases.
    struct GatherParams { numel: u32, dim: u32, src: u32, ids: u32 }
}

kernel_params! {
    /// `shaders/scatter_add.wgsl` and `scatter_reduce.wgsl` (which alone reads `op`, an index
    /// into `ScatterOp::ALL`, and `include_self`); `dst`, `ids`, `src` are layout block bases.
    struct ScatterParams { numel: u32, dim: u32, dst: u32, ids: u32, src: u32, op: u32, include_self: u32 }
}

kernel_params! {
    /// `shaders/topk.wgsl`: one workgroup per row of `len`; `src` is a layout block base.
    struct TopkParams { rows: u32, len: u32, k: u32, largest: u32, last_stride: u32, src: u32 }
}

fn workgroups(numel: u32) -> u32 {
    numel.div_ceil(WG)
}

fn index_select_source(t: &str, contiguous: bool) -> String {
    let enable = if t == "f16" { enables(&[DType::F16]) } else { "" };
    let body = Template::new(crate::shaders::INDEX_SELECT)
        .params::<IndexSelectParams>()
        .set("T", t)
        .set("CONTIGUOUS", if contiguous { "true" } else { "false" })
        .render();
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
    let mut meta = Meta::new();
    let src = meta.layout(OP, l)?;
    let meta = meta.finish(IndexSelectParams {
        numel: n,
        dim: dim as u32,
        n_ids: il.shape()[0] as u32,
        ids_offset: il.offset() as u32,
        ids_stride: index_u32(OP, il.strides()[0], "an ids stride")?,
        inner: inner as u32,
        src,
    });
    let contiguous = l.is_contiguous();
    let kernel =
        ctx.cache.get(&ctx.device, OP, &index_select_key(t, contiguous), || index_select_source(t, contiguous))?;
    ctx.dispatch(OP, &kernel, &[s.buffer(), ids.buffer(), out.buffer()], &meta, workgroups(n))?;
    Ok(out)
}

fn gather_source(t: &str) -> String {
    let enable = if t == "f16" { enables(&[DType::F16]) } else { "" };
    module(enable, false, &Template::new(crate::shaders::GATHER).params::<GatherParams>().set("T", t).render())
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
    let mut meta = Meta::new();
    let (src, ids_base) = (meta.layout(OP, l)?, meta.layout(OP, il)?);
    let meta = meta.finish(GatherParams { numel: n, dim: dim as u32, src, ids: ids_base });
    let kernel = ctx.cache.get(&ctx.device, OP, &format!("gather|{t}"), || gather_source(t))?;
    ctx.dispatch(OP, &kernel, &[s.buffer(), ids.buffer(), out.buffer()], &meta, workgroups(n))?;
    Ok(out)
}

fn scatter_add_source(dtype: DType) -> Result<String> {
    let body = Template::new(crate::shaders::SCATTER_ADD)
        .params::<ScatterParams>()
        .set("T", numeric_type("scatter_add", dtype)?)
        .set("C", compute_type(dtype))
        .render();
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
    let meta = scatter_meta(OP, n, dim, [l, il, sl], 0, false)?;
    let dtype = s.dtype();
    let kernel = ctx
        .cache
        .get(&ctx.device, OP, &format!("scatter_add|{dtype}"), || scatter_add_source(dtype).unwrap_or_default())?;
    ctx.dispatch(OP, &kernel, &[s.buffer(), ids.buffer(), src.buffer(), out.buffer()], &meta, workgroups(n))?;
    Ok(out)
}

/// Metadata of scatter_add and scatter_reduce: the layouts of dst, ids and src.
fn scatter_meta(op: &'static str, n: u32, dim: usize, [l, il, sl]: [&Layout; 3], code: u32, include_self: bool) -> Result<Vec<u32>> {
    let mut meta = Meta::new();
    let (dst, ids, src) = (meta.layout(op, l)?, meta.layout(op, il)?, meta.layout(op, sl)?);
    Ok(meta.finish(ScatterParams { numel: n, dim: dim as u32, dst, ids, src, op: code, include_self: u32::from(include_self) }))
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
    let body = Template::new(crate::shaders::SCATTER_REDUCE)
        .params::<ScatterParams>()
        .set("T", numeric_type("scatter_reduce", dtype)?)
        .set("C", compute_type(dtype))
        .set("NAN", nan)
        .set("MEAN", mean)
        .render();
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
    let meta = scatter_meta(OP, n, dim, [l, il, sl], code, include_self)?;
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
    let body = Template::new(crate::shaders::TOPK)
        .params::<TopkParams>()
        .set("T", numeric_type("topk", dtype)?)
        .set("KEY", order_key(dtype))
        .render();
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
    let last_stride = index_u32(OP, step, "a last-dim stride")?;
    let mut meta = Meta::new();
    let src = meta.layout(OP, l)?;
    let meta = meta.finish(TopkParams { rows: rows as u32, len: len as u32, k: k as u32, largest: largest as u32, last_stride, src });
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
