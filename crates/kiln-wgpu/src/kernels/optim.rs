//! The Adam / AdamW step (`shaders/adam.wgsl`): one dispatch per parameter, updating the
//! parameter and both moments in place, with the step count from the host or (gated) from the
//! device, skipped when GradScaler's inf/NaN flag is set; and GradScaler's unscale with its
//! inf/NaN flag (`shaders/unscale_check.wgsl`), one dispatch per gradient, by a scale from the
//! host or read on the device.

use super::fused::{Access, FLOATS, check_float, check_len, enable_for, float_binding, raw_binding};
use super::params::{KernelParams, kernel_params};
use super::{WG, module};
use crate::shaders::Template;
use crate::storage::GpuStorage;
use kiln_backend::{AdamParams, BackendStorage, DType, Error, Result};

/// The bias corrections and the skip decision, prepended to `shaders/adam.wgsl` as
/// `adam_bias(i) -> vec3<f32>` = (lr / (1 − β₁ᵗ), √(1 − β₂ᵗ), skip ? 1 : 0).
///
/// Host step: both values come in `bias_a`, `bias_b`, computed in f64. Gated: `t` is the
/// device's count (slot `slot` of `steps`) plus one unless `found_inf[0]` is set; invocation 0
/// writes it to the other slot (no invocation reads that one in this dispatch), and `1 − βᵗ` is
/// computed here from `ln β` (`bias_a`, `bias_b`).
fn bias_source(gated: bool) -> String {
    if !gated {
        return "fn adam_bias(i: u32) -> vec3<f32> { let h = params(); return vec3<f32>(h.bias_a, h.bias_b, 0.0); }\n"
            .into();
    }
    let mut b = raw_binding(5, "steps", "u32", Access::Write);
    b += &raw_binding(6, "found_inf", "u32", Access::Read);
    b += r#"
// 1 − eˣ for x ≤ 0. Near 0 a series: GPU exp and log are only accurate to an absolute 2⁻²¹
// or so there, which 1 − exp(x) would turn into a large relative error.
fn one_minus_exp(x: f32) -> f32 {
    if x > -0.5 {
        var s = 1.0 / 362880.0;
        s = s * x + 1.0 / 40320.0;
        s = s * x + 1.0 / 5040.0;
        s = s * x + 1.0 / 720.0;
        s = s * x + 1.0 / 120.0;
        s = s * x + 1.0 / 24.0;
        s = s * x + 1.0 / 6.0;
        s = s * x + 0.5;
        s = s * x + 1.0;
        return -x * s;
    }
    return 1.0 - exp(x);
}

fn adam_bias(i: u32) -> vec3<f32> {
    let h = params();
    let rd = h.slot;
    let skip = found_inf[0] != 0u;
    let t = steps[rd] + select(1u, 0u, skip);
    if i == 0u {
        steps[1u - rd] = t;
    }
    let tf = f32(t);
    let bias1 = one_minus_exp(tf * h.bias_a);
    let bias2 = one_minus_exp(tf * h.bias_b);
    return vec3<f32>(h.lr / bias1, sqrt(bias2), select(0.0, 1.0, skip));
}
"#;
    b
}

fn source(dtype: DType, gated: bool) -> String {
    let mut b = float_binding(1, "p", dtype, Access::Write);
    b += &float_binding(2, "g", dtype, Access::Read);
    b += &float_binding(3, "m", dtype, Access::Write);
    b += &float_binding(4, "v", dtype, Access::Write);
    b += &bias_source(gated);
    let body = Template::new(crate::shaders::ADAM).params::<AdamKernelParams>().render();
    module(enable_for(dtype), false, &format!("{b}\n{body}"))
}

fn adam_key(dtype: DType, gated: bool) -> String {
    format!("adam|{dtype}{}", if gated { "|gated" } else { "" })
}

/// Checks the four tensors of an Adam step; returns the element count.
fn check_adam(op: &'static str, p: &GpuStorage, g: &GpuStorage, m: &GpuStorage, v: &GpuStorage) -> Result<usize> {
    let dtype = p.dtype();
    check_float(op, dtype)?;
    let n = p.len();
    if [g.dtype(), m.dtype(), v.dtype()].iter().any(|&d| d != dtype)
        || [g.len(), m.len(), v.len()].iter().any(|&l| l < n)
    {
        return Err(Error::invalid(op, "parameter, gradient and moments must share dtype and length"));
    }
    check_len(op, n)?;
    Ok(n)
}

kernel_params! {
    /// `shaders/adam.wgsl`: the hyperparameters as f32; `bias_a`, `bias_b` and `slot` differ
    /// between the host-step and gated variants (see `bias_source`); `decay` is 1 − lr·wd.
    struct AdamKernelParams {
        n: u32, lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, decoupled: u32,
        bias_a: f32, bias_b: f32, decay: f32, slot: u32,
    }
}

kernel_params! {
    /// `shaders/unscale_check.wgsl`: `units` elements (or vec4s) and the host's `1 / scale`
    /// (unused when the scale is read on the device).
    struct UnscaleParams { units: u32, inv_scale: f32 }
}

