//! Dynamic loss scaling for mixed-precision training: [`GradScaler`], after
//! `torch.cuda.amp.GradScaler`.
//!
//! f16 gradients underflow to zero below 6e-8. Multiplying the loss by a large factor before
//! `backward` keeps them representable; the factor is divided out of the f32 gradients before the
//! optimizer sees them. When the factor is too large some gradient overflows to inf (or NaN):
//! that step is skipped and the factor halved; after `growth_interval` clean steps in a row it is
//! doubled again.
//!
//! Nothing here waits for the GPU: the scale and the count of clean steps live on the device
//! (from the first `scale`/`unscale_`), the inf/NaN check ORs into a device flag, the optimizer
//! skips its update on the device when the flag is set ([`Optimizer::step_unless`]), and
//! `update` is a few device ops. Reading a value is what syncs: [`GradScaler::get_scale`],
//! [`GradScaler::state`], and [`StepOutcome::stepped`] (whether a step was taken).
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
//! let outcome = scaler.step(&mut opt).unwrap(); // unscales, checks for inf/NaN, steps
//! assert!(outcome.stepped().unwrap()); // a read: the only sync of this iteration
//! scaler.update().unwrap();
//! let w = w.to_vec::<f32>().unwrap();
//! assert!((w[0] - 0.4).abs() < 1e-6 && (w[1] + 0.7).abs() < 1e-6);
//! ```

use crate::optim::Optimizer;
use kiln_core::optim_kernels::OptimKernels;
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
        GradScalerConfig {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            enabled: true,
        }
    }
}

/// Where one optimizer is within the current iteration.
struct Seen {
    /// The optimizer's address: identifies it between `unscale_`, `step` and `update`.
    id: usize,
    /// Its inf/NaN flags, one u32 per device its gradients live on.
    flags: Vec<Tensor>,
    stepped: bool,
}

/// The scale and the count of clean steps: host numbers until the scaler first meets a
/// tensor, then 0-d tensors on that tensor's device (f32 scale, as PyTorch's; u32 count).
enum ScaleState {
    Host { scale: f64, growth_tracker: u64 },
    Device { scale: Tensor, growth_tracker: Tensor },
}

/// What [`GradScaler::step`] did, kept on the device until asked.
pub struct StepOutcome {
    /// The flag the optimizer was gated on (`None`: it stepped unconditionally, or the host
    /// already knows, see `known`).
    found_inf: Option<Tensor>,
    known: bool,
}

impl StepOutcome {
    /// Whether the optimizer stepped (no gradient was inf or NaN). Reads the device's flag
    /// back: one sync, unless the answer was already on the host (a disabled scaler, or
    /// parameters on several devices).
    pub fn stepped(&self) -> Result<bool> {
        match &self.found_inf {
            Some(f) => Ok(f.item()? == 0.0),
            None => Ok(self.known),
        }
    }
}

/// Dynamic loss scaling: `scale(loss)` before `backward`, then `step(optimizer)` (which
/// unscales unless `unscale_` already did, checks every gradient for inf/NaN into a device
/// flag, and has the optimizer skip its update on the device if any was), then `update()` once
/// per iteration. None of these waits for the GPU.
///
/// Works with every optimizer of this crate (anything whose [`Optimizer::params`] lists its
/// parameters) and with several optimizers per iteration, each unscaled and checked on its own;
/// `update` backs off if any of them overflowed. Optimizers from elsewhere are stepped through
/// [`Optimizer::step_unless`], whose default reads the flag (one sync).
///
/// Parameters on several devices work too, through the host: the flags are read back there
/// (one sync per device and step), and the scale is copied to each device.
pub struct GradScaler {
    config: GradScalerConfig,
    state: ScaleState,
    seen: Vec<Seen>,
}

fn id_of(opt: &dyn Optimizer) -> usize {
    opt as *const dyn Optimizer as *const () as usize
}

impl GradScaler {
    /// Checks the config: a positive scale finite in f32 (the device keeps it in f32), growth
    /// factor > 1, backoff in (0, 1), an interval of at least 1.
    pub fn new(config: GradScalerConfig) -> Result<Self> {
        let c = config;
        let bad = |msg: String| Err(Error::invalid(OP, msg));
        check_scale(c.init_scale).map_err(|m| Error::invalid(OP, format!("init_scale {m}")))?;
        if !(c.growth_factor.is_finite() && c.growth_factor > 1.0) {
            return bad(format!("growth_factor must be finite and > 1, got {}", c.growth_factor));
        }
        if !(c.backoff_factor > 0.0 && c.backoff_factor < 1.0) {
            return bad(format!("backoff_factor must be in (0, 1), got {}", c.backoff_factor));
        }
        if c.growth_interval == 0 {
            return bad("growth_interval must be at least 1".into());
        }
        Ok(GradScaler { config, state: ScaleState::Host { scale: c.init_scale, growth_tracker: 0 }, seen: Vec::new() })
    }

