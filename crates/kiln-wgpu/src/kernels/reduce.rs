//! Reductions over trailing dims (`shaders/reduce.wgsl`), softmax over the last dim
//! (`shaders/softmax.wgsl`) and cumulative sums (`shaders/cumsum.wgsl`).
//!
//! Every kernel is parametrised by data in `info` (row counts, lanes per row, strides, layout
//! blocks); sources are specialised only by op, dtype, pass, how a row is walked (one stride,
//! a strided layout, or 4-aligned contiguous rows read as vec4) and whether a row has one lane
//! (no shared memory, no barriers). Each shader file holds its main template and, after
//! `// @@ name` marker lines, the snippets the generator splices into it.

use super::params::{Meta, kernel_params};
use super::{WG, compute_type, enables, load, module, push_layout, storage_type, store};
use crate::pool::Span;
use crate::shaders::Template;
use crate::{context::GpuContext, storage::GpuStorage};
use kiln_backend::{BackendStorage, DType, Error, Layout, ReduceOp, Result};
use std::sync::Arc;

/// Enough workgroups to keep a large GPU busy (an H100 holds about 8 × 132 of 256 threads);
/// fewer rows than this get their rows split into chunks folded by a second pass.
const TARGET_GROUPS: usize = 2048;
/// Elements each lane folds at least before a row gets more lanes, or a split more chunks:
/// fewer rows per workgroup waste lanes, and a split must pay for its second pass.
const PER_LANE: usize = 16;
/// The same for vec4 walks, in vec4s: a lane takes at least 64 elements, four loads at a time
/// (measured on an H200, row sums of [4096, 4096]: 25.4 µs against 28.7 with 16 elements).
const PER_LANE_VEC4: usize = 16;
/// Most chunks per row: the second pass folds them with one workgroup per row in one sweep.
const MAX_CHUNKS: usize = 1024;

const DTYPES: [DType; 4] = [DType::F32, DType::F16, DType::I32, DType::U32];

/// Which pass of a reduction a kernel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Input rows straight to the output.
    Full,
    /// Input rows to one partial (compute type, plus position for Arg ops) per chunk.
    PartialOut,
    /// Partials (contiguous, `P` per row) to the output.
    PartialIn,
}

/// How a kernel steps through the reduced elements of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Walk {
    /// `base + j·s`: the reduced dims collapse to one stride (or the row is one element).
    Linear,
    /// `base + layout_index(inner, j)`: they do not.
    Strided,
    /// Contiguous rows, 4-aligned in offset, length and row strides: vec4 loads.
    Vec4,
}

#[derive(Clone, Copy, Debug)]
struct ReduceSpec {
    op: ReduceOp,
    dtype: DType,
    stage: Stage,
    walk: Walk,
    /// One lane per row: no shared memory, no barriers.
    single: bool,
}

impl ReduceSpec {
    fn key(&self) -> String {
        let merge = if self.single { "1" } else { "t" };
        format!("reduce|{}|{}|{:?}|{:?}|{merge}", self.op.name(), self.dtype, self.stage, self.walk)
    }

