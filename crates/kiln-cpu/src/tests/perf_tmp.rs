use kiln_backend::{BackendStorage, ConvGeometry, ReduceOp, UnaryOp, BinaryOp, Layout};
use super::{c, st};
use std::time::Instant;

#[test]
#[ignore]
fn perf() {
    let t = |name: &str, f: &mut dyn FnMut()| { f(); let s = Instant::now(); for _ in 0..5 { f(); } println!("{name}: {:.3} ms", s.elapsed().as_secs_f64() * 200.0); };
    let a = st(vec![0.5f32; 64 * 784]);
    let w = st(vec![0.25f32; 784 * 128]);
    t("matmul 64x784x128", &mut || { a.matmul(&c(&[1, 64, 784]), &w, &c(&[1, 784, 128])).unwrap(); });
    let wt = Layout::new(vec![1, 784, 128], vec![0, 1, 784], 0);
    t("matmul 64x784x128 wT", &mut || { a.matmul(&c(&[1, 64, 784]), &w, &wt).unwrap(); });
    let big = st(vec![0.5f32; 1 << 20]);
    t("relu 1M", &mut || { big.unary(&c(&[1 << 20]), UnaryOp::Relu).unwrap(); });
    let raw = vec![0.5f32; 1 << 20];
    t("baseline relu seq", &mut || { let v: Vec<f32> = raw.iter().map(|&e| e.max(0.0)).collect(); std::hint::black_box(v); });
    t("baseline relu via f64 match seq", &mut || { let v: Vec<f32> = raw.iter().map(|&e| crate::unary::float_fn(UnaryOp::Relu, e as f64) as f32).collect(); std::hint::black_box(v); });
    t("gelu 1M", &mut || { big.unary(&c(&[1 << 20]), UnaryOp::GeluErf).unwrap(); });
    let neg = st(vec![-1.5f32; 1 << 20]);
    t("gelu neg 1M", &mut || { neg.unary(&c(&[1 << 20]), UnaryOp::GeluErf).unwrap(); });
    t("add 1M", &mut || { big.binary(&c(&[1 << 20]), &big, &c(&[1 << 20]), BinaryOp::Add).unwrap(); });
    let tl = c(&[1024, 1024]).permute(&[1, 0]);
    t("add 1M transposed", &mut || { big.binary(&tl, &big, &c(&[1024, 1024]), BinaryOp::Add).unwrap(); });
    t("sum rows 1M", &mut || { big.reduce(&c(&[1024, 1024]), ReduceOp::Sum, 1).unwrap(); });
    t("sum cols 1M (transposed)", &mut || { big.reduce(&tl, ReduceOp::Sum, 1).unwrap(); });
    t("softmax 1M", &mut || { big.softmax_last(&c(&[1024, 1024]), false).unwrap(); });
    let img = st(vec![0.5f32; 64 * 28 * 28]);
    let g = ConvGeometry { n: 64, c: 1, h: 28, w: 28, kh: 5, kw: 5, stride: (1, 1), padding: (2, 2), dilation: (1, 1) };
    t("im2col 64x1x28x28 k5", &mut || { img.im2col(&c(&[64, 1, 28, 28]), &g, 0.0).unwrap(); });
    let cols = st(vec![0.5f32; 64 * 25 * 784]);
    t("col2im", &mut || { cols.col2im(&c(&[64, 25, 784]), &g).unwrap(); });
    let img2 = st(vec![0.5f32; 64 * 32 * 14 * 14]);
    let g2 = ConvGeometry { n: 64, c: 32, h: 14, w: 14, kh: 3, kw: 3, stride: (1, 1), padding: (1, 1), dilation: (1, 1) };
    t("im2col 64x32x14x14 k3", &mut || { img2.im2col(&c(&[64, 32, 14, 14]), &g2, 0.0).unwrap(); });
    let x = st(vec![0.5f32; 64 * 288 * 196]);
    let k = st(vec![0.5f32; 64 * 288]);
    let kl = Layout::new(vec![64, 64, 288], vec![0, 288, 1], 0);
    t("conv matmul batch 64: 64x288x196", &mut || { k.matmul(&kl, &x, &c(&[64, 288, 196])).unwrap(); });
}
