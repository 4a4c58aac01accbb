//! Property-based fuzzing of the whole op set. Random calls — every unary and binary op,
//! reductions over random (out-of-range, repeated) axes, views with random arguments, index ops
//! with out-of-range ids, cat/stack/pad/split with bad arguments, mismatched matmuls, conv and
//! pool geometry that does not fit, casts, creation with odd sizes — on random shapes (0-sized
//! dims included), dtypes (f32, f16, i32, u32, bool), values (NaN, ±inf, −0, extreme
//! integers), layouts (transposed, strided, broadcast, offset views) and devices.
//!
//! The properties, for every call:
//! - it returns `Ok` or a typed `Err`, never panics;
//! - its inputs hold the same values afterwards;
//! - on the CPU and the GPU it gives the same outcome: the same values (f32 tolerance, NaN
//!   equal to NaN) when both succeed, errors of the same kind when both fail, never one of each
//!   (except for documented adapter limits: f64 tensors, f16 without `SHADER_F16`, buffer sizes).
//!
//! Each family of ops runs in a child process (this binary again, with `KILN_FUZZ_CHILD` set)
//! so that an abort or a hang — which no `catch_unwind` can see — still fails the test with the
//! call that caused it; a call running over 30 s counts as a hang. A global allocator refuses
//! any single host allocation over 1 GiB (and a live total over 3 GiB), so that a size that is
//! merely large cannot exhaust the machine: fallible allocations report `OutOfMemory`,
//! infallible ones abort and are reported.
//!
//! Bugs found and not yet fixed go in `known_crash` / `known_divergence`, which the fuzz steps
//! around, each with an `#[ignore]`d regression test at the end of this file; fixed ones keep
//! their regression test, run like any other.
//!
//! Seeds are fixed for a reproducible CI. To explore: `KILN_FUZZ_SEED=<n>` (other inputs),
//! `KILN_FUZZ_SCALE=<k>` (k times the cases), `KILN_FUZZ_STATS=1` (outcomes per op),
//! `KILN_FUZZ_SHOW=<op>` (print that op's errors), `KILN_FUZZ_LOUD=1` (panic messages and
//! backtraces of caught panics).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use kiln::prelude::*;
use kiln::{BinaryOp, ConvGeometry, HostData, UnaryOp};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Allocation cap

/// The System allocator, refusing single requests over [`ALLOC_CAP`] and any request that
/// would take the live total past [`TOTAL_CAP`] (a runaway must abort here, not bring the
/// machine's OOM killer down on other processes).
struct Capped;

const ALLOC_CAP: usize = 1 << 30;
const TOTAL_CAP: usize = 3 << 30;

static LIVE: AtomicUsize = AtomicUsize::new(0);

impl Capped {
    fn admit(size: usize) -> bool {
        size <= ALLOC_CAP && LIVE.fetch_add(size, Ordering::Relaxed) + size <= TOTAL_CAP || {
            if size <= ALLOC_CAP {
                LIVE.fetch_sub(size, Ordering::Relaxed);
            }
            false
        }
    }

    fn track(p: *mut u8, size: usize) -> *mut u8 {
        if p.is_null() {
            LIVE.fetch_sub(size, Ordering::Relaxed);
        }
        p
    }
}

