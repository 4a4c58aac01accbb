//! Writing into a tensor at indexed positions: `scatter` (a source tensor or a scalar),
//! `scatter_reduce` (sum, prod, mean, amax, amin, with or without the tensor's own values) and
//! `index_add`, with PyTorch's semantics and gradients. All run on one backend primitive,
//! `scatter_reduce` (`shaders/scatter_reduce.wgsl`; `index_add` reuses `scatter_add`): a
//! gather-style kernel in which each output element scans the ids that could land on it, so
//! the GPU needs no float atomics and every result is deterministic.

use std::sync::{Arc, OnceLock};

use crate::Tensor;
use kiln_backend::checks::check_index_shape;
use kiln_backend::{DType, Error, Result, ScatterOp};

impl Tensor {
    /// PyTorch's `Tensor.scatter(dim, index, src)`: a copy of `self` with
    /// `out[..ids[q]..] = src[q]` (the position `q` with its `dim` coordinate replaced by
    /// `ids[q]`). `ids` (u32 or i32) has `self`'s rank and is no larger than `self` outside
    /// `dim` nor than `src` anywhere; only `src`'s leading `ids.shape()` block is read. Where
    /// several ids name one element, the last in row-major order wins (PyTorch leaves that
    /// unspecified), and only it receives a gradient.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let d = Device::cpu();
    /// let x = Tensor::zeros(&[4], &d).unwrap();
    /// let ids = Tensor::from_vec(vec![3u32, 0], &[2], &d).unwrap();
    /// let src = Tensor::from_vec(vec![5.0f32, 6.0], &[2], &d).unwrap();
    /// assert_eq!(x.scatter(0, &ids, &src).unwrap().to_vec::<f32>().unwrap(), vec![6.0, 0.0, 0.0, 5.0]);
    /// ```
    pub fn scatter(&self, dim: isize, ids: &Tensor, src: &Tensor) -> Result<Tensor> {
        self.scatter_impl("scatter", dim, ids, src, ScatterOp::Replace, true, true)
    }

    /// PyTorch's `Tensor.scatter(dim, index, value)`: [`scatter`](Self::scatter) of one value.
    pub fn scatter_value(&self, dim: isize, ids: &Tensor, value: f64) -> Result<Tensor> {
        let src = Tensor::full_dtype(ids.shape(), value, self.dtype(), self.device())?;
        self.scatter_impl("scatter", dim, ids, &src, ScatterOp::Replace, true, true)
    }

