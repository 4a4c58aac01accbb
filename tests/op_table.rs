//! The op table: one row per op (name, arity, dtypes, input domains, differentiable, tolerance,
//! the call). From each row the harness below derives every test:
//!
//! - GPU against the CPU oracle, in each listed dtype, on random inputs of odd sizes (1, 7, 1023,
//!   4097), transposed, sliced (offset, stride 2) and broadcast (stride-0) views;
//! - for a differentiable op, its gradient against central differences in f64 on the CPU, on
//!   contiguous, transposed and broadcast inputs.
//!
//! Adding an op to Kiln means adding a row to [`table`]; `every_primitive_has_a_row` fails
//! until a new `UnaryOp`, `BinaryOp`, `TernaryOp` or `ReduceOp` has one. `KILN_OP=name` runs one row.

mod common;

use kiln::prelude::*;
use kiln::{BinaryOp, ReduceOp, TernaryOp, UnaryOp};
use kiln_testkit::{check, gradcheck, random};
use std::panic::{AssertUnwindSafe, catch_unwind};

type OpFn = fn(&[Tensor]) -> Result<Tensor>;

/// One op: what it takes, where its inputs live, how close GPU and CPU must agree.
struct OpInfo {
    name: &'static str,
    arity: usize,
    /// Input dtypes to run on the GPU (f16 only where the adapter has it).
    dtypes: &'static [DType],
    /// The interval each input's values are drawn from (one per input).
    domain: &'static [(f64, f64)],
    /// Whether the gradient is checked (in f64 on the CPU).
    grad: bool,
    /// `(rtol, atol)` for f32; f16 gets at least 4e-3 of each, integers and bool are exact.
    tol: (f64, f64),
    f: OpFn,
}

const F: &[DType] = &[DType::F32, DType::F16];
const FI: &[DType] = &[DType::F32, DType::F16, DType::I32];
const B: &[DType] = &[DType::Bool];
const ANY: &[(f64, f64)] = &[(-3.0, 3.0), (-3.0, 3.0), (-3.0, 3.0)];
const POS: &[(f64, f64)] = &[(0.1, 3.0)];
const TOL: (f64, f64) = (2e-5, 2e-6);
/// Reductions and softmax add up to 4097 terms: looser in the absolute part.
const SUM_TOL: (f64, f64) = (2e-5, 2e-4);

const fn row(
    name: &'static str,
    arity: usize,
    dtypes: &'static [DType],
    domain: &'static [(f64, f64)],
    grad: bool,
    f: OpFn,
) -> OpInfo {
    OpInfo { name, arity, dtypes, domain, grad, tol: TOL, f }
}

const fn sum_row(
    name: &'static str,
    dtypes: &'static [DType],
    domain: &'static [(f64, f64)],
    grad: bool,
    f: OpFn,
) -> OpInfo {
    OpInfo { name, arity: 1, dtypes, domain, grad, tol: SUM_TOL, f }
}

