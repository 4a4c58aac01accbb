//! Fused ops, each one backend primitive forward and one backward: layer/RMS normalisation,
//! cross-entropy from logits, scaled dot-product attention (its API in `attention.rs`), the
//! in-place Adam step, and the in-place unscale-and-check of loss scaling.
//! They compute what the composite ops would (the composite forms are the tests' reference),
//! with fewer kernels and no large intermediates: attention never builds the
//! `[q_len, kv_len]` score matrix.
//!
//! Backends take these inputs dense at offset 0; a strided view is copied first.

use crate::Tensor;
use crate::storage::Storage;
use kiln_backend::{AdamParams, CrossEntropyParams, DType, Error, Layout, NormParams, Result};
use std::sync::Arc;

/// Largest head dim the GPU attention kernel takes (rows live in registers).
pub const ATTENTION_MAX_HEAD_DIM: usize = 256;

/// Dense row-major at offset 0, without autodiff history (a copy only for strided views).
pub(crate) fn dense(t: &Tensor) -> Result<Tensor> {
    if t.is_contiguous() && t.layout().offset() == 0 {
        return Ok(t.detach());
    }
    let s = t.storage().cast(t.layout(), t.dtype())?;
    Ok(Tensor::leaf(s, t.shape(), t.device()))
}

pub(crate) fn check_float(op: &'static str, t: &Tensor) -> Result<()> {
    if !t.dtype().is_float() {
        return Err(Error::UnsupportedDType { op, dtype: t.dtype(), why: " (needs a float tensor)".into() });
    }
    Ok(())
}

/// `other` must be on `x`'s device with `x`'s dtype.
pub(crate) fn check_like(op: &'static str, x: &Tensor, other: &Tensor) -> Result<()> {
    x.check_same_device(op, other)?;
    if other.dtype() != x.dtype() {
        return Err(Error::dtype(op, x.dtype(), other.dtype()));
    }
    Ok(())
}

pub(crate) fn storage_of(t: &Option<Tensor>) -> Option<Arc<Storage>> {
    t.as_ref().map(|t| t.storage())
}

