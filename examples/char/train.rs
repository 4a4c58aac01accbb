//! Training, evaluation and sampling for the `char_transformer` example, shared with
//! `examples/tests/char_smoke.rs` (which includes this file by path, so the smoke test runs
//! exactly the loop a user runs).

// The example and the smoke test each use a different subset.
#![allow(dead_code)]

#[path = "model.rs"]
pub mod model;

use std::f64::consts::LN_2;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use kiln::data::{Rng, TextDataset};
use kiln::nn::GradScaler;
use kiln::nn::optim::{AdamWConfig, ParamGroup};
use kiln::nn::sched::WarmupCosine;
use kiln::prelude::*;

pub use model::{Activation, CharTransformer, ModelConfig, Size};

/// Errors from any layer (Kiln ops, data loading, flags), shown to the user as text.
pub type AnyError = Box<dyn std::error::Error + Send + Sync>;
/// Shorthand for results carrying an [`AnyError`].
pub type AnyResult<T> = std::result::Result<T, AnyError>;

/// Nats to bits: a per-character cross-entropy in bits is the average code length an ideal
/// compressor driven by the model would spend on each character.
pub fn bits(nats: f64) -> f64 {
    nats / LN_2
}

/// Hyper-parameters of one run: the model's shape and the optimisation.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp_ratio: usize,
    pub activation: Activation,
    pub dropout: f64,
    /// Dropout of the attention probabilities (inside the fused attention op); the presets use
    /// `dropout`, as the PyTorch twin does (`F.scaled_dot_product_attention(dropout_p=...)`).
    pub attn_dropout: f64,
    pub steps: usize,
    pub batch_size: usize,
    /// Characters per training window, and the model's context length.
    pub seq_len: usize,
    /// Peak learning rate, reached after `warmup` steps and cosine-decayed to
    /// `lr · final_lr_frac` at the last step.
    pub lr: f64,
    pub final_lr_frac: f64,
    pub warmup: usize,
    /// AdamW's decoupled decay, applied to weight matrices only (not to biases, LayerNorm
    /// gains or embedding tables).
    pub weight_decay: f64,
    /// Gradients are rescaled to at most this global L2 norm before each step.
    pub grad_clip: f64,
    /// Seeds the initialisation, dropout and the choice of training windows.
    pub seed: u64,
    /// Steps between evaluations (the last step is always evaluated).
    pub eval_every: usize,
    /// Number of fixed validation windows each evaluation averages over.
    pub eval_windows: usize,
    /// Draw an indicatif progress bar (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Stop after this much training time even if steps remain (a soak run: `--minutes`).
    pub max_minutes: Option<f64>,
    /// Write device memory here once a minute (`--memory-log`; see `common/memlog.rs`).
    pub memory_log: Option<std::path::PathBuf>,
}

impl TrainConfig {
    /// The defaults of `--size`.
    ///
    /// Small is tuned for two CPU cores: at about 0.15 s per step, 2 000 steps take about five
    /// minutes. Sweeps of 1 000–2 000 steps showed that in a fixed time, 2 layers at batch 16
    /// beat 3–4 layers or batch 32 (more, smaller steps win this early in training), that
    /// N(0, 1) embeddings beat GPT-2's N(0, 0.02), and that peak rates of 6e-3 and up stall
    /// on a 3.5–3.6 bits/char plateau for hundreds of steps while 3e-3–5e-3 do not.
    ///
    /// Large is nanoGPT's character-level Shakespeare shape (d 384, 6 layers, 6 heads,
    /// context 256, dropout 0.2, GELU), meant for a GPU.
    pub fn preset(size: Size) -> TrainConfig {
        match size {
            Size::Small => TrainConfig {
                d_model: 128,
                layers: 2,
                heads: 4,
                mlp_ratio: 4,
                activation: Activation::Relu,
                dropout: 0.0,
                attn_dropout: 0.0,
                steps: 2000,
                batch_size: 16,
                seq_len: 64,
                lr: 5e-3,
                final_lr_frac: 0.06,
                warmup: 50,
                weight_decay: 0.1,
                grad_clip: 1.0,
                seed: 0,
                eval_every: 200,
                eval_windows: 128,
                progress: true,
                max_minutes: None,
                memory_log: None,
            },
            Size::Large => TrainConfig {
                d_model: 384,
                layers: 6,
                heads: 6,
                mlp_ratio: 4,
                activation: Activation::Gelu,
                dropout: 0.2,
                attn_dropout: 0.2,
                steps: 5000,
                batch_size: 64,
                seq_len: 256,
                lr: 1e-3,
                final_lr_frac: 0.1,
                warmup: 100,
                weight_decay: 0.1,
                grad_clip: 1.0,
                seed: 0,
                eval_every: 250,
                eval_windows: 256,
                progress: true,
                max_minutes: None,
                memory_log: None,
            },
        }
    }

