//! Indexing and assembling: index_select, gather, scatter_add, one_hot, cat/stack,
//! split/chunk, repeat, flip, pad, tril/triu, topk (any dim).

use crate::Tensor;
use crate::ops::views::write_into;
use kiln_backend::checks::check_index_shape;
use kiln_backend::{DType, Error, Layout, Result};

/// At most this many views from one split: each is a tensor header on the host, so a split of
/// a huge (typically empty or broadcast) dim into unit pieces would exhaust memory instead.
const MAX_PIECES: usize = 1 << 20;

/// Largest `table rows × ids` whose index_select gradient goes through a one-hot matmul (the
/// one-hot matrix takes 4 bytes per element: 64 MiB here).
const ONE_HOT_GRAD_MAX: usize = 1 << 24;

impl Tensor {
    /// Checks that an index tensor is integer-typed and every entry is below `size`.
    /// Reads the indices back: an out-of-range index must be an error, never a wild read.
    pub(crate) fn check_ids(&self, op: &'static str, size: usize) -> Result<()> {
        kiln_backend::checks::check_ids(op, self.dtype())?;
        if self.numel() == 0 || self.ids_known_below(size) {
            return Ok(());
        }
        for v in self.to_f64_vec()? {
            if v < 0.0 || v >= size as f64 {
                return Err(Error::IndexOutOfRange { op, index: v as i64, size, what: "indexed dim".into() });
            }
        }
        Ok(())
    }

    /// True when every value of this integer tensor is known to lie in `0..size` without
    /// reading it back: GPU data uploaded from the host carries its range. A readback would
    /// make every embedding lookup and loss a host sync.
    pub(crate) fn ids_known_below(&self, size: usize) -> bool {
        let range = self.storage().gpu().and_then(|g| g.known_range());
        range.is_some_and(|(lo, hi)| lo >= 0 && hi < size as i64)
    }

    /// Rows (entries of `dim`) picked by the 1-D index tensor `ids`.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let d = Device::cpu();
    /// let t = Tensor::arange(0.0, 6.0, 1.0, &d).unwrap().reshape(&[3, 2]).unwrap();
    /// let ids = Tensor::from_vec(vec![2u32, 0], &[2], &d).unwrap();
    /// assert_eq!(t.index_select(0, &ids).unwrap().to_vec::<f32>().unwrap(), vec![4.0, 5.0, 0.0, 1.0]);
    /// ```
    pub fn index_select(&self, dim: isize, ids: &Tensor) -> Result<Tensor> {
        let d = self.axis("index_select", dim)?;
        self.check_same_device("index_select", ids)?;
        if ids.rank() != 1 {
            return Err(Error::shape("index_select", format!("indices must be 1-D, got {:?}", ids.shape())));
        }
        ids.check_ids("index_select", self.shape()[d])?;
        let out = self.storage().index_select(self.layout(), &ids.storage(), ids.layout(), d)?;
        let mut shape = self.shape().to_vec();
        shape[d] = ids.numel();
        let inputs: &[&Tensor] = if self.dtype().is_float() { &[self] } else { &[] };
        let (src_shape, idx) = (self.shape().to_vec(), ids.clone());
        Tensor::from_op(out, &shape, self.device(), "index_select", inputs, move |g| {
            // A lookup table's gradient on the GPU is onehot(ids)ᵀ·g, one matmul: the scatter
            // below gives each table element a thread that scans every id (480 µs for W6's
            // 4096 ids into a 256×256 table on an H200).
            if d == 0
                && src_shape.len() == 2
                && g.device().is_gpu()
                && src_shape[0].saturating_mul(idx.numel()) <= ONE_HOT_GRAD_MAX
            {
                let classes = Tensor::arange_u32(src_shape[0], g.device())?.to_dtype(idx.dtype())?;
                let onehot = idx.unsqueeze(-1)?.eq(&classes)?.to_dtype(g.dtype())?;
                return Ok(vec![Some(onehot.t()?.matmul(g)?)]);
            }
            // Scatter each picked row's gradient back onto the row it came from.
            let mut view = vec![1; g.rank()];
            view[d] = idx.numel();
            let full_ids = idx.reshape(&view)?.expand(g.shape())?.contiguous()?;
            let zeros = Tensor::full_dtype(&src_shape, 0.0, g.dtype(), g.device())?;
            Ok(vec![Some(zeros.scatter_add(d as isize, &full_ids, g)?)])
        })
    }

