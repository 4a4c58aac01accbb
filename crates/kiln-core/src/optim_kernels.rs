//! The fused in-place kernels that optimizers and loss scaling run on their tensors: Adam's
//! update and GradScaler's unscale-and-check. They are a trait of their own rather than
//! `Tensor` methods because they are internals of `kiln::nn::optim` and `kiln::nn::amp`, not
//! operations a model is written with; bring the trait into scope to call them (an optimizer
//! of your own, a test). [`sum_squares`] and [`scale_each_`] are gradient clipping's
//! multi-tensor norm and scale.

use crate::{AdamParams, Result, Tensor};

pub use crate::ops::fused::{scale_each_, sum_squares};

/// In-place optimizer kernels on a parameter or gradient tensor (one kernel each on the GPU).
/// See the implementation on [`Tensor`] for the exact contracts.
pub trait OptimKernels {
    /// One Adam/AdamW step in place on this parameter and its moments `m` and `v`.
    fn adam_step_(&self, grad: &Tensor, m: &Tensor, v: &Tensor, p: &AdamParams) -> Result<()>;

    /// [`adam_step_`](Self::adam_step_) with the step count kept on the device (`steps`, two u32
    /// slots) and the update skipped when `found_inf` (a u32 flag) is set.
    fn adam_step_gated_(
        &self,
        grad: &Tensor,
        m: &Tensor,
        v: &Tensor,
        steps: &Tensor,
        found_inf: Option<&Tensor>,
        p: &AdamParams,
    ) -> Result<()>;

    /// `x ← x · inv_scale` in place, ORing 1 into `found_inf` if any result is inf or NaN.
    fn unscale_check_(&self, inv_scale: f64, found_inf: &Tensor) -> Result<()>;

    /// [`unscale_check_`](Self::unscale_check_) by `1 / scale`, `scale` an f32 tensor of one
    /// element read on its device.
    fn unscale_check_by_(&self, scale: &Tensor, found_inf: &Tensor) -> Result<()>;
}