    /// The model shape for a text of `vocab_size` characters.
    pub fn model_config(&self, vocab_size: usize) -> ModelConfig {
        ModelConfig {
            vocab_size,
            d_model: self.d_model,
            layers: self.layers,
            heads: self.heads,
            context: self.seq_len,
            mlp_ratio: self.mlp_ratio,
            dropout: self.dropout,
            attn_dropout: self.attn_dropout,
            activation: self.activation,
        }
    }

    /// Rejects settings that cannot train, with a message naming the flag to change.
    pub fn validate(&self) -> AnyResult<()> {
        let positive = [
            ("--steps", self.steps),
            ("--batch-size", self.batch_size),
            ("--seq-len", self.seq_len),
            ("--eval-every", self.eval_every),
            ("the number of validation windows", self.eval_windows),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1").into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("--lr must be a positive number, got {}", self.lr).into());
        }
        if !(0.0..=1.0).contains(&self.final_lr_frac) {
            return Err(
                format!("the final learning-rate fraction must be in [0, 1], got {}", self.final_lr_frac).into()
            );
        }
        if self.heads == 0 || !self.d_model.is_multiple_of(self.heads) {
            return Err(format!("d_model {} is not a multiple of {} heads", self.d_model, self.heads).into());
        }
        if !(0.0..1.0).contains(&self.attn_dropout) {
            return Err(format!("--attn-dropout must be in [0, 1), got {}", self.attn_dropout).into());
        }
        Ok(())
    }
}

/// Validation windows per forward pass: larger than a training batch because no activations
/// are kept for a backward pass, and fewer, larger products run faster.
const EVAL_BATCH: usize = 64;

/// One evaluation.
#[derive(Debug, Clone)]
pub struct EvalPoint {
    /// Optimizer steps taken so far.
    pub step: usize,
    /// Mean training loss (bits per character) over the steps since the previous evaluation.
    pub train_bpc: f64,
    /// Mean loss (bits per character) over the fixed validation windows.
    pub val_bpc: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Seconds spent training so far, evaluations excluded.
    pub train_secs: f64,
}

/// Moby-Dick split 90 % / 10 % into contiguous training and validation texts.
pub fn load_moby_dick() -> AnyResult<(TextDataset, TextDataset)> {
    let text = TextDataset::moby_dick()?;
    Ok(text.split(0.9)?)
}

/// `count` windows of `seq_len` characters spread evenly over `text`, as `(inputs, targets)`
/// laid out window after window: the same windows at every evaluation and in every run, so
/// validation numbers compare across steps, seeds and sizes.
pub fn fixed_windows(text: &TextDataset, count: usize, seq_len: usize) -> AnyResult<(Vec<u32>, Vec<u32>)> {
    let tokens = text.tokens();
    let last_start = tokens.len().checked_sub(seq_len + 1).ok_or_else(|| {
        format!("the validation text ({} characters) is shorter than one window of --seq-len {seq_len}", tokens.len())
    })?;
    let (mut inputs, mut targets) = (Vec::with_capacity(count * seq_len), Vec::with_capacity(count * seq_len));
    for i in 0..count {
        let start = if count == 1 { 0 } else { i * last_start / (count - 1) };
        inputs.extend_from_slice(&tokens[start..start + seq_len]);
        targets.extend_from_slice(&tokens[start + 1..start + seq_len + 1]);
    }
    Ok((inputs, targets))
}

