//! Unit tests. Expected values come from hand math, known constants or naive loops written here,
//! never from the kernels' own output.

mod binary;
mod cast;
mod conv;
mod fused;
mod index;
mod matmul;
mod reduce;
mod special;
mod storage;
mod topk;
mod unary;
mod walk;

use kiln_backend::{DType, Error, HostData, Layout};

use crate::CpuStorage;

pub(crate) fn st(data: impl Into<HostData>) -> CpuStorage {
    CpuStorage::from_host_data(data.into())
}

pub(crate) fn c(shape: &[usize]) -> Layout {
    Layout::contiguous(shape)
}

pub(crate) fn host(s: &CpuStorage) -> HostData {
    s.as_host().clone()
}

pub(crate) fn f64s(s: &CpuStorage) -> Vec<f64> {
    s.as_host().to_f64_vec()
}

/// Elementwise |a − b| ≤ tol·max(1, |b|), with NaN matching NaN and infinities matching exactly.
#[track_caller]
pub(crate) fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "length: got {got:?}, want {want:?}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= tol * w.abs().max(1.0)
        };
        assert!(ok, "element {i}: got {g:e}, want {w:e} (tol {tol:e})\n got {got:?}\nwant {want:?}");
    }
}

/// Elementwise |a − b| ≤ tol·|b| (so an expected 0 must be exactly 0), NaN matching NaN.
#[track_caller]
pub(crate) fn assert_rel(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "length: got {got:?}, want {want:?}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() { g.is_nan() } else { g == w || (g - w).abs() <= tol * w.abs() };
        assert!(ok, "element {i}: got {g:e}, want {w:e} (rel tol {tol:e})\n got {got:?}\nwant {want:?}");
    }
}

#[track_caller]
pub(crate) fn assert_unsupported<T: std::fmt::Debug>(r: Result<T, Error>, dtype: DType) {
    match r {
        Err(Error::UnsupportedDType { dtype: d, .. }) => assert_eq!(d, dtype),
        other => panic!("expected UnsupportedDType({dtype}), got {other:?}"),
    }
}

/// A small deterministic generator (xorshift64*), so tests need no dependency and repeat exactly.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [−1, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    pub(crate) fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform()).collect()
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Reads element `pos` of a logical tensor through an explicit strided formula: the tests' own
/// independent view of what a layout means.
pub(crate) fn at(buf: &[f64], layout: &Layout, pos: &[usize]) -> f64 {
    let idx = layout.offset() + pos.iter().zip(layout.strides()).map(|(p, s)| p * s).sum::<usize>();
    buf[idx]
}
