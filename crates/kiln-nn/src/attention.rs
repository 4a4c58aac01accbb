//! Multi-head self-attention.

use crate::linear::Linear;
use crate::module::{Module, prefixed};
use kiln_core::{ATTENTION_MAX_HEAD_DIM, DType, Device, Error, Result, SdpaOptions, Tensor};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Multi-head scaled dot-product self-attention with separate `q_proj`, `k_proj`, `v_proj` and
/// `out_proj` linear layers (each `d_model → d_model`, PyTorch `Linear` init). Parameter names:
/// `"q_proj.weight"`, `"q_proj.bias"`, ..., `"out_proj.bias"`.
///
/// `dropout` (PyTorch's `dropout` argument, 0 by default; set it with
/// [`with_dropout`](Self::with_dropout)) drops attention probabilities while training, inside
/// the fused attention kernels (the mask is never stored); in evaluation it is off.
///
/// Unlike PyTorch's `nn.MultiheadAttention` the projections are not packed into one
/// `in_proj_weight`, and a query whose every key is masked attends to nothing (its
/// pre-projection output is zero) instead of producing NaN.
///
/// ```
/// # use kiln_core::{Device, Tensor};
/// use kiln_nn::{Module, MultiHeadAttention};
/// let d = Device::cpu();
/// let mha = MultiHeadAttention::new(8, 2, true, &d).unwrap();
/// let x = Tensor::randn(&[3, 5, 8], &d).unwrap(); // [batch, sequence, d_model]
/// assert_eq!(mha.forward(&x).unwrap().shape(), &[3, 5, 8]);
/// assert_eq!(mha.forward_masked(&x, true, None).unwrap().shape(), &[3, 5, 8]); // causal
/// ```
pub struct MultiHeadAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub heads: usize,
    /// Probability of dropping each attention weight while training.
    pub dropout: f64,
    training: AtomicBool,
    /// The general path's causal mask, kept between calls.
    causal_mask: Mutex<Option<Tensor>>,
}

/// The most negative finite value of `dtype`: masked scores become this rather than −∞, so that
/// softmax never computes `−∞ − (−∞)`.
fn lowest(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => -65504.0,
        DType::F64 => f64::MIN,
        _ => f32::MIN as f64,
    }
}

impl MultiHeadAttention {
    /// `d_model` must be a multiple of `heads`.
    pub fn new(d_model: usize, heads: usize, bias: bool, device: &Device) -> Result<MultiHeadAttention> {
        if heads == 0 || d_model == 0 || !d_model.is_multiple_of(heads) {
            return Err(Error::invalid(
                "MultiHeadAttention::new",
                format!("d_model {d_model} is not a positive multiple of heads {heads}"),
            ));
        }
        Ok(MultiHeadAttention {
            q_proj: Linear::new(d_model, d_model, bias, device)?,
            k_proj: Linear::new(d_model, d_model, bias, device)?,
            v_proj: Linear::new(d_model, d_model, bias, device)?,
            out_proj: Linear::new(d_model, d_model, bias, device)?,
            heads,
            dropout: 0.0,
            training: AtomicBool::new(true),
            causal_mask: Mutex::new(None),
        })
    }

    /// The same layer with attention dropout `p` (checked when it runs).
    pub fn with_dropout(mut self, p: f64) -> MultiHeadAttention {
        self.dropout = p;
        self
    }

    /// Attention dropout in effect now: `dropout` while training, 0 in evaluation.
    fn dropout_now(&self) -> f64 {
        if self.training.load(Ordering::Relaxed) { self.dropout } else { 0.0 }
    }

    /// Model width.
    pub fn d_model(&self) -> usize {
        self.q_proj.out_features()
    }

