//! Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay
//! (`torch.optim.SGD`).

use super::{
    Hyper, OptimCore, Optimizer, ParamGroup, ParamState, add_scaled, check_non_negative, delegate_to_core,
    step_unless_on_host, with_l2,
};
use kiln_core::{Error, Result, Tensor};

/// Hyper-parameters of [`Sgd`]; PyTorch's defaults except `lr`, which has none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
}

impl SgdConfig {
    /// Plain SGD at `lr`: no momentum, dampening, Nesterov or weight decay.
    pub fn new(lr: f64) -> Self {
        SgdConfig { lr, momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0 }
    }
}

/// `torch.optim.SGD`. With momentum `μ` the buffer starts as the first gradient and then
/// follows `b ← μ·b + (1 − dampening)·g`; the step is `p ← p − lr·(g + μ·b)` with Nesterov,
/// else `p ← p − lr·b`. Weight decay adds `wd·p` to the gradient first.
pub struct Sgd {
    core: OptimCore,
    config: SgdConfig,
}

impl Sgd {
    /// One group of parameters.
    pub fn new(params: Vec<Tensor>, config: SgdConfig) -> Result<Self> {
        Self::with_groups(vec![ParamGroup::new(params)], config)
    }

    /// Several groups, each with optional `lr` / `weight_decay` overrides.
    pub fn with_groups(groups: Vec<ParamGroup>, config: SgdConfig) -> Result<Self> {
        const OP: &str = "Sgd";
        check_non_negative(OP, "momentum", config.momentum)?;
        if !config.dampening.is_finite() {
            return Err(Error::invalid(OP, format!("dampening must be finite, got {}", config.dampening)));
        }
        if config.nesterov && (config.momentum <= 0.0 || config.dampening != 0.0) {
            return Err(Error::invalid(OP, "Nesterov momentum requires a momentum > 0 and zero dampening"));
        }
        let fields = if config.momentum != 0.0 { vec!["momentum_buffer"] } else { vec![] };
        Ok(Sgd { core: OptimCore::new(OP, groups, config.lr, config.weight_decay, fields)?, config })
    }

    /// The configuration this optimizer was built with (its `lr` is the initial one).
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

/// One SGD update: the new parameter and momentum buffer (none without momentum).
fn sgd_rule(
    c: SgdConfig,
    h: Hyper,
    p: &Tensor,
    g: &Tensor,
    state: Option<&ParamState>,
) -> Result<(Tensor, Vec<Tensor>)> {
    let g = with_l2(g, p, h.weight_decay)?;
    if c.momentum == 0.0 {
        return Ok((add_scaled(p, &g, -h.lr)?, vec![]));
    }
    let buf = match state {
        // A copy: the raw gradient tensor can be rewritten later (clipping), and the
        // buffer must not follow it.
        None => g.copy()?,
        Some(s) => add_scaled(&(&s.bufs[0] * c.momentum)?, &g, 1.0 - c.dampening)?,
    };
    let direction = if c.nesterov { add_scaled(&g, &buf, c.momentum)? } else { buf.clone() };
    Ok((add_scaled(p, &direction, -h.lr)?, vec![buf]))
}

impl Optimizer for Sgd {
    fn step(&mut self) -> Result<()> {
        let c = self.config;
        self.core.step(|h, p, g, state| sgd_rule(c, h, p, g, state))
    }

    /// Gated on the device: a skipped first step keeps a zero momentum buffer, which the rule
    /// treats like none when dampening is 0 (`μ·0 + g = g`); with dampening it reads the flag.
    fn step_unless(&mut self, found_inf: &Tensor) -> Result<()> {
        let c = self.config;
        if c.dampening != 0.0 || !self.core.gateable(found_inf) {
            return step_unless_on_host(self, found_inf);
        }
        let neutral = |p: &Tensor| Ok(if c.momentum == 0.0 { vec![] } else { vec![Tensor::zeros_like(p)?] });
        self.core.step_gated(found_inf, |h, p, g, state| sgd_rule(c, h, p, g, state), neutral)
    }

    delegate_to_core!();
}
