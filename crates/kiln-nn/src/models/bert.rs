//! A BERT encoder (Hugging Face `BertModel`, inference) and sentence-transformers' mean pooling,
//! enough to run `sentence-transformers/all-MiniLM-L6-v2` and other BERT-family embedding
//! models from their `model.safetensors`.
//!
//! Parameter names are Hugging Face's (`embeddings.word_embeddings.weight`,
//! `encoder.layer.0.attention.self.query.weight`, ..), so a checkpoint loads with
//! [`BertModel::load`]. The pooler (`pooler.dense.*`) is left out: sentence embeddings do not
//! use it. There is no dropout: this is the model in `eval()` mode.
//!
//! ```text
//! x   = LayerNorm(word[ids] + position[0..t] + token_type[0])
//! per layer (post-LN):
//!   a = LayerNorm(x + dense(attention(query(x), key(x), value(x), padding from attention_mask)))
//!   x = LayerNorm(a + dense2(gelu_erf(dense1(a))))
//! ```

use crate::module::{Module, prefixed};
use crate::torch::{LoadReport, StateDict};
use crate::{Embedding, LayerNorm, Linear};
use kiln_core::{Device, Error, Result, Tensor};
use std::path::Path;

/// The sizes of a BERT model (Hugging Face's `config.json` names).
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
}

impl BertConfig {
    /// `sentence-transformers/all-MiniLM-L6-v2`: 6 layers of width 384, 12 heads of 32.
    pub fn minilm_l6() -> BertConfig {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
        }
    }

    /// Reads a Hugging Face `config.json`. Only absolute position embeddings and the erf GELU
    /// are implemented; a config asking for anything else is an error, not a silent mismatch.
    pub fn from_hf_json(text: &str) -> Result<BertConfig> {
        const OP: &str = "BertConfig::from_hf_json";
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::invalid(OP, format!("not JSON: {e}")))?;
        let size = |key: &str| -> Result<usize> {
            v.get(key)
                .and_then(serde_json::Value::as_u64)
                .map(|n| n as usize)
                .ok_or_else(|| Error::invalid(OP, format!("no integer {key:?}")))
        };
        let text_field =
            |key: &str, default: &str| v.get(key).and_then(serde_json::Value::as_str).unwrap_or(default).to_string();
        let act = text_field("hidden_act", "gelu");
        if act != "gelu" {
            return Err(Error::invalid(OP, format!("hidden_act {act:?}: only \"gelu\" (erf) is implemented")));
        }
        let pos = text_field("position_embedding_type", "absolute");
        if pos != "absolute" {
            return Err(Error::invalid(
                OP,
                format!("position_embedding_type {pos:?}: only \"absolute\" is implemented"),
            ));
        }
        let cfg = BertConfig {
            vocab_size: size("vocab_size")?,
            hidden_size: size("hidden_size")?,
            num_hidden_layers: size("num_hidden_layers")?,
            num_attention_heads: size("num_attention_heads")?,
            intermediate_size: size("intermediate_size")?,
            max_position_embeddings: size("max_position_embeddings")?,
            type_vocab_size: size("type_vocab_size")?,
            layer_norm_eps: v.get("layer_norm_eps").and_then(serde_json::Value::as_f64).unwrap_or(1e-12),
        };
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(Error::invalid(
                OP,
                format!("hidden_size {} is not a multiple of {} heads", cfg.hidden_size, cfg.num_attention_heads),
            ));
        }
        Ok(cfg)
    }
}

fn layer_norm(dim: usize, eps: f64, device: &Device) -> Result<LayerNorm> {
    let mut ln = LayerNorm::new(&[dim], device)?;
    ln.eps = eps;
    Ok(ln)
}

/// `LayerNorm(dense(x) + residual)`: BERT's `attention.output` and `output` blocks.
pub struct AddNorm {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
}

