//! Normalisation layers: `BatchNorm1d/2d`, `LayerNorm`, `RmsNorm`, `GroupNorm`.

use crate::init;
use crate::module::Module;
use kiln_core::{DType, Device, Error, Result, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// `[1, c, 1, ...]`: how a per-channel vector broadcasts against an `[n, c, ...]` input.
fn channel_view(rank: usize, c: usize) -> Vec<usize> {
    let mut v = vec![1; rank];
    v[1] = c;
    v
}

/// `(x − mean) / √(var + eps)` over `dims`, with the biased variance.
fn standardize(x: &Tensor, dims: &[isize], eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let mean = x.mean(dims, true)?;
    let centered = (x - &mean)?;
    let var = centered.square()?.mean(dims, true)?;
    let y = (&centered * &var.add_scalar(eps)?.rsqrt()?)?;
    Ok((y, mean, var))
}

/// State shared by `BatchNorm1d` and `BatchNorm2d`.
struct BatchNormState<'a> {
    op: &'static str,
    weight: &'a Tensor,
    bias: &'a Tensor,
    running_mean: &'a Tensor,
    running_var: &'a Tensor,
    eps: f64,
    momentum: f64,
    training: bool,
}

impl BatchNormState<'_> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.weight.numel();
        let view = channel_view(x.rank(), c);
        let dims: Vec<isize> = (0..x.rank() as isize).filter(|&d| d != 1).collect();
        let y = if self.training {
            let count = x.numel() / c.max(1);
            if count < 2 {
                return Err(Error::shape(
                    self.op,
                    format!("training needs more than one value per channel, input {:?}", x.shape()),
                ));
            }
            let (y, mean, var) = standardize(x, &dims, self.eps)?;
            kiln_core::no_grad(|| -> Result<()> {
                let m = self.momentum;
                let mean = mean.detach().reshape(&[c])?;
                // Running variance uses the unbiased estimate, as PyTorch does.
                let var = var.detach().reshape(&[c])?.mul_scalar(count as f64 / (count as f64 - 1.0))?;
                let rm = (&self.running_mean.mul_scalar(1.0 - m)? + &mean.mul_scalar(m)?)?;
                let rv = (&self.running_var.mul_scalar(1.0 - m)? + &var.mul_scalar(m)?)?;
                self.running_mean.set_data(&rm)?;
                self.running_var.set_data(&rv)
            })?;
            y
        } else {
            let mean = self.running_mean.reshape(&view)?;
            let inv = self.running_var.add_scalar(self.eps)?.rsqrt()?.reshape(&view)?;
            (&(x - &mean)? * &inv)?
        };
        &(&y * &self.weight.reshape(&view)?)? + &self.bias.reshape(&view)?
    }
}

