//! Learning-rate schedules with PyTorch's closed forms.
//!
//! A schedule is a pure function `lr_at(step)` plus a step counter. The usage mirrors PyTorch,
//! whose scheduler constructors set the initial rate on the optimizer — here that is an explicit
//! [`LrScheduler::apply`]:
//!
//! ```
//! use kiln_core::{Device, Tensor};
//! use kiln_nn::optim::{Optimizer, Sgd, SgdConfig};
//! use kiln_nn::sched::{LrScheduler, StepLr};
//!
//! let w = Tensor::zeros(&[2], &Device::cpu()).unwrap().with_grad();
//! let mut opt = Sgd::new(vec![w], SgdConfig::new(0.1)).unwrap();
//! let mut sched = StepLr::new(0.1, 2, 0.5).unwrap();
//! sched.apply(&mut opt); // what PyTorch's constructor does
//! for _ in 0..4 {
//!     // forward, backward, opt.step() ...
//!     sched.step(&mut opt);
//! }
//! assert!((opt.lr() - 0.025).abs() < 1e-15);
//! ```
//!
//! To resume, restore the counter with [`LrScheduler::set_last_step`] (usually from
//! [`Optimizer::step_count`]) and call `apply`.

use crate::optim::Optimizer;
use kiln_core::{Error, Result};
use std::f64::consts::PI;

/// A learning-rate schedule.
pub trait LrScheduler {
    /// The learning rate after `step` scheduler steps (step 0 is the rate before training).
    fn lr_at(&self, step: u64) -> f64;

    /// How many times [`LrScheduler::step`] has been called (PyTorch's `last_epoch`).
    fn last_step(&self) -> u64;

    /// Moves the counter, e.g. when resuming from a checkpoint.
    fn set_last_step(&mut self, step: u64);

    /// Advances the schedule by one and sets the optimizer's learning rate to the new value.
    /// Call it after `opt.step()`, like PyTorch's `scheduler.step()`.
    fn step(&mut self, opt: &mut dyn Optimizer) {
        let next = self.last_step().saturating_add(1);
        self.set_last_step(next);
        opt.set_lr(self.lr_at(next));
    }

    /// Sets the optimizer's learning rate to the current value without advancing: once before
    /// training (PyTorch's constructor does this) and after [`LrScheduler::set_last_step`].
    fn apply(&self, opt: &mut dyn Optimizer) {
        opt.set_lr(self.lr_at(self.last_step()));
    }

    /// The current learning rate (PyTorch's `get_last_lr()[0]`).
    fn current_lr(&self) -> f64 {
        self.lr_at(self.last_step())
    }
}

fn check(op: &'static str, what: &str, value: f64) -> Result<()> {
    if !value.is_finite() || value < 0.0 {
        return Err(Error::invalid(op, format!("{what} must be finite and >= 0, got {value}")));
    }
    Ok(())
}

macro_rules! counter {
    () => {
        fn last_step(&self) -> u64 {
            self.last_step
        }
        fn set_last_step(&mut self, step: u64) {
            self.last_step = step;
        }
    };
}

/// `torch.optim.lr_scheduler.StepLR`: `base_lr · γ^⌊t / step_size⌋`.
#[derive(Clone, Debug)]
pub struct StepLr {
    base_lr: f64,
    step_size: u64,
    gamma: f64,
    last_step: u64,
}

impl StepLr {
    /// Decays by `gamma` every `step_size` steps (`step_size` ≥ 1).
    pub fn new(base_lr: f64, step_size: u64, gamma: f64) -> Result<Self> {
        check("StepLr", "base_lr", base_lr)?;
        check("StepLr", "gamma", gamma)?;
        if step_size == 0 {
            return Err(Error::invalid("StepLr", "step_size must be at least 1"));
        }
        Ok(StepLr { base_lr, step_size, gamma, last_step: 0 })
    }
}

impl LrScheduler for StepLr {
    fn lr_at(&self, step: u64) -> f64 {
        self.base_lr * pow(self.gamma, step / self.step_size)
    }
    counter!();
}

