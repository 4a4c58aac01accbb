// TEMPORARY op timing
use std::time::Instant;
use kiln::{Device, Tensor};
use kiln_nn::Module;
pub fn bench(dev: &Device) -> kiln::Result<()> {
    kiln::manual_seed(0);
    let time = |name: &str, f: &dyn Fn() -> kiln::Result<Tensor>| -> kiln::Result<()> {
        let _ = f()?;
        let s = Instant::now();
        for _ in 0..5 { let _ = f()?; }
        eprintln!("{name:<40} {:>8.2} ms", s.elapsed().as_secs_f64() * 200.0);
        Ok(())
    };
    let x = Tensor::randn(&[2048, 128], dev)?;
    let w = Tensor::randn(&[512, 128], dev)?;
    let h = Tensor::randn(&[32, 64, 512], dev)?;
    let x3 = Tensor::randn(&[32, 64, 128], dev)?;
    let s = Tensor::randn(&[32, 4, 64, 64], dev)?;
    time("matmul 2048x128 . (512x128)^T", &|| x.matmul(&w.t()?))?;
    time("matmul contiguous w", &|| { let wt = w.t()?.contiguous()?; x.matmul(&wt) })?;
    time("gelu [32,64,512]", &|| h.gelu())?;
    time("add [32,64,512]", &|| &h + &h)?;
    time("mul_scalar [32,64,512]", &|| h.mul_scalar(2.0))?;
    let ln = kiln_nn::LayerNorm::new(&[128], dev)?;
    time("layernorm [32,64,128]", &|| ln.forward(&x3))?;
    time("softmax [32,4,64,64]", &|| s.softmax(-1))?;
    let m: Vec<bool> = (0..64 * 64).map(|i| i % 64 > i / 64).collect();
    let m = Tensor::from_vec(m, &[64, 64], dev)?;
    time("masked_fill [32,4,64,64]", &|| s.masked_fill(&m, -1e30))?;
    time("transpose-contig [32,64,4,32]", &|| x3.reshape(&[32, 64, 4, 32])?.transpose(1, 2)?.contiguous())?;
    let q = x3.reshape(&[32, 64, 4, 32])?.transpose(1, 2)?;
    time("q.k^T batched", &|| q.matmul(&q.transpose(-2, -1)?))?;
    let logits = Tensor::randn(&[2048, 83], dev)?;
    let y = Tensor::from_vec((0..2048u32).map(|i| i % 83).collect::<Vec<_>>(), &[2048], dev)?;
    time("cross_entropy [2048,83]", &|| kiln_nn::loss::cross_entropy_loss(&logits, &y))?;
    let emb = kiln_nn::Embedding::new(83, 128, dev)?;
    let ids = Tensor::from_vec((0..2048u32).map(|i| i % 83).collect::<Vec<_>>(), &[32, 64], dev)?;
    time("embedding fwd", &|| emb.forward(&ids))?;
    // backward timings
    let timeb = |name: &str, f: &dyn Fn(&Tensor) -> kiln::Result<Tensor>, shape: &[usize]| -> kiln::Result<()> {
        let s = Instant::now();
        let mut fwd = 0.0;
        for _ in 0..5 {
            let a = Tensor::randn(shape, dev)?.with_grad();
            let t0 = Instant::now();
            let out = f(&a)?.sum_all()?;
            fwd += t0.elapsed().as_secs_f64();
            out.backward()?;
        }
        eprintln!("{name:<40} fwd+bwd {:>8.2} ms (fwd {:.2})", s.elapsed().as_secs_f64() * 200.0, fwd * 200.0);
        Ok(())
    };
    timeb("gelu bwd", &|a| a.gelu(), &[32, 64, 512])?;
    timeb("layernorm bwd", &|a| ln.forward(a), &[32, 64, 128])?;
    timeb("softmax bwd", &|a| a.softmax(-1), &[32, 4, 64, 64])?;
    timeb("masked_fill bwd", &|a| a.masked_fill(&m, -1e30), &[32, 4, 64, 64])?;
    timeb("linear bwd", &|a| a.matmul(&w.t()?), &[2048, 128])?;
    timeb("ce bwd", &|a| kiln_nn::loss::cross_entropy_loss(a, &y), &[2048, 83])?;
    let block = kiln_nn::TransformerBlock::new(128, 4, 4, 0.0, dev)?;
    timeb("block causal", &|a| block.forward_masked(a, true, None), &[32, 64, 128])?;
    timeb("block noncausal", &|a| block.forward(a), &[32, 64, 128])?;
    Ok(())
}