/// Trains a fresh model on `train` and evaluates it on fixed windows of `val` every
/// `cfg.eval_every` steps and after the last; `on_eval` sees each evaluation as it happens.
pub fn train(
    cfg: &TrainConfig,
    device: &Device,
    train: &TextDataset,
    val: &TextDataset,
    mut on_eval: impl FnMut(&EvalPoint),
) -> AnyResult<(CharTransformer, Vec<EvalPoint>)> {
    cfg.validate()?;
    if train.vocab() != val.vocab() {
        return Err("the training and validation texts have different vocabularies".into());
    }
    let t = cfg.seq_len;
    let val_windows = fixed_windows(val, cfg.eval_windows, t)?;

    let mut trainer = Trainer::new(cfg, train.vocab_size(), device)?;

    let bar = progress_bar(cfg);
    let mut history = Vec::new();
    let mut train_secs = 0.0;
    let mut totals = RunningTotals::new(device)?;
    trainer.model.train();
    let run_start = Instant::now();
    let mut memory = super::common::memlog::open(cfg.memory_log.clone(), "elapsed_s,step")?;
    let mut next_sample = 0.0;
    for step in 1..=cfg.steps {
        let start = Instant::now();
        let (loss, norm, lr) = trainer.step(train, device)?;
        totals.add(&loss, &norm)?;
        train_secs += start.elapsed().as_secs_f64();
        bar.inc(1);
        if step % 10 == 0 {
            let train_bpc = bits(totals.read(step)?);
            bar.set_message(format!("train {train_bpc:.3} bpc, lr {lr:.2e}, {:.2} s/step", train_secs / step as f64));
        }

        let elapsed = run_start.elapsed().as_secs_f64();
        if elapsed >= next_sample {
            next_sample += 60.0;
            memory(&format!("{elapsed:.0},{step}"), device);
        }
        let out_of_time = cfg.max_minutes.is_some_and(|m| run_start.elapsed().as_secs_f64() >= m * 60.0);
        if step % cfg.eval_every == 0 || step == cfg.steps || out_of_time {
            let train_bpc = bits(totals.read(step)?);
            let val_bpc = bits(evaluate(&trainer.model, &val_windows, EVAL_BATCH, t, device)?);
            if !(train_bpc.is_finite() && val_bpc.is_finite()) {
                return Err(format!("training diverged by step {step} (loss is not finite); try a lower --lr").into());
            }
            let point = EvalPoint { step, train_bpc, val_bpc, lr, train_secs };
            bar.suspend(|| on_eval(&point));
            history.push(point);
            totals = RunningTotals::new(device)?;
        }
        if out_of_time {
            break;
        }
    }
    bar.finish_and_clear();
    trainer.model.eval();
    Ok((trainer.model, history))
}

/// A run's model, optimizer, learning-rate schedule and window sampler, built as [`train`]
/// builds them, and its training step: `train` loops over [`Trainer::step`], and kiln-bench's
/// W10 times the same step (it includes this file by path).
pub struct Trainer {
    pub model: CharTransformer,
    pub opt: AdamW,
    schedule: WarmupCosine,
    params: Vec<Tensor>,
    rng: Rng,
    batch_size: usize,
    seq_len: usize,
    grad_clip: f64,
    /// Mixed precision (set by [`Trainer::with_grad_scaler`]; the example trains in f32).
    scaler: Option<GradScaler>,
}

