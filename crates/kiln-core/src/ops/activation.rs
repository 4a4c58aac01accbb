//! Activations composed from elementwise ops: no kernels of their own. On the GPU each one
//! fuses into a single generated kernel, and its gradient comes from the gradients of its
//! parts (each checked against PyTorch's in `crates/kiln-nn/tests/torch_refs.rs`).

use crate::Tensor;
use kiln_backend::{Error, Result};

/// SELU's `alpha` (Klambauer et al., 2017), as PyTorch writes it.
pub const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
/// SELU's `scale`, as PyTorch writes it.
pub const SELU_SCALE: f64 = 1.050_700_987_355_480_5;

impl Tensor {
    fn needs_float(&self, op: &'static str) -> Result<()> {
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType { op, dtype: self.dtype(), why: " (needs a float tensor)".into() });
        }
        Ok(())
    }

    /// PyTorch's `softplus(x, beta, threshold)`: `ln(1 + e^(β·x)) / β`, and `x` itself where
    /// `β·x > threshold`. `softplus_with(1.0, 20.0)` is [`softplus`](Self::softplus). The
    /// kernel is linear past `β·x = 20` whatever the threshold (the difference is below
    /// `e^-20` relative there).
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let x = Tensor::from_vec(vec![0.0f32, 3.0], &[2], &Device::cpu()).unwrap();
    /// let y = x.softplus_with(2.0, 5.0).unwrap().to_vec::<f32>().unwrap();
    /// assert!((y[0] - 2f32.ln() / 2.0).abs() < 1e-6 && y[1] == 3.0);
    /// ```
    pub fn softplus_with(&self, beta: f64, threshold: f64) -> Result<Tensor> {
        const OP: &str = "softplus";
        self.needs_float(OP)?;
        if beta == 0.0 || !beta.is_finite() || threshold.is_nan() {
            return Err(Error::invalid(
                OP,
                format!("beta {beta} must be finite and nonzero, threshold {threshold} a number"),
            ));
        }
        if beta == 1.0 && threshold == 20.0 {
            return self.softplus();
        }
        let bx = self.mul_scalar(beta)?;
        let smooth = bx.softplus()?.div_scalar(beta)?;
        Tensor::where_(&bx.gt_scalar(threshold)?, self, &smooth)
    }

    /// `min` below `min`, `max` above `max`, else `x` (PyTorch's `hardtanh`). Unlike
    /// [`clamp`](Self::clamp), the gradient is 1 only strictly inside `(min, max)`, as in
    /// PyTorch, so `relu6` has gradient 0 at 0 like `relu`. NaN stays NaN.
    pub fn hardtanh(&self, min: f64, max: f64) -> Result<Tensor> {
        const OP: &str = "hardtanh";
        self.needs_float(OP)?;
        if min.is_nan() || max.is_nan() || min > max {
            return Err(Error::invalid(OP, format!("min {min} must not exceed max {max}")));
        }
        self.masked_fill(&self.le_scalar(min)?, min)?.masked_fill(&self.ge_scalar(max)?, max)
    }

    /// `min(max(x, 0), 6)`, PyTorch's `relu6`.
    pub fn relu6(&self) -> Result<Tensor> {
        self.hardtanh(0.0, 6.0)
    }

    /// `relu6(x + 3) / 6`, PyTorch's `hardsigmoid`.
    pub fn hardsigmoid(&self) -> Result<Tensor> {
        self.needs_float("hardsigmoid")?;
        self.add_scalar(3.0)?.hardtanh(0.0, 6.0)?.div_scalar(6.0)
    }

    /// `x · relu6(x + 3) / 6`, PyTorch's `hardswish`.
    pub fn hardswish(&self) -> Result<Tensor> {
        self.needs_float("hardswish")?;
        self * &self.hardsigmoid()?
    }

    /// `scale · elu(x, alpha)` with [`SELU_SCALE`] and [`SELU_ALPHA`], PyTorch's `selu`.
    pub fn selu(&self) -> Result<Tensor> {
        self.needs_float("selu")?;
        self.elu(SELU_ALPHA)?.mul_scalar(SELU_SCALE)
    }

    /// `max(0, x) + min(0, α·(e^(x/α) − 1))`, PyTorch's `celu` (α = 1 is `elu`).
    pub fn celu(&self, alpha: f64) -> Result<Tensor> {
        const OP: &str = "celu";
        self.needs_float(OP)?;
        if alpha == 0.0 || !alpha.is_finite() {
            return Err(Error::invalid(OP, format!("alpha {alpha} must be finite and nonzero")));
        }
        // The exponential sees min(x, 0) only: on the positive side it would overflow, and its
        // infinite derivative times the zero gradient there would be NaN.
        let negative = self.clamp(f64::NEG_INFINITY, 0.0)?.div_scalar(alpha)?.expm1()?.mul_scalar(alpha)?;
        &self.relu()? + &negative
    }

    /// `log(sigmoid(x))`, computed as `−softplus(−x)`: finite for every finite `x` (PyTorch's
    /// `logsigmoid`).
    pub fn logsigmoid(&self) -> Result<Tensor> {
        self.needs_float("logsigmoid")?;
        self.neg()?.softplus()?.neg()
    }

    /// `x / (1 + |x|)`, PyTorch's `softsign`.
    pub fn softsign(&self) -> Result<Tensor> {
        self.needs_float("softsign")?;
        self / &self.abs()?.add_scalar(1.0)?
    }

    /// `x` where positive, else `weight · x`, PyTorch's `prelu`. `weight` holds one slope for
    /// every channel (one element) or one per channel (`[c]`, `c` the size of dim 1; an input
    /// of fewer than 2 dims has one channel). The weight gets a gradient like any input.
    pub fn prelu(&self, weight: &Tensor) -> Result<Tensor> {
        const OP: &str = "prelu";
        self.needs_float(OP)?;
        self.check_same_device(OP, weight)?;
        if weight.dtype() != self.dtype() {
            return Err(Error::dtype(OP, self.dtype(), weight.dtype()));
        }
        let channels = if self.rank() >= 2 { self.shape()[1] } else { 1 };
        let slope = if weight.numel() == 1 && weight.rank() <= 1 {
            weight.reshape(&[])?
        } else if weight.shape() == [channels] {
            let mut view = vec![1; self.rank()];
            view[1] = channels;
            weight.reshape(&view)?
        } else {
            return Err(Error::shape(
                OP,
                format!("weight {:?} for input {:?}: needs 1 or {channels} slopes", weight.shape(), self.shape()),
            ));
        };
        Tensor::where_(&self.gt_scalar(0.0)?, self, &(self * &slope)?)
    }

    /// Gated linear unit, PyTorch's `glu`: splits `dim` into halves `a` and `b` and returns
    /// `a · sigmoid(b)`. The size of `dim` must be even.
    pub fn glu(&self, dim: isize) -> Result<Tensor> {
        const OP: &str = "glu";
        self.needs_float(OP)?;
        let d = self.axis(OP, dim)?;
        let size = self.shape()[d];
        if !size.is_multiple_of(2) {
            return Err(Error::shape(OP, format!("dim {dim} of {:?} has odd size {size}", self.shape())));
        }
        let half = size / 2;
        &self.narrow(d as isize, 0, half)? * &self.narrow(d as isize, half, half)?.sigmoid()?
    }
}
