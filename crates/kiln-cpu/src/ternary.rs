//! Elementwise ops of three float tensors of one shape (`TernaryOp`: the core broadcasts
//! first), in f64 and rounded once.

use kiln_backend::{Error, HostData, Layout, Result, TernaryOp};

use crate::binary::same;
use crate::elem::Float;
use crate::kernel::unsupported;
use crate::walk::map3;

pub(crate) fn ternary(
    a: &HostData,
    al: &Layout,
    b: &HostData,
    bl: &Layout,
    c: &HostData,
    cl: &Layout,
    op: TernaryOp,
) -> Result<HostData> {
    let name = op.name();
    if al.shape() != bl.shape() || al.shape() != cl.shape() {
        return Err(Error::shape(name, format!("{:?}, {:?}, {:?}", al.shape(), bl.shape(), cl.shape())));
    }
    match a {
        HostData::F32(x) => float_ternary(x, al, same(name, b)?, bl, same(name, c)?, cl, op),
        HostData::F16(x) => float_ternary(x, al, same(name, b)?, bl, same(name, c)?, cl, op),
        HostData::F64(x) => float_ternary(x, al, same(name, b)?, bl, same(name, c)?, cl, op),
        other => Err(unsupported(name, other.dtype(), "float dtypes only")),
    }
}

fn float_ternary<T: Float>(
    a: &[T],
    al: &Layout,
    b: &[T],
    bl: &Layout,
    c: &[T],
    cl: &Layout,
    op: TernaryOp,
) -> Result<HostData> {
    let f = move |x: T, y: T, z: T| T::from_f64(float_fn(op, x.to_f64(), y.to_f64(), z.to_f64()));
    Ok(T::wrap(map3(op.name(), (a, al), (b, bl), (c, cl), f)?))
}

/// The value of `op` at `(a, b, c)`, PyTorch's definition, in f64.
#[inline(always)]
pub(crate) fn float_fn(op: TernaryOp, a: f64, b: f64, c: f64) -> f64 {
    match op {
        TernaryOp::Addcmul(v) => a + v * b * c,
        TernaryOp::Addcdiv(v) => a + v * (b / c),
    }
}
