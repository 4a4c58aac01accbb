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
/// `k, v: [batch·heads, kv_len, head_dim]`. `causal` hides key `j > i` from query `i`
/// (top-left aligned, PyTorch's `is_causal`); a key mask `[batch, kv_len]` (bool, true = hidden)
/// hides padded keys. A query that sees no key gets a zero output and zero gradients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionParams {
    pub batch: usize,
    pub heads: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub head_dim: usize,
    pub causal: bool,
    pub scale: f64,
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
