//! Pools, transposed convolutions and activations against values PyTorch computed
//! (`scripts/torch_nn_refs.py` wrote `tests/data/torch_nn_refs.safetensors`): outputs, the
//! positions `return_indices` gives, and the gradients of `Σ out ⊙ gout` for the input and
//! every parameter. In f64 on the CPU, and in f32 on the GPU. This catches semantic slips the
//! CPU oracle shares with the GPU (which windows ceil mode keeps, what a divisor counts).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use kiln_core::{
    AvgPool1dOptions, AvgPool2dOptions, ConvTranspose1dOptions, ConvTranspose2dOptions, DType, Device,
    MaxPool1dOptions, MaxPool2dOptions, Result, Tensor,
};
use kiln_nn::{
    AdaptiveMaxPool1d, AdaptiveMaxPool2d, AvgPool1d, AvgPool2d, Celu, Glu, Hardsigmoid, Hardswish, Hardtanh,
    LogSigmoid, MaxPool1d, MaxPool2d, Module, PRelu, Relu6, Selu, Softplus, Softsign, checkpoint,
};
use std::collections::{BTreeSet, HashMap};

const REFS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/torch_nn_refs.safetensors");

/// The op of one case: input and parameters (as PyTorch names them in the script) to the
/// output and, for `return_indices`, the positions.
type Case = fn(&Tensor, &[Tensor]) -> Result<(Tensor, Option<Tensor>)>;

fn one(r: Result<Tensor>) -> Result<(Tensor, Option<Tensor>)> {
    r.map(|t| (t, None))
}

fn two(r: Result<(Tensor, Tensor)>) -> Result<(Tensor, Option<Tensor>)> {
    r.map(|(t, i)| (t, Some(i)))
}

fn max2d(
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    ceil_mode: bool,
) -> MaxPool2d {
    MaxPool2d::from_options(MaxPool2dOptions { kernel, stride, padding, dilation, ceil_mode })
}

fn avg2d(
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    ceil_mode: bool,
    count_include_pad: bool,
    divisor: Option<usize>,
) -> AvgPool2d {
    AvgPool2d::from_options(AvgPool2dOptions {
        kernel,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override: divisor,
    })
}

/// A named case (a function, so that each closure becomes a `Case`).
fn c(name: &'static str, f: Case) -> (&'static str, Case) {
    (name, f)
}

fn cases() -> Vec<(&'static str, Case)> {
    vec![
        c("softplus_beta2_thr5", |x, _| one(Softplus { beta: 2.0, threshold: 5.0 }.forward(x))),
        c("softplus_default", |x, _| one(Softplus::default().forward(x))),
        c("hardtanh", |x, _| one(Hardtanh { min: -0.5, max: 1.5 }.forward(x))),
        c("relu6", |x, _| one(Relu6.forward(x))),
        c("hardswish", |x, _| one(Hardswish.forward(x))),
        c("hardsigmoid", |x, _| one(Hardsigmoid.forward(x))),
        c("selu", |x, _| one(Selu.forward(x))),
        c("celu", |x, _| one(Celu { alpha: 0.7 }.forward(x))),
        c("logsigmoid", |x, _| one(LogSigmoid.forward(x))),
        c("softsign", |x, _| one(Softsign.forward(x))),
        c("prelu_one", |x, p| one(PRelu { weight: p[0].clone() }.forward(x))),
        c("prelu_channels", |x, p| one(PRelu { weight: p[0].clone() }.forward(x))),
        c("glu_dim1", |x, _| one(Glu { dim: 1 }.forward(x))),
        c("glu_last", |x, _| one(Glu::default().forward(x))),
        c("max2d_k3s2p1_ceil", |x, _| two(max2d((3, 3), (2, 2), (1, 1), (1, 1), true).forward_with_indices(x))),
        c("max2d_dilated", |x, _| two(max2d((2, 3), (1, 2), (1, 1), (2, 1), false).forward_with_indices(x))),
        c("max2d_ceil_dilated", |x, _| two(max2d((2, 2), (2, 2), (1, 1), (2, 2), true).forward_with_indices(x))),
        c("max2d_k2s2p1_ceil", |x, _| two(max2d((2, 2), (2, 2), (1, 1), (1, 1), true).forward_with_indices(x))),
        c("avg2d_k2s2p1_ceil", |x, _| one(avg2d((2, 2), (2, 2), (1, 1), true, true, None).forward(x))),
        c("avg2d_ceil_exclude_pad", |x, _| one(avg2d((3, 3), (2, 2), (1, 1), true, false, None).forward(x))),
        c("avg2d_ceil_include_pad", |x, _| one(avg2d((3, 3), (2, 2), (1, 1), true, true, None).forward(x))),
        c("avg2d_exclude_pad", |x, _| one(avg2d((3, 2), (2, 3), (1, 1), false, false, None).forward(x))),
        c("avg2d_divisor", |x, _| one(avg2d((3, 3), (2, 2), (1, 1), true, true, Some(5)).forward(x))),
        c("max1d", |x, _| {
            let o = MaxPool1dOptions { kernel: 3, stride: 2, padding: 1, dilation: 2, ceil_mode: true };
            two(MaxPool1d::new(o).forward_with_indices(x))
        }),
        c("avg1d", |x, _| {
            let o = AvgPool1dOptions { kernel: 4, stride: 3, padding: 2, ceil_mode: true, count_include_pad: false };
            one(AvgPool1d::new(o).forward(x))
        }),
        c("adaptive_max2d", |x, _| two(AdaptiveMaxPool2d::new((4, 3)).forward_with_indices(x))),
        c("adaptive_max2d_overlap", |x, _| two(AdaptiveMaxPool2d::new((5, 7)).forward_with_indices(x))),
        c("adaptive_max1d", |x, _| two(AdaptiveMaxPool1d::new(4).forward_with_indices(x))),
        c("adaptive_avg1d", |x, _| one(x.adaptive_avg_pool1d(4))),
        c("ct2d_groups_dilation", |x, p| {
            let o = ConvTranspose2dOptions {
                stride: (2, 1),
                padding: (1, 0),
                output_padding: (1, 0),
                dilation: (2, 2),
                groups: 2,
            };
            one(x.conv_transpose2d(&p[0], Some(&p[1]), o))
        }),
        c("ct2d_outpad_past_stride", |x, p| {
            let o = ConvTranspose2dOptions {
                stride: (1, 1),
                padding: (1, 1),
                output_padding: (2, 2),
                dilation: (3, 3),
                groups: 1,
            };
            one(x.conv_transpose2d(&p[0], None, o))
        }),
        c("ct1d", |x, p| {
            let o = ConvTranspose1dOptions { stride: 3, padding: 1, output_padding: 2, dilation: 1, groups: 2 };
            one(x.conv_transpose1d(&p[0], Some(&p[1]), o))
        }),
    ]
}

