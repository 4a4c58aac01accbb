//! Tensors past `max_storage_buffer_binding_size` (128 MiB on lavapipe and many drivers): a
//! buffer that large can exist (up to `max_buffer_size`) but no shader may bind it whole.
//!
//! Ops that support it run in pieces whose every buffer fits a binding: the piece's span of
//! each big input is copied into a pooled buffer of its own (a buffer copy, at copy bandwidth),
//! the ordinary kernel runs on those, and its result is copied to its place in the big output.
//! Inputs that fit a binding are bound whole, as always. Supported:
//!
//! - elementwise ops (unary, binary, where, cast): pieces are contiguous ranges of the output,
//!   cut along the outermost dims first;
//! - reductions over trailing dims: pieces are ranges of output rows; a single row whose reduced
//!   group itself is too big is reduced in parts whose partial results are reduced again (sum,
//!   prod, max, min); argmax/argmin pick the part by its extreme value and add the part's first
//!   position to the position within it (read back on the host: one sync per such row);
//! - matmul `[b, m, k] · [b, k, n]`: pieces are rows of A and C, per batch entry; B (one batch
//!   entry of it) must fit a binding;
//! - in-place ops over a whole buffer (GradScaler's unscale): windows copied out, changed and
//!   copied back.
//!
//! A piece must cover a compact span of each input: a non-contiguous input whose rows are spread
//! over more than a binding (a transposed huge matrix, say) is refused with a typed
//! `OutOfMemory` naming the op; make it contiguous in smaller parts first. Pieces are placed by
//! buffer copies, which move whole 4-byte words; an f16 piece at an odd element goes through
//! the copy kernel instead, which is refused (`Unsupported`) when the output itself is past the
//! limit. Every other op given
//! a buffer past the limit refuses the same way (see `batch.rs`), so nothing is ever bound out
//! of bounds.

use crate::context::{GpuContext, GpuDevice};
use crate::kernels::gpu_size;
use crate::storage::GpuStorage;
use kiln_backend::{BackendStorage, DType, Error, Layout, ReduceOp, Result};

/// An elementwise op on one piece: its inputs, its element count; its contiguous output.
pub(crate) type PieceOp<'a> = dyn Fn(&[(&GpuStorage, &Layout)], usize) -> Result<GpuStorage> + 'a;

/// The largest buffer a shader may bind.
fn limit(ctx: &GpuContext) -> u64 {
    ctx.limits.max_storage_buffer_binding_size
}

fn too_big(op: &'static str, ctx: &GpuContext, what: String) -> Error {
    Error::OutOfMemory {
        op,
        msg: format!("{what} exceeds this adapter's max_storage_buffer_binding_size of {} bytes", limit(ctx)),
    }
}

/// Does `s` need a window rather than a whole binding?
fn oversized(s: &GpuStorage) -> bool {
    (s.len() as u64).saturating_mul(gpu_size(s.dtype())) > limit(s.context())
}

/// Storage elements `[first, end)` that `l` can touch (`first == end` when empty).
fn span(l: &Layout) -> (usize, usize) {
    if l.numel() == 0 { (l.offset(), l.offset()) } else { (l.offset(), l.storage_extent()) }
}

/// Bytes a window over `l`'s span takes, counting the rounding to 4-byte copy boundaries.
fn window_bytes(dtype: DType, l: &Layout) -> u64 {
    let (first, end) = span(l);
    let size = gpu_size(dtype);
    (end as u64 * size).next_multiple_of(4) - (first as u64 * size) / 4 * 4
}

/// Does a piece with these inputs (and `out_elems` outputs of at most 4 bytes) fit bindings?
fn piece_fits(ctx: &GpuContext, inputs: &[(&GpuStorage, Layout)], out_elems: usize) -> bool {
    (out_elems as u64).saturating_mul(4) <= limit(ctx)
        && inputs.iter().all(|(s, l)| !oversized(s) || window_bytes(s.dtype(), l) <= limit(ctx))
}

/// The input as a piece's kernel sees it: whole when it fits a binding, else a copy of the
/// span `l` covers, with `l` rebased onto the copy.
fn window(op: &'static str, s: &GpuStorage, l: &Layout) -> Result<Option<(GpuStorage, Layout)>> {
    if !oversized(s) {
        return Ok(None);
    }
    let size = gpu_size(s.dtype());
    let (first, end) = span(l);
    let start_byte = first as u64 * size / 4 * 4;
    let end_byte = (end as u64 * size).next_multiple_of(4).min(s.byte_size());
    let skip = ((first as u64 * size - start_byte) / size) as usize;
    let elems = ((end_byte - start_byte) / size) as usize;
    let copy = GpuStorage::alloc(s.context(), op, s.dtype(), elems.max(skip + (end - first)))?;
    if end_byte > start_byte {
        s.context().copy(s.binding(), start_byte, copy.binding(), 0, end_byte - start_byte)?;
    }
    let rebased = Layout::new(l.shape().to_vec(), l.strides().to_vec(), l.offset() - first + skip);
    Ok(Some((copy, rebased)))
}

