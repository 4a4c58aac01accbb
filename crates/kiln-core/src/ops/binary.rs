//! Elementwise ops of two tensors with NumPy broadcasting, scalar variants, `where_`, and the
//! operator overloads (`&a + &b` is a `Result<Tensor>`).

use crate::Tensor;
use kiln_backend::{BinaryOp, DType, Error, Result};

/// The broadcast shape of two shapes, NumPy rules.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let x = if i < n - a.len() { 1 } else { a[i - (n - a.len())] };
        let y = if i < n - b.len() { 1 } else { b[i - (n - b.len())] };
        out[i] = match (x, y) {
            _ if x == y => x,
            (1, _) => y,
            (_, 1) => x,
            _ => return Err(Error::shape(op, format!("cannot broadcast {a:?} with {b:?}"))),
        };
    }
    Ok(out)
}

impl Tensor {
    /// Applies a binary op after broadcasting both inputs to a common shape.
    pub fn binary(&self, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
        self.check_same_device(op.name(), rhs)?;
        if self.dtype() != rhs.dtype() {
            return Err(Error::dtype(op.name(), self.dtype(), rhs.dtype()));
        }
        let shape = broadcast_shapes(op.name(), self.shape(), rhs.shape())?;
        let (a, b) = (self.expand(&shape)?, rhs.expand(&shape)?);
        let out = a.storage().binary(a.layout(), &b.storage(), b.layout(), op)?;
        let differentiable = self.dtype().is_float() && !op.returns_bool();
        let inputs: &[&Tensor] = if differentiable { &[self, rhs] } else { &[] };
        let want = (self.requires_grad(), rhs.requires_grad());
        let keep = saved_operands(op, want);
        let (x, y) = (keep.0.then(|| self.clone()), keep.1.then(|| rhs.clone()));
        // Only a backward reads the input shapes: no copies for an op nothing differentiates.
        let (xs, ys) =
            if want.0 || want.1 { (self.shape().to_vec(), rhs.shape().to_vec()) } else { Default::default() };
        Tensor::from_op(out, &shape, self.device(), op.name(), inputs, move |g| {
            let (ga, gb) = binary_grad(op, x.as_ref(), y.as_ref(), g, want)?;
            Ok(vec![ga.map(|t| t.sum_to_shape(&xs)).transpose()?, gb.map(|t| t.sum_to_shape(&ys)).transpose()?])
        })
    }

    /// A 0-d tensor of this tensor's dtype on its device, for scalar ops.
    ///
    /// Training loops use the same few constants every step (1, 0.5, β, ε, ...): they are kept
    /// in a small per-device cache so a scalar op costs one dispatch, not a fill and an op.
    pub(crate) fn scalar_like(&self, value: f64) -> Result<Tensor> {
        scalar_cache::get(value, self.dtype(), self.device())
    }

    /// A 0-d constant of `dtype` on `device`, made once and shared (read-only uses only).
    pub(crate) fn constant(value: f64, dtype: DType, device: &crate::Device) -> Result<Tensor> {
        scalar_cache::get(value, dtype, device)
    }

    /// `cond ? a : b` elementwise, with broadcasting; `cond` is bool.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let d = Device::cpu();
    /// let c = Tensor::from_vec(vec![true, false], &[2], &d).unwrap();
    /// let a = Tensor::ones(&[2], &d).unwrap();
    /// let b = Tensor::zeros(&[2], &d).unwrap();
    /// assert_eq!(Tensor::where_(&c, &a, &b).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 0.0]);
    /// ```
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let d = Device::cpu();
    /// let cond = Tensor::from_vec(vec![true, false], &[2], &d).unwrap();
    /// let (a, b) = (Tensor::ones(&[2], &d).unwrap(), Tensor::zeros(&[2], &d).unwrap());
    /// assert_eq!(Tensor::where_(&cond, &a, &b).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 0.0]);
    /// ```
    pub fn where_(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        if cond.dtype() != DType::Bool {
            return Err(Error::dtype("where", DType::Bool, cond.dtype()));
        }
        if a.dtype() != b.dtype() {
            return Err(Error::dtype("where", a.dtype(), b.dtype()));
        }
        cond.check_same_device("where", a)?;
        cond.check_same_device("where", b)?;
        let shape = broadcast_shapes("where", &broadcast_shapes("where", cond.shape(), a.shape())?, b.shape())?;
        let (c, x, y) = (cond.expand(&shape)?, a.expand(&shape)?, b.expand(&shape)?);
        let out = c.storage().where_cond(c.layout(), &x.storage(), x.layout(), &y.storage(), y.layout())?;
        let inputs: &[&Tensor] = if a.dtype().is_float() { &[a, b] } else { &[] };
        let (cc, sa, sb) = (cond.clone(), a.shape().to_vec(), b.shape().to_vec());
        Tensor::from_op(out, &shape, a.device(), "where", inputs, move |g| {
            let zero = Tensor::zeros_like(g)?;
            let ga = Tensor::where_(&cc, g, &zero)?.sum_to_shape(&sa)?;
            let gb = Tensor::where_(&cc, &zero, g)?.sum_to_shape(&sb)?;
            Ok(vec![Some(ga), Some(gb)])
        })
    }

