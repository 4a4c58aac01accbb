//! Activation functions as parameter-free modules, for use in [`crate::Sequential`].

use crate::module::Module;
use kiln_core::{Result, Tensor};

macro_rules! activation {
    ($(#[$doc:meta])* $name:ident, |$x:ident| $body:expr) => {
        $(#[$doc])*
        ///
        /// ```
        /// # use kiln_core::{Device, Tensor};
        #[doc = concat!("use kiln_nn::{Module, ", stringify!($name), "};")]
        /// let x = Tensor::from_vec(vec![-1.5f32, 0.0, 2.0], &[3], &Device::cpu()).unwrap();
        #[doc = concat!("let y = ", stringify!($name), ".forward(&x).unwrap();")]
        #[doc = concat!("let want = ", stringify!($body), ".unwrap();")]
        /// assert_eq!(y.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
        /// ```
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
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// use kiln_nn::{LeakyRelu, Module};
/// let x = Tensor::from_vec(vec![-2.0f32, 3.0], &[2], &Device::cpu()).unwrap();
/// assert_eq!(LeakyRelu(0.5).forward(&x).unwrap().to_vec::<f32>().unwrap(), vec![-1.0, 3.0]);
/// ```
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
