//! The decoder-only character transformer of the `char_transformer` example.

use std::fmt;
use std::str::FromStr;

use kiln::{Device, Error, Result, Tensor};
use kiln_nn::module::prefixed;
use kiln_nn::{Embedding, LayerNorm, Linear, Module, TransformerBlock};

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

/// Standard deviation of the embedding tables. `Embedding::new` draws N(0, 1), which is
/// far larger than what AdamW's ~1e-3 steps can reshape in a short run; GPT-2's 0.02 lets the
/// tables move from the first steps (the blocks see them through a LayerNorm either way).
const EMBEDDING_STD: f64 = 0.02;

impl CharTransformer {
    /// A freshly initialised model (draws from Kiln's seeded generator: call
    /// `kiln::manual_seed` first for a reproducible run).
    pub fn new(config: ModelConfig, device: &Device) -> Result<CharTransformer> {
        let ModelConfig { vocab_size, d_model, layers, heads, context, mlp_ratio, dropout } = config;
        if vocab_size == 0 || d_model == 0 || layers == 0 || context == 0 {
            return Err(Error::invalid("CharTransformer::new", format!("{config:?} has a zero size")));
        }
        let tok_emb = Embedding::new(vocab_size, d_model, device)?;
        let pos_emb = Embedding::new(context, d_model, device)?;
        for table in [&tok_emb.weight, &pos_emb.weight] {
            table.set_data(&kiln_nn::init::normal(table.shape(), 0.0, EMBEDDING_STD, device)?)?;
        }
        let blocks = (0..layers)
            .map(|_| TransformerBlock::new(d_model, heads, mlp_ratio, dropout, device))
            .collect::<Result<Vec<_>>>()?;
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
            return Err(Error::shape("CharTransformer", format!("expects ids [b, t] with 1 ≤ t ≤ {ctx}, got {:?}", ids.shape())));
        }
        let t = ids.shape()[1];
        let positions = Tensor::arange_u32(t, dev)?;
        // [b, t, d] + [t, d]: one position row broadcast over the batch.
        let mut x = (&self.tok_emb.forward(ids)? + &self.pos_emb.forward(&positions)?)?;
        for block in &self.blocks {
            x = block.forward_masked(&x, true, None)?;
        }
        self.head.forward(&self.ln_f.forward(&x)?)
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