    /// Replaces elements where `mask` is true with `value`.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let d = Device::cpu();
    /// let x = Tensor::ones(&[3], &d).unwrap();
    /// let mask = Tensor::from_vec(vec![false, true, false], &[3], &d).unwrap();
    /// assert_eq!(x.masked_fill(&mask, -1.0).unwrap().to_vec::<f32>().unwrap(), vec![1.0, -1.0, 1.0]);
    /// ```
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        Tensor::where_(mask, &self.scalar_like(value)?, self)
    }
}

mod scalar_cache {
    use crate::{Device, Tensor};
    use kiln_backend::{DType, Result};
    // Fx hashing: one lookup per scalar op, on a key of three words.
    use rustc_hash::FxHashMap as HashMap;
    use std::sync::{Mutex, OnceLock};

    const CAPACITY: usize = 512;

    type Key = (usize, DType, u64);

    fn device_key(device: &Device) -> usize {
        match device {
            Device::Cpu => 0,
            Device::Gpu(g) => std::sync::Arc::as_ptr(g) as usize,
        }
    }

    pub(super) fn get(value: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        static CACHE: OnceLock<Mutex<HashMap<Key, Tensor>>> = OnceLock::new();
        let key = (device_key(device), dtype, value.to_bits());
        let cache = CACHE.get_or_init(Default::default);
        if let Some(t) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(t.clone());
        }
        let t = Tensor::full_dtype(&[], value, dtype, device)?;
        let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CAPACITY {
            // Constants that vary per step (schedules) would grow it forever: start over.
            map.clear();
        }
        map.insert(key, t.clone());
        Ok(t)
    }
}

/// Which operands a binary op's gradient reads, given which inputs need a gradient. The node
/// keeps only those: an operand held for nothing (both sides of every residual add) would stay
/// alive until backward.
fn saved_operands(op: BinaryOp, (wa, wb): (bool, bool)) -> (bool, bool) {
    use BinaryOp::*;
    match op {
        Add | Sub => (false, false),
        Mul => (wb, wa),
        Div => (wb, true),
        _ => (true, true),
    }
}

/// The gradients of the inputs in `want` (the others are `None`); `a` and `b` are the operands
/// [`saved_operands`] kept.
fn binary_grad(
    op: BinaryOp,
    a: Option<&Tensor>,
    b: Option<&Tensor>,
    g: &Tensor,
    (wa, wb): (bool, bool),
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    use BinaryOp::*;
    let saved = |t: Option<&Tensor>| {
        t.cloned().ok_or_else(|| Error::Autograd { op: op.name(), msg: "operand not saved".into() })
    };
    let when = |w: bool, f: &dyn Fn() -> Result<Tensor>| if w { f().map(Some) } else { Ok(None) };
    Ok(match op {
        Add => (wa.then(|| g.clone()), wb.then(|| g.clone())),
        Sub => (wa.then(|| g.clone()), when(wb, &|| g.neg())?),
        Mul => (when(wa, &|| g * &saved(b)?)?, when(wb, &|| g * &saved(a)?)?),
        Div => {
            let b = saved(b)?;
            let ga = (g / &b)?;
            let gb = when(wb, &|| (&(&ga * &saved(a)?)? / &b)?.neg())?;
            (wa.then_some(ga), gb)
        }
        Pow => {
            let (a, b) = (saved(a)?, saved(b)?);
            let y = a.pow(&b)?;
            let ga = (&(g * &b)? * &a.pow(&b.add_scalar(-1.0)?)?)?;
            // d/db a^b = a^b ln a; where a == 0 the limit is 0 (for b > 0).
            let ln_a = a.log()?;
            let safe = Tensor::where_(&a.eq_scalar(0.0)?, &Tensor::zeros_like(&ln_a)?, &ln_a)?;
            (Some(ga), Some((&(g * &y)? * &safe)?))
        }
        Maximum | Minimum => {
            let (a, b) = (saved(a)?, saved(b)?);
            let wins = if op == Maximum { a.gt(&b)? } else { a.lt(&b)? };
            let ties = a.eq(&b)?.to_dtype(a.dtype())?.mul_scalar(0.5)?;
            let wa = (&wins.to_dtype(a.dtype())? + &ties)?;
            let wb = wa.neg()?.add_scalar(1.0)?;
            (Some((g * &wa)?), Some((g * &wb)?))
        }
        Rem => {
            let (a, b) = (saved(a)?, saved(b)?);
            (Some(g.clone()), Some((g * &(&a / &b)?.floor()?)?.neg()?))
        }
        Eq | Ne | Lt | Le | Gt | Ge | And | Or => (None, None),
    })
}