    fn source(&self) -> Result<String> {
        let name = self.op.name();
        let st = storage_type(name, self.dtype)?;
        let ct = compute_type(self.dtype);
        let arg = self.op.is_arg();
        let mut b = String::new();
        let vec = self.walk == Walk::Vec4;
        let src_ty = match self.stage {
            Stage::PartialIn => ct.to_string(),
            _ if vec => format!("vec4<{st}>"),
            _ => st.to_string(),
        };
        b += &format!("@group(0) @binding(1) var<storage, read> src: array<{src_ty}>;\n");
        let mut next = 2;
        if self.stage == Stage::PartialIn && arg {
            b += "@group(0) @binding(2) var<storage, read> src_idx: array<u32>;\n";
            next = 3;
        }
        let dst_ty = match self.stage {
            Stage::PartialOut => ct,
            _ if arg => "u32",
            _ => st,
        };
        b += &format!("@group(0) @binding({next}) var<storage, read_write> dst: array<{dst_ty}>;\n");
        if self.stage == Stage::PartialOut && arg {
            b += &format!("@group(0) @binding({}) var<storage, read_write> dst_idx: array<u32>;\n", next + 1);
        }
        if vec {
            b += &format!("fn load_src4(k: u32) -> vec4<{ct}> {{ return vec4<{ct}>(src[k]); }}\n");
        } else {
            let loaded = if self.stage == Stage::PartialIn { "src[k]".to_string() } else { load(self.dtype, "src[k]") };
            b += &format!("fn load_src(k: u32) -> {ct} {{ return {loaded}; }}\n");
        }
        let (row_base, element, position) = match (self.stage, self.walk) {
            (Stage::PartialIn, _) => ("g * info[1]", "base + j", if arg { "src_idx[base + j]" } else { "j" }),
            (_, Walk::Linear) => ("layout_index(info[7], g)", "base + j * info[6]", "j"),
            (_, Walk::Strided) => ("layout_index(info[7], g)", "base + layout_index(info[8], j)", "j"),
            (_, Walk::Vec4) => ("layout_index(info[7], g) / 4u", "base + j", "4u * j"),
        };
        b += &format!("fn row_base(g: u32) -> u32 {{ return {row_base}; }}\n");
        b += &format!("fn element(base: u32, j: u32) -> u32 {{ return {element}; }}\n");
        b += &format!("fn position(base: u32, j: u32) -> u32 {{ return {position}; }}\n");
        let write = match self.stage {
            Stage::PartialOut if arg => "let k = g * chunks + p; dst[k] = st.v; dst_idx[k] = st.i;".to_string(),
            Stage::PartialOut => "dst[g * chunks + p] = st.v;".to_string(),
            _ if arg => "dst[g] = st.i;".to_string(),
            _ => format!("dst[g] = {};", store(self.dtype, "st.v")),
        };
        b += &format!("fn write_out(g: u32, p: u32, chunks: u32, st: State) {{ {write} }}\n");

        let identity = match self.op {
            ReduceOp::Prod => format!("{ct}(1)"),
            _ => format!("{ct}(0)"),
        };
        let src = crate::shaders::REDUCE;
        let float = ct == "f32";
        let nan = if float { section(src, "fold-nan") } else { "" };
        let fold = match self.op {
            ReduceOp::Sum => section(src, "fold-sum").to_string(),
            ReduceOp::Prod => section(src, "fold-prod").to_string(),
            ReduceOp::Max | ReduceOp::ArgMax => {
                Template::new(section(src, "fold-extreme")).set("NAN", nan).set("CMP", ">").render()
            }
            ReduceOp::Min | ReduceOp::ArgMin => {
                Template::new(section(src, "fold-extreme")).set("NAN", nan).set("CMP", "<").render()
            }
        };
        let accumulate = section(
            src,
            match (self.op == ReduceOp::Sum && float, vec) {
                (true, false) => "accumulate-float-sum",
                (false, false) => "accumulate-fold",
                (true, true) => "accumulate-vec-float-sum",
                (false, true) => "accumulate-vec-fold",
            },
        );
        let (shared, merge) = if self.single { ("", "merge-single") } else { ("shared-tree", "merge-tree") };
        let body = Template::new(template(src))
            .set("BINDINGS", b)
            .set("SHARED", section(src, shared))
            .set("MERGE", section(src, merge))
            .set("FOLD", fold)
            .set("ACCUMULATE", accumulate)
            .set("CT", ct)
            .set("IDENTITY", identity)
            .render();
        Ok(module(enables(&[self.dtype]), false, &body))
    }
}

/// The part of a shader file before its first `// @@ name` marker line.
fn template(src: &str) -> &str {
    src.find("\n// @@ ").map_or(src, |end| &src[..end + 1])
}

/// The lines after `// @@ name` up to the next marker (empty when there is none; the naga test
/// would then fail on the generated source).
fn section<'a>(src: &'a str, name: &str) -> &'a str {
    let marker = format!("\n// @@ {name}\n");
    let Some(start) = src.find(&marker).map(|i| i + marker.len()) else { return "" };
    let rest = &src[start..];
    rest.find("\n// @@ ").map_or(rest, |end| &rest[..end + 1])
}

/// Drops size-1 dims and merges neighbours that step through memory as one dim.
fn collapse(shape: &[usize], strides: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (&d, &s) in shape.iter().zip(strides) {
        if d == 1 {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 == s * d => *last = (last.0 * d, s),
            _ => out.push((d, s)),
        }
    }
    out.into_iter().unzip()
}

fn checked_product(op: &'static str, dims: &[usize]) -> Result<usize> {
    // 0 when any dim is 0, however large the others (as on the CPU).
    kiln_backend::checked_numel(dims).ok_or_else(|| Error::OutOfMemory {
        op,
        msg: format!("shape {dims:?} has more elements than the address space"),
    })
}

