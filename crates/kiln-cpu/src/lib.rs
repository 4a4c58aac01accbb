//! Kiln's CPU backend: the reference semantics ("the oracle") of every primitive op in
//! [`kiln_backend::BackendStorage`], and a backend fast enough to train small models on.
//!
//! Principles:
//! - **Obviously right first.** Kernels read strided inputs into row-major order once, then run
//!   plain loops. Floats compute in f64 and round once at the end; sums, products, prefix sums,
//!   softmax, `scatter_add` and `col2im` accumulate in f64 for f32/f16.
//! - **Fast where it is cheap to be.** Matmul goes to `matrixmultiply` (strided; operands it
//!   would gather element by element are transposed first, `transpose`);
//!   elementwise ops walk strided and broadcast inputs in place (`walk`), with inner loops the
//!   compiler vectorises; large elementwise ops, row reductions and im2col split across threads
//!   with rayon, whose pool the main thread joins (`pool`).
//! - **Never panics, never reads out of bounds.** Every layout is checked against its storage,
//!   every index against its dimension; unsupported dtype/op combinations return
//!   [`kiln_backend::Error::UnsupportedDType`].

/// Runs `$body` with `$v` bound to the element slice of any dtype.
macro_rules! dispatch {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            kiln_backend::HostData::F32($v) => $body,
            kiln_backend::HostData::F16($v) => $body,
            kiln_backend::HostData::F64($v) => $body,
            kiln_backend::HostData::I32($v) => $body,
            kiln_backend::HostData::U32($v) => $body,
            kiln_backend::HostData::Bool($v) => $body,
        }
    };
}

/// Like `dispatch!`, for ops with no meaning on bool (the core casts bool first when it wants to).
macro_rules! dispatch_num {
    ($data:expr, $op:expr, $v:ident => $body:expr) => {
        match $data {
            kiln_backend::HostData::F32($v) => $body,
            kiln_backend::HostData::F16($v) => $body,
            kiln_backend::HostData::F64($v) => $body,
            kiln_backend::HostData::I32($v) => $body,
            kiln_backend::HostData::U32($v) => $body,
            kiln_backend::HostData::Bool(_) => {
                Err($crate::kernel::unsupported($op, kiln_backend::DType::Bool, "numeric dtypes only"))
            }
        }
    };
}

mod binary;
mod cast;
mod conv;
mod elem;
mod fast32;
mod fused;
mod index;
mod kernel;
mod matmul;
mod pool;
mod random;
mod reduce;
pub mod special;
mod storage;
mod strided;
mod ternary;
mod topk;
mod transpose;
mod unary;
mod walk;

#[cfg(test)]
mod tests;

pub use storage::{CpuDevice, CpuStorage};
