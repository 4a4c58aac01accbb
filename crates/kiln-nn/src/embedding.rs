//! `Embedding`: a lookup table of learnable vectors.

use crate::init;
use crate::module::Module;
use kiln_core::{DType, Device, Error, Result, Tensor};

/// PyTorch's `nn.Embedding`: `weight [num_embeddings, dim]` initialised `N(0, 1)`; forward maps
/// u32/i32 ids of any shape to `[..ids.shape, dim]`. Name: `"weight"`.
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    /// A table of `num_embeddings` vectors of size `dim`.
    pub fn new(num_embeddings: usize, dim: usize, device: &Device) -> Result<Embedding> {
        if num_embeddings == 0 || dim == 0 {
            return Err(Error::invalid("Embedding::new", format!("{num_embeddings} embeddings of dim {dim}")));
        }
        Ok(Embedding { weight: init::normal(&[num_embeddings, dim], 0.0, 1.0, device)? })
    }
}

impl Module for Embedding {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        if !matches!(ids.dtype(), DType::U32 | DType::I32) {
            return Err(Error::dtype("Embedding", "u32 or i32 ids", ids.dtype()));
        }
        let flat = ids.reshape(&[ids.numel()])?;
        let rows = self.weight.index_select(0, &flat)?;
        let mut shape = ids.shape().to_vec();
        shape.push(self.weight.shape()[1]);
        rows.reshape(&shape)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".into(), self.weight.clone())]
    }
}