    /// `out[i][j] = self[ids[i][j]][j]` (for `dim` 0), the shape of `ids`.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let d = Device::cpu();
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2], &d).unwrap();
    /// let ids = Tensor::from_vec(vec![1u32, 0], &[2, 1], &d).unwrap();
    /// assert_eq!(x.gather(1, &ids).unwrap().to_vec::<f32>().unwrap(), vec![2.0, 3.0]);
    /// ```
    pub fn gather(&self, dim: isize, ids: &Tensor) -> Result<Tensor> {
        self.gather_checked(dim, ids, true)
    }

    /// [`gather`](Self::gather) at ids that a Kiln op produced in range (argmax, topk): no
    /// range check, so no readback of GPU ids.
    pub(crate) fn gather_in_range(&self, dim: isize, ids: &Tensor) -> Result<Tensor> {
        self.gather_checked(dim, ids, false)
    }

    fn gather_checked(&self, dim: isize, ids: &Tensor, check: bool) -> Result<Tensor> {
        let d = self.axis("gather", dim)?;
        self.check_same_device("gather", ids)?;
        check_index_shape("gather", self.shape(), ids.shape(), d)?;
        if check {
            ids.check_ids("gather", self.shape()[d])?;
        }
        let out = self.storage().gather(self.layout(), &ids.storage(), ids.layout(), d)?;
        let inputs: &[&Tensor] = if self.dtype().is_float() { &[self] } else { &[] };
        let (src_shape, idx) = (self.shape().to_vec(), ids.clone());
        Tensor::from_op(out, ids.shape(), self.device(), "gather", inputs, move |g| {
            let zeros = Tensor::full_dtype(&src_shape, 0.0, g.dtype(), g.device())?;
            // The forward checked (or trusted) the ids: no second readback here.
            Ok(vec![Some(zeros.scatter_add_checked(d as isize, &idx, g, false)?)])
        })
    }

    /// A copy of `self` with `src` added at the positions `ids` names along `dim`.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let d = Device::cpu();
    /// let x = Tensor::zeros(&[3], &d).unwrap();
    /// let ids = Tensor::from_vec(vec![0u32, 2, 0], &[3], &d).unwrap();
    /// let src = Tensor::ones(&[3], &d).unwrap();
    /// assert_eq!(x.scatter_add(0, &ids, &src).unwrap().to_vec::<f32>().unwrap(), vec![2.0, 0.0, 1.0]);
    /// ```
    pub fn scatter_add(&self, dim: isize, ids: &Tensor, src: &Tensor) -> Result<Tensor> {
        self.scatter_add_checked(dim, ids, src, true)
    }

    pub(crate) fn scatter_add_checked(&self, dim: isize, ids: &Tensor, src: &Tensor, check: bool) -> Result<Tensor> {
        let d = self.axis("scatter_add", dim)?;
        self.check_same_device("scatter_add", ids)?;
        self.check_same_device("scatter_add", src)?;
        if ids.shape() != src.shape() {
            return Err(Error::shape("scatter_add", format!("indices {:?} vs source {:?}", ids.shape(), src.shape())));
        }
        if src.dtype() != self.dtype() {
            return Err(Error::dtype("scatter_add", self.dtype(), src.dtype()));
        }
        check_index_shape("scatter_add", self.shape(), ids.shape(), d)?;
        if check {
            ids.check_ids("scatter_add", self.shape()[d])?;
        }
        let out =
            self.storage().scatter_add(self.layout(), &ids.storage(), ids.layout(), &src.storage(), src.layout(), d)?;
        let inputs: &[&Tensor] = if self.dtype().is_float() { &[self, src] } else { &[] };
        let idx = ids.clone();
        Tensor::from_op(out, self.shape(), self.device(), "scatter_add", inputs, move |g| {
            // The forward checked (or trusted) the ids: no second readback here.
            Ok(vec![Some(g.clone()), Some(g.gather_checked(d as isize, &idx, false)?)])
        })
    }

    /// One-hot encoding of integer class ids: shape `ids.shape + [classes]`, f32.
    pub fn one_hot(ids: &Tensor, classes: usize) -> Result<Tensor> {
        ids.check_ids("one_hot", classes)?;
        if kiln_backend::checked_numel(&[ids.numel(), classes]).is_none() {
            return Err(Error::OutOfMemory {
                op: "one_hot",
                msg: format!("ids {:?} with {classes} classes: more elements than fit in memory", ids.shape()),
            });
        }
        let range = Tensor::arange_u32(classes, ids.device())?;
        let ids = ids.to_dtype(DType::U32)?.unsqueeze(-1)?;
        ids.eq(&range)?.to_dtype(DType::F32)
    }

    /// Concatenates along `dim`; all other dims must match.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let d = Device::cpu();
    /// let a = Tensor::ones(&[1, 2], &d).unwrap();
    /// let b = Tensor::zeros(&[2, 2], &d).unwrap();
    /// assert_eq!(Tensor::cat(&[a, b], 0).unwrap().shape(), &[3, 2]);
    /// ```
    pub fn cat(tensors: &[Tensor], dim: isize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::invalid("cat", "no tensors given"))?;
        let d = first.axis("cat", dim)?;
        let mut total = 0;
        for t in tensors {
            first.check_same_device("cat", t)?;
            if t.dtype() != first.dtype() {
                return Err(Error::dtype("cat", first.dtype(), t.dtype()));
            }
            let same = t.rank() == first.rank() && (0..t.rank()).all(|i| i == d || t.shape()[i] == first.shape()[i]);
            if !same {
                return Err(Error::shape("cat", format!("{:?} vs {:?} along dim {d}", first.shape(), t.shape())));
            }
            total += t.shape()[d];
        }
        let mut shape = first.shape().to_vec();
        shape[d] = total;
        let mut out = Tensor::full_dtype(&shape, 0.0, first.dtype(), first.device())?.detach();
        let mut start = 0;
        for t in tensors {
            let target = out.layout().narrow(d, start, t.shape()[d]);
            write_into(&t.detach(), &mut out, &target)?;
            start += t.shape()[d];
        }
        let sizes: Vec<usize> = tensors.iter().map(|t| t.shape()[d]).collect();
        let refs: Vec<&Tensor> = tensors.iter().collect();
        let inputs: Vec<&Tensor> = if first.dtype().is_float() { refs } else { vec![] };
        let storage = out.storage();
        let node = crate::autograd::node("cat", &inputs, move |g| {
            let mut grads = Vec::new();
            let mut start = 0;
            for &s in &sizes {
                grads.push(Some(g.narrow(d as isize, start, s)?));
                start += s;
            }
            Ok(grads)
        });
        Ok(Tensor::build(storage, out.layout().clone(), first.device().clone(), node))
    }

    /// Stacks equal-shaped tensors along a new dim.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let d = Device::cpu();
    /// let (a, b) = (Tensor::zeros(&[2], &d).unwrap(), Tensor::ones(&[2], &d).unwrap());
    /// assert_eq!(Tensor::stack(&[a, b], 0).unwrap().shape(), &[2, 2]);
    /// ```
    pub fn stack(tensors: &[Tensor], dim: isize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::invalid("stack", "no tensors given"))?;
        let d = crate::tensor::axis_in("stack", dim, first.rank() + 1)? as isize;
        let parts: Vec<Tensor> = tensors.iter().map(|t| t.unsqueeze(d)).collect::<Result<_>>()?;
        Tensor::cat(&parts, d)
    }

    /// Splits into pieces of `size` along `dim` (the last may be smaller).
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let x = Tensor::arange(0.0, 5.0, 1.0, &Device::cpu()).unwrap();
    /// let parts = x.split(2, 0).unwrap();
    /// assert_eq!(parts.iter().map(|p| p.shape()[0]).collect::<Vec<_>>(), vec![2, 2, 1]);
    /// ```
    pub fn split(&self, size: usize, dim: isize) -> Result<Vec<Tensor>> {
        let d = self.axis("split", dim)?;
        if size == 0 {
            return Err(Error::invalid("split", "split size 0"));
        }
        let n = self.shape()[d];
        let pieces = n.div_ceil(size);
        if pieces > MAX_PIECES {
            return Err(Error::OutOfMemory {
                op: "split",
                msg: format!(
                    "{pieces} pieces of {size} along dim {d} of {:?}: more views than fit in memory",
                    self.shape()
                ),
            });
        }
        (0..n).step_by(size).map(|s| self.narrow(d as isize, s, size.min(n - s))).collect()
    }

    /// Splits into `chunks` nearly equal pieces along `dim`, like `torch.chunk`.
    pub fn chunk(&self, chunks: usize, dim: isize) -> Result<Vec<Tensor>> {
        let d = self.axis("chunk", dim)?;
        if chunks == 0 {
            return Err(Error::invalid("chunk", "0 chunks"));
        }
        self.split(self.shape()[d].div_ceil(chunks).max(1), dim)
    }

    /// Tiles the tensor `reps[i]` times along each dim (like `torch.Tensor.repeat`).
    pub fn repeat(&self, reps: &[usize]) -> Result<Tensor> {
        if reps.len() < self.rank() {
            return Err(Error::shape("repeat", format!("{} repeats for shape {:?}", reps.len(), self.shape())));
        }
        let lead = reps.len() - self.rank();
        let mut src = vec![1; lead];
        src.extend_from_slice(self.shape());
        // View as [1, s0, 1, s1, ...], expand to [r0, s0, r1, s1, ...], merge pairs.
        let mut inter = Vec::new();
        let mut expanded = Vec::new();
        for (&s, &r) in src.iter().zip(reps) {
            inter.extend([1, s]);
            expanded.extend([r, s]);
        }
        let out_shape: Option<Vec<usize>> = src.iter().zip(reps).map(|(&s, &r)| s.checked_mul(r)).collect();
        let Some(out_shape) = out_shape.filter(|_| kiln_backend::checked_numel(&expanded).is_some()) else {
            return Err(Error::OutOfMemory {
                op: "repeat",
                msg: format!("{:?} repeated {reps:?} has more elements than fit in memory", self.shape()),
            });
        };
        self.reshape(&inter)?.expand(&expanded)?.contiguous()?.reshape(&out_shape)
    }

    /// Reverses the order of entries along each of `dims`.
    pub fn flip(&self, dims: &[isize]) -> Result<Tensor> {
        let axes: Vec<usize> = dims.iter().map(|&dim| self.axis("flip", dim)).collect::<Result<_>>()?;
        if self.numel() == 0 {
            // Nothing to reorder, and the (possibly huge) dim must not become a host index list.
            return Ok(self.clone());
        }
        let mut out = self.clone();
        for d in axes {
            let n = self.shape()[d];
            let ids = crate::creation::u32_range("flip", n, true, self.device())?;
            out = out.index_select(d as isize, &ids)?;
        }
        Ok(out)
    }

    /// Pads with `value`: `pads[i] = (before, after)` for the last `pads.len()` dims.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let x = Tensor::ones(&[2], &Device::cpu()).unwrap();
    /// assert_eq!(x.pad(&[(1, 2)], 0.0).unwrap().to_vec::<f32>().unwrap(), vec![0.0, 1.0, 1.0, 0.0, 0.0]);
    /// ```
    pub fn pad(&self, pads: &[(usize, usize)], value: f64) -> Result<Tensor> {
        if pads.len() > self.rank() {
            return Err(Error::shape("pad", format!("{} pads for shape {:?}", pads.len(), self.shape())));
        }
        let first = self.rank() - pads.len();
        let mut shape = self.shape().to_vec();
        for (i, &(a, b)) in pads.iter().enumerate() {
            shape[first + i] =
                a.checked_add(b).and_then(|p| p.checked_add(shape[first + i])).ok_or_else(|| Error::OutOfMemory {
                    op: "pad",
                    msg: format!("padding {:?} by {pads:?} overflows its size", self.shape()),
                })?;
        }
        let mut out = Tensor::full_dtype(&shape, value, self.dtype(), self.device())?;
        let mut target = out.layout().clone();
        for (i, &(a, _)) in pads.iter().enumerate() {
            target = target.narrow(first + i, a, self.shape()[first + i]);
        }
        write_into(&self.detach(), &mut out, &target)?;
        let inputs: &[&Tensor] = if self.dtype().is_float() { &[self] } else { &[] };
        let (pads_v, src) = (pads.to_vec(), self.shape().to_vec());
        let node = crate::autograd::node("pad", inputs, move |g| {
            let mut v = g.clone();
            for (i, &(a, _)) in pads_v.iter().enumerate() {
                v = v.narrow((first + i) as isize, a, src[first + i])?;
            }
            Ok(vec![Some(v)])
        });
        Ok(Tensor::build(out.storage(), Layout::contiguous(&shape), self.device().clone(), node))
    }

    /// Keeps the lower triangle (`j <= i + diagonal`) of the last two dims, zeroing the rest.
    pub fn tril(&self, diagonal: i64) -> Result<Tensor> {
        self.triangle("tril", diagonal, true)
    }

    /// Keeps the upper triangle (`j >= i + diagonal`).
    pub fn triu(&self, diagonal: i64) -> Result<Tensor> {
        self.triangle("triu", diagonal, false)
    }

    fn triangle(&self, op: &'static str, diagonal: i64, lower: bool) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::shape(op, format!("needs at least 2 dims, got {:?}", self.shape())));
        }
        if self.numel() == 0 {
            // Nothing to mask, and the (possibly huge) last two dims must not become a host mask.
            return Ok(self.clone());
        }
        let (r, c) = (self.shape()[self.rank() - 2], self.shape()[self.rank() - 1]);
        let mut mask = vec![false; r * c];
        for i in 0..r {
            for j in 0..c {
                // Saturating: a diagonal near i64::MAX (or MIN) keeps (or drops) every column.
                let edge = (i as i64).saturating_add(diagonal);
                mask[i * c + j] = if lower { (j as i64) <= edge } else { (j as i64) >= edge };
            }
        }
        let mask = Tensor::from_vec(mask, &[r, c], self.device())?;
        Tensor::where_(&mask, self, &Tensor::full_dtype(&[], 0.0, self.dtype(), self.device())?)
    }

    /// The `k` largest (or smallest) entries along the last dim, sorted, with their u32 positions.
    ///
    /// ```
    /// # use kiln_core::{Device, Tensor};
    /// let x = Tensor::from_vec(vec![3.0f32, 1.0, 4.0, 1.5], &[4], &Device::cpu()).unwrap();
    /// let (values, ids) = x.topk(2, true).unwrap();
    /// assert_eq!((values.to_vec::<f32>().unwrap(), ids.to_vec::<u32>().unwrap()), (vec![4.0, 3.0], vec![2, 0]));
    /// ```
    pub fn topk(&self, k: usize, largest: bool) -> Result<(Tensor, Tensor)> {
        if self.rank() == 0 || k > self.shape()[self.rank() - 1] {
            return Err(Error::invalid("topk", format!("k = {k} for shape {:?}", self.shape())));
        }
        let (v, i) = self.storage().topk(self.layout(), k, largest)?;
        let mut shape = self.shape().to_vec();
        *shape.last_mut().unwrap_or(&mut 0) = k;
        let idx = Tensor::leaf(i, &shape, self.device());
        let inputs: &[&Tensor] = if self.dtype().is_float() { &[self] } else { &[] };
        let (src, ids) = (self.shape().to_vec(), idx.clone());
        let values = Tensor::from_op(v, &shape, self.device(), "topk", inputs, move |g| {
            let zeros = Tensor::full_dtype(&src, 0.0, g.dtype(), g.device())?;
            Ok(vec![Some(zeros.scatter_add_checked(-1, &ids, g, false)?)])
        })?;
        Ok((values, idx))
    }

    /// PyTorch's `torch.topk(x, k, dim, largest, sorted)`: the `k` largest (or smallest)
    /// entries along `dim` (negative counts from the end) and their u32 positions along it.
    /// NaN ranks above every number; ties keep the lower position first. The results are
    /// always sorted (descending for `largest`, else ascending): with `sorted == false` PyTorch
    /// leaves the order unspecified, and sorted is one such order.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let t = Tensor::from_vec(vec![1.0f32, 9.0, 4.0, 3.0, 2.0, 8.0], &[3, 2], &Device::cpu()).unwrap();
    /// let (v, i) = t.topk_dim(2, 0, true, true).unwrap();
    /// assert_eq!(v.to_vec::<f32>().unwrap(), vec![4.0, 9.0, 2.0, 8.0]);
    /// assert_eq!(i.to_vec::<u32>().unwrap(), vec![1, 0, 2, 2]);
    /// ```
    pub fn topk_dim(&self, k: usize, dim: isize, largest: bool, sorted: bool) -> Result<(Tensor, Tensor)> {
        let _ = sorted;
        if self.rank() == 0 {
            // A scalar is one entry along dim 0 (or -1), as in PyTorch.
            crate::tensor::axis_in("topk", dim, 1)?;
            let (v, i) = self.reshape(&[1])?.topk_dim(k, 0, largest, true)?;
            return Ok((v.reshape(&[])?, i.reshape(&[])?));
        }
        let d = self.axis("topk", dim)?;
        let last = self.rank() - 1;
        if d == last {
            return self.topk(k, largest);
        }
        // topk runs over the last dim of a (free) permuted view; permuting back is a view too.
        let mut order: Vec<usize> = (0..self.rank()).collect();
        order.swap(d, last);
        let (v, i) = self.permute(&order)?.topk(k, largest)?;
        Ok((v.permute(&order)?, i.permute(&order)?))
    }
}
