//! The Adam / AdamW step (`shaders/adam.wgsl`): one dispatch per parameter, updating the
//! parameter and both moments in place; and GradScaler's unscale with its inf/NaN flag
//! (`shaders/unscale_check.wgsl`), one dispatch per gradient.

use super::fused::{Access, check_float, check_len, enable_for, float_binding, raw_binding, FLOATS};
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

/// The unscale kernel for `dtype`, four elements a thread when `vec4` (f32 as `vec4<f32>`,
/// f16 as `vec4<f16>`: 16- or 8-byte loads).
fn unscale_source(dtype: DType, vec4: bool) -> String {
    let st = if dtype == DType::F16 { "f16" } else { "f32" };
    let (v, s, u) = if vec4 { ("vec4<f32>", format!("vec4<{st}>"), "vec4<u32>") } else { ("f32", st.to_string(), "u32") };
    // 65520 is where f16's round-to-nearest-even turns to inf (halfway past 65504).
    let limit = if dtype == DType::F16 { "0x477ff000u" } else { "0x7f800000u" };
    let mut b = raw_binding(1, "g", &s, Access::Write);
    b += &raw_binding(2, "flag", "atomic<u32>", Access::Write);
    b += &format!("fn ld_g(at_: u32) -> {v} {{ return {v}(g[at_]); }}\n");
    b += &format!("fn st_g(at_: u32, val_: {v}) {{ g[at_] = {s}(val_); }}\n");
    b += &format!("fn overflowed(y_: {v}) -> bool {{ return any((bitcast<{u}>(y_) & {u}(0x7fffffffu)) >= {u}({limit})); }}\n");
    module(enable_for(dtype), false, &format!("{b}\n{}", crate::shaders::UNSCALE_CHECK))
}

fn unscale_key(dtype: DType, vec4: bool) -> String {
    format!("unscale_check|{dtype}|x{}", if vec4 { 4 } else { 1 })
}

/// `g ← g · inv_scale` in place over all of `g`, ORing 1 into `found_inf[0]` (u32) when a
/// result is inf or NaN. A gradient past the binding limit runs in windows (`chunked::in_place`).
pub(crate) fn unscale_check(g: &mut GpuStorage, inv_scale: f64, found_inf: &GpuStorage) -> Result<()> {
    const OP: &str = "unscale_check";
    let dtype = g.dtype();
    check_float(OP, dtype)?;
    if found_inf.dtype() != DType::U32 || found_inf.is_empty() {
        return Err(Error::invalid(
            OP,
            format!("found_inf must be a u32 flag of at least 1 element, got {} of {}", found_inf.dtype(), found_inf.len()),
        ));
    }
    let n = g.len();
    check_len(OP, n)?;
    if n == 0 {
        return Ok(());
    }
    crate::chunked::in_place(OP, g, &|piece, len| dispatch_unscale(piece, len, inv_scale, found_inf))
}

/// The kernel over the first `n` elements of `g` (which fits a binding).
fn dispatch_unscale(g: &GpuStorage, n: usize, inv_scale: f64, found_inf: &GpuStorage) -> Result<()> {
    const OP: &str = "unscale_check";
    let dtype = g.dtype();
    // Storage starts at offset 0 of its buffer, so a length that is a multiple of 4 makes
    // every vec4 aligned.
    let vec4 = n.is_multiple_of(4);
    let units = if vec4 { n / 4 } else { n };
    let ctx = g.context().clone();
    let kernel = ctx.cache.get(&ctx.device, OP, &unscale_key(dtype, vec4), || unscale_source(dtype, vec4))?;
    let meta = [units as u32, (inv_scale as f32).to_bits()];
    let groups = check_len(OP, units.div_ceil(WG as usize))?;
    ctx.dispatch(OP, &kernel, &[g.buffer(), found_inf.buffer()], &meta, groups)
}

pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut all: Vec<_> = FLOATS.iter().map(|&d| (format!("adam|{d}"), source(d))).collect();
    for d in FLOATS {
        for vec4 in [false, true] {
            all.push((unscale_key(d, vec4), unscale_source(d, vec4)));
        }
    }
    all
}
