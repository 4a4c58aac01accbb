//! Dynamic loss scaling for mixed-precision training: [`GradScaler`], after
//! `torch.cuda.amp.GradScaler`.
//!
//! f16 gradients underflow to zero below 6e-8. Multiplying the loss by a large factor before
//! `backward` keeps them representable; the factor is divided out of the f32 gradients before the
//! optimizer sees them. When the factor is too large some gradient overflows to inf (or NaN):
//! that step is skipped and the factor halved; after `growth_interval` clean steps in a row it is
//! doubled again.
//!
//! ```
//! use kiln_core::{DType, Device, Tensor};
//! use kiln_nn::{GradScaler, GradScalerConfig, Optimizer, Sgd, SgdConfig};
//!
//! let d = Device::cpu();
//! let w = Tensor::from_vec(vec![0.5f32, -0.5], &[2, 1], &d).unwrap().with_grad();
//! let x = Tensor::from_vec(vec![1.0f32, 2.0], &[1, 2], &d).unwrap();
//! let mut opt = Sgd::new(vec![w.clone()], SgdConfig::new(0.1)).unwrap();
//! // With the default 65536 this step would be skipped: d(loss)/dy = 1 scaled to 65536 does not
//! // fit in f16 (max 65504), so backward's f16 product sees an inf, and the scale halves.
//! let mut scaler = GradScaler::new(GradScalerConfig { init_scale: 1024.0, ..Default::default() }).unwrap();
//! opt.zero_grad();
//! let loss = kiln_core::autocast(DType::F16, || x.matmul(&w)?.sum_all()).unwrap();
//! scaler.scale(&loss).unwrap().backward().unwrap();
//! assert!(scaler.step(&mut opt).unwrap()); // unscales, checks for inf/NaN, steps
//! scaler.update().unwrap();
//! let w = w.to_vec::<f32>().unwrap();
//! assert!((w[0] - 0.4).abs() < 1e-6 && (w[1] + 0.7).abs() < 1e-6);
//! ```

use crate::optim::Optimizer;
use kiln_core::{DType, Device, Error, Result, Tensor};

const OP: &str = "GradScaler";

/// Hyper-parameters of [`GradScaler`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradScalerConfig {
    /// The first loss scale (65536).
    pub init_scale: f64,
    /// Factor applied after `growth_interval` clean steps in a row (2).
    pub growth_factor: f64,
    /// Factor applied after a step with an inf or NaN gradient (0.5).
    pub backoff_factor: f64,
    /// Clean steps before the scale grows (2000).
    pub growth_interval: u64,
    /// `false` makes every method a pass-through: `scale` returns the loss, `step` just steps.
    pub enabled: bool,
}

impl Default for GradScalerConfig {
    fn default() -> Self {
        GradScalerConfig { init_scale: 65536.0, growth_factor: 2.0, backoff_factor: 0.5, growth_interval: 2000, enabled: true }
    }
}

/// Where one optimizer is within the current iteration.
struct Seen {
    /// The optimizer's address: identifies it between `unscale_`, `step` and `update`.
    id: usize,
    found_inf: bool,
    stepped: bool,
}

/// Dynamic loss scaling: `scale(loss)` before `backward`, then `step(optimizer)` (which
/// unscales unless `unscale_` already did, checks every gradient for inf/NaN with one readback,
/// and skips the optimizer's step if it finds any), then `update()` once per iteration.
///
/// Works with every optimizer of this crate (anything whose [`Optimizer::params`] lists its
/// parameters) and with several optimizers per iteration, each unscaled and checked on its own;
/// `update` backs off if any of them overflowed.
pub struct GradScaler {
    config: GradScalerConfig,
    scale: f64,
    growth_tracker: u64,
    seen: Vec<Seen>,
}

fn id_of(opt: &dyn Optimizer) -> usize {
    opt as *const dyn Optimizer as *const () as usize
}

impl GradScaler {
    /// Checks the config: a positive finite scale, growth factor > 1, backoff in (0, 1), an
    /// interval of at least 1.
    pub fn new(config: GradScalerConfig) -> Result<Self> {
        let c = config;
        let bad = |msg: String| Err(Error::invalid(OP, msg));
        if !(c.init_scale.is_finite() && c.init_scale > 0.0) {
            return bad(format!("init_scale must be finite and > 0, got {}", c.init_scale));
        }
        if !(c.growth_factor.is_finite() && c.growth_factor > 1.0) {
            return bad(format!("growth_factor must be finite and > 1, got {}", c.growth_factor));
        }
        if !(c.backoff_factor > 0.0 && c.backoff_factor < 1.0) {
            return bad(format!("backoff_factor must be in (0, 1), got {}", c.backoff_factor));
        }
        if c.growth_interval == 0 {
            return bad("growth_interval must be at least 1".into());
        }
        Ok(GradScaler { config, scale: c.init_scale, growth_tracker: 0, seen: Vec::new() })
    }

    /// The current loss scale (1 when disabled).
    pub fn get_scale(&self) -> f64 {
        if self.config.enabled { self.scale } else { 1.0 }
    }

    /// Clean steps since the scale last changed.
    pub fn growth_tracker(&self) -> u64 {
        self.growth_tracker
    }

    pub fn is_enabled(&self) -> bool {
        self.config.enabled
    }

    pub fn config(&self) -> &GradScalerConfig {
        &self.config
    }

