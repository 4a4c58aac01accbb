//! What every Kiln test shares, in one place: the GPU probe ("find a GPU or skip, fail under
//! `KILN_REQUIRE_GPU=1`"), seeded generators independent of Kiln's own, `assert_close`, and
//! (feature `tensor`, on by default) the GPU-vs-CPU check and the f64 gradient check used by
//! the op table (`tests/op_table.rs`).
//!
//! The backends' tests depend on it with `default-features = false`: they get the probe, the
//! generators and the comparisons without pulling in `kiln-core`.

mod close;
mod probe;
mod rng;
#[cfg(feature = "tensor")]
mod tensor;

pub use close::{assert_close, assert_close_rows, dtype_tolerance};
pub use probe::{gpu_or_skip, required, temp_dir};
pub use rng::{Rng, values};
#[cfg(feature = "tensor")]
pub use tensor::{check, gpu, gradcheck, random, random_on};