impl Tensor {
    /// Layer normalisation over the trailing `normalized_shape` dims, PyTorch's
    /// `F.layer_norm`: `(x − mean)/√(var + eps)·weight + bias`, biased variance, weight and
    /// bias (optional) of shape `normalized_shape`. One fused kernel forward, one backward.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let x = Tensor::from_vec(vec![1.0f32, 3.0], &[1, 2], &Device::cpu()).unwrap();
    /// let y = x.layer_norm(&[2], None, None, 0.0).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![-1.0, 1.0]);
    /// ```
    pub fn layer_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        self.fused_norm("layer_norm", normalized_shape, weight, bias, eps, false)
    }

    /// RMS normalisation over the trailing `normalized_shape` dims, PyTorch's `F.rms_norm`:
    /// `x/√(mean(x²) + eps)·weight`.
    pub fn rms_norm(&self, normalized_shape: &[usize], weight: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        self.fused_norm("rms_norm", normalized_shape, weight, None, eps, true)
    }

    fn fused_norm(
        &self,
        op: &'static str,
        ns: &[usize],
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        rms: bool,
    ) -> Result<Tensor> {
        check_float(op, self)?;
        let r = self.rank();
        if ns.is_empty() || r < ns.len() || &self.shape()[r - ns.len()..] != ns {
            return Err(Error::shape(op, format!("input {:?} does not end in normalized_shape {ns:?}", self.shape())));
        }
        for t in weight.iter().chain(bias.iter()) {
            check_like(op, self, t)?;
            if t.shape() != ns {
                return Err(Error::shape(op, format!("weight/bias {:?} for normalized_shape {ns:?}", t.shape())));
            }
        }
        if !eps.is_finite() || eps < 0.0 {
            return Err(Error::invalid(op, format!("eps must be finite and >= 0, got {eps}")));
        }
        let n: usize = ns.iter().product();
        let rows = self.numel().checked_div(n).unwrap_or(0);
        let p = NormParams { rows, n, eps, rms };
        let x = dense(self)?;
        let w = weight.map(dense).transpose()?;
        let b = bias.map(dense).transpose()?;
        let (ws, bs) = (storage_of(&w), storage_of(&b));
        let (y, stats) = x.storage().norm_forward(ws.as_deref(), bs.as_deref(), &p)?;
        let stats = Tensor::leaf(stats, &[rows, 2], self.device());
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        let (has_w, has_b) = (weight.is_some(), bias.is_some());
        let (shape, ns, device) = (self.shape().to_vec(), ns.to_vec(), self.device().clone());
        Tensor::from_op(y, self.shape(), self.device(), op, &inputs, move |g| {
            let g = dense(g)?;
            let ws = storage_of(&w);
            let [dx, dw, db] = x.storage().norm_backward(&g.storage(), &stats.storage(), ws.as_deref(), &p)?;
            let mut out = vec![Some(Tensor::leaf(dx, &shape, &device))];
            if has_w {
                out.push(Some(Tensor::leaf(dw, &ns, &device)));
            }
            if has_b {
                out.push(Some(Tensor::leaf(db, &ns, &device)));
            }
            Ok(out)
        })
    }

    /// Per-row cross-entropy of logits `[rows, classes]` against class ids `[rows]` (u32 or
    /// i32), in one fused kernel: `(1 − ε)·(lse − x[t]) + ε·(lse − mean(x))`, 0 for rows whose
    /// target is `ignore_index`. The gradient is one kernel too: `softmax − smoothed onehot`.
    /// Ids other than `ignore_index` must be in range (checked; this reads them back unless they
    /// were uploaded from the host, whose range is known).
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let d = Device::cpu();
    /// let logits = Tensor::zeros(&[2, 4], &d).unwrap();
    /// let ids = Tensor::from_vec(vec![1u32, 3], &[2], &d).unwrap();
    /// let loss = logits.cross_entropy_rows(&ids, None, 0.0).unwrap();
    /// assert!((loss.to_vec::<f32>().unwrap()[0] as f64 - 4f64.ln()).abs() < 1e-6);
    /// ```
    pub fn cross_entropy_rows(
        &self,
        targets: &Tensor,
        ignore_index: Option<u32>,
        label_smoothing: f64,
    ) -> Result<Tensor> {
        const OP: &str = "cross_entropy";
        check_float(OP, self)?;
        self.check_same_device(OP, targets)?;
        if self.rank() != 2 || targets.shape() != [self.shape()[0]] {
            return Err(Error::shape(
                OP,
                format!(
                    "expects logits [rows, classes] and ids [rows], got {:?} and {:?}",
                    self.shape(),
                    targets.shape()
                ),
            ));
        }
        if !matches!(targets.dtype(), DType::U32 | DType::I32) {
            return Err(Error::dtype(OP, "u32 or i32 class ids", targets.dtype()));
        }
        if !(0.0..=1.0).contains(&label_smoothing) {
            return Err(Error::invalid(OP, format!("label_smoothing {label_smoothing} is not in [0, 1]")));
        }
        let (rows, classes) = (self.shape()[0], self.shape()[1]);
        let ids = if targets.ids_known_below(classes) { Vec::new() } else { targets.to_f64_vec()? };
        for t in ids {
            let ignored = ignore_index.is_some_and(|ii| t == ii as f64);
            if !ignored && (t < 0.0 || t >= classes as f64) {
                return Err(Error::IndexOutOfRange { op: OP, index: t as i64, size: classes, what: "classes".into() });
            }
        }
        let p = CrossEntropyParams { rows, classes, ignore_index, smoothing: label_smoothing };
        let x = dense(self)?;
        let ids = dense(targets)?;
        let (loss, lse) = x.storage().cross_entropy_forward(&ids.storage(), &p)?;
        let lse = Tensor::leaf(lse, &[rows], self.device());
        let device = self.device().clone();
        Tensor::from_op(loss, &[rows], self.device(), OP, &[self], move |g| {
            let g = dense(g)?;
            let dx = x.storage().cross_entropy_backward(&ids.storage(), &lse.storage(), &g.storage(), &p)?;
            Ok(vec![Some(Tensor::leaf(dx, &[rows, classes], &device))])
        })
    }

    /// The parameter, gradient and moments of an Adam step agree in device, dtype and shape,
    /// are distinct, and the ones written own dense storage.
    fn check_adam(&self, grad: &Tensor, m: &Tensor, v: &Tensor) -> Result<()> {
        const OP: &str = "adam_step";
        check_float(OP, self)?;
        for t in [grad, m, v] {
            check_like(OP, self, t)?;
            if t.shape() != self.shape() {
                return Err(Error::shape(OP, format!("{:?} for a parameter of shape {:?}", t.shape(), self.shape())));
            }
        }
        if self.same(m) || self.same(v) || m.same(v) || grad.same(self) || grad.same(m) || grad.same(v) {
            return Err(Error::invalid(OP, "parameter, gradient and moments must be distinct tensors"));
        }
        for t in [self, m, v] {
            if !t.is_contiguous() || t.layout().offset() != 0 {
                return Err(Error::invalid(OP, "parameter and moments must own contiguous storage"));
            }
        }
        Ok(())
    }
}

