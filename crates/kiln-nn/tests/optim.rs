//! Optimizers, schedulers and gradient clipping against update rules written out here in plain
//! f64 arithmetic (PyTorch's formulas), plus GPU-against-CPU trajectories.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use kiln_core::{DType, Device, Error, HostData, Tensor};
use kiln_nn::optim::*;
use kiln_nn::sched::*;
use kiln_nn::{clip_grad_norm_, clip_grad_value_};

// The fixed problem: loss = Σ ½·c·x² + d·x, so grad = c·x + d.
const X0: [f64; 4] = [1.0, -2.0, 0.5, 3.0];
const C: [f64; 4] = [1.0, 2.0, 0.5, 0.25];
const D: [f64; 4] = [0.1, -0.3, 0.2, 0.0];

fn host(v: &[f64], dtype: DType) -> HostData {
    HostData::from_f64(v, dtype)
}

fn param(v: &[f64], dtype: DType, device: &Device) -> Tensor {
    Tensor::from_host(host(v, dtype), &[v.len()], device).unwrap().with_grad()
}

/// Runs backward on the quadratic for `x`.
fn backward_quadratic(x: &Tensor) {
    let (dev, dt) = (x.device().clone(), x.dtype());
    let c = Tensor::from_host(host(&C, dt), &[4], &dev).unwrap();
    let d = Tensor::from_host(host(&D, dt), &[4], &dev).unwrap();
    let quad = (&(&x.square().unwrap() * &c).unwrap() * 0.5).unwrap();
    let loss = (&quad + &(x * &d).unwrap()).unwrap().sum_all().unwrap();
    loss.backward().unwrap();
}

fn grad_ref(x: &[f64]) -> Vec<f64> {
    x.iter().zip(C).zip(D).map(|((x, c), d)| c * x + d).collect()
}

/// `steps` optimizer steps on the quadratic; the parameter after each.
fn trajectory(
    opt_for: impl Fn(Vec<Tensor>) -> Box<dyn Optimizer>,
    steps: usize,
    dtype: DType,
    device: &Device,
) -> Vec<Vec<f64>> {
    let x = param(&X0, dtype, device);
    let mut opt = opt_for(vec![x.clone()]);
    let mut out = Vec::new();
    for _ in 0..steps {
        backward_quadratic(&x);
        opt.step().unwrap();
        opt.zero_grad();
        out.push(x.to_f64_vec().unwrap());
    }
    assert_eq!(opt.step_count(), steps as u64);
    out
}

/// Trajectories agree within tol·(1 + |want|) at every step (row).
#[track_caller]
fn assert_close(got: &[Vec<f64>], want: &[Vec<f64>], tol: f64, what: &str) {
    kiln_testkit::assert_close_rows(what, got, want, tol, tol);
}

// ---- reference update rules (torch.optim docs), one step each ----

#[derive(Default)]
struct RefState {
    step: u64,
    a: Option<Vec<f64>>,
    b: Option<Vec<f64>>,
    c: Option<Vec<f64>>,
}

fn ref_run(steps: usize, mut update: impl FnMut(&mut Vec<f64>, &[f64], &mut RefState)) -> Vec<Vec<f64>> {
    let mut x = X0.to_vec();
    let mut st = RefState::default();
    let mut out = Vec::new();
    for _ in 0..steps {
        let g = grad_ref(&x);
        st.step += 1;
        update(&mut x, &g, &mut st);
        out.push(x.clone());
    }
    out
}

fn sgd_ref(cfg: SgdConfig) -> impl FnMut(&mut Vec<f64>, &[f64], &mut RefState) {
    move |x, g, st| {
        for i in 0..x.len() {
            let mut d = g[i] + cfg.weight_decay * x[i];
            if cfg.momentum != 0.0 {
                let buf = st.a.get_or_insert_with(|| vec![f64::NAN; 4]);
                buf[i] = if st.step == 1 { d } else { cfg.momentum * buf[i] + (1.0 - cfg.dampening) * d };
                d = if cfg.nesterov { d + cfg.momentum * buf[i] } else { buf[i] };
            }
            x[i] -= cfg.lr * d;
        }
    }
}

