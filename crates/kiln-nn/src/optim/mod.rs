//! Optimizers with PyTorch's update rules: [`Sgd`], [`Adam`], [`AdamW`], [`RmsProp`],
//! [`Adagrad`].
//!
//! Every optimizer owns its parameters' handles (cheap clones of the model's leaf tensors),
//! reads their gradients after `backward`, and writes new values with [`Tensor::set_data`]
//! inside [`kiln_core::no_grad`]. Updates are ordinary tensor ops on the parameter's own
//! device, so a GPU step records kernels and never waits for the host.
//!
//! ```
//! use kiln_core::{Device, Tensor};
//! use kiln_nn::optim::{Optimizer, Sgd, SgdConfig};
//!
//! let w = Tensor::from_vec(vec![1.0f32, -2.0], &[2], &Device::cpu()).unwrap().with_grad();
//! let mut opt = Sgd::new(vec![w.clone()], SgdConfig::new(0.1)).unwrap();
//! let loss = w.square().unwrap().sum_all().unwrap();
//! loss.backward().unwrap();
//! opt.step().unwrap();
//! opt.zero_grad();
//! assert_eq!(w.to_vec::<f32>().unwrap(), vec![0.8, -1.6]);
//! ```

mod adagrad;
mod adam;
mod rmsprop;
mod sgd;

pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig, AdamW, AdamWConfig};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use sgd::{Sgd, SgdConfig};

use kiln_core::{DType, Device, Error, Result, Tensor};

/// What every optimizer does. Object safe: schedulers and checkpoints take `&mut dyn Optimizer`.
pub trait Optimizer {
    /// Applies one update to every parameter that has a gradient (parameters without one are
    /// skipped, as in PyTorch). Gradients are checked against their parameters (shape, dtype,
    /// device) before anything changes; only a backend failure partway through (a lost device)
    /// can leave some parameters updated and others not.
    fn step(&mut self) -> Result<()>;

    /// Clears the gradients of every parameter this optimizer updates.
    fn zero_grad(&self);

    /// The learning rate of the default group (the one the config set).
    fn lr(&self) -> f64;

    /// Sets the learning rate. Groups that override it are scaled by the same factor, so a
    /// schedule keeps their ratio to the default (PyTorch schedulers scale each group's
    /// initial lr the same way). When the configured lr was 0 every group gets `lr`.
    fn set_lr(&mut self, lr: f64);

    /// Per-parameter buffers for checkpoints, named `"<index>.<buffer>"` where `index` counts
    /// parameters across groups in order: `"0.exp_avg"`, `"0.exp_avg_sq"`, `"0.step"` (a one
    /// element f64 tensor on the CPU). Parameters that were never updated have no entries.
    fn state(&self) -> Vec<(String, Tensor)>;

    /// Replaces the whole state with `state` (as returned by [`Optimizer::state`], on any
    /// device). Names, shapes, dtypes and completeness are all checked first; on error the
    /// optimizer is unchanged.
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()>;

    /// How many times [`Optimizer::step`] has completed, steps that
    /// [`step_unless`](Optimizer::step_unless) skipped not included. After a gated step only
    /// the device knows whether it was skipped: asking then reads a counter back (one sync).
    fn step_count(&self) -> u64;

    /// Restores the step counter (checkpoints store it in the file's metadata).
    fn set_step_count(&mut self, steps: u64);

    /// Handles of every parameter this optimizer updates, in order across groups (what
    /// `GradScaler` unscales and checks). An optimizer written outside kiln-nn that does not
    /// override it returns none, and `GradScaler` reports that as an error.
    fn params(&self) -> Vec<Tensor> {
        Vec::new()
    }

