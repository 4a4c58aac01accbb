//! `Embedding`: a lookup table of learnable vectors.

use crate::init;
use crate::module::Module;
use kiln_core::{DType, Device, Error, Result, Tensor};

/// PyTorch's `nn.Embedding`: `weight [num_embeddings, dim]` initialised `N(0, 1)`; forward maps
/// u32/i32 ids of any shape to `[..ids.shape, dim]`. Name: `"weight"`.
///
/// With `padding_idx` (PyTorch's, see [`Embedding::with_padding_idx`]) that row starts at zero
/// and never receives a gradient: lookups of it return the row as it is (a loaded checkpoint's
/// values included) but pass no gradient back to it.
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
    /// The row that receives no gradient, if any (already counted from the front).
    pub padding_idx: Option<usize>,
}

impl Embedding {
    /// A table of `num_embeddings` vectors of size `dim`.
    pub fn new(num_embeddings: usize, dim: usize, device: &Device) -> Result<Embedding> {
        if num_embeddings == 0 || dim == 0 {
            return Err(Error::invalid("Embedding::new", format!("{num_embeddings} embeddings of dim {dim}")));
        }
        Ok(Embedding { weight: init::normal(&[num_embeddings, dim], 0.0, 1.0, device)?, padding_idx: None })
    }

    /// A table whose row `padding_idx` (negative counts from the end, as in PyTorch) is zero
    /// at init and gets no gradient.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// # use kiln_nn::{Embedding, Module};
    /// let emb = Embedding::with_padding_idx(4, 3, -1, &Device::cpu()).unwrap();
    /// assert_eq!(emb.padding_idx, Some(3));
    /// let ids = Tensor::from_vec(vec![3u32], &[1], &Device::cpu()).unwrap();
    /// assert_eq!(emb.forward(&ids).unwrap().to_vec::<f32>().unwrap(), vec![0.0; 3]);
    /// ```
    pub fn with_padding_idx(
        num_embeddings: usize,
        dim: usize,
        padding_idx: isize,
        device: &Device,
    ) -> Result<Embedding> {
        const OP: &str = "Embedding::with_padding_idx";
        let n = num_embeddings as isize;
        if padding_idx >= n || padding_idx < -n {
            return Err(Error::IndexOutOfRange {
                op: OP,
                index: padding_idx as i64,
                size: num_embeddings,
                what: "embeddings".into(),
            });
        }
        let pad = if padding_idx < 0 { (padding_idx + n) as usize } else { padding_idx as usize };
        let mut emb = Embedding::new(num_embeddings, dim, device)?;
        let table = emb.weight.detach();
        let is_pad = Tensor::arange_u32(num_embeddings, device)?.eq_scalar(pad as f64)?.unsqueeze(-1)?;
        let zero = Tensor::full_dtype(&[], 0.0, table.dtype(), device)?;
        emb.weight = Tensor::where_(&is_pad, &zero, &table)?.detach().with_grad();
        emb.padding_idx = Some(pad);
        Ok(emb)
    }
}

impl Module for Embedding {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        if !matches!(ids.dtype(), DType::U32 | DType::I32) {
            return Err(Error::dtype("Embedding", "u32 or i32 ids", ids.dtype()));
        }
        let flat = ids.reshape(&[ids.numel()])?;
        let mut rows = self.weight.index_select(0, &flat)?;
        if let Some(pad) = self.padding_idx {
            // Lookups of the padding row read it through a detached copy: same values, no gradient.
            let is_pad = flat.eq_scalar(pad as f64)?.unsqueeze(-1)?;
            rows = Tensor::where_(&is_pad, &rows.detach(), &rows)?;
        }
        let mut shape = ids.shape().to_vec();
        shape.push(self.weight.shape()[1]);
        rows.reshape(&shape)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".into(), self.weight.clone())]
    }
}
