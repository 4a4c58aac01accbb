//! Activation functions as parameter-free modules, for use in [`crate::Sequential`].

use crate::module::Module;
use kiln_core::{Result, Tensor};

macro_rules! activation {
    ($(#[$doc:meta])* $name:ident, |$x:ident| $body:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $name;

        impl Module for $name {
            fn forward(&self, $x: &Tensor) -> Result<Tensor> {
                $body
            }

            fn named_parameters(&self) -> Vec<(String, Tensor)> {
                Vec::new()
            }
        }
    };
}

activation!(
    /// `max(x, 0)`
    Relu, |x| x.relu()
);
activation!(
    /// GELU, exact erf form (PyTorch's `nn.GELU()` default).
    Gelu, |x| x.gelu()
);
activation!(
    /// GELU, tanh approximation (`nn.GELU(approximate="tanh")`).
    GeluTanh, |x| x.gelu_tanh()
);
activation!(
    /// `x · sigmoid(x)` (SiLU / swish).
    Silu, |x| x.silu()
);
activation!(
    /// Hyperbolic tangent.
    Tanh, |x| x.tanh()
);
activation!(
    /// Logistic sigmoid.
    Sigmoid, |x| x.sigmoid()
);

/// `x` if positive else `slope · x` (PyTorch's default slope is 0.01).
#[derive(Clone, Copy, Debug)]
pub struct LeakyRelu(pub f64);

impl Default for LeakyRelu {
    fn default() -> Self {
        LeakyRelu(0.01)
    }
}

impl Module for LeakyRelu {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.leaky_relu(self.0)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}