impl Trainer {
    /// Seeds Kiln's generator with `cfg.seed` (initialisation and dropout) and builds a fresh
    /// model for `vocab` characters, its AdamW, the warm-up + cosine schedule over `cfg.steps`
    /// and the generator that picks training windows.
    pub fn new(cfg: &TrainConfig, vocab: usize, device: &Device) -> AnyResult<Trainer> {
        kiln::manual_seed(cfg.seed);
        let model = CharTransformer::new(cfg.model_config(vocab), device)?;
        let opt = optimizer(&model, cfg)?;
        let schedule = schedule(cfg)?;
        let params = model.parameters();
        let rng = Rng::new(cfg.seed);
        let (batch_size, seq_len, grad_clip) = (cfg.batch_size, cfg.seq_len, cfg.grad_clip);
        Ok(Trainer { model, opt, schedule, params, rng, batch_size, seq_len, grad_clip, scaler: None })
    }

    /// Trains in mixed precision from now on, as `torch.autocast` + `torch.amp.GradScaler`
    /// do: the forward pass under f16 autocast, the loss scaled before backward, gradients
    /// unscaled before clipping, and steps with an inf or NaN gradient skipped.
    pub fn with_grad_scaler(mut self, scaler: GradScaler) -> Trainer {
        self.scaler = Some(scaler);
        self
    }

    /// One optimizer step on `batch_size` fresh windows of `text`: upload, forward,
    /// cross-entropy, backward, gradients clipped to `grad_clip`, the schedule's next rate, the
    /// AdamW update ([`train_step`]; under a GradScaler the forward runs in f16 autocast, the
    /// loss is scaled, gradients are unscaled before clipping, and an overflowing step is
    /// skipped on the device). Returns the loss and the gradient norm, both still on the device
    /// (nothing here waits for the GPU), and the learning rate used.
    pub fn step(&mut self, text: &TextDataset, device: &Device) -> AnyResult<(Tensor, Tensor, f64)> {
        let (b, t, vocab) = (self.batch_size, self.seq_len, self.model.config.vocab_size);
        let (x, y) = text.random_windows(b, t, &mut self.rng)?;
        let x = Tensor::from_vec(x, &[b, t], device)?;
        let y = Tensor::from_vec(y, &[b * t], device)?;
        let Some(scaler) = &mut self.scaler else {
            let (loss, norm) =
                train_step(&self.model, &mut self.opt, &mut self.schedule, &self.params, self.grad_clip, &x, &y)?;
            return Ok((loss, norm, self.opt.lr()));
        };
        let loss = kiln::autocast(DType::F16, || {
            let logits = self.model.logits(&x)?.reshape(&[b * t, vocab])?;
            kiln::nn::loss::cross_entropy_loss(&logits, &y)
        })?;
        self.opt.zero_grad();
        scaler.scale(&loss)?.backward()?;
        scaler.unscale_(&self.opt)?;
        let norm = kiln::nn::clip_grad_norm_(&self.params, self.grad_clip)?;
        self.schedule.step(&mut self.opt);
        scaler.step(&mut self.opt)?;
        scaler.update()?;
        Ok((loss.detach(), norm, self.opt.lr()))
    }
}

/// One training step on the windows `x` (inputs, `[batch, seq_len]`) and `y` (next characters,
/// `[batch · seq_len]`): forward, cross-entropy, backward, gradient clipping at `grad_clip`,
/// the schedule, AdamW. Returns the loss and the gradient norm before clipping, both still on
/// the device: the step itself never waits for the GPU.
pub fn train_step(
    model: &CharTransformer,
    opt: &mut AdamW,
    schedule: &mut WarmupCosine,
    params: &[Tensor],
    grad_clip: f64,
    x: &Tensor,
    y: &Tensor,
) -> kiln::Result<(Tensor, Tensor)> {
    let vocab = model.config.vocab_size;
    let logits = model.logits(x)?.reshape(&[y.numel(), vocab])?;
    let loss = kiln::nn::loss::cross_entropy_loss(&logits, y)?;
    opt.zero_grad();
    loss.backward()?;
    let norm = kiln::nn::clip_grad_norm_(params, grad_clip)?;
    // Advanced before the update, so step k uses `lr_at(k)`: the first step already moves
    // (`lr_at(0)` is 0) and the last one lands on the final rate.
    schedule.step(opt);
    opt.step()?;
    Ok((loss.detach(), norm))
}