/// Every op the table tests. Names follow `UnaryOp::name`/`BinaryOp::name`/`ReduceOp::name`
/// for primitives (checked by `every_primitive_has_a_row`).
fn table() -> Vec<OpInfo> {
    vec![
        // Unary math.
        row("neg", 1, FI, ANY, true, |t| t[0].neg()),
        row("abs", 1, FI, ANY, true, |t| t[0].abs()),
        row("sign", 1, FI, ANY, false, |t| t[0].sign()),
        row("exp", 1, F, ANY, true, |t| t[0].exp()),
        row("exp2", 1, F, ANY, true, |t| t[0].exp2()),
        row("log", 1, F, POS, true, |t| t[0].log()),
        row("log2", 1, F, POS, true, |t| t[0].log2()),
        row("log1p", 1, F, &[(-0.5, 3.0)], true, |t| t[0].log1p()),
        row("logit", 1, F, &[(0.05, 0.95)], true, |t| t[0].logit()),
        row("expm1", 1, F, ANY, true, |t| t[0].expm1()),
        row("sqrt", 1, F, POS, true, |t| t[0].sqrt()),
        row("rsqrt", 1, F, POS, true, |t| t[0].rsqrt()),
        row("recip", 1, F, &[(0.2, 3.0)], true, |t| t[0].recip()),
        row("square", 1, FI, ANY, true, |t| t[0].square()),
        row("sin", 1, F, ANY, true, |t| t[0].sin()),
        row("cos", 1, F, ANY, true, |t| t[0].cos()),
        row("floor", 1, F, ANY, false, |t| t[0].floor()),
        row("ceil", 1, F, ANY, false, |t| t[0].ceil()),
        row("round", 1, F, ANY, false, |t| t[0].round()),
        row("clamp", 1, FI, ANY, true, |t| t[0].clamp(-1.0, 2.0)),
        row("powf", 1, F, POS, true, |t| t[0].powf(2.5)),
        row("isnan", 1, F, ANY, false, |t| t[0].isnan()),
        row("isinf", 1, F, ANY, false, |t| t[0].isinf()),
        row("logical_not", 1, B, &[(0.0, 2.0)], false, |t| t[0].logical_not()),
        // Activations.
        row("tanh", 1, F, ANY, true, |t| t[0].tanh()),
        row("sigmoid", 1, F, ANY, true, |t| t[0].sigmoid()),
        row("relu", 1, FI, ANY, true, |t| t[0].relu()),
        row("leaky_relu", 1, F, ANY, true, |t| t[0].leaky_relu(0.1)),
        row("elu", 1, F, ANY, true, |t| t[0].elu(1.3)),
        row("gelu", 1, F, ANY, true, |t| t[0].gelu()),
        row("gelu_grad", 1, F, ANY, true, |t| t[0].unary(UnaryOp::GeluErfGrad)),
        row("gelu_tanh", 1, F, ANY, true, |t| t[0].gelu_tanh()),
        row("silu", 1, F, ANY, true, |t| t[0].silu()),
        row("softplus", 1, F, ANY, true, |t| t[0].softplus()),
        row("mish", 1, F, ANY, true, |t| t[0].mish()),
        sum_row("softmax", F, ANY, true, |t| t[0].softmax(-1)),
        sum_row("log_softmax", F, ANY, true, |t| t[0].log_softmax(-1)),
        // Binary (broadcasting).
        row("add", 2, FI, ANY, true, |t| t[0].add(&t[1])),
        row("sub", 2, FI, ANY, true, |t| t[0].sub(&t[1])),
        row("mul", 2, FI, ANY, true, |t| t[0].mul(&t[1])),
        row("div", 2, F, &[(-3.0, 3.0), (0.3, 3.0)], true, |t| t[0].div(&t[1])),
        row("pow", 2, F, &[(0.1, 2.0), (-2.0, 2.0)], true, |t| t[0].pow(&t[1])),
        row("maximum", 2, FI, ANY, true, |t| t[0].maximum(&t[1])),
        row("minimum", 2, FI, ANY, true, |t| t[0].minimum(&t[1])),
        row("rem", 2, F, &[(-3.0, 3.0), (0.3, 3.0)], true, |t| t[0].rem(&t[1])),
        row("eq", 2, FI, ANY, false, |t| t[0].eq(&t[1])),
        row("ne", 2, FI, ANY, false, |t| t[0].ne(&t[1])),
        row("lt", 2, FI, ANY, false, |t| t[0].lt(&t[1])),
        row("le", 2, FI, ANY, false, |t| t[0].le(&t[1])),
        row("gt", 2, FI, ANY, false, |t| t[0].gt(&t[1])),
        row("ge", 2, FI, ANY, false, |t| t[0].ge(&t[1])),
        row("logical_and", 2, B, &[(0.0, 2.0), (0.0, 2.0)], false, |t| t[0].logical_and(&t[1])),
        row("logical_or", 2, B, &[(0.0, 2.0), (0.0, 2.0)], false, |t| t[0].logical_or(&t[1])),
        // Selection: the condition comes from the first input, so it is broadcast and strided too.
        row("where", 3, F, ANY, true, |t| Tensor::where_(&t[0].gt_scalar(0.0)?, &t[1], &t[2])),
        // Ternary (one kernel each).
        row("addcmul", 3, F, ANY, true, |t| t[0].addcmul(&t[1], &t[2], 0.5)),
        row("addcdiv", 3, F, &[(-3.0, 3.0), (-3.0, 3.0), (0.5, 3.0)], true, |t| t[0].addcdiv(&t[1], &t[2], 0.5)),
        row("masked_fill", 2, F, ANY, true, |t| t[0].masked_fill(&t[1].lt_scalar(0.0)?, -7.5)),
        // Reductions (over the last dim, over the first keeping it, over everything).
        sum_row("sum", FI, ANY, true, |t| t[0].sum(&[-1], false)),
        sum_row("sum(dim 0, keepdim)", FI, ANY, true, |t| t[0].sum(&[0], true)),
        sum_row("sum_all", F, ANY, true, |t| t[0].sum_all()),
        sum_row("mean", F, ANY, true, |t| t[0].mean(&[-1], false)),
        sum_row("mean_all", F, ANY, true, |t| t[0].mean_all()),
        sum_row("prod", F, &[(0.9, 1.1)], true, |t| t[0].prod(&[-1], false)),
        row("max", 1, FI, ANY, true, |t| t[0].max(&[-1], false)),
        row("min", 1, FI, ANY, true, |t| t[0].min(&[-1], true)),
        row("argmax", 1, FI, ANY, false, |t| t[0].argmax(-1, false)),
        row("argmin", 1, FI, ANY, false, |t| t[0].argmin(0, true)),
        sum_row("var", F, ANY, true, |t| t[0].var(&[-1], true, false)),
        sum_row("std", F, ANY, true, |t| t[0].std(&[-1], false, true)),
        sum_row("logsumexp", F, ANY, true, |t| t[0].logsumexp(&[-1], false)),
        row("all", 1, B, &[(0.0, 2.0)], false, |t| t[0].all(&[-1], false)),
        row("any", 1, B, &[(0.0, 2.0)], false, |t| t[0].any(&[0], false)),
        sum_row("cumsum", FI, ANY, true, |t| t[0].cumsum(-1)),
    ]
}