/// Runs the in-place op `f(storage, len)` on the first `len` elements of `s`: on `s` itself
/// when it fits a binding, else window by window, each copied out, changed and copied back.
pub(crate) fn in_place(op: &'static str, s: &GpuStorage, f: &dyn Fn(&GpuStorage, usize) -> Result<()>) -> Result<()> {
    let ctx = s.context();
    // The pool rounds sizes up, and what is bound is the whole (rounded) buffer.
    if s.byte_size() <= limit(ctx) {
        return f(s, s.len());
    }
    // A power-of-two window is its own pool size class, so its buffer fits the limit too; its
    // multiple-of-4 length keeps windows on 4-byte boundaries (buffer copies move whole words)
    // and on vec4 kernels.
    let size = gpu_size(s.dtype());
    let window = (((1u64 << (63 - limit(ctx).max(16).leading_zeros())) / size) as usize).max(4);
    let temp = GpuStorage::alloc(ctx, op, s.dtype(), window)?;
    let mut at = 0;
    while at < s.len() {
        let len = window.min(s.len() - at);
        // An odd f16 tail moves one more element along, into the buffer's padding and back.
        let bytes = (len as u64 * size).next_multiple_of(4);
        ctx.copy(s.binding(), at as u64 * size, temp.binding(), 0, bytes)?;
        f(&temp, len)?;
        ctx.copy(temp.binding(), 0, s.binding(), at as u64 * size, bytes)?;
        at += len;
    }
    Ok(())
}

/// Copies `piece` (contiguous) to element `at` of `out`: a buffer copy, or, where the bytes
/// are not whole 4-byte words (f16 at an odd element), the copy kernel, which needs `out` to
/// fit a binding.
fn place(op: &'static str, out: &mut GpuStorage, at: usize, piece: &GpuStorage, elems: usize) -> Result<()> {
    let size = gpu_size(out.dtype());
    let (dst, bytes) = (at as u64 * size, elems as u64 * size);
    if bytes == 0 {
        return Ok(());
    }
    if dst % 4 != 0 {
        if oversized(out) {
            return Err(Error::Unsupported {
                op,
                msg: format!(
                    "a {} tensor past the binding limit split at element {at}: pieces must start on 4-byte boundaries",
                    out.dtype()
                ),
            });
        }
        let target = Layout::contiguous_with_offset(&[elems], at);
        return piece.copy_into(&Layout::contiguous(&[elems]), out, &target);
    }
    // A copy moves whole words: an odd f16 tail takes one more element along, from the piece's
    // (pooled, larger) buffer into the next piece's place, which that piece overwrites after,
    // or into the output's padding past its last element.
    out.context().copy(piece.binding(), 0, out.binding(), dst, bytes.next_multiple_of(4))
}

/// Splits dim `d` of every layout in two (or `None` past the last dim of `dims`).
fn halve(ls: &[Layout], dims: usize) -> Option<(Vec<Layout>, Vec<Layout>)> {
    let shape = ls[0].shape();
    let d = (0..dims).find(|&d| shape[d] > 1)?;
    // Even where possible: then every piece starts at an even element, on a 4-byte boundary
    // even for 2-byte f16, and is placed by a plain buffer copy.
    let half = if shape[d] >= 4 { shape[d] / 4 * 2 } else { shape[d] / 2 };
    let lo = ls.iter().map(|l| l.narrow(d, 0, half)).collect();
    let hi = ls.iter().map(|l| l.narrow(d, half, shape[d] - half)).collect();
    Some((lo, hi))
}

/// More pieces than this means a layout spread thin over a huge buffer (a transposed huge
/// matrix): each piece would copy most of it. Refused rather than crawled through.
const MAX_PIECES: usize = 1024;