    /// [`step`](Optimizer::step) unless `found_inf`, a u32 tensor of one element (what
    /// `GradScaler` gathers its inf/NaN check into), is not 0. A skipped step changes nothing
    /// and does not count: neither in [`step_count`](Optimizer::step_count) nor in the
    /// per-parameter step numbers that Adam's bias correction uses (PyTorch's GradScaler gets
    /// the same by not calling `step()`).
    ///
    /// The optimizers of this crate decide on the device, so the host does not wait for the
    /// GPU: Adam and AdamW inside their fused kernel, the others by selecting old or new values
    /// in their elementwise chains. They read the flag back instead (one sync) when the
    /// parameters are not all on the flag's device, and for the two rules whose first update
    /// cannot be expressed that way: `Sgd` with dampening and `Adagrad` with `lr_decay`.
    /// The default, for optimizers written elsewhere, reads the flag and calls `step` when it
    /// is 0.
    fn step_unless(&mut self, found_inf: &Tensor) -> Result<()> {
        step_unless_on_host(self, found_inf)
    }
}

/// What [`Optimizer::step_unless`] does by default: read the flag (one sync), step if it is 0.
pub(crate) fn step_unless_on_host<O: Optimizer + ?Sized>(opt: &mut O, found_inf: &Tensor) -> Result<()> {
    if found_inf.numel() != 1 || found_inf.dtype() != DType::U32 {
        return Err(Error::invalid(
            "Optimizer::step_unless",
            format!("found_inf must be one u32, got {} {:?}", found_inf.dtype(), found_inf.shape()),
        ));
    }
    if found_inf.item()? == 0.0 { opt.step() } else { Ok(()) }
}

/// Parameters that share hyper-parameter overrides (PyTorch's `param_groups`). `None` uses the
/// optimizer's config value.
#[derive(Clone, Debug, Default)]
pub struct ParamGroup {
    pub params: Vec<Tensor>,
    pub lr: Option<f64>,
    pub weight_decay: Option<f64>,
}

impl ParamGroup {
    /// A group with no overrides.
    pub fn new(params: Vec<Tensor>) -> Self {
        ParamGroup { params, lr: None, weight_decay: None }
    }

    /// Overrides the learning rate for this group.
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.lr = Some(lr);
        self
    }

    /// Overrides the weight decay for this group.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = Some(weight_decay);
        self
    }
}

/// The hyper-parameters one parameter is updated with, plus its step number (1 on its first
/// update, like PyTorch's per-parameter `state["step"]`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hyper {
    pub lr: f64,
    pub weight_decay: f64,
    pub step: u64,
}

/// One parameter's buffers, in the order of the optimizer's field names, and its step count.
///
/// After gated steps ([`Optimizer::step_unless`]) only the device knows how many updates
/// happened, so `step` counts *attempts*; the true count is `device_steps` (Adam, whose fused
/// kernel counts on the device) or `step` minus the skips since `skip_base` (the others).
pub(crate) struct ParamState {
    pub step: u64,
    pub bufs: Vec<Tensor>,
    /// Adam's update count on the device: two u32 slots, see [`OptimKernels::adam_step_gated_`](kiln_core::optim_kernels::OptimKernels::adam_step_gated_).
    pub device_steps: Option<Tensor>,
    /// The optimizer's skip counter (`OptimCore::skipped`) as it was when this count started,
    /// plus the skips of gated steps this parameter sat out (no gradient): this parameter's
    /// skipped attempts are the counter minus this. `None`: 0.
    pub skip_base: Option<Tensor>,
}

impl ParamState {
    pub(crate) fn new(step: u64, bufs: Vec<Tensor>) -> ParamState {
        ParamState { step, bufs, device_steps: None, skip_base: None }
    }
}

/// How [`OptimCore::step_in_place`] calls an update rule: the gate of a gated step (a 0-d bool
/// tensor, true to skip, and the u32 flag it came from), `None` for a plain one.
#[derive(Clone, Copy)]
pub(crate) struct Gate<'a> {
    pub skip: &'a Tensor,
    pub flag: &'a Tensor,
}

struct Group {
    params: Vec<Tensor>,
    lr: f64,
    initial_lr: f64,
    weight_decay: f64,
}

