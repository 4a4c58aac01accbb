//! Elementwise ops of one input.
//!
//! Floats compute in f64 and round once, except GELU and its derivative on f32, which compute
//! in f32 (`fast32`: within a few ulp, and vectorised 8 wide). Integers support `Neg` (i32
//! only), `Abs`, `Sign`, `Square`, `Relu` and `Clamp`, with wrapping overflow
//! (`|i32::MIN| = i32::MIN`, as PyTorch). `IsNan`/`IsInf` are false for every non-float
//! dtype. `Not` takes bool only.

use std::f64::consts::{FRAC_1_SQRT_2, FRAC_2_PI};

use kiln_backend::{HostData, Layout, Result, UnaryOp};

use crate::elem::{Elem, Float, Int};
use crate::fast32;
use crate::kernel::{alloc, unsupported};
use crate::special::{erf, erf_below_two, erfc};
use crate::strided::check;
use crate::walk::map1;

pub(crate) fn unary(data: &HostData, layout: &Layout, op: UnaryOp) -> Result<HostData> {
    match data {
        HostData::F32(v) => match op {
            UnaryOp::GeluErf => Ok(HostData::F32(map1(op.name(), v, layout, fast32::gelu_erf)?)),
            UnaryOp::GeluErfGrad => Ok(HostData::F32(map1(op.name(), v, layout, fast32::gelu_erf_grad)?)),
            _ => float_unary(v, layout, op),
        },
        HostData::F16(v) => float_unary(v, layout, op),
        HostData::F64(v) => float_unary(v, layout, op),
        HostData::I32(v) => int_unary(v, layout, op),
        HostData::U32(v) => int_unary(v, layout, op),
        HostData::Bool(v) => bool_unary(v, layout, op),
    }
}

fn float_unary<T: Float>(v: &[T], layout: &Layout, op: UnaryOp) -> Result<HostData> {
    let name = op.name();
    Ok(match op {
        UnaryOp::IsNan => HostData::Bool(map1(name, v, layout, |e: T| e.is_nan())?),
        UnaryOp::IsInf => HostData::Bool(map1(name, v, layout, |e: T| e.to_f64().is_infinite())?),
        UnaryOp::Not => return Err(unsupported(name, T::DTYPE, "logical not takes bool")),
        _ => T::wrap(float_map(v, layout, op)?),
    })
}

/// `float_fn(op, ·)` over the elements, with one closure per op in which `op` is a constant, so
/// the per-element `match` folds away (it otherwise costs ~20× on cheap ops like relu).
fn float_map<T: Float>(v: &[T], layout: &Layout, op: UnaryOp) -> Result<Vec<T>> {
    use UnaryOp::*;
    macro_rules! with {
        ($k:expr) => {
            map1(op.name(), v, layout, move |e: T| T::from_f64(float_fn($k, e.to_f64())))
        };
    }
    match op {
        Neg => with!(Neg),
        Abs => with!(Abs),
        Sign => with!(Sign),
        Exp => with!(Exp),
        Exp2 => with!(Exp2),
        Log => with!(Log),
        Log2 => with!(Log2),
        Log1p => with!(Log1p),
        Expm1 => with!(Expm1),
        Logit => with!(Logit),
        Sqrt => with!(Sqrt),
        Rsqrt => with!(Rsqrt),
        Recip => with!(Recip),
        Square => with!(Square),
        Sin => with!(Sin),
        Cos => with!(Cos),
        Tanh => with!(Tanh),
        Sigmoid => with!(Sigmoid),
        Relu => with!(Relu),
        LeakyRelu(a) => with!(LeakyRelu(a)),
        Elu(a) => with!(Elu(a)),
        GeluErf => with!(GeluErf),
        GeluErfGrad => with!(GeluErfGrad),
        GeluTanh => with!(GeluTanh),
        Silu => with!(Silu),
        Softplus => with!(Softplus),
        Mish => with!(Mish),
        Floor => with!(Floor),
        Ceil => with!(Ceil),
        Round => with!(Round),
        Clamp(lo, hi) => with!(Clamp(lo, hi)),
        Powf(p) => with!(Powf(p)),
        IsNan | IsInf | Not => with!(op),
    }
}