/// `layouts` cut (outermost splittable dims first, among the first `dims`) into pieces for
/// which `fits` holds. The pieces come in row-major order.
fn pieces(
    op: &'static str,
    ctx: &GpuContext,
    layouts: Vec<Layout>,
    dims: usize,
    fits: &dyn Fn(&[Layout]) -> bool,
) -> Result<Vec<Vec<Layout>>> {
    let mut done = Vec::new();
    let mut todo = vec![layouts];
    while let Some(ls) = todo.pop() {
        if done.len() + todo.len() > MAX_PIECES {
            return Err(too_big(
                op,
                ctx,
                format!(
                    "an input laid out as {:?} (not compact enough to split into windows; make it contiguous in parts)",
                    ls[0]
                ),
            ));
        }
        if fits(&ls) {
            done.push(ls);
            continue;
        }
        let Some((lo, hi)) = halve(&ls, dims) else {
            return Err(too_big(op, ctx, format!("a piece of shape {:?} (layouts {ls:?})", ls[0].shape())));
        };
        // Stack order: `lo` is popped first.
        todo.push(hi);
        todo.push(lo);
    }
    Ok(done)
}

/// Runs an elementwise op in pieces when an input or the output is past the binding limit;
/// `None` when everything fits (the caller runs it whole). `f` runs the op on one piece's
/// inputs (all of the piece's shape) and element count, and returns its contiguous output.
pub(crate) fn elementwise(
    ctx: &GpuDevice,
    op: &'static str,
    inputs: &[(&GpuStorage, &Layout)],
    numel: usize,
    f: &PieceOp,
) -> Result<Option<GpuStorage>> {
    if (numel as u64).saturating_mul(4) <= limit(ctx) && !inputs.iter().any(|(s, _)| oversized(s)) {
        return Ok(None);
    }
    if (numel as u64).saturating_mul(4) > ctx.limits.max_buffer_size {
        return Err(Error::OutOfMemory {
            op,
            msg: format!(
                "{numel} elements exceed this adapter's max_buffer_size of {} bytes",
                ctx.limits.max_buffer_size
            ),
        });
    }
    // All-contiguous inputs are cut as flat ranges, so that a short outer dim is no obstacle.
    let flat = inputs.iter().all(|(_, l)| l.is_contiguous());
    let shape: Vec<usize> = match inputs.first() {
        Some((_, l)) if !flat => l.shape().to_vec(),
        _ => vec![numel],
    };
    let mut layouts: Vec<Layout> = inputs
        .iter()
        .map(|(_, l)| if flat { Layout::contiguous_with_offset(&shape, l.offset()) } else { (*l).clone() })
        .collect();
    layouts.push(Layout::contiguous(&shape)); // the output, to track each piece's place
    let n_in = inputs.len();
    let fits = |ls: &[Layout]| {
        let with: Vec<(&GpuStorage, Layout)> = inputs.iter().zip(ls).map(|((s, _), l)| (*s, l.clone())).collect();
        piece_fits(ctx, &with, ls[n_in].numel())
    };
    let cut = pieces(op, ctx, layouts, shape.len(), &fits)?;
    let mut out: Option<GpuStorage> = None;
    for ls in cut {
        let windows: Vec<Option<(GpuStorage, Layout)>> =
            inputs.iter().zip(&ls).map(|((s, _), l)| window(op, s, l)).collect::<Result<_>>()?;
        let args: Vec<(&GpuStorage, &Layout)> = inputs
            .iter()
            .zip(&ls)
            .zip(&windows)
            .map(|(((s, _), l), w)| match w {
                Some((ws, wl)) => (ws, wl),
                None => (*s, l),
            })
            .collect();
        let piece = f(&args, ls[n_in].numel())?;
        if out.is_none() {
            out = Some(GpuStorage::alloc(ctx, op, piece.dtype(), numel)?);
        }
        if let Some(target) = out.as_mut() {
            place(op, target, ls[n_in].offset(), &piece, ls[n_in].numel())?;
        }
    }
    // Some piece always exists: numel is past the limit or an input is, so it is not 0.
    out.ok_or_else(|| Error::invalid(op, "no pieces")).map(Some)
}

