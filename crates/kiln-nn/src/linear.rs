//! `Linear`: `y = x·Wᵀ + b`.

use crate::init;
use crate::module::Module;
use kiln_core::{Device, Error, Result, Tensor};

/// A fully connected layer, PyTorch's `nn.Linear`: weight `[out, in]`, optional bias `[out]`,
/// both initialised `U(−1/√in, 1/√in)`. Parameter names: `"weight"`, `"bias"`.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A layer mapping `[.., in_features]` to `[.., out_features]`.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// # use kiln_nn::{Linear, Module};
    /// let cpu = Device::cpu();
    /// let layer = Linear::new(4, 3, true, &cpu).unwrap();
    /// let y = layer.forward(&Tensor::ones(&[2, 5, 4], &cpu).unwrap()).unwrap();
    /// assert_eq!(y.shape(), &[2, 5, 3]);
    /// ```
    pub fn new(in_features: usize, out_features: usize, bias: bool, device: &Device) -> Result<Linear> {
        if in_features == 0 {
            return Err(Error::invalid("Linear::new", "in_features is 0"));
        }
        // kaiming_uniform with a = √5 gives exactly U(−1/√in, 1/√in), as PyTorch.
        let weight = init::kaiming_uniform(&[out_features, in_features], in_features, 5f64.sqrt(), device)?;
        let bound = 1.0 / (in_features as f64).sqrt();
        let bias = if bias { Some(init::uniform(&[out_features], -bound, bound, device)?) } else { None };
        Ok(Linear { weight, bias })
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() == 0 || x.shape()[x.rank() - 1] != self.in_features() {
            return Err(Error::shape(
                "Linear",
                format!("input {:?} does not end in in_features = {}", x.shape(), self.in_features()),
            ));
        }
        let y = x.matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => &y + b,
            None => Ok(y),
        }
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            out.push(("bias".to_string(), b.clone()));
        }
        out
    }
}
