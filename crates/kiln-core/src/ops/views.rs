//! Views: new layouts over the same storage, no copy. Their gradients map the output gradient
//! back through the inverse view.

use crate::Tensor;
use crate::storage::Storage;
use kiln_backend::{Error, Layout, Result};
use std::sync::Arc;

impl Tensor {
    /// A new shape with the same elements; a view when strides allow, a copy otherwise. One
    /// dimension may be given as `-1`... use [`reshape_infer`](Self::reshape_infer) for that.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::arange(0.0, 6.0, 1.0, &Device::cpu()).unwrap().reshape(&[2, 3]).unwrap();
    /// assert_eq!(t.shape(), &[2, 3]);
    /// ```
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: Option<usize> = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(self.numel()) {
            return Err(Error::shape("reshape", format!("cannot reshape {:?} into {shape:?}", self.shape())));
        }
        let src = self.shape().to_vec();
        let back = move |g: &Tensor| Ok(vec![Some(g.reshape(&src)?)]);
        match self.layout().reshape_view(shape) {
            Some(l) => Ok(self.view_of(l, "reshape", back)),
            None => {
                let c = self.contiguous()?;
                let l = c
                    .layout()
                    .reshape_view(shape)
                    .ok_or_else(|| Error::shape("reshape", "internal: contiguous view"))?;
                Ok(c.view_of(l, "reshape", back))
            }
        }
    }

    /// Reshape where one entry may be `-1` (inferred).
    pub fn reshape_infer(&self, shape: &[isize]) -> Result<Tensor> {
        let known = shape.iter().filter(|&&d| d >= 0).try_fold(1usize, |n, &d| n.checked_mul(d as usize));
        let Some(known) = known else {
            return Err(Error::shape(
                "reshape",
                format!("cannot reshape {:?} into {shape:?}: too many elements", self.shape()),
            ));
        };
        let unknown = shape.iter().filter(|&&d| d < 0).count();
        if unknown > 1
            || shape.iter().any(|&d| d < -1)
            || (unknown == 1 && (known == 0 || !self.numel().is_multiple_of(known)))
        {
            return Err(Error::shape("reshape", format!("cannot reshape {:?} into {shape:?}", self.shape())));
        }
        let dims: Vec<usize> =
            shape.iter().map(|&d| if d < 0 { self.numel() / known.max(1) } else { d as usize }).collect();
        self.reshape(&dims)
    }

    /// Collapses dims `start..=end` into one.
    pub fn flatten(&self, start: isize, end: isize) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape(&[1]);
        }
        let (s, e) = (self.axis("flatten", start)?, self.axis("flatten", end)?);
        if s > e {
            return Err(Error::invalid(
                "flatten",
                format!("start {start} after end {end} for shape {:?}", self.shape()),
            ));
        }
        let mut shape: Vec<usize> = self.shape()[..s].to_vec();
        shape.push(self.shape()[s..=e].iter().product());
        shape.extend_from_slice(&self.shape()[e + 1..]);
        self.reshape(&shape)
    }

    /// Reorders dimensions.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::zeros(&[2, 3, 4], &Device::cpu()).unwrap().permute(&[2, 0, 1]).unwrap();
    /// assert_eq!(t.shape(), &[4, 2, 3]);
    /// ```
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let mut seen = vec![false; self.rank()];
        if dims.len() != self.rank() || dims.iter().any(|&d| d >= self.rank() || std::mem::replace(&mut seen[d], true))
        {
            return Err(Error::invalid(
                "permute",
                format!("{dims:?} is not a permutation of the dims of {:?}", self.shape()),
            ));
        }
        let mut inverse = vec![0; dims.len()];
        for (i, &d) in dims.iter().enumerate() {
            inverse[d] = i;
        }
        Ok(self.view_of(self.layout().permute(dims), "permute", move |g| Ok(vec![Some(g.permute(&inverse)?)])))
    }

    /// Swaps two dims.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let x = Tensor::zeros(&[2, 3, 4], &Device::cpu()).unwrap();
    /// let y = x.transpose(0, -1).unwrap(); // a view: no copy
    /// assert_eq!((y.shape(), y.is_contiguous()), (&[4usize, 3, 2][..], false));
    /// ```
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let (a, b) = (self.axis("transpose", a)?, self.axis("transpose", b)?);
        let mut dims: Vec<usize> = (0..self.rank()).collect();
        dims.swap(a, b);
        self.permute(&dims)
    }

    /// Transpose of a 2-D tensor (swaps the last two dims of higher ranks).
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::shape("t", format!("needs at least 2 dims, got {:?}", self.shape())));
        }
        self.transpose(-2, -1)
    }

    /// `len` entries of `dim` starting at `start`, as a view.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::arange(0.0, 10.0, 1.0, &Device::cpu()).unwrap().narrow(0, 2, 3).unwrap();
    /// assert_eq!(t.to_vec::<f32>().unwrap(), vec![2.0, 3.0, 4.0]);
    /// ```
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        self.slice(dim, start, start.saturating_add(len), 1)
    }

    /// Entries `start..end` of `dim`, every `step`-th, as a view (`x[.., start:end:step, ..]`).
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let x = Tensor::arange(0.0, 10.0, 1.0, &Device::cpu()).unwrap();
    /// assert_eq!(x.slice(0, 1, 8, 3).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 4.0, 7.0]);
    /// ```
    pub fn slice(&self, dim: isize, start: usize, end: usize, step: usize) -> Result<Tensor> {
        let d = self.axis("slice", dim)?;
        let size = self.shape()[d];
        if start > end || end > size || step == 0 {
            return Err(Error::IndexOutOfRange {
                op: "slice",
                index: end as i64,
                size,
                what: format!("dim {d} (start {start}, step {step})"),
            });
        }
        let len = (end - start).div_ceil(step);
        let layout = self.layout().step(d, start, len, step);
        let src_shape = self.shape().to_vec();
        let dtype = self.dtype();
        Ok(self.view_of(layout, "slice", move |g| {
            let mut full = Tensor::full_dtype(&src_shape, 0.0, dtype, g.device())?;
            let target = full.layout().step(d, start, len, step);
            write_into(g, &mut full, &target)?;
            Ok(vec![Some(full)])
        }))
    }

    /// Removes dim `dim`, which must have size 1.
    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        let d = self.axis("squeeze", dim)?;
        if self.shape()[d] != 1 {
            return Err(Error::shape("squeeze", format!("dim {d} of {:?} is not 1", self.shape())));
        }
        let shape = self.shape().to_vec();
        Ok(self.view_of(self.layout().squeeze(d), "squeeze", move |g| Ok(vec![Some(g.reshape(&shape)?)])))
    }

    /// Removes every size-1 dim.
    pub fn squeeze_all(&self) -> Result<Tensor> {
        let shape: Vec<usize> = self.shape().iter().copied().filter(|&d| d != 1).collect();
        self.reshape(&shape)
    }

    /// Inserts a size-1 dim at `dim` (`-1` appends).
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let x = Tensor::zeros(&[3], &Device::cpu()).unwrap();
    /// assert_eq!(x.unsqueeze(0).unwrap().shape(), &[1, 3]);
    /// assert_eq!(x.unsqueeze(-1).unwrap().squeeze(1).unwrap().shape(), &[3]);
    /// ```
    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor> {
        let d = crate::tensor::axis_in("unsqueeze", dim, self.rank() + 1)?;
        Ok(self.view_of(self.layout().unsqueeze(d), "unsqueeze", move |g| Ok(vec![Some(g.squeeze(d as isize)?)])))
    }

    /// A broadcast view with `shape` (size-1 and missing leading dims repeat without copying).
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::ones(&[3, 1], &Device::cpu()).unwrap().expand(&[2, 3, 4]).unwrap();
    /// assert_eq!(t.shape(), &[2, 3, 4]);
    /// ```
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let ok = shape.len() >= self.rank()
            && self.shape().iter().rev().zip(shape.iter().rev()).all(|(&s, &t)| s == t || s == 1);
        if !ok {
            return Err(Error::shape("expand", format!("cannot broadcast {:?} to {shape:?}", self.shape())));
        }
        if kiln_backend::checked_numel(shape).is_none() {
            return Err(Error::shape(
                "expand",
                format!("cannot broadcast {:?} to {shape:?}: more elements than fit a usize", self.shape()),
            ));
        }
        let src = self.shape().to_vec();
        Ok(self.view_of(self.layout().broadcast_to(shape), "expand", move |g| Ok(vec![Some(g.sum_to_shape(&src)?)])))
    }

    /// Alias of [`expand`](Self::expand).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        self.expand(shape)
    }

    /// This tensor with dense row-major storage (a no-op when it already is).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        self.copy()
    }

    /// A fresh contiguous copy.
    pub fn copy(&self) -> Result<Tensor> {
        let s = self.storage().cast(self.layout(), self.dtype())?;
        Tensor::from_op(s, self.shape(), self.device(), "copy", &[self], |g| Ok(vec![Some(g.clone())]))
    }

    /// Sums a broadcast gradient back down to `shape` (the adjoint of `expand`).
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let extra = self
            .rank()
            .checked_sub(shape.len())
            .ok_or_else(|| Error::shape("sum_to_shape", format!("{:?} has fewer dims than {shape:?}", self.shape())))?;
        if shape.iter().zip(&self.shape()[extra..]).any(|(&t, &s)| t != s && t != 1) {
            return Err(Error::shape("sum_to_shape", format!("{:?} does not broadcast from {shape:?}", self.shape())));
        }
        let mut axes: Vec<usize> = (0..extra).collect();
        for (i, &s) in shape.iter().enumerate() {
            if s == 1 && self.shape()[extra + i] != 1 {
                axes.push(extra + i);
            }
        }
        let summed = self.sum_axes(&axes, true)?;
        summed.reshape(shape)
    }
}

/// Writes `src` into `dst` through `target` (a layout over `dst`'s storage). `dst` must be a
/// fresh tensor that nothing else shares yet.
pub(crate) fn write_into(src: &Tensor, dst: &mut Tensor, target: &Layout) -> Result<()> {
    if src.device() != dst.device() {
        return Err(Error::DeviceMismatch { op: "copy_into", lhs: src.device().name(), rhs: dst.device().name() });
    }
    let src = if src.dtype() == dst.dtype() { src.clone() } else { src.to_dtype(dst.dtype())? };
    let inner = Arc::get_mut(&mut dst.0).ok_or_else(|| Error::invalid("copy_into", "destination is shared"))?;
    let storage = inner.storage_mut().ok_or_else(|| Error::invalid("copy_into", "destination storage is shared"))?;
    src.storage().copy_into(src.layout(), storage, target)
}

impl crate::tensor::Inner {
    pub(crate) fn storage_mut(&mut self) -> Option<&mut Storage> {
        let s = self.storage_lock_mut();
        Arc::get_mut(s)
    }
}
