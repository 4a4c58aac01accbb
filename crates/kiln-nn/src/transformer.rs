//! A pre-norm transformer block.

use crate::activation::Gelu;
use crate::attention::MultiHeadAttention;
use crate::dropout::Dropout;
use crate::linear::Linear;
use crate::module::{Module, prefixed};
use crate::norm::LayerNorm;
use crate::sequential::Sequential;
use kiln_core::{Device, Error, Result, Tensor};

/// A pre-norm (GPT-2 style) transformer block over `[b, t, d_model]`:
///
/// ```text
/// h   = x + dropout(attn(ln1(x)))
/// out = h + dropout(mlp(ln2(h)))      mlp = Linear(d, r·d) → GELU (erf) → Linear(r·d, d)
/// ```
///
/// Parameter names: `"ln1.*"`, `"attn.{q,k,v,out}_proj.*"`, `"ln2.*"`, `"mlp.0.*"`, `"mlp.2.*"`
/// (the MLP is a [`Sequential`], so its two linear layers are children 0 and 2). Dropout is
/// applied to each branch's output before the residual add, and (the same `p`) to the
/// attention probabilities, as GPT-2 and nanoGPT do (`attn.dropout`; set it apart after `new`).
pub struct TransformerBlock {
    pub ln1: LayerNorm,
    pub attn: MultiHeadAttention,
    pub ln2: LayerNorm,
    pub mlp: Sequential,
    pub dropout: Dropout,
}

impl TransformerBlock {
    /// A block of width `d_model` with `heads` attention heads and an MLP `mlp_ratio` times wider.
    pub fn new(
        d_model: usize,
        heads: usize,
        mlp_ratio: usize,
        dropout: f64,
        device: &Device,
    ) -> Result<TransformerBlock> {
        if mlp_ratio == 0 || !(0.0..1.0).contains(&dropout) {
            return Err(Error::invalid("TransformerBlock::new", format!("mlp_ratio {mlp_ratio}, dropout {dropout}")));
        }
        let hidden = mlp_ratio * d_model;
        Ok(TransformerBlock {
            ln1: LayerNorm::new(&[d_model], device)?,
            attn: MultiHeadAttention::new(d_model, heads, true, device)?.with_dropout(dropout),
            ln2: LayerNorm::new(&[d_model], device)?,
            mlp: Sequential::new()
                .add(Linear::new(d_model, hidden, true, device)?)
                .add(Gelu)
                .add(Linear::new(hidden, d_model, true, device)?),
            dropout: Dropout::new(dropout),
        })
    }

    /// Runs the block with optional causal masking and key padding mask (`[b, t]`, true = pad);
    /// see [`MultiHeadAttention::forward_masked`].
    pub fn forward_masked(&self, x: &Tensor, causal: bool, padding_mask: Option<&Tensor>) -> Result<Tensor> {
        let a = self.attn.forward_masked(&self.ln1.forward(x)?, causal, padding_mask)?;
        let h = (x + &self.dropout.forward(&a)?)?;
        let m = self.mlp.forward(&self.ln2.forward(&h)?)?;
        &h + &self.dropout.forward(&m)?
    }
}

impl Module for TransformerBlock {
    /// Bidirectional (not causal), no padding mask; use
    /// [`forward_masked`](TransformerBlock::forward_masked) for a language model.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_masked(x, false, None)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = prefixed("ln1", self.ln1.named_parameters());
        out.extend(prefixed("attn", self.attn.named_parameters()));
        out.extend(prefixed("ln2", self.ln2.named_parameters()));
        out.extend(prefixed("mlp", self.mlp.named_parameters()));
        out
    }

    fn set_training(&self, training: bool) {
        self.dropout.set_training(training);
        self.mlp.set_training(training);
        self.attn.set_training(training);
    }
}
