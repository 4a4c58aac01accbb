//! Out-of-place transpose of a strided matrix into a dense one, for matmul's operands.
//!
//! matrixmultiply packs A in panels of rows and B in panels of columns; when A is row-major or
//! B column-major (a Linear layer's `x · Wᵀ`) each panel is gathered one element at a time,
//! which in a product of 128 tokens costs half as much as the multiply. A transposed copy made
//! here (8×8 f32 tiles transposed in AVX registers) turns those gathers into plain copies.
//! Only values move, so the product's bits do not change.

/// Element types with a transpose (f32 gets the AVX one).
pub(crate) trait Transpose: Copy {
    /// `dst[c·rows + r] = src[r·ld + c]` for `r < rows`, `c < cols`: the `rows × cols` matrix
    /// at `src` (row stride `ld`, column stride 1) written column-major, columns `rows` apart.
    ///
    /// # Panics
    /// When `dst` is shorter than `rows·cols` or `src` does not hold every element read
    /// (callers size both from layouts they checked, so this is a bug, not a user error).
    fn transpose(src: &[Self], ld: usize, rows: usize, cols: usize, dst: &mut [Self]) {
        if bounds_ok(src.len(), ld, rows, cols, dst.len()) {
            scalar(src, ld, (0, rows), (0, cols), rows, dst);
        }
    }
}

impl Transpose for f64 {}

impl Transpose for f32 {
    fn transpose(src: &[f32], ld: usize, rows: usize, cols: usize, dst: &mut [f32]) {
        if !bounds_ok(src.len(), ld, rows, cols, dst.len()) {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX, and `bounds_ok` checked every index the tiles touch.
            unsafe { avx::transpose(src, ld, rows, cols, dst) };
            return;
        }
        scalar(src, ld, (0, rows), (0, cols), rows, dst);
    }
}

/// Whether there is anything to do; panics (a caller's bug) if the slices are too short.
fn bounds_ok(src_len: usize, ld: usize, rows: usize, cols: usize, dst_len: usize) -> bool {
    if rows == 0 || cols == 0 {
        return false;
    }
    assert!(ld >= cols && dst_len >= rows * cols && src_len > (rows - 1) * ld + cols - 1, "transpose: bounds");
    true
}

/// The plain loop over rows `r0 .. r1` and columns `c0 .. c1` (edges of the tiled version,
/// other dtypes, CPUs without AVX), in 16×16 tiles so both sides stay in cache.
fn scalar<T: Copy>(
    src: &[T],
    ld: usize,
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
    rows: usize,
    dst: &mut [T],
) {
    const TILE: usize = 16;
    for rb in (r0..r1).step_by(TILE) {
        for cb in (c0..c1).step_by(TILE) {
            for c in cb..(cb + TILE).min(c1) {
                for r in rb..(rb + TILE).min(r1) {
                    dst[c * rows + r] = src[r * ld + c];
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// [`super::Transpose::transpose`] for f32: whole 8×8 tiles in registers, the ragged
    /// right and bottom edges by the scalar loop.
    ///
    /// # Safety
    /// The CPU has AVX, and the bounds hold (`bounds_ok`).
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn transpose(src: &[f32], ld: usize, rows: usize, cols: usize, dst: &mut [f32]) {
        let (rows8, cols8) = (rows / 8 * 8, cols / 8 * 8);
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        for r in (0..rows8).step_by(8) {
            for c in (0..cols8).step_by(8) {
                // SAFETY: rows r .. r+8 < rows and columns c .. c+8 <= cols of the source lie
                // inside `src` (row (rows−1)·ld + cols − 1 is its last index read), and the
                // destination's columns c .. c+8, rows r .. r+8 inside `dst` (rows·cols long).
                unsafe { tile(s.add(r * ld + c), ld, d.add(c * rows + r), rows) };
            }
        }
        super::scalar(src, ld, (0, rows8), (cols8, cols), rows, dst);
        super::scalar(src, ld, (rows8, rows), (0, cols), rows, dst);
    }

    /// One 8×8 tile: eight rows `ld` apart in, eight columns `ldd` apart out.
    ///
    /// # Safety
    /// AVX, and eight readable rows of 8 at `s + i·ld`, eight writable runs of 8 at `d + j·ldd`.
    #[target_feature(enable = "avx")]
    unsafe fn tile(s: *const f32, ld: usize, d: *mut f32, ldd: usize) {
        let mut r = [_mm256_setzero_ps(); 8];
        for (i, row) in r.iter_mut().enumerate() {
            // SAFETY: the caller's contract: row i < 8 has eight readable elements.
            *row = unsafe { _mm256_loadu_ps(s.add(i * ld)) };
        }
        // Interleave pairs of rows, then pairs of pairs, then swap 128-bit halves: the classic
        // three-stage 8×8 transpose (24 shuffles for 64 elements).
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let out = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (j, v) in out.into_iter().enumerate() {
            // SAFETY: the caller's contract: column j < 8 has eight writable elements.
            unsafe { _mm256_storeu_ps(d.add(j * ldd), v) };
        }
    }
}