    /// PyTorch's `Tensor.scatter_reduce(dim, index, src, reduce, include_self)`: each element
    /// that ids name becomes `op` over the `src` values landing on it and, with `include_self`,
    /// its own value; elements no id names keep their value (so a `Mean` with nothing landing
    /// keeps `self`). `Mean` divides by the number of values combined (floor division for
    /// integers); `Amax`/`Amin` propagate NaN and share the gradient equally among ties;
    /// `Prod`'s gradient handles zeros exactly, as PyTorch's does. `ScatterOp::Replace` is
    /// [`scatter`](Self::scatter).
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device, ScatterOp};
    /// let d = Device::cpu();
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2], &d).unwrap();
    /// let ids = Tensor::from_vec(vec![0u32, 0, 0], &[3], &d).unwrap();
    /// let src = Tensor::from_vec(vec![3.0f32, 5.0, 7.0], &[3], &d).unwrap();
    /// let mean = x.scatter_reduce(0, &ids, &src, ScatterOp::Mean, true).unwrap();
    /// assert_eq!(mean.to_vec::<f32>().unwrap(), vec![4.0, 2.0]);
    /// let amax = x.scatter_reduce(0, &ids, &src, ScatterOp::Amax, false).unwrap();
    /// assert_eq!(amax.to_vec::<f32>().unwrap(), vec![7.0, 2.0]);
    /// ```
    pub fn scatter_reduce(
        &self,
        dim: isize,
        ids: &Tensor,
        src: &Tensor,
        op: ScatterOp,
        include_self: bool,
    ) -> Result<Tensor> {
        let name = if op == ScatterOp::Replace { "scatter" } else { "scatter_reduce" };
        self.scatter_impl(name, dim, ids, src, op, include_self, true)
    }

    /// PyTorch's `Tensor.index_add(dim, index, source, alpha)`: a copy of `self` with
    /// `alpha · source[.., i, ..]` added to entry `ids[i]` of `dim`, repeats accumulating.
    /// `ids` is 1-D (u32 or i32) with one id per entry of `source` along `dim`; `source` has
    /// `self`'s shape elsewhere.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let d = Device::cpu();
    /// let x = Tensor::zeros(&[3, 2], &d).unwrap();
    /// let ids = Tensor::from_vec(vec![2u32, 2], &[2], &d).unwrap();
    /// let src = Tensor::ones(&[2, 2], &d).unwrap();
    /// let y = x.index_add(0, &ids, &src, 0.5).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0]);
    /// ```
    pub fn index_add(&self, dim: isize, ids: &Tensor, source: &Tensor, alpha: f64) -> Result<Tensor> {
        const OP: &str = "index_add";
        let d = self.axis(OP, dim)?;
        self.check_same_device(OP, ids)?;
        self.check_same_device(OP, source)?;
        if ids.rank() != 1 {
            return Err(Error::shape(OP, format!("indices must be 1-D, got {:?}", ids.shape())));
        }
        if source.dtype() != self.dtype() {
            return Err(Error::dtype(OP, self.dtype(), source.dtype()));
        }
        let mut want = self.shape().to_vec();
        want[d] = ids.numel();
        if source.shape() != want.as_slice() {
            return Err(Error::shape(
                OP,
                format!(
                    "source {:?} for self {:?} and {} indices along dim {d} (expected {want:?})",
                    source.shape(),
                    self.shape(),
                    ids.numel()
                ),
            ));
        }
        ids.check_ids(OP, self.shape()[d])?;
        let mut view = vec![1; self.rank()];
        view[d] = ids.numel();
        let full_ids = ids.reshape(&view)?.expand(source.shape())?.contiguous()?;
        let scaled = if alpha == 1.0 { source.clone() } else { source.mul_scalar(alpha)? };
        // Checked above: the expanded copy needs no second readback.
        self.scatter_add_checked(d as isize, &full_ids, &scaled, false)
    }

    /// `check`: range-check the ids (a readback of GPU ids of unknown range); backward passes
    /// false for ids its forward already checked.
    #[allow(clippy::too_many_arguments)]
    fn scatter_impl(
        &self,
        op: &'static str,
        dim: isize,
        ids: &Tensor,
        src: &Tensor,
        kind: ScatterOp,
        include_self: bool,
        check: bool,
    ) -> Result<Tensor> {
        let d = self.axis(op, dim)?;
        self.check_same_device(op, ids)?;
        self.check_same_device(op, src)?;
        if src.dtype() != self.dtype() {
            return Err(Error::dtype(op, self.dtype(), src.dtype()));
        }
        if self.dtype() == DType::Bool {
            return Err(Error::UnsupportedDType { op, dtype: DType::Bool, why: " (numeric dtypes only)".into() });
        }
        check_index_shape(op, self.shape(), ids.shape(), d)?;
        let fits_src = src.rank() == ids.rank() && ids.shape().iter().zip(src.shape()).all(|(i, s)| i <= s);
        if !fits_src {
            return Err(Error::shape(op, format!("indices {:?} do not fit source {:?}", ids.shape(), src.shape())));
        }
        if check {
            ids.check_ids(op, self.shape()[d])?;
        } else {
            kiln_backend::checks::check_ids(op, ids.dtype())?;
        }
        // Only src's leading ids-shaped block is read: a free view.
        let mut src = src.clone();
        for (k, &n) in ids.shape().iter().enumerate() {
            if src.shape()[k] != n {
                src = src.narrow(k as isize, 0, n)?;
            }
        }
        let out = self.storage().scatter_reduce(
            self.layout(),
            &ids.storage(),
            ids.layout(),
            &src.storage(),
            src.layout(),
            d,
            kind,
            include_self,
        )?;
        let inputs: &[&Tensor] = if self.dtype().is_float() { &[self, &src] } else { &[] };
        let saved = Saved {
            x: self.detach(),
            src: src.detach(),
            ids: ids.clone(),
            d: d as isize,
            kind,
            include_self,
            result: Arc::new(OnceLock::new()),
        };
        let slot = saved.result.clone();
        let t = Tensor::from_op(out, self.shape(), self.device(), op, inputs, move |g| saved.grads(g))?;
        if t.requires_grad() {
            let _ = slot.set(t.detach());
        }
        Ok(t)
    }
}

impl Tensor {
    /// A scatter at ids its caller's forward already checked (`None`: the value 0).
    fn scatter_trusted(
        &self,
        d: isize,
        ids: &Tensor,
        src: Option<&Tensor>,
        kind: ScatterOp,
        include_self: bool,
    ) -> Result<Tensor> {
        let zeros;
        let src = match src {
            Some(s) => s,
            None => {
                zeros = Tensor::full_dtype(ids.shape(), 0.0, self.dtype(), self.device())?;
                &zeros
            }
        };
        self.scatter_impl("scatter", d, ids, src, kind, include_self, false)
    }
}