// SAFETY: forwards to `System` unchanged, or returns null, which `GlobalAlloc` allows.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Capped::admit(layout.size()) {
            return std::ptr::null_mut();
        }
        Capped::track(unsafe { System.alloc(layout) }, layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Capped::admit(layout.size()) {
            return std::ptr::null_mut();
        }
        Capped::track(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !Capped::admit(new_size) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            LIVE.fetch_sub(new_size, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

// ---------------------------------------------------------------------------------------------
// The op set, by family

const UNARY: [&str; 35] = [
    "neg",
    "abs",
    "sign",
    "exp",
    "exp2",
    "log",
    "log2",
    "log1p",
    "expm1",
    "sqrt",
    "rsqrt",
    "recip",
    "square",
    "sin",
    "cos",
    "tanh",
    "sigmoid",
    "relu",
    "leaky_relu",
    "elu",
    "gelu",
    "gelu_grad",
    "gelu_tanh",
    "silu",
    "softplus",
    "mish",
    "floor",
    "ceil",
    "round",
    "clamp",
    "powf",
    "isnan",
    "isinf",
    "logical_not",
    "logit",
];
const BINARY: [&str; 16] = [
    "add",
    "sub",
    "mul",
    "div",
    "pow",
    "maximum",
    "minimum",
    "rem",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "logical_and",
    "logical_or",
];
const ELEMENTWISE_MORE: [&str; 17] = [
    "add_scalar",
    "sub_scalar",
    "mul_scalar",
    "div_scalar",
    "pow_scalar",
    "maximum_scalar",
    "minimum_scalar",
    "rem_scalar",
    "eq_scalar",
    "lt_scalar",
    "ge_scalar",
    "logical_or_scalar",
    "where_",
    "masked_fill",
    "to_dtype",
    "to_device",
    "cross_device",
];
const REDUCE: [&str; 18] = [
    "sum",
    "mean",
    "max",
    "min",
    "prod",
    "var",
    "std",
    "logsumexp",
    "all",
    "any",
    "sum_all",
    "mean_all",
    "argmax",
    "argmin",
    "softmax",
    "log_softmax",
    "cumsum",
    "topk",
];
const VIEWS: [&str; 21] = [
    "reshape",
    "reshape_infer",
    "flatten",
    "permute",
    "transpose",
    "t",
    "narrow",
    "slice",
    "squeeze",
    "squeeze_all",
    "unsqueeze",
    "expand",
    "broadcast_to",
    "contiguous",
    "copy",
    "sum_to_shape",
    "dim",
    "item",
    "to_vec",
    "set_data",
    "set_grad",
];
const INDEX: [&str; 13] = [
    "index_select",
    "gather",
    "scatter_add",
    "one_hot",
    "flip",
    "repeat",
    "pad",
    "tril",
    "triu",
    "cat",
    "stack",
    "split",
    "chunk",
];
const LINALG: [&str; 9] =
    ["matmul", "dot", "conv2d", "conv1d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "im2col", "col2im"];
const CREATE: [&str; 10] =
    ["full_dtype", "zeros", "ones", "arange", "linspace", "eye", "from_vec", "zeros_like", "ones_like", "scalar"];

/// Ops whose outputs sum many products: their tolerance grows with the inputs' magnitude.
const ACCUMULATING: [&str; 20] = [
    "sum",
    "mean",
    "prod",
    "var",
    "std",
    "logsumexp",
    "sum_all",
    "mean_all",
    "softmax",
    "log_softmax",
    "cumsum",
    "sum_to_shape",
    "scatter_add",
    "matmul",
    "dot",
    "conv2d",
    "conv1d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "col2im",
];

/// Cases per family (one call each). Their sum is the number of random calls per run.
const CASES: [(&str, u32); 6] =
    [("elementwise", 4800), ("reduce", 3000), ("views", 2600), ("index", 2300), ("linalg", 1600), ("create", 700)];
const _: () = {
    let mut total = 0;
    let mut i = 0;
    while i < CASES.len() {
        total += CASES[i].1;
        i += 1;
    }
    assert!(total >= 10_000, "a run must make at least 10,000 random op calls");
};

fn family_ops(family: &str) -> Vec<&'static str> {
    match family {
        "elementwise" => UNARY.iter().chain(&BINARY).chain(&ELEMENTWISE_MORE).copied().collect(),
        "reduce" => REDUCE.to_vec(),
        "views" => VIEWS.to_vec(),
        "index" => INDEX.to_vec(),
        "linalg" => LINALG.to_vec(),
        "create" => CREATE.to_vec(),
        other => panic!("no family {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Random calls

/// One element before conversion to a dtype: a small number (k/8 for floats, k for ints) or an
/// edge value.
#[derive(Clone, Copy, Debug, PartialEq)]
enum V {
    N(i8),
    Nan,
    Inf,
    NegInf,
    NegZero,
    Huge,
    Tiny,
    IntMax,
    IntMin,
}

impl V {
    fn f(self) -> f64 {
        match self {
            V::N(k) => k as f64 / 8.0,
            V::Nan => f64::NAN,
            V::Inf => f64::INFINITY,
            V::NegInf => f64::NEG_INFINITY,
            V::NegZero => -0.0,
            V::Huge | V::IntMax => 1e4,
            V::IntMin => -1e4,
            V::Tiny => 1e-30,
        }
    }

    fn i(self) -> i32 {
        match self {
            V::N(k) => k as i32,
            V::Nan | V::NegZero | V::Tiny => 0,
            V::Inf | V::Huge => 1000,
            V::NegInf => -1000,
            V::IntMax => i32::MAX,
            V::IntMin => i32::MIN,
        }
    }

    fn u(self) -> u32 {
        match self {
            V::N(k) => k.unsigned_abs() as u32,
            V::Nan | V::NegZero | V::Tiny | V::IntMin => 0,
            V::Inf | V::Huge | V::NegInf => 1000,
            V::IntMax => u32::MAX,
        }
    }

    fn b(self) -> bool {
        match self {
            V::N(k) => k % 2 != 0,
            V::NegZero | V::Tiny => false,
            _ => true,
        }
    }

    /// Without edge values (a "clean" tensor).
    fn tame(self) -> V {
        match self {
            V::N(_) => self,
            _ => V::N(3),
        }
    }
}

fn value() -> impl Strategy<Value = V> {
    prop_oneof![
        92 => (-40i8..=40).prop_map(V::N),
        1 => Just(V::Nan),
        1 => Just(V::Inf),
        1 => Just(V::NegInf),
        1 => Just(V::NegZero),
        1 => Just(V::Huge),
        1 => Just(V::Tiny),
        1 => Just(V::IntMax),
        1 => Just(V::IntMin),
    ]
}

/// How a tensor's elements are laid out over its storage.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Lay {
    Plain,
    /// A transposed view (last two dims).
    Transposed,
    /// Every other element of the last dim.
    Strided,
    /// Dim 0 broadcast from size 1 (stride 0).
    Broadcast,
    /// A view starting one row into its storage.
    Offset,
    /// No elements, but a huge dim: `[0, 2^k]` shapes reached through a reshape.
    Degenerate(u8),
}

fn layout() -> impl Strategy<Value = Lay> {
    prop_oneof![
        12 => Just(Lay::Plain),
        2 => Just(Lay::Transposed),
        2 => Just(Lay::Strided),
        2 => Just(Lay::Broadcast),
        1 => Just(Lay::Offset),
        1 => prop::sample::select(vec![12u8, 20, 26, 31, 32, 33, 40, 44]).prop_map(Lay::Degenerate),
    ]
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![10 => Just(DType::F32), 2 => Just(DType::F16), 3 => Just(DType::I32), 2 => Just(DType::U32), 3 => Just(DType::Bool)]
}

fn any_dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(DType::ALL.to_vec())
}

/// Dims of 0..=7, mostly 1..=4, at most 4 of them, at most 64 elements.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    let dim = prop_oneof![1 => Just(0usize), 5 => Just(1), 10 => 2usize..=4, 2 => 5usize..=7];
    prop::collection::vec(dim, 0..=4).prop_map(|mut s| {
        while s.iter().product::<usize>() > 64 {
            let i = (0..s.len()).max_by_key(|&i| s[i]).unwrap_or(0);
            s[i] /= 2;
        }
        s
    })
}

/// The first input.
#[derive(Clone, Debug)]
struct Spec {
    shape: Vec<usize>,
    dtype: DType,
    lay: Lay,
    clean: bool,
    vals: Vec<V>,
}

/// How another input's shape relates to the first's.
#[derive(Clone, Debug)]
enum Rel {
    Same,
    /// The first's shape with the dims in this bit mask set to 1 (broadcasts).
    Ones(u8),
    /// Its last k dims.
    Suffix(u8),
    /// Unrelated.
    Own(Vec<usize>),
    /// `[first's last dim, n]`, a matmul right-hand side.
    MatRhs(usize),
    /// `[o, first's dim 1, kh, kw]` (`[o, c, kh]` for a 3-d first input): a conv weight. As
    /// the third input next to such a weight: `[o]`, its bias.
    Kernel(usize, usize, usize),
    Scalar,
}

/// The second and third inputs.
#[derive(Clone, Debug)]
struct Other {
    rel: Rel,
    /// `None`: the first input's dtype.
    dtype: Option<DType>,
    lay: Lay,
    clean: bool,
    vals: Vec<V>,
}

#[derive(Clone, Debug)]
struct Call {
    op: &'static str,
    a: Spec,
    b: Other,
    c: Other,
    /// Dims, sizes, strides... (mostly small, sometimes far out of range).
    ints: [i64; 6],
    /// Index values (some negative or past the end).
    ids: Vec<i64>,
    ids_dtype: DType,
    /// Scalar arguments.
    s: [V; 3],
    /// Option switches; `flags[2]` keeps sizes and geometry small, `flags[3]` axes in range.
    flags: [bool; 4],
    /// A target dtype (casts, creation).
    to: DType,
    /// Track gradients through the op and run backward.
    grad: bool,
}

fn values() -> impl Strategy<Value = Vec<V>> {
    prop::collection::vec(value(), 1..=16)
}

/// Mostly `[n, c, h, w]` and `[n, c, l]`: shapes convolutions and pools accept.
fn conv_shape() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        1 => shape(),
        4 => (1usize..=2, 1usize..=3, 1usize..=6, 1usize..=6).prop_map(|(n, c, h, w)| vec![n, c, h, w.min(64 / (n * c * h))]),
        2 => (1usize..=2, 1usize..=3, 1usize..=9).prop_map(|(n, c, l)| vec![n, c, l]),
    ]
}

fn spec(conv: bool) -> impl Strategy<Value = Spec> {
    let shape = if conv { conv_shape().boxed() } else { shape().boxed() };
    (shape, dtype(), layout(), any::<bool>(), values()).prop_map(|(shape, dtype, lay, clean, vals)| Spec {
        shape,
        dtype,
        lay,
        clean,
        vals,
    })
}

fn other(conv: bool) -> impl Strategy<Value = Other> {
    // Convolutions want weights and biases that fit; the rest, broadcasting partners.
    let (same, k, m) = if conv { (2, 20, 6) } else { (6, 2, 2) };
    let rel = prop_oneof![
        same => Just(Rel::Same),
        3 => any::<u8>().prop_map(Rel::Ones),
        2 => (0u8..=4).prop_map(Rel::Suffix),
        2 => shape().prop_map(Rel::Own),
        m => (0usize..=5).prop_map(Rel::MatRhs),
        k => (1usize..=3, 1usize..=3, 1usize..=3).prop_map(|(o, h, w)| Rel::Kernel(o, h, w)),
        1 => Just(Rel::Scalar),
    ];
    let dtype = prop_oneof![5 => Just(None), 1 => dtype().prop_map(Some)];
    (rel, dtype, layout(), any::<bool>(), values()).prop_map(|(rel, dtype, lay, clean, vals)| Other {
        rel,
        dtype,
        lay,
        clean,
        vals,
    })
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        24 => -3i64..=9,
        1 => prop::sample::select(vec![i64::MAX, i64::MIN, 1 << 40, -(1 << 40), 1 << 62, u32::MAX as i64 + 1]),
    ]
}

fn call(ops: Vec<&'static str>, conv: bool) -> impl Strategy<Value = Call> {
    let ids = prop::collection::vec(prop_oneof![12 => -1i64..=7, 1 => Just(1i64 << 40)], 0..=8);
    let ids_dtype =
        prop_oneof![6 => Just(DType::U32), 3 => Just(DType::I32), 1 => Just(DType::F32), 1 => Just(DType::Bool)];
    (
        prop::sample::select(ops),
        spec(conv),
        other(conv),
        other(conv),
        prop::array::uniform6(int()),
        ids,
        ids_dtype,
        prop::array::uniform3(value()),
        (any::<bool>(), any::<bool>(), prop::bool::weighted(0.7), prop::bool::weighted(0.8))
            .prop_map(|(f0, f1, f2, f3)| [f0, f1, f2, f3]),
        any_dtype(),
        prop::bool::weighted(0.25),
    )
        .prop_map(|(op, a, b, c, ints, ids, ids_dtype, s, flags, to, grad)| {
            let mut call = Call { op, a, b, c, ints, ids, ids_dtype, s, flags, to, grad };
            if call.flags[2] {
                fit(&mut call);
            }
            call
        })
}

