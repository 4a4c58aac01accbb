//! The models of W5, W6/W9 and W7, built from kiln-nn the way `torch_bench.py` builds them
//! from `torch.nn` (same layers, widths, activations and initialisations).

use kiln_core::{Conv2dOptions, Device, Result, Tensor};
use kiln_nn::module::prefixed;
use kiln_nn::{Conv2d, Embedding, Flatten, LayerNorm, Linear, MaxPool2d, Module, Relu, Sequential, TransformerBlock};

/// W5: 784-1024-1024-10 with ReLU.
pub fn mlp(device: &Device) -> Result<Sequential> {
    Ok(Sequential::new()
        .add(Linear::new(784, 1024, true, device)?)
        .add(Relu)
        .add(Linear::new(1024, 1024, true, device)?)
        .add(Relu)
        .add(Linear::new(1024, 10, true, device)?))
}

/// W7: conv 1→32 3×3 pad 1, ReLU, conv 32→64 3×3 pad 1, ReLU, max-pool 2×2, linear
/// 64·14·14→128, ReLU, linear 128→10. Input `[n, 1, 28, 28]`.
pub fn cnn(device: &Device) -> Result<Sequential> {
    let same = Conv2dOptions { padding: (1, 1), ..Default::default() };
    Ok(Sequential::new()
        .add(Conv2d::new(1, 32, (3, 3), same, true, device)?)
        .add(Relu)
        .add(Conv2d::new(32, 64, (3, 3), same, true, device)?)
        .add(Relu)
        .add(MaxPool2d::new((2, 2), (2, 2), (0, 0)))
        .add(Flatten)
        .add(Linear::new(64 * 14 * 14, 128, true, device)?)
        .add(Relu)
        .add(Linear::new(128, 10, true, device)?))
}

pub const GPT_VOCAB: usize = 256;
pub const GPT_D_MODEL: usize = 256;
pub const GPT_HEADS: usize = 4;
pub const GPT_LAYERS: usize = 4;
pub const GPT_MAX_SEQ: usize = 256;

/// W6/W9: a decoder-only transformer. Token + learned position embeddings, `GPT_LAYERS`
/// pre-LayerNorm blocks (MLP 4× with erf GELU, no dropout) run with causal attention, a final
/// LayerNorm and a linear head to the vocabulary: `torch_bench.py`'s `Gpt`.
pub struct Gpt {
    pub tok: Embedding,
    pub pos: Embedding,
    pub blocks: Vec<TransformerBlock>,
    pub ln_f: LayerNorm,
    pub head: Linear,
}

impl Gpt {
    pub fn new(device: &Device) -> Result<Gpt> {
        Gpt::with_dropout(0.0, device)
    }

    /// W6d's model: dropout `p` on each block's two residual branches while training (where
    /// `TransformerBlock` puts it; `torch_w6_dropout.py` puts PyTorch's there too).
    pub fn with_dropout(p: f64, device: &Device) -> Result<Gpt> {
        Ok(Gpt {
            tok: Embedding::new(GPT_VOCAB, GPT_D_MODEL, device)?,
            pos: Embedding::new(GPT_MAX_SEQ, GPT_D_MODEL, device)?,
            blocks: (0..GPT_LAYERS)
                .map(|_| TransformerBlock::new(GPT_D_MODEL, GPT_HEADS, 4, p, device))
                .collect::<Result<_>>()?,
            ln_f: LayerNorm::new(&[GPT_D_MODEL], device)?,
            head: Linear::new(GPT_D_MODEL, GPT_VOCAB, true, device)?,
        })
    }

    /// Logits `[b, s, vocab]` for u32 `tokens: [b, s]`; `positions: [1, s]` (0..s) is built once
    /// by the caller, as the PyTorch baseline does.
    pub fn logits(&self, tokens: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let mut x = (&self.tok.forward(tokens)? + &self.pos.forward(positions)?)?;
        for block in &self.blocks {
            x = block.forward_masked(&x, true, None)?;
        }
        self.head.forward(&self.ln_f.forward(&x)?)
    }
}

/// `[1, s]` position ids `0..s`.
pub fn positions(s: usize, device: &Device) -> Result<Tensor> {
    Tensor::arange_u32(s, device)?.reshape(&[1, s])
}

impl Module for Gpt {
    fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let s = tokens.dim(-1)?;
        self.logits(tokens, &positions(s, tokens.device())?)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = prefixed("tok", self.tok.named_parameters());
        out.extend(prefixed("pos", self.pos.named_parameters()));
        for (i, b) in self.blocks.iter().enumerate() {
            out.extend(prefixed(&format!("blocks.{i}"), b.named_parameters()));
        }
        out.extend(prefixed("ln_f", self.ln_f.named_parameters()));
        out.extend(prefixed("head", self.head.named_parameters()));
        out
    }

    fn set_training(&self, training: bool) {
        for b in &self.blocks {
            b.set_training(training);
        }
    }
}
