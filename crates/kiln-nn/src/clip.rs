//! Gradient clipping: `torch.nn.utils.clip_grad_norm_` and `clip_grad_value_`.
//!
//! Both rewrite the gradients that `backward` left on the parameters, so call them between
//! `backward()` and `optimizer.step()`.

use kiln_core::{DType, Device, Error, Result, Tensor};

/// The gradients of `params` that exist, with their parameters.
fn grads_of(params: &[Tensor]) -> Vec<(&Tensor, Tensor)> {
    params.iter().filter_map(|p| p.grad().map(|g| (p, g))).collect()
}

/// Rescales every gradient of `params` so that their total L2 norm (over all elements of all
/// gradients, as if concatenated) is at most `max_norm`, and returns the norm before clipping.
///
/// As in PyTorch the factor is `max_norm / (norm + 1e-6)`, applied only when it is below 1.
/// Partial sums stay on each gradient's device (in f32, or f64 when every gradient is f64);
/// the one value read back to the host is the total. When the norm is not finite the gradients
/// are left untouched and the norm is returned, so the caller can skip the step (PyTorch
/// would scale them into NaNs).
///
/// ```
/// use kiln_core::{Device, Tensor};
/// let p = Tensor::from_vec(vec![0.0f32, 0.0], &[2], &Device::cpu()).unwrap().with_grad();
/// let loss = (&p * &Tensor::from_vec(vec![3.0f32, 4.0], &[2], &Device::cpu()).unwrap()).unwrap().sum_all().unwrap();
/// loss.backward().unwrap();
/// let norm = kiln_nn::clip_grad_norm_(&[p.clone()], 1.0).unwrap();
/// assert!((norm - 5.0).abs() < 1e-6);
/// let g = p.grad().unwrap().to_vec::<f32>().unwrap();
/// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
/// ```
pub fn clip_grad_norm_(params: &[Tensor], max_norm: f64) -> Result<f64> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::invalid("clip_grad_norm_", format!("max_norm must be >= 0, got {max_norm}")));
    }
    let grads = grads_of(params);
    if grads.is_empty() {
        return Ok(0.0);
    }
    let acc = if grads.iter().all(|(_, g)| g.dtype() == DType::F64) { DType::F64 } else { DType::F32 };
    let total = kiln_core::no_grad(|| -> Result<f64> {
        // One running sum per device: parameters usually live on one, and summing there keeps
        // the host out of the loop until the single read below.
        let mut sums: Vec<(Device, Tensor)> = Vec::new();
        for (_, g) in &grads {
            let sq = g.to_dtype(acc)?.square()?.sum_all()?;
            match sums.iter_mut().find(|(d, _)| d == g.device()) {
                Some((_, s)) => *s = (&*s + &sq)?,
                None => sums.push((g.device().clone(), sq)),
            }
        }
        let mut total = 0.0;
        for (_, s) in &sums {
            total += s.item()?;
        }
        Ok(total.sqrt())
    })?;
    let coef = max_norm / (total + 1e-6);
    if total.is_finite() && coef < 1.0 {
        rewrite_grads(&grads, |g| g * coef)?;
    }
    Ok(total)
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
    for ((p, g), new) in grads.iter().zip(&fresh) {
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