fn adam_ref(
    lr: f64,
    (b1, b2): (f64, f64),
    eps: f64,
    wd: f64,
    decoupled: bool,
) -> impl FnMut(&mut Vec<f64>, &[f64], &mut RefState) {
    move |x, g, st| {
        let t = st.step as i32;
        let m = st.a.get_or_insert_with(|| vec![0.0; 4]);
        let v = st.b.get_or_insert_with(|| vec![0.0; 4]);
        for i in 0..x.len() {
            let mut gi = g[i];
            if decoupled {
                x[i] *= 1.0 - lr * wd;
            } else {
                gi += wd * x[i];
            }
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let bc1 = 1.0 - b1.powi(t);
            let bc2 = 1.0 - b2.powi(t);
            x[i] -= lr / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + eps);
        }
    }
}

fn rmsprop_ref(cfg: RmsPropConfig) -> impl FnMut(&mut Vec<f64>, &[f64], &mut RefState) {
    move |x, g, st| {
        let sq = st.a.get_or_insert_with(|| vec![0.0; 4]);
        let buf = st.b.get_or_insert_with(|| vec![0.0; 4]);
        let ga = st.c.get_or_insert_with(|| vec![0.0; 4]);
        for i in 0..x.len() {
            let gi = g[i] + cfg.weight_decay * x[i];
            sq[i] = cfg.alpha * sq[i] + (1.0 - cfg.alpha) * gi * gi;
            let avg = if cfg.centered {
                ga[i] = cfg.alpha * ga[i] + (1.0 - cfg.alpha) * gi;
                (sq[i] - ga[i] * ga[i]).sqrt() + cfg.eps
            } else {
                sq[i].sqrt() + cfg.eps
            };
            if cfg.momentum > 0.0 {
                buf[i] = cfg.momentum * buf[i] + gi / avg;
                x[i] -= cfg.lr * buf[i];
            } else {
                x[i] -= cfg.lr * gi / avg;
            }
        }
    }
}

fn adagrad_ref(cfg: AdagradConfig) -> impl FnMut(&mut Vec<f64>, &[f64], &mut RefState) {
    move |x, g, st| {
        let sum = st.a.get_or_insert_with(|| vec![cfg.initial_accumulator_value; 4]);
        let clr = cfg.lr / (1.0 + (st.step as f64 - 1.0) * cfg.lr_decay);
        for i in 0..x.len() {
            let gi = g[i] + cfg.weight_decay * x[i];
            sum[i] += gi * gi;
            x[i] -= clr * gi / (sum[i].sqrt() + cfg.eps);
        }
    }
}

fn cpu() -> Device {
    Device::cpu()
}

#[test]
fn sgd_variants_match_formula() {
    let configs = [
        SgdConfig::new(0.1),
        SgdConfig { momentum: 0.9, ..SgdConfig::new(0.1) },
        SgdConfig { momentum: 0.9, dampening: 0.3, weight_decay: 0.05, ..SgdConfig::new(0.05) },
        SgdConfig { momentum: 0.8, nesterov: true, weight_decay: 0.01, ..SgdConfig::new(0.1) },
    ];
    for cfg in configs {
        let got = trajectory(|p| Box::new(Sgd::new(p, cfg).unwrap()), 3, DType::F64, &cpu());
        assert_close(&got, &ref_run(3, sgd_ref(cfg)), 1e-12, &format!("{cfg:?}"));
    }
}

