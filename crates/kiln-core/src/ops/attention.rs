//! Scaled dot-product attention, PyTorch's `F.scaled_dot_product_attention`: one fused backend
//! primitive forward ([`kiln_backend::BackendStorage::attention_forward`]) and one backward, with
//! an optional boolean or additive mask, an explicit scale, a causal mask, a key padding mask and
//! attention dropout. The dropout mask is never stored: every kernel that needs it recomputes it
//! from the op's Philox key (see [`kiln_backend::AttentionDropout`]).

use super::fused::{ATTENTION_MAX_HEAD_DIM, check_float, check_like, dense, storage_of};
use crate::storage::Storage;
use crate::{Tensor, rng};
use kiln_backend::{AttentionDropout, AttentionParams, DType, Error, Layout, Result};
use std::sync::Arc;

const OP: &str = "scaled_dot_product_attention";

/// The optional arguments of [`Tensor::sdpa`], named as PyTorch's
/// `F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale)`.
/// `SdpaOptions::default()` is plain attention with scale `1/√head_dim`.
///
/// Masks combine: a key is hidden from a query when any of `attn_mask`, `causal` and
/// `key_padding_mask` hides it (PyTorch refuses `attn_mask` together with `is_causal`; Kiln
/// applies both). A query that no key is visible to gets a zero output and zero gradients
/// (PyTorch's math path gives the same zeros since 2.5; older versions gave NaN).
#[derive(Clone, Copy, Debug, Default)]
pub struct SdpaOptions<'a> {
    /// Broadcastable to `[batch, heads, q_len, kv_len]` (e.g. `[q_len, kv_len]`,
    /// `[batch, 1, q_len, kv_len]`). Bool: `true` means the key takes part (PyTorch's
    /// convention). Float: added to the scaled scores; `-inf` hides the key. It gets no gradient:
    /// a float mask that requires one is refused (detach it).
    pub attn_mask: Option<&'a Tensor>,
    /// Hides key `j > i` from query `i` (top-left aligned, PyTorch's `is_causal`).
    pub causal: bool,
    /// Multiplies `q·kᵀ`; `None` is `1/√head_dim`.
    pub scale: Option<f64>,
    /// Attention dropout: each probability is zeroed with this chance and the rest scaled by
    /// `1/(1 − p)`, always (like PyTorch's function, which knows no training mode; modules pass
    /// 0 in eval). The mask comes from Kiln's generator ([`crate::manual_seed`]).
    pub dropout_p: f64,
    /// `[batch, kv_len]`, bool or numeric: `true`/nonzero hides that key (PyTorch
    /// MultiheadAttention's `key_padding_mask` convention, the opposite of a bool `attn_mask`).
    pub key_padding_mask: Option<&'a Tensor>,
}

