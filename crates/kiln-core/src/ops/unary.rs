//! Elementwise ops of one tensor, with their gradient rules.

use crate::Tensor;
use kiln_backend::{DType, Error, Result, UnaryOp};

impl Tensor {
    /// Applies a unary op, recording its gradient.
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        if op.float_only() && !self.dtype().is_float() && !matches!(op, UnaryOp::IsNan | UnaryOp::IsInf) {
            return Err(Error::UnsupportedDType {
                op: op.name(),
                dtype: self.dtype(),
                why: " (needs a float tensor)".into(),
            });
        }
        let out = self.storage().unary(self.layout(), op)?;
        // The closure saves only what the rule reads: a ReLU or tanh that keeps its output need
        // not keep its input alive too (the input is often a large intermediate nothing else
        // holds, such as a convolution's output before its activation).
        let x = match reads_input(op).then(|| self.clone()) {
            // Under f16 autocast GELU keeps an f16 copy of an f32 input: in PyTorch its input
            // there is the f16 output of the product before it, and that is what it saves (a
            // transformer MLP's largest activation, [tokens, 4·d], at half the bytes). The
            // gradient is still computed in f32, from the copy.
            Some(x) if saves_f16(op, self) => Some(crate::no_grad(|| x.to_dtype(DType::F16))?),
            x => x,
        };
        let differentiable = self.dtype().is_float() && !op.returns_bool();
        let inputs: &[&Tensor] = if differentiable { &[self] } else { &[] };
        let node_out = std::sync::Arc::new(std::sync::OnceLock::<Tensor>::new());
        let y_slot = node_out.clone();
        let t = Tensor::from_op(out, self.shape(), self.device(), op.name(), inputs, move |g| {
            let y = y_slot.get().cloned();
            Ok(vec![Some(unary_grad(op, x.as_ref(), y.as_ref(), g)?)])
        })?;
        if t.requires_grad() && needs_output(op) {
            // The gradient reuses the output; keep it detached to avoid a reference cycle.
            let _ = node_out.set(t.detach());
        }
        Ok(t)
    }
}

/// Does the gradient rule read the op's output? (ReLU's mask is `y > 0` as well as `x > 0`,
/// and the output is what the next layer keeps anyway, as PyTorch's `threshold_backward` does.)
fn needs_output(op: UnaryOp) -> bool {
    use UnaryOp::*;
    matches!(op, Exp | Exp2 | Expm1 | Sqrt | Rsqrt | Recip | Tanh | Sigmoid | Relu | Elu(_))
}

/// Does `op` on `x` save its input as f16 (GELU in an f16 autocast region, see `unary`)?
fn saves_f16(op: UnaryOp, x: &Tensor) -> bool {
    matches!(op, UnaryOp::GeluErf | UnaryOp::GeluTanh)
        && x.dtype() == DType::F32
        && crate::is_grad_enabled()
        && x.requires_grad()
        && crate::autocast::low_copy_dtype(x) == Some(DType::F16)
}

/// Does the gradient rule read the op's input? Not when it reads only the output (all of
/// `needs_output` but ELU) or nothing at all.
fn reads_input(op: UnaryOp) -> bool {
    use UnaryOp::*;
    let output_only = needs_output(op) && !matches!(op, Elu(_));
    let no_input = matches!(op, Neg | Sign | Floor | Ceil | Round | IsNan | IsInf | Not);
    !(output_only || no_input)
}

