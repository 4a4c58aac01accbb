//! W11: sentence embeddings with the all-MiniLM-L6-v2 architecture (`kiln_nn::models::bert`:
//! 6 post-LN layers of width 384, 12 heads, GELU, mean pooling, L2 normalisation), batch 64 ×
//! 128 tokens, forward only under `no_grad`: sentences/s. `--amp` runs it under f16 autocast.
//!
//! The weights are Kiln's seeded random initialisation, not the pretrained ones: the time does
//! not depend on the values (same shapes, same kernels, no data-dependent branches), and the GPU
//! machine needs no 90 MB download. `benches/torch_minilm.py` runs the same model in PyTorch.
//! Every sentence is a full 128 tokens; the attention mask is still passed (all ones), as a
//! tokenizer's output would be.

use crate::harness::{Ctx, measure};
use crate::inputs::ids;
use kiln_core::{DType, Result, Tensor};
use kiln_nn::models::bert::{BertConfig, BertModel};

pub fn w11(ctx: &Ctx) -> Result<()> {
    let (b, t) = if ctx.small { (8, 32) } else { (64, 128) };
    let d = &ctx.device;
    kiln_core::manual_seed(11);
    let cfg = BertConfig::minilm_l6();
    let model = BertModel::new(&cfg, d)?;
    let tokens = ids(&[b, t], cfg.vocab_size as u32, 11, d)?;
    let mask = Tensor::ones(&[b, t], d)?.to_dtype(DType::U32)?;
    ctx.sync()?;
    let label = if ctx.amp { "W11 (amp)" } else { "W11" };
    let secs = measure(ctx, label, || {
        let emb = kiln_core::no_grad(|| {
            if ctx.amp {
                kiln_core::autocast(DType::F16, || model.embed(&tokens, &mask))
            } else {
                model.embed(&tokens, &mask)
            }
        })?;
        ctx.sync()?;
        drop(emb);
        Ok(())
    })?;
    ctx.emit_with("W11", &format!("b{b}s{t}"), "sentences/s", b as f64 / secs, &[("ms_per_batch", secs * 1e3)]);
    Ok(())
}