/// The parameters of both variants; the caller fills `bias_a`, `bias_b` and `slot`.
fn adam_meta(n: usize, h: &AdamParams) -> AdamKernelParams {
    AdamKernelParams {
        n: n as u32,
        lr: h.lr as f32,
        beta1: h.beta1 as f32,
        beta2: h.beta2 as f32,
        eps: h.eps as f32,
        weight_decay: h.weight_decay as f32,
        decoupled: h.decoupled as u32,
        decay: (1.0 - h.lr * h.weight_decay) as f32,
        ..Default::default()
    }
}

pub(crate) fn adam_step(
    p: &mut GpuStorage,
    g: &GpuStorage,
    m: &mut GpuStorage,
    v: &mut GpuStorage,
    h: &AdamParams,
) -> Result<()> {
    const OP: &str = "adam_step";
    let n = check_adam(OP, p, g, m, v)?;
    if n == 0 {
        return Ok(());
    }
    let dtype = p.dtype();
    let ctx = p.context().clone();
    let kernel = ctx.cache.get(&ctx.device, OP, &adam_key(dtype, false), || source(dtype, false))?;
    let t = h.step as f64;
    let bias1 = 1.0 - h.beta1.powf(t);
    let bias2 = 1.0 - h.beta2.powf(t);
    let mut meta = adam_meta(n, h);
    meta.bias_a = (h.lr / bias1) as f32;
    meta.bias_b = bias2.sqrt() as f32;
    let groups = check_len(OP, n.div_ceil(WG as usize))?;
    ctx.dispatch(OP, &kernel, &[p.binding(), g.binding(), m.binding(), v.binding()], meta.words(), groups)
}

/// `ln β` for the gated kernel, bounded below: β = 0 gives −∞, and t·(−∞) is not safe on a GPU
/// that assumes finite floats; e⁻¹⁰⁰ is already 0 in f32.
fn ln_beta(beta: f64) -> f32 {
    beta.ln().max(-100.0) as f32
}

/// Adam with the step count kept on the device and the update skipped when `found_inf[0]` is
/// set (GradScaler's flag), so that a skipped step neither changes anything nor counts, and the
/// host never reads the flag. `steps` holds two u32 slots: slot `(h.step − 1) % 2` has the count
/// so far, and this dispatch writes the new count into the other one (see `bias_source`).
pub(crate) fn adam_step_gated(
    p: &mut GpuStorage,
    g: &GpuStorage,
    m: &mut GpuStorage,
    v: &mut GpuStorage,
    steps: &mut GpuStorage,
    found_inf: &GpuStorage,
    h: &AdamParams,
) -> Result<()> {
    const OP: &str = "adam_step";
    let n = check_adam(OP, p, g, m, v)?;
    if steps.dtype() != DType::U32 || steps.len() < 2 {
        return Err(Error::invalid(OP, format!("steps must be 2 u32 slots, got {} of {}", steps.len(), steps.dtype())));
    }
    check_flag(OP, found_inf)?;
    if h.step == 0 {
        return Err(Error::invalid(OP, "the attempt number (AdamParams::step) starts at 1"));
    }
    let dtype = p.dtype();
    let ctx = p.context().clone();
    let kernel = ctx.cache.get(&ctx.device, OP, &adam_key(dtype, true), || source(dtype, true))?;
    let mut meta = adam_meta(n, h);
    meta.bias_a = ln_beta(h.beta1);
    meta.bias_b = ln_beta(h.beta2);
    meta.slot = ((h.step - 1) % 2) as u32;
    // An empty parameter still counts its step: one workgroup runs invocation 0.
    let groups = check_len(OP, n.div_ceil(WG as usize).max(1))?;
    let bufs = [p.binding(), g.binding(), m.binding(), v.binding(), steps.binding(), found_inf.binding()];
    ctx.dispatch(OP, &kernel, &bufs, meta.words(), groups)
}

fn check_flag(op: &'static str, found_inf: &GpuStorage) -> Result<()> {
    if found_inf.dtype() != DType::U32 || found_inf.is_empty() {
        return Err(Error::invalid(
            op,
            format!(
                "found_inf must be a u32 flag of at least 1 element, got {} of {}",
                found_inf.dtype(),
                found_inf.len()
            ),
        ));
    }
    Ok(())
}

/// Where the unscale kernel's factor comes from: `info[1]` (the host's `1 / scale`), or
/// `1 / scale[0]` read on the device (binding 3, f32).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ScaleFrom {
    Host,
    Device,
}