fn to_u32(op: &'static str, v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::OutOfMemory { op, msg: format!("{what} ({v}) needs indices past u32") })
}

fn lanes_for(len: usize) -> usize {
    len.max(1).next_power_of_two().min(WG as usize)
}

/// How one reduction is laid over workgroups.
struct Plan {
    /// Rows per workgroup.
    r: usize,
    lane_major: bool,
    /// Chunks per row (1: no second pass) and chunk length.
    chunks: usize,
    chunk: usize,
}

/// `len` is in the units a lane loads (elements, or vec4s), `per_lane` how many of them a lane
/// should fold at least before a row gets more lanes (and, split into chunks, per chunk).
/// `row_step` is the storage distance between neighbouring rows (innermost kept dim), `linear`
/// whether a row's elements are `base + j·s`, with `s` = `elem_step`.
fn plan(rows: usize, len: usize, per_lane: usize, linear: bool, elem_step: usize, row_step: Option<usize>) -> Plan {
    let wg = WG as usize;
    let rows_adjacent = row_step == Some(1) && !(linear && elem_step == 1);
    let (r, lane_major) = if rows_adjacent {
        // Column reduction: neighbouring threads take neighbouring rows so a warp reads one
        // stretch of memory per step; up to 32 rows, and no more lanes than the row has.
        let r_cap = rows.next_power_of_two().min(32);
        let lanes = lanes_for(len.div_ceil(per_lane)).min(wg / r_cap);
        (wg / lanes, true)
    } else {
        (wg / lanes_for(len.div_ceil(per_lane)), false)
    };
    let lanes = wg / r;
    let tiles = rows.div_ceil(r);
    let each = len.div_ceil(lanes);
    let mut chunks = 1;
    if tiles < TARGET_GROUPS && each >= 2 * per_lane {
        chunks = TARGET_GROUPS.div_ceil(tiles).min(each / per_lane).min(MAX_CHUNKS);
    }
    let chunk = len.div_ceil(chunks.max(1)).max(1);
    // Recount so that no chunk is empty.
    let chunks = len.div_ceil(chunk).max(1);
    Plan { r, lane_major, chunks, chunk }
}