/// Generates an input-less op (random numbers) in pieces when its output is past the binding
/// limit; `None` when it fits. `f(start, n)` makes elements `start..start + n` (`start` a
/// multiple of 4, so a piece starts on a Philox block).
pub(crate) fn generate(
    ctx: &GpuDevice,
    op: &'static str,
    dtype: DType,
    numel: usize,
    f: &dyn Fn(usize, usize) -> Result<GpuStorage>,
) -> Result<Option<GpuStorage>> {
    let size = gpu_size(dtype);
    if (numel as u64).saturating_mul(size) <= limit(ctx) {
        return Ok(None);
    }
    if (numel as u64).saturating_mul(size) > ctx.limits.max_buffer_size {
        return Err(Error::OutOfMemory {
            op,
            msg: format!(
                "{numel} elements exceed this adapter's max_buffer_size of {} bytes",
                ctx.limits.max_buffer_size
            ),
        });
    }
    // A power of two elements: a multiple of 4 that fits the limit, in its own pool size class.
    let window = (1usize << (63 - (limit(ctx) / size).max(4).leading_zeros())).min(u32::MAX as usize / 2 + 1);
    let mut out = GpuStorage::alloc(ctx, op, dtype, numel)?;
    let mut start = 0;
    while start < numel {
        let n = window.min(numel - start);
        let piece = f(start, n)?;
        place(op, &mut out, start, &piece, n)?;
        start += n;
    }
    Ok(Some(out))
}

/// Runs a reduction over the last `reduced_dims` dims in pieces when the input or the output
/// is past the binding limit; `None` when everything fits.
pub(crate) fn reduce(
    s: &GpuStorage,
    l: &Layout,
    op: ReduceOp,
    reduced_dims: usize,
    f: &dyn Fn(&GpuStorage, &Layout, usize) -> Result<GpuStorage>,
) -> Result<Option<GpuStorage>> {
    let name = op.name();
    let ctx = s.context();
    if l.numel() == 0 || reduced_dims > l.rank() {
        return Ok(None);
    }
    let kept_rank = l.rank() - reduced_dims;
    let rows: usize = l.shape()[..kept_rank].iter().product();
    if !oversized(s) && (rows as u64).saturating_mul(4) <= limit(ctx) {
        return Ok(None);
    }
    // The output as a layout of the input's rank (stride 0 over the reduced dims), so that
    // narrowing a kept dim tracks where a piece's rows go.
    let mut out_strides = kiln_backend::Layout::contiguous(&l.shape()[..kept_rank]).strides().to_vec();
    out_strides.resize(l.rank(), 0);
    let out_layout = Layout::new(l.shape().to_vec(), out_strides, 0);
    let out_dtype = if op.is_arg() { DType::U32 } else { s.dtype() };
    let mut out = GpuStorage::alloc(ctx, name, out_dtype, rows)?;
    // Rows first; a single row too big for a window is split over its reduced dims below.
    let row_fits = |ls: &[Layout]| {
        let piece_rows: usize = ls[1].shape()[..kept_rank].iter().product();
        piece_fits(ctx, &[(s, ls[0].clone())], piece_rows) || ls[0].shape()[..kept_rank].iter().all(|&d| d == 1)
    };
    for ls in pieces(name, ctx, vec![l.clone(), out_layout], kept_rank, &row_fits)? {
        let piece_rows: usize = ls[1].shape()[..kept_rank].iter().product();
        let result = if piece_fits(ctx, &[(s, ls[0].clone())], piece_rows) {
            let w = window(name, s, &ls[0])?;
            let (ws, wl) = w.as_ref().map_or((s, &ls[0]), |(a, b)| (a, b));
            f(ws, wl, reduced_dims)?
        } else {
            one_big_row(s, &ls[0], op, kept_rank, f)?
        };
        place(name, &mut out, ls[1].offset(), &result, piece_rows)?;
    }
    Ok(Some(out))
}

