//! Gradient clipping: `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`.
//!
//! Both rewrite the gradients that `backward` left on the parameters, so call them between
//! `backward()` and `optimizer.step()`.

use kiln_core::optim_kernels::{scale_each_, sum_squares};
use kiln_core::{DType, Device, Error, Result, Tensor};

/// The gradients of `params` that exist, with their parameters.
fn grads_of(params: &[Tensor]) -> Vec<(&Tensor, Tensor)> {
    params.iter().filter_map(|p| p.grad().map(|g| (p, g))).collect()
}

/// Rescales every gradient of `params` so that their total L2 norm (over all elements of all
/// gradients, as if concatenated) is at most `max_norm`, and returns the norm before clipping
/// as a 0-d tensor, as PyTorch does. Nothing is read back: the norm and the factor stay on the
/// device, so a training step that clips does not wait for the GPU. Read the norm (`item()`)
/// only when you need it, e.g. together with the loss every few steps.
///
/// As in PyTorch the factor is `min(max_norm / (norm + 1e-6), 1)`, computed on the device;
/// every gradient is multiplied by it in place ([`scale_each_`]: a few kernels for all
/// gradients of a device; storage another tensor shares is copied first). The squares
/// are summed by [`sum_squares`] (a few kernels for all gradients of a device), in f32, or in
/// f64 when every gradient is f64 (the norm then is f64 too).
/// Gradients on several devices are summed per device and the partial sums gathered on the
/// device of the first gradient, where the norm lives; that gathering, and sending the factor
/// back to the other devices, goes through the host (a sync per extra device).
///
/// **Non-finite norms** (an inf or NaN gradient, or a sum past f32's range): the factor is 1,
/// so the gradients are left exactly as they were and the returned norm is inf or NaN. PyTorch
/// (with `error_if_nonfinite=False`) multiplies by the factor computed from the inf/NaN norm
/// instead, which turns every gradient into zeros or NaNs and destroys what a caller or a
/// [`GradScaler`](crate::GradScaler) would inspect: Kiln keeps them, so the caller can check
/// the norm (or let the scaler skip the step) and still see which gradient overflowed.
///
/// With no gradients at all the norm is a 0 on the device of the first parameter (the CPU
/// when `params` is empty).
///
/// ```
/// use kiln_core::{Device, Tensor};
/// let p = Tensor::from_vec(vec![0.0f32, 0.0], &[2], &Device::cpu()).unwrap().with_grad();
/// let loss = (&p * &Tensor::from_vec(vec![3.0f32, 4.0], &[2], &Device::cpu()).unwrap()).unwrap().sum_all().unwrap();
/// loss.backward().unwrap();
/// let norm = kiln_nn::clip_grad_norm_(&[p.clone()], 1.0).unwrap();
/// assert!((norm.item().unwrap() - 5.0).abs() < 1e-6);
/// let g = p.grad().unwrap().to_vec::<f32>().unwrap();
/// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
/// ```
pub fn clip_grad_norm_(params: &[Tensor], max_norm: f64) -> Result<Tensor> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::invalid("clip_grad_norm_", format!("max_norm must be >= 0, got {max_norm}")));
    }
    let grads = grads_of(params);
    let Some((_, first)) = grads.first() else {
        let device = params.first().map_or(Device::cpu(), |p| p.device().clone());
        return Tensor::zeros(&[], &device);
    };
    let home = first.device().clone();
    let acc = if grads.iter().all(|(_, g)| g.dtype() == DType::F64) { DType::F64 } else { DType::F32 };
    let (norm, coef) = kiln_core::no_grad(|| -> Result<(Tensor, Tensor)> {
        // One multi-tensor sum of squares per device (a few kernels for all of its gradients):
        // parameters usually live on one, and summing there keeps the host out of the loop.
        let mut devices: Vec<(Device, Vec<Tensor>)> = Vec::new();
        for (_, g) in &grads {
            match devices.iter_mut().find(|(d, _)| d == g.device()) {
                Some((_, gs)) => gs.push(g.clone()),
                None => devices.push((g.device().clone(), vec![g.clone()])),
            }
        }
        let mut sums: Vec<(Device, Tensor)> = Vec::new();
        for (d, gs) in &devices {
            // A device whose gradients are all f64 sums in f64; the total is f32 unless all are.
            sums.push((d.clone(), sum_squares(gs)?.sum_all()?.to_dtype(acc)?));
        }
        let mut total: Option<Tensor> = None;
        for (_, s) in &sums {
            let s = s.to(&home)?;
            total = Some(match total {
                Some(t) => (&t + &s)?,
                None => s,
            });
        }
        let norm = total.ok_or_else(|| Error::invalid("clip_grad_norm_", "internal: no partial sums"))?.sqrt()?;
        Ok((norm.clone(), clip_coef(&norm, max_norm)?))
    })?;
    // The factor in each gradient's dtype and on each gradient's device, made once.
    let mut coefs: Vec<(Device, DType, Tensor)> = Vec::new();
    let mut coef_for = |g: &Tensor| -> Result<Tensor> {
        if let Some((_, _, c)) = coefs.iter().find(|(d, t, _)| d == g.device() && *t == g.dtype()) {
            return Ok(c.clone());
        }
        let c = coef.to(g.device())?.to_dtype(g.dtype())?;
        coefs.push((g.device().clone(), g.dtype(), c.clone()));
        Ok(c)
    };
    // Gradients that own dense storage (nearly all) are scaled in place, a few kernels per
    // device and factor for all of them; a view into a larger buffer (a slice of `cat`'s
    // gradient) gets a scaled copy stored through `replace_grad`.
    let (dense, views): (Vec<_>, Vec<_>) =
        grads.iter().cloned().partition(|(_, g)| g.is_contiguous() && g.storage_offset() == 0);
    let mut groups: Vec<(Tensor, Vec<Tensor>)> = Vec::new();
    for (_, g) in &dense {
        let c = coef_for(g)?;
        match groups.iter_mut().find(|(k, _)| k.same(&c)) {
            Some((_, gs)) => gs.push(g.clone()),
            None => groups.push((c, vec![g.clone()])),
        }
    }
    for (c, gs) in &groups {
        scale_each_(gs, c)?;
    }
    let scaled = kiln_core::no_grad(|| views.iter().map(|(_, g)| g * &coef_for(g)?).collect::<Result<Vec<_>>>())?;
    store_grads(&views, &scaled)?;
    Ok(norm)
}