pub(crate) fn reduce(s: &GpuStorage, l: &Layout, op: ReduceOp, reduced_dims: usize) -> Result<GpuStorage> {
    let name = op.name();
    let dtype = s.dtype();
    if dtype == DType::Bool {
        return Err(Error::UnsupportedDType { op: name, dtype, why: " (cast bool to an integer dtype first)".into() });
    }
    storage_type(name, dtype)?;
    if reduced_dims > l.rank() {
        return Err(Error::invalid(
            name,
            format!("cannot reduce {reduced_dims} dims of a rank-{} tensor {:?}", l.rank(), l.shape()),
        ));
    }
    let split = l.rank() - reduced_dims;
    let (kept, reduced) = l.shape().split_at(split);
    let (kept_strides, reduced_strides) = l.strides().split_at(split);
    let rows = checked_product(name, kept)?;
    let len = checked_product(name, reduced)?;
    let out_dtype = if op.is_arg() { DType::U32 } else { dtype };
    let ctx = s.context();
    if rows == 0 {
        return GpuStorage::alloc(ctx, name, out_dtype, 0);
    }
    if len == 0 {
        return match op {
            ReduceOp::Sum => GpuStorage::full(ctx, rows, 0.0, dtype),
            ReduceOp::Prod => GpuStorage::full(ctx, rows, 1.0, dtype),
            _ => Err(Error::invalid(name, format!("reducing dims {reduced:?} of {:?}: no elements", l.shape()))),
        };
    }
    to_u32(name, rows, "output rows")?;
    to_u32(name, len, "reduced elements")?;

    let (kshape, kstrides) = collapse(kept, kept_strides);
    let (rshape, rstrides) = collapse(reduced, reduced_strides);
    let linear = rshape.len() <= 1;
    let elem_step = rstrides.first().copied().unwrap_or(0);
    let row_step = kstrides.last().copied();
    let vec = linear
        && elem_step == 1
        && len.is_multiple_of(4)
        && l.offset().is_multiple_of(4)
        && kstrides.iter().all(|s| s.is_multiple_of(4));
    let walk = match (linear, vec) {
        (_, true) => Walk::Vec4,
        (true, false) => Walk::Linear,
        (false, false) => Walk::Strided,
    };
    // A float sum down 4-aligned columns (a bias gradient): the vec4 column kernel.
    if op == ReduceOp::Sum
        && linear
        && kshape.len() == 1
        && kstrides[0] == 1
        && super::column_sum::applies(dtype, len, kshape[0], elem_step, l.offset())
    {
        return super::column_sum::column_sum(s, len, kshape[0], elem_step, l.offset());
    }
    let units = if vec { len / 4 } else { len };
    let p = plan(rows, units, if vec { PER_LANE_VEC4 } else { PER_LANE }, linear, elem_step, row_step);

    let mut meta = vec![
        rows as u32,
        units as u32,
        p.r as u32,
        p.lane_major as u32,
        p.chunks as u32,
        p.chunk as u32,
        to_u32(name, elem_step, "reduced stride")?,
        0,
        0,
    ];
    meta[7] = meta.len() as u32;
    push_layout(name, &mut meta, &Layout::new(kshape, kstrides, l.offset()))?;
    if !linear {
        meta[8] = meta.len() as u32;
        push_layout(name, &mut meta, &Layout::new(rshape, rstrides, 0))?;
    }
    let tiles = rows.div_ceil(p.r);
    let out = GpuStorage::alloc(ctx, name, out_dtype, rows)?;

    if p.chunks == 1 {
        let spec = ReduceSpec { op, dtype, stage: Stage::Full, walk, single: p.r == WG as usize };
        ctx.run_reduce(name, &spec, &[s.binding(), out.binding()], &meta, tiles)?;
        return Ok(out);
    }

    let partials = rows * p.chunks;
    let part_dtype = match compute_type(dtype) {
        "i32" => DType::I32,
        "u32" => DType::U32,
        _ => DType::F32,
    };
    let part = GpuStorage::alloc(ctx, name, part_dtype, partials)?;
    let spec = ReduceSpec { op, dtype, stage: Stage::PartialOut, walk, single: p.r == WG as usize };
    let groups = tiles.checked_mul(p.chunks).ok_or_else(|| Error::invalid(name, "too many workgroups"))?;
    let part_idx = if op.is_arg() { Some(GpuStorage::alloc(ctx, name, DType::U32, partials)?) } else { None };
    let mut bufs = vec![s.binding(), part.binding()];
    bufs.extend(part_idx.as_ref().map(|b| b.binding()));
    ctx.run_reduce(name, &spec, &bufs, &meta, groups)?;

    // Second pass: `chunks` contiguous partials per row, one row per lane group.
    let q = plan(rows, p.chunks, PER_LANE, true, 1, None);
    let meta2 = vec![rows as u32, p.chunks as u32, q.r as u32, 0, 1, p.chunks as u32, 1, 0, 0];
    let spec = ReduceSpec { op, dtype, stage: Stage::PartialIn, walk: Walk::Linear, single: q.r == WG as usize };
    let mut bufs = vec![part.binding()];
    bufs.extend(part_idx.as_ref().map(|b| b.binding()));
    bufs.push(out.binding());
    ctx.run_reduce(name, &spec, &bufs, &meta2, rows.div_ceil(q.r))?;
    Ok(out)
}