/// What all optimizers share: groups, the learning rate, per-parameter state and the step
/// counter. Each optimizer supplies only its update rule.
pub(crate) struct OptimCore {
    name: &'static str,
    groups: Vec<Group>,
    base_lr: f64,
    lr: f64,
    fields: Vec<&'static str>,
    states: Vec<Option<ParamState>>,
    /// Steps attempted; `skipped` of them were skipped on the device.
    steps: u64,
    /// How many gated steps the device skipped (u32 `[1]` on the flags' device); `None`
    /// before the first gated step.
    skipped: Option<Tensor>,
}

/// Rejects NaN, infinite and negative hyper-parameters with an error naming the optimizer.
pub(crate) fn check_non_negative(op: &'static str, what: &str, value: f64) -> Result<()> {
    if !value.is_finite() || value < 0.0 {
        return Err(Error::invalid(op, format!("{what} must be finite and >= 0, got {value}")));
    }
    Ok(())
}

impl OptimCore {
    /// Groups with their overrides resolved. `fields` names the buffers each parameter gets on
    /// its first update.
    pub(crate) fn new(
        name: &'static str,
        groups: Vec<ParamGroup>,
        lr: f64,
        weight_decay: f64,
        fields: Vec<&'static str>,
    ) -> Result<OptimCore> {
        check_non_negative(name, "lr", lr)?;
        check_non_negative(name, "weight_decay", weight_decay)?;
        let mut resolved = Vec::with_capacity(groups.len());
        let mut count = 0;
        for (gi, g) in groups.into_iter().enumerate() {
            let glr = g.lr.unwrap_or(lr);
            let gwd = g.weight_decay.unwrap_or(weight_decay);
            check_non_negative(name, &format!("group {gi} lr"), glr)?;
            check_non_negative(name, &format!("group {gi} weight_decay"), gwd)?;
            for (pi, p) in g.params.iter().enumerate() {
                if !p.dtype().is_float() {
                    return Err(Error::invalid(
                        name,
                        format!(
                            "parameter {pi} of group {gi} has dtype {}; only float tensors can be optimized",
                            p.dtype()
                        ),
                    ));
                }
            }
            count += g.params.len();
            resolved.push(Group { params: g.params, lr: glr, initial_lr: glr, weight_decay: gwd });
        }
        if count == 0 {
            return Err(Error::invalid(name, "got an empty parameter list"));
        }
        Ok(OptimCore {
            name,
            groups: resolved,
            base_lr: lr,
            lr,
            fields,
            states: (0..count).map(|_| None).collect(),
            steps: 0,
            skipped: None,
        })
    }

    pub(crate) fn params(&self) -> impl Iterator<Item = &Tensor> {
        self.groups.iter().flat_map(|g| g.params.iter())
    }

    /// Runs `update(hyper, param, grad, state) -> (new_param, new_buffers)` for every parameter
    /// with a gradient and commits each result.
    ///
    /// Gradients are checked against their parameters before anything changes, so a user error
    /// (a grad of the wrong dtype or device) leaves every parameter and buffer as it was.
    pub(crate) fn step(
        &mut self,
        update: impl FnMut(Hyper, &Tensor, &Tensor, Option<&ParamState>) -> Result<(Tensor, Vec<Tensor>)>,
    ) -> Result<()> {
        self.step_selecting(None, update, |_| Ok(Vec::new()))
    }

    /// [`OptimCore::step`] gated on `found_inf` ([`Optimizer::step_unless`]): every new value
    /// is `where(skip, old, new)`, so a skipped step keeps parameters and buffers as they were.
    /// A parameter without state yet keeps `neutral(param)` as its buffers when skipped: values
    /// the rule treats exactly like no state (zeros for running averages). Falls back to the
    /// host when the flag and the parameters are on different devices.
    pub(crate) fn step_gated(
        &mut self,
        found_inf: &Tensor,
        update: impl FnMut(Hyper, &Tensor, &Tensor, Option<&ParamState>) -> Result<(Tensor, Vec<Tensor>)>,
        neutral: impl Fn(&Tensor) -> Result<Vec<Tensor>>,
    ) -> Result<()> {
        self.step_selecting(Some(found_inf), update, neutral)
    }