/// The inputs of one case: a name and, per input, a CPU tensor (possibly a view).
type Case = (String, Vec<Tensor>);

/// Random inputs for `op` in `dtype`: odd 1-D sizes, then 2-D transposed, sliced and broadcast
/// views (broadcast through the op itself where it has two or more inputs).
fn cases(op: &OpInfo, dtype: DType) -> Vec<Case> {
    let rand = |shape: &[usize], i: usize, seed: u64| {
        let (lo, hi) = op.domain[i.min(op.domain.len() - 1)];
        random(shape, dtype, seed * 10 + i as u64, lo, hi)
    };
    let all = |f: &dyn Fn(usize) -> Tensor| (0..op.arity).map(f).collect::<Vec<_>>();
    let mut v: Vec<Case> =
        [1usize, 7, 1023, 4097].iter().map(|&n| (format!("n={n}"), all(&|i| rand(&[n], i, n as u64)))).collect();
    v.push(("transposed".into(), all(&|i| rand(&[13, 9], i, 1).t().expect("t"))));
    v.push(("sliced".into(), all(&|i| rand(&[9, 27], i, 2).slice(1, 1, 27, 2).expect("slice"))));
    v.push(("expanded".into(), all(&|i| rand(&[1, 13], i, 3).expand(&[9, 13]).expect("expand"))));
    if op.arity > 1 {
        // [9, 1] against [1, 13] (and a full [9, 13] third input).
        let shapes: [&[usize]; 3] = [&[9, 1], &[1, 13], &[9, 13]];
        v.push(("broadcast".into(), all(&|i| rand(shapes[i], i, 4))));
    }
    v
}

fn tolerance(op: &OpInfo, dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F32 => op.tol,
        DType::F16 | DType::F64 => (op.tol.0.max(4e-3), op.tol.1.max(4e-3)),
        _ => (0.0, 0.0),
    }
}

fn selected(op: &OpInfo) -> bool {
    std::env::var("KILN_OP").map_or(true, |want| want == op.name)
}