/// Makes a "sane" convolution or pooling call likely to succeed: an input of the rank the op
/// takes, a weight and bias that match it. (Unfitted calls cover the errors.)
fn fit(call: &mut Call) {
    if call.op == "dot" {
        call.a.shape = vec![call.a.shape.last().copied().unwrap_or(3)];
        call.b.rel = Rel::Same;
        call.b.dtype = None;
        return;
    }
    let rank = match call.op {
        "conv2d" | "max_pool2d" | "avg_pool2d" | "adaptive_avg_pool2d" | "im2col" | "col2im" => 4,
        "conv1d" => 3,
        _ => return,
    };
    let s = &mut call.a.shape;
    while s.len() < rank {
        s.insert(0, 1);
    }
    while s.len() > rank {
        s.remove(0);
    }
    if matches!(call.a.lay, Lay::Degenerate(_)) {
        call.a.lay = Lay::Plain;
    }
    if call.op.starts_with("conv") {
        if !matches!(call.b.rel, Rel::Kernel(..)) {
            call.b.rel =
                Rel::Kernel(1 + call.ints[0].rem_euclid(3) as usize, 1, 1 + call.ints[1].rem_euclid(2) as usize);
        }
        call.c.rel = Rel::Kernel(1, 1, 1);
        for o in [&mut call.b, &mut call.c] {
            o.dtype = None;
            if matches!(o.lay, Lay::Degenerate(_)) {
                o.lay = Lay::Plain;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Building inputs

fn host(dtype: DType, n: usize, vals: &[V], clean: bool) -> HostData {
    let v = |i: usize| {
        let x = vals[i % vals.len()];
        if clean { x.tame() } else { x }
    };
    match dtype {
        DType::F32 => HostData::F32((0..n).map(|i| v(i).f() as f32).collect()),
        DType::F16 => HostData::F16((0..n).map(|i| kiln::f16::from_f64(v(i).f())).collect()),
        DType::F64 => HostData::F64((0..n).map(|i| v(i).f()).collect()),
        DType::I32 => HostData::I32((0..n).map(|i| v(i).i()).collect()),
        DType::U32 => HostData::U32((0..n).map(|i| v(i).u()).collect()),
        DType::Bool => HostData::Bool((0..n).map(|i| v(i).b()).collect()),
    }
}

/// A tensor of `shape` on `dev` laid out as `lay`, its storage filled from `vals`.
fn make(shape: &[usize], dtype: DType, lay: Lay, clean: bool, vals: &[V], dev: &Device) -> Result<Tensor> {
    let r = shape.len();
    let mut base = shape.to_vec();
    match lay {
        Lay::Transposed if r >= 2 => base.swap(r - 2, r - 1),
        Lay::Strided if r >= 1 => base[r - 1] *= 2,
        Lay::Broadcast if r >= 1 => base[0] = 1,
        Lay::Offset if r >= 1 => base[0] += 1,
        Lay::Degenerate(_) => base = vec![0],
        _ => {}
    }
    let n = base.iter().product();
    let t = Tensor::from_host(host(dtype, n, vals, clean), &base, &Device::cpu())?.to(dev)?;
    match lay {
        Lay::Transposed if r >= 2 => t.transpose(-2, -1),
        Lay::Strided if r >= 1 => t.slice(-1, 0, base[r - 1], 2),
        Lay::Broadcast if r >= 1 => t.expand(shape),
        Lay::Offset if r >= 1 => t.narrow(0, 1, shape[0]),
        Lay::Degenerate(k) => t.reshape(&[0, 1usize << k, 3]),
        _ => Ok(t),
    }
}

fn other_shape(a: &[usize], rel: &Rel) -> Vec<usize> {
    match rel {
        Rel::Same => a.to_vec(),
        Rel::Ones(mask) => a.iter().enumerate().map(|(i, &d)| if mask >> i & 1 == 1 { 1 } else { d }).collect(),
        Rel::Suffix(k) => a[a.len().saturating_sub(*k as usize)..].to_vec(),
        Rel::Own(s) => s.clone(),
        Rel::MatRhs(n) => vec![a.last().copied().unwrap_or(1), *n],
        Rel::Kernel(o, kh, kw) => match a.len() {
            3 => vec![*o, a[1], *kh],
            4 => vec![*o, a[1], *kh, *kw],
            _ => vec![*o, 1, *kh, *kw],
        },
        Rel::Scalar => vec![],
    }
}

/// The third input's shape: a bias `[o]` next to a conv weight, else by its relation.
fn c_shape(call: &Call) -> Vec<usize> {
    match (&call.b.rel, &call.c.rel) {
        (Rel::Kernel(o, ..), Rel::Kernel(..)) => vec![*o],
        _ => other_shape(&call.a.shape, &call.c.rel),
    }
}

struct Inputs {
    a: Tensor,
    b: Tensor,
    c: Tensor,
    dev: Device,
    /// The device of the other run, for cross-device calls.
    other: Option<Device>,
}

fn build(call: &Call, dev: &Device, other: Option<Device>) -> Result<Inputs> {
    let s = &call.a;
    let a = make(&s.shape, s.dtype, s.lay, s.clean, &s.vals, dev)?;
    let side = |o: &Other, shape: Vec<usize>| make(&shape, o.dtype.unwrap_or(s.dtype), o.lay, o.clean, &o.vals, dev);
    let b = side(&call.b, other_shape(&s.shape, &call.b.rel))?;
    let c = side(&call.c, c_shape(call))?;
    Ok(Inputs { a, b, c, dev: dev.clone(), other })
}

fn ids_tensor(call: &Call, shape: &[usize], dev: &Device) -> Result<Tensor> {
    let n = shape.iter().try_fold(1usize, |p, &d| p.checked_mul(d)).unwrap_or(usize::MAX);
    if n > 1 << 12 {
        // A huge index shape (from a degenerate input): one index, broadcast.
        let one = ids_tensor(call, &vec![1; shape.len()], dev)?;
        return one.expand(shape);
    }
    let v = |i: usize| if call.ids.is_empty() { 0 } else { call.ids[i % call.ids.len()] };
    let data = match call.ids_dtype {
        DType::I32 => HostData::I32((0..n).map(|i| v(i) as i32).collect()),
        DType::F32 => HostData::F32((0..n).map(|i| v(i) as f32).collect()),
        DType::Bool => HostData::Bool((0..n).map(|i| v(i) != 0).collect()),
        _ => HostData::U32((0..n).map(|i| v(i) as u32).collect()),
    };
    Tensor::from_host(data, shape, dev)
}

// ---------------------------------------------------------------------------------------------
// Running one call

fn unary_op(name: &str, s: [f64; 2]) -> Option<UnaryOp> {
    let op = UnaryOp::ALL.into_iter().find(|o| o.name() == name)?;
    Some(match op {
        UnaryOp::LeakyRelu(_) => UnaryOp::LeakyRelu(s[0]),
        UnaryOp::Elu(_) => UnaryOp::Elu(s[0]),
        UnaryOp::Powf(_) => UnaryOp::Powf(s[0]),
        other => other,
    })
}

fn binary_op(name: &str) -> Option<BinaryOp> {
    BinaryOp::ALL.into_iter().find(|o| o.name() == name)
}

/// A small size from an int: most of the fuzz wants sizes that fit; the raw ints (via `as
/// usize`) cover the ones that do not.
fn small(k: i64) -> usize {
    k.rem_euclid(6) as usize
}

/// The op under test on `x`; every output it makes, gradients included when `call.grad`.
fn apply(call: &Call, x: &Inputs) -> Result<Vec<Tensor>> {
    let track = |t: &Tensor, on: bool| if on && t.dtype().is_float() { t.with_grad() } else { t.clone() };
    let a = &track(&x.a, call.grad);
    let b = &track(&x.b, call.grad && call.flags[1]);
    let c = &x.c;
    let d = &x.dev;
    let k = &call.ints;
    let i = |j: usize| k[j] as isize;
    let u = |j: usize| k[j] as usize;
    // Geometry ints: sane (1..=3) when flags[2], raw otherwise.
    let g = |j: usize| if call.flags[2] { k[j].rem_euclid(3) as usize + 1 } else { k[j] as usize };
    let [s0, s1, s2] = call.s.map(V::f);
    let [f0, f1, _, sane_axes] = call.flags;
    // An axis: any int, or one in range (negative or not) when `sane_axes`.
    let ax = |j: usize| {
        let r = a.rank() as i64;
        if sane_axes && r > 0 { (k[j].rem_euclid(2 * r) - r) as isize } else { k[j] as isize }
    };
    let dims: Vec<isize> = (0..k[5].rem_euclid(4) as usize).map(ax).collect();
    let ushape = |n: usize| -> Vec<usize> { (0..n).map(u).collect() };
    let one = |t: Result<Tensor>| t.map(|t| vec![t]);
    // A view, and an op reading it through its strides.
    let view = |t: Result<Tensor>| -> Result<Vec<Tensor>> {
        let v = t?;
        if v.dtype() == DType::Bool || v.numel() > 1 << 12 { Ok(vec![v]) } else { Ok(vec![v.mul_scalar(2.0)?, v]) }
    };
    let pairs = |n: usize| -> Vec<(usize, usize)> {
        (0..n).map(|j| (small(k[j]), if call.flags[2] { small(k[j + 1]) } else { u(j + 1) })).collect()
    };
    let listed = || -> Vec<Tensor> {
        match k[5].rem_euclid(4) {
            0 => vec![],
            1 => vec![a.clone()],
            2 => vec![a.clone(), b.clone()],
            _ => vec![a.clone(), b.clone(), c.clone()],
        }
    };
    let geometry = || -> ConvGeometry {
        let s = a.shape();
        let fits = call.flags[1] && s.len() == 4;
        let dim = |j: usize, n: usize| if fits { s[j] } else { small(k[n]) };
        ConvGeometry {
            n: dim(0, 0),
            c: dim(1, 1),
            h: dim(2, 2),
            w: dim(3, 3),
            kh: g(4),
            kw: g(5),
            stride: (g(0), g(1)),
            padding: (small(k[2]) % 2, small(k[3]) % 2),
            dilation: (g(2), g(3)),
        }
    };

    let outputs: Vec<Tensor> = if let Some(op) = unary_op(call.op, [s0, s1]) {
        match op {
            UnaryOp::Clamp(..) => vec![if f0 { a.clamp(s0.min(s1), s0.max(s1))? } else { a.clamp(s0, s1)? }],
            op => vec![a.unary(op)?],
        }
    } else if let Some(op) = binary_op(call.op) {
        vec![a.binary(b, op)?]
    } else {
        match call.op {
            "add_scalar" => one(a.add_scalar(s0)),
            "sub_scalar" => one(a.sub_scalar(s0)),
            "mul_scalar" => one(a.mul_scalar(s0)),
            "div_scalar" => one(a.div_scalar(s0)),
            "pow_scalar" => one(a.pow_scalar(s0)),
            "maximum_scalar" => one(a.maximum_scalar(s0)),
            "minimum_scalar" => one(a.minimum_scalar(s0)),
            "rem_scalar" => one(a.rem_scalar(s0)),
            "eq_scalar" => one(a.eq_scalar(s0)),
            "lt_scalar" => one(a.lt_scalar(s0)),
            "ge_scalar" => one(a.ge_scalar(s0)),
            "logical_or_scalar" => one(a.logical_or_scalar(s0)),
            "where_" => one(Tensor::where_(c, a, b)),
            "masked_fill" => one(a.masked_fill(c, s0)),
            "to_dtype" => one(a.to_dtype(call.to)),
            "to_device" => one(a.to(&Device::cpu())?.to(d)),
            "cross_device" => match &x.other {
                Some(o) => one(a.add(&b.to(o)?)),
                None => Ok(vec![]),
            },

            "sum" => one(a.sum(&dims, f0)),
            "mean" => one(a.mean(&dims, f0)),
            "max" => one(a.max(&dims, f0)),
            "min" => one(a.min(&dims, f0)),
            "prod" => one(a.prod(&dims, f0)),
            "var" => one(a.var(&dims, f1, f0)),
            "std" => one(a.std(&dims, f1, f0)),
            "logsumexp" => one(a.logsumexp(&dims, f0)),
            "all" => one(a.all(&dims, f0)),
            "any" => one(a.any(&dims, f0)),
            "sum_all" => one(a.sum_all()),
            "mean_all" => one(a.mean_all()),
            "argmax" => one(a.argmax(ax(0), f0)),
            "argmin" => one(a.argmin(ax(0), f0)),
            "softmax" => one(a.softmax(ax(0))),
            "log_softmax" => one(a.log_softmax(ax(0))),
            "cumsum" => one(a.cumsum(ax(0))),
            "topk" => {
                let kk = if f1 { small(k[0]) } else { u(0) };
                a.topk(kk, f0).map(|(v, ix)| vec![v, ix])
            }

            "reshape" => view(a.reshape(&ushape(small(k[5])))),
            "reshape_infer" => view(a.reshape_infer(&(0..small(k[5])).map(i).collect::<Vec<_>>())),
            "flatten" => view(a.flatten(ax(0), ax(1))),
            "permute" => view(a.permute(&ushape(if f0 { a.rank() } else { small(k[5]) }))),
            "transpose" => view(a.transpose(ax(0), ax(1))),
            "t" => view(a.t()),
            "narrow" => view(a.narrow(ax(0), u(1), u(2))),
            "slice" => view(a.slice(ax(0), u(1), u(2), u(3))),
            "squeeze" => view(a.squeeze(ax(0))),
            "squeeze_all" => view(a.squeeze_all()),
            "unsqueeze" => view(a.unsqueeze(ax(0))),
            "expand" => view(a.expand(&ushape(small(k[5])))),
            "broadcast_to" => view(a.broadcast_to(b.shape())),
            "contiguous" => one(a.contiguous()),
            "copy" => one(a.copy()),
            "sum_to_shape" => one(a.sum_to_shape(b.shape())),
            "dim" => one(Tensor::full(&[], a.dim(ax(0))? as f64, d)),
            "item" => one(Tensor::full(&[], a.item()?, d)),
            "to_vec" => {
                let n = match call.to {
                    DType::F32 => a.to_vec::<f32>()?.len(),
                    DType::F16 => a.to_vec::<kiln::f16>()?.len(),
                    DType::F64 => a.to_vec::<f64>()?.len(),
                    DType::I32 => a.to_vec::<i32>()?.len(),
                    DType::U32 => a.to_vec::<u32>()?.len(),
                    DType::Bool => a.to_vec::<bool>()?.len(),
                };
                one(Tensor::full(&[], n as f64, d))
            }
            "set_data" => {
                // On a copy: the inputs must stay as they were.
                let p = a.copy()?.detach();
                p.set_data(b)?;
                Ok(vec![p])
            }
            "set_grad" => {
                let p = a.copy()?.detach().with_grad();
                p.set_grad(Some(b.clone()))?;
                Ok(p.grad().into_iter().collect())
            }

            "index_select" => one(a.index_select(ax(0), &ids_tensor(call, &[call.ids.len()], d)?)),
            "gather" => {
                let shape: Vec<usize> = if f1 { a.shape().to_vec() } else { other_shape(a.shape(), &call.b.rel) };
                one(a.gather(ax(0), &ids_tensor(call, &shape, d)?))
            }
            "scatter_add" => one(a.scatter_add(ax(0), &ids_tensor(call, b.shape(), d)?, b)),
            "one_hot" => one(Tensor::one_hot(
                &ids_tensor(call, &a.shape()[..a.rank().min(2)], d)?,
                if f0 { small(k[1]) } else { u(1) },
            )),
            "flip" => one(a.flip(&dims)),
            "repeat" => one(a.repeat(
                &(0..a.rank() + small(k[5]) % 2).map(|j| if f0 { small(k[j]) } else { u(j) }).collect::<Vec<_>>(),
            )),
            "pad" => one(a.pad(&pairs(small(k[5]) % 4), s0)),
            "tril" => one(a.tril(k[0])),
            "triu" => one(a.triu(k[0])),
            "cat" => one(Tensor::cat(&listed(), ax(0))),
            "stack" => one(Tensor::stack(&listed(), ax(0))),
            "split" => a.split(if f0 { small(k[1]) } else { u(1) }, ax(0)),
            "chunk" => a.chunk(if f0 { small(k[1]) } else { u(1) }, ax(0)),

            "matmul" => one(a.matmul(b)),
            "dot" => one(a.dot(b)),
            "conv2d" => {
                let opts = Conv2dOptions {
                    stride: (g(0), g(1)),
                    padding: (small(k[2]) % 3, small(k[3]) % 3),
                    dilation: (g(4), g(5)),
                    groups: if f1 { 1 } else { u(5) },
                };
                one(a.conv2d(b, f0.then_some(c), opts))
            }
            "conv1d" => one(a.conv1d(b, f0.then_some(c), g(0), small(k[2]) % 3, g(4), if f1 { 1 } else { u(5) })),
            "max_pool2d" => one(a.max_pool2d((g(0), g(1)), (g(2), g(3)), (small(k[4]) % 2, small(k[5]) % 2))),
            "avg_pool2d" => one(a.avg_pool2d((g(0), g(1)), (g(2), g(3)), (small(k[4]) % 2, small(k[5]) % 2))),
            "adaptive_avg_pool2d" => one(a.adaptive_avg_pool2d((g(0), g(1)))),
            "im2col" => one(a.im2col(&geometry(), s0)),
            // Fitted: fold back what im2col unfolded (the adjoint pair); else any tensor.
            "col2im" if f1 => one(a.im2col(&geometry(), s0)?.col2im(&geometry())),
            "col2im" => one(a.col2im(&geometry())),

            "full_dtype" => one(Tensor::full_dtype(&ushape(small(k[5])), s0, call.to, d)),
            "zeros" => one(Tensor::zeros(&ushape(small(k[5])), d)),
            "ones" => one(Tensor::ones(&ushape(small(k[5])), d)),
            // Steps that make more than a few elements are `huge_sizes_are_errors`' business.
            "arange" => one(Tensor::arange(s0, s1, if call.s[2] == V::Tiny { 0.5 } else { s2 }, d)),
            "linspace" => one(Tensor::linspace(s0, s1, small(k[0]) * 7, d)),
            "eye" => one(Tensor::eye(small(k[0]) * 3, d)),
            "from_vec" => {
                let shape = ushape(small(k[5]));
                let n = shape.iter().fold(1usize, |p, &x| p.saturating_mul(x)).min(64).saturating_add(small(k[4]) / 4);
                one(Tensor::from_host(host(call.to, n, &call.a.vals, false), &shape, d))
            }
            "zeros_like" => one(Tensor::zeros_like(a)),
            "ones_like" => one(Tensor::ones_like(a)),
            "scalar" => one(Tensor::scalar(s0, d)),
            other => panic!("the fuzz harness has no op {other}"),
        }?
    };
    let mut outputs = outputs;
    if call.grad && outputs.first().is_some_and(|o| o.requires_grad()) {
        outputs[0].sum_all()?.backward()?;
        outputs.extend(a.grad());
        outputs.extend(b.grad());
    }
    Ok(outputs)
}

/// What a call gave on one device: each output's shape, dtype and values (`None` past the
/// size worth comparing), or its error.
type Outcome = std::result::Result<Vec<(Vec<usize>, DType, Option<Vec<f64>>)>, Error>;

const COMPARE_LIMIT: usize = 1 << 16;

fn read(outputs: Vec<Tensor>) -> Outcome {
    outputs
        .into_iter()
        .map(|t| {
            let v = if t.numel() <= COMPARE_LIMIT { Some(t.to_f64_vec()?) } else { None };
            Ok((t.shape().to_vec(), t.dtype(), v))
        })
        .collect()
}

fn bits(x: &Inputs) -> Result<Vec<Vec<u64>>> {
    [&x.a, &x.b, &x.c]
        .iter()
        .map(|t| {
            Ok(if t.numel() <= COMPARE_LIMIT { t.to_f64_vec()?.iter().map(|v| v.to_bits()).collect() } else { vec![] })
        })
        .collect()
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<non-string panic>".into())
}

/// Runs `call` on `dev`: `Ok(None)` when its inputs cannot live there (f16 without
/// `SHADER_F16`), `Err` when a property failed.
fn run_on(call: &Call, dev: &Device, other: Option<Device>) -> std::result::Result<Option<Outcome>, String> {
    let where_ = dev.name();
    let x = match catch_unwind(AssertUnwindSafe(|| build(call, dev, other))) {
        Err(p) => return Err(format!("PANIC building the inputs on {where_}: {}", panic_text(p))),
        Ok(Err(Error::Unsupported { .. } | Error::UnsupportedDType { .. })) if dev.is_gpu() => return Ok(None),
        Ok(Err(e)) => return Err(format!("building the inputs on {where_} failed: {e}")),
        Ok(Ok(x)) => x,
    };
    let before = bits(&x).map_err(|e| format!("reading the inputs on {where_}: {e}"))?;
    let outcome = match catch_unwind(AssertUnwindSafe(|| apply(call, &x).and_then(read))) {
        Err(p) => return Err(format!("PANIC in `{}` on {where_}: {}", call.op, panic_text(p))),
        Ok(o) => o,
    };
    let after = match catch_unwind(AssertUnwindSafe(|| bits(&x))) {
        Err(p) => return Err(format!("PANIC reading the inputs after `{}` on {where_}: {}", call.op, panic_text(p))),
        Ok(r) => r.map_err(|e| format!("reading the inputs after `{}` on {where_}: {e}", call.op))?,
    };
    if before != after {
        return Err(format!("`{}` on {where_} changed its inputs", call.op));
    }
    Ok(Some(outcome))
}

fn describe(o: &Outcome) -> String {
    match o {
        Ok(outs) => format!("Ok({:?})", outs.iter().map(|(s, d, _)| format!("{s:?} {d}")).collect::<Vec<_>>()),
        Err(e) => format!("Err({e})"),
    }
}

/// The largest finite magnitude among the inputs (at least 1): how far rounding may drift.
fn magnitude(call: &Call) -> f64 {
    let m = |vals: &[V], clean: bool| {
        vals.iter()
            .map(|v| if clean { v.tame() } else { *v })
            .map(|v| v.f().abs())
            .filter(|v| v.is_finite())
            .fold(1.0f64, f64::max)
    };
    m(&call.a.vals, call.a.clean).max(m(&call.b.vals, call.b.clean)).max(m(&call.c.vals, call.c.clean))
}

/// Out of memory, or an error (a gradient's) caused by it: limits differ between devices.
fn is_oom(e: &Error) -> bool {
    matches!(e, Error::OutOfMemory { .. }) || e.to_string().contains("out of memory")
}

/// Compares the CPU's and the GPU's outcomes.
fn agree(call: &Call, cpu: &Outcome, gpu: &Outcome) -> std::result::Result<(), String> {
    let adapter_limit = |e: &Error| {
        is_oom(e)
            || (matches!(e, Error::Unsupported { .. } | Error::UnsupportedDType { .. })
                && (call.to == DType::F64 || e.to_string().contains("f64")))
    };
    match (cpu, gpu) {
        (Ok(c), Ok(g)) => {
            if c.len() != g.len() {
                return Err(format!("cpu gave {} outputs, gpu {}", c.len(), g.len()));
            }
            let accumulates = call.grad || ACCUMULATING.contains(&call.op);
            let m = magnitude(call);
            for (n, ((cs, cd, cv), (gs, gd, gv))) in c.iter().zip(g).enumerate() {
                if cs != gs || cd != gd {
                    return Err(format!("output {n}: cpu {cs:?} {cd} vs gpu {gs:?} {gd}"));
                }
                let (Some(cv), Some(gv)) = (cv, gv) else { continue };
                let (rtol, atol): (f64, f64) = match cd {
                    DType::F16 => (1e-2, 1e-2),
                    DType::F32 | DType::F64 => (1e-4, 1e-5),
                    _ => (0.0, 0.0),
                };
                let atol = if accumulates && cd.is_float() { atol.max(rtol * 64.0 * m * m) } else { atol };
                for (j, (&x, &y)) in gv.iter().zip(cv).enumerate() {
                    let ok =
                        (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= atol + rtol * x.abs().max(y.abs());
                    if !ok {
                        return Err(format!("output {n} {cs:?} {cd}, element {j}: gpu {x} vs cpu {y}"));
                    }
                }
            }
            Ok(())
        }
        (Err(c), Err(g)) => {
            if std::mem::discriminant(c) == std::mem::discriminant(g) || adapter_limit(g) || adapter_limit(c) {
                Ok(())
            } else {
                Err(format!("different errors: cpu {c} vs gpu {g}"))
            }
        }
        (Ok(_), Err(g)) if adapter_limit(g) => Ok(()),
        (Err(c), Ok(_)) if is_oom(c) => Ok(()),
        (c, g) => Err(format!("cpu {} vs gpu {}", describe(c), describe(g))),
    }
}

// ---------------------------------------------------------------------------------------------
// Driving proptest, inside a supervised child process

const CHILD_ENV: &str = "KILN_FUZZ_CHILD";
const LAST_CALL_ENV: &str = "KILN_FUZZ_LAST_CALL";

static CALLS: AtomicUsize = AtomicUsize::new(0);
/// When the current call started (ms since the epoch), for the hang watchdog.
static CALL_STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// A call running longer than this is a hang: the child exits with [`HANG_EXIT`].
const HANG_MS: u64 = 30_000;
const HANG_EXIT: i32 = 86;

fn epoch_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
static GPU_CALLS: AtomicUsize = AtomicUsize::new(0);
static ERRORS: AtomicUsize = AtomicUsize::new(0);
static KNOWN: AtomicUsize = AtomicUsize::new(0);
static ERROR_KINDS: std::sync::Mutex<std::collections::BTreeMap<String, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

// ---------------------------------------------------------------------------------------------
// Known bugs. A bug found and not yet fixed gets an entry here, so that the fuzz steps around it
// and keeps finding new ones, and an `#[ignore]`d regression test at the end of this file.
// Delete the entry and the `#[ignore]` when it is fixed. (The first 19 are fixed; their
// regression tests run below.)

/// Calls that panic or abort: not run at all. None known.
fn known_crash(_call: &Call) -> Option<&'static str> {
    None
}

/// Calls where the CPU and the GPU disagree: run on both (no panic, inputs intact), not
/// compared. None known.
fn known_divergence(_call: &Call) -> Option<&'static str> {
    None
}

fn check(call: &Call, gpu: Option<&Device>, log: Option<&PathBuf>) -> std::result::Result<(), TestCaseError> {
    if let Some(log) = log {
        // Read back by the parent if this process dies (abort, hang) during the call.
        let _ = std::fs::write(log, format!("{call:?}"));
    }
    CALLS.fetch_add(1, Ordering::Relaxed);
    CALL_STARTED.store(epoch_ms(), Ordering::Relaxed);
    if known_crash(call).is_some() {
        KNOWN.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    let fail = |msg: String| TestCaseError::fail(format!("{msg}\n  call: {call:?}"));
    let cpu = run_on(call, &Device::cpu(), gpu.cloned()).map_err(fail)?.expect("cpu inputs always build");
    {
        let kind = match &cpu {
            Ok(_) => "Ok".to_string(),
            Err(e) => {
                if std::env::var("KILN_FUZZ_SHOW").is_ok_and(|o| o == call.op) {
                    eprintln!("SHOW {e} | a {:?} {:?} b {:?} c {:?}", call.a.shape, call.a.lay, call.b.rel, call.c.rel);
                }
                ERRORS.fetch_add(1, Ordering::Relaxed);
                format!("{e:?}").split([' ', '{', '(']).next().unwrap_or("?").to_string()
            }
        };
        *ERROR_KINDS.lock().unwrap_or_else(|p| p.into_inner()).entry(format!("{}:{kind}", call.op)).or_default() += 1;
    }
    let Some(gpu) = gpu else { return Ok(()) };
    let Some(on_gpu) = run_on(call, gpu, Some(Device::cpu())).map_err(fail)? else { return Ok(()) };
    GPU_CALLS.fetch_add(1, Ordering::Relaxed);
    if known_divergence(call).is_some() {
        KNOWN.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    agree(call, &cpu, &on_gpu).map_err(|m| fail(format!("cpu and gpu disagree on `{}`: {m}", call.op)))
}

fn fuzz_family(family: &str) {
    let gpu = common::gpu(&format!("fuzz_{family}"));
    let scale: u32 = std::env::var("KILN_FUZZ_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let cases = CASES.iter().find(|(f, _)| *f == family).map(|(_, n)| *n).unwrap_or(100) * scale;
    let seed: u64 = std::env::var("KILN_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6b69_6c6e);
    let family_seed = seed ^ family.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(family_seed),
        failure_persistence: None,
        max_shrink_iters: 400,
        max_shrink_time: 60_000,
        ..Config::default()
    };
    let log = std::env::var_os(LAST_CALL_ENV).map(PathBuf::from);
    // The panics we catch would each print a message and a backtrace note; the report says it all.
    let quiet = std::env::var_os("KILN_FUZZ_LOUD").is_none();
    if quiet {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let started = Instant::now();
    CALL_STARTED.store(epoch_ms(), Ordering::Relaxed);
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            if epoch_ms().saturating_sub(CALL_STARTED.load(Ordering::Relaxed)) > HANG_MS {
                eprintln!("fuzz: a call has run for {} s: treating it as a hang", HANG_MS / 1000);
                std::process::exit(HANG_EXIT);
            }
        }
    });
    let mut runner = TestRunner::new(config);
    let result = runner.run(&call(family_ops(family), family == "linalg"), |c| check(&c, gpu.as_ref(), log.as_ref()));
    if quiet {
        let _ = std::panic::take_hook();
    }
    let (calls, on_gpu, errors) =
        (CALLS.load(Ordering::Relaxed), GPU_CALLS.load(Ordering::Relaxed), ERRORS.load(Ordering::Relaxed));
    let known = KNOWN.load(Ordering::Relaxed);
    eprintln!(
        "fuzz {family}: {calls} random op calls ({errors} typed errors, {known} on known bugs), {on_gpu} also run on the GPU, in {:.1} s (seed {seed})",
        started.elapsed().as_secs_f64()
    );
    if std::env::var_os("KILN_FUZZ_STATS").is_some() {
        eprintln!("fuzz {family}: outcomes by op: {:?}", ERROR_KINDS.lock().unwrap_or_else(|p| p.into_inner()));
    }
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, minimal)) => panic!("fuzz {family}: {why}\nminimal failing call: {minimal:?}"),
        Err(TestError::Abort(why)) => panic!("fuzz {family}: aborted: {why}"),
    }
}

/// Runs `fuzz_family(family)` in a child process and fails with the call it was on if that
/// process dies or hangs.
fn supervise(test: &str, family: &str) {
    if std::env::var_os(CHILD_ENV).is_some() {
        fuzz_family(family);
        return;
    }
    let log = std::env::temp_dir().join(format!("kiln-fuzz-{family}-{}.last", std::process::id()));
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env(LAST_CALL_ENV, &log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the fuzzing child");
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || std::io::read_to_string(out).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(540);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the fuzzing child") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    let last = std::fs::read_to_string(&log).unwrap_or_else(|_| "<none>".into());
    let _ = std::fs::remove_file(&log);
    for line in err.lines().filter(|l| l.starts_with("fuzz ") || l.starts_with("SKIPPED")) {
        eprintln!("{line}");
    }
    match status {
        Some(s) if s.success() => {}
        Some(s) if s.code() == Some(101) => panic!("{test} failed:\n{out}\n{err}"),
        Some(s) if s.code() == Some(HANG_EXIT) => {
            panic!("{test}: a call ran for over {} s — a hang:\n{last}\n{err}", HANG_MS / 1000)
        }
        Some(s) => {
            panic!("{test}: the fuzzing process died ({s}) — an abort, not a panic — during this call:\n{last}\n{err}")
        }
        None => panic!("{test}: no answer in 540 s — a hang — during this call:\n{last}\n{err}"),
    }
}

#[test]
fn fuzz_elementwise() {
    supervise("fuzz_elementwise", "elementwise");
}

#[test]
fn fuzz_reduce() {
    supervise("fuzz_reduce", "reduce");
}

#[test]
fn fuzz_views() {
    supervise("fuzz_views", "views");
}

#[test]
fn fuzz_index() {
    supervise("fuzz_index", "index");
}

#[test]
fn fuzz_linalg() {
    supervise("fuzz_linalg", "linalg");
}

#[test]
fn fuzz_create() {
    supervise("fuzz_create", "create");
}

/// The fuzz covers every unary and binary op the backend contract lists.
#[test]
fn the_fuzz_covers_every_unary_and_binary_op() {
    for op in UnaryOp::ALL {
        assert!(UNARY.contains(&op.name()), "unary op {} is not fuzzed", op.name());
    }
    for op in BinaryOp::ALL {
        assert!(BINARY.iter().any(|n| binary_op(n) == Some(op)), "binary op {} is not fuzzed", op.name());
    }
}

// ---------------------------------------------------------------------------------------------
// Regression tests for the bugs the fuzz found (and for huge sizes, which it steps around).
// Crashing cases run in a child process, so that an abort or a hang fails one test instead of
// killing the whole binary.

const REGRESSION_ENV: &str = "KILN_FUZZ_REGRESSION";

thread_local! {
    /// How many `in_child` calls this test (its thread) has made.
    static CALL_IN_TEST: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `body` in a child process (this test again) with a time limit and returns what it
/// returned, as `Ok(debug text)` or `Err(error text)`; fails the test on a panic, an abort or a
/// hang.
fn in_child(test: &str, body: impl FnOnce() -> Result<String>) -> std::result::Result<String, String> {
    const MARK: &str = "KILN_CHILD_RESULT ";
    if std::env::var_os(REGRESSION_ENV).is_some() {
        let r = body();
        println!(
            "\n{MARK}{}",
            match &r {
                Ok(v) => format!("Ok {v}"),
                Err(e) => format!("Err {e}"),
            }
        );
        return r.map_err(|e| e.to_string());
    }
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([test, "--exact", "--nocapture", "--include-ignored", "--test-threads=1"])
        .env(REGRESSION_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let (out, err) = (child.stdout.take().expect("stdout"), child.stderr.take().expect("stderr"));
    let out = std::thread::spawn(move || std::io::read_to_string(out).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the child") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    let tail = |s: &str| s.lines().filter(|l| !l.trim().is_empty()).take(6).collect::<Vec<_>>().join("\n");
    match status {
        None => panic!("{test}: hangs (no answer in 20 s)"),
        Some(s) if s.success() => {
            // The child runs the whole test, so every `in_child` body of it prints a result, in
            // order: this call's is the one at this call's position.
            let nth = CALL_IN_TEST.with(|c| c.replace(c.get() + 1));
            let line = out.lines().filter_map(|l| l.strip_prefix(MARK)).nth(nth).unwrap_or("").to_string();
            match line.split_once(' ') {
                Some(("Ok", v)) => Ok(v.to_string()),
                Some(("Err", e)) => Err(e.to_string()),
                _ => panic!("{test}: no result from the child:\n{out}"),
            }
        }
        Some(s) if s.code() == Some(101) => panic!("{test}: panics:\n{}", tail(&err)),
        Some(s) => panic!("{test}: aborts ({s}):\n{}", tail(&err)),
    }
}

/// `in_child`, expecting a typed error.
fn errs_in_child(test: &str, body: impl FnOnce() -> Result<String>) -> String {
    match in_child(test, body) {
        Ok(v) => panic!("{test}: expected an error, got Ok({v})"),
        Err(e) => e,
    }
}

fn cpu() -> Device {
    Device::cpu()
}

/// An empty tensor with a huge middle dim, which a reshape accepts.
fn degenerate(big: usize) -> Result<Tensor> {
    Tensor::zeros(&[0], &cpu())?.reshape(&[0, big, 3])
}

#[test]
fn huge_sizes_that_are_already_typed_errors() {
    for (name, what) in [("zeros_2_40", 0), ("zeros_overflow", 1), ("eye_2_33", 2), ("gpu_zeros_2_40", 3)] {
        let _ = name;
        let e = match what {
            0 => Tensor::zeros(&[1 << 40], &cpu()).unwrap_err(),
            1 => Tensor::zeros(&[usize::MAX, 2], &cpu()).unwrap_err(),
            2 => Tensor::eye(1 << 33, &cpu()).unwrap_err(),
            _ => match common::gpu("huge_sizes_that_are_already_typed_errors") {
                Some(g) => Tensor::zeros(&[1 << 40], &g).unwrap_err(),
                None => continue,
            },
        };
        assert!(matches!(e, Error::OutOfMemory { .. }), "{name}: {e:?}");
    }
}

#[test]
fn bug_arange_with_a_tiny_step_is_an_error() {
    errs_in_child("bug_arange_with_a_tiny_step_is_an_error", || {
        Ok(format!("{:?}", Tensor::arange(0.0, 1.0, 1e-30, &cpu())?))
    });
}

#[test]
fn bug_arange_with_a_huge_count_is_an_error() {
    errs_in_child("bug_arange_with_a_huge_count_is_an_error", || {
        Ok(format!("{:?}", Tensor::arange(0.0, 1e12, 1.0, &cpu())?))
    });
}

#[test]
fn bug_linspace_with_a_huge_count_is_an_error() {
    errs_in_child("bug_linspace_with_a_huge_count_is_an_error", || {
        Ok(format!("{:?}", Tensor::linspace(0.0, 1.0, 1 << 40, &cpu())?))
    });
}

#[test]
fn bug_eye_with_a_huge_size_is_an_error() {
    errs_in_child("bug_eye_with_a_huge_size_is_an_error", || Ok(format!("{:?}", Tensor::eye(1 << 20, &cpu())?)));
}

#[test]
fn bug_rand_with_a_huge_size_is_an_error() {
    errs_in_child("bug_rand_with_a_huge_size_is_an_error", || Ok(format!("{:?}", Tensor::rand(&[1 << 40], &cpu())?)));
}

#[test]
fn bug_one_hot_with_a_huge_class_count_is_an_error() {
    errs_in_child("bug_one_hot_with_a_huge_class_count_is_an_error", || {
        let ids = Tensor::from_vec(vec![0u32], &[1], &cpu())?;
        Ok(format!("{:?}", Tensor::one_hot(&ids, usize::MAX)?))
    });
}

#[test]
fn bug_one_hot_with_2_pow_32_classes_is_out_of_memory() {
    let ids = Tensor::from_vec(vec![0u32], &[1], &cpu()).unwrap();
    let e = Tensor::one_hot(&ids, 1 << 32).unwrap_err();
    assert!(matches!(e, Error::OutOfMemory { .. } | Error::InvalidArgument { .. }), "{e}");
}

#[test]
fn bug_sum_to_an_incompatible_shape_is_an_error() {
    let e = errs_in_child("bug_sum_to_an_incompatible_shape_is_an_error", || {
        Ok(format!("{:?}", Tensor::zeros(&[3], &cpu())?.sum_to_shape(&[2])?))
    });
    assert!(e.contains("sum_to_shape"), "{e}");
}

#[test]
fn bug_expand_to_an_overflowing_shape_is_an_error() {
    errs_in_child("bug_expand_to_an_overflowing_shape_is_an_error", || {
        let t = Tensor::ones(&[], &cpu())?.expand(&[usize::MAX, 2])?;
        Ok(format!("{}", t.numel()))
    });
}

#[test]
fn bug_zero_element_shapes_with_huge_dims_do_not_panic() {
    // Either a typed error or an empty tensor is fine; a panic is not.
    let _ = in_child("bug_zero_element_shapes_with_huge_dims_do_not_panic", || {
        Ok(format!("{:?}", Tensor::zeros(&[0, 2, usize::MAX], &cpu())?))
    });
    let _ = in_child("bug_zero_element_shapes_with_huge_dims_do_not_panic", || {
        Ok(format!("{:?}", Tensor::ones(&[], &cpu())?.expand(&[0, 2, usize::MAX])?.mul_scalar(2.0)?))
    });
}

#[test]
fn bug_reshape_infer_with_overflowing_dims_is_an_error() {
    errs_in_child("bug_reshape_infer_with_overflowing_dims_is_an_error", || {
        Ok(format!("{:?}", Tensor::ones(&[], &cpu())?.reshape_infer(&[isize::MAX, 3])?))
    });
}

#[test]
fn bug_slice_with_a_huge_step_does_not_panic() {
    let _ = in_child("bug_slice_with_a_huge_step_does_not_panic", || {
        Ok(format!("{:?}", Tensor::zeros(&[4, 2], &cpu())?.slice(0, 0, 4, usize::MAX)?.to_f64_vec()?))
    });
}

#[test]
fn bug_repeat_with_huge_counts_is_an_error() {
    let _ = in_child("bug_repeat_with_huge_counts_is_an_error", || {
        Ok(format!("{:?}", Tensor::zeros(&[0], &cpu())?.repeat(&[2, usize::MAX])?))
    });
    errs_in_child("bug_repeat_with_huge_counts_is_an_error", || {
        Ok(format!("{:?}", Tensor::zeros(&[2], &cpu())?.repeat(&[usize::MAX])?))
    });
}

#[test]
fn bug_pad_with_a_huge_amount_is_an_error() {
    errs_in_child("bug_pad_with_a_huge_amount_is_an_error", || {
        Ok(format!("{:?}", Tensor::zeros(&[2], &cpu())?.pad(&[(1, usize::MAX)], 0.0)?))
    });
}

#[test]
fn bug_tril_with_an_extreme_diagonal_does_not_panic() {
    let v = in_child("bug_tril_with_an_extreme_diagonal_does_not_panic", || {
        let t = Tensor::ones(&[2, 2], &cpu())?;
        Ok(format!("{:?} {:?}", t.tril(i64::MAX)?.to_f64_vec()?, t.triu(i64::MIN)?.to_f64_vec()?))
    });
    assert_eq!(v, Ok("[1.0, 1.0, 1.0, 1.0] [1.0, 1.0, 1.0, 1.0]".into()));
}

#[test]
fn bug_tril_of_an_empty_tensor_with_a_huge_dim_does_not_allocate() {
    let _ = in_child("bug_tril_of_an_empty_tensor_with_a_huge_dim_does_not_allocate", || {
        Ok(format!("{:?}", degenerate(1 << 31)?.tril(0)?))
    });
}

#[test]
fn bug_flip_of_an_empty_tensor_with_a_huge_dim_does_not_allocate() {
    let _ = in_child("bug_flip_of_an_empty_tensor_with_a_huge_dim_does_not_allocate", || {
        Ok(format!("{:?}", degenerate(1 << 30)?.flip(&[1])?))
    });
}

#[test]
fn bug_split_of_an_empty_tensor_with_a_huge_dim_is_bounded() {
    let _ = in_child("bug_split_of_an_empty_tensor_with_a_huge_dim_is_bounded", || {
        Ok(format!("{}", degenerate(1 << 39)?.split(1, 1)?.len()))
    });
}

#[test]
fn bug_adaptive_avg_pool_to_a_huge_size_is_an_error() {
    errs_in_child("bug_adaptive_avg_pool_to_a_huge_size_is_an_error", || {
        Ok(format!("{:?}", Tensor::zeros(&[1, 1, 2, 2], &cpu())?.adaptive_avg_pool2d((usize::MAX, 1))?))
    });
    errs_in_child("bug_adaptive_avg_pool_to_a_huge_size_is_an_error", || {
        Ok(format!("{:?}", Tensor::zeros(&[1, 1, 0, 2], &cpu())?.adaptive_avg_pool2d((1 << 40, 1))?))
    });
}

#[test]
fn bug_conv_geometry_with_huge_values_is_an_error() {
    let geo = |kh: usize, dil: usize, pad: usize| ConvGeometry {
        n: 1,
        c: 1,
        h: 2,
        w: 2,
        kh,
        kw: 1,
        stride: (1, 1),
        padding: (pad, 0),
        dilation: (dil, 1),
    };
    errs_in_child("bug_conv_geometry_with_huge_values_is_an_error", || {
        Ok(format!("{:?}", Tensor::zeros(&[1, 1, 2, 2], &cpu())?.im2col(&geo(usize::MAX, 1, 0), 0.0)?))
    });
    errs_in_child("bug_conv_geometry_with_huge_values_is_an_error", || {
        Ok(format!("{:?}", Tensor::zeros(&[1, 1, 2, 2], &cpu())?.im2col(&geo(1, 1, usize::MAX), 0.0)?))
    });
    errs_in_child("bug_conv_geometry_with_huge_values_is_an_error", || {
        let w = Tensor::zeros(&[1, 1, 2, 1], &cpu())?;
        let opts = Conv2dOptions { dilation: (usize::MAX, 1), ..Default::default() };
        Ok(format!("{:?}", Tensor::zeros(&[1, 1, 1, 1], &cpu())?.conv2d(&w, None, opts)?))
    });
}

// GPU-vs-CPU disagreements. Each checks the GPU against the CPU on the smallest input found.

fn gpu_agrees(test: &str, f: impl Fn(&Device) -> Result<Tensor>) {
    let Some(g) = common::gpu(test) else { return };
    let c = f(&cpu()).map(|t| t.to_f64_vec().unwrap());
    let d = f(&g).map(|t| t.to_f64_vec().unwrap());
    match (&c, &d) {
        (Ok(c), Ok(d)) => common::assert_close(test, d, c, 1e-6, 1e-6),
        _ => assert_eq!(c.is_ok(), d.is_ok(), "{test}: cpu {c:?} vs gpu {d:?}"),
    }
}

#[test]
fn bug_gpu_orders_bools_like_the_cpu() {
    for op in [BinaryOp::Lt, BinaryOp::Le, BinaryOp::Gt, BinaryOp::Ge] {
        gpu_agrees("bug_gpu_orders_bools_like_the_cpu", |d| {
            let a = Tensor::from_vec(vec![false, true, false, true], &[4], d)?;
            let b = Tensor::from_vec(vec![false, false, true, true], &[4], d)?;
            a.binary(&b, op)
        });
    }
}

#[test]
fn bug_gpu_isnan_of_bools_matches_the_cpu() {
    gpu_agrees("bug_gpu_isnan_of_bools_matches_the_cpu", |d| Tensor::from_vec(vec![false, true], &[2], d)?.isnan());
    gpu_agrees("bug_gpu_isnan_of_bools_matches_the_cpu", |d| Tensor::from_vec(vec![false, true], &[2], d)?.isinf());
}

#[test]
fn bug_gpu_nan_is_not_equal_to_anything() {
    let v = || vec![f32::NAN, 0.0, 1.0];
    gpu_agrees("bug_gpu_nan_is_not_equal_to_anything", |d| Tensor::from_vec(v(), &[3], d)?.ne_scalar(0.0));
    gpu_agrees("bug_gpu_nan_is_not_equal_to_anything", |d| {
        let a = Tensor::from_vec(v(), &[3], d)?;
        a.ne(&a)
    });
    gpu_agrees("bug_gpu_nan_is_not_equal_to_anything", |d| Tensor::from_vec(vec![f32::NAN], &[1], d)?.all(&[0], false));
    gpu_agrees("bug_gpu_nan_is_not_equal_to_anything", |d| {
        Tensor::from_vec(vec![f32::NAN], &[1], d)?.to_dtype(DType::Bool)
    });
}

#[test]
fn bug_gpu_pow_edge_cases_match_the_cpu() {
    gpu_agrees("bug_gpu_pow_edge_cases_match_the_cpu", |d| {
        Tensor::from_vec(vec![f32::NEG_INFINITY], &[1], d)?.powf(0.125)
    });
    gpu_agrees("bug_gpu_pow_edge_cases_match_the_cpu", |d| {
        Tensor::from_vec(vec![1.0f32, -1.0], &[2], d)?.pow_scalar(f64::INFINITY)
    });
}

#[test]
fn bug_gpu_log1p_of_minus_infinity_is_nan() {
    gpu_agrees("bug_gpu_log1p_of_minus_infinity_is_nan", |d| {
        Tensor::from_vec(vec![f32::NEG_INFINITY, -2.0], &[2], d)?.log1p()
    });
}

#[test]
fn bug_gpu_rem_by_infinity_matches_the_cpu() {
    gpu_agrees("bug_gpu_rem_by_infinity_matches_the_cpu", |d| {
        Tensor::from_vec(vec![0.0f32, 5.0], &[2], d)?.rem_scalar(f64::INFINITY)
    });
}

#[test]
fn bug_argmax_of_an_empty_tensor_with_a_huge_dim_agrees() {
    gpu_agrees("bug_argmax_of_an_empty_tensor_with_a_huge_dim_agrees", |d| {
        Tensor::zeros(&[0], d)?.reshape(&[0, 1 << 33, 3])?.argmax(1, false)
    });
}

/// Found by seed 31337 (scale 3): an empty tensor's view with a huge dim, reshaped in a
/// backward pass, multiplied its dims out in `Layout::reshape_view`.
#[test]
fn bug_reshaping_an_empty_view_with_huge_dims_does_not_panic() {
    let v = in_child("bug_reshaping_an_empty_view_with_huge_dims_does_not_panic", || {
        let a = Tensor::zeros(&[1, 2], &cpu())?.with_grad();
        let e = a.reshape(&[1, 1, 1, 2])?.expand(&[0, 1, usize::MAX - 1, 2])?;
        let r = e.reshape(&[0, 2, usize::MAX - 1])?;
        r.sum_all()?.backward()?;
        Ok(format!("{:?} {:?}", r.shape(), a.grad().map(|g| g.to_f64_vec()).transpose()?))
    });
    assert_eq!(v, Ok(format!("[0, 2, {}] Some([0.0, 0.0])", usize::MAX - 1)));
    // A repeat whose (empty) result has a dim past usize is an error, not a wrapped shape.
    errs_in_child("bug_reshaping_an_empty_view_with_huge_dims_does_not_panic", || {
        Ok(format!("{:?}", Tensor::zeros(&[1, 2], &cpu())?.repeat(&[0, 0, usize::MAX - 1])?.shape()))
    });
}
