//! Whole-model workloads: training steps W5 (MLP, Adam), W6 (transformer, AdamW; W6d with
//! dropout), W7 (CNN, SGD with momentum) and inference W9 (the W6 model, forward only); with
//! `--amp` all of them in mixed precision. Each result line carries the device's memory peaks.

use crate::harness::{Ctx, measure};
use crate::inputs::{ids, randn};
use crate::models::{GPT_VOCAB, Gpt, cnn, mlp, positions};
use kiln_core::{DType, Result, Tensor};
use kiln_nn::{
    Adam, AdamConfig, AdamW, AdamWConfig, GradScaler, GradScalerConfig, Module, ModuleExt, Optimizer, Sgd, SgdConfig,
    cross_entropy_loss,
};

/// One optimizer and, under `--amp`, its loss scaler.
struct Trainer<'a> {
    opt: &'a mut dyn Optimizer,
    scaler: Option<GradScaler>,
}

impl<'a> Trainer<'a> {
    fn new(ctx: &Ctx, opt: &'a mut dyn Optimizer) -> Result<Self> {
        let scaler = if ctx.amp { Some(GradScaler::new(GradScalerConfig::default())?) } else { None };
        Ok(Trainer { opt, scaler })
    }

    /// One timed training step: clear gradients, forward (under f16 autocast with `--amp`),
    /// cross-entropy against `targets`, backward, optimizer step, device sync. The scaler's
    /// inf/NaN check stays on the device (PyTorch's reads it back once per step); the sync at
    /// the end is the harness's, to time whole steps.
    fn step(&mut self, ctx: &Ctx, forward: impl Fn() -> Result<Tensor>, targets: &Tensor) -> Result<()> {
        self.opt.zero_grad();
        let loss = amp(ctx, || cross_entropy_loss(&forward()?, targets))?;
        match &mut self.scaler {
            Some(scaler) => {
                scaler.scale(&loss)?.backward()?;
                scaler.step(self.opt)?;
                scaler.update()?;
            }
            None => {
                loss.backward()?;
                self.opt.step()?;
            }
        }
        ctx.sync()
    }
}

/// `f` under f16 autocast when `--amp` is on.
fn amp<T>(ctx: &Ctx, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if ctx.amp { kiln_core::autocast(DType::F16, f) } else { f() }
}

/// W5: MLP 784-1024-1024-10, Adam lr 1e-3: steps/s.
pub fn w5(ctx: &Ctx) -> Result<()> {
    let batch = if ctx.small { 64 } else { 512 };
    let d = &ctx.device;
    let model = mlp(d)?;
    let mut opt = Adam::new(model.parameters(), AdamConfig { lr: 1e-3, ..Default::default() })?;
    let x = randn(&[batch, 784], d)?;
    let y = ids(&[batch], 10, 5, d)?;
    ctx.sync()?;
    let mut trainer = Trainer::new(ctx, &mut opt)?;
    let t = measure(ctx, "W5", || trainer.step(ctx, || model.forward(&x), &y))?;
    ctx.emit_with_memory("W5", &format!("batch{batch}"), "steps/s", 1.0 / t);
    Ok(())
}

fn gpt_shape(ctx: &Ctx) -> (usize, usize) {
    if ctx.small { (2, 64) } else { (16, 256) }
}

/// W6: the decoder-only transformer, AdamW (lr 1e-3, weight decay 0.01): tokens/s.
pub fn w6(ctx: &Ctx) -> Result<()> {
    gpt_training(ctx, "W6", 0.0)
}

/// W6d: W6 with dropout 0.1 on each block's residual branches, so that the suite sees what
/// dropout costs per step (random masks every step), as real training loops pay it.
pub fn w6d(ctx: &Ctx) -> Result<()> {
    gpt_training(ctx, "W6d", 0.1)
}

fn gpt_training(ctx: &Ctx, id: &str, dropout: f64) -> Result<()> {
    let (b, s) = gpt_shape(ctx);
    let d = &ctx.device;
    let model = Gpt::with_dropout(dropout, d)?;
    model.train();
    let mut opt = AdamW::new(model.parameters(), AdamWConfig { lr: 1e-3, weight_decay: 0.01, ..Default::default() })?;
    let tokens = ids(&[b, s], GPT_VOCAB as u32, 6, d)?;
    let targets = ids(&[b * s], GPT_VOCAB as u32, 7, d)?;
    let pos = positions(s, d)?;
    ctx.sync()?;
    let forward = || model.logits(&tokens, &pos)?.reshape(&[b * s, GPT_VOCAB]);
    let mut trainer = Trainer::new(ctx, &mut opt)?;
    let t = measure(ctx, id, || trainer.step(ctx, forward, &targets))?;
    ctx.emit_with_memory(id, &format!("b{b}s{s}"), "tokens/s", (b * s) as f64 / t);
    Ok(())
}

/// W7: the CNN on `[batch, 1, 28, 28]`, SGD lr 1e-2 with momentum 0.9: steps/s.
pub fn w7(ctx: &Ctx) -> Result<()> {
    let batch = if ctx.small { 16 } else { 128 };
    let d = &ctx.device;
    let model = cnn(d)?;
    let mut opt = Sgd::new(model.parameters(), SgdConfig { momentum: 0.9, ..SgdConfig::new(1e-2) })?;
    let x = randn(&[batch, 1, 28, 28], d)?;
    let y = ids(&[batch], 10, 8, d)?;
    ctx.sync()?;
    let mut trainer = Trainer::new(ctx, &mut opt)?;
    let t = measure(ctx, "W7", || trainer.step(ctx, || model.forward(&x), &y))?;
    ctx.emit_with_memory("W7", &format!("batch{batch}"), "steps/s", 1.0 / t);
    Ok(())
}

/// W9: the W6 model in eval mode, forward only under `no_grad`: tokens/s.
pub fn w9(ctx: &Ctx) -> Result<()> {
    let (b, s) = gpt_shape(ctx);
    let d = &ctx.device;
    let model = Gpt::new(d)?;
    model.eval();
    let tokens = ids(&[b, s], GPT_VOCAB as u32, 9, d)?;
    let pos = positions(s, d)?;
    ctx.sync()?;
    let t = measure(ctx, "W9", || {
        let logits = kiln_core::no_grad(|| amp(ctx, || model.logits(&tokens, &pos)))?;
        ctx.sync()?;
        drop(logits);
        Ok(())
    })?;
    ctx.emit_with_memory("W9", &format!("b{b}s{s}"), "tokens/s", (b * s) as f64 / t);
    Ok(())
}
