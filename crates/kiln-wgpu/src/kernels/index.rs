//! index_select, gather, scatter_add, scatter_reduce, topk. The first four run one thread per
//! output element (`shaders/index_select.wgsl`, `gather.wgsl`, `scatter_add.wgsl`,
//! `scatter_reduce.wgsl`); topk sorts rows (`shaders/topk*.wgsl`, below). Shapes and
//! strides travel in `info` (typed for index_select and gather, positional for the rest), so the specialisations are only per storage type (and per
//! contiguity for index_select, the embedding lookup). Dims, id dtypes and shapes were checked
//! before these run, by `BackendStorage`'s provided methods (kiln-backend's `checks.rs`).

use super::params::{Meta, kernel_params};
use super::{WG, compute_type, enables, module, push_layout, storage_type};
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
    ctx.dispatch(OP, &kernel, &[s.binding(), ids.binding(), out.binding()], &meta, workgroups(n))?;
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
    ctx.dispatch(OP, &kernel, &[s.binding(), ids.binding(), out.binding()], &meta, workgroups(n))?;
    Ok(out)
}

/// The argument checks scatter_add and scatter_reduce share; the output's element count as a
/// u32 (kiln-backend checked dims, id dtypes and shapes before: what is left is what fits a buffer).
#[allow(clippy::too_many_arguments)]
fn scatter_checks(
    op: &'static str,
    s: &GpuStorage,
    l: &Layout,
    ids: &GpuStorage,
    il: &Layout,
    src: &GpuStorage,
    sl: &Layout,
) -> Result<u32> {
    check_fits(op, s, l)?;
    check_fits(op, ids, il)?;
    check_fits(op, src, sl)?;
    numeric_type(op, s.dtype())?;
    index_u32(op, l.numel(), "the output")
}

/// `info` for both scatter kernels: [n, dim, base(dst), base(ids), base(src), extra..., layout
/// blocks], the bases pointing at the blocks (see shaders/scatter_site.wgsl).
fn scatter_meta(op: &'static str, n: u32, dim: usize, layouts: [&Layout; 3], extra: &[u32]) -> Result<Vec<u32>> {
    let mut meta = vec![n, dim as u32, 0, 0, 0];
    meta.extend_from_slice(extra);
    for (k, layout) in layouts.into_iter().enumerate() {
        meta[2 + k] = meta.len() as u32;
        push_layout(op, &mut meta, layout)?;
    }
    Ok(meta)
}

fn scatter_add_source(dtype: DType) -> Result<String> {
    let body = Template::new(crate::shaders::SCATTER_ADD)
        .set("SITE", crate::shaders::SCATTER_SITE)
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
    let n = scatter_checks(OP, s, l, ids, il, src, sl)?;
    let ctx = s.context();
    let out = GpuStorage::alloc(ctx, OP, s.dtype(), l.numel())?;
    if n == 0 {
        return Ok(out);
    }
    let meta = scatter_meta(OP, n, dim, [l, il, sl], &[])?;
    let dtype = s.dtype();
    let kernel = ctx
        .cache
        .get(&ctx.device, OP, &format!("scatter_add|{dtype}"), || scatter_add_source(dtype).unwrap_or_default())?;
    ctx.dispatch(OP, &kernel, &[s.binding(), ids.binding(), src.binding(), out.binding()], &meta, workgroups(n))?;
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
    let body = Template::new(crate::shaders::SCATTER_REDUCE)
        .set("SITE", crate::shaders::SCATTER_SITE)
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
    let n = scatter_checks(OP, s, l, ids, il, src, sl)?;
    let ctx = s.context();
    let out = GpuStorage::alloc(ctx, OP, s.dtype(), l.numel())?;
    if n == 0 {
        return Ok(out);
    }
    let code = ScatterOp::ALL.iter().position(|&o| o == op).unwrap_or(0) as u32;
    let meta = scatter_meta(OP, n, dim, [l, il, sl], &[code, u32::from(include_self)])?;
    let dtype = s.dtype();
    let kernel = ctx.cache.get(&ctx.device, OP, &format!("scatter_reduce|{dtype}"), || {
        scatter_reduce_source(dtype).unwrap_or_default()
    })?;
    ctx.dispatch(OP, &kernel, &[s.binding(), ids.binding(), src.binding(), out.binding()], &meta, workgroups(n))?;
    Ok(out)
}

