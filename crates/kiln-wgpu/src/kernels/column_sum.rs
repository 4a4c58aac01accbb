//! Column sums of a row-major matrix with 4-aligned columns (`shaders/column_sum.wgsl`,
//! `shaders/column_sum_finish.wgsl`): what a bias gradient is, `Σ` of `[rows, cols]` over its
//! rows. The general reduction walks such a layout one column per thread (128-byte loads per
//! subgroup); this reads four neighbouring columns per thread (512 bytes per subgroup), then adds
//! the per-chunk partials in a second pass laid out the same way.

use super::fused::{Access, raw_binding};
use super::params::{KernelParams, kernel_params};
use super::{enables, module, storage_type};
use crate::shaders::Template;
use crate::storage::GpuStorage;
use kiln_backend::{BackendStorage, DType, Error, Result};

/// Workgroups to aim for: enough to keep a large GPU busy (as `reduce.rs`'s TARGET_GROUPS).
const TARGET_GROUPS: usize = 2048;
/// Rows a lane sums at least per chunk (a chunk is 8 lanes' worth of rows).
const ROWS_PER_LANE: usize = 16;
/// Fewest rows worth this path: shorter columns are cheap either way.
pub(crate) const MIN_ROWS: usize = 64;

kernel_params! {
    /// Both passes of the column sum: `rows` summed rows; `cols4` vec4 columns; `stride4` and
    /// `offset4` the row stride and first element in vec4s; `blocks` workgroups across the
    /// columns (32 vec4 columns each); `chunks` of `chunk` rows each.
    struct ColumnSumParams { rows: u32, cols4: u32, stride4: u32, offset4: u32, blocks: u32, chunks: u32, chunk: u32 }
}

fn source(dtype: DType) -> Result<String> {
    let st = storage_type("sum", dtype)?;
    let mut b = raw_binding(1, "src", &format!("vec4<{st}>"), Access::Read);
    b += &raw_binding(2, "part", "vec4<f32>", Access::Write);
    b += "fn load4(i: u32) -> vec4<f32> { return vec4<f32>(src[i]); }\n";
    let body = Template::new(crate::shaders::COLUMN_SUM).params::<ColumnSumParams>().render();
    Ok(module(enables(&[dtype]), false, &format!("{b}\n{body}")))
}

fn finish_source(dtype: DType) -> Result<String> {
    let st = storage_type("sum", dtype)?;
    let mut b = raw_binding(1, "part", "vec4<f32>", Access::Read);
    b += &raw_binding(2, "dst", &format!("vec4<{st}>"), Access::Write);
    b += &format!("fn store4(i: u32, v: vec4<f32>) {{ dst[i] = vec4<{st}>(v); }}\n");
    let body = Template::new(crate::shaders::COLUMN_SUM_FINISH).params::<ColumnSumParams>().render();
    Ok(module(enables(&[dtype]), false, &format!("{b}\n{body}")))
}

fn key(dtype: DType, finish: bool) -> String {
    format!("column_sum|{dtype}{}", if finish { "|finish" } else { "" })
}

/// Whether [`column_sum`] takes this reduction: a float sum of `rows` rows of `cols` columns at
/// `row_stride` from `offset` (collapsed: kept dims one dim of stride 1, reduced dims one dim),
/// every vec4 aligned.
pub(crate) fn applies(dtype: DType, rows: usize, cols: usize, row_stride: usize, offset: usize) -> bool {
    matches!(dtype, DType::F32 | DType::F16)
        && rows >= MIN_ROWS
        && cols.is_multiple_of(4)
        && row_stride.is_multiple_of(4)
        && offset.is_multiple_of(4)
}

/// `out[c] = Σ_r s[offset + r·row_stride + c]` for `c < cols`, in `s`'s dtype.
pub(crate) fn column_sum(
    s: &GpuStorage,
    rows: usize,
    cols: usize,
    row_stride: usize,
    offset: usize,
) -> Result<GpuStorage> {
    const OP: &str = "sum";
    let dtype = s.dtype();
    let ctx = s.context();
    let words = |v: usize, what: &str| {
        u32::try_from(v).map_err(|_| Error::OutOfMemory { op: OP, msg: format!("{what} ({v}) needs indices past u32") })
    };
    let cols4 = cols / 4;
    let blocks = cols4.div_ceil(32);
    let chunks = TARGET_GROUPS.div_ceil(blocks).min(rows.div_ceil(8 * ROWS_PER_LANE)).max(1);
    let chunk = rows.div_ceil(chunks);
    // Recount so that no chunk is empty.
    let chunks = rows.div_ceil(chunk);
    let p = ColumnSumParams {
        rows: words(rows, "rows")?,
        cols4: words(cols4, "columns")?,
        stride4: words(row_stride / 4, "row stride")?,
        offset4: words(offset / 4, "offset")?,
        blocks: words(blocks, "column blocks")?,
        chunks: words(chunks, "chunks")?,
        chunk: words(chunk, "chunk")?,
    };
    let part = GpuStorage::alloc(ctx, OP, DType::F32, chunks * cols)?;
    let kernel = ctx.cache.get(&ctx.device, OP, &key(dtype, false), || source(dtype).unwrap_or_default())?;
    ctx.dispatch(OP, &kernel, &[s.binding(), part.binding()], p.words(), words(blocks * chunks, "workgroups")?)?;
    let out = GpuStorage::alloc(ctx, OP, dtype, cols)?;
    let kernel = ctx.cache.get(&ctx.device, OP, &key(dtype, true), || finish_source(dtype).unwrap_or_default())?;
    ctx.dispatch(OP, &kernel, &[part.binding(), out.binding()], p.words(), words(blocks, "workgroups")?)?;
    Ok(out)
}

/// Every source this module can generate.
pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for dtype in super::fused::FLOATS {
        all.extend(source(dtype).ok().map(|s| (key(dtype, false), s)));
        all.extend(finish_source(dtype).ok().map(|s| (key(dtype, true), s)));
    }
    all
}
