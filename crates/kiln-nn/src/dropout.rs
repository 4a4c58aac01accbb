//! `Dropout`: zeroes random elements while training.

use crate::module::Module;
use kiln_core::{Error, Result, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// PyTorch's `nn.Dropout`: in training each element is kept with probability `1 − p` and
/// scaled by `1 / (1 − p)`, so the expectation is unchanged; in evaluation it is the identity.
/// The mask comes from Kiln's seeded generator ([`kiln_core::manual_seed`]) and is generated
/// on the tensor's device inside the fused elementwise kernel ([`Tensor::dropout`]); backward
/// regenerates it instead of keeping it. Starts in training mode.
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// use kiln_nn::{Dropout, Module, ModuleExt};
/// let x = Tensor::ones(&[1000], &Device::cpu()).unwrap();
/// let drop = Dropout::new(0.5);
/// let y = drop.forward(&x).unwrap().to_vec::<f32>().unwrap();
/// assert!(y.iter().all(|&v| v == 0.0 || v == 2.0)); // kept elements scaled by 1 / (1 − p)
/// drop.eval();
/// assert_eq!(drop.forward(&x).unwrap().to_vec::<f32>().unwrap(), vec![1.0; 1000]);
/// ```
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
        if !self.is_training() {
            return Ok(x.clone());
        }
        x.dropout(self.p)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed)
    }
}