macro_rules! binary_methods {
    ($($(#[$doc:meta])* $name:ident, $scalar:ident => $op:expr;)*) => {
        impl Tensor {
            $(
                $(#[$doc])*
                pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
                    self.binary(rhs, $op)
                }

                /// Scalar variant: the scalar takes this tensor's dtype.
                pub fn $scalar(&self, rhs: f64) -> Result<Tensor> {
                    self.binary(&self.scalar_like(rhs)?, $op)
                }
            )*
        }
    };
}

binary_methods! {
    /// `a + b`
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let d = Device::cpu();
    /// let a = Tensor::ones(&[2, 3], &d).unwrap();
    /// let b = Tensor::arange(0.0, 3.0, 1.0, &d).unwrap();
    /// assert_eq!(a.add(&b).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    /// ```
    ///
    /// # Operators
    ///
    /// `+ - * /` work between tensors (owned or borrowed), a tensor and an `f64`, and a tensor and a
    /// `Result<Tensor>` on either side. Every operator returns `Result<Tensor>`, and a `Result`
    /// operand carries its error through, so a chain needs a single `?`:
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// # fn main() -> kiln_core::Result<()> {
    /// let d = Device::cpu();
    /// let (a, b, c) = (Tensor::full(&[2], 2.0, &d)?, Tensor::full(&[2], 4.0, &d)?, Tensor::ones(&[2], &d)?);
    /// let y = (&a * &b + &c)?; // Result<Tensor> + &Tensor
    /// let z = (&c - (&a / &b))?; // &Tensor - Result<Tensor>
    /// assert_eq!(y.to_vec::<f32>()?, vec![9.0, 9.0]);
    /// assert_eq!(((&a * 0.5)? + &z)?.to_vec::<f32>()?, vec![1.5, 1.5]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Rust's orphan rule allows no impl between two `Result`s or a `Result` and an `f64`: write
    /// `((&a * &b)? + (&c * &d))?` and `((&a + &b)? * 2.0)?` there.
    add, add_scalar => BinaryOp::Add;
    /// `a - b`
    sub, sub_scalar => BinaryOp::Sub;
    /// `a · b`
    mul, mul_scalar => BinaryOp::Mul;
    /// `a / b` (integers: floor division, 0 on division by zero).
    div, div_scalar => BinaryOp::Div;
    /// `a ^ b`
    pow, pow_scalar => BinaryOp::Pow;
    /// Elementwise max (NaN propagates).
    maximum, maximum_scalar => BinaryOp::Maximum;
    /// Elementwise min (NaN propagates).
    minimum, minimum_scalar => BinaryOp::Minimum;
    /// Remainder with the divisor's sign (Python `%`, `torch.remainder`).
    rem, rem_scalar => BinaryOp::Rem;
    /// `a == b` (bool)
    eq, eq_scalar => BinaryOp::Eq;
    /// `a != b` (bool)
    ne, ne_scalar => BinaryOp::Ne;
    /// `a < b` (bool)
    lt, lt_scalar => BinaryOp::Lt;
    /// `a <= b` (bool)
    le, le_scalar => BinaryOp::Le;
    /// `a > b` (bool)
    gt, gt_scalar => BinaryOp::Gt;
    /// `a >= b` (bool)
    ge, ge_scalar => BinaryOp::Ge;
    /// Logical and of bool tensors.
    logical_and, logical_and_scalar => BinaryOp::And;
    /// Logical or of bool tensors.
    logical_or, logical_or_scalar => BinaryOp::Or;
}

// The `+ - * /` operators: see the "Operators" section of `Tensor::add`.
macro_rules! operator {
    ($trait:ident, $method:ident, $fn:ident, $scalar:ident) => {
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                Tensor::$fn(&self, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                Tensor::$fn(&self, &rhs)
            }
        }
        impl std::ops::$trait<&Tensor> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                Tensor::$fn(&self, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                Tensor::$fn(self, &rhs)
            }
        }
        // A `Result<Tensor>` on either side (the other a tensor) passes an error through, so
        // chains need one `?` at the end: `(&a * &b + &c)?`.
        impl std::ops::$trait<Result<Tensor>> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Result<Tensor>) -> Result<Tensor> {
                Tensor::$fn(self, &rhs?)
            }
        }
        impl std::ops::$trait<Result<Tensor>> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Result<Tensor>) -> Result<Tensor> {
                Tensor::$fn(&self, &rhs?)
            }
        }
        impl std::ops::$trait<&Tensor> for Result<Tensor> {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                Tensor::$fn(&self?, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for Result<Tensor> {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                Tensor::$fn(&self?, &rhs)
            }
        }
        impl std::ops::$trait<f64> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: f64) -> Result<Tensor> {
                Tensor::$scalar(&self, rhs)
            }
        }
        impl std::ops::$trait<f64> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: f64) -> Result<Tensor> {
                Tensor::$scalar(&self, rhs)
            }
        }
    };
}

operator!(Add, add, add, add_scalar);
operator!(Sub, sub, sub, sub_scalar);
operator!(Mul, mul, mul, mul_scalar);
operator!(Div, div, div, div_scalar);

impl std::ops::Neg for &Tensor {
    type Output = Result<Tensor>;
    fn neg(self) -> Result<Tensor> {
        Tensor::neg(self)
    }
}
