//! RMSprop (`torch.optim.RMSprop`), optionally centered and with momentum.

use super::{
    Hyper, OptimCore, Optimizer, ParamGroup, ParamState, add_scaled, check_non_negative, delegate_to_core,
    step_unless_on_host, with_l2,
};
use kiln_core::{Result, Tensor};

/// Hyper-parameters of [`RmsProp`] (PyTorch's defaults via `Default`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropConfig {
    pub lr: f64,
    pub alpha: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub centered: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig { lr: 1e-2, alpha: 0.99, eps: 1e-8, weight_decay: 0.0, momentum: 0.0, centered: false }
    }
}

/// `torch.optim.RMSprop`: `s ← α·s + (1−α)·g²`; centered also tracks `ḡ ← α·ḡ + (1−α)·g` and
/// uses `s − ḡ²`; the denominator is `√(…) + ε`. With momentum `μ`: `b ← μ·b + g/denom`,
/// `p ← p − lr·b`; without: `p ← p − lr·g/denom`. Buffers start at zero.
pub struct RmsProp {
    core: OptimCore,
    config: RmsPropConfig,
}

impl RmsProp {
    /// One group of parameters.
    pub fn new(params: Vec<Tensor>, config: RmsPropConfig) -> Result<Self> {
        Self::with_groups(vec![ParamGroup::new(params)], config)
    }

    /// Several groups, each with optional `lr` / `weight_decay` overrides.
    pub fn with_groups(groups: Vec<ParamGroup>, config: RmsPropConfig) -> Result<Self> {
        const OP: &str = "RmsProp";
        check_non_negative(OP, "alpha", config.alpha)?;
        check_non_negative(OP, "eps", config.eps)?;
        check_non_negative(OP, "momentum", config.momentum)?;
        let mut fields = vec!["square_avg"];
        if config.momentum > 0.0 {
            fields.push("momentum_buffer");
        }
        if config.centered {
            fields.push("grad_avg");
        }
        Ok(RmsProp { core: OptimCore::new(OP, groups, config.lr, config.weight_decay, fields)?, config })
    }

    /// The configuration this optimizer was built with (its `lr` is the initial one).
    pub fn config(&self) -> &RmsPropConfig {
        &self.config
    }
}

/// One RMSprop update: the new parameter and buffers (`square_avg`, then `momentum_buffer`
/// and `grad_avg` when configured).
fn rmsprop_rule(
    c: RmsPropConfig,
    h: Hyper,
    p: &Tensor,
    g: &Tensor,
    state: Option<&ParamState>,
) -> Result<(Tensor, Vec<Tensor>)> {
    let g = with_l2(g, p, h.weight_decay)?;
    let mut prev = state.map(|s| s.bufs.iter());
    let mut next_prev = || prev.as_mut().and_then(|it| it.next());
    // Zero-initialised running averages: the first update is just the weighted term.
    let decay = |old: Option<&Tensor>, new: &Tensor| -> Result<Tensor> {
        match old {
            None => new * (1.0 - c.alpha),
            Some(o) => add_scaled(&(o * c.alpha)?, new, 1.0 - c.alpha),
        }
    };
    let square_avg = decay(next_prev(), &g.square()?)?;
    let old_momentum = if c.momentum > 0.0 { next_prev() } else { None };
    let mut bufs = vec![square_avg.clone()];
    let avg = if c.centered {
        let grad_avg = decay(next_prev(), &g)?;
        let var = (&square_avg - &grad_avg.square()?)?;
        let avg = var.sqrt()?;
        // Keep the field order: square_avg, momentum_buffer, grad_avg.
        bufs.push(grad_avg);
        avg
    } else {
        square_avg.sqrt()?
    }
    .add_scalar(c.eps)?;
    let scaled = (&g / &avg)?;
    if c.momentum > 0.0 {
        let buf = match old_momentum {
            None => scaled,
            Some(b) => (&(b * c.momentum)? + &scaled)?,
        };
        bufs.insert(1, buf.clone());
        Ok((add_scaled(p, &buf, -h.lr)?, bufs))
    } else {
        Ok((add_scaled(p, &scaled, -h.lr)?, bufs))
    }
}

impl Optimizer for RmsProp {
    fn step(&mut self) -> Result<()> {
        let c = self.config;
        self.core.step(|h, p, g, state| rmsprop_rule(c, h, p, g, state))
    }

    /// Gated on the device: a skipped first step keeps zero buffers, which the rule treats like
    /// none (its averages start at zero).
    fn step_unless(&mut self, found_inf: &Tensor) -> Result<()> {
        if !self.core.gateable(found_inf) {
            return step_unless_on_host(self, found_inf);
        }
        let c = self.config;
        let fields = 1 + usize::from(c.momentum > 0.0) + usize::from(c.centered);
        let neutral = |p: &Tensor| (0..fields).map(|_| Tensor::zeros_like(p)).collect();
        self.core.step_gated(found_inf, |h, p, g, state| rmsprop_rule(c, h, p, g, state), neutral)
    }

    delegate_to_core!();
}
