//! The Adam / AdamW step (`shaders/adam.wgsl`): one dispatch per parameter, updating the
//! parameter and both moments in place.

use super::fused::{Access, check_float, check_len, enable_for, float_binding, FLOATS};
use super::{WG, module};
use crate::storage::GpuStorage;
use kiln_backend::{AdamParams, BackendStorage, DType, Error, Result};

fn source(dtype: DType) -> String {
    let mut b = float_binding(1, "p", dtype, Access::Write);
    b += &float_binding(2, "g", dtype, Access::Read);
    b += &float_binding(3, "m", dtype, Access::Write);
    b += &float_binding(4, "v", dtype, Access::Write);
    module(enable_for(dtype), false, &format!("{b}\n{}", crate::shaders::ADAM))
}

pub(crate) fn adam_step(p: &mut GpuStorage, g: &GpuStorage, m: &mut GpuStorage, v: &mut GpuStorage, h: &AdamParams) -> Result<()> {
    const OP: &str = "adam_step";
    let dtype = p.dtype();
    check_float(OP, dtype)?;
    let n = p.len();
    if [g.dtype(), m.dtype(), v.dtype()].iter().any(|&d| d != dtype) || [g.len(), m.len(), v.len()].iter().any(|&l| l < n) {
        return Err(Error::invalid(OP, "parameter, gradient and moments must share dtype and length"));
    }
    check_len(OP, n)?;
    if n == 0 {
        return Ok(());
    }
    let ctx = p.context().clone();
    let kernel = ctx.cache.get(&ctx.device, OP, &format!("adam|{dtype}"), || source(dtype))?;
    let t = h.step as f64;
    let bias1 = 1.0 - h.beta1.powf(t);
    let bias2 = 1.0 - h.beta2.powf(t);
    let f = |x: f64| (x as f32).to_bits();
    let meta = [
        n as u32,
        f(h.lr),
        f(h.beta1),
        f(h.beta2),
        f(h.eps),
        f(h.weight_decay),
        h.decoupled as u32,
        f(h.lr / bias1),
        f(bias2.sqrt()),
        f(1.0 - h.lr * h.weight_decay),
    ];
    let groups = check_len(OP, n.div_ceil(WG as usize))?;
    ctx.dispatch(OP, &kernel, &[p.buffer(), g.buffer(), m.buffer(), v.buffer()], &meta, groups)
}

pub(crate) fn specialisations() -> Vec<(String, String)> {
    FLOATS.iter().map(|&d| (format!("adam|{d}"), source(d))).collect()
}
