//! Adagrad (`torch.optim.Adagrad`) with learning-rate decay.

use super::{
    Hyper, OptimCore, Optimizer, ParamGroup, ParamState, add_scaled, check_non_negative, delegate_to_core,
    step_unless_on_host, with_l2,
};
use kiln_core::{Result, Tensor};

/// Hyper-parameters of [`Adagrad`] (PyTorch's defaults via `Default`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdagradConfig {
    pub lr: f64,
    pub lr_decay: f64,
    pub weight_decay: f64,
    pub initial_accumulator_value: f64,
    pub eps: f64,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        AdagradConfig { lr: 1e-2, lr_decay: 0.0, weight_decay: 0.0, initial_accumulator_value: 0.0, eps: 1e-10 }
    }
}

/// `torch.optim.Adagrad`: `s ← s + g²` (from `initial_accumulator_value`), then
/// `p ← p − clr · g / (√s + ε)` with `clr = lr / (1 + (t−1)·lr_decay)` at the parameter's step `t`.
pub struct Adagrad {
    core: OptimCore,
    config: AdagradConfig,
}

impl Adagrad {
    /// One group of parameters.
    pub fn new(params: Vec<Tensor>, config: AdagradConfig) -> Result<Self> {
        Self::with_groups(vec![ParamGroup::new(params)], config)
    }

    /// Several groups, each with optional `lr` / `weight_decay` overrides.
    pub fn with_groups(groups: Vec<ParamGroup>, config: AdagradConfig) -> Result<Self> {
        const OP: &str = "Adagrad";
        check_non_negative(OP, "lr_decay", config.lr_decay)?;
        check_non_negative(OP, "initial_accumulator_value", config.initial_accumulator_value)?;
        check_non_negative(OP, "eps", config.eps)?;
        Ok(Adagrad { core: OptimCore::new(OP, groups, config.lr, config.weight_decay, vec!["sum"])?, config })
    }

    /// The configuration this optimizer was built with (its `lr` is the initial one).
    pub fn config(&self) -> &AdagradConfig {
        &self.config
    }
}

/// One Adagrad update: the new parameter and `sum`.
fn adagrad_rule(
    c: AdagradConfig,
    h: Hyper,
    p: &Tensor,
    g: &Tensor,
    state: Option<&ParamState>,
) -> Result<(Tensor, Vec<Tensor>)> {
    let g = with_l2(g, p, h.weight_decay)?;
    let clr = h.lr / (1.0 + (h.step as f64 - 1.0) * c.lr_decay);
    let g_sq = g.square()?;
    // PyTorch fills the accumulator at construction; starting it on the first update is
    // the same arithmetic without holding memory for parameters that never get a grad.
    let sum = match state {
        Some(s) => (&s.bufs[0] + &g_sq)?,
        None if c.initial_accumulator_value == 0.0 => g_sq,
        None => g_sq.add_scalar(c.initial_accumulator_value)?,
    };
    let std = sum.sqrt()?.add_scalar(c.eps)?;
    Ok((add_scaled(p, &(&g / &std)?, -clr)?, vec![sum]))
}

impl Optimizer for Adagrad {
    fn step(&mut self) -> Result<()> {
        let c = self.config;
        self.core.step(|h, p, g, state| adagrad_rule(c, h, p, g, state))
    }

    /// Gated on the device: a skipped first step keeps `sum` at `initial_accumulator_value`,
    /// which the rule treats like no state. With `lr_decay` the rate depends on the step
    /// count, which only the host has: then it reads the flag.
    fn step_unless(&mut self, found_inf: &Tensor) -> Result<()> {
        let c = self.config;
        if c.lr_decay != 0.0 || !self.core.gateable(found_inf) {
            return step_unless_on_host(self, found_inf);
        }
        let neutral =
            |p: &Tensor| Ok(vec![Tensor::full_dtype(p.shape(), c.initial_accumulator_value, p.dtype(), p.device())?]);
        self.core.step_gated(found_inf, |h, p, g, state| adagrad_rule(c, h, p, g, state), neutral)
    }

    delegate_to_core!();
}