#[test]
fn adam_and_adamw_match_formula() {
    for wd in [0.0, 0.1] {
        let cfg = AdamConfig { lr: 0.1, weight_decay: wd, ..AdamConfig::default() };
        let got = trajectory(|p| Box::new(Adam::new(p, cfg).unwrap()), 3, DType::F64, &cpu());
        assert_close(&got, &ref_run(3, adam_ref(0.1, cfg.betas, cfg.eps, wd, false)), 1e-12, "Adam");
    }
    let cfg = AdamWConfig { lr: 0.1, betas: (0.8, 0.99), eps: 1e-6, weight_decay: 0.2 };
    let got = trajectory(|p| Box::new(AdamW::new(p, cfg).unwrap()), 3, DType::F64, &cpu());
    assert_close(&got, &ref_run(3, adam_ref(0.1, cfg.betas, cfg.eps, 0.2, true)), 1e-12, "AdamW");
    assert_eq!(AdamWConfig::default().weight_decay, 1e-2);
    assert_eq!(AdamConfig::default(), AdamConfig { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0 });
}

#[test]
fn rmsprop_variants_match_formula() {
    let base = RmsPropConfig { lr: 0.01, ..RmsPropConfig::default() };
    let configs = [
        base,
        RmsPropConfig { momentum: 0.9, ..base },
        RmsPropConfig { centered: true, ..base },
        RmsPropConfig { centered: true, momentum: 0.5, weight_decay: 0.1, alpha: 0.9, ..base },
    ];
    for cfg in configs {
        let got = trajectory(|p| Box::new(RmsProp::new(p, cfg).unwrap()), 3, DType::F64, &cpu());
        assert_close(&got, &ref_run(3, rmsprop_ref(cfg)), 1e-12, &format!("{cfg:?}"));
    }
}

#[test]
fn adagrad_variants_match_formula() {
    let configs = [
        AdagradConfig { lr: 0.1, ..AdagradConfig::default() },
        AdagradConfig { lr: 0.1, lr_decay: 0.5, weight_decay: 0.1, initial_accumulator_value: 0.3, eps: 1e-10 },
    ];
    for cfg in configs {
        let got = trajectory(|p| Box::new(Adagrad::new(p, cfg).unwrap()), 3, DType::F64, &cpu());
        assert_close(&got, &ref_run(3, adagrad_ref(cfg)), 1e-12, &format!("{cfg:?}"));
    }
}

#[test]
fn parameters_without_grad_are_skipped() {
    let x = param(&X0, DType::F64, &cpu());
    let idle = param(&[5.0, 6.0], DType::F64, &cpu());
    let mut opt = Adam::new(vec![x.clone(), idle.clone()], AdamConfig { lr: 0.1, ..Default::default() }).unwrap();
    backward_quadratic(&x);
    opt.step().unwrap();
    assert_eq!(idle.to_f64_vec().unwrap(), vec![5.0, 6.0]);
    let names: Vec<String> = opt.state().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["0.step", "0.exp_avg", "0.exp_avg_sq"]);
}

#[test]
fn param_groups_use_their_own_lr_and_decay() {
    let a = param(&X0, DType::F64, &cpu());
    let b = param(&X0, DType::F64, &cpu());
    let cfg = SgdConfig { momentum: 0.9, ..SgdConfig::new(0.1) };
    let groups =
        vec![ParamGroup::new(vec![a.clone()]), ParamGroup::new(vec![b.clone()]).with_lr(0.01).with_weight_decay(0.5)];
    let mut opt = Sgd::with_groups(groups, cfg).unwrap();
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        backward_quadratic(&a);
        backward_quadratic(&b);
        opt.step().unwrap();
        opt.zero_grad();
        ta.push(a.to_f64_vec().unwrap());
        tb.push(b.to_f64_vec().unwrap());
    }
    assert_close(&ta, &ref_run(3, sgd_ref(cfg)), 1e-12, "group 0");
    assert_close(&tb, &ref_run(3, sgd_ref(SgdConfig { lr: 0.01, weight_decay: 0.5, ..cfg })), 1e-12, "group 1");

    // set_lr keeps the groups' ratio: doubling the default lr doubles group 1's to 0.02.
    opt.set_lr(0.2);
    assert_eq!(opt.lr(), 0.2);
    let before = b.to_f64_vec().unwrap();
    backward_quadratic(&b);
    opt.step().unwrap();
    let state = opt.state();
    let buf = state.iter().find(|(n, _)| n == "1.momentum_buffer").unwrap().1.to_f64_vec().unwrap();
    let after = b.to_f64_vec().unwrap();
    for i in 0..4 {
        assert!((after[i] - (before[i] - 0.02 * buf[i])).abs() < 1e-12, "scaled group lr");
    }
    // `a` had no grad in that step: its step count stayed at 3.
    let step_a = state.iter().find(|(n, _)| n == "0.step").unwrap().1.item().unwrap();
    let step_b = state.iter().find(|(n, _)| n == "1.step").unwrap().1.item().unwrap();
    assert_eq!((step_a, step_b, opt.step_count()), (3.0, 4.0, 4));
}