impl Tensor {
    /// Scaled dot-product attention, PyTorch's `F.scaled_dot_product_attention` with scale
    /// `1/√head_dim`: `q: [batch, heads, q_len, head_dim]`, `k, v: [batch, heads, kv_len,
    /// head_dim]`. `causal` hides key `j > i` from query `i` (top-left aligned, as PyTorch's
    /// `is_causal`); `key_padding_mask: [batch, kv_len]` (bool or nonzero = hidden) hides
    /// padded keys. A query that sees no key gets zeros. [`Tensor::sdpa`] takes the other
    /// options (a general mask, the scale, dropout).
    ///
    /// On long sequences the forward is one flash-attention kernel (tiled, online softmax, the
    /// causal mask computed from indices) that also saves each row's log-sum-exp; backward
    /// recomputes the probabilities from it in two kernels (dq; dk and dv), so no
    /// `[q_len, kv_len]` matrix is ever stored. Where that matrix is small (see
    /// [`crate::ATTENTION_SCORE_BUDGET`] and [`crate::set_attention_path`]) the GPU builds it
    /// with batched matmuls around a row-softmax kernel instead, which is much faster. The GPU
    /// takes head dims up to [`ATTENTION_MAX_HEAD_DIM`]. f16 inputs on a GPU with cooperative
    /// matrices and a head dim that is a multiple of 16 run on tensor cores (f32 accumulation and
    /// softmax statistics); under f16 [`crate::autocast`] f32 inputs do too.
    pub fn scaled_dot_product_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        causal: bool,
        key_padding_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        Tensor::sdpa(q, k, v, &SdpaOptions { causal, key_padding_mask, ..SdpaOptions::default() })
    }

    /// Scaled dot-product attention with every option of PyTorch's
    /// `F.scaled_dot_product_attention` ([`SdpaOptions`]):
    /// `dropout(softmax(scale·q·kᵀ + mask)) · v` over `q: [batch, heads, q_len, head_dim]` and
    /// `k, v: [batch, heads, kv_len, head_dim]`, on the same kernels as
    /// [`scaled_dot_product_attention`](Self::scaled_dot_product_attention). Differentiable in
    /// `q`, `k` and `v`; dropout's mask is regenerated in the backward, never stored. Every
    /// attention kernel (materialised, flash, tensor-core) takes the mask and dropout.
    ///
    /// ```
    /// # use kiln_core::{Tensor, Device, SdpaOptions};
    /// let d = Device::cpu();
    /// let q = Tensor::ones(&[1, 1, 2, 4], &d).unwrap();
    /// let v = Tensor::from_vec(vec![1.0f32, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0], &[1, 1, 2, 4], &d).unwrap();
    /// // Query 0 may see key 0 only, query 1 both keys (true = take part).
    /// let mask = Tensor::from_vec(vec![true, false, true, true], &[2, 2], &d).unwrap();
    /// let o = Tensor::sdpa(&q, &q, &v, &SdpaOptions { attn_mask: Some(&mask), ..Default::default() }).unwrap();
    /// assert_eq!(o.to_vec::<f32>().unwrap(), vec![1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]);
    /// ```
    pub fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, opts: &SdpaOptions) -> Result<Tensor> {
        check_float(OP, q)?;
        check_like(OP, q, k)?;
        check_like(OP, q, v)?;
        if let Some(out) = crate::autocast::attention(q, k, v, |q, k, v| Tensor::sdpa(q, k, v, opts)) {
            return out;
        }
        let shapes = || format!("q {:?}, k {:?}, v {:?}", q.shape(), k.shape(), v.shape());
        if q.rank() != 4
            || k.rank() != 4
            || k.shape() != v.shape()
            || q.shape()[..2] != k.shape()[..2]
            || q.shape()[3] != k.shape()[3]
        {
            return Err(Error::shape(OP, format!("expects q [b, h, tq, d] and k, v [b, h, tk, d], got {}", shapes())));
        }
        let (batch, heads, q_len, head_dim) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
        let kv_len = k.shape()[2];
        if head_dim > ATTENTION_MAX_HEAD_DIM && q.device().is_gpu() {
            return Err(Error::Unsupported {
                op: OP,
                msg: format!("head dim {head_dim} on the GPU (at most {ATTENTION_MAX_HEAD_DIM})"),
            });
        }
        let scale = opts.scale.unwrap_or(1.0 / (head_dim.max(1) as f64).sqrt());
        if !scale.is_finite() {
            return Err(Error::invalid(OP, format!("scale must be finite, got {scale}")));
        }
        if !(0.0..=1.0).contains(&opts.dropout_p) {
            return Err(Error::invalid(OP, format!("dropout_p = {} is not a probability", opts.dropout_p)));
        }
        let mask = match opts.key_padding_mask {
            None => None,
            Some(m) => {
                q.check_same_device(OP, m)?;
                if m.shape() != [batch, kv_len] {
                    return Err(Error::shape(
                        OP,
                        format!("key padding mask {:?} for {} (expects [b, tk])", m.shape(), shapes()),
                    ));
                }
                let m = if m.dtype() == DType::Bool { m.clone() } else { m.ne_scalar(0.0)? };
                Some(dense(&m)?)
            }
        };
        let dims = [batch, heads, q_len, kv_len];
        let (bias, bias_strides) = match opts.attn_mask {
            None => (None, [0; 4]),
            Some(m) => {
                let (b, strides) = bias_of(q, m, dims)?;
                (Some(b), strides)
            }
        };
        let dropout = (opts.dropout_p > 0.0).then(|| AttentionDropout {
            keep: 1.0 - opts.dropout_p,
            key: rng::reserve(AttentionDropout::stream_len(batch * heads * q_len, kv_len)),
        });
        let p = AttentionParams {
            batch,
            heads,
            q_len,
            kv_len,
            head_dim,
            causal: opts.causal,
            scale,
            bias_strides,
            dropout,
        };
        let (qd, kd, vd) = (dense(q)?, dense(k)?, dense(v)?);
        let (ms, bs) = (storage_of(&mask), storage_of(&bias));
        let (o, lse) =
            qd.storage().attention_forward(&kd.storage(), &vd.storage(), ms.as_deref(), bs.as_deref(), &p)?;
        let device = q.device().clone();
        let o = Arc::new(o);
        // The backward needs the output: a history-free handle on the same storage (capturing
        // the output tensor itself would make a reference cycle through its node).
        let saved_o = Tensor::build(o.clone(), Layout::contiguous(q.shape()), device.clone(), None);
        let lse = Tensor::leaf(lse, &[batch * heads * q_len], &device);
        let (q_shape, k_shape) = (q.shape().to_vec(), k.shape().to_vec());
        let dev = device.clone();
        let node = crate::autograd::node(OP, &[q, k, v], move |g| {
            let g = dense(g)?;
            let (ms, bs) = (storage_of(&mask), storage_of(&bias));
            let (qs, ks, vs, os, ls, gs) =
                (qd.storage(), kd.storage(), vd.storage(), saved_o.storage(), lse.storage(), g.storage());
            let [dq, dk, dv] =
                Storage::attention_backward([&qs, &ks, &vs, &os, &ls, &gs], ms.as_deref(), bs.as_deref(), &p)?;
            Ok(vec![
                Some(Tensor::leaf(dq, &q_shape, &dev)),
                Some(Tensor::leaf(dk, &k_shape, &dev)),
                Some(Tensor::leaf(dv, &k_shape, &dev)),
            ])
        });
        let out = Tensor::build(o, Layout::contiguous(q.shape()), device, node);
        crate::anomaly::check(OP, "output", &out)?;
        Ok(out)
    }
}