/// `gamma^n` for a count, exact for the small counts schedules see.
fn pow(gamma: f64, n: u64) -> f64 {
    gamma.powi(n.min(i32::MAX as u64) as i32)
}

/// `torch.optim.lr_scheduler.MultiStepLR`: `base_lr · γ^(number of milestones ≤ t)`.
#[derive(Clone, Debug)]
pub struct MultiStepLr {
    base_lr: f64,
    milestones: Vec<u64>,
    gamma: f64,
    last_step: u64,
}

impl MultiStepLr {
    /// Decays by `gamma` at each milestone (any order; repeated milestones decay repeatedly,
    /// as PyTorch's counter does).
    pub fn new(base_lr: f64, milestones: impl Into<Vec<u64>>, gamma: f64) -> Result<Self> {
        check("MultiStepLr", "base_lr", base_lr)?;
        check("MultiStepLr", "gamma", gamma)?;
        let mut milestones = milestones.into();
        milestones.sort_unstable();
        Ok(MultiStepLr { base_lr, milestones, gamma, last_step: 0 })
    }
}

impl LrScheduler for MultiStepLr {
    fn lr_at(&self, step: u64) -> f64 {
        let passed = self.milestones.partition_point(|&m| m <= step);
        self.base_lr * pow(self.gamma, passed as u64)
    }
    counter!();
}

/// `torch.optim.lr_scheduler.ExponentialLR`: `base_lr · γ^t`.
#[derive(Clone, Debug)]
pub struct ExponentialLr {
    base_lr: f64,
    gamma: f64,
    last_step: u64,
}

impl ExponentialLr {
    /// Decays by `gamma` every step.
    pub fn new(base_lr: f64, gamma: f64) -> Result<Self> {
        check("ExponentialLr", "base_lr", base_lr)?;
        check("ExponentialLr", "gamma", gamma)?;
        Ok(ExponentialLr { base_lr, gamma, last_step: 0 })
    }
}

impl LrScheduler for ExponentialLr {
    fn lr_at(&self, step: u64) -> f64 {
        self.base_lr * pow(self.gamma, step)
    }
    counter!();
}

/// `torch.optim.lr_scheduler.CosineAnnealingLR` in its closed form:
/// `η_min + (base_lr − η_min)(1 + cos(π t / T_max)) / 2`. Like PyTorch's, it keeps following
/// the cosine past `T_max` (back up towards `base_lr`).
#[derive(Clone, Debug)]
pub struct CosineAnnealingLr {
    base_lr: f64,
    t_max: u64,
    eta_min: f64,
    last_step: u64,
}

impl CosineAnnealingLr {
    /// Anneals from `base_lr` to `eta_min` over `t_max` steps (`t_max` ≥ 1).
    pub fn new(base_lr: f64, t_max: u64, eta_min: f64) -> Result<Self> {
        check("CosineAnnealingLr", "base_lr", base_lr)?;
        check("CosineAnnealingLr", "eta_min", eta_min)?;
        if t_max == 0 {
            return Err(Error::invalid("CosineAnnealingLr", "t_max must be at least 1"));
        }
        Ok(CosineAnnealingLr { base_lr, t_max, eta_min, last_step: 0 })
    }
}

/// `end + (start − end)(1 + cos(π·pct)) / 2`: `start` at 0, `end` at 1.
fn cosine(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) * (1.0 + (PI * pct).cos()) / 2.0
}

impl LrScheduler for CosineAnnealingLr {
    fn lr_at(&self, step: u64) -> f64 {
        cosine(self.base_lr, self.eta_min, step as f64 / self.t_max as f64)
    }
    counter!();
}

/// Linear warm-up from 0 to `base_lr` over `warmup_steps`, then cosine decay to `min_lr` at
/// `total_steps`, held there afterwards (the usual transformer schedule; not in PyTorch core).
#[derive(Clone, Debug)]
pub struct WarmupCosine {
    base_lr: f64,
    warmup_steps: u64,
    total_steps: u64,
    min_lr: f64,
    last_step: u64,
}