    /// The current loss scale (1 when disabled). Reads it back from the device once the
    /// scaler is in use: one sync.
    pub fn get_scale(&self) -> Result<f64> {
        if !self.config.enabled {
            return Ok(1.0);
        }
        match &self.state {
            ScaleState::Host { scale, .. } => Ok(*scale),
            ScaleState::Device { scale, .. } => scale.item(),
        }
    }

    /// Clean steps since the scale last changed (a read, like [`get_scale`](Self::get_scale)).
    pub fn growth_tracker(&self) -> Result<u64> {
        match &self.state {
            ScaleState::Host { growth_tracker, .. } => Ok(*growth_tracker),
            ScaleState::Device { growth_tracker, .. } => Ok(growth_tracker.item()? as u64),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.config.enabled
    }

    pub fn config(&self) -> &GradScalerConfig {
        &self.config
    }

    /// The scale as a 0-d f32 tensor on `device`, moving the state there on first use. A
    /// device other than the one the state lives on gets a copy (through the host).
    fn scale_on(&mut self, device: &Device) -> Result<Tensor> {
        if let ScaleState::Host { scale, growth_tracker } = self.state {
            // Uploaded once (an upload is no dispatch and no wait); no host value travels after.
            let scale = Tensor::from_vec(vec![scale as f32], &[], device)?;
            let growth_tracker = Tensor::from_vec(vec![growth_tracker.min(u32::MAX as u64) as u32], &[], device)?;
            self.state = ScaleState::Device { scale, growth_tracker };
        }
        match &self.state {
            ScaleState::Device { scale, .. } => scale.to(device),
            ScaleState::Host { .. } => Err(Error::invalid(OP, "internal: scale not on a device")),
        }
    }

    /// `loss · scale`, to call `backward` on. Autodiff records the product, so the gradients
    /// come out multiplied by the scale.
    pub fn scale(&mut self, loss: &Tensor) -> Result<Tensor> {
        if !self.config.enabled {
            return Ok(loss.clone());
        }
        if !loss.dtype().is_float() {
            return Err(Error::invalid(OP, format!("cannot scale a {} loss", loss.dtype())));
        }
        let scale = kiln_core::no_grad(|| self.scale_on(loss.device())?.to_dtype(loss.dtype()))?;
        loss * &scale
    }

    fn seen_mut(&mut self, opt: &dyn Optimizer) -> Option<&mut Seen> {
        let id = id_of(opt);
        self.seen.iter_mut().find(|s| s.id == id)
    }

    /// Divides the scale out of `opt`'s gradients in place and notes, on the device, whether
    /// any was inf or NaN. Call it before clipping gradients; at most once per optimizer
    /// between `update`s (`step` calls it when you have not).
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
        let flags = self.unscale_grads(&params)?;
        self.seen.push(Seen { id: id_of(opt), flags, stepped: false });
        Ok(())
    }