/// The f32 additive bias of `attn_mask` (bool: 0 where true, −inf where false), dense in the
/// mask's own shape, and its element strides over `dims` = `[batch, heads, q_len, kv_len]`
/// (0 on broadcast dims): a `[q, k]` mask is never copied per batch or head.
fn bias_of(q: &Tensor, m: &Tensor, dims: [usize; 4]) -> Result<(Tensor, [usize; 4])> {
    q.check_same_device(OP, m)?;
    let broadcasts = m.rank() <= 4 && m.shape().iter().rev().zip(dims.iter().rev()).all(|(&a, &b)| a == b || a == 1);
    if !broadcasts {
        return Err(Error::shape(
            OP,
            format!("attn_mask {:?} does not broadcast to [b, h, tq, tk] = {dims:?}", m.shape()),
        ));
    }
    let bias = match m.dtype() {
        DType::Bool => {
            let zero = Tensor::full(&[], 0.0, q.device())?;
            let hidden = Tensor::full(&[], f64::NEG_INFINITY, q.device())?;
            Tensor::where_(m, &zero, &hidden)?
        }
        dt if dt.is_float() => {
            if m.requires_grad() && crate::is_grad_enabled() {
                return Err(Error::Unsupported { op: OP, msg: "a gradient to attn_mask (detach the mask)".into() });
            }
            m.detach().to_dtype(DType::F32)?
        }
        dt => return Err(Error::dtype(OP, "a bool or float attn_mask", dt)),
    };
    let bias = dense(&bias)?;
    // The mask's shape padded to rank 4 with leading 1s, and its dense strides.
    let mut shape = [1usize; 4];
    shape[4 - m.rank()..].copy_from_slice(m.shape());
    let mut strides = [0usize; 4];
    let mut acc = 1;
    for d in (0..4).rev() {
        strides[d] = if shape[d] == 1 { 0 } else { acc };
        acc *= shape[d];
    }
    Ok((bias, strides))
}
