//! Elementwise ops of three tensors (`TernaryOp`: addcmul, ...), with broadcasting and their
//! gradient rules. One primitive runs each as one kernel (fused with its neighbours on the GPU);
//! a new op is a `TernaryOp` variant, its formula on each backend, a method and a gradient arm
//! here, and a row in `tests/op_table.rs`.

use crate::Tensor;
use crate::ops::binary::broadcast_shapes;
use kiln_backend::{Error, Result, TernaryOp};

impl Tensor {
    /// Applies `op` to `self`, `b` and `c` (same float dtype, broadcast together), recording
    /// its gradient.
    pub fn ternary(&self, b: &Tensor, c: &Tensor, op: TernaryOp) -> Result<Tensor> {
        let name = op.name();
        for other in [b, c] {
            self.check_same_device(name, other)?;
            if other.dtype() != self.dtype() {
                return Err(Error::dtype(name, self.dtype(), other.dtype()));
            }
        }
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: name,
                dtype: self.dtype(),
                why: " (needs a float tensor)".into(),
            });
        }
        let shape = broadcast_shapes(name, &broadcast_shapes(name, self.shape(), b.shape())?, c.shape())?;
        let (xa, xb, xc) = (self.expand(&shape)?, b.expand(&shape)?, c.expand(&shape)?);
        let out = xa.storage().ternary(xa.layout(), &xb.storage(), xb.layout(), &xc.storage(), xc.layout(), op)?;
        // The gradient rules read the two factors, never `self`: only they are kept.
        let (fb, fc) = (b.clone(), c.clone());
        let shapes = [self.shape().to_vec(), b.shape().to_vec(), c.shape().to_vec()];
        Tensor::from_op(out, &shape, self.device(), name, &[self, b, c], move |g| {
            let grads = ternary_grad(op, &fb, &fc, g)?;
            let mut out = Vec::with_capacity(3);
            for (grad, input) in grads.into_iter().zip(&shapes) {
                out.push(grad.map(|t| t.sum_to_shape(input)).transpose()?);
            }
            Ok(out)
        })
    }
}

/// The gradients of `op(a, b, c)` with respect to a, b and c, at the broadcast shape of `g`.
fn ternary_grad(op: TernaryOp, b: &Tensor, c: &Tensor, g: &Tensor) -> Result<[Option<Tensor>; 3]> {
    Ok(match op {
        // a + v·b·c
        TernaryOp::Addcmul(v) => {
            let gv = g.mul_scalar(v)?;
            [Some(g.clone()), Some((&gv * c)?), Some((&gv * b)?)]
        }
        // a + v·b/c
        TernaryOp::Addcdiv(v) => {
            let gb = (&g.mul_scalar(v)? / c)?;
            let gc = (&(&gb * b)? / c)?.neg()?;
            [Some(g.clone()), Some(gb), Some(gc)]
        }
    })
}

impl Tensor {
    /// `self + value · t1 · t2`, elementwise with broadcasting, in one kernel (PyTorch's
    /// `addcmul`).
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let d = Device::cpu();
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2], &d).unwrap();
    /// let t = Tensor::from_vec(vec![3.0f32, 4.0], &[2], &d).unwrap();
    /// let y = x.addcmul(&t, &t, 0.5).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![5.5, 10.0]);
    /// ```
    pub fn addcmul(&self, t1: &Tensor, t2: &Tensor, value: f64) -> Result<Tensor> {
        self.ternary(t1, t2, TernaryOp::Addcmul(value))
    }

    /// `self + value · t1 / t2`, elementwise with broadcasting, in one kernel (PyTorch's
    /// `addcdiv`).
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let d = Device::cpu();
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2], &d).unwrap();
    /// let t1 = Tensor::from_vec(vec![3.0f32, 4.0], &[2], &d).unwrap();
    /// let t2 = Tensor::from_vec(vec![2.0f32, 8.0], &[2], &d).unwrap();
    /// assert_eq!(x.addcdiv(&t1, &t2, 2.0).unwrap().to_vec::<f32>().unwrap(), vec![4.0, 3.0]);
    /// ```
    pub fn addcdiv(&self, t1: &Tensor, t2: &Tensor, value: f64) -> Result<Tensor> {
        self.ternary(t1, t2, TernaryOp::Addcdiv(value))
    }
}