impl AddNorm {
    fn new(inp: usize, out: usize, eps: f64, device: &Device) -> Result<AddNorm> {
        Ok(AddNorm { dense: Linear::new(inp, out, true, device)?, layer_norm: layer_norm(out, eps, device)? })
    }

    fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.layer_norm.forward(&(&self.dense.forward(x)? + residual)?)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = prefixed("dense", self.dense.named_parameters());
        out.extend(prefixed("LayerNorm", self.layer_norm.named_parameters()));
        out
    }
}

/// One post-LN encoder layer.
pub struct BertLayer {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub heads: usize,
    pub attention_output: AddNorm,
    pub intermediate: Linear,
    pub output: AddNorm,
}

impl BertLayer {
    fn new(cfg: &BertConfig, device: &Device) -> Result<BertLayer> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        Ok(BertLayer {
            query: Linear::new(h, h, true, device)?,
            key: Linear::new(h, h, true, device)?,
            value: Linear::new(h, h, true, device)?,
            heads: cfg.num_attention_heads,
            attention_output: AddNorm::new(h, h, eps, device)?,
            intermediate: Linear::new(h, i, true, device)?,
            output: AddNorm::new(i, h, eps, device)?,
        })
    }

    /// `x: [b, t, h]`; `padding: [b, t]`, true where there is no token.
    pub fn forward(&self, x: &Tensor, padding: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, h) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let dh = h / self.heads;
        let heads = |y: Tensor| -> Result<Tensor> { y.reshape(&[b, t, self.heads, dh])?.transpose(1, 2) };
        let (q, k, v) = (heads(self.query.forward(x)?)?, heads(self.key.forward(x)?)?, heads(self.value.forward(x)?)?);
        let ctx = Tensor::scaled_dot_product_attention(&q, &k, &v, false, padding)?;
        let ctx = ctx.transpose(1, 2)?.reshape(&[b, t, h])?;
        let a = self.attention_output.forward(&ctx, x)?;
        self.output.forward(&self.intermediate.forward(&a)?.gelu()?, &a)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = prefixed("attention.self.query", self.query.named_parameters());
        out.extend(prefixed("attention.self.key", self.key.named_parameters()));
        out.extend(prefixed("attention.self.value", self.value.named_parameters()));
        out.extend(prefixed("attention.output", self.attention_output.named_parameters()));
        out.extend(prefixed("intermediate.dense", self.intermediate.named_parameters()));
        out.extend(prefixed("output", self.output.named_parameters()));
        out
    }
}

/// Hugging Face's `BertModel` without the pooler.
pub struct BertModel {
    pub config: BertConfig,
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub embeddings_norm: LayerNorm,
    pub layers: Vec<BertLayer>,
}

impl BertModel {
    /// A model with random weights (load a checkpoint with [`BertModel::load`]).
    pub fn new(config: &BertConfig, device: &Device) -> Result<BertModel> {
        let h = config.hidden_size;
        if config.num_attention_heads == 0 || !h.is_multiple_of(config.num_attention_heads) {
            return Err(Error::invalid(
                "BertModel::new",
                format!("hidden_size {h} is not a multiple of {} heads", config.num_attention_heads),
            ));
        }
        Ok(BertModel {
            config: config.clone(),
            word_embeddings: Embedding::new(config.vocab_size, h, device)?,
            position_embeddings: Embedding::new(config.max_position_embeddings, h, device)?,
            token_type_embeddings: Embedding::new(config.type_vocab_size, h, device)?,
            embeddings_norm: layer_norm(h, config.layer_norm_eps, device)?,
            layers: (0..config.num_hidden_layers).map(|_| BertLayer::new(config, device)).collect::<Result<_>>()?,
        })
    }

    /// A Hugging Face checkpoint as this model names it: a `bert.` prefix (task models) is
    /// stripped, and the pooler and the `position_ids` buffer are dropped.
    pub fn hf_state_dict(path: impl AsRef<Path>) -> Result<StateDict> {
        Ok(StateDict::open(path)?
            .strip_prefix("bert.")
            .filter(|k| !k.starts_with("pooler.") && k != "embeddings.position_ids"))
    }