/// What the loop sums between reads, on the device: the losses, and how many gradient norms
/// were not finite. Both come back in one read, every few steps, so the steps in between
/// never wait for the GPU.
struct RunningTotals {
    loss: Tensor,
    nonfinite_norms: Tensor,
    steps: usize,
}

impl RunningTotals {
    fn new(device: &Device) -> kiln::Result<RunningTotals> {
        Ok(RunningTotals { loss: Tensor::zeros(&[], device)?, nonfinite_norms: Tensor::zeros(&[], device)?, steps: 0 })
    }

    fn add(&mut self, loss: &Tensor, norm: &Tensor) -> kiln::Result<()> {
        let bad = norm.isnan()?.logical_or(&norm.isinf()?)?.to_dtype(kiln::DType::F32)?;
        self.loss = (&self.loss + loss)?;
        self.nonfinite_norms = (&self.nonfinite_norms + &bad)?;
        self.steps += 1;
        Ok(())
    }

    /// The mean loss (nats) since the last reset, in one read; an error if a gradient norm was
    /// not finite (by `step`, the step being read at).
    fn read(&self, step: usize) -> AnyResult<f64> {
        let both = Tensor::stack(&[self.loss.clone(), self.nonfinite_norms.clone()], 0)?.to_vec::<f32>()?;
        if both[1] != 0.0 {
            return Err(format!("training diverged by step {step} (gradient norm not finite); try a lower --lr").into());
        }
        Ok(f64::from(both[0]) / self.steps.max(1) as f64)
    }
}

/// Linear warm-up over `cfg.warmup` steps, then a cosine down to `lr · final_lr_frac`.
pub fn schedule(cfg: &TrainConfig) -> AnyResult<WarmupCosine> {
    Ok(WarmupCosine::new(cfg.lr, cfg.warmup.min(cfg.steps) as u64, cfg.steps as u64, cfg.lr * cfg.final_lr_frac)?)
}

/// AdamW with weight decay on the weight matrices only: decaying gains, biases or embedding
/// rows toward zero only fights LayerNorm and the lookup tables.
pub fn optimizer(model: &CharTransformer, cfg: &TrainConfig) -> AnyResult<AdamW> {
    let (mut decay, mut keep) = (Vec::new(), Vec::new());
    for (name, p) in model.named_parameters() {
        if p.rank() >= 2 && !name.ends_with("_emb.weight") {
            decay.push(p);
        } else {
            keep.push(p);
        }
    }
    let groups = vec![ParamGroup::new(decay), ParamGroup::new(keep).with_weight_decay(0.0)];
    // β₂ = 0.99 rather than 0.999: with few steps the second moment must adapt quickly.
    let config = AdamWConfig { lr: cfg.lr, betas: (0.9, 0.99), weight_decay: cfg.weight_decay, ..Default::default() };
    Ok(AdamW::with_groups(groups, config)?)
}

/// Mean cross-entropy (nats per character) of `model` over `windows` (as from
/// [`fixed_windows`]), `batch` windows per forward pass, in evaluation mode.
pub fn evaluate(
    model: &CharTransformer,
    windows: &(Vec<u32>, Vec<u32>),
    batch: usize,
    seq_len: usize,
    device: &Device,
) -> AnyResult<f64> {
    let (inputs, targets) = windows;
    let count = inputs.len().checked_div(seq_len).unwrap_or(0);
    if count == 0 || batch == 0 || targets.len() != inputs.len() {
        return Err("no validation windows to evaluate".into());
    }
    model.eval();
    let result = no_grad(|| -> AnyResult<f64> {
        let vocab = model.config.vocab_size;
        let mut sum = Tensor::zeros(&[], device)?;
        for first in (0..count).step_by(batch) {
            let n = batch.min(count - first);
            let span = first * seq_len..(first + n) * seq_len;
            let x = Tensor::from_slice(&inputs[span.clone()], &[n, seq_len], device)?;
            let y = Tensor::from_slice(&targets[span], &[n * seq_len], device)?;
            let logits = model.logits(&x)?.reshape(&[n * seq_len, vocab])?;
            let loss = kiln::nn::loss::cross_entropy_loss(&logits, &y)?;
            // `loss` is a mean over this batch's characters; weight it by their number.
            sum = (&sum + &(&loss * (n * seq_len) as f64)?)?;
        }
        Ok(sum.item()? / (count * seq_len) as f64)
    });
    model.train();
    result
}

