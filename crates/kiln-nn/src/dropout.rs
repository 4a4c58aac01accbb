//! `Dropout`: zeroes random elements while training.

use crate::module::Module;
use kiln_core::{Error, Result, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// PyTorch's `nn.Dropout`: in training each element is kept with probability `1 − p` and
/// scaled by `1 / (1 − p)`, so the expectation is unchanged; in evaluation it is the identity.
/// The mask comes from Kiln's seeded generator ([`kiln_core::manual_seed`]). Starts in
/// training mode.
pub struct Dropout {
    pub p: f64,
    training: AtomicBool,
}

impl Dropout {
    /// Drops with probability `p`; a `p` outside `[0, 1]` is reported by `forward`.
    pub fn new(p: f64) -> Dropout {
        Dropout { p, training: AtomicBool::new(true) }
    }

    /// Is dropout active?
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !(0.0..=1.0).contains(&self.p) {
            return Err(Error::invalid("Dropout", format!("p = {} is not a probability", self.p)));
        }
        if !self.is_training() || self.p == 0.0 {
            return Ok(x.clone());
        }
        if self.p == 1.0 {
            return x.mul_scalar(0.0);
        }
        let keep = 1.0 - self.p;
        let mask = Tensor::rand(x.shape(), x.device())?.lt_scalar(keep)?.to_dtype(x.dtype())?.mul_scalar(1.0 / keep)?;
        x * &mask
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed)
    }
}
