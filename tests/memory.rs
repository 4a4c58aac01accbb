//! Training does not grow GPU memory: the pool recycles every step's buffers and the graph is
//! freed by backward. Also: the same op run 1000 times builds one pipeline.

mod common;

use kiln::prelude::*;

#[test]
fn thousand_training_steps_keep_memory_flat() {
    let Some(g) = common::gpu("thousand_training_steps_keep_memory_flat") else { return };
    kiln::manual_seed(1);
    let x = Tensor::randn(&[32, 20], &g).unwrap();
    let y = Tensor::randn(&[32, 1], &g).unwrap();
    let w1 = Tensor::randn(&[20, 16], &g).unwrap().mul_scalar(0.2).unwrap().with_grad();
    let w2 = Tensor::randn(&[16, 1], &g).unwrap().mul_scalar(0.2).unwrap().with_grad();
    let mut at_100 = None;
    let mut first_loss = 0.0;
    for step in 0..1000 {
        let pred = x.matmul(&w1).unwrap().relu().unwrap().matmul(&w2).unwrap();
        let loss = (&pred - &y).unwrap().square().unwrap().mean_all().unwrap();
        loss.backward().unwrap();
        kiln::no_grad(|| {
            for w in [&w1, &w2] {
                let grad = w.grad().unwrap();
                w.set_data(&(w - &grad.mul_scalar(0.05).unwrap()).unwrap()).unwrap();
                w.zero_grad();
            }
        });
        if step == 0 {
            first_loss = loss.item().unwrap();
        }
        if step == 100 {
            g.sync().unwrap();
            at_100 = Some(g.memory_stats());
        }
        if step == 999 {
            assert!(loss.item().unwrap() < first_loss, "the loss must go down");
        }
    }
    g.sync().unwrap();
    let (a, b) = (at_100.unwrap(), g.memory_stats());
    let total = |s: kiln::MemoryStats| (s.live_bytes + s.pooled_bytes) as f64;
    assert!(total(b) <= total(a) * 1.05 + 4096.0, "memory grew: {a:?} -> {b:?}");
    assert!(b.allocations <= a.allocations + 4, "new buffers after warm-up: {a:?} -> {b:?}");
}