#[test]
fn invalid_configs_are_errors() {
    let p = || vec![param(&X0, DType::F32, &cpu())];
    assert!(matches!(Sgd::new(p(), SgdConfig::new(-1.0)), Err(Error::InvalidArgument { .. })));
    assert!(Sgd::new(p(), SgdConfig { nesterov: true, ..SgdConfig::new(0.1) }).is_err());
    assert!(Adam::new(p(), AdamConfig { betas: (1.0, 0.9), ..Default::default() }).is_err());
    assert!(Adam::new(vec![], AdamConfig::default()).is_err());
    assert!(RmsProp::new(p(), RmsPropConfig { eps: f64::NAN, ..Default::default() }).is_err());
    assert!(Adagrad::new(p(), AdagradConfig { lr_decay: -0.1, ..Default::default() }).is_err());
    let ints = vec![Tensor::from_vec(vec![1i32, 2], &[2], &cpu()).unwrap()];
    assert!(Sgd::new(ints, SgdConfig::new(0.1)).is_err());
    let groups = vec![ParamGroup::new(p()).with_lr(f64::INFINITY)];
    assert!(Adam::with_groups(groups, AdamConfig::default()).is_err());
}

#[test]
fn load_state_validates_before_changing_anything() {
    let x = param(&X0, DType::F32, &cpu());
    let mut opt = Adam::new(vec![x.clone()], AdamConfig::default()).unwrap();
    backward_quadratic(&x);
    opt.step().unwrap();
    let good = opt.state();
    let shape_bad: Vec<(String, Tensor)> =
        good.iter()
            .map(|(n, t)| {
                if n == "0.exp_avg" {
                    (n.clone(), Tensor::zeros(&[3], &cpu()).unwrap())
                } else {
                    (n.clone(), t.clone())
                }
            })
            .collect();
    let cases: Vec<Vec<(String, Tensor)>> = vec![
        shape_bad,
        good.iter().filter(|(n, _)| n != "0.exp_avg_sq").cloned().collect(),
        good.iter().filter(|(n, _)| n != "0.step").cloned().collect(),
        [good.clone(), vec![("1.exp_avg".into(), Tensor::zeros(&[4], &cpu()).unwrap())]].concat(),
        [good.clone(), vec![("0.momentum".into(), Tensor::zeros(&[4], &cpu()).unwrap())]].concat(),
        good.iter()
            .map(|(n, t)| (n.clone(), if n == "0.exp_avg" { t.to_dtype(DType::F64).unwrap() } else { t.clone() }))
            .collect(),
        vec![("garbage".into(), Tensor::zeros(&[4], &cpu()).unwrap())],
    ];
    for (i, bad) in cases.iter().enumerate() {
        let before: Vec<Vec<f64>> = opt.state().iter().map(|(_, t)| t.to_f64_vec().unwrap()).collect();
        assert!(matches!(opt.load_state(bad), Err(Error::InvalidArgument { .. })), "case {i} accepted");
        let after: Vec<Vec<f64>> = opt.state().iter().map(|(_, t)| t.to_f64_vec().unwrap()).collect();
        assert_eq!(before, after, "case {i} changed the state");
    }
    opt.load_state(&[]).unwrap();
    assert!(opt.state().is_empty());
    opt.load_state(&good).unwrap();
    assert_eq!(opt.state().len(), 3);
}