impl WarmupCosine {
    /// `warmup_steps` ≤ `total_steps`; `lr_at(0)` is 0 unless `warmup_steps` is 0.
    pub fn new(base_lr: f64, warmup_steps: u64, total_steps: u64, min_lr: f64) -> Result<Self> {
        check("WarmupCosine", "base_lr", base_lr)?;
        check("WarmupCosine", "min_lr", min_lr)?;
        if warmup_steps > total_steps {
            return Err(Error::invalid(
                "WarmupCosine",
                format!("warmup_steps ({warmup_steps}) exceeds total_steps ({total_steps})"),
            ));
        }
        Ok(WarmupCosine { base_lr, warmup_steps, total_steps, min_lr, last_step: 0 })
    }
}

impl LrScheduler for WarmupCosine {
    fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * step as f64 / self.warmup_steps as f64;
        }
        if step >= self.total_steps {
            return self.min_lr;
        }
        let span = (self.total_steps - self.warmup_steps) as f64;
        cosine(self.base_lr, self.min_lr, (step - self.warmup_steps) as f64 / span)
    }
    counter!();
}

/// `torch.optim.lr_scheduler.OneCycleLR` with its defaults' shape (two phases, cosine
/// annealing): from `max_lr / div_factor` up to `max_lr` over the first
/// `pct_start · total_steps − 1` steps, then down to `max_lr / (div_factor · final_div_factor)`
/// at step `total_steps − 1`. Momentum is not cycled. Past `total_steps` (where PyTorch raises)
/// the rate stays at the minimum.
#[derive(Clone, Debug)]
pub struct OneCycleLr {
    max_lr: f64,
    initial_lr: f64,
    min_lr: f64,
    warm_end: f64,
    total_steps: u64,
    last_step: u64,
}

impl OneCycleLr {
    /// PyTorch's defaults are `pct_start = 0.3`, `div_factor = 25`, `final_div_factor = 1e4`
    /// ([`OneCycleLr::with_defaults`]).
    pub fn new(max_lr: f64, total_steps: u64, pct_start: f64, div_factor: f64, final_div_factor: f64) -> Result<Self> {
        const OP: &str = "OneCycleLr";
        check(OP, "max_lr", max_lr)?;
        if total_steps == 0 {
            return Err(Error::invalid(OP, "total_steps must be at least 1"));
        }
        if !(0.0..=1.0).contains(&pct_start) {
            return Err(Error::invalid(OP, format!("pct_start must be in [0, 1], got {pct_start}")));
        }
        for (what, v) in [("div_factor", div_factor), ("final_div_factor", final_div_factor)] {
            if !v.is_finite() || v <= 0.0 {
                return Err(Error::invalid(OP, format!("{what} must be finite and > 0, got {v}")));
            }
        }
        let initial_lr = max_lr / div_factor;
        Ok(OneCycleLr {
            max_lr,
            initial_lr,
            min_lr: initial_lr / final_div_factor,
            warm_end: pct_start * total_steps as f64 - 1.0,
            total_steps,
            last_step: 0,
        })
    }

    /// PyTorch's defaults: `pct_start = 0.3`, `div_factor = 25`, `final_div_factor = 1e4`.
    pub fn with_defaults(max_lr: f64, total_steps: u64) -> Result<Self> {
        Self::new(max_lr, total_steps, 0.3, 25.0, 1e4)
    }
}

impl LrScheduler for OneCycleLr {
    fn lr_at(&self, step: u64) -> f64 {
        if step > self.total_steps {
            return self.min_lr;
        }
        let t = step as f64;
        let last = self.total_steps as f64 - 1.0;
        // A phase of zero length would divide by zero (PyTorch returns NaN there); jump to its end.
        let pct = |start: f64, end: f64| if end > start { (t - start) / (end - start) } else { 1.0 };
        if t <= self.warm_end {
            cosine(self.initial_lr, self.max_lr, pct(0.0, self.warm_end))
        } else {
            cosine(self.max_lr, self.min_lr, pct(self.warm_end, last))
        }
    }
    counter!();
}