// The optimizers' fused kernels: a trait of their own, so they are no part of `Tensor`'s
// user-facing methods (see `crate::optim_kernels`).
impl crate::optim_kernels::OptimKernels for Tensor {
    /// One Adam/AdamW step in place on this parameter and its moment buffers `m` and `v`
    /// (one kernel on the GPU): see [`AdamParams`] for the formula. The parameter, `m` and `v`
    /// must each own dense storage; storage shared with another tensor is copied first, so
    /// that tensor keeps the old values.
    fn adam_step_(&self, grad: &Tensor, m: &Tensor, v: &Tensor, p: &AdamParams) -> Result<()> {
        const OP: &str = "adam_step";
        self.check_adam(grad, m, v)?;
        let g = dense(grad)?;
        let gs = g.storage();
        let (mut ps, mut mst, mut vst) = (lock(self), lock(m), lock(v));
        let pm = owned(OP, &mut ps, self, false)?;
        let mm = owned(OP, &mut mst, m, false)?;
        let vm = owned(OP, &mut vst, v, false)?;
        pm.adam_step(&gs, mm, vm, p)
    }

    /// [`adam_step_`](Self::adam_step_) with the parameter's step count kept on the device and
    /// the whole update skipped when `found_inf` (a u32 tensor of one element, e.g. GradScaler's
    /// overflow flag; `None`: never) is not 0. Nothing is read back: a skipped step leaves the
    /// parameter, the moments and the count as they were, and the bias corrections use the
    /// device's count, so skipped steps do not advance it (what PyTorch's GradScaler gets by not
    /// calling `optimizer.step()`).
    ///
    /// `steps` is a u32 tensor of two slots, zeros for a fresh parameter; `p.step` numbers this
    /// call among all calls for this parameter, skipped ones included (1 on the first): slot
    /// `(p.step − 1) % 2` holds the count of updates so far, and the call writes the new count
    /// to slot `p.step % 2`. Read that slot to know the count.
    ///
    /// ```
    /// # use kiln_core::{AdamParams, DType, Device, Tensor};
    /// use kiln_core::optim_kernels::OptimKernels;
    /// let d = Device::cpu();
    /// let p = Tensor::from_vec(vec![1.0f32], &[1], &d).unwrap();
    /// let g = Tensor::from_vec(vec![0.5f32], &[1], &d).unwrap();
    /// let (m, v) = (Tensor::zeros(&[1], &d).unwrap(), Tensor::zeros(&[1], &d).unwrap());
    /// let steps = Tensor::full_dtype(&[2], 0.0, DType::U32, &d).unwrap();
    /// let inf = Tensor::full_dtype(&[1], 1.0, DType::U32, &d).unwrap();
    /// let h = |step| AdamParams { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: true, step };
    /// p.adam_step_gated_(&g, &m, &v, &steps, Some(&inf), &h(1)).unwrap(); // skipped
    /// assert_eq!((p.to_vec::<f32>().unwrap(), steps.to_vec::<u32>().unwrap()), (vec![1.0], vec![0, 0]));
    /// p.adam_step_gated_(&g, &m, &v, &steps, None, &h(2)).unwrap(); // the first real update
    /// assert_eq!(steps.to_vec::<u32>().unwrap(), vec![1, 0]);
    /// assert!((p.to_vec::<f32>().unwrap()[0] - 0.9).abs() < 1e-6);
    /// ```
    fn adam_step_gated_(
        &self,
        grad: &Tensor,
        m: &Tensor,
        v: &Tensor,
        steps: &Tensor,
        found_inf: Option<&Tensor>,
        p: &AdamParams,
    ) -> Result<()> {
        const OP: &str = "adam_step";
        self.check_adam(grad, m, v)?;
        self.check_same_device(OP, steps)?;
        if steps.dtype() != DType::U32 || steps.shape() != [2] || !steps.is_contiguous() || steps.layout().offset() != 0
        {
            return Err(Error::invalid(
                OP,
                format!("steps must own a u32 tensor of shape [2], got {} {:?}", steps.dtype(), steps.shape()),
            ));
        }
        if [self, grad, m, v].iter().any(|t| t.same(steps)) {
            return Err(Error::invalid(OP, "steps must be a tensor of its own"));
        }
        let flag = match found_inf {
            Some(f) => {
                check_flag(OP, self, f)?;
                dense(f)?
            }
            None => Tensor::constant(0.0, DType::U32, self.device())?,
        };
        let g = dense(grad)?;
        let (gs, fs) = (g.storage(), flag.storage());
        let (mut ps, mut mst, mut vst, mut sst) = (lock(self), lock(m), lock(v), lock(steps));
        let pm = owned(OP, &mut ps, self, false)?;
        let mm = owned(OP, &mut mst, m, false)?;
        let vm = owned(OP, &mut vst, v, false)?;
        let sm = owned(OP, &mut sst, steps, true)?;
        pm.adam_step_gated(&gs, mm, vm, sm, &fs, p)
    }