#[test]
fn step_without_grads_changes_nothing() {
    let x = param(&X0, DType::F32, &cpu());
    let mut opt = Sgd::new(vec![x.clone()], SgdConfig::new(0.1)).unwrap();
    opt.step().unwrap();
    assert_eq!(x.to_f64_vec().unwrap(), X0.to_vec());
    assert_eq!(opt.step_count(), 1);
    assert!(opt.state().is_empty());
}

/// The GPU adapter, or `None` with a loud note (a failure under `KILN_REQUIRE_GPU=1`).
fn gpu() -> Option<Device> {
    kiln_testkit::gpu(std::thread::current().name().unwrap_or("optim"))
}

#[test]
fn gpu_trajectories_match_cpu() {
    let Some(gpu) = gpu() else { return };
    type Make = Box<dyn Fn(Vec<Tensor>) -> Box<dyn Optimizer>>;
    let makers: Vec<(&str, Make)> = vec![
        (
            "sgd",
            Box::new(|p| {
                Box::new(
                    Sgd::new(
                        p,
                        SgdConfig { momentum: 0.9, nesterov: true, weight_decay: 0.01, ..SgdConfig::new(0.05) },
                    )
                    .unwrap(),
                )
            }),
        ),
        (
            "adam",
            Box::new(|p| {
                Box::new(Adam::new(p, AdamConfig { lr: 0.05, weight_decay: 0.01, ..Default::default() }).unwrap())
            }),
        ),
        ("adamw", Box::new(|p| Box::new(AdamW::new(p, AdamWConfig { lr: 0.05, ..Default::default() }).unwrap()))),
        (
            "rmsprop",
            Box::new(|p| {
                Box::new(
                    RmsProp::new(p, RmsPropConfig { momentum: 0.5, centered: true, ..Default::default() }).unwrap(),
                )
            }),
        ),
        (
            "adagrad",
            Box::new(|p| {
                Box::new(Adagrad::new(p, AdagradConfig { lr: 0.1, lr_decay: 0.01, ..Default::default() }).unwrap())
            }),
        ),
    ];
    let mut failures = Vec::new();
    for (name, make) in &makers {
        let on_cpu = trajectory(make, 20, DType::F32, &cpu());
        let on_gpu = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| trajectory(make, 20, DType::F32, &gpu)));
        match on_gpu {
            Ok(t) => assert_close(&t, &on_cpu, 1e-4, name),
            Err(_) => failures.push(*name),
        }
    }
    assert!(failures.is_empty(), "GPU runs failed for {failures:?}");
}

// ---- schedulers ----

fn sched_sequence(mut s: impl LrScheduler, n: u64) -> Vec<f64> {
    let x = param(&X0, DType::F32, &cpu());
    let mut opt = Sgd::new(vec![x], SgdConfig::new(123.0)).unwrap();
    s.apply(&mut opt);
    let mut out = vec![opt.lr()];
    for _ in 0..n {
        s.step(&mut opt);
        out.push(opt.lr());
    }
    assert_eq!(s.last_step(), n);
    out
}

fn assert_seq(got: &[f64], want: impl Fn(u64) -> f64, what: &str) {
    for (t, g) in got.iter().enumerate() {
        let w = want(t as u64);
        assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "{what} at step {t}: got {g}, want {w}");
    }
}

