//! Elementwise ops of two inputs of one shape and dtype, and `where_cond`.
//!
//! Floats follow IEEE in f64, rounded once (bit-identical to native f32/f16 for + − × ÷).
//! `Maximum`/`Minimum` propagate NaN (torch.maximum). `Rem` is torch.remainder: the result has
//! the divisor's sign. Integers wrap on overflow; `Div` floors, `Rem` takes the divisor's sign,
//! and both give 0 for a zero divisor (see [`crate::elem::Int`] for `Pow`). Bool takes
//! comparisons (false < true) and `And`/`Or`, nothing arithmetic.

use kiln_backend::{BinaryOp, Error, HostData, Layout, Result};

use crate::elem::{Elem, Float, Int};
use crate::kernel::unsupported;
use crate::walk::{map2, map3};

pub(crate) fn binary(lhs: &HostData, ll: &Layout, rhs: &HostData, rl: &Layout, op: BinaryOp) -> Result<HostData> {
    let name = op.name();
    if ll.shape() != rl.shape() {
        return Err(Error::shape(name, format!("lhs {:?} vs rhs {:?}", ll.shape(), rl.shape())));
    }
    match lhs {
        HostData::F32(a) => float_binary(a, ll, same(name, rhs)?, rl, op),
        HostData::F16(a) => float_binary(a, ll, same(name, rhs)?, rl, op),
        HostData::F64(a) => float_binary(a, ll, same(name, rhs)?, rl, op),
        HostData::I32(a) => int_binary(a, ll, same(name, rhs)?, rl, op),
        HostData::U32(a) => int_binary(a, ll, same(name, rhs)?, rl, op),
        HostData::Bool(a) => bool_binary(a, ll, same(name, rhs)?, rl, op),
    }
}

/// `other`'s elements as `T`, or a dtype mismatch.
pub(crate) fn same<'a, T: Elem>(op: &'static str, other: &'a HostData) -> Result<&'a [T]> {
    T::slice(other).ok_or_else(|| Error::dtype(op, T::DTYPE, other.dtype()))
}

fn float_binary<T: Float>(a: &[T], al: &Layout, b: &[T], bl: &Layout, op: BinaryOp) -> Result<HostData> {
    let name = op.name();
    use BinaryOp::*;
    // One closure per op with `op` constant, so the per-element `match` folds away.
    macro_rules! arith {
        ($k:expr) => {
            T::wrap(map2(name, a, al, b, bl, |p: T, q: T| T::from_f64(float_fn($k, p.to_f64(), q.to_f64())))?)
        };
    }
    macro_rules! cmp {
        ($k:expr) => {
            HostData::Bool(map2(name, a, al, b, bl, |p: T, q: T| compare($k, &p.to_f64(), &q.to_f64()))?)
        };
    }
    Ok(match op {
        Add => arith!(Add),
        Sub => arith!(Sub),
        Mul => arith!(Mul),
        Div => arith!(Div),
        Pow => arith!(Pow),
        Maximum => arith!(Maximum),
        Minimum => arith!(Minimum),
        Rem => arith!(Rem),
        Eq => cmp!(Eq),
        Ne => cmp!(Ne),
        Lt => cmp!(Lt),
        Le => cmp!(Le),
        Gt => cmp!(Gt),
        Ge => cmp!(Ge),
        And | Or => return Err(unsupported(name, T::DTYPE, "logical ops take bool")),
    })
}

/// The value of an arithmetic `op`, PyTorch's definition, in f64.
#[inline(always)]
pub(crate) fn float_fn(op: BinaryOp, x: f64, y: f64) -> f64 {
    use BinaryOp::*;
    match op {
        Add => x + y,
        Sub => x - y,
        Mul => x * y,
        Div => x / y,
        Pow => x.powf(y),
        Maximum | Minimum if x.is_nan() || y.is_nan() => f64::NAN,
        Maximum => {
            if x > y {
                x
            } else {
                y
            }
        }
        Minimum => {
            if x < y {
                x
            } else {
                y
            }
        }
        // Mathematically x − floor(x/y)·y, but from the exact fmod, as PyTorch does: the quotient
        // is never rounded, so the result is never off by a whole y.
        Rem => {
            let r = x % y;
            if r != 0.0 && ((r < 0.0) != (y < 0.0)) { r + y } else { r }
        }
        // Comparisons and logical ops are handled by the callers; NaN marks misuse loudly.
        Eq | Ne | Lt | Le | Gt | Ge | And | Or => f64::NAN,
    }
}

#[inline(always)]
fn compare<T: PartialOrd>(op: BinaryOp, x: &T, y: &T) -> bool {
    use BinaryOp::*;
    match op {
        Eq => x == y,
        Ne => x != y,
        Lt => x < y,
        Le => x <= y,
        Gt => x > y,
        Ge => x >= y,
        _ => false,
    }
}

fn int_binary<T: Int>(a: &[T], al: &Layout, b: &[T], bl: &Layout, op: BinaryOp) -> Result<HostData> {
    use BinaryOp::*;
    let name = op.name();
    if op.is_comparison() {
        return Ok(HostData::Bool(map2(name, a, al, b, bl, |p: T, q: T| compare(op, &p, &q))?));
    }
    let f: fn(T, T) -> T = match op {
        Add => T::wadd,
        Sub => T::wsub,
        Mul => T::wmul,
        Div => T::floor_div,
        Rem => T::floor_rem,
        Pow => T::wpow,
        Maximum => Ord::max,
        Minimum => Ord::min,
        _ => return Err(unsupported(name, T::DTYPE, "logical ops take bool")),
    };
    Ok(T::wrap(map2(name, a, al, b, bl, f)?))
}

fn bool_binary(a: &[bool], al: &Layout, b: &[bool], bl: &Layout, op: BinaryOp) -> Result<HostData> {
    let name = op.name();
    let out = match op {
        BinaryOp::And => map2(name, a, al, b, bl, |p, q| p && q)?,
        BinaryOp::Or => map2(name, a, al, b, bl, |p, q| p || q)?,
        _ if op.is_comparison() => map2(name, a, al, b, bl, |p, q| compare(op, &p, &q))?,
        _ => return Err(unsupported(name, bool::DTYPE, "arithmetic on bool")),
    };
    Ok(HostData::Bool(out))
}

pub(crate) fn where_cond(
    cond: &HostData,
    cl: &Layout,
    on_true: &HostData,
    tl: &Layout,
    on_false: &HostData,
    fl: &Layout,
) -> Result<HostData> {
    const OP: &str = "where";
    let HostData::Bool(c) = cond else {
        return Err(Error::dtype(OP, "bool condition", cond.dtype()));
    };
    if cl.shape() != tl.shape() || cl.shape() != fl.shape() {
        return Err(Error::shape(
            OP,
            format!("cond {:?}, on_true {:?}, on_false {:?}", cl.shape(), tl.shape(), fl.shape()),
        ));
    }
    dispatch!(on_true, t => select(c, cl, t, tl, same(OP, on_false)?, fl))
}

fn select<T: Elem>(c: &[bool], cl: &Layout, t: &[T], tl: &Layout, f: &[T], fl: &Layout) -> Result<HostData> {
    Ok(T::wrap(map3("where", (c, cl), (t, tl), (f, fl), |c, t, f| if c { t } else { f })?))
}
