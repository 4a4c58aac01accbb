//! Parameter initialisers with PyTorch's formulas, drawn from Kiln's seeded generator so that
//! [`kiln_core::manual_seed`] makes a model's initial weights reproducible.
//!
//! Every function returns a fresh leaf that collects gradients (`with_grad()`), of the
//! thread's default float dtype ([`default_dtype`], f32 unless changed).

use kiln_core::{DType, Device, Error, Result, Tensor};
use std::cell::Cell;

thread_local! {
    static DEFAULT_DTYPE: Cell<DType> = const { Cell::new(DType::F32) };
}

/// The float dtype that layers and initialisers create their parameters and buffers in, on
/// this thread (f32 unless [`set_default_dtype`] changed it).
pub fn default_dtype() -> DType {
    DEFAULT_DTYPE.with(|d| d.get())
}

/// Sets the dtype new parameters are created in on this thread, like
/// `torch.set_default_dtype`. It is per thread so that, e.g., an f64 gradient check in one
/// test does not change the models another test builds at the same time. Only float dtypes
/// are accepted; f64 is CPU-only.
pub fn set_default_dtype(dtype: DType) -> Result<()> {
    if !dtype.is_float() {
        return Err(Error::invalid("set_default_dtype", format!("{dtype} is not a float dtype")));
    }
    DEFAULT_DTYPE.with(|d| d.set(dtype));
    Ok(())
}

/// Runs `f` with the default dtype set to `dtype`, restoring the previous one afterwards:
/// `with_default_dtype(DType::F64, || Linear::new(3, 2, true, &cpu))` builds an f64 layer.
pub fn with_default_dtype<T>(dtype: DType, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let previous = default_dtype();
    set_default_dtype(dtype)?;
    struct Restore(DType);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEFAULT_DTYPE.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(previous);
    f()
}

/// Converts a freshly drawn f32 tensor to the default dtype and makes it a parameter.
fn finish(t: Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(default_dtype())?.detach().with_grad())
}

fn check_fan(op: &'static str, fan: usize) -> Result<()> {
    if fan == 0 {
        return Err(Error::invalid(op, "fan_in / fan_out is 0 (a parameter with no inputs cannot be initialised)"));
    }
    Ok(())
}

/// The gain of a leaky ReLU with negative slope `a`: `√(2 / (1 + a²))`.
fn leaky_relu_gain(a: f64) -> f64 {
    (2.0 / (1.0 + a * a)).sqrt()
}

/// `U(−b, b)` with `b = gain · √(3 / fan_in)`, `gain = √(2 / (1 + a²))` (PyTorch's
/// `kaiming_uniform_` in `fan_in` mode with `leaky_relu`). With `a = √5` the bound is
/// `1/√fan_in`: how `Linear` and `Conv2d` initialise their weights.
pub fn kaiming_uniform(shape: &[usize], fan_in: usize, a: f64, device: &Device) -> Result<Tensor> {
    check_fan("kaiming_uniform", fan_in)?;
    let bound = leaky_relu_gain(a) * (3.0 / fan_in as f64).sqrt();
    uniform(shape, -bound, bound, device)
}

/// `N(0, σ²)` with `σ = gain / √fan_in`, `gain = √(2 / (1 + a²))` (PyTorch's `kaiming_normal_`).
pub fn kaiming_normal(shape: &[usize], fan_in: usize, a: f64, device: &Device) -> Result<Tensor> {
    check_fan("kaiming_normal", fan_in)?;
    normal(shape, 0.0, leaky_relu_gain(a) / (fan_in as f64).sqrt(), device)
}

/// `U(−b, b)` with `b = gain · √(6 / (fan_in + fan_out))` (Glorot).
pub fn xavier_uniform(shape: &[usize], fan_in: usize, fan_out: usize, gain: f64, device: &Device) -> Result<Tensor> {
    check_fan("xavier_uniform", fan_in + fan_out)?;
    let bound = gain * (6.0 / (fan_in + fan_out) as f64).sqrt();
    uniform(shape, -bound, bound, device)
}

/// `N(0, σ²)` with `σ = gain · √(2 / (fan_in + fan_out))`.
pub fn xavier_normal(shape: &[usize], fan_in: usize, fan_out: usize, gain: f64, device: &Device) -> Result<Tensor> {
    check_fan("xavier_normal", fan_in + fan_out)?;
    normal(shape, 0.0, gain * (2.0 / (fan_in + fan_out) as f64).sqrt(), device)
}

/// `U(lo, hi)`.
pub fn uniform(shape: &[usize], lo: f64, hi: f64, device: &Device) -> Result<Tensor> {
    if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
        return Err(Error::invalid("init::uniform", format!("bounds [{lo}, {hi})")));
    }
    finish(Tensor::rand_uniform(shape, lo, hi, device)?)
}

/// `N(mean, std²)`.
pub fn normal(shape: &[usize], mean: f64, std: f64, device: &Device) -> Result<Tensor> {
    if !(mean.is_finite() && std.is_finite() && std >= 0.0) {
        return Err(Error::invalid("init::normal", format!("mean {mean}, std {std}")));
    }
    let z = Tensor::randn(shape, device)?;
    finish(z.mul_scalar(std)?.add_scalar(mean)?)
}

/// All zeros.
pub fn zeros(shape: &[usize], device: &Device) -> Result<Tensor> {
    Ok(Tensor::full_dtype(shape, 0.0, default_dtype(), device)?.with_grad())
}

/// All ones.
pub fn ones(shape: &[usize], device: &Device) -> Result<Tensor> {
    Ok(Tensor::full_dtype(shape, 1.0, default_dtype(), device)?.with_grad())
}

/// A non-trainable buffer (running statistics) filled with `value`, of the default dtype.
pub(crate) fn buffer(shape: &[usize], value: f64, device: &Device) -> Result<Tensor> {
    Tensor::full_dtype(shape, value, default_dtype(), device)
}