/// Runs every `(what, case)` and reports all failures together, so one broken op does not hide
/// another.
fn run_all(test: &str, cases: Vec<(String, Box<dyn FnOnce() + '_>)>) {
    let total = cases.len();
    let failed: Vec<String> = cases
        .into_iter()
        .filter_map(|(what, case)| catch_unwind(AssertUnwindSafe(case)).is_err().then_some(what))
        .collect();
    eprintln!("{test}: {} of {total} cases passed", total - failed.len());
    assert!(failed.is_empty(), "{test}: {} of {total} cases failed:\n  {}", failed.len(), failed.join("\n  "));
}

#[test]
fn gpu_matches_cpu_on_every_layout() {
    let Some(gpu) = common::gpu("gpu_matches_cpu_on_every_layout") else { return };
    let f16 = gpu.gpu_context().is_some_and(|c| c.has_f16());
    if !f16 {
        eprintln!("gpu_matches_cpu_on_every_layout: the adapter has no SHADER_F16; f16 rows skipped");
    }
    let table = table();
    let mut all: Vec<(String, Box<dyn FnOnce()>)> = Vec::new();
    for op in table.iter().filter(|op| selected(op)) {
        for &dtype in op.dtypes.iter().filter(|&&d| d != DType::F16 || f16) {
            let (rtol, atol) = tolerance(op, dtype);
            for (layout, inputs) in cases(op, dtype) {
                let what = format!("{} {dtype} {layout}", op.name);
                let gpu = gpu.clone();
                let f = op.f;
                all.push((what.clone(), Box::new(move || check(&what, &gpu, &inputs, rtol, atol, f))));
            }
        }
    }
    run_all("gpu_matches_cpu_on_every_layout", all);
}

#[test]
fn gradients_match_central_differences() {
    let table = table();
    let mut all: Vec<(String, Box<dyn FnOnce()>)> = Vec::new();
    for op in table.iter().filter(|op| op.grad && selected(op)) {
        let vals = |shape: &[usize], i: usize, seed: u64| {
            let (lo, hi) = op.domain[i.min(op.domain.len() - 1)];
            (shape.to_vec(), kiln_testkit::values(shape.iter().product(), 100 + seed * 10 + i as u64, lo, hi))
        };
        let f = op.f;
        // Contiguous.
        let inputs: Vec<_> = (0..op.arity).map(|i| vals(&[7], i, 1)).collect();
        let what = format!("{} contiguous", op.name);
        all.push((what.clone(), Box::new(move || gradcheck(&what, &inputs, 1e-5, 1e-6, &|t| f(t)))));
        // Transposed: the op sees [3, 4] views of [4, 3] leaves.
        let inputs: Vec<_> = (0..op.arity).map(|i| vals(&[4, 3], i, 2)).collect();
        let what = format!("{} transposed", op.name);
        all.push((
            what.clone(),
            Box::new(move || {
                gradcheck(&what, &inputs, 1e-5, 1e-6, &|t| f(&t.iter().map(|x| x.t()).collect::<Result<Vec<_>>>()?))
            }),
        ));
        // Broadcast: a [1, 4] leaf expanded to [3, 4], or [3, 1] against [1, 4] through the op.
        let what = format!("{} broadcast", op.name);
        if op.arity == 1 {
            let inputs = vec![vals(&[1, 4], 0, 3)];
            all.push((
                what.clone(),
                Box::new(move || gradcheck(&what, &inputs, 1e-5, 1e-6, &|t| f(&[t[0].expand(&[3, 4])?]))),
            ));
        } else {
            let shapes: [&[usize]; 3] = [&[3, 1], &[1, 4], &[3, 4]];
            let inputs: Vec<_> = (0..op.arity).map(|i| vals(shapes[i], i, 3)).collect();
            all.push((what.clone(), Box::new(move || gradcheck(&what, &inputs, 1e-5, 1e-6, &|t| f(t)))));
        }
    }
    run_all("gradients_match_central_differences", all);
}

#[test]
fn every_primitive_has_a_row() {
    let table = table();
    let has = |name: &str| table.iter().any(|op| op.name == name);
    let names = UnaryOp::ALL
        .iter()
        .map(|o| o.name())
        .chain(BinaryOp::ALL.iter().map(|o| o.name()))
        .chain(ReduceOp::ALL.iter().map(|o| o.name()))
        .chain(TernaryOp::ALL.iter().map(|o| o.name()));
    let missing: Vec<&str> = names.filter(|n| !has(n)).collect();
    assert!(missing.is_empty(), "ops without a row in tests/op_table.rs: {missing:?}");
    for op in &table {
        assert!(
            op.arity >= 1 && !op.dtypes.is_empty() && !op.domain.is_empty(),
            "{}: a row needs inputs, dtypes and a domain",
            op.name
        );
    }
}