/// Pairs one workgroup of `shaders/topk.wgsl` holds (its TILE constant).
const TOPK_TILE: usize = 1024;
/// The most scratch one topk dispatch chain binds (rows run in chunks below it).
const TOPK_SCRATCH: u64 = 64 << 20;
/// The largest k that `shaders/topk_select.wgsl` (k passes per row) takes.
const TOPK_SELECT_K: usize = 16;
/// The most loop iterations topk_select.wgsl may make per invocation: half of llvmpipe's cap.
const TOPK_SELECT_LOOPS: usize = 32_768;

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
        .set("T", numeric_type("topk", dtype)?)
        .set("KEY", order_key(dtype))
        .render();
    Ok(module(enables(&[dtype]), false, &body))
}

fn topk_select_source(dtype: DType) -> Result<String> {
    let body = Template::new(crate::shaders::TOPK_SELECT)
        .set("T", numeric_type("topk", dtype)?)
        .set("KEY", order_key(dtype))
        .render();
    Ok(module(enables(&[dtype]), false, &body))
}

fn topk_step_source() -> String {
    module("", false, crate::shaders::TOPK_STEP)
}

fn topk_out_source(dtype: DType) -> Result<String> {
    let body = Template::new(crate::shaders::TOPK_OUT).set("T", numeric_type("topk", dtype)?).render();
    Ok(module(enables(&[dtype]), false, &body))
}