/// The unscale kernel for `dtype`, four elements a thread when `vec4` (f32 as `vec4<f32>`,
/// f16 as `vec4<f16>`: 16- or 8-byte loads).
fn unscale_source(dtype: DType, vec4: bool, from: ScaleFrom) -> String {
    let st = if dtype == DType::F16 { "f16" } else { "f32" };
    let (v, s, u) =
        if vec4 { ("vec4<f32>", format!("vec4<{st}>"), "vec4<u32>") } else { ("f32", st.to_string(), "u32") };
    // 65520 is where f16's round-to-nearest-even turns to inf (halfway past 65504).
    let limit = if dtype == DType::F16 { "0x477ff000u" } else { "0x7f800000u" };
    let mut b = raw_binding(1, "g", &s, Access::Write);
    b += &raw_binding(2, "flag", "atomic<u32>", Access::Write);
    b += &format!("fn ld_g(at_: u32) -> {v} {{ return {v}(g[at_]); }}\n");
    b += &format!("fn st_g(at_: u32, val_: {v}) {{ g[at_] = {s}(val_); }}\n");
    b += &format!(
        "fn overflowed(y_: {v}) -> bool {{ return any((bitcast<{u}>(y_) & {u}(0x7fffffffu)) >= {u}({limit})); }}\n"
    );
    b += &match from {
        ScaleFrom::Host => "fn inv_scale() -> f32 { return params().inv_scale; }\n".to_string(),
        ScaleFrom::Device => {
            raw_binding(3, "scale", "f32", Access::Read) + "fn inv_scale() -> f32 { return 1.0 / scale[0]; }\n"
        }
    };
    let body = Template::new(crate::shaders::UNSCALE_CHECK).params::<UnscaleParams>().render();
    module(enable_for(dtype), false, &format!("{b}\n{body}"))
}

fn unscale_key(dtype: DType, vec4: bool, from: ScaleFrom) -> String {
    let dev = if from == ScaleFrom::Device { "|scale_on_device" } else { "" };
    format!("unscale_check|{dtype}|x{}{dev}", if vec4 { 4 } else { 1 })
}

/// `g ← g · inv_scale` in place over all of `g`, ORing 1 into `found_inf[0]` (u32) when a
/// result is inf or NaN. A gradient past the binding limit runs in windows (`chunked::in_place`).
pub(crate) fn unscale_check(g: &mut GpuStorage, inv_scale: f64, found_inf: &GpuStorage) -> Result<()> {
    unscale(g, found_inf, (inv_scale as f32).to_bits(), None)
}

/// [`unscale_check`] by `1 / scale[0]`, read on the device (`scale`: f32, one element), so the
/// host needs no value: GradScaler keeps its scale there.
pub(crate) fn unscale_check_by(g: &mut GpuStorage, scale: &GpuStorage, found_inf: &GpuStorage) -> Result<()> {
    if scale.dtype() != DType::F32 || scale.is_empty() {
        return Err(Error::invalid(
            "unscale_check",
            format!("scale must be one f32, got {} of {}", scale.len(), scale.dtype()),
        ));
    }
    unscale(g, found_inf, 0, Some(scale))
}

fn unscale(g: &mut GpuStorage, found_inf: &GpuStorage, inv_bits: u32, scale: Option<&GpuStorage>) -> Result<()> {
    const OP: &str = "unscale_check";
    check_float(OP, g.dtype())?;
    check_flag(OP, found_inf)?;
    let n = g.len();
    check_len(OP, n)?;
    if n == 0 {
        return Ok(());
    }
    crate::chunked::in_place(OP, g, &|piece, len| dispatch_unscale(piece, len, inv_bits, scale, found_inf))
}

/// The kernel over the first `n` elements of `g` (which fits a binding).
fn dispatch_unscale(
    g: &GpuStorage,
    n: usize,
    inv_bits: u32,
    scale: Option<&GpuStorage>,
    found_inf: &GpuStorage,
) -> Result<()> {
    const OP: &str = "unscale_check";
    let dtype = g.dtype();
    // Storage starts at offset 0 of its buffer, so a length that is a multiple of 4 makes
    // every vec4 aligned.
    let vec4 = n.is_multiple_of(4);
    let units = if vec4 { n / 4 } else { n };
    let from = if scale.is_some() { ScaleFrom::Device } else { ScaleFrom::Host };
    let ctx = g.context().clone();
    let kernel =
        ctx.cache.get(&ctx.device, OP, &unscale_key(dtype, vec4, from), || unscale_source(dtype, vec4, from))?;
    let meta = UnscaleParams { units: units as u32, inv_scale: f32::from_bits(inv_bits) };
    let groups = check_len(OP, units.div_ceil(WG as usize))?;
    match scale {
        Some(s) => ctx.dispatch(OP, &kernel, &[g.binding(), found_inf.binding(), s.binding()], meta.words(), groups),
        None => ctx.dispatch(OP, &kernel, &[g.binding(), found_inf.binding()], meta.words(), groups),
    }
}

pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for d in FLOATS {
        for gated in [false, true] {
            all.push((adam_key(d, gated), source(d, gated)));
        }
        for vec4 in [false, true] {
            for from in [ScaleFrom::Host, ScaleFrom::Device] {
                all.push((unscale_key(d, vec4, from), unscale_source(d, vec4, from)));
            }
        }
    }
    all
}
