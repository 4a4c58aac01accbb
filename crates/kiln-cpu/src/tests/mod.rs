//! Unit tests. Expected values come from hand math, known constants or naive loops written here,
//! never from the kernels' own output.

mod binary;
mod cast;
mod conv;
mod fast32;
mod fused;
mod index;
mod matmul;
mod reduce;
mod special;
mod storage;
mod topk;
mod transpose;
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

/// Elementwise |a − b| ≤ tol·(1 + |b|), NaN matching NaN and infinities matching exactly
/// (`kiln_testkit::assert_close` with rtol = atol = tol).
#[track_caller]
pub(crate) fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    kiln_testkit::assert_close("kiln-cpu", got, want, tol, tol);
}

/// Elementwise |a − b| ≤ tol·|b| (so an expected 0 must be exactly 0), NaN matching NaN.
#[track_caller]
pub(crate) fn assert_rel(got: &[f64], want: &[f64], tol: f64) {
    kiln_testkit::assert_close("kiln-cpu", got, want, tol, 0.0);
}

#[track_caller]
pub(crate) fn assert_unsupported<T: std::fmt::Debug>(r: Result<T, Error>, dtype: DType) {
    match r {
        Err(Error::UnsupportedDType { dtype: d, .. }) => assert_eq!(d, dtype),
        other => panic!("expected UnsupportedDType({dtype}), got {other:?}"),
    }
}

/// The shared deterministic generator (xorshift64*), so tests repeat exactly.
pub(crate) use kiln_testkit::Rng;

/// Reads element `pos` of a logical tensor through an explicit strided formula: the tests' own
/// independent view of what a layout means.
pub(crate) fn at(buf: &[f64], layout: &Layout, pos: &[usize]) -> f64 {
    let idx = layout.offset() + pos.iter().zip(layout.strides()).map(|(p, s)| p * s).sum::<usize>();
    buf[idx]
}