#[test]
fn step_multistep_exponential() {
    let got = sched_sequence(StepLr::new(0.1, 3, 0.5).unwrap(), 10);
    assert_seq(&got, |t| 0.1 * 0.5f64.powi((t / 3) as i32), "StepLr");
    assert_eq!(&got[..4], &[0.1, 0.1, 0.1, 0.05]);

    let got = sched_sequence(MultiStepLr::new(1.0, vec![5, 2], 0.1).unwrap(), 7);
    assert_seq(
        &got,
        |t| {
            if t < 2 {
                1.0
            } else if t < 5 {
                0.1
            } else {
                0.1 * 0.1
            }
        },
        "MultiStepLr",
    );

    let got = sched_sequence(ExponentialLr::new(0.3, 0.9).unwrap(), 10);
    assert_seq(&got, |t| 0.3 * 0.9f64.powi(t as i32), "ExponentialLr");
}

#[test]
fn cosine_annealing() {
    let (base, tmax, min) = (0.1, 10u64, 0.001);
    let got = sched_sequence(CosineAnnealingLr::new(base, tmax, min).unwrap(), 15);
    let pi = std::f64::consts::PI;
    assert_seq(&got, |t| min + (base - min) * (1.0 + (pi * t as f64 / tmax as f64).cos()) / 2.0, "CosineAnnealingLr");
    assert!((got[10] - min).abs() < 1e-15);
}

#[test]
fn warmup_cosine() {
    let (base, warm, total, min) = (0.5, 4u64, 14u64, 0.01);
    let got = sched_sequence(WarmupCosine::new(base, warm, total, min).unwrap(), 20);
    let pi = std::f64::consts::PI;
    assert_seq(
        &got,
        |t| {
            if t < warm {
                base * t as f64 / warm as f64
            } else if t >= total {
                min
            } else {
                let p = (t - warm) as f64 / (total - warm) as f64;
                min + 0.5 * (base - min) * (1.0 + (pi * p).cos())
            }
        },
        "WarmupCosine",
    );
    assert_eq!(got[0], 0.0);
    assert_eq!(got[4], base);
}

#[test]
fn one_cycle_matches_pytorch_phases() {
    let (max_lr, total) = (0.4, 20u64);
    let got = sched_sequence(OneCycleLr::with_defaults(max_lr, total).unwrap(), total);
    let pi = std::f64::consts::PI;
    let initial = max_lr / 25.0;
    let min = initial / 1e4;
    let anneal = |start: f64, end: f64, pct: f64| end + (start - end) / 2.0 * ((pi * pct).cos() + 1.0);
    let end1 = 0.3 * total as f64 - 1.0; // 5
    let end2 = total as f64 - 1.0;
    assert_seq(
        &got,
        |t| {
            let t = t as f64;
            if t <= end1 { anneal(initial, max_lr, t / end1) } else { anneal(max_lr, min, (t - end1) / (end2 - end1)) }
        },
        "OneCycleLr",
    );
    assert!((got[0] - 0.016).abs() < 1e-15);
    assert!((got[5] - max_lr).abs() < 1e-15);
    assert!((got[19] - min).abs() < 1e-15);
    let explicit = OneCycleLr::new(max_lr, total, 0.25, 10.0, 100.0).unwrap();
    assert!((explicit.lr_at(0) - 0.04).abs() < 1e-15);
    assert!((explicit.lr_at(4) - max_lr).abs() < 1e-15);
    assert!((explicit.lr_at(19) - 0.0004).abs() < 1e-15);
}

#[test]
fn scheduler_resume_and_errors() {
    let mut s = StepLr::new(0.1, 2, 0.1).unwrap();
    s.set_last_step(4);
    assert!((s.current_lr() - 0.001).abs() < 1e-15);
    assert!(StepLr::new(0.1, 0, 0.5).is_err());
    assert!(CosineAnnealingLr::new(0.1, 0, 0.0).is_err());
    assert!(WarmupCosine::new(0.1, 10, 5, 0.0).is_err());
    assert!(OneCycleLr::new(0.1, 10, 1.5, 25.0, 1e4).is_err());
    assert!(ExponentialLr::new(f64::NAN, 0.9).is_err());
}

// ---- clipping ----

