use half::f16;
use kiln_backend::{AdamParams, BackendStorage, Error, HostData};

use super::{Rng, st};

/// Adam's update of one element, written out in f64 from the textbook formula.
fn adam_ref(x: f64, g: f64, m: f64, v: f64, p: &AdamParams) -> (f64, f64, f64) {
    let t = p.step as f64;
    let (mut x, mut g) = (x, g);
    if p.decoupled {
        x *= 1.0 - p.lr * p.weight_decay;
    } else {
        g += p.weight_decay * x;
    }
    let m = p.beta1 * m + (1.0 - p.beta1) * g;
    let v = p.beta2 * v + (1.0 - p.beta2) * g * g;
    let m_hat_rate = p.lr / (1.0 - p.beta1.powf(t));
    let denom = v.sqrt() / (1.0 - p.beta2.powf(t)).sqrt() + p.eps;
    (x - m_hat_rate * m / denom, m, v)
}

#[test]
fn adam_step_updates_in_place_as_the_f64_formula_rounded_once() {
    let mut rng = Rng::new(23);
    // 7 stays on one thread; 40 001 splits across threads.
    for n in [1, 7, 40_001] {
        for (decoupled, weight_decay) in [(false, 0.0), (false, 0.1), (true, 0.01)] {
            let p = AdamParams { lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, decoupled, step: 5 };
            let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
            let (x, g, m) = (f(rng.vec(n)), f(rng.vec(n)), f(rng.vec(n)));
            let v: Vec<f32> = rng.vec(n).into_iter().map(|x| (x * x) as f32).collect();
            let (mut ps, mut ms, mut vs) = (st(x.clone()), st(m.clone()), st(v.clone()));
            ps.adam_step(&st(g.clone()), &mut ms, &mut vs, &p).expect("adam");
            let want: Vec<(f64, f64, f64)> =
                (0..n).map(|i| adam_ref(x[i] as f64, g[i] as f64, m[i] as f64, v[i] as f64, &p)).collect();
            let col = |k: usize| HostData::F32(want.iter().map(|w| [w.0, w.1, w.2][k] as f32).collect());
            assert_eq!(ps.as_host(), &col(0), "param, n {n}, decoupled {decoupled}");
            assert_eq!(ms.as_host(), &col(1), "exp_avg, n {n}");
            assert_eq!(vs.as_host(), &col(2), "exp_avg_sq, n {n}");
        }
    }
}

#[test]
fn adam_step_in_f16_rounds_from_f64() {
    let p = AdamParams { lr: 1e-2, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.0, decoupled: false, step: 1 };
    let h = |v: &[f64]| v.iter().map(|&x| f16::from_f64(x)).collect::<Vec<f16>>();
    let (x, g) = ([0.5, -1.25, 2.0], [0.1, -0.3, 0.0]);
    let (mut ps, mut ms, mut vs) = (st(h(&x)), st(h(&[0.0; 3])), st(h(&[0.0; 3])));
    let gs = h(&g);
    ps.adam_step(&st(gs.clone()), &mut ms, &mut vs, &p).expect("adam");
    let want: Vec<(f64, f64, f64)> = (0..3).map(|i| adam_ref(x[i], gs[i].to_f64(), 0.0, 0.0, &p)).collect();
    assert_eq!(ps.as_host(), &HostData::F16(want.iter().map(|w| f16::from_f64(w.0)).collect()));
    assert_eq!(ms.as_host(), &HostData::F16(want.iter().map(|w| f16::from_f64(w.1)).collect()));
}

#[test]
fn adam_step_refuses_mismatched_buffers() {
    let p = AdamParams { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false, step: 1 };
    let mut ps = st(vec![1.0f32; 4]);
    let (mut m, mut v) = (st(vec![0.0f32; 4]), st(vec![0.0f32; 4]));
    let err = ps.adam_step(&st(vec![0.0f64; 4]), &mut m, &mut v, &p).expect_err("f64 gradient");
    assert!(matches!(err, Error::DTypeMismatch { .. }), "{err:?}");
    let err = ps.adam_step(&st(vec![0.0f32; 3]), &mut m, &mut v, &p).expect_err("short gradient");
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert_eq!(ps.as_host(), &HostData::F32(vec![1.0; 4]), "a refused step changes nothing");
    let mut ints = st(vec![1i32; 4]);
    assert!(matches!(ints.adam_step(&st(vec![0i32; 4]), &mut m, &mut v, &p), Err(Error::UnsupportedDType { .. })));
}