    /// Self-attention over `x: [b, t, d_model]`. `causal` stops position `i` from seeing
    /// positions after it; `padding_mask: [b, t]` (bool, `true` = padding) hides padded keys.
    pub fn forward_masked(&self, x: &Tensor, causal: bool, padding_mask: Option<&Tensor>) -> Result<Tensor> {
        const OP: &str = "MultiHeadAttention";
        let d = self.d_model();
        if x.rank() != 3 || x.shape()[2] != d {
            return Err(Error::shape(OP, format!("expects [b, t, {d}], got {:?}", x.shape())));
        }
        let (b, t, h) = (x.shape()[0], x.shape()[1], self.heads);
        let dh = d / h;
        let heads = |y: Tensor| -> Result<Tensor> { y.reshape(&[b, t, h, dh])?.transpose(1, 2) }; // [b, h, t, dh]
        let q = heads(self.q_proj.forward(x)?)?;
        let k = heads(self.k_proj.forward(x)?)?;
        let v = heads(self.v_proj.forward(x)?)?;
        if let Some(pm) = padding_mask.filter(|pm| pm.shape() != [b, t]) {
            return Err(Error::shape(
                OP,
                format!("padding mask {:?} for input {:?} (expects [b, t])", pm.shape(), x.shape()),
            ));
        }
        let dropout_p = self.dropout_now();
        if !(0.0..=1.0).contains(&dropout_p) {
            return Err(Error::invalid(OP, format!("dropout {dropout_p} is not a probability")));
        }
        let out = if dh <= ATTENTION_MAX_HEAD_DIM || x.device().is_cpu() {
            // One fused attention op: the causal mask from indices, dropout's mask regenerated.
            let opts = SdpaOptions { causal, key_padding_mask: padding_mask, dropout_p, ..SdpaOptions::default() };
            Tensor::sdpa(&q, &k, &v, &opts)?
        } else {
            self.attention_weights(&q, &k, causal, padding_mask)?.dropout(dropout_p)?.matmul(&v)?
        };
        let out = out.transpose(1, 2)?.reshape(&[b, t, d])?;
        self.out_proj.forward(&out)
    }

    /// The general path's attention weights: scores `[b, h, t, t]`, then the masked softmax
    /// (head dims past the fused GPU kernel's limit).
    fn attention_weights(&self, q: &Tensor, k: &Tensor, causal: bool, padding_mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, dh) = (q.shape()[0], q.shape()[2], q.shape()[3]);
        let scores = q.matmul(&k.transpose(-2, -1)?)?.mul_scalar(1.0 / (dh as f64).sqrt())?; // [b, h, t, t]
        let mut mask: Option<Tensor> = None;
        if causal {
            mask = Some(self.causal_mask(t, q.device())?);
        }
        if let Some(pm) = padding_mask {
            let pm = if pm.dtype() == DType::Bool { pm.clone() } else { pm.ne_scalar(0.0)? };
            let keys = pm.reshape(&[b, 1, 1, t])?;
            mask = Some(match mask {
                Some(m) => keys.logical_or(&m)?,
                None => keys,
            });
        }
        let attn = match &mask {
            Some(m) => {
                let p = scores.masked_fill(m, lowest(scores.dtype()))?.softmax(-1)?;
                // A fully masked row would otherwise spread evenly over its hidden keys.
                p.masked_fill(m, 0.0)?
            }
            None => scores.softmax(-1)?,
        };
        Ok(attn)
    }

    /// The `[t, t]` mask of future positions on `device`, built on the host once per length
    /// and device and reused.
    fn causal_mask(&self, t: usize, device: &Device) -> Result<Tensor> {
        let mut cached = self.causal_mask.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = cached.as_ref().filter(|m| m.shape() == [t, t] && m.device() == device) {
            return Ok(m.clone());
        }
        let future: Vec<bool> = (0..t * t).map(|i| i % t > i / t).collect();
        let m = Tensor::from_vec(future, &[t, t], device)?;
        *cached = Some(m.clone());
        Ok(m)
    }
}

impl Module for MultiHeadAttention {
    /// Bidirectional attention with no padding mask.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_masked(x, false, None)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = prefixed("q_proj", self.q_proj.named_parameters());
        out.extend(prefixed("k_proj", self.k_proj.named_parameters()));
        out.extend(prefixed("v_proj", self.v_proj.named_parameters()));
        out.extend(prefixed("out_proj", self.out_proj.named_parameters()));
        out
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed)
    }
}