    fn step_selecting(
        &mut self,
        found_inf: Option<&Tensor>,
        mut update: impl FnMut(Hyper, &Tensor, &Tensor, Option<&ParamState>) -> Result<(Tensor, Vec<Tensor>)>,
        neutral: impl Fn(&Tensor) -> Result<Vec<Tensor>>,
    ) -> Result<()> {
        self.step_in_place(found_inf, |hyper, p, g, old, gate| {
            let (value, bufs) = update(hyper, p, g, old.as_ref())?;
            let Some(gate) = gate else {
                p.set_data(&value)?;
                return Ok((bufs, None));
            };
            let keep = |old: &Tensor, new: &Tensor| Tensor::where_(gate.skip, old, new);
            let olds = match &old {
                Some(s) => s.bufs.clone(),
                None => neutral(p)?,
            };
            p.set_data(&keep(p, &value)?)?;
            let kept = olds.iter().zip(&bufs).map(|(o, n)| keep(o, n)).collect::<Result<Vec<_>>>()?;
            Ok((kept, None))
        })
    }

    /// Every parameter's gradient, checked against the parameter (shape, dtype, device)
    /// before anything changes.
    fn checked_grads(&self) -> Result<Vec<Option<Tensor>>> {
        let name = self.name;
        let grads: Vec<Option<Tensor>> = self.params().map(|p| p.grad()).collect();
        for (i, (p, g)) in self.params().zip(&grads).enumerate() {
            let Some(g) = g else { continue };
            if g.shape() != p.shape() || g.dtype() != p.dtype() {
                return Err(Error::shape(
                    name,
                    format!(
                        "parameter {i} is {:?} {} but its grad is {:?} {}",
                        p.shape(),
                        p.dtype(),
                        g.shape(),
                        g.dtype()
                    ),
                ));
            }
            if g.device() != p.device() {
                return Err(Error::DeviceMismatch { op: name, lhs: p.device().name(), rhs: g.device().name() });
            }
        }
        Ok(grads)
    }

    /// Whether a gated step with `found_inf` can be decided on the device: the flag is one u32
    /// and every parameter with a gradient lives on its device.
    pub(crate) fn gateable(&self, found_inf: &Tensor) -> bool {
        found_inf.numel() == 1
            && found_inf.dtype() == DType::U32
            && self.params().filter_map(|p| p.grad()).all(|g| g.device() == found_inf.device())
            && self.skipped.as_ref().is_none_or(|s| s.device() == found_inf.device())
    }

    /// Like [`OptimCore::step`] for rules that update the parameter and its buffers in place:
    /// `update(hyper, param, grad, old_state, gate) -> (buffers, device step slots)` takes the
    /// old state by value, so it can drop the old handles before writing (in-place writes copy
    /// storage that is shared). With `found_inf` the step is gated
    /// ([`Optimizer::step_unless`]): the rule gets the [`Gate`] and must leave everything as it
    /// was where it says skip; this does the counting. The caller checks
    /// [`OptimCore::gateable`] first.
    pub(crate) fn step_in_place(
        &mut self,
        found_inf: Option<&Tensor>,
        mut update: impl FnMut(
            Hyper,
            &Tensor,
            &Tensor,
            Option<ParamState>,
            Option<Gate>,
        ) -> Result<(Vec<Tensor>, Option<Tensor>)>,
    ) -> Result<()> {
        let grads = self.checked_grads()?;
        let skip = match found_inf {
            Some(f) => Some(kiln_core::no_grad(|| f.ne_scalar(0.0)?.reshape(&[]))?),
            None => None,
        };
        let gate = found_inf.zip(skip.as_ref()).map(|(flag, skip)| Gate { skip, flag });
        let OptimCore { groups, states, fields, skipped, .. } = self;
        kiln_core::no_grad(|| {
            let mut index = 0;
            for group in groups.iter() {
                for p in &group.params {
                    let i = index;
                    index += 1;
                    let Some(g) = &grads[i] else {
                        // Sat out a gated step: its skips must not count against this parameter.
                        if let (Some(gate), Some(st)) = (gate, states[i].as_mut())
                            && st.device_steps.is_none()
                        {
                            st.skip_base = Some(add_flag(st.skip_base.as_ref(), gate.flag)?);
                        }
                        continue;
                    };
                    let old = states[i].take();
                    let step = old.as_ref().map_or(0, |s| s.step) + 1;
                    // A count that starts now starts from the skips so far.
                    let skip_base = old.as_ref().map_or_else(|| skipped.clone(), |s| s.skip_base.clone());
                    let hyper = Hyper { lr: group.lr, weight_decay: group.weight_decay, step };
                    let (bufs, device_steps) = update(hyper, p, g, old, gate)?;
                    debug_assert_eq!(bufs.len(), fields.len());
                    states[i] = Some(ParamState { step, bufs, device_steps, skip_base });
                }
            }
            if let Some(gate) = gate {
                *skipped = Some(add_flag(skipped.as_ref(), gate.flag)?);
            }
            Ok::<(), Error>(())
        })?;
        self.steps += 1;
        Ok(())
    }

