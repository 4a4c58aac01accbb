//! Helpers every kernel shares: errors, fallible allocation, maps that go parallel when the
//! data is big enough to repay the threads, and wider vector instructions where the CPU has them.

use kiln_backend::{DType, Error, Result};
use rayon::prelude::*;

/// Below this many elements, work stays on the calling thread: splitting it costs more than it saves.
pub(crate) const PAR_MIN: usize = 1 << 15;

pub(crate) fn unsupported(op: &'static str, dtype: DType, why: &str) -> Error {
    Error::UnsupportedDType { op, dtype, why: format!(" ({why})") }
}

/// A vector of `n` copies of `fill`, or `OutOfMemory` instead of an abort when `n` is absurd.
pub(crate) fn alloc<T: Clone>(op: &'static str, n: usize, fill: T) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| oom(op, n))?;
    v.resize(n, fill);
    Ok(v)
}

/// An empty vector with room for `n` elements, or `OutOfMemory`.
pub(crate) fn with_capacity<T>(op: &'static str, n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| oom(op, n))?;
    Ok(v)
}

fn oom(op: &'static str, n: usize) -> Error {
    Error::OutOfMemory { op, msg: format!("cannot allocate {n} elements on the host") }
}

/// Product of `dims`, or `InvalidArgument` when it overflows `usize`.
/// Element count of `dims`: 0 when any dim is 0, however large the others.
pub(crate) fn product(op: &'static str, dims: &[usize]) -> Result<usize> {
    kiln_backend::checked_numel(dims)
        .ok_or_else(|| Error::invalid(op, format!("shape {dims:?} has more elements than fit in memory")))
}

/// `f(row)` for each consecutive row of `len` elements (`len > 0`, `src.len()` a multiple of it).
pub(crate) fn map_rows<T, U, F>(src: &[T], len: usize, f: F) -> Vec<U>
where
    T: Sync,
    U: Send,
    F: Fn(&[T]) -> U + Sync + Send,
{
    if src.len() >= PAR_MIN && src.len() / len > 1 {
        src.par_chunks_exact(len).map(f).collect()
    } else {
        src.chunks_exact(len).map(f).collect()
    }
}

/// `f(block_index, block)` over consecutive blocks of `out` (`len > 0`).
pub(crate) fn for_each_block<T, F>(out: &mut [T], len: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync + Send,
{
    if out.len() >= PAR_MIN && out.len() / len > 1 {
        out.par_chunks_mut(len).enumerate().for_each(|(i, b)| f(i, b));
    } else {
        out.chunks_mut(len).enumerate().for_each(|(i, b)| f(i, b));
    }
}

/// Runs `body`, a loop over slices, compiled for AVX2 when the CPU has it (detected once, then
/// a cached check), else as built (x86-64's baseline is SSE2, two f64 or four f32 per
/// instruction). Only what inlines into `body` gets the wider instructions, so keep the loop
/// and its per-element closure inside it, and pass `#[inline(always)] move || ...`: without
/// `inline(always)` the closure may be compiled on its own at the baseline, and without `move`
/// it reads every captured scalar through a pointer the loop's stores might alias, which keeps
/// LLVM from vectorising. Results are the same either way: Rust never fuses a multiply and an
/// add on its own, and every other instruction rounds as IEEE says.
#[inline(always)]
pub(crate) fn vectorised<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, the only feature `avx2` enables.
        return unsafe { avx2(body) };
    }
    body()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<R>(body: impl FnOnce() -> R) -> R {
    body()
}
