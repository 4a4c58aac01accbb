//! Adam (`torch.optim.Adam`, L2 penalty in the gradient) and AdamW (`torch.optim.AdamW`,
//! decoupled weight decay), without AMSGrad.

use super::{
    Gate, Hyper, OptimCore, Optimizer, ParamGroup, ParamState, check_non_negative, delegate_to_core,
    step_unless_on_host,
};
use kiln_core::optim_kernels::OptimKernels;
use kiln_core::{AdamParams, DType, Error, Result, Tensor};

/// Hyper-parameters of [`Adam`] (PyTorch's defaults via `Default`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0 }
    }
}

/// Hyper-parameters of [`AdamW`] (PyTorch's defaults via `Default`: weight decay 1e-2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 1e-2 }
    }
}

const FIELDS: [&str; 2] = ["exp_avg", "exp_avg_sq"];

fn check_adam(op: &'static str, betas: (f64, f64), eps: f64) -> Result<()> {
    for (i, b) in [betas.0, betas.1].into_iter().enumerate() {
        if !(0.0..1.0).contains(&b) {
            return Err(Error::invalid(op, format!("betas.{i} must be in [0, 1), got {b}")));
        }
    }
    check_non_negative(op, "eps", eps)
}

/// One Adam step, fused: one kernel per parameter updates the parameter and both moments in
/// place (`decoupled` selects AdamW's `p ← p·(1 − lr·wd)` over the L2 term). The old moment
/// handles are dropped before the write, so the kernel updates their storage in place unless
/// someone else (a `state()` export) still holds it; then that storage is copied first.
///
/// The step count that the bias corrections use lives on the device
/// ([`OptimKernels::adam_step_gated_`](kiln_core::optim_kernels::OptimKernels::adam_step_gated_)), for plain and gated steps alike, so both run the same
/// kernel; a gated step whose flag is set changes nothing and is not counted.
#[allow(clippy::too_many_arguments)]
fn adam_fused(
    h: Hyper,
    p: &Tensor,
    g: &Tensor,
    old: Option<ParamState>,
    gate: Option<Gate>,
    (beta1, beta2): (f64, f64),
    eps: f64,
    decoupled: bool,
) -> Result<(Vec<Tensor>, Option<Tensor>)> {
    let (m, v, steps) = match old {
        Some(s) => {
            let steps = match s.device_steps {
                Some(t) => t,
                // Restored from a checkpoint: both slots hold the count.
                None => Tensor::full_dtype(&[2], (h.step - 1) as f64, DType::U32, p.device())?,
            };
            let mut bufs = s.bufs.into_iter();
            let mut next = || bufs.next().ok_or_else(|| Error::invalid("Adam", "optimizer state lost a moment buffer"));
            (next()?.detach(), next()?.detach(), steps)
        }
        None => {
            (Tensor::zeros_like(p)?, Tensor::zeros_like(p)?, Tensor::full_dtype(&[2], 0.0, DType::U32, p.device())?)
        }
    };
    let params = AdamParams { lr: h.lr, beta1, beta2, eps, weight_decay: h.weight_decay, decoupled, step: h.step };
    p.adam_step_gated_(g, &m, &v, &steps, gate.map(|g| g.flag), &params)?;
    Ok((vec![m, v], Some(steps)))
}

/// `torch.optim.Adam`: moments `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, then
/// `p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`. Weight decay adds `wd·p` to the gradient.
pub struct Adam {
    core: OptimCore,
    config: AdamConfig,
}

impl Adam {
    /// One group of parameters.
    pub fn new(params: Vec<Tensor>, config: AdamConfig) -> Result<Self> {
        Self::with_groups(vec![ParamGroup::new(params)], config)
    }

    /// Several groups, each with optional `lr` / `weight_decay` overrides.
    pub fn with_groups(groups: Vec<ParamGroup>, config: AdamConfig) -> Result<Self> {
        check_adam("Adam", config.betas, config.eps)?;
        Ok(Adam { core: OptimCore::new("Adam", groups, config.lr, config.weight_decay, FIELDS.to_vec())?, config })
    }

    /// The configuration this optimizer was built with (its `lr` is the initial one).
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }
}

impl Optimizer for Adam {
    fn step(&mut self) -> Result<()> {
        let c = self.config;
        self.core.step_in_place(None, |h, p, g, s, gate| adam_fused(h, p, g, s, gate, c.betas, c.eps, false))
    }

    fn step_unless(&mut self, found_inf: &Tensor) -> Result<()> {
        if !self.core.gateable(found_inf) {
            return step_unless_on_host(self, found_inf);
        }
        let c = self.config;
        self.core.step_in_place(Some(found_inf), |h, p, g, s, gate| adam_fused(h, p, g, s, gate, c.betas, c.eps, false))
    }

    delegate_to_core!();
}

/// `torch.optim.AdamW`: first `p ← p·(1 − lr·wd)`, then Adam's update without an L2 term.
pub struct AdamW {
    core: OptimCore,
    config: AdamWConfig,
}

impl AdamW {
    /// One group of parameters.
    pub fn new(params: Vec<Tensor>, config: AdamWConfig) -> Result<Self> {
        Self::with_groups(vec![ParamGroup::new(params)], config)
    }

    /// Several groups, each with optional `lr` / `weight_decay` overrides (a group of biases and
    /// norms with `weight_decay: Some(0.0)` is the usual use).
    pub fn with_groups(groups: Vec<ParamGroup>, config: AdamWConfig) -> Result<Self> {
        check_adam("AdamW", config.betas, config.eps)?;
        Ok(AdamW { core: OptimCore::new("AdamW", groups, config.lr, config.weight_decay, FIELDS.to_vec())?, config })
    }

    /// The configuration this optimizer was built with (its `lr` is the initial one).
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }
}

impl Optimizer for AdamW {
    fn step(&mut self) -> Result<()> {
        let c = self.config;
        self.core.step_in_place(None, |h, p, g, s, gate| adam_fused(h, p, g, s, gate, c.betas, c.eps, true))
    }

    fn step_unless(&mut self, found_inf: &Tensor) -> Result<()> {
        if !self.core.gateable(found_inf) {
            return step_unless_on_host(self, found_inf);
        }
        let c = self.config;
        self.core.step_in_place(Some(found_inf), |h, p, g, s, gate| adam_fused(h, p, g, s, gate, c.betas, c.eps, true))
    }

    delegate_to_core!();
}