    pub(crate) fn zero_grad(&self) {
        for p in self.params() {
            p.zero_grad();
        }
    }

    pub(crate) fn lr(&self) -> f64 {
        self.lr
    }

    pub(crate) fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
        for g in &mut self.groups {
            g.lr = if self.base_lr != 0.0 { g.initial_lr * (lr / self.base_lr) } else { lr };
        }
    }

    pub(crate) fn step_count(&self) -> u64 {
        // A failed readback (a lost device) counts the skipped steps as taken.
        self.steps.saturating_sub(count_of(self.skipped.as_ref()).unwrap_or(0))
    }

    pub(crate) fn set_step_count(&mut self, steps: u64) {
        // The skip counter stays (parameters' counts are relative to it), so it is added back.
        self.steps = steps.saturating_add(count_of(self.skipped.as_ref()).unwrap_or(0));
    }

    pub(crate) fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, st) in self.states.iter().enumerate() {
            let Some(st) = st else { continue };
            let step = self.true_step(st);
            if let Ok(step) = Tensor::from_vec(vec![step as f64], &[], &Device::cpu()) {
                out.push((format!("{i}.step"), step));
            }
            for (field, buf) in self.fields.iter().zip(&st.bufs) {
                out.push((format!("{i}.{field}"), buf.clone()));
            }
        }
        out
    }

    /// A parameter's count of updates, skipped gated steps not included; reads the device
    /// when gated steps happened (a failed read counts them as taken).
    fn true_step(&self, st: &ParamState) -> u64 {
        if let Some(slots) = &st.device_steps {
            let slot = (st.step % 2) as usize;
            return slots.to_vec::<u32>().ok().and_then(|v| v.get(slot).copied()).map_or(st.step, u64::from);
        }
        let total = count_of(self.skipped.as_ref()).unwrap_or(0);
        let base = count_of(st.skip_base.as_ref()).unwrap_or(0);
        st.step.saturating_sub(total.saturating_sub(base))
    }

    pub(crate) fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let op = "Optimizer::load_state";
        let params: Vec<&Tensor> = self.params().collect();
        let n = params.len();
        let mut steps: Vec<Option<u64>> = vec![None; n];
        let mut bufs: Vec<Vec<Option<&Tensor>>> = vec![vec![None; self.fields.len()]; n];
        for (name, t) in state {
            let bad = |msg: String| Error::invalid(op, format!("{} state entry {name:?}: {msg}", self.name));
            let (index, field) = name.split_once('.').ok_or_else(|| bad("expected \"<index>.<buffer>\"".into()))?;
            let i: usize = index.parse().map_err(|_| bad(format!("{index:?} is not a parameter index")))?;
            if i >= n {
                return Err(bad(format!("the optimizer has {n} parameters")));
            }
            if field == "step" {
                if t.numel() != 1 {
                    return Err(bad(format!("step must have one element, got shape {:?}", t.shape())));
                }
                let v = t.item()?;
                if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(63)) {
                    return Err(bad(format!("step {v} is not a non-negative integer")));
                }
                if steps[i].replace(v as u64).is_some() {
                    return Err(bad("given twice".into()));
                }
                continue;
            }
            let Some(f) = self.fields.iter().position(|x| *x == field) else {
                return Err(bad(format!("unknown buffer {field:?}; {} keeps {:?}", self.name, self.fields)));
            };
            let p = params[i];
            if t.shape() != p.shape() {
                return Err(bad(format!("shape {:?}, parameter is {:?}", t.shape(), p.shape())));
            }
            if t.dtype() != p.dtype() {
                return Err(bad(format!("dtype {}, parameter is {}", t.dtype(), p.dtype())));
            }
            if bufs[i][f].replace(t).is_some() {
                return Err(bad("given twice".into()));
            }
        }
        let mut fresh: Vec<Option<ParamState>> = Vec::with_capacity(n);
        for i in 0..n {
            let present = bufs[i].iter().filter(|b| b.is_some()).count();
            match steps[i] {
                None if present == 0 => fresh.push(None),
                None => return Err(Error::invalid(op, format!("{}: \"{i}.step\" is missing", self.name))),
                Some(step) => {
                    let mut moved = Vec::with_capacity(self.fields.len());
                    for (f, b) in bufs[i].iter().enumerate() {
                        let Some(b) = b else {
                            return Err(Error::invalid(
                                op,
                                format!("{}: \"{i}.{}\" is missing", self.name, self.fields[f]),
                            ));
                        };
                        // Detached: a state tensor that was itself a grad-tracking leaf must not
                        // drag autodiff history into the updates.
                        moved.push(kiln_core::no_grad(|| b.to(params[i].device()))?.detach());
                    }
                    // Counts start afresh from the skips so far (see `ParamState::skip_base`).
                    fresh.push(Some(ParamState { skip_base: self.skipped.clone(), ..ParamState::new(step, moved) }));
                }
            }
        }
        self.states = fresh;
        Ok(())
    }
}

