//! Matrix products with PyTorch's `matmul` rules: vectors, matrices, broadcast batches.
//! Transposed (strided) operands go to the kernel as they are, without a copy.

use crate::Tensor;
use crate::ops::binary::broadcast_shapes;
use kiln_backend::{Error, Result};

impl Tensor {
    /// Matrix product.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let d = Device::cpu();
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2], &d).unwrap();
    /// let i = Tensor::eye(2, &d).unwrap();
    /// assert_eq!(a.matmul(&i).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    /// assert_eq!(a.matmul(&a.t().unwrap()).unwrap().to_vec::<f32>().unwrap(), vec![5.0, 11.0, 11.0, 25.0]);
    /// ```
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.check_same_device("matmul", rhs)?;
        // Under autocast, f32 operands run as f16 and the result comes back as f32.
        if let Some(out) = crate::autocast::product(self, rhs, Tensor::matmul) {
            return out;
        }
        if self.dtype() != rhs.dtype() {
            return Err(Error::dtype("matmul", self.dtype(), rhs.dtype()));
        }
        if self.rank() == 0 || rhs.rank() == 0 {
            return Err(Error::shape(
                "matmul",
                format!("needs at least 1-D operands, got {:?} and {:?}", self.shape(), rhs.shape()),
            ));
        }
        let a = if self.rank() == 1 { self.unsqueeze(0)? } else { self.clone() };
        let b = if rhs.rank() == 1 { rhs.unsqueeze(-1)? } else { rhs.clone() };
        let (m, k) = (a.shape()[a.rank() - 2], a.shape()[a.rank() - 1]);
        let (k2, n) = (b.shape()[b.rank() - 2], b.shape()[b.rank() - 1]);
        if k != k2 {
            return Err(Error::shape("matmul", format!("inner dims differ: {:?} · {:?}", self.shape(), rhs.shape())));
        }
        // `[b, t, k] · [k, n]` as one `[b·t, k] · [k, n]` product when the rows merge without a
        // copy: one kernel instead of a batch, and the weight gradient becomes one
        // `[k, b·t] · [b·t, n]` product instead of b products and a sum over the broadcast.
        if self.rank() > 2 && rhs.rank() == 2 {
            let rows = a.numel() / k.max(1);
            if k > 0 && a.layout().reshape_view(&[rows, k]).is_some() {
                let mut shape = a.shape()[..a.rank() - 1].to_vec();
                shape.push(n);
                return a.reshape(&[rows, k])?.matmul(&b)?.reshape(&shape);
            }
        }
        let batch = broadcast_shapes("matmul", &a.shape()[..a.rank() - 2], &b.shape()[..b.rank() - 2])?;
        let bsz: usize = batch.iter().product();
        let a3 = a.expand(&[batch.clone(), vec![m, k]].concat())?.reshape(&[bsz, m, k])?;
        let b3 = b.expand(&[batch.clone(), vec![k, n]].concat())?.reshape(&[bsz, k, n])?;
        let out = a3.bmm(&b3)?;
        let mut shape = batch;
        if self.rank() > 1 {
            shape.push(m);
        }
        if rhs.rank() > 1 {
            shape.push(n);
        }
        out.reshape(&shape)
    }

    /// `[b, m, k] · [b, k, n]` on 3-D tensors; the primitive `matmul` records.
    fn bmm(&self, rhs: &Tensor) -> Result<Tensor> {
        let (bsz, m, n) = (self.shape()[0], self.shape()[1], rhs.shape()[2]);
        let out = self.storage().matmul(self.layout(), &rhs.storage(), rhs.layout())?;
        let inputs: &[&Tensor] = if self.dtype().is_float() { &[self, rhs] } else { &[] };
        let (a, b) = (self.clone(), rhs.clone());
        Tensor::from_op(out, &[bsz, m, n], self.device(), "matmul", inputs, move |g| {
            // Only the gradients someone needs: a network's input needs none, and its product
            // would be a whole matmul thrown away.
            // An operand that is a transposed view (a Linear layer's `weightᵀ`) gets its gradient
            // as the transpose of the product the other way round: the same numbers, stored in the
            // operand's own orientation, so the view's backward hands the weight a dense gradient
            // instead of one that must be transposed into place.
            let ga = match (a.requires_grad(), is_transposed(&a)) {
                (false, _) => None,
                (true, true) => Some(b.bmm(&g.transpose(1, 2)?)?.transpose(1, 2)?),
                (true, false) => Some(g.bmm(&b.transpose(1, 2)?)?),
            };
            let gb = match (b.requires_grad(), is_transposed(&b)) {
                (false, _) => None,
                (true, true) => Some(g.transpose(1, 2)?.bmm(&a)?.transpose(1, 2)?),
                (true, false) => Some(a.transpose(1, 2)?.bmm(g)?),
            };
            Ok(vec![ga, gb])
        })
    }

    /// Dot product of two 1-D tensors.
    pub fn dot(&self, rhs: &Tensor) -> Result<Tensor> {
        if self.rank() != 1 || rhs.rank() != 1 {
            return Err(Error::shape(
                "dot",
                format!("needs 1-D operands, got {:?} and {:?}", self.shape(), rhs.shape()),
            ));
        }
        self.matmul(rhs)
    }
}

/// Is this `[b, r, c]` operand a column-major view (unit stride down its rows, `r, c > 1`)?
fn is_transposed(t: &Tensor) -> bool {
    let (shape, strides) = (t.shape(), t.strides());
    shape[1] > 1 && shape[2] > 1 && strides[1] == 1 && strides[2] >= shape[1]
}