impl GpuContext {
    fn run_reduce(
        self: &Arc<Self>,
        op: &'static str,
        spec: &ReduceSpec,
        buffers: &[Span<'_>],
        meta: &[u32],
        groups: usize,
    ) -> Result<()> {
        // Sources only fail for dtypes `reduce` has already turned away.
        let kernel = self.cache.get(&self.device, op, &spec.key(), || spec.source().unwrap_or_default())?;
        self.dispatch(op, &kernel, buffers, meta, to_u32(op, groups, "workgroups")?)
    }
}

kernel_params! {
    /// `shaders/softmax.wgsl`: rows of `n` at `stride`, `lanes` threads a row; `lead` is the
    /// leading dims' layout block base.
    struct SoftmaxParams { rows: u32, n: u32, stride: u32, lanes: u32, lead: u32 }
}

kernel_params! {
    /// `shaders/cumsum.wgsl`: `lines` of `len` at `stride`; `lines_base` is the base of the
    /// layout block without the scanned dim.
    struct CumsumParams { lines: u32, len: u32, inner: u32, lanes: u32, stride: u32, lines_base: u32 }
}

fn softmax_key(dtype: DType, log: bool, single: bool, vec: bool) -> String {
    let kind = if log { "log" } else { "exp" };
    format!("softmax|{dtype}|{kind}|{}|{}", if single { "1" } else { "t" }, if vec { "vec4" } else { "scalar" })
}

fn softmax_source(dtype: DType, log: bool, single: bool, vec: bool) -> Result<String> {
    let op = if log { "log_softmax" } else { "softmax" };
    let st = storage_type(op, dtype)?;
    let b = if vec {
        format!(
            "@group(0) @binding(1) var<storage, read> src: array<vec4<{st}>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<{st}>>;
fn row_base(g: u32) -> u32 {{ return layout_index(params().lead, g) / 4u; }}
fn load_src4(k: u32) -> vec4<f32> {{ return vec4<f32>(src[k]); }}
fn store_dst4(k: u32, v: vec4<f32>) {{ dst[k] = vec4<{st}>(v); }}
"
        )
    } else {
        format!(
            "@group(0) @binding(1) var<storage, read> src: array<{st}>;
@group(0) @binding(2) var<storage, read_write> dst: array<{st}>;
fn row_base(g: u32) -> u32 {{ return layout_index(params().lead, g); }}
fn load_src(k: u32) -> f32 {{ return {}; }}
fn store_dst(k: u32, v: f32) {{ dst[k] = {}; }}
",
            load(dtype, "src[k]"),
            store(dtype, "v")
        )
    };
    let src = crate::shaders::SOFTMAX;
    let output = section(src, if log { "output-log-softmax" } else { "output-softmax" }).trim();
    let (shared, merge) = if single { ("", "merge-single") } else { ("shared-tree", "merge-tree") };
    let (first, second) = if vec { ("first-vec", "second-vec") } else { ("first-scalar", "second-scalar") };
    let body = Template::new(template(src))
        .set("BINDINGS", b)
        .set("SHARED", section(src, shared))
        .set("MERGE", section(src, merge))
        .set("FIRST", section(src, first))
        .set("SECOND", section(src, second))
        .set("OUTPUT", output)
        .params::<SoftmaxParams>()
        .render();
    Ok(module(enables(&[dtype]), false, &body))
}

pub(crate) fn softmax_last(s: &GpuStorage, l: &Layout, log: bool) -> Result<GpuStorage> {
    let name = if log { "log_softmax" } else { "softmax" };
    let dtype = s.dtype();
    if !matches!(dtype, DType::F32 | DType::F16) {
        return Err(Error::UnsupportedDType { op: name, dtype, why: " (f32 and f16 only on the GPU)".into() });
    }
    let numel = l.numel();
    let ctx = s.context();
    let out = GpuStorage::alloc(ctx, name, dtype, numel)?;
    if numel == 0 {
        return Ok(out);
    }
    to_u32(name, numel, "elements")?;
    // A rank-0 tensor is one row of one element.
    let (n, stride, lead) = match l.rank() {
        0 => (1, 0, Layout::new(vec![], vec![], l.offset())),
        r => {
            let lead = Layout::new(l.shape()[..r - 1].to_vec(), l.strides()[..r - 1].to_vec(), l.offset());
            (l.shape()[r - 1], l.strides()[r - 1], lead)
        }
    };
    let rows = numel / n;
    let vec = stride == 1
        && n.is_multiple_of(4)
        && l.offset().is_multiple_of(4)
        && lead.strides().iter().all(|s| s.is_multiple_of(4));
    let (units, per_lane) = if vec { (n / 4, PER_LANE / 4) } else { (n, PER_LANE) };
    // At least 4 lanes a row where it has that many units: one lane per short row leaves each
    // thread walking its own row, and the writes no longer coalesce.
    let lanes = lanes_for(units.div_ceil(per_lane)).max(lanes_for(units).min(4));
    let single = lanes == 1;
    let stride = to_u32(name, stride, "stride")?;
    let mut meta = Meta::new();
    let lead = meta.layout(name, &lead)?;
    let meta = meta.finish(SoftmaxParams { rows: rows as u32, n: n as u32, stride, lanes: lanes as u32, lead });
    let kernel = ctx.cache.get(&ctx.device, name, &softmax_key(dtype, log, single, vec), || {
        softmax_source(dtype, log, single, vec).unwrap_or_default()
    })?;
    let groups = to_u32(name, rows.div_ceil(WG as usize / lanes), "workgroups")?;
    ctx.dispatch(name, &kernel, &[s.binding(), out.binding()], &meta, groups)?;
    Ok(out)
}

fn cumsum_key(dtype: DType, tiled: bool) -> String {
    format!("cumsum|{dtype}|{}", if tiled { "tiled" } else { "seq" })
}

fn cumsum_source(dtype: DType, tiled: bool) -> Result<String> {
    let op = "cumsum";
    let st = storage_type(op, dtype)?;
    let ct = compute_type(dtype);
    let b = format!(
        "@group(0) @binding(1) var<storage, read> src: array<{st}>;
@group(0) @binding(2) var<storage, read_write> dst: array<{st}>;
fn load_src(k: u32) -> {ct} {{ return {}; }}
fn store_dst(k: u32, v: {ct}) {{ dst[k] = {}; }}
",
        load(dtype, "src[k]"),
        store(dtype, "v")
    );
    let src = crate::shaders::CUMSUM;
    let (shared, scan) = if tiled { ("shared-tiled", "scan-tiled") } else { ("", "scan-sequential") };
    let body = Template::new(template(src))
        .set("BINDINGS", b)
        .set("SHARED", section(src, shared))
        .set("SCAN", section(src, scan))
        .set("CT", ct)
        .params::<CumsumParams>()
        .render();
    Ok(module(enables(&[dtype]), false, &body))
}

pub(crate) fn cumsum(s: &GpuStorage, l: &Layout, dim: usize) -> Result<GpuStorage> {
    let name = "cumsum";
    let dtype = s.dtype();
    if dtype == DType::Bool {
        return Err(Error::UnsupportedDType { op: name, dtype, why: " (cast bool to an integer dtype first)".into() });
    }
    storage_type(name, dtype)?;
    kiln_backend::checks::check_dim(name, l, dim)?;
    let numel = l.numel();
    let ctx = s.context();
    let out = GpuStorage::alloc(ctx, name, dtype, numel)?;
    if numel == 0 {
        return Ok(out);
    }
    to_u32(name, numel, "elements")?;
    let len = l.shape()[dim];
    let stride = l.strides()[dim];
    let inner: usize = l.shape()[dim + 1..].iter().product();
    let lines = numel / len;
    // Short lines scan faster in one thread than in a tile with its barriers.
    let tiled = (inner == 1 || stride == 1) && len > PER_LANE;
    let lanes = if tiled { lanes_for(len) } else { 1 };
    let stride = to_u32(name, stride, "stride")?;
    let mut meta = Meta::new();
    let lines_base = meta.layout(name, &l.squeeze(dim))?;
    let params = CumsumParams {
        lines: lines as u32,
        len: len as u32,
        inner: inner as u32,
        lanes: lanes as u32,
        stride,
        lines_base,
    };
    let meta = meta.finish(params);
    let kernel = ctx
        .cache
        .get(&ctx.device, name, &cumsum_key(dtype, tiled), || cumsum_source(dtype, tiled).unwrap_or_default())?;
    let groups = to_u32(name, lines.div_ceil(WG as usize / lanes), "workgroups")?;
    ctx.dispatch(name, &kernel, &[s.binding(), out.binding()], &meta, groups)?;
    Ok(out)
}

/// Every source this module can generate.
pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for dtype in DTYPES {
        for op in ReduceOp::ALL {
            for stage in [Stage::Full, Stage::PartialOut, Stage::PartialIn] {
                let walks: &[Walk] = if stage == Stage::PartialIn {
                    &[Walk::Linear]
                } else {
                    &[Walk::Linear, Walk::Strided, Walk::Vec4]
                };
                for (&walk, single) in walks.iter().flat_map(|w| [(w, false), (w, true)]) {
                    let spec = ReduceSpec { op, dtype, stage, walk, single };
                    all.extend(spec.source().ok().map(|src| (spec.key(), src)));
                }
            }
        }
        for log in [false, true] {
            for single in [false, true] {
                for vec in [false, true] {
                    let src = softmax_source(dtype, log, single, vec).ok().filter(|_| dtype.is_float());
                    all.extend(src.map(|src| (softmax_key(dtype, log, single, vec), src)));
                }
            }
        }
        for tiled in [false, true] {
            all.extend(cumsum_source(dtype, tiled).ok().map(|src| (cumsum_key(dtype, tiled), src)));
        }
    }
    all
}