fn unary_grad(op: UnaryOp, x: Option<&Tensor>, y: Option<&Tensor>, g: &Tensor) -> Result<Tensor> {
    use UnaryOp::*;
    let y = || y.cloned().ok_or_else(|| Error::Autograd { op: op.name(), msg: "output not saved".into() });
    if reads_input(op) && x.is_none() {
        return Err(Error::Autograd { op: op.name(), msg: "input not saved".into() });
    }
    // The rules below that run without a saved input never read `x`; an input saved in lower
    // precision (GELU under autocast) is widened back to the gradient's dtype first.
    let widened = match x {
        Some(x) if x.dtype() != g.dtype() => Some(x.to_dtype(g.dtype())?),
        _ => None,
    };
    let x = widened.as_ref().or(x).unwrap_or(g);
    let d = match op {
        Neg => return g.neg(),
        Abs => x.sign()?,
        Sign | Floor | Ceil | Round | IsNan | IsInf | Not => return Tensor::zeros_like(g),
        Exp => y()?,
        Exp2 => y()?.mul_scalar(std::f64::consts::LN_2)?,
        Log => x.recip()?,
        Log2 => x.mul_scalar(std::f64::consts::LN_2)?.recip()?,
        Log1p => x.add_scalar(1.0)?.recip()?,
        Expm1 => y()?.add_scalar(1.0)?,
        // 1 / (x·(1 − x))
        Logit => (x * &x.neg()?.add_scalar(1.0)?)?.recip()?,
        Sqrt => y()?.recip()?.mul_scalar(0.5)?,
        Rsqrt => y()?.powf(3.0)?.mul_scalar(-0.5)?,
        Recip => y()?.square()?.neg()?,
        Square => x.mul_scalar(2.0)?,
        Sin => x.cos()?,
        Cos => x.sin()?.neg()?,
        Tanh => y()?.square()?.neg()?.add_scalar(1.0)?,
        Sigmoid => {
            let y = y()?;
            (&y * &y.neg()?.add_scalar(1.0)?)?
        }
        // where(y > 0, g, 0), as PyTorch's threshold_backward: one output buffer, not a mask
        // cast to floats and then a product (two buffers of the activation's size at once).
        Relu => {
            let zero = Tensor::full_dtype(&[], 0.0, g.dtype(), g.device())?;
            return Tensor::where_(&y()?.gt_scalar(0.0)?, g, &zero);
        }
        LeakyRelu(a) => x.gt_scalar(0.0)?.to_dtype(x.dtype())?.mul_scalar(1.0 - a)?.add_scalar(a)?,
        Elu(a) => {
            let pos = x.gt_scalar(0.0)?;
            let neg_branch = y()?.add_scalar(a)?;
            Tensor::where_(&pos, &Tensor::ones_like(x)?, &neg_branch)?
        }
        // Φ(x) + x·φ(x), one elementwise op (on the CPU one pass instead of a dozen).
        GeluErf => x.unary(GeluErfGrad)?,
        // φ(x)·(2 − x²), φ(x) = e^{−x²/2}/√(2π)
        GeluErfGrad => {
            let sq = x.square()?;
            let pdf = sq.mul_scalar(-0.5)?.exp()?.mul_scalar(1.0 / (2.0 * std::f64::consts::PI).sqrt())?;
            (&pdf * &sq.neg()?.add_scalar(2.0)?)?
        }
        GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let inner = (x + &x.powf(3.0)?.mul_scalar(0.044715)?)?.mul_scalar(c)?;
            let th = inner.tanh()?;
            let sech2 = th.square()?.neg()?.add_scalar(1.0)?;
            let dinner = x.square()?.mul_scalar(3.0 * 0.044715)?.add_scalar(1.0)?.mul_scalar(c)?;
            let left = th.add_scalar(1.0)?.mul_scalar(0.5)?;
            let right = (&(x * &sech2)? * &dinner)?.mul_scalar(0.5)?;
            (&left + &right)?
        }
        Silu => {
            let s = x.sigmoid()?;
            let one_minus = s.neg()?.add_scalar(1.0)?;
            (&s * &(x * &one_minus)?.add_scalar(1.0)?)?
        }
        Softplus => x.sigmoid()?,
        Mish => {
            let sp = x.softplus()?;
            let th = sp.tanh()?;
            let sech2 = th.square()?.neg()?.add_scalar(1.0)?;
            (&th + &(&(x * &x.sigmoid()?)? * &sech2)?)?
        }
        Clamp(lo, hi) => {
            let inside = x.ge_scalar(lo)?.logical_and(&x.le_scalar(hi)?)?;
            inside.to_dtype(x.dtype())?
        }
        Powf(p) => x.powf(p - 1.0)?.mul_scalar(p)?,
    };
    g * &d
}

