//! The decoder-only character transformer of the `char_transformer` example.

use std::fmt;
use std::str::FromStr;

use kiln::nn::module::prefixed;
use kiln::nn::{Embedding, Gelu, LayerNorm, TransformerBlock};
use kiln::prelude::*;

/// The shape of a [`CharTransformer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelConfig {
    /// Number of distinct characters (rows of the token table, columns of the head).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Attention heads per block; must divide `d_model`.
    pub heads: usize,
    /// Longest sequence the model sees (rows of the position table).
    pub context: usize,
    /// Hidden width of each block's MLP, as a multiple of `d_model`.
    pub mlp_ratio: usize,
    /// Dropout on each residual branch while training.
    pub dropout: f64,
    /// Dropout of the attention probabilities while training (the twin uses `dropout`).
    pub attn_dropout: f64,
    /// Non-linearity between the two layers of each block's MLP.
    pub activation: Activation,
}

/// The MLP non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`: on the CPU backend about half the cost per step of GELU, whose erf and
    /// composite backward are slow there, at no loss in bits per character for a short run.
    Relu,
    /// Exact (erf) GELU, what `TransformerBlock` uses by default (GPT-2's choice).
    Gelu,
}

/// The two presets of `--size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Sized to train on two CPU cores in about five minutes.
    Small,
    /// Sized for a GPU: nanoGPT's character-level Shakespeare shape.
    Large,
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "small" => Ok(Size::Small),
            "large" => Ok(Size::Large),
            other => Err(format!("unknown size {other:?}, expected small or large")),
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Size::Small => "small",
            Size::Large => "large",
        })
    }
}

/// Token embedding + learned position embedding, `layers` pre-norm causal
/// [`TransformerBlock`]s, a final [`LayerNorm`] and a [`Linear`] head to next-character logits.
/// The blocks are Kiln's own; only their MLP is rebuilt, see [`block`].
///
/// Parameter names: `tok_emb.weight`, `pos_emb.weight`, `blocks.{i}.*`, `ln_f.*`, `head.*`.
pub struct CharTransformer {
    pub tok_emb: Embedding,
    pub pos_emb: Embedding,
    pub blocks: Vec<TransformerBlock>,
    pub ln_f: LayerNorm,
    pub head: Linear,
    pub config: ModelConfig,
}

impl CharTransformer {
    /// A freshly initialised model (draws from Kiln's seeded generator: call
    /// `kiln::manual_seed` first for a reproducible run).
    pub fn new(config: ModelConfig, device: &Device) -> Result<CharTransformer> {
        let ModelConfig { vocab_size, d_model, layers, context, .. } = config;
        if vocab_size == 0 || d_model == 0 || layers == 0 || context == 0 {
            return Err(Error::invalid("CharTransformer::new", format!("{config:?} has a zero size")));
        }
        let tok_emb = Embedding::new(vocab_size, d_model, device)?;
        let pos_emb = Embedding::new(context, d_model, device)?;
        let blocks = (0..layers).map(|_| block(&config, device)).collect::<Result<Vec<_>>>()?;
        Ok(CharTransformer {
            tok_emb,
            pos_emb,
            blocks,
            ln_f: LayerNorm::new(&[d_model], device)?,
            head: Linear::new(d_model, vocab_size, true, device)?,
            config,
        })
    }

    /// Next-character logits `[b, t, vocab]` for u32 ids `[b, t]`, `t ≤ context`; position `i`
    /// sees characters `0..=i` only.
    pub fn logits(&self, ids: &Tensor) -> Result<Tensor> {
        let (ctx, dev) = (self.config.context, ids.device());
        if ids.rank() != 2 || ids.shape()[1] == 0 || ids.shape()[1] > ctx {
            return Err(Error::shape(
                "CharTransformer",
                format!("expects ids [b, t] with 1 ≤ t ≤ {ctx}, got {:?}", ids.shape()),
            ));
        }
        let t = ids.shape()[1];
        let positions = Tensor::arange_u32(t, dev)?;
        // [b, t, d] + [t, d]: one position row broadcast over the batch.
        let mut x = (&self.tok_emb.forward(ids)? + &self.pos_emb.forward(&positions)?)?;
        for block in &self.blocks {
            x = block.forward_masked(&x, true, None)?;
        }
        // The head runs on [b·t, d] rows, for the reason given at `RowwiseLinear`.
        let d = self.config.d_model;
        let rows = x.reshape(&[ids.numel(), d])?;
        let logits = self.head.forward(&self.ln_f.forward(&rows)?)?;
        logits.reshape(&[ids.shape()[0], t, self.config.vocab_size])
    }
}

impl Module for CharTransformer {
    /// Same as [`CharTransformer::logits`].
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.logits(ids)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = prefixed("tok_emb", self.tok_emb.named_parameters());
        out.extend(prefixed("pos_emb", self.pos_emb.named_parameters()));
        for (i, block) in self.blocks.iter().enumerate() {
            out.extend(prefixed(&format!("blocks.{i}"), block.named_parameters()));
        }
        out.extend(prefixed("ln_f", self.ln_f.named_parameters()));
        out.extend(prefixed("head", self.head.named_parameters()));
        out
    }

    fn set_training(&self, training: bool) {
        for block in &self.blocks {
            block.set_training(training);
        }
    }
}

/// A pre-norm causal block whose MLP is `RowwiseLinear → activation → RowwiseLinear`, with the
/// same parameter names as the stock block's (`mlp.0.*`, `mlp.2.*`).
fn block(config: &ModelConfig, device: &Device) -> Result<TransformerBlock> {
    let ModelConfig { d_model, heads, mlp_ratio, dropout, attn_dropout, activation, .. } = *config;
    let mut block = TransformerBlock::new(d_model, heads, mlp_ratio, dropout, device)?;
    block.attn.dropout = attn_dropout;
    let hidden = mlp_ratio * d_model;
    let up = RowwiseLinear(Linear::new(d_model, hidden, true, device)?);
    let down = RowwiseLinear(Linear::new(hidden, d_model, true, device)?);
    block.mlp = match activation {
        Activation::Relu => Sequential::new().add(up).add(Relu).add(down),
        Activation::Gelu => Sequential::new().add(up).add(Gelu).add(down),
    };
    Ok(block)
}

/// A [`Linear`] applied to `[.., in]` as one `[rows, in]` matrix product.
///
/// `Tensor::matmul` of `[b, t, in]` by the 2-D weight broadcasts the weight into `b` separate
/// products, and its backward forms `b` weight gradients before summing them; folding the
/// leading dims first does the same arithmetic as one product (about twice as fast on the CPU
/// backend for this model's MLP). Parameters keep the wrapped layer's names.
struct RowwiseLinear(Linear);

impl Module for RowwiseLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let in_features = self.0.in_features();
        if x.rank() < 2 || x.shape()[x.rank() - 1] != in_features {
            return self.0.forward(x);
        }
        let mut shape = x.shape().to_vec();
        let y = self.0.forward(&x.reshape(&[x.numel() / in_features, in_features])?)?;
        let last = shape.len() - 1;
        shape[last] = self.0.out_features();
        y.reshape(&shape)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.0.named_parameters()
    }
}
