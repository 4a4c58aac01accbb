//! Opt-in NaN watch (`set_detect_anomaly(true)`): every op's output, and every gradient that
//! backward produces, is read back and checked; the first non-finite value becomes an error
//! naming the op. It syncs the device after each op, so it is for debugging, not training.

use crate::Tensor;
use kiln_backend::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the NaN/inf watch on or off for the whole process (like
/// `torch.autograd.set_detect_anomaly`).
pub fn set_detect_anomaly(on: bool) {
    ENABLED.store(on, Ordering::SeqCst);
}

pub fn is_detect_anomaly() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// With the watch on, errors when `t` (the `what` of `op`) holds NaN or ±inf.
pub(crate) fn check(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if !is_detect_anomaly() || !t.dtype().is_float() {
        return Ok(());
    }
    let values = t.to_f64_vec()?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::Anomaly {
            op,
            msg: format!("{what} of shape {:?} holds {} at flat index {i}", t.shape(), values[i]),
        });
    }
    Ok(())
}
