//! `Embedding`: a lookup table of learnable vectors.

use crate::init;
use crate::module::Module;
use kiln_core::{DType, Device, Error, Result, Tensor};

/// PyTorch's `nn.Embedding`: `weight [num_embeddings, dim]` initialised `N(0, 1)`; forward maps
/// u32/i32 ids of any shape to `[..ids.shape, dim]`. Name: `"weight"`.
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// use kiln_nn::{Embedding, Module};
/// let d = Device::cpu();
/// let emb = Embedding::new(10, 4, &d).unwrap();
/// let ids = Tensor::from_vec(vec![1u32, 7, 7], &[3], &d).unwrap();
/// let y = emb.forward(&ids).unwrap();
/// assert_eq!(y.shape(), &[3, 4]);
/// let rows = y.to_vec::<f32>().unwrap();
/// assert_eq!(rows[4..8], rows[8..12]); // the same id, the same row
/// ```
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