fn refs() -> HashMap<String, Tensor> {
    checkpoint::load_state_dict(REFS)
        .unwrap_or_else(|e| panic!("{REFS}: {e} (run scripts/torch_nn_refs.py)"))
        .into_iter()
        .collect()
}

/// A mismatch as a message (all of them are reported at once).
fn close(what: &str, got: &Tensor, want: &Tensor, tol: f64, failures: &mut Vec<String>) {
    if got.shape() != want.shape() {
        failures.push(format!("{what}: shape {:?}, want {:?}", got.shape(), want.shape()));
        return;
    }
    let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    if let Some((i, (a, b))) = g.iter().zip(&w).enumerate().find(|(_, (a, b))| {
        // NaN on either side is a mismatch.
        let ok = (*a - *b).abs() <= tol * (1.0 + b.abs());
        !ok
    }) {
        failures.push(format!("{what}[{i}]: got {a}, want {b} (tol {tol})"));
    }
}

/// Gradients where PyTorch's own f64 value is off and Kiln's is exact, with the tolerance
/// that covers PyTorch's error. hardsigmoid: its backward multiplies by `1.0f / 6.0f`, 1/6
/// rounded to f32 (3e-8 relative). celu: 9e-9 relative off `g·e^(x/α)` computed in 40 digits.
const PYTORCH_GRAD_ERRORS: [(&str, f64); 2] = [("hardsigmoid", 1e-7), ("celu", 1e-7)];

/// Every case on `device` in `dtype`, within `tol` (relative to 1 + |value|) of PyTorch.
fn check_all(device: &Device, dtype: DType, tol: f64) {
    let refs = refs();
    let get = |key: &str| refs.get(key).unwrap_or_else(|| panic!("{key} is missing from {REFS}")).clone();
    let load = |key: &str| get(key).to_dtype(dtype).unwrap().to(device).unwrap();
    let mut failures = Vec::new();
    for (name, f) in cases() {
        let x = load(&format!("{name}.x")).detach().with_grad();
        let params: Vec<Tensor> = (0..)
            .map_while(|i| {
                refs.contains_key(&format!("{name}.p{i}")).then(|| load(&format!("{name}.p{i}")).detach().with_grad())
            })
            .collect();
        let (y, idx) = f(&x, &params).unwrap_or_else(|e| panic!("{name}: {e}"));
        close(&format!("{name} {device:?} output"), &y, &get(&format!("{name}.out")), tol, &mut failures);
        match (idx, refs.get(&format!("{name}.indices"))) {
            (Some(got), Some(want)) => close(&format!("{name} indices"), &got, want, 0.0, &mut failures),
            (None, None) => {}
            (got, _) => {
                failures.push(format!("{name}: indices {} but the reference has {}", got.is_some(), got.is_none()))
            }
        }
        (&y * &load(&format!("{name}.gout"))).unwrap().sum_all().unwrap().backward().unwrap();
        let tol_g = PYTORCH_GRAD_ERRORS.iter().find(|c| c.0 == name).map_or(tol, |c| tol.max(c.1));
        close(
            &format!("{name} {device:?} d/dx"),
            &x.grad().expect("input gradient"),
            &get(&format!("{name}.grad.x")),
            tol_g,
            &mut failures,
        );
        for (i, p) in params.iter().enumerate() {
            let want = get(&format!("{name}.grad.p{i}"));
            close(
                &format!("{name} {device:?} d/dp{i}"),
                &p.grad().expect("parameter gradient"),
                &want,
                tol_g,
                &mut failures,
            );
        }
    }
    assert!(failures.is_empty(), "{} mismatches with PyTorch:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_reference_case_is_checked() {
    let in_file: BTreeSet<String> = refs().keys().filter_map(|k| k.split('.').next().map(str::to_string)).collect();
    let here: BTreeSet<String> = cases().iter().map(|c| c.0.to_string()).collect();
    assert_eq!(in_file, here, "cases in {REFS} vs this test");
}

#[test]
fn cpu_f64_matches_pytorch() {
    check_all(&Device::cpu(), DType::F64, 1e-10);
}

#[test]
fn gpu_f32_matches_pytorch() {
    let Some(g) = common::gpu() else { return };
    check_all(&g, DType::F32, 2e-5);
}