macro_rules! batch_norm {
    ($(#[$doc:meta])* $name:ident, $op:literal, $ranks:expr, $expects:literal) => {
        $(#[$doc])*
        ///
        /// Training normalises with the batch statistics (biased variance) and updates
        /// `running_mean` / `running_var` as `(1 − momentum)·running + momentum·batch` (unbiased
        /// variance); evaluation normalises with the running statistics. eps 1e-5, momentum 0.1,
        /// learnable `weight` (ones) and `bias` (zeros); buffers `"running_mean"` (zeros) and
        /// `"running_var"` (ones). Starts in training mode.
        pub struct $name {
            pub weight: Tensor,
            pub bias: Tensor,
            pub running_mean: Tensor,
            pub running_var: Tensor,
            pub eps: f64,
            pub momentum: f64,
            training: AtomicBool,
        }

        impl $name {
            /// A layer normalising `num_features` channels.
            pub fn new(num_features: usize, device: &Device) -> Result<$name> {
                if num_features == 0 {
                    return Err(Error::invalid(concat!($op, "::new"), "num_features is 0"));
                }
                Ok($name {
                    weight: init::ones(&[num_features], device)?,
                    bias: init::zeros(&[num_features], device)?,
                    running_mean: init::buffer(&[num_features], 0.0, device)?,
                    running_var: init::buffer(&[num_features], 1.0, device)?,
                    eps: 1e-5,
                    momentum: 0.1,
                    training: AtomicBool::new(true),
                })
            }

            /// Is the layer using batch statistics?
            pub fn is_training(&self) -> bool {
                self.training.load(Ordering::Relaxed)
            }
        }

        impl Module for $name {
            fn forward(&self, x: &Tensor) -> Result<Tensor> {
                let c = self.weight.numel();
                if !$ranks.contains(&x.rank()) || x.shape()[1] != c {
                    return Err(Error::shape($op, format!(concat!("expects ", $expects, " with c = {}, got {:?}"), c, x.shape())));
                }
                BatchNormState {
                    op: $op,
                    weight: &self.weight,
                    bias: &self.bias,
                    running_mean: &self.running_mean,
                    running_var: &self.running_var,
                    eps: self.eps,
                    momentum: self.momentum,
                    training: self.is_training(),
                }
                .forward(x)
            }

            fn named_parameters(&self) -> Vec<(String, Tensor)> {
                vec![("weight".into(), self.weight.clone()), ("bias".into(), self.bias.clone())]
            }

            fn named_buffers(&self) -> Vec<(String, Tensor)> {
                vec![("running_mean".into(), self.running_mean.clone()), ("running_var".into(), self.running_var.clone())]
            }

            fn set_training(&self, training: bool) {
                self.training.store(training, Ordering::Relaxed)
            }
        }
    };
}

batch_norm!(
    /// Batch normalisation of `[n, c]` or `[n, c, l]` inputs per channel, PyTorch's `nn.BatchNorm1d`.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// use kiln_nn::{BatchNorm1d, Module, ModuleExt};
    /// let d = Device::cpu();
    /// let bn = BatchNorm1d::new(2, &d).unwrap();
    /// let x = Tensor::from_vec(vec![1.0f32, 10.0, 3.0, 30.0], &[2, 2], &d).unwrap();
    /// let y = bn.forward(&x).unwrap().to_vec::<f32>().unwrap(); // each channel: mean 0, var 1
    /// assert!((y[0] + 1.0).abs() < 1e-3 && (y[2] - 1.0).abs() < 1e-3);
    /// bn.eval(); // from now on the running statistics normalise
    /// assert_eq!(bn.forward(&x).unwrap().shape(), &[2, 2]);
    /// ```
    BatchNorm1d, "BatchNorm1d", [2usize, 3], "[n, c] or [n, c, l]"
);
batch_norm!(
    /// Batch normalisation of `[n, c, h, w]` inputs per channel, PyTorch's `nn.BatchNorm2d`.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// use kiln_nn::{BatchNorm2d, Module};
    /// let d = Device::cpu();
    /// let bn = BatchNorm2d::new(3, &d).unwrap();
    /// let x = Tensor::randn(&[4, 3, 5, 5], &d).unwrap();
    /// assert_eq!(bn.forward(&x).unwrap().shape(), &[4, 3, 5, 5]);
    /// ```
    BatchNorm2d, "BatchNorm2d", [4usize], "[n, c, h, w]"
);

/// Layer normalisation over the trailing `normalized_shape` dims, PyTorch's `nn.LayerNorm`:
/// eps 1e-5, biased variance, elementwise `weight` (ones) and `bias` (zeros) of that shape.
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// use kiln_nn::{LayerNorm, Module};
/// let d = Device::cpu();
/// let ln = LayerNorm::new(&[4], &d).unwrap();
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[1, 4], &d).unwrap();
/// let y = ln.forward(&x).unwrap().to_vec::<f32>().unwrap();
/// assert!(y.iter().sum::<f32>().abs() < 1e-5); // zero mean, unit variance per row
/// ```
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    /// Normalises over the last `normalized_shape.len()` dims, which must equal it.
    pub fn new(normalized_shape: &[usize], device: &Device) -> Result<LayerNorm> {
        if normalized_shape.is_empty() || normalized_shape.contains(&0) {
            return Err(Error::invalid("LayerNorm::new", format!("normalized_shape {normalized_shape:?}")));
        }
        Ok(LayerNorm {
            weight: init::ones(normalized_shape, device)?,
            bias: init::zeros(normalized_shape, device)?,
            eps: 1e-5,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let ns = self.weight.shape();
        if x.rank() < ns.len() || &x.shape()[x.rank() - ns.len()..] != ns {
            return Err(Error::shape(
                "LayerNorm",
                format!("input {:?} does not end in normalized_shape {ns:?}", x.shape()),
            ));
        }
        if x.dtype() == self.weight.dtype() && x.dtype() == self.bias.dtype() {
            return x.layer_norm(ns, Some(&self.weight), Some(&self.bias), self.eps);
        }
        // Mixed dtypes (parameters kept in another precision): the composite form promotes.
        let dims: Vec<isize> = (-(ns.len() as isize)..0).collect();
        let (y, _, _) = standardize(x, &dims, self.eps)?;
        &(&y * &self.weight)? + &self.bias
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".into(), self.weight.clone()), ("bias".into(), self.bias.clone())]
    }
}

/// Root-mean-square normalisation over the last dim, PyTorch's `nn.RMSNorm`:
/// `x / √(mean(x²) + eps) · weight`, weight ones, no bias.
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// use kiln_nn::{Module, RmsNorm};
/// let d = Device::cpu();
/// let norm = RmsNorm::new(2, Some(0.0), &d).unwrap();
/// let x = Tensor::from_vec(vec![3.0f32, 4.0], &[1, 2], &d).unwrap();
/// let y = norm.forward(&x).unwrap().to_vec::<f32>().unwrap(); // rms = √12.5
/// assert!((y[0] - 3.0 / 12.5f32.sqrt()).abs() < 1e-6 && (y[1] - 4.0 / 12.5f32.sqrt()).abs() < 1e-6);
/// ```
pub struct RmsNorm {
    pub weight: Tensor,
    /// `None` uses the machine epsilon of the input's dtype, as PyTorch.
    pub eps: Option<f64>,
}

impl RmsNorm {
    /// Normalises over a last dim of size `dim`.
    pub fn new(dim: usize, eps: Option<f64>, device: &Device) -> Result<RmsNorm> {
        if dim == 0 {
            return Err(Error::invalid("RmsNorm::new", "dim is 0"));
        }
        Ok(RmsNorm { weight: init::ones(&[dim], device)?, eps })
    }
}

fn machine_eps(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 0.000_976_562_5,
        DType::F64 => f64::EPSILON,
        _ => f32::EPSILON as f64,
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let d = self.weight.numel();
        if x.rank() == 0 || x.shape()[x.rank() - 1] != d {
            return Err(Error::shape("RmsNorm", format!("input {:?} does not end in {d}", x.shape())));
        }
        let eps = self.eps.unwrap_or_else(|| machine_eps(x.dtype()));
        if x.dtype() == self.weight.dtype() {
            return x.rms_norm(&[d], Some(&self.weight), eps);
        }
        let inv = x.square()?.mean(&[-1], true)?.add_scalar(eps)?.rsqrt()?;
        &(x * &inv)? * &self.weight
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".into(), self.weight.clone())]
    }
}

/// Group normalisation, PyTorch's `nn.GroupNorm`: the channels of `[n, c, ...]` split into
/// `groups` groups, each normalised over its channels and spatial positions (eps 1e-5, biased
/// variance), then a per-channel `weight` (ones) and `bias` (zeros).
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// use kiln_nn::{GroupNorm, Module};
/// let d = Device::cpu();
/// let gn = GroupNorm::new(2, 4, &d).unwrap(); // 4 channels in 2 groups
/// let x = Tensor::randn(&[3, 4, 5, 5], &d).unwrap();
/// assert_eq!(gn.forward(&x).unwrap().shape(), &[3, 4, 5, 5]);
/// ```
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub groups: usize,
    pub eps: f64,
}

impl GroupNorm {
    /// `channels` must be a multiple of `groups`.
    pub fn new(groups: usize, channels: usize, device: &Device) -> Result<GroupNorm> {
        if groups == 0 || channels == 0 || !channels.is_multiple_of(groups) {
            return Err(Error::invalid("GroupNorm::new", format!("{channels} channels in {groups} groups")));
        }
        Ok(GroupNorm {
            weight: init::ones(&[channels], device)?,
            bias: init::zeros(&[channels], device)?,
            groups,
            eps: 1e-5,
        })
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.weight.numel();
        if x.rank() < 2 || x.shape()[1] != c {
            return Err(Error::shape("GroupNorm", format!("expects [n, {c}, ...], got {:?}", x.shape())));
        }
        let n = x.shape()[0];
        let grouped = x.reshape(&[n, self.groups, x.numel() / (n * self.groups).max(1)])?;
        let (y, _, _) = standardize(&grouped, &[2], self.eps)?;
        let view = channel_view(x.rank(), c);
        &(&y.reshape(x.shape())? * &self.weight.reshape(&view)?)? + &self.bias.reshape(&view)?
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".into(), self.weight.clone()), ("bias".into(), self.bias.clone())]
    }
}