/// Implements the bookkeeping half of [`Optimizer`] by delegating to the `core` field; the
/// optimizer writes `step` itself.
macro_rules! delegate_to_core {
    () => {
        fn zero_grad(&self) {
            self.core.zero_grad()
        }
        fn lr(&self) -> f64 {
            self.core.lr()
        }
        fn set_lr(&mut self, lr: f64) {
            self.core.set_lr(lr)
        }
        fn state(&self) -> Vec<(String, kiln_core::Tensor)> {
            self.core.state()
        }
        fn load_state(&mut self, state: &[(String, kiln_core::Tensor)]) -> kiln_core::Result<()> {
            self.core.load_state(state)
        }
        fn step_count(&self) -> u64 {
            self.core.step_count()
        }
        fn set_step_count(&mut self, steps: u64) {
            self.core.set_step_count(steps)
        }
        fn params(&self) -> Vec<kiln_core::Tensor> {
            self.core.params().cloned().collect()
        }
    };
}
pub(crate) use delegate_to_core;

/// `counter + flag` (u32 `[1]`; no counter yet: a copy of the flag), for skip counts.
fn add_flag(counter: Option<&Tensor>, flag: &Tensor) -> Result<Tensor> {
    let flag = flag.reshape(&[1])?;
    match counter {
        Some(c) => c + &flag,
        None => flag.copy(),
    }
}

/// The value of a skip counter (one sync); `None` counts as 0.
fn count_of(counter: Option<&Tensor>) -> Result<u64> {
    match counter {
        Some(c) => Ok(c.item()? as u64),
        None => Ok(0),
    }
}

/// `a + alpha * b`, skipping the multiply when `alpha` is 1.
pub(crate) fn add_scaled(a: &Tensor, b: &Tensor, alpha: f64) -> Result<Tensor> {
    if alpha == 1.0 { a + b } else { a + &(b * alpha)? }
}

/// The L2 penalty PyTorch folds into the gradient: `g + wd * p`.
pub(crate) fn with_l2(g: &Tensor, p: &Tensor, weight_decay: f64) -> Result<Tensor> {
    if weight_decay == 0.0 { Ok(g.clone()) } else { add_scaled(g, p, weight_decay) }
}