/// For k up to TOPK_SELECT_K on rows that fit its loop budget, k selection passes per row
/// (`topk_select.wgsl`). Otherwise sorts each last-dim row as (key, index) pairs in a scratch
/// buffer, best first, and copies out the first k. Rows are padded to a power of two P and
/// sorted by a bitonic network: tiles of up to TOPK_TILE pairs in workgroup memory
/// (`topk.wgsl`), longer compare distances one dispatch each (`topk_step.wgsl`). When k fits a tile, pairs of sorted tiles are instead
/// folded into one tile holding the better half until one is left, so a row costs
/// O(P log² tile) work rather than a full O(P log² P) sort. Selection alone (as topk once was)
/// costs O(k·len) per row in one workgroup, far too slow for large k, and stopped short on
/// lavapipe for k in the thousands: llvmpipe ends an invocation's loops after 65535 iterations.
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
    index_u32(OP, numel, "the output")?;
    let ctx = s.context();
    let values = GpuStorage::alloc(ctx, OP, s.dtype(), numel)?;
    let indices = GpuStorage::alloc(ctx, OP, DType::U32, numel)?;
    if numel == 0 {
        return Ok((values, indices));
    }
    let step = index_u32(OP, l.strides().last().copied().unwrap_or(0), "a last-dim stride")?;
    let dtype = s.dtype();
    // Small k: k selection passes, one workgroup a row, each invocation looping about
    // k·(len/64 + 8) times, which must stay clear of llvmpipe's cap of 65535. Far cheaper than
    // a sort there, on lavapipe above all (where each of the sort's barriers is costly).
    if k <= TOPK_SELECT_K && k * (len.div_ceil(64) + 8) <= TOPK_SELECT_LOOPS {
        let mut meta = vec![rows as u32, len as u32, k as u32, largest as u32, step];
        push_layout(OP, &mut meta, l)?;
        let kernel = ctx
            .cache
            .get(&ctx.device, OP, &format!("topk_select|{dtype}"), || topk_select_source(dtype).unwrap_or_default())?;
        ctx.dispatch(OP, &kernel, &[s.binding(), values.binding(), indices.binding()], &meta, rows as u32)?;
        return Ok((values, indices));
    }
    let padded = len.next_power_of_two();
    let tile = padded.min(TOPK_TILE);
    // Scratch: 8 bytes a pair, whole rows per chunk, a power of two so the pool adds nothing.
    let row_bytes = padded as u64 * 8;
    let cap = TOPK_SCRATCH.min(ctx.limits.max_storage_buffer_binding_size);
    if row_bytes > cap {
        return Err(Error::OutOfMemory {
            op: OP,
            msg: format!("a row of {len} needs {row_bytes} bytes of sort scratch; at most {cap} fit one binding"),
        });
    }
    let chunk = (1usize << (cap / row_bytes).ilog2()).min(rows);
    let flip = if largest { 0 } else { u32::MAX };
    let tile_kernel =
        ctx.cache.get(&ctx.device, OP, &format!("topk|{dtype}"), || topk_source(dtype).unwrap_or_default())?;
    let step_kernel = ctx.cache.get(&ctx.device, OP, "topk_step", topk_step_source)?;
    let out_kernel =
        ctx.cache.get(&ctx.device, OP, &format!("topk_out|{dtype}"), || topk_out_source(dtype).unwrap_or_default())?;
    let pairs = GpuStorage::alloc(ctx, OP, DType::U32, chunk * padded * 2)?;
    let (p, t) = (padded as u32, tile as u32);
    for row0 in (0..rows).step_by(chunk) {
        let n = chunk.min(rows - row0);
        let (nr, r0) = (n as u32, row0 as u32);
        let groups = |per_row: usize| index_u32(OP, n * per_row, "the workgroup count");
        // [rows, len, padded, tile, mode, s_lo, s_hi, gap, row0, step, flip, src layout]
        let tile_pass = |mode: u32, s_lo: u32, s_hi: u32, gap: u32, groups: u32| -> Result<()> {
            let mut meta = vec![nr, len as u32, p, t, mode, s_lo, s_hi, gap, r0, step, flip];
            push_layout(OP, &mut meta, l)?;
            ctx.dispatch(OP, &tile_kernel, &[s.binding(), pairs.binding()], &meta, groups)
        };
        // Short rows go TOPK_TILE / tile to a workgroup (see topk.wgsl).
        tile_pass(0, 2, t, t, groups(padded / tile)?.div_ceil((TOPK_TILE / tile) as u32))?;
        if k <= tile {
            let mut gap = tile;
            while gap < padded {
                tile_pass(2, t, t, gap as u32, groups(padded / (2 * gap))?)?;
                gap *= 2;
            }
        } else {
            let threads = groups(padded / 2)?;
            for size in (tile.ilog2() + 1..=padded.ilog2()).map(|b| 1u32 << b) {
                let mut j = size / 2;
                while j >= t {
                    ctx.dispatch(OP, &step_kernel, &[pairs.binding()], &[nr, p, size, j], threads.div_ceil(WG))?;
                    j /= 2;
                }
                tile_pass(1, size, size, t, groups(padded / tile)?)?;
            }
        }
        let mut meta = vec![nr, len as u32, p, k as u32, r0, step];
        push_layout(OP, &mut meta, l)?;
        let buffers = [s.binding(), pairs.binding(), values.binding(), indices.binding()];
        ctx.dispatch(OP, &out_kernel, &buffers, &meta, groups(k)?.div_ceil(WG))?;
    }
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
        all.extend(topk_select_source(dtype).ok().map(|src| (format!("topk_select|{dtype}"), src)));
        all.extend(topk_out_source(dtype).ok().map(|src| (format!("topk_out|{dtype}"), src)));
    }
    all.push(("topk_step".into(), topk_step_source()));
    all
}
