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

/// Modules, layers, losses, optimizers, schedulers, mixed precision and checkpoints.
pub use kiln_nn as nn;

/// Datasets and loaders: MNIST, IDX files, text windows, shards.
pub use kiln_data as data;

/// Data-parallel training (the `dist` feature; `mpi` adds multi-process training over MPI).
#[cfg(feature = "dist")]
pub use kiln_dist as dist;

/// Everything a training script needs in scope: tensors and devices, the traits that give
/// modules, optimizers and schedulers their methods, and the common layers and configs.
///
/// ```
/// use kiln::prelude::*;
///
/// # fn main() -> kiln::Result<()> {
/// let d = Device::cpu();
/// manual_seed(0);
/// let model = Sequential::new().add(Linear::new(4, 8, true, &d)?).add(Relu).add(Linear::new(8, 2, true, &d)?);
/// let mut opt = Adam::new(model.parameters(), AdamConfig::default())?;
/// let x = Tensor::randn(&[3, 4], &d)?;
/// let loss = model.forward(&x)?.square()?.mean_all()?;
/// opt.zero_grad();
/// loss.backward()?;
/// opt.step()?;
/// # Ok(())
/// # }
/// ```
pub mod prelude {
    pub use kiln_core::{
        AvgPool1dOptions, AvgPool2dOptions, ConvTranspose1dOptions, ConvTranspose2dOptions, MaxPool1dOptions,
        MaxPool2dOptions,
    };
    pub use kiln_core::{Conv2dOptions, DType, Device, Error, Result, SdpaOptions, Tensor, manual_seed, no_grad};
    pub use kiln_nn::optim::{Adam, AdamConfig, AdamW, Optimizer, Sgd, SgdConfig};
    pub use kiln_nn::sched::LrScheduler;
    pub use kiln_nn::{Conv2d, Dropout, Flatten, Linear, MaxPool2d, Module, ModuleExt, Relu, Sequential};
}
