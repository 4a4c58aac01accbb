//! `Module::to_device`: a model built on one device moves in place, every handle follows, and it
//! trains on the new device exactly as an identical model built there.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{assert_close, data, gpu, seeded};
use kiln_core::{Device, Tensor};
use kiln_nn::loss::mse_loss;
use kiln_nn::optim::{Adam, AdamConfig, Optimizer};
use kiln_nn::{BatchNorm1d, Linear, Module, ModuleExt, Reduction, Relu, Sequential};

fn model(device: &Device) -> Sequential {
    Sequential::new()
        .add(Linear::new(5, 7, true, device).unwrap())
        .add(BatchNorm1d::new(7, device).unwrap())
        .add(Relu)
        .add(Linear::new(7, 3, true, device).unwrap())
}

/// Three Adam steps on fixed data; returns the parameters afterwards, in order.
fn train(m: &Sequential, device: &Device) -> Vec<Vec<f64>> {
    let (x, _) = data(1, &[9, 5], kiln_core::DType::F32, device);
    let (y, _) = data(2, &[9, 3], kiln_core::DType::F32, device);
    let mut opt = Adam::new(m.parameters(), AdamConfig { lr: 0.05, ..Default::default() }).unwrap();
    for _ in 0..3 {
        opt.zero_grad();
        let loss = mse_loss(&m.forward(&x).unwrap(), &y, Reduction::Mean).unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
    }
    m.parameters().iter().map(|p| p.to_f64_vec().unwrap()).collect()
}

#[test]
fn moved_model_trains_like_one_built_on_the_target() {
    let Some(g) = gpu() else { return };
    let (built_there, moved) = {
        let _lock = seeded(7);
        let a = model(&g);
        kiln_core::manual_seed(7);
        (a, model(&Device::cpu()))
    };
    let handles: Vec<Tensor> = moved.parameters();
    moved.to_device(&g).unwrap();
    for (name, t) in moved.named_parameters().into_iter().chain(moved.named_buffers()) {
        assert_eq!(t.device(), &g, "{name} did not move");
    }
    assert!(handles.iter().all(|h| h.device() == &g), "handles taken before the move must follow it");

    let want = train(&built_there, &g);
    let got = train(&moved, &g);
    for (i, (w, h)) in want.iter().zip(&got).enumerate() {
        assert_close(&format!("param {i}"), h, w, 1e-5);
    }
    // BatchNorm's running statistics moved too and were updated on the GPU.
    let stats = |m: &Sequential| m.named_buffers().iter().map(|(_, t)| t.to_f64_vec().unwrap()).collect::<Vec<_>>();
    for (w, h) in stats(&built_there).iter().zip(&stats(&moved)) {
        assert_close("running stats", h, w, 1e-5);
    }

    // And back to the CPU, values intact.
    moved.to_device(&Device::cpu()).unwrap();
    for (p, w) in moved.parameters().iter().zip(&got) {
        assert_eq!(p.device(), &Device::cpu());
        assert_eq!(&p.to_f64_vec().unwrap(), w);
    }
}

#[test]
fn gradient_moves_with_its_parameter() {
    let Some(g) = gpu() else { return };
    let w = Tensor::from_vec(vec![1.0f32, -2.0, 3.0], &[3], &Device::cpu()).unwrap().with_grad();
    (&w * &w).unwrap().sum_all().unwrap().backward().unwrap();
    w.move_to_(&g).unwrap();
    let grad = w.grad().expect("gradient kept");
    assert_eq!(grad.device(), &g);
    assert_eq!(grad.to_vec::<f32>().unwrap(), vec![2.0, -4.0, 6.0]);
    // Accumulating after the move happens on the new device.
    (&w * &w).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec::<f32>().unwrap(), vec![4.0, -8.0, 12.0]);
}

#[test]
fn tensors_that_cannot_move_are_refused_and_nothing_moves() {
    let Some(target) = gpu() else { return };
    let cpu = Device::cpu();
    let a = Tensor::ones(&[2, 3], &cpu).unwrap();
    let view = Tensor::ones(&[2, 3], &cpu).unwrap().t().unwrap();
    let err = Tensor::move_all_to_(&[a.clone(), view.clone()], &target);
    assert!(matches!(err, Err(kiln_core::Error::InvalidArgument { .. })), "{err:?}");
    assert_eq!(a.device(), &cpu, "all or nothing: the first tensor must not have moved");
    assert_eq!(view.device(), &cpu);
    let x = Tensor::ones(&[2], &cpu).unwrap().with_grad();
    let y = (&x * 2.0).unwrap();
    let err = y.move_to_(&target);
    assert!(matches!(err, Err(kiln_core::Error::InvalidArgument { .. })), "{err:?}");
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![2.0, 2.0]);
}
