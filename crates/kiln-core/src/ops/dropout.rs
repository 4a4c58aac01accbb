//! Dropout as one op: `x · mask / keep`, the mask drawn from Kiln's Philox stream where `x` lives.
//! No mask tensor is kept: the gradient regenerates the same mask from the op's key, and on the
//! GPU the mask is a fused random leaf that its product reads inline, so it is never stored.

use crate::storage::Storage;
use crate::{Tensor, rng};
use kiln_backend::{BinaryOp, DType, Distribution, Error, Layout, PhiloxKey, Result};

impl Tensor {
    /// Dropout in training mode (PyTorch's `F.dropout(x, p)`): each element is kept with
    /// probability `1 − p` and scaled by `1 / (1 − p)`, so the expectation is unchanged; `p = 0`
    /// is the identity and `p = 1` gives zeros. The mask comes from Kiln's generator
    /// ([`crate::manual_seed`]) and is the same on every device.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let x = Tensor::ones(&[1000], &Device::cpu()).unwrap();
    /// let y = x.dropout(0.5).unwrap().to_vec::<f32>().unwrap();
    /// assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
    /// assert!(x.dropout(-0.1).is_err());
    /// ```
    pub fn dropout(&self, p: f64) -> Result<Tensor> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid("dropout", format!("p = {p} is not a probability")));
        }
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: "dropout",
                dtype: self.dtype(),
                why: " (needs a float tensor)".into(),
            });
        }
        if p == 0.0 {
            return Ok(self.clone());
        }
        if p == 1.0 {
            return self.mul_scalar(0.0);
        }
        let key = rng::reserve(self.numel());
        self.dropout_at(1.0 - p, key)
    }

    /// `self · mask(key) / keep`. Its gradient is the same op on the incoming gradient.
    fn dropout_at(&self, keep: f64, key: PhiloxKey) -> Result<Tensor> {
        let dist = Distribution::Bernoulli { keep, value: 1.0 / keep };
        let dtype = self.dtype();
        // f16 is scaled in f32 and rounded once, as PyTorch does (its "opmath" type): a mask
        // holding 1/keep in f16 would round the scale first and differ from it by an ulp. The
        // casts fuse with the product on the GPU, so this is still one kernel.
        let wide = if dtype == DType::F16 { DType::F32 } else { dtype };
        let mask = Storage::random(self.device(), self.numel(), dist, key, wide)?;
        let dense = Layout::contiguous(self.shape());
        let out = if wide == dtype {
            self.storage().binary(self.layout(), &mask, &dense, BinaryOp::Mul)?
        } else {
            let x = self.storage().cast(self.layout(), wide)?;
            x.binary(&dense, &mask, &dense, BinaryOp::Mul)?.cast(&dense, dtype)?
        };
        Tensor::from_op(out, self.shape(), self.device(), "dropout", &[self], move |g| {
            Ok(vec![Some(g.dropout_at(keep, key)?)])
        })
    }
}