/// How to pick each generated character.
#[derive(Debug, Clone, Copy)]
pub struct SampleConfig {
    /// Divides the logits: below 1 sharpens the distribution, above 1 flattens it; 0 always
    /// takes the most likely character.
    pub temperature: f64,
    /// Sample only among the `k` most likely characters; `None` or `Some(0)` keeps them all.
    pub top_k: Option<usize>,
    /// Seeds the sampling generator.
    pub seed: u64,
}

/// Continues `prompt` by `tokens` characters and returns only the new ones. Each step runs the
/// model on the last `context` characters, reads the next-character probabilities back to the
/// host and draws from them with a seeded [`Rng`].
pub fn generate(
    model: &CharTransformer,
    text: &TextDataset,
    prompt: &str,
    tokens: usize,
    sample: SampleConfig,
    device: &Device,
) -> AnyResult<String> {
    if !(sample.temperature.is_finite() && sample.temperature >= 0.0) {
        return Err(format!("--temperature must be a number ≥ 0, got {}", sample.temperature).into());
    }
    let mut ids = text.encode(prompt).map_err(|e| format!("the prompt {prompt:?} cannot be encoded: {e}"))?;
    if ids.is_empty() {
        return Err("the prompt must hold at least one character".into());
    }
    let context = model.config.context;
    let mut rng = Rng::new(sample.seed);
    let start = ids.len();
    model.eval();
    no_grad(|| -> AnyResult<()> {
        for _ in 0..tokens {
            let window = &ids[ids.len().saturating_sub(context)..];
            let x = Tensor::from_slice(window, &[1, window.len()], device)?;
            let last = model.logits(&x)?.narrow(1, window.len() - 1, 1)?.reshape(&[model.config.vocab_size])?;
            let next = if sample.temperature == 0.0 {
                last.argmax(-1, false)?.to_vec::<u32>()?.first().copied().ok_or("empty argmax")?
            } else {
                let probs = last.mul_scalar(1.0 / sample.temperature)?.softmax(-1)?.to_vec::<f32>()?;
                draw(&probs, sample.top_k, &mut rng)
            };
            ids.push(next);
        }
        Ok(())
    })?;
    Ok(text.decode(&ids[start..]))
}

/// Draws an index from `probs` restricted to its `top_k` largest entries (renormalised).
fn draw(probs: &[f32], top_k: Option<usize>, rng: &mut Rng) -> u32 {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    let keep = match top_k {
        Some(k) if k > 0 && k < probs.len() => {
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            k
        }
        _ => probs.len(),
    };
    let kept = &order[..keep];
    let total: f64 = kept.iter().map(|&i| f64::from(probs[i])).sum();
    let mut u = f64::from(rng.next_f32()) * total;
    for &i in kept {
        u -= f64::from(probs[i]);
        if u < 0.0 {
            return i as u32;
        }
    }
    // Rounding can leave a sliver of `u`: it belongs to the last kept entry.
    kept.last().map_or(0, |&i| i as u32)
}

fn progress_bar(cfg: &TrainConfig) -> ProgressBar {
    if !cfg.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(cfg.steps as u64);
    let style = ProgressStyle::with_template("step [{bar:30.cyan/blue}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}
