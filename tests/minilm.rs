//! sentence-transformers/all-MiniLM-L6-v2 in Kiln (`kiln_nn::models::bert` + the `tokenizers`
//! crate) against the embeddings sentence-transformers computed with the same weights
//! (tests/data/minilm/reference.json, made by scripts/make_minilm_reference.py): the same token
//! ids, then cosine ≥ 0.99999 and max |Δ| ≤ 1e-4 for every sentence, on the CPU backend and on
//! the GPU. Needs the model folder from scripts/fetch_minilm.sh: without it the test fails under
//! KILN_REQUIRE_MODELS=1 (CI) and is skipped loudly otherwise.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
#[path = "../examples/minilm/model.rs"]
mod minilm;

use kiln::Device;
use minilm::MiniLm;
use std::path::Path;

struct Case {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f64>,
}

fn reference() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/minilm/reference.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(json["max_seq_length"], 256);
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            ids: c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect(),
            embedding: c["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect(),
        })
        .collect()
}

/// The model folder, or `None` (skipped loudly) where it is missing and not required.
fn model_dir() -> Option<std::path::PathBuf> {
    let dir = minilm::default_dir();
    if minilm::is_present(&dir) {
        return Some(dir);
    }
    if std::env::var("KILN_REQUIRE_MODELS").as_deref() == Ok("1") {
        panic!("KILN_REQUIRE_MODELS=1 but {}", minilm::missing_message(&dir));
    }
    eprintln!("!!! SKIPPED: {} !!!", minilm::missing_message(&dir).replace('\n', " "));
    None
}

fn check(device: &Device) {
    let Some(dir) = model_dir() else { return };
    let model = MiniLm::open(&dir, device).unwrap();
    let cases = reference();
    assert!(cases.len() >= 30 && cases.iter().any(|c| c.text.is_empty()) && cases.iter().any(|c| c.ids.len() == 256));
    for c in &cases {
        assert_eq!(model.ids(&c.text).unwrap(), c.ids, "token ids of {:?}", c.text);
    }
    // Batches of 8 in the reference's order: sentences of different lengths share a batch, so
    // padding and the attention mask matter.
    let (mut worst_cos, mut worst_diff) = (1.0f64, 0.0f64);
    for chunk in cases.chunks(8) {
        let texts: Vec<&str> = chunk.iter().map(|c| c.text.as_str()).collect();
        let emb = model.embed(&texts, device).unwrap();
        assert_eq!(emb.shape(), [texts.len(), 384]);
        let got = emb.to_f64_vec().unwrap();
        for (c, g) in chunk.iter().zip(got.chunks(384)) {
            let dot: f64 = g.iter().zip(&c.embedding).map(|(a, b)| a * b).sum();
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let cos = dot / (norm(g) * norm(&c.embedding));
            let diff = g.iter().zip(&c.embedding).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(
                cos >= 0.99999 && diff <= 1e-4,
                "{:?} on {}: cosine {cos}, max |diff| {diff:e}",
                c.text,
                device.describe()
            );
            worst_cos = worst_cos.min(cos);
            worst_diff = worst_diff.max(diff);
        }
    }
    println!(
        "{}: {} sentences, worst cosine {worst_cos:.8}, worst max |diff| {worst_diff:.2e}",
        device.describe(),
        cases.len()
    );
}

#[test]
fn minilm_matches_sentence_transformers_on_cpu() {
    check(&Device::cpu());
}

#[test]
fn minilm_matches_sentence_transformers_on_gpu() {
    if let Some(d) = common::gpu("minilm") {
        check(&d);
    }
}

#[test]
fn missing_model_folder_is_a_clear_error() {
    let dir = std::env::temp_dir().join("kiln-no-such-minilm");
    let err = MiniLm::open(&dir, &Device::cpu()).err().unwrap().to_string();
    assert!(err.contains("scripts/fetch_minilm.sh") && err.contains("kiln-no-such-minilm"), "{err}");
}
