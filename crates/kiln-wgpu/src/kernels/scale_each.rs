//! `x ← x · factor[0]` in place over many tensors at once (`shaders/scale_each.wgsl`): the scale
//! of `clip_grad_norm_`, one dispatch per up to eight same-dtype gradients, with the factor read
//! on the device.

use super::fused::{Access, check_float, check_len, float_binding, raw_binding};
use super::params::{KernelParams, kernel_params};
use super::sum_squares::{MAX_BOUND, bound, check_parts};
use super::{enables, module};
use crate::shaders::Template;
use crate::storage::GpuStorage;
use kiln_backend::{BackendStorage, DType, Error, Layout, Result};

const OP: &str = "scale_in_place";
/// Elements a workgroup scales at least before a tensor gets another (4 per thread).
const PER_GROUP: usize = 1024;
/// Most workgroups per tensor; more elements loop.
const MAX_GROUPS: usize = 2048;

kernel_params! {
    /// `shaders/scale_each.wgsl`: `tensors` bound, the table of [first workgroup, length,
    /// workgroups] per tensor at word `table`.
    struct ScaleEachParams { tensors: u32, table: u32 }
}

fn source(dtype: DType, count: usize) -> String {
    let mut b = raw_binding(1, "factor", "f32", Access::Read);
    let mut cases = String::new();
    for k in 0..count {
        let x = format!("x{k}");
        b += &float_binding(2 + k as u32, &x, dtype, Access::Write);
        b += &format!(
            "fn scale_{x}(c: u32, groups: u32, n: u32, lid: u32, f: f32) {{
    for (var base = c * 1024u; base < n; base += groups * 1024u) {{
        for (var e = 0u; e < 4u; e++) {{
            let i = base + e * 256u + lid;
            if i < n {{ st_{x}(i, ld_{x}(i) * f); }}
        }}
    }}
}}
"
        );
        cases += &format!("        case {k}u: {{ scale_{x}(c, groups, n, lid, f); }}\n");
    }
    b += &format!(
        "fn scale_tensor(t: u32, c: u32, groups: u32, n: u32, lid: u32, f: f32) {{
    switch t {{
{cases}        default: {{}}
    }}
}}
"
    );
    let body = Template::new(crate::shaders::SCALE_EACH).params::<ScaleEachParams>().render();
    module(enables(&[dtype]), false, &format!("{b}\n{body}"))
}

fn key(dtype: DType, count: usize) -> String {
    format!("scale_each|{dtype}|x{count}")
}

/// The first `n` elements of each part times `factor[0]`, in place.
pub(crate) fn scale_in_place(parts: &mut [(&mut GpuStorage, usize)], factor: &GpuStorage) -> Result<()> {
    let ctx = factor.context().clone();
    check_float(OP, factor.dtype())?;
    if factor.is_empty() {
        return Err(Error::invalid(OP, "the factor has no element"));
    }
    // The kernel reads an f32 factor.
    let cast;
    let factor = if factor.dtype() == DType::F32 {
        factor
    } else {
        cast = factor.cast(&Layout::contiguous(&[1]), DType::F32)?;
        &cast
    };
    check_parts(OP, &ctx, parts.iter().map(|(s, n)| (&**s, *n)))?;
    let limit = ctx.limits.max_storage_buffer_binding_size;
    let bound = bound(&ctx);
    let mut i = 0;
    while i < parts.len() {
        let dt = parts[i].0.dtype();
        if parts[i].0.byte_size() > limit {
            // Past the binding limit: the windowed in-place path (`chunked::in_place`) of the
            // unscale kernel, by the same factor read on the device (1 / (1 / f)).
            let recip = factor.unary(&Layout::contiguous(&[1]), kiln_backend::UnaryOp::Recip)?;
            let flag = GpuStorage::full(&ctx, 1, 0.0, DType::U32)?;
            super::optim::unscale_check_by(parts[i].0, &recip, &flag)?;
            i += 1;
            continue;
        }
        let mut end = i + 1;
        while end < parts.len() && end - i < bound && parts[end].0.dtype() == dt && parts[end].0.byte_size() <= limit {
            end += 1;
        }
        let run = &parts[i..end];
        let table = ScaleEachParams::default().words().len() as u32;
        let mut meta = ScaleEachParams { tensors: run.len() as u32, table }.words().to_vec();
        let mut first = 0;
        for (_, n) in run {
            let g = n.div_ceil(PER_GROUP).clamp(1, MAX_GROUPS);
            meta.extend([first as u32, *n as u32, g as u32]);
            first += g;
        }
        let kernel = ctx.cache.get(&ctx.device, OP, &key(dt, run.len()), || source(dt, run.len()))?;
        let mut bufs = vec![factor.binding()];
        bufs.extend(run.iter().map(|(s, _)| s.binding()));
        ctx.dispatch(OP, &kernel, &bufs, &meta, check_len(OP, first)?)?;
        i = end;
    }
    Ok(())
}

/// Every source this module can generate.
pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for dtype in super::fused::FLOATS {
        for count in 1..=MAX_BOUND {
            all.push((key(dtype, count), source(dtype, count)));
        }
    }
    all
}