    /// `loss · scale`, to call `backward` on. Autodiff records the product, so the gradients
    /// come out multiplied by the scale.
    pub fn scale(&self, loss: &Tensor) -> Result<Tensor> {
        if !self.config.enabled {
            return Ok(loss.clone());
        }
        if !loss.dtype().is_float() {
            return Err(Error::invalid(OP, format!("cannot scale a {} loss", loss.dtype())));
        }
        loss.mul_scalar(self.scale)
    }

    fn seen_mut(&mut self, opt: &dyn Optimizer) -> Option<&mut Seen> {
        let id = id_of(opt);
        self.seen.iter_mut().find(|s| s.id == id)
    }

    /// Divides the scale out of `opt`'s gradients in place and notes whether any was inf or NaN
    /// (one readback). Call it before clipping gradients; at most once per optimizer between
    /// `update`s (`step` calls it when you have not).
    pub fn unscale_(&mut self, opt: &dyn Optimizer) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        if let Some(s) = self.seen_mut(opt) {
            let why = if s.stepped { "after step()" } else { "twice" };
            return Err(Error::invalid(OP, format!("unscale_ called {why} for one optimizer since the last update()")));
        }
        let params = opt.params();
        if params.is_empty() {
            return Err(Error::invalid(OP, "the optimizer lists no parameters (Optimizer::params); cannot unscale"));
        }
        let found_inf = unscale_grads(&params, 1.0 / self.scale)?;
        self.seen.push(Seen { id: id_of(opt), found_inf, stepped: false });
        Ok(())
    }

    /// Unscales (unless `unscale_` already did) and runs `opt.step()` unless a gradient was inf
    /// or NaN. Returns whether the optimizer stepped.
    pub fn step(&mut self, opt: &mut dyn Optimizer) -> Result<bool> {
        if !self.config.enabled {
            opt.step()?;
            return Ok(true);
        }
        if self.seen_mut(opt).is_none() {
            self.unscale_(opt)?;
        }
        let Some(s) = self.seen_mut(opt) else {
            return Err(Error::invalid(OP, "internal: optimizer not recorded after unscale_"));
        };
        if s.stepped {
            return Err(Error::invalid(OP, "step() called twice for one optimizer since the last update()"));
        }
        s.stepped = true;
        if s.found_inf {
            return Ok(false);
        }
        opt.step()?;
        Ok(true)
    }

    /// Adjusts the scale once per iteration, after every `step`: times `backoff_factor` if any
    /// optimizer saw an inf or NaN since the last update, times `growth_factor` after
    /// `growth_interval` clean iterations in a row.
    pub fn update(&mut self) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        if self.seen.is_empty() {
            return Err(Error::invalid(OP, "update() without a step() or unscale_() since the last update()"));
        }
        if self.seen.iter().any(|s| s.found_inf) {
            self.scale *= self.config.backoff_factor;
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker >= self.config.growth_interval {
                // The scale never grows to inf: an inf scale would turn every gradient into NaN.
                let grown = self.scale * self.config.growth_factor;
                if grown.is_finite() {
                    self.scale = grown;
                }
                self.growth_tracker = 0;
            }
        }
        self.seen.clear();
        Ok(())
    }

    /// `(scale, growth_tracker)` for checkpoints.
    pub fn state(&self) -> (f64, u64) {
        (self.scale, self.growth_tracker)
    }

    /// Restores what [`GradScaler::state`] returned.
    pub fn load_state(&mut self, scale: f64, growth_tracker: u64) -> Result<()> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::invalid(OP, format!("scale must be finite and > 0, got {scale}")));
        }
        self.scale = scale;
        self.growth_tracker = growth_tracker;
        self.seen.clear();
        Ok(())
    }
}

/// Multiplies every gradient of `params` by `inv_scale` in place and reports whether any result
/// was inf or NaN.
///
/// One fused kernel per gradient ([`Tensor::unscale_check_`]) scales it and ORs into a u32 flag
/// per device, which stays on the device until the end: one readback per device.
fn unscale_grads(params: &[Tensor], inv_scale: f64) -> Result<bool> {
    kiln_core::no_grad(|| {
        let mut flags: Vec<(Device, Tensor)> = Vec::new();
        // (gradient as found, gradient as unscaled): two parameters may share one gradient
        // tensor, which must be unscaled once.
        let mut done: Vec<(Tensor, Tensor)> = Vec::new();
        for p in params {
            let Some(g) = p.grad() else { continue };
            if let Some((_, u)) = done.iter().find(|(seen, _)| seen.same(&g)) {
                if !u.same(&g) {
                    p.set_grad(Some(u.clone()))?;
                }
                continue;
            }
            // The in-place op needs dense storage at offset 0: a strided or offset view (a
            // `cat` backward hands out narrowed slices) is replaced by an unscaled copy.
            let u = if g.is_contiguous() && g.storage_offset() == 0 { g.clone() } else { g.copy()? };
            let flag = match flags.iter().find(|(d, _)| d == u.device()) {
                Some((_, f)) => f.clone(),
                None => {
                    let f = Tensor::full_dtype(&[1], 0.0, DType::U32, u.device())?;
                    flags.push((u.device().clone(), f.clone()));
                    f
                }
            };
            u.unscale_check_(inv_scale, &flag)?;
            if !u.same(&g) {
                p.set_grad(Some(u.clone()))?;
            }
            done.push((g, u));
        }
        let mut found_inf = false;
        for (_, f) in &flags {
            found_inf |= f.item()? != 0.0;
        }
        Ok(found_inf)
    })
}
