//! Adam (`torch.optim.Adam`, L2 penalty in the gradient) and AdamW (`torch.optim.AdamW`,
//! decoupled weight decay), without AMSGrad.

use super::{Hyper, OptimCore, Optimizer, ParamGroup, ParamState, check_non_negative, delegate_to_core, with_l2};
use kiln_core::{Error, Result, Tensor};

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

/// The shared Adam step. `decoupled` selects AdamW's `p ← p·(1 − lr·wd)` over the L2 term.
fn adam_update(
    h: Hyper,
    p: &Tensor,
    g: &Tensor,
    state: Option<&ParamState>,
    (b1, b2): (f64, f64),
    eps: f64,
    decoupled: bool,
) -> Result<(Tensor, Vec<Tensor>)> {
    let (p, g) = if decoupled {
        let p = if h.weight_decay != 0.0 { (p * (1.0 - h.lr * h.weight_decay))? } else { p.clone() };
        (p, g.clone())
    } else {
        (p.clone(), with_l2(g, p, h.weight_decay)?)
    };
    let g_sq = g.square()?;
    // Both moments start at zero, so the first update is just the weighted gradient.
    let (m, v) = match state {
        None => ((&g * (1.0 - b1))?, (&g_sq * (1.0 - b2))?),
        Some(s) => ((&(&s.bufs[0] * b1)? + &(&g * (1.0 - b1))?)?, (&(&s.bufs[1] * b2)? + &(&g_sq * (1.0 - b2))?)?),
    };
    let t = h.step as f64;
    let bias1 = 1.0 - b1.powf(t);
    let bias2 = 1.0 - b2.powf(t);
    let denom = v.sqrt()?.div_scalar(bias2.sqrt())?.add_scalar(eps)?;
    let update = (&m / &denom)?.mul_scalar(h.lr / bias1)?;
    Ok(((&p - &update)?, vec![m, v]))
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
        self.core.step(|h, p, g, s| adam_update(h, p, g, s, c.betas, c.eps, false))
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
        self.core.step(|h, p, g, s| adam_update(h, p, g, s, c.betas, c.eps, true))
    }

    delegate_to_core!();
}
