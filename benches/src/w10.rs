//! W10: a real training loop, the `char_transformer --size large` step as the example runs it
//! (6 blocks of d 384, 6 heads, context 256, dropout 0.2, GELU; batch 64; new random windows of
//! Moby-Dick uploaded every step; AdamW (0.9, 0.99) with weight decay on the matrices only;
//! gradients clipped at 1.0; warm-up + cosine schedule), timed as its PyTorch twin
//! `char_gpt.py` times itself: wall time over steps 21..N with the device synchronised at both
//! ends. `--small` runs a CI-sized model (2 blocks of d 64, batch 8, context 32) through the
//! same code.
//!
//! The step is the example's own [`train::Trainer::step`]: this file includes the example's
//! training code by path, as `examples/tests/char_smoke.rs` does, so W10 can only measure
//! what users run. What the example's loop does around the step (a progress-bar readback every
//! 10 steps, evaluations) is left out, as `char_gpt.py` leaves it out.

#[path = "../../examples/char/train.rs"]
mod train;

/// What `train.rs` expects beside it: `super::common::memlog` (its `--memory-log`, unused here).
#[path = "example_common.rs"]
mod common;

use crate::args::W10_WARMUP;
use crate::harness::Ctx;
use kiln_core::{Error, Result};
use kiln_nn::{GradScaler, GradScalerConfig, ModuleExt};
use std::time::Instant;
use train::{Size, TrainConfig, Trainer};

/// The run's hyper-parameters: the example's `--size large` preset (its schedule spans the
/// preset's 5000 steps, as `char_gpt.py`'s does, whatever `--steps` says), or with `--small`
/// the same run on a model and batch small enough for a software adapter.
fn config(small: bool) -> TrainConfig {
    let large = TrainConfig { progress: false, ..TrainConfig::preset(Size::Large) };
    if small { TrainConfig { d_model: 64, layers: 2, heads: 4, batch_size: 8, seq_len: 32, ..large } } else { large }
}

/// The example's errors are boxed; a Kiln error keeps its type, anything else (data loading)
/// becomes a backend error naming W10.
fn kiln_error(e: train::AnyError) -> Error {
    match e.downcast::<Error>() {
        Ok(e) => *e,
        Err(other) => Error::Backend { op: "W10", msg: other.to_string() },
    }
}

/// W10: ms per optimizer step over steps 21..N (`--steps`), with tokens/s, the loss at the last
/// step (bits per character, a sanity check beside `char_gpt.py`'s `last_loss_bits`) and the
/// memory keys. `--max-seconds` ends the timed steps early (after at least 5).
pub fn w10(ctx: &Ctx) -> Result<()> {
    let cfg = config(ctx.small);
    let d = &ctx.device;
    let (text, _) = train::load_moby_dick().map_err(kiln_error)?;
    let mut trainer = Trainer::new(&cfg, text.vocab_size(), d).map_err(kiln_error)?;
    if ctx.amp {
        trainer = trainer.with_grad_scaler(GradScaler::new(GradScalerConfig::default())?);
    }
    trainer.model.train();
    ctx.sync()?;
    let warm_start = Instant::now();
    let mut t0 = warm_start;
    let mut last = None;
    let mut timed = 0;
    let mut allocations_before = 0;
    for step in 1..=ctx.w10_steps {
        if step == W10_WARMUP + 1 {
            ctx.sync()?;
            t0 = Instant::now();
            allocations_before = ctx.allocations();
            eprintln!("  W10: {W10_WARMUP} warm-up steps in {:.3} s", (t0 - warm_start).as_secs_f64());
        }
        let (loss, _norm, _lr) = trainer.step(&text, d).map_err(kiln_error)?;
        last = Some(loss);
        if step > W10_WARMUP {
            timed += 1;
            if timed >= 5 && ctx.past_deadline() {
                eprintln!("  W10: --max-seconds reached after step {step}");
                break;
            }
        }
    }
    ctx.sync()?;
    let secs = t0.elapsed().as_secs_f64();
    let Some(loss) = last else { return Err(Error::invalid("W10", "no step ran")) };
    ctx.note_timed(allocations_before, timed);
    let ms = secs * 1e3 / timed as f64;
    let (b, t) = (cfg.batch_size, cfg.seq_len);
    eprintln!("  W10: {timed} timed steps in {secs:.3} s, {ms:.3} ms/step");
    let mut extra = vec![
        ("tokens_per_s", (b * t) as f64 * 1e3 / ms),
        ("steps", timed as f64),
        ("last_loss_bits", train::bits(loss.item()?)),
    ];
    extra.extend(ctx.memory_keys());
    ctx.emit_with("W10", &format!("b{b}s{t}"), "ms/step", ms, &extra);
    Ok(())
}