    /// Loads a Hugging Face `model.safetensors` (strictly: every weight must be there, and
    /// nothing else but what [`BertModel::hf_state_dict`] drops).
    pub fn load(&self, path: impl AsRef<Path>) -> Result<LoadReport> {
        crate::torch::load_state_dict(self, &Self::hf_state_dict(path)?, true)
    }

    /// The last hidden state `[b, t, hidden]` for token ids `[b, t]` (u32 or i32) and
    /// `attention_mask` `[b, t]` (1 for tokens, 0 for padding; any dtype), all of token type 0.
    /// Padded positions get values too (attending to the real tokens); pooling ignores them.
    pub fn forward_masked(&self, ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        const OP: &str = "BertModel";
        if ids.rank() != 2 {
            return Err(Error::shape(OP, format!("ids {:?} are not [batch, tokens]", ids.shape())));
        }
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        if t > self.config.max_position_embeddings {
            return Err(Error::shape(
                OP,
                format!("{t} tokens, the model has {} positions", self.config.max_position_embeddings),
            ));
        }
        if let Some(m) = attention_mask.filter(|m| m.shape() != [b, t]) {
            return Err(Error::shape(OP, format!("attention_mask {:?} for ids {:?}", m.shape(), ids.shape())));
        }
        let device = ids.device();
        let positions = Tensor::from_vec((0..t as u32).collect::<Vec<_>>(), &[t], device)?;
        let token_type = Tensor::from_vec(vec![0u32], &[1], device)?;
        let x = (&self.word_embeddings.forward(ids)? + &self.position_embeddings.forward(&positions)?)?;
        let x = (&x + &self.token_type_embeddings.forward(&token_type)?)?;
        let mut x = self.embeddings_norm.forward(&x)?;
        let padding = attention_mask.map(|m| m.eq_scalar(0.0)).transpose()?;
        for layer in &self.layers {
            x = layer.forward(&x, padding.as_ref())?;
        }
        Ok(x)
    }

    /// Sentence embeddings as sentence-transformers computes them for all-MiniLM-L6-v2: the
    /// mean of the last hidden state over real tokens, L2-normalised. `[b, hidden]`.
    pub fn embed(&self, ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        l2_normalize(&mean_pool(&self.forward_masked(ids, Some(attention_mask))?, attention_mask)?)
    }
}

/// sentence-transformers' mean pooling: `Σ_t h[b, t]·m[b, t] / max(Σ_t m[b, t], 1e-9)` for
/// `hidden: [b, t, h]` and `attention_mask: [b, t]` (1 = token).
pub fn mean_pool(hidden: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
    let m = attention_mask.to_dtype(hidden.dtype())?.unsqueeze(-1)?; // [b, t, 1]
    let sum = (hidden * &m)?.sum(&[1], false)?;
    let count = m.sum(&[1], false)?.maximum_scalar(1e-9)?;
    &sum / &count
}

/// `x / max(‖x‖₂, 1e-12)` along the last dim (`torch.nn.functional.normalize`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.square()?.sum(&[-1], true)?.sqrt()?.maximum_scalar(1e-12)?;
    x / &norm
}

impl Module for BertModel {
    /// [`BertModel::forward_masked`] with every position a token.
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.forward_masked(ids, None)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = prefixed("embeddings.word_embeddings", self.word_embeddings.named_parameters());
        out.extend(prefixed("embeddings.position_embeddings", self.position_embeddings.named_parameters()));
        out.extend(prefixed("embeddings.token_type_embeddings", self.token_type_embeddings.named_parameters()));
        out.extend(prefixed("embeddings.LayerNorm", self.embeddings_norm.named_parameters()));
        for (i, layer) in self.layers.iter().enumerate() {
            out.extend(prefixed(&format!("encoder.layer.{i}"), layer.named_parameters()));
        }
        out
    }
}