    /// Unscales (unless `unscale_` already did) and steps `opt` unless a gradient was inf or
    /// NaN, decided on the device ([`Optimizer::step_unless`]). The outcome says whether it
    /// stepped when asked ([`StepOutcome::stepped`], a read).
    pub fn step(&mut self, opt: &mut dyn Optimizer) -> Result<StepOutcome> {
        if !self.config.enabled {
            opt.step()?;
            return Ok(StepOutcome { found_inf: None, known: true });
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
        match &s.flags[..] {
            [] => {
                // No gradients at all: a plain step (it skips parameters without one).
                opt.step()?;
                Ok(StepOutcome { found_inf: None, known: true })
            }
            [flag] => {
                let flag = flag.clone();
                opt.step_unless(&flag)?;
                Ok(StepOutcome { found_inf: Some(flag), known: true })
            }
            several => {
                let mut found_inf = false;
                for f in several {
                    found_inf |= f.item()? != 0.0;
                }
                if !found_inf {
                    opt.step()?;
                }
                Ok(StepOutcome { found_inf: None, known: !found_inf })
            }
        }
    }

    /// Adjusts the scale once per iteration, after every `step`, with device ops: times
    /// `backoff_factor` if any optimizer saw an inf or NaN since the last update, times
    /// `growth_factor` after `growth_interval` clean iterations in a row (unless that would
    /// overflow f32, as in PyTorch).
    pub fn update(&mut self) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        if self.seen.is_empty() {
            return Err(Error::invalid(OP, "update() without a step() or unscale_() since the last update()"));
        }
        let mut flags: Vec<Tensor> = self.seen.drain(..).flat_map(|s| s.flags).collect();
        let home = match (&self.state, flags.first()) {
            (ScaleState::Device { scale, .. }, _) => scale.device().clone(),
            (ScaleState::Host { .. }, Some(f)) => f.device().clone(),
            // No gradient was checked yet and nothing is on a device: count on the host.
            (ScaleState::Host { scale, growth_tracker }, None) => {
                let (mut scale, mut tracker) = (*scale, *growth_tracker + 1);
                if tracker >= self.config.growth_interval {
                    let grown = scale * self.config.growth_factor;
                    if (grown as f32).is_finite() {
                        scale = grown;
                    }
                    tracker = 0;
                }
                self.state = ScaleState::Host { scale, growth_tracker: tracker };
                return Ok(());
            }
        };
        if flags.is_empty() {
            // No optimizer had a gradient: nothing overflowed.
            flags.push(Tensor::full_dtype(&[1], 0.0, DType::U32, &home)?);
        }
        let c = self.config;
        self.scale_on(&home)?;
        let ScaleState::Device { scale, growth_tracker } = &self.state else {
            return Err(Error::invalid(OP, "internal: scale not on a device"));
        };
        let (scale, tracker) = kiln_core::no_grad(|| -> Result<(Tensor, Tensor)> {
            let mut found: Option<Tensor> = None;
            for f in &flags {
                let f = f.to(&home)?.reshape(&[])?;
                found = Some(match found {
                    Some(a) => (&a + &f)?,
                    None => f,
                });
            }
            let found = found.ok_or_else(|| Error::invalid(OP, "internal: no flags"))?.ne_scalar(0.0)?;
            let zero = Tensor::zeros_like(growth_tracker)?;
            let counted = Tensor::where_(&found, &zero, &growth_tracker.add_scalar(1.0)?)?;
            let interval = c.growth_interval.min(u32::MAX as u64) as f64;
            let grow = counted.ge_scalar(interval)?;
            let grown = scale.mul_scalar(c.growth_factor)?;
            // The scale never grows to inf: an inf scale would turn every gradient into NaN.
            let grow_ok = grow.logical_and(&grown.isinf()?.logical_not()?)?;
            let clean = Tensor::where_(&grow_ok, &grown, scale)?;
            let scale = Tensor::where_(&found, &scale.mul_scalar(c.backoff_factor)?, &clean)?;
            let tracker = Tensor::where_(&grow, &zero, &counted)?;
            Ok((scale, tracker))
        })?;
        self.state = ScaleState::Device { scale, growth_tracker: tracker };
        Ok(())
    }

    /// `(scale, growth_tracker)` for checkpoints; reads them back from the device once the
    /// scaler is in use (a sync).
    pub fn state(&self) -> Result<(f64, u64)> {
        match &self.state {
            ScaleState::Host { scale, growth_tracker } => Ok((*scale, *growth_tracker)),
            ScaleState::Device { scale, growth_tracker } => Ok((scale.item()?, growth_tracker.item()? as u64)),
        }
    }

    /// Restores what [`GradScaler::state`] returned; the scale moves to the device again on
    /// the next use.
    pub fn load_state(&mut self, scale: f64, growth_tracker: u64) -> Result<()> {
        check_scale(scale).map_err(|m| Error::invalid(OP, format!("scale {m}")))?;
        self.state = ScaleState::Host { scale, growth_tracker };
        self.seen.clear();
        Ok(())
    }

    /// Multiplies every gradient of `params` by `1 / scale` in place; returns the inf/NaN
    /// flags, one per device.
    ///
    /// One fused kernel per gradient ([`OptimKernels::unscale_check_by_`]) reads the scale on the
    /// device, scales the gradient, and ORs into the u32 flag of its device.
    fn unscale_grads(&mut self, params: &[Tensor]) -> Result<Vec<Tensor>> {
        let mut flags: Vec<(Device, Tensor, Tensor)> = Vec::new();
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
            let u =
                if g.is_contiguous() && g.storage_offset() == 0 { g.clone() } else { kiln_core::no_grad(|| g.copy())? };
            let (scale, flag) = match flags.iter().find(|(d, _, _)| d == u.device()) {
                Some((_, s, f)) => (s.clone(), f.clone()),
                None => {
                    let s = self.scale_on(u.device())?;
                    let f = Tensor::full_dtype(&[1], 0.0, DType::U32, u.device())?;
                    flags.push((u.device().clone(), s.clone(), f.clone()));
                    (s, f)
                }
            };
            u.unscale_check_by_(&scale, &flag)?;
            if !u.same(&g) {
                p.set_grad(Some(u.clone()))?;
            }
            done.push((g, u));
        }
        Ok(flags.into_iter().map(|(_, _, f)| f).collect())
    }
}

/// A loss scale the device can hold: finite and positive as an f32.
fn check_scale(scale: f64) -> std::result::Result<(), String> {
    let f = scale as f32;
    if scale.is_finite() && scale > 0.0 && f.is_finite() && f > 0.0 {
        Ok(())
    } else {
        Err(format!("must be finite and > 0 in f32, got {scale}"))
    }
}
