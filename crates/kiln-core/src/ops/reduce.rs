//! Reductions over any set of axes (with `keepdim`), softmax / log-softmax, cumsum.

use crate::Tensor;
use kiln_backend::{DType, Error, ReduceOp, Result};

impl Tensor {
    fn axes(&self, op: &'static str, dims: &[isize]) -> Result<Vec<usize>> {
        let mut axes = Vec::with_capacity(dims.len());
        for &d in dims {
            let a = self.axis(op, d)?;
            if axes.contains(&a) {
                return Err(Error::invalid(op, format!("dim {d} repeated in {dims:?}")));
            }
            axes.push(a);
        }
        axes.sort_unstable();
        Ok(axes)
    }

    /// The shape with `axes` set to 1 (keepdim) or removed.
    fn reduced_shape(&self, axes: &[usize], keepdim: bool) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, &d) in self.shape().iter().enumerate() {
            if !axes.contains(&i) {
                out.push(d);
            } else if keepdim {
                out.push(1);
            }
        }
        out
    }

    /// Runs a backend reduction over `axes` (sorted, unique) without recording a gradient.
    fn raw_reduce(&self, op: ReduceOp, axes: &[usize], keepdim: bool) -> Result<(crate::storage::Storage, Vec<usize>)> {
        let mut order: Vec<usize> = (0..self.rank()).filter(|d| !axes.contains(d)).collect();
        order.extend_from_slice(axes);
        let layout = self.layout().permute(&order);
        let out = self.storage().reduce(&layout, op, axes.len())?;
        Ok((out, self.reduced_shape(axes, keepdim)))
    }

    /// Reduces with `op` over the sorted, unique `axes`, recording the gradient.
    pub(crate) fn reduce_axes(&self, op: ReduceOp, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        if self.dtype() == DType::Bool && !op.is_arg() {
            return self.to_dtype(DType::U32)?.reduce_axes(op, axes, keepdim);
        }
        let (out, shape) = self.raw_reduce(op, axes, keepdim)?;
        let differentiable = self.dtype().is_float() && !op.is_arg();
        let inputs: &[&Tensor] = if differentiable { &[self] } else { &[] };
        // A sum's gradient reads only the input's shape: holding the input would keep it alive.
        let x_saved = (differentiable && op != ReduceOp::Sum).then(|| self.clone());
        let x_shape = self.shape().to_vec();
        let keep_shape = self.reduced_shape(axes, true);
        let axes_v = axes.to_vec();
        let result = std::sync::Arc::new(std::sync::OnceLock::<Tensor>::new());
        let slot = result.clone();
        let t = Tensor::from_op(out, &shape, self.device(), op.name(), inputs, move |g| {
            let g = g.reshape(&keep_shape)?.expand(&x_shape)?;
            let y =
                || slot.get().cloned().ok_or_else(|| Error::Autograd { op: op.name(), msg: "output not saved".into() });
            let Some(x) = &x_saved else { return Ok(vec![Some(g)]) };
            let grad = match op {
                ReduceOp::Sum => g,
                ReduceOp::Prod => (&g * &(&y()?.reshape(&keep_shape)? / x)?)?,
                ReduceOp::Max | ReduceOp::Min => {
                    // Ties share the gradient equally (as torch.amax / amin).
                    let mask = x.eq(&y()?.reshape(&keep_shape)?)?.to_dtype(x.dtype())?;
                    let count = mask.sum_axes(&axes_v, true)?;
                    (&(&g * &mask)? / &count)?
                }
                ReduceOp::ArgMax | ReduceOp::ArgMin => return Ok(vec![None]),
            };
            Ok(vec![Some(grad)])
        })?;
        if t.requires_grad() && matches!(op, ReduceOp::Prod | ReduceOp::Max | ReduceOp::Min) {
            let _ = result.set(t.detach());
        }
        Ok(t)
    }

    pub(crate) fn sum_axes(&self, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        self.reduce_axes(ReduceOp::Sum, axes, keepdim)
    }

    /// Sum over `dims` (negative counts from the end).
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::ones(&[2, 3], &Device::cpu()).unwrap();
    /// assert_eq!(t.sum(&[1], false).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 3.0]);
    /// ```
    pub fn sum(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes = self.axes("sum", dims)?;
        self.sum_axes(&axes, keepdim)
    }

    /// Sum of every element (0-d result).
    pub fn sum_all(&self) -> Result<Tensor> {
        let axes: Vec<usize> = (0..self.rank()).collect();
        self.sum_axes(&axes, false)
    }

    /// Mean over `dims`.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 6.0], &[2, 2], &Device::cpu()).unwrap();
    /// assert_eq!(x.mean(&[1], false).unwrap().to_vec::<f32>().unwrap(), vec![1.5, 4.5]);
    /// assert_eq!(x.mean(&[0], true).unwrap().shape(), &[1, 2]);
    /// ```
    pub fn mean(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes = self.axes("mean", dims)?;
        self.mean_axes(&axes, keepdim)
    }

    fn mean_axes(&self, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: "mean",
                dtype: self.dtype(),
                why: " (needs a float tensor)".into(),
            });
        }
        let n: usize = axes.iter().map(|&a| self.shape()[a]).product();
        self.sum_axes(axes, keepdim)?.div_scalar(n as f64)
    }

    /// Mean of every element.
    pub fn mean_all(&self) -> Result<Tensor> {
        let axes: Vec<usize> = (0..self.rank()).collect();
        self.mean_axes(&axes, false)
    }

    /// Max over `dims` (NaN propagates; ties share the gradient).
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 5.0, 3.0, 2.0], &[2, 2], &Device::cpu()).unwrap();
    /// assert_eq!(x.max(&[-1], false).unwrap().to_vec::<f32>().unwrap(), vec![5.0, 3.0]);
    /// ```
    pub fn max(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes = self.axes("max", dims)?;
        self.reduce_axes(ReduceOp::Max, &axes, keepdim)
    }

    /// Min over `dims`.
    pub fn min(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes = self.axes("min", dims)?;
        self.reduce_axes(ReduceOp::Min, &axes, keepdim)
    }

    /// Product over `dims`.
    pub fn prod(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes = self.axes("prod", dims)?;
        self.reduce_axes(ReduceOp::Prod, &axes, keepdim)
    }

    /// Position of the max along `dim` (u32; the first of ties, as PyTorch).
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::from_vec(vec![1.0f32, 5.0, 5.0, 2.0], &[4], &Device::cpu()).unwrap();
    /// assert_eq!(t.argmax(0, false).unwrap().to_vec::<u32>().unwrap(), vec![1]);
    /// ```
    pub fn argmax(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        let a = self.axis("argmax", dim)?;
        self.check_u32_positions("argmax", a)?;
        self.reduce_axes(ReduceOp::ArgMax, &[a], keepdim)
    }

    /// Position of the min along `dim`.
    pub fn argmin(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        let a = self.axis("argmin", dim)?;
        self.check_u32_positions("argmin", a)?;
        self.reduce_axes(ReduceOp::ArgMin, &[a], keepdim)
    }

    /// PyTorch's `torch.max(x, dim, keepdim)`: the max along `dim` and its u32 position (the
    /// first of ties; a NaN is the max, the first NaN's position). The gradient goes to that
    /// position only (use [`max`](Self::max) for torch.amax's shared gradient).
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::from_vec(vec![1.0f32, 5.0, 5.0, 2.0], &[2, 2], &Device::cpu()).unwrap();
    /// let (v, i) = t.max_dim(-1, false).unwrap();
    /// assert_eq!((v.to_vec::<f32>().unwrap(), i.to_vec::<u32>().unwrap()), (vec![5.0, 5.0], vec![1, 0]));
    /// ```
    pub fn max_dim(&self, dim: isize, keepdim: bool) -> Result<(Tensor, Tensor)> {
        self.extreme_dim("max", ReduceOp::ArgMax, dim, keepdim)
    }

    /// PyTorch's `torch.min(x, dim, keepdim)`: the min along `dim` and its u32 position.
    pub fn min_dim(&self, dim: isize, keepdim: bool) -> Result<(Tensor, Tensor)> {
        self.extreme_dim("min", ReduceOp::ArgMin, dim, keepdim)
    }

    fn extreme_dim(&self, op: &'static str, arg: ReduceOp, dim: isize, keepdim: bool) -> Result<(Tensor, Tensor)> {
        if self.rank() == 0 {
            crate::tensor::axis_in(op, dim, 1)?;
            return self.reshape(&[1])?.extreme_dim(op, arg, 0, false);
        }
        let a = self.axis(op, dim)?;
        if self.shape()[a] == 0 {
            return Err(Error::invalid(op, format!("dim {a} of {:?} is empty: no extreme to pick", self.shape())));
        }
        if self.dtype() == DType::Bool {
            return Err(Error::UnsupportedDType { op, dtype: DType::Bool, why: " (numeric dtypes only)".into() });
        }
        self.check_u32_positions(op, a)?;
        let idx = self.reduce_axes(arg, &[a], true)?;
        // Gathering at the position carries the gradient to it alone.
        let values = self.gather_in_range(a as isize, &idx)?;
        if keepdim { Ok((values, idx)) } else { Ok((values.squeeze(a as isize)?, idx.squeeze(a as isize)?)) }
    }

    /// Arg ops answer u32 positions: a dim past 2^32 entries cannot have one, even when the
    /// tensor is empty (checked here so that every backend refuses it alike).
    fn check_u32_positions(&self, op: &'static str, dim: usize) -> Result<()> {
        let n = self.shape()[dim];
        if n as u64 > u32::MAX as u64 + 1 {
            return Err(Error::invalid(
                op,
                format!("dim {dim} of {:?}: {n} positions do not fit a u32 index", self.shape()),
            ));
        }
        Ok(())
    }

    /// Variance over `dims`; `unbiased` divides by n − 1 (Bessel), as `torch.var`'s default.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[4], &Device::cpu()).unwrap();
    /// assert_eq!(x.var(&[0], false, false).unwrap().item().unwrap(), 1.25); // biased
    /// assert!((x.var(&[0], true, false).unwrap().item().unwrap() - 5.0 / 3.0).abs() < 1e-6);
    /// ```
    pub fn var(&self, dims: &[isize], unbiased: bool, keepdim: bool) -> Result<Tensor> {
        let axes = self.axes("var", dims)?;
        let n: usize = axes.iter().map(|&a| self.shape()[a]).product();
        let mean = self.mean_axes(&axes, true)?;
        let sq = (self - &mean)?.square()?.sum_axes(&axes, keepdim)?;
        let denom = if unbiased { n as f64 - 1.0 } else { n as f64 };
        sq.div_scalar(denom)
    }

    /// Standard deviation over `dims`.
    pub fn std(&self, dims: &[isize], unbiased: bool, keepdim: bool) -> Result<Tensor> {
        self.var(dims, unbiased, keepdim)?.sqrt()
    }

    /// `log Σ exp(x)` over `dims`, computed stably.
    pub fn logsumexp(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes = self.axes("logsumexp", dims)?;
        let m = self.detach().reduce_axes(ReduceOp::Max, &axes, true)?;
        // An all -inf slice has max -inf: shift by 0 there so the result is -inf, not NaN.
        let m = Tensor::where_(&m.isinf()?, &Tensor::zeros_like(&m)?, &m)?;
        let s = (self - &m)?.exp()?.sum_axes(&axes, true)?.log()?;
        let out = (&s + &m)?;
        if keepdim { Ok(out) } else { out.reshape(&self.reduced_shape(&axes, false)) }
    }

    /// True where every element along `dims` is nonzero (bool).
    pub fn all(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes = self.axes("all", dims)?;
        self.ne_scalar_any_dtype()?
            .to_dtype(DType::U32)?
            .reduce_axes(ReduceOp::Min, &axes, keepdim)?
            .to_dtype(DType::Bool)
    }

    /// True where any element along `dims` is nonzero (bool).
    pub fn any(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        let axes = self.axes("any", dims)?;
        self.ne_scalar_any_dtype()?
            .to_dtype(DType::U32)?
            .reduce_axes(ReduceOp::Max, &axes, keepdim)?
            .to_dtype(DType::Bool)
    }

    fn ne_scalar_any_dtype(&self) -> Result<Tensor> {
        if self.dtype() == DType::Bool { Ok(self.clone()) } else { self.ne_scalar(0.0) }
    }

    /// Softmax along `dim` (one fused kernel).
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::zeros(&[2, 4], &Device::cpu()).unwrap().softmax(-1).unwrap();
    /// assert_eq!(t.to_vec::<f32>().unwrap(), vec![0.25; 8]);
    /// ```
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        self.softmax_impl(dim, false)
    }

    /// Log-softmax along `dim`.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let x = Tensor::from_vec(vec![0.0f32, 0.0], &[1, 2], &Device::cpu()).unwrap();
    /// let y = x.log_softmax(-1).unwrap().to_vec::<f32>().unwrap();
    /// assert!(y.iter().all(|v| (v + std::f32::consts::LN_2).abs() < 1e-6));
    /// ```
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        self.softmax_impl(dim, true)
    }

    fn softmax_impl(&self, dim: isize, log: bool) -> Result<Tensor> {
        let op = if log { "log_softmax" } else { "softmax" };
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType { op, dtype: self.dtype(), why: " (needs a float tensor)".into() });
        }
        if self.rank() == 0 {
            return self.unsqueeze(0)?.softmax_impl(0, log)?.squeeze(0);
        }
        let d = self.axis(op, dim)?;
        let last = self.rank() - 1;
        // Softmax runs over the last dim of a (free) permuted view; the view's own gradient
        // rule permutes the gradient back.
        let x = if d == last { self.clone() } else { self.permute(&swap(self.rank(), d, last))? };
        let moved = x.layout().clone();
        let out = x.storage().softmax_last(&moved, log)?;
        let shape = moved.shape().to_vec();
        let slot = std::sync::Arc::new(std::sync::OnceLock::<Tensor>::new());
        let saved = slot.clone();
        let y = Tensor::from_op(out, &shape, self.device(), op, &[&x], move |g| {
            let y = saved.get().cloned().ok_or_else(|| Error::Autograd { op, msg: "output not saved".into() })?;
            let last = g.rank() as isize - 1;
            let grad = if log {
                (g - &(&y.exp()? * &g.sum(&[last], true)?)?)?
            } else {
                (&y * &(g - &(g * &y)?.sum(&[last], true)?)?)?
            };
            Ok(vec![Some(grad)])
        })?;
        let y = if y.requires_grad() {
            let _ = slot.set(y.detach());
            y
        } else {
            y
        };
        // `y` is in the permuted order; permuting back is a view (and its own inverse).
        let y = if d == last { y } else { y.permute(&swap(self.rank(), d, last))? };
        Ok(y)
    }

    /// Inclusive cumulative sum along `dim`.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::ones(&[4], &Device::cpu()).unwrap().cumsum(0).unwrap();
    /// assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    /// ```
    pub fn cumsum(&self, dim: isize) -> Result<Tensor> {
        let d = self.axis("cumsum", dim)?;
        let out = self.storage().cumsum(self.layout(), d)?;
        let inputs: &[&Tensor] = if self.dtype().is_float() { &[self] } else { &[] };
        Tensor::from_op(out, self.shape(), self.device(), "cumsum", inputs, move |g| {
            let di = d as isize;
            Ok(vec![Some(g.flip(&[di])?.cumsum(di)?.flip(&[di])?)])
        })
    }
}

fn swap(rank: usize, a: usize, b: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..rank).collect();
    v.swap(a, b);
    v
}