    /// Loss-scaling's unscale in place, with its overflow check (one kernel on the GPU): every
    /// element becomes `x · inv_scale` in this tensor's dtype, and if any result is inf or NaN
    /// (an inf or NaN element, or a product past the dtype's range) a 1 is ORed into
    /// `found_inf`, a u32 tensor of one element that this never clears. Many gradients can share
    /// one flag and one readback. This tensor must be dense at offset 0; storage shared with
    /// another tensor is copied first, so that tensor keeps the old values.
    ///
    /// ```
    /// # use kiln_core::{DType, Device, Tensor};
    /// use kiln_core::optim_kernels::OptimKernels;
    /// let d = Device::cpu();
    /// let flag = Tensor::full_dtype(&[1], 0.0, DType::U32, &d).unwrap();
    /// let g = Tensor::from_vec(vec![2.0f32, -4.0], &[2], &d).unwrap();
    /// g.unscale_check_(0.5, &flag).unwrap();
    /// assert_eq!(g.to_vec::<f32>().unwrap(), vec![1.0, -2.0]);
    /// assert_eq!(flag.to_vec::<u32>().unwrap(), vec![0]);
    /// Tensor::from_vec(vec![f32::INFINITY], &[1], &d).unwrap().unscale_check_(0.5, &flag).unwrap();
    /// assert_eq!(flag.to_vec::<u32>().unwrap(), vec![1]);
    /// ```
    fn unscale_check_(&self, inv_scale: f64, found_inf: &Tensor) -> Result<()> {
        const OP: &str = "unscale_check";
        check_float(OP, self)?;
        check_flag(OP, self, found_inf)?;
        for t in [self, found_inf] {
            if !t.is_contiguous() || t.layout().offset() != 0 {
                return Err(Error::invalid(
                    OP,
                    format!("{:?} tensor must own contiguous storage at offset 0", t.shape()),
                ));
            }
        }
        let (mut gs, mut fs) = (lock(self), lock(found_inf));
        // The backend op covers the whole storage: a buffer longer than the tensor (a prefix
        // view whose base is gone) is trimmed by the copy too, so that stale elements past
        // the tensor neither change nor raise the flag.
        let gm = owned(OP, &mut gs, self, true)?;
        let fm = owned(OP, &mut fs, found_inf, true)?;
        gm.unscale_check(inv_scale, fm)
    }

