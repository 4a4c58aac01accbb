//! Parameters of the fused primitives (normalisation, cross-entropy, attention, Adam). Each is
//! one kernel (or a short fixed sequence) on the GPU; the CPU backend computes the same
//! quantities in f64 as the oracle. Fused primitives take contiguous inputs at offset 0: the
//! core makes them so (a copy only when a caller passes a strided view).

/// A row normalisation over the last dim of `[rows, n]`: LayerNorm (`rms == false`:
/// `(x − mean)·rstd`) or RMSNorm (`rms == true`: `x·rstd`, rstd = 1/√(mean(x²) + eps)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormParams {
    pub rows: usize,
    pub n: usize,
    pub eps: f64,
    pub rms: bool,
}

/// Cross-entropy of logits `[rows, classes]` against class ids `[rows]`, per row:
/// `(1 − ε)·(lse − x[t]) + ε·(lse − mean_c x_c)`, 0 where `t == ignore_index`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrossEntropyParams {
    pub rows: usize,
    pub classes: usize,
    pub ignore_index: Option<u32>,
    pub smoothing: f64,
}

/// Scaled dot-product attention over `q: [batch·heads, q_len, head_dim]` and
/// `k, v: [batch·heads, kv_len, head_dim]`: `softmax(scale·q·kᵀ + bias)·v`. `causal` hides key
/// `j > i` from query `i` (top-left aligned, PyTorch's `is_causal`); a key mask `[batch, kv_len]`
/// (bool, true = hidden) hides padded keys; an optional additive f32 bias (PyTorch's float
/// `attn_mask`; −inf hides a key) is read at `bias_strides` (element strides over
/// `[batch, heads, q_len, kv_len]`, 0 on broadcast dims). A query that sees no key gets a zero
/// output and zero gradients. With `dropout`, the softmax's probabilities are dropped and scaled
/// before they weight `v` (see [`AttentionDropout`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionParams {
    pub batch: usize,
    pub heads: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub head_dim: usize,
    pub causal: bool,
    pub scale: f64,
    /// Strides of the bias (when one is passed), in elements, over `[batch, heads, q_len, kv_len]`.
    pub bias_strides: [usize; 4],
    pub dropout: Option<AttentionDropout>,
}

impl AttentionParams {
    /// Parameters without bias strides or dropout.
    pub fn new(
        batch: usize,
        heads: usize,
        q_len: usize,
        kv_len: usize,
        head_dim: usize,
        causal: bool,
        scale: f64,
    ) -> Self {
        AttentionParams { batch, heads, q_len, kv_len, head_dim, causal, scale, bias_strides: [0; 4], dropout: None }
    }
}

/// Attention dropout: each probability `P[row, j]` (row = `(b·heads + h)·q_len + i`) is kept
/// with probability `keep` and scaled by `1/keep`, or zeroed. The mask is never stored: every
/// backend computes it from `key` wherever it needs it. Score `(row, j)` reads lane `j % 4` of
/// Philox block `row·⌈kv_len/4⌉ + j/4` and is kept where that word's uniform is below `keep`
/// (compared in f32, as `Distribution::Bernoulli`): [`AttentionDropout::kept`] is the definition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionDropout {
    pub keep: f64,
    pub key: crate::PhiloxKey,
}

impl AttentionDropout {
    /// Philox elements one call reads (each row takes `⌈kv_len/4⌉` whole blocks).
    pub fn stream_len(rows: usize, kv_len: usize) -> usize {
        rows * kv_len.div_ceil(4) * 4
    }

    /// Whether score `(row, j)` survives, for rows of `kv_len` keys.
    pub fn kept(&self, kv_len: usize, row: usize, j: usize) -> bool {
        let block = (row as u64) * (kv_len.div_ceil(4) as u64) + (j / 4) as u64;
        crate::philox::uniform(self.key.block(block)[j % 4]) < self.keep as f32
    }
}

/// One Adam/AdamW update of `step` (1 on the first), PyTorch's formulas: L2 decay adds
/// `wd·p` to the gradient; decoupled (AdamW) decay first scales `p` by `1 − lr·wd`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub decoupled: bool,
    pub step: u64,
}
