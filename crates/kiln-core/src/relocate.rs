//! Moving a tensor to another device *in place*, so that every handle to it (a module's field,
//! an optimizer's parameter list) sees the new device — PyTorch's `module.to(device)`.

use crate::storage::Storage;
use crate::{Device, Tensor};
use kiln_backend::{Error, Result};
use std::sync::Mutex;

/// `Tensor::device` hands out `&Device`, so a relocated tensor must point at a device that
/// outlives it: each device something was moved onto is kept once, for the process's life.
/// That pins at most one handle per GPU context that received moved parameters.
fn interned(device: &Device) -> &'static Device {
    static DEVICES: Mutex<Vec<&'static Device>> = Mutex::new(Vec::new());
    let mut all = DEVICES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = all.iter().find(|d| **d == device) {
        return d;
    }
    let d: &'static Device = Box::leak(Box::new(device.clone()));
    all.push(d);
    d
}

/// A tensor's data and gradient already copied to the target device, ready to swap in.
struct Prepared {
    data: Storage,
    grad: Option<Tensor>,
}

fn prepare(t: &Tensor, device: &Device) -> Result<Option<Prepared>> {
    if t.device() == device {
        return Ok(None);
    }
    if !t.is_contiguous() || t.layout().offset() != 0 {
        return Err(Error::invalid("move_to_", "only tensors that own contiguous storage can move in place"));
    }
    if t.0.node.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
        return Err(Error::invalid("move_to_", "a tensor with autodiff history cannot move in place; detach it"));
    }
    let data = Storage::from_host(device, &t.to_host()?)?;
    let grad = match t.grad() {
        Some(g) => Some(g.detach().to(device)?),
        None => None,
    };
    Ok(Some(Prepared { data, grad }))
}

fn commit(t: &Tensor, p: Prepared, target: &'static Device) {
    let mut storage = t.0.storage.write().unwrap_or_else(|e| e.into_inner());
    *storage = std::sync::Arc::new(p.data);
    *t.0.moved.write().unwrap_or_else(|e| e.into_inner()) = Some(target);
    drop(storage);
    *t.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = p.grad;
}

impl Tensor {
    /// Moves this tensor's data to `device` in place; its gradient, if any, moves with it.
    /// Only tensors that own contiguous storage (parameters, buffers) can move; on error the
    /// tensor is unchanged.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device};
    /// let w = Tensor::ones(&[2, 2], &Device::cpu()).unwrap().with_grad();
    /// let handle = w.clone();
    /// w.move_to_(&Device::cpu()).unwrap();
    /// assert_eq!(handle.device(), &Device::cpu());
    /// ```
    pub fn move_to_(&self, device: &Device) -> Result<()> {
        Tensor::move_all_to_(std::slice::from_ref(self), device)
    }

    /// Moves all `tensors` in place, or none: every copy is made before any tensor changes, so
    /// an error (out of memory on the target, say) leaves them all where they were.
    pub fn move_all_to_(tensors: &[Tensor], device: &Device) -> Result<()> {
        let prepared = tensors.iter().map(|t| prepare(t, device)).collect::<Result<Vec<_>>>()?;
        let target = interned(device);
        for (t, p) in tensors.iter().zip(prepared) {
            if let Some(p) = p {
                commit(t, p, target);
            }
        }
        Ok(())
    }
}