    /// [`unscale_check_`](Self::unscale_check_) by `1 / scale`, where `scale` is an f32 tensor
    /// of one element read where it lives: a loss scale kept on the device never needs a host
    /// value. The factor is `1 / scale` rounded to f32 (exact for GradScaler's powers of two).
    ///
    /// ```
    /// # use kiln_core::{DType, Device, Tensor};
    /// use kiln_core::optim_kernels::OptimKernels;
    /// let d = Device::cpu();
    /// let flag = Tensor::full_dtype(&[1], 0.0, DType::U32, &d).unwrap();
    /// let scale = Tensor::full(&[], 4.0, &d).unwrap();
    /// let g = Tensor::from_vec(vec![2.0f32, -4.0], &[2], &d).unwrap();
    /// g.unscale_check_by_(&scale, &flag).unwrap();
    /// assert_eq!(g.to_vec::<f32>().unwrap(), vec![0.5, -1.0]);
    /// assert_eq!(flag.to_vec::<u32>().unwrap(), vec![0]);
    /// ```
    fn unscale_check_by_(&self, scale: &Tensor, found_inf: &Tensor) -> Result<()> {
        const OP: &str = "unscale_check";
        check_float(OP, self)?;
        check_flag(OP, self, found_inf)?;
        self.check_same_device(OP, scale)?;
        if scale.dtype() != DType::F32 || scale.numel() != 1 {
            return Err(Error::invalid(
                OP,
                format!("scale must be one f32, got {} {:?}", scale.dtype(), scale.shape()),
            ));
        }
        if scale.same(self) || scale.same(found_inf) || found_inf.same(self) {
            return Err(Error::invalid(OP, "gradient, scale and flag must be distinct tensors"));
        }
        for t in [self, found_inf] {
            if !t.is_contiguous() || t.layout().offset() != 0 {
                return Err(Error::invalid(
                    OP,
                    format!("{:?} tensor must own contiguous storage at offset 0", t.shape()),
                ));
            }
        }
        let sc = dense(scale)?;
        let ss = sc.storage();
        let (mut gs, mut fs) = (lock(self), lock(found_inf));
        let gm = owned(OP, &mut gs, self, true)?;
        let fm = owned(OP, &mut fs, found_inf, true)?;
        gm.unscale_check_by(&ss, fm)
    }
}

/// `found_inf` is a u32 tensor of one element on `x`'s device.
fn check_flag(op: &'static str, x: &Tensor, found_inf: &Tensor) -> Result<()> {
    x.check_same_device(op, found_inf)?;
    if found_inf.dtype() != DType::U32 {
        return Err(Error::dtype(op, DType::U32, found_inf.dtype()));
    }
    if found_inf.numel() != 1 {
        return Err(Error::shape(op, format!("found_inf {:?} (expects one element)", found_inf.shape())));
    }
    Ok(())
}

/// The storage `s` behind `t`, made `t`'s own for an in-place op: copied first when another
/// tensor shares it, or (with `exact`) when it holds more elements than `t`.
fn owned<'a>(op: &'static str, s: &'a mut Arc<Storage>, t: &Tensor, exact: bool) -> Result<&'a mut Storage> {
    if Arc::get_mut(s).is_none() || (exact && s.len() != t.numel()) {
        *s = Arc::new(s.cast(&Layout::contiguous(t.shape()), t.dtype())?);
    }
    Arc::get_mut(s).ok_or_else(|| Error::invalid(op, "storage is shared"))
}

fn lock(t: &Tensor) -> std::sync::RwLockWriteGuard<'_, Arc<Storage>> {
    t.0.storage.write().unwrap_or_else(|e| e.into_inner())
}