/// The value of `op` at `x`, PyTorch's definition, in f64.
#[inline(always)]
pub(crate) fn float_fn(op: UnaryOp, x: f64) -> f64 {
    use UnaryOp::*;
    match op {
        Neg => -x,
        Abs => x.abs(),
        // Returning x for ±0 and NaN keeps NaN NaN and zero zero.
        Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }
        Exp => x.exp(),
        Exp2 => x.exp2(),
        Log => x.ln(),
        Log2 => x.log2(),
        Log1p => x.ln_1p(),
        Expm1 => x.exp_m1(),
        // NaN outside [0, 1], ∓inf at 0 and 1 (PyTorch's logit without eps).
        Logit => (x / (1.0 - x)).ln(),
        Sqrt => x.sqrt(),
        Rsqrt => 1.0 / x.sqrt(),
        Recip => 1.0 / x,
        Square => x * x,
        Sin => x.sin(),
        Cos => x.cos(),
        Tanh => x.tanh(),
        Sigmoid => sigmoid(x),
        // PyTorch propagates NaN through relu; `x > 0` alone would turn it into 0.
        Relu => {
            if x > 0.0 || x.is_nan() {
                x
            } else {
                0.0
            }
        }
        LeakyRelu(alpha) => {
            if x > 0.0 {
                x
            } else {
                alpha * x
            }
        }
        Elu(alpha) => {
            if x > 0.0 {
                x
            } else {
                alpha * x.exp_m1()
            }
        }
        GeluErf => gelu_erf(x),
        GeluErfGrad => gelu_erf_grad(x),
        GeluTanh => 0.5 * x * (1.0 + (FRAC_2_PI.sqrt() * (x + 0.044715 * x * x * x)).tanh()),
        Silu => x * sigmoid(x),
        Softplus => softplus(x),
        Mish => x * softplus(x).tanh(),
        Floor => x.floor(),
        Ceil => x.ceil(),
        // torch.round rounds half to even.
        Round => x.round_ties_even(),
        Clamp(lo, hi) => clamp(x, lo, hi),
        Powf(p) => x.powf(p),
        // Bool-valued ops never reach here (handled by the caller); identity keeps this total.
        IsNan | IsInf | Not => x,
    }
}

/// Never forms exp of a large positive number, so it cannot overflow to inf/inf.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// log(1 + eˣ); above 20 PyTorch returns x itself (its `threshold`), and so do we.
fn softplus(x: f64) -> f64 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

/// Φ(x), the standard normal CDF. For x < 0, Φ(x) = erfc(−x/√2)/2 keeps full relative precision
/// where 1 + erf would cancel. For |z| < 2 (nearly every activation) both signs share one
/// formula: the sign of an activation is random, and a branch on it mispredicts half the time.
/// There erfc(−z) = 1 + erf(|z|) = 1 + (−erf(|z|)).copysign(x) exactly, so the value is that of
/// the two-branch form (and 1 − erf(|z|) ≥ 0.0047 loses at most 8 of f64's 53 bits).
#[inline(always)]
fn normal_cdf(x: f64) -> f64 {
    let z = x * FRAC_1_SQRT_2;
    if z.abs() < 2.0 {
        0.5 * (1.0 + erf_below_two(z.abs()).copysign(x))
    } else if x < 0.0 {
        0.5 * erfc(-z)
    } else {
        0.5 * (1.0 + erf(z))
    }
}

/// x·Φ(x).
#[inline(always)]
fn gelu_erf(x: f64) -> f64 {
    x * normal_cdf(x)
}

/// GELU's derivative Φ(x) + x·φ(x), φ(x) = e^{−x²/2}/√(2π): what its backward multiplies the
/// gradient by, in one pass.
#[inline(always)]
fn gelu_erf_grad(x: f64) -> f64 {
    const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
    normal_cdf(x) + x * FRAC_1_SQRT_2PI * (-0.5 * x * x).exp()
}

/// `min(max(x, lo), hi)` as torch.clamp: NaN stays NaN, and `lo > hi` gives `hi`
/// (`f64::clamp` would panic on that).
fn clamp(x: f64, lo: f64, hi: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let y = if x < lo { lo } else { x };
    if y > hi { hi } else { y }
}

/// Integer unary ops. `Clamp` bounds are cast to the integer dtype the way `cast` casts
/// (truncating toward zero, saturating); because truncation is monotonic this equals clamping in
/// f64 and casting the result back.
fn int_unary<T: Int>(v: &[T], layout: &Layout, op: UnaryOp) -> Result<HostData> {
    use UnaryOp::*;
    let name = op.name();
    let out = match op {
        Neg if T::SIGNED => map1(name, v, layout, T::wneg)?,
        Abs => map1(name, v, layout, T::wabs)?,
        Sign => map1(name, v, layout, T::sign)?,
        Square => map1(name, v, layout, |e: T| e.wmul(e))?,
        Relu => map1(name, v, layout, |e: T| e.max(T::ZERO))?,
        Clamp(lo, hi) => {
            let (lo, hi) = (T::from_f64(lo), T::from_f64(hi));
            map1(name, v, layout, |e: T| e.max(lo).min(hi))?
        }
        IsNan | IsInf => return Ok(HostData::Bool(alloc(name, check(name, layout, v.len())?, false)?)),
        Neg => return Err(unsupported(op.name(), T::DTYPE, "negating an unsigned integer")),
        _ => return Err(unsupported(op.name(), T::DTYPE, "floating-point op")),
    };
    Ok(T::wrap(out))
}

fn bool_unary(v: &[bool], layout: &Layout, op: UnaryOp) -> Result<HostData> {
    let name = op.name();
    match op {
        UnaryOp::Not => Ok(HostData::Bool(map1(name, v, layout, |e: bool| !e)?)),
        UnaryOp::IsNan | UnaryOp::IsInf => Ok(HostData::Bool(alloc(name, check(name, layout, v.len())?, false)?)),
        _ => Err(unsupported(op.name(), bool::DTYPE, "numeric op on bool")),
    }
}