/// Reduces one output row whose group is too big for a window: in parts over the reduced
/// dims, then the parts' results together (only for ops where that is the same reduction).
fn one_big_row(
    s: &GpuStorage,
    l: &Layout,
    op: ReduceOp,
    kept_rank: usize,
    f: &dyn Fn(&GpuStorage, &Layout, usize) -> Result<GpuStorage>,
) -> Result<GpuStorage> {
    let name = op.name();
    let ctx = s.context();
    // Drop the (size-1) kept dims so that the parts are cut along the reduced ones; the second
    // layout tracks each part's first position in the group (parts are row-major ranges).
    let group = Layout::new(l.shape()[kept_rank..].to_vec(), l.strides()[kept_rank..].to_vec(), l.offset());
    let rank = group.rank();
    let fits = |ls: &[Layout]| piece_fits(ctx, &[(s, ls[0].clone())], 1);
    let positions = Layout::contiguous(group.shape());
    let parts = pieces(name, ctx, vec![group, positions], rank, &fits)?;
    let one = Layout::contiguous(&[1]);
    let all = Layout::contiguous(&[parts.len()]);
    // The arg ops find the part holding the extreme by its extreme value, then add that part's
    // first position to the position within it.
    let value_op = match op {
        ReduceOp::ArgMax => Some(ReduceOp::Max),
        ReduceOp::ArgMin => Some(ReduceOp::Min),
        _ => None,
    };
    let mut partials = GpuStorage::alloc(ctx, name, s.dtype(), parts.len())?;
    let mut args = GpuStorage::alloc(ctx, name, DType::U32, if value_op.is_some() { parts.len() } else { 0 })?;
    for (i, ls) in parts.iter().enumerate() {
        let w = window(name, s, &ls[0])?;
        let (ws, wl) = w.as_ref().map_or((s, &ls[0]), |(a, b)| (a, b));
        match value_op {
            Some(v) => {
                place(name, &mut partials, i, &crate::kernels::reduce::reduce(ws, wl, v, rank)?, 1)?;
                place(name, &mut args, i, &f(ws, wl, rank)?, 1)?;
            }
            None => place(name, &mut partials, i, &f(ws, wl, rank)?, 1)?,
        }
    }
    if value_op.is_none() {
        // Sum of sums, product of products, max of maxes, min of mins.
        return f(&partials, &all, 1);
    }
    let read_u32 = |t: &GpuStorage, l: &Layout| match t.to_host(l)? {
        kiln_backend::HostData::U32(v) => Ok(v),
        other => Err(Error::Backend { op: name, msg: format!("expected u32 positions, read {}", other.dtype()) }),
    };
    // The first part with the extreme (first NaN for max/min, as within a part) wins ties.
    let best = read_u32(&f(&partials, &all, 1)?, &one)?.first().copied().unwrap_or(0) as usize;
    let within = read_u32(&args, &all)?.get(best).copied().unwrap_or(0) as usize;
    let position = parts.get(best).map_or(0, |ls| ls[1].offset()) + within;
    let position =
        u32::try_from(position).map_err(|_| Error::invalid(name, format!("position {position} does not fit a u32")))?;
    GpuStorage::from_host(ctx, &kiln_backend::HostData::U32(vec![position]))
}

/// Runs `[b, m, k] · [b, k, n]` in pieces of A's and C's rows when A or C is past the binding
/// limit; `None` when everything fits. B's per-batch slice must fit a binding.
pub(crate) fn matmul(
    a: &GpuStorage,
    al: &Layout,
    b: &GpuStorage,
    bl: &Layout,
    f: &dyn Fn(&GpuStorage, &Layout, &GpuStorage, &Layout) -> Result<GpuStorage>,
) -> Result<Option<GpuStorage>> {
    const OP: &str = "matmul";
    let ctx = a.context();
    let (sa, sb) = (al.shape(), bl.shape());
    if sa.len() != 3 || sb.len() != 3 || sa[0] != sb[0] || sa[2] != sb[1] {
        return Ok(None); // the kernel reports the shape error
    }
    let (batch, m, n) = (sa[0], sa[1], sb[2]);
    let numel = batch.saturating_mul(m).saturating_mul(n);
    if (!oversized(a) && !oversized(b) && (numel as u64).saturating_mul(4) <= limit(ctx)) || numel == 0 || sa[2] == 0 {
        return Ok(None);
    }
    let mut out = GpuStorage::alloc(ctx, OP, a.dtype(), numel)?;
    // C, and the batch index, as layouts over A's dims [b, m, ·]: narrowing them with A tracks
    // each piece's place in C and its batch entries.
    let c = Layout::new(vec![batch, m, sa[2]], vec![m * n, n, 0], 0);
    let batch_of = Layout::new(vec![batch, m, sa[2]], vec![1, 0, 0], 0);
    let b_piece = |ls: &[Layout]| bl.narrow(0, ls[2].offset(), ls[2].shape()[0]);
    let fits = |ls: &[Layout]| {
        piece_fits(ctx, &[(a, ls[0].clone()), (b, b_piece(ls))], ls[1].shape()[0] * ls[1].shape()[1] * n)
    };
    for ls in pieces(OP, ctx, vec![al.clone(), c, batch_of], 2, &fits)? {
        let bp = b_piece(&ls);
        let wa = window(OP, a, &ls[0])?;
        let wb = window(OP, b, &bp)?;
        let (pa, pal) = wa.as_ref().map_or((a, &ls[0]), |(s, l)| (s, l));
        let (pb, pbl) = wb.as_ref().map_or((b, &bp), |(s, l)| (s, l));
        let piece = f(pa, pal, pb, pbl)?;
        place(OP, &mut out, ls[1].offset(), &piece, ls[1].shape()[0] * ls[1].shape()[1] * n)?;
    }
    Ok(Some(out))
}