/// `Σ x²` of each of `tensors` as one `[tensors.len()]` tensor on their device, with no
/// gradient: f64 when every tensor is f64, else f32 (accumulated in f32 or wider; f16 is
/// widened). The multi-tensor kernel behind `clip_grad_norm_` (PyTorch's `_foreach_norm`,
/// squared): a few dispatches on the GPU for any number of tensors, where a square, a sum and
/// an add each would cost three or four. Strided views are copied dense first.
///
/// Errors (typed, naming `sum_squares`): no tensors, a non-float tensor, tensors on different
/// devices.
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// let d = Device::cpu();
/// let a = Tensor::from_vec(vec![3.0f32, 4.0], &[2], &d).unwrap();
/// let b = Tensor::from_vec(vec![1.0f32, 2.0, 2.0], &[3], &d).unwrap();
/// let s = kiln_core::optim_kernels::sum_squares(&[a, b]).unwrap();
/// assert_eq!(s.to_vec::<f32>().unwrap(), vec![25.0, 9.0]);
/// ```
pub fn sum_squares(tensors: &[Tensor]) -> Result<Tensor> {
    const OP: &str = "sum_squares";
    let first = tensors.first().ok_or_else(|| Error::invalid(OP, "needs at least one tensor"))?;
    for t in tensors {
        check_float(OP, t)?;
        first.check_same_device(OP, t)?;
    }
    let dtype = if tensors.iter().all(|t| t.dtype() == DType::F64) { DType::F64 } else { DType::F32 };
    let dense = tensors.iter().map(dense).collect::<Result<Vec<_>>>()?;
    let storages: Vec<Arc<Storage>> = dense.iter().map(Tensor::storage).collect();
    let parts: Vec<(&Storage, usize)> = storages.iter().zip(&dense).map(|(s, t)| (&**s, t.numel())).collect();
    let out = Storage::sum_squares(&parts, dtype)?;
    Ok(Tensor::leaf(out, &[tensors.len()], first.device()))
}

/// Multiplies each of `tensors` in place by `factor`, a float tensor of one element on their
/// device read where it lives (no host sync), in each tensor's own dtype (f32 and f16 by the
/// factor rounded to f32). The multi-tensor scale behind `clip_grad_norm_`: a few dispatches
/// on the GPU for any number of tensors. A tensor listed twice is scaled once. Each must own
/// dense storage (contiguous at offset 0); storage shared with another tensor is copied first,
/// so that tensor keeps the old values (as [`unscale_check_`](crate::optim_kernels::OptimKernels::unscale_check_)).
///
/// Errors (typed, naming `scale_each_`, nothing changed): a non-float tensor or factor, a factor
/// of more than one element or listed among the tensors, a strided view, devices that differ.
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// let d = Device::cpu();
/// let a = Tensor::from_vec(vec![3.0f32, 4.0], &[2], &d).unwrap();
/// let b = Tensor::from_vec(vec![1.0f32], &[1], &d).unwrap();
/// kiln_core::optim_kernels::scale_each_(&[a.clone(), b.clone()], &Tensor::full(&[], 0.5, &d).unwrap()).unwrap();
/// assert_eq!((a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap()), (vec![1.5, 2.0], vec![0.5]));
/// ```
pub fn scale_each_(tensors: &[Tensor], factor: &Tensor) -> Result<()> {
    const OP: &str = "scale_each_";
    check_float(OP, factor)?;
    if factor.numel() != 1 {
        return Err(Error::shape(OP, format!("factor {:?} (expects one element)", factor.shape())));
    }
    let mut unique: Vec<&Tensor> = Vec::new();
    for t in tensors {
        check_float(OP, t)?;
        factor.check_same_device(OP, t)?;
        if t.same(factor) {
            return Err(Error::invalid(OP, "the factor must be a tensor of its own"));
        }
        if !t.is_contiguous() || t.layout().offset() != 0 {
            return Err(Error::invalid(OP, format!("{:?} tensor must own contiguous storage at offset 0", t.shape())));
        }
        if !unique.iter().any(|u| u.same(t)) {
            unique.push(t);
        }
    }
    if unique.is_empty() {
        return Ok(());
    }
    let f = dense(factor)?;
    let fs = f.storage();
    let mut guards: Vec<_> = unique.iter().map(|t| lock(t)).collect();
    let mut parts = Vec::with_capacity(unique.len());
    for (g, t) in guards.iter_mut().zip(&unique) {
        parts.push((owned(OP, g, t, true)?, t.numel()));
    }
    Storage::scale_in_place(&mut parts, &fs)
}
