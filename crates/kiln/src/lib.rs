//! Kiln: tensors, autodiff and training on any GPU through WGSL compute shaders and wgpu,
//! with a CPU backend as the reference and fallback.
//!
//! ```
//! use kiln::prelude::*;
//!
//! # fn main() -> kiln::Result<()> {
//! let device = Device::cpu(); // or Device::best() / Device::gpu()?
//! kiln::manual_seed(0);
//! let x = Tensor::randn(&[4, 3], &device)?.with_grad();
//! let w = Tensor::ones(&[3, 2], &device)?;
//! let loss = x.matmul(&w)?.relu()?.sum_all()?;
//! loss.backward()?;
//! assert_eq!(x.grad().unwrap().shape(), &[4, 3]);
//! # Ok(())
//! # }
//! ```

pub use kiln_core::*;

/// Data-parallel training (the `dist` feature; `mpi` adds multi-process training over MPI).
#[cfg(feature = "dist")]
pub use kiln_dist as dist;

/// Everything a training script needs in scope.
pub mod prelude {
    pub use kiln_core::{Conv2dOptions, DType, Device, Error, Result, SdpaOptions, Tensor, manual_seed, no_grad};
}