macro_rules! unary_methods {
    ($($(#[$doc:meta])* $name:ident => $op:expr;)*) => {
        impl Tensor {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> Result<Tensor> {
                    self.unary($op)
                }
            )*
        }
    };
}

unary_methods! {
    /// `-x`
    neg => UnaryOp::Neg;
    /// `|x|`
    abs => UnaryOp::Abs;
    /// -1, 0 or 1 (NaN stays NaN).
    sign => UnaryOp::Sign;
    /// `e^x`
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::zeros(&[2], &Device::cpu()).unwrap().exp().unwrap();
    /// assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
    /// ```
    exp => UnaryOp::Exp;
    /// `2^x`
    exp2 => UnaryOp::Exp2;
    /// Natural log.
    log => UnaryOp::Log;
    /// Base-2 log.
    log2 => UnaryOp::Log2;
    /// `ln(1 + x)`, accurate near 0 (a few f32 ulps on every adapter: a series there, not the
    /// driver's log).
    log1p => UnaryOp::Log1p;
    /// `e^x - 1`, accurate near 0 (a few f32 ulps on every adapter: a series there).
    expm1 => UnaryOp::Expm1;
    /// `ln(x / (1 − x))`, the inverse of [`sigmoid`](Self::sigmoid): NaN outside `[0, 1]`,
    /// `∓inf` at 0 and 1 (PyTorch's `logit` without `eps`).
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let x = Tensor::from_vec(vec![0.5f32, 0.75, 0.0, 1.0, 2.0], &[5], &Device::cpu()).unwrap();
    /// let v = x.logit().unwrap().to_vec::<f32>().unwrap();
    /// assert!(v[0].abs() < 1e-7 && (v[1] - 3f32.ln()).abs() < 1e-6);
    /// assert_eq!((v[2], v[3]), (f32::NEG_INFINITY, f32::INFINITY));
    /// assert!(v[4].is_nan());
    /// ```
    logit => UnaryOp::Logit;
    /// Square root.
    sqrt => UnaryOp::Sqrt;
    /// `1 / sqrt(x)`
    rsqrt => UnaryOp::Rsqrt;
    /// `1 / x`
    recip => UnaryOp::Recip;
    /// `x²`
    square => UnaryOp::Square;
    /// Sine; on the GPU reduced exactly by multiples of π/2 (any f32, not only |x| ≤ π), within
    /// ~1e-7 of the true value.
    sin => UnaryOp::Sin;
    /// Cosine; on the GPU reduced exactly by multiples of π/2, as [`sin`](Self::sin).
    cos => UnaryOp::Cos;
    /// Hyperbolic tangent.
    tanh => UnaryOp::Tanh;
    /// `1 / (1 + e^-x)`
    sigmoid => UnaryOp::Sigmoid;
    /// `max(x, 0)`
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::from_vec(vec![-1.0f32, 2.0], &[2], &Device::cpu()).unwrap();
    /// assert_eq!(t.relu().unwrap().to_vec::<f32>().unwrap(), vec![0.0, 2.0]);
    /// ```
    relu => UnaryOp::Relu;
    /// GELU, exact (erf) form.
    gelu => UnaryOp::GeluErf;
    /// GELU, tanh approximation.
    gelu_tanh => UnaryOp::GeluTanh;
    /// `x · sigmoid(x)`
    silu => UnaryOp::Silu;
    /// `ln(1 + e^x)` (linear past 20, as PyTorch).
    softplus => UnaryOp::Softplus;
    /// `x · tanh(softplus(x))`
    mish => UnaryOp::Mish;
    /// Rounds down.
    floor => UnaryOp::Floor;
    /// Rounds up.
    ceil => UnaryOp::Ceil;
    /// Rounds half to even.
    round => UnaryOp::Round;
    /// NaN test (bool).
    isnan => UnaryOp::IsNan;
    /// ±inf test (bool).
    isinf => UnaryOp::IsInf;
    /// Logical not of a bool tensor.
    logical_not => UnaryOp::Not;
}

impl Tensor {
    /// `x` if positive else `slope · x`.
    pub fn leaky_relu(&self, slope: f64) -> Result<Tensor> {
        self.unary(UnaryOp::LeakyRelu(slope))
    }

    /// `x` if positive else `alpha · (e^x - 1)`.
    pub fn elu(&self, alpha: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Elu(alpha))
    }

    /// Limits every element to `[lo, hi]` (NaN stays NaN).
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor> {
        if lo > hi {
            return Err(Error::invalid("clamp", format!("min {lo} > max {hi}")));
        }
        self.unary(UnaryOp::Clamp(lo, hi))
    }

    /// `x^p` for a scalar exponent.
    pub fn powf(&self, p: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Powf(p))
    }

    /// Converts to `dtype` (float → int truncates and saturates; nonzero → true).
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device, DType};
    /// let t = Tensor::from_vec(vec![1.7f32, -2.5], &[2], &Device::cpu()).unwrap();
    /// assert_eq!(t.to_dtype(DType::I32).unwrap().to_vec::<i32>().unwrap(), vec![1, -2]);
    /// ```
    ///
    /// ```
    /// # use kiln_core::{DType, Device, Tensor};
    /// let x = Tensor::from_vec(vec![1.7f32, -2.5], &[2], &Device::cpu()).unwrap();
    /// assert_eq!(x.to_dtype(DType::I32).unwrap().to_vec::<i32>().unwrap(), vec![1, -2]); // toward zero
    /// assert_eq!(x.to_dtype(DType::F16).unwrap().dtype(), DType::F16);
    /// ```
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let out = self.storage().cast(self.layout(), dtype)?;
        let from = self.dtype();
        let inputs: &[&Tensor] = if from.is_float() && dtype.is_float() { &[self] } else { &[] };
        Tensor::from_op(out, self.shape(), self.device(), "to_dtype", inputs, move |g| {
            Ok(vec![Some(g.to_dtype(from)?)])
        })
    }
}