/// `min(max_norm / (norm + 1e-6), 1)` as a 0-d tensor beside `norm`; exactly 1 when `norm` is
/// inf or NaN (see [`clip_grad_norm_`]).
fn clip_coef(norm: &Tensor, max_norm: f64) -> Result<Tensor> {
    let clipped = norm.add_scalar(1e-6)?.recip()?.mul_scalar(max_norm)?.minimum_scalar(1.0)?;
    let bad = norm.isnan()?.logical_or(&norm.isinf()?)?;
    Tensor::where_(&bad, &Tensor::ones_like(norm)?, &clipped)
}

/// Clamps every gradient of `params` elementwise to `[-clip_value, clip_value]`.
pub fn clip_grad_value_(params: &[Tensor], clip_value: f64) -> Result<()> {
    if clip_value.is_nan() || clip_value < 0.0 {
        return Err(Error::invalid("clip_grad_value_", format!("clip_value must be >= 0, got {clip_value}")));
    }
    let grads = grads_of(params);
    rewrite_grads(&grads, |g| g.clamp(-clip_value, clip_value))
}

/// Replaces each gradient with `f(gradient)`.
///
/// Every new value is computed before any is stored: two parameters can share one gradient
/// tensor (autodiff hands both inputs of an `add` the same one), and rewriting it as we go would
/// apply `f` twice.
fn rewrite_grads(grads: &[(&Tensor, Tensor)], f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<()> {
    let fresh = kiln_core::no_grad(|| grads.iter().map(|(_, g)| f(g)).collect::<Result<Vec<_>>>())?;
    store_grads(grads, &fresh)
}

/// Stores each new value as its parameter's gradient, once all of them are computed.
fn store_grads(grads: &[(&Tensor, Tensor)], fresh: &[Tensor]) -> Result<()> {
    for ((p, g), new) in grads.iter().zip(fresh) {
        replace_grad(p, g, new)?;
    }
    Ok(())
}

/// Stores `value` as `param`'s gradient.
///
/// `set_data` on the gradient does it in place, but refuses a gradient that is a view into a
/// larger buffer (e.g. a slice of `cat`'s gradient). Then the value goes through autodiff
/// instead — `backward_with` through `param · 1` stores a fresh copy as the gradient — because
/// `kiln-core` has no public gradient setter yet.
fn replace_grad(param: &Tensor, grad: &Tensor, value: &Tensor) -> Result<()> {
    match grad.set_data(value) {
        Ok(()) => Ok(()),
        Err(Error::InvalidArgument { .. }) => {
            let through = param.mul_scalar(1.0)?;
            if !through.requires_grad() {
                return Err(Error::Autograd {
                    op: "clip_grad",
                    msg:
                        "this gradient is a view that can only be replaced with autodiff enabled; call outside no_grad"
                            .into(),
                });
            }
            param.zero_grad();
            through.backward_with(value)
        }
        Err(e) => Err(e),
    }
}