fn with_grad_values(v: &[f32]) -> Tensor {
    let p = Tensor::zeros(&[v.len()], &cpu()).unwrap().with_grad();
    let w = Tensor::from_vec(v.to_vec(), &[v.len()], &cpu()).unwrap();
    (&p * &w).unwrap().sum_all().unwrap().backward().unwrap();
    p
}

fn grad_of(p: &Tensor) -> Vec<f64> {
    p.grad().unwrap().to_f64_vec().unwrap()
}

#[test]
fn clip_grad_norm_scales_all_grads_together() {
    let a = with_grad_values(&[3.0, 0.0]);
    let b = with_grad_values(&[0.0, 4.0, 0.0]);
    let idle = Tensor::zeros(&[2], &cpu()).unwrap().with_grad();
    let norm = clip_grad_norm_(&[a.clone(), b.clone(), idle.clone()], 2.5).unwrap().item().unwrap();
    assert!((norm - 5.0).abs() < 1e-6);
    let coef = 2.5 / (5.0 + 1e-6);
    for (got, want) in grad_of(&a).iter().chain(&grad_of(&b)).zip([3.0 * coef, 0.0, 0.0, 4.0 * coef, 0.0]) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
    assert!(idle.grad().is_none());

    // Below the threshold: untouched.
    let c = with_grad_values(&[0.3, 0.4]);
    let norm = clip_grad_norm_(std::slice::from_ref(&c), 1.0).unwrap().item().unwrap();
    assert!((norm - 0.5).abs() < 1e-6);
    assert_eq!(grad_of(&c), vec![0.30000001192092896, 0.4000000059604645]);
    assert!(clip_grad_norm_(&[c], -1.0).is_err());
    assert_eq!(clip_grad_norm_(&[], 1.0).unwrap().item().unwrap(), 0.0);
}

#[test]
fn clip_handles_shared_and_view_grads() {
    // `a + b` hands both leaves the same gradient tensor: it must be scaled once, not twice.
    let a = Tensor::zeros(&[2], &cpu()).unwrap().with_grad();
    let b = Tensor::zeros(&[2], &cpu()).unwrap().with_grad();
    let w = Tensor::from_vec(vec![3.0f32, 4.0], &[2], &cpu()).unwrap();
    (&(&a + &b).unwrap() * &w).unwrap().sum_all().unwrap().backward().unwrap();
    let norm = clip_grad_norm_(&[a.clone(), b.clone()], 1.0).unwrap().item().unwrap();
    assert!((norm - 50f64.sqrt()).abs() < 1e-5);
    let coef = 1.0 / (50f64.sqrt() + 1e-6);
    for g in [grad_of(&a), grad_of(&b)] {
        assert!((g[0] - 3.0 * coef).abs() < 1e-6 && (g[1] - 4.0 * coef).abs() < 1e-6, "{g:?}");
    }

    // `cat` gives its inputs gradients that are views into one buffer.
    let a = Tensor::zeros(&[2], &cpu()).unwrap().with_grad();
    let b = Tensor::zeros(&[2], &cpu()).unwrap().with_grad();
    let w = Tensor::from_vec(vec![1.0f32, 2.0, 2.0, 4.0], &[4], &cpu()).unwrap();
    (&Tensor::cat(&[a.clone(), b.clone()], 0).unwrap() * &w).unwrap().sum_all().unwrap().backward().unwrap();
    clip_grad_value_(&[a.clone(), b.clone()], 1.5).unwrap();
    assert_eq!(grad_of(&a), vec![1.0, 1.5]);
    assert_eq!(grad_of(&b), vec![1.5, 1.5]);
    let norm = clip_grad_norm_(&[a.clone(), b.clone()], 1.0).unwrap().item().unwrap();
    assert!((norm - (1.0f64 + 3.0 * 2.25).sqrt()).abs() < 1e-5);
    let total: f64 = grad_of(&a).iter().chain(&grad_of(&b)).map(|g| g * g).sum();
    assert!((total.sqrt() - 1.0).abs() < 1e-5);
}
