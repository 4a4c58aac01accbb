//! Activation functions as parameter-free modules, for use in [`crate::Sequential`].

use crate::module::Module;
use kiln_core::{Device, Error, Result, Tensor};

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

activation!(
    /// `min(max(x, 0), 6)` (PyTorch's `nn.ReLU6`).
    Relu6, |x| x.relu6()
);
activation!(
    /// `x · relu6(x + 3) / 6` (PyTorch's `nn.Hardswish`).
    Hardswish, |x| x.hardswish()
);
activation!(
    /// `relu6(x + 3) / 6` (PyTorch's `nn.Hardsigmoid`).
    Hardsigmoid, |x| x.hardsigmoid()
);
activation!(
    /// Scaled ELU with PyTorch's constants (`nn.SELU`).
    Selu, |x| x.selu()
);
activation!(
    /// `log(sigmoid(x))`, stable for large `|x|` (`nn.LogSigmoid`).
    LogSigmoid, |x| x.logsigmoid()
);
activation!(
    /// `x / (1 + |x|)` (`nn.Softsign`).
    Softsign, |x| x.softsign()
);

/// Scalar-parameter activations: the parameters are plain numbers, not learned.
macro_rules! parametrised {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $default:expr),* }, |$s:ident, $x:ident| $body:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub struct $name {
            $(pub $field: f64,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $($field: $default),* }
            }
        }

        impl Module for $name {
            fn forward(&self, $x: &Tensor) -> Result<Tensor> {
                let $s = self;
                $body
            }

            fn named_parameters(&self) -> Vec<(String, Tensor)> {
                Vec::new()
            }
        }
    };
}

parametrised!(
    /// `min` below `min`, `max` above `max`, else `x` (`nn.Hardtanh`, default `[-1, 1]`).
    Hardtanh { min: -1.0, max: 1.0 }, |s, x| x.hardtanh(s.min, s.max)
);
parametrised!(
    /// `max(0, x) + min(0, α·(e^(x/α) − 1))` (`nn.CELU`, default α = 1).
    Celu { alpha: 1.0 }, |s, x| x.celu(s.alpha)
);
parametrised!(
    /// `ln(1 + e^(β·x)) / β`, linear where `β·x > threshold` (`nn.Softplus`, defaults 1 and 20).
    Softplus { beta: 1.0, threshold: 20.0 }, |s, x| x.softplus_with(s.beta, s.threshold)
);

/// Gated linear unit over `dim` (`nn.GLU`, default the last dim): `a · sigmoid(b)` for the two
/// halves of `dim`.
#[derive(Clone, Copy, Debug)]
pub struct Glu {
    pub dim: isize,
}

impl Default for Glu {
    fn default() -> Self {
        Glu { dim: -1 }
    }
}

impl Module for Glu {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.glu(self.dim)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// `x` where positive, else `weight · x` with a learned slope, PyTorch's `nn.PReLU`: one slope
/// shared by every channel or one per channel (dim 1). Parameter name: `"weight"`.
pub struct PRelu {
    pub weight: Tensor,
}

impl PRelu {
    /// `num_parameters` slopes (1, or the channel count) starting at `init` (PyTorch: 0.25).
    pub fn new(num_parameters: usize, init: f64, device: &Device) -> Result<PRelu> {
        if num_parameters == 0 {
            return Err(Error::invalid("PRelu::new", "num_parameters must be positive"));
        }
        let weight = Tensor::full_dtype(&[num_parameters], init, crate::init::default_dtype(), device)?.with_grad();
        Ok(PRelu { weight })
    }
}

impl Module for PRelu {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.prelu(&self.weight)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
}