/// What a scatter's gradient needs: its inputs (detached), the ids, and its output.
struct Saved {
    x: Tensor,
    src: Tensor,
    ids: Tensor,
    d: isize,
    kind: ScatterOp,
    include_self: bool,
    result: Arc<OnceLock<Tensor>>,
}

impl Saved {
    /// `[d self, d src]` for the output gradient `g`, PyTorch's rules (`scatter_reduce_backward`).
    fn grads(&self, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (x, src, ids, d) = (&self.x, &self.src, &self.ids, self.d);
        let result = || {
            self.result
                .get()
                .cloned()
                .ok_or_else(|| Error::Autograd { op: "scatter_reduce", msg: "output not saved".into() })
        };
        let (dx, dsrc) = match self.kind {
            ScatterOp::Replace => {
                // Only the value that won (the last landing on its element) reaches the output.
                let order = Tensor::arange_u32(ids.numel(), ids.device())?.reshape(ids.shape())?;
                let last = Tensor::full_dtype(x.shape(), 0.0, DType::U32, x.device())?.scatter_trusted(
                    d,
                    ids,
                    Some(&order),
                    ScatterOp::Replace,
                    true,
                )?;
                let won = last.gather_in_range(d, ids)?.eq(&order)?.to_dtype(g.dtype())?;
                (g.clone(), (&g.gather_in_range(d, ids)? * &won)?)
            }
            ScatterOp::Sum => (g.clone(), g.gather_in_range(d, ids)?),
            ScatterOp::Mean => {
                let start = if self.include_self { 1.0 } else { 0.0 };
                let ones = Tensor::ones_like(src)?;
                let n = Tensor::full_dtype(x.shape(), start, g.dtype(), g.device())?
                    .scatter_add_checked(d, ids, &ones, false)?;
                let n = Tensor::where_(&n.eq_scalar(0.0)?, &Tensor::ones_like(&n)?, &n)?;
                let share = (g / &n)?;
                let dsrc = share.gather_in_range(d, ids)?;
                (share, dsrc)
            }
            ScatterOp::Prod => {
                // Division by the factor itself, except at zeros: there the product of the
                // others is recomputed with the zero replaced by 1.
                let one = Tensor::ones_like(x)?;
                let x_safe = Tensor::where_(&x.eq_scalar(0.0)?, &one, x)?;
                let others = x_safe.scatter_trusted(d, ids, Some(src), ScatterOp::Prod, self.include_self)?;
                let dx = (&(g * &others)? / &x_safe)?;
                let src_zero = src.eq_scalar(0.0)?;
                let zeros_landing = Tensor::zeros_like(x)?
                    .scatter_add_checked(d, ids, &src_zero.to_dtype(x.dtype())?, false)?
                    .gather_in_range(d, ids)?;
                let single = src_zero.logical_and(&zeros_landing.eq_scalar(1.0)?)?;
                let src_one = Tensor::where_(&single, &Tensor::ones_like(src)?, src)?;
                let without = x.scatter_trusted(d, ids, Some(&src_one), ScatterOp::Prod, self.include_self)?;
                let src_safe = Tensor::where_(&src_zero, &Tensor::ones_like(src)?, src)?;
                let plain = (&(g * &result()?)?.gather_in_range(d, ids)? / &src_safe)?;
                let dsrc = Tensor::where_(&single, &(g * &without)?.gather_in_range(d, ids)?, &plain)?;
                (dx, dsrc)
            }
            ScatterOp::Amax | ScatterOp::Amin => {
                // Every value equal to the result shares its gradient equally.
                let result = result()?;
                let mut self_is = x.eq(&result)?.to_dtype(g.dtype())?;
                if !self.include_self {
                    self_is = self_is.scatter_trusted(d, ids, None, ScatterOp::Replace, true)?;
                }
                let src_is = src.eq(&result.gather_in_range(d, ids)?)?.to_dtype(g.dtype())?;
                let n = self_is.scatter_add_checked(d, ids, &src_is, false)?;
                let share = (g / &n)?;
                ((&self_is * &share)?, (&src_is * &share.gather_in_range(d, ids)?)?)
            }
        };
        // Elements that ids name lose their own value unless it was included.
        let dx = if self.include_self && self.kind != ScatterOp::Replace {
            dx
        } else {
            dx.scatter_trusted(d, ids, None, ScatterOp::Replace, true)?
        };
        Ok(vec![Some(dx), Some(dsrc)])
    }
}
