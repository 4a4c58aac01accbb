//! Unary, binary, where, cast, copy, fill and random: one WGSL template
//! (`shaders/elementwise.wgsl`) specialised by the op's expression, the dtypes and which inputs
//! are contiguous.

use super::{WG, compute_type, enables, load, module, param, param_bits, push_layout, storage_type, store};
use crate::pool::Span;
use crate::shaders::Template;
use crate::{context::GpuContext, storage::GpuStorage};
use kiln_backend::{BinaryOp, DType, Distribution, Error, Layout, PhiloxKey, Result, TernaryOp, UnaryOp};

/// A fully described elementwise kernel: the value expression reads `x0`, `x1`, `x2` (compute
/// types) and `p0`, `p1` (scalar parameters).
pub(crate) struct Spec {
    pub name: String,
    pub inputs: Vec<(DType, bool)>,
    pub out: DType,
    pub value: String,
    /// Writes through a strided output layout (block after the inputs') instead of `out[i]`.
    pub strided_out: bool,
    /// A random op's key words (`PhiloxKey::words`): its value reads `b`, its element's Philox
    /// block, and `l`, the lane in it (see `shaders/philox.wgsl`). Data, like the parameters:
    /// only whether it is set shapes the kernel.
    pub philox: Option<[u32; 4]>,
}

impl Spec {
    pub(crate) fn key(&self) -> String {
        let ins: Vec<String> = self.inputs.iter().map(|(d, c)| format!("{d}{}", if *c { "c" } else { "s" })).collect();
        let (s, r) = (if self.strided_out { "s" } else { "" }, if self.philox.is_some() { "r" } else { "" });
        format!("ew|{}|{}|{}{s}{r}", self.name, ins.join(","), self.out)
    }

    pub(crate) fn source(&self) -> Result<String> {
        let op = "elementwise";
        let mut bindings = String::new();
        let mut loads = String::new();
        let mut dtypes = vec![self.out];
        for (k, &(dtype, contiguous)) in self.inputs.iter().enumerate() {
            dtypes.push(dtype);
            bindings += &format!(
                "@group(0) @binding({}) var<storage, read> in{k}: array<{}>;\n",
                k + 1,
                storage_type(op, dtype)?
            );
            let index = if contiguous {
                format!("info[info[{}u]] + i", 3 + k)
            } else {
                format!("layout_index(info[{}u], i)", 3 + k)
            };
            loads += &format!("    let x{k} = {};\n", load(dtype, &format!("in{k}[{index}]")));
        }
        let pty = self.inputs.first().map(|d| d.0).unwrap_or(self.out);
        loads += &format!("    let p0 = {};\n    let p1 = {};\n", param(pty, 1), param(pty, 2));
        if self.philox.is_some() {
            // The key words follow the output's layout word (see `elementwise_into`).
            let w = 4 + self.inputs.len();
            loads += &format!(
                "    let b = kiln_philox_block(i >> 2u, vec4<u32>(info[{w}u], info[{}u], info[{}u], info[{}u]));\n    let l = i & 3u;\n",
                w + 1,
                w + 2,
                w + 3
            );
        }
        bindings += &format!(
            "@group(0) @binding({}) var<storage, read_write> out: array<{}>;\n",
            self.inputs.len() + 1,
            storage_type(op, self.out)?
        );
        let out_index = if self.strided_out {
            format!("layout_index(info[{}u], i)", 3 + self.inputs.len())
        } else {
            "i".to_string()
        };
        let body = Template::new(crate::shaders::ELEMENTWISE)
            .set("BINDINGS", bindings)
            .set("LOADS", loads)
            .set("OUT_INDEX", out_index)
            .set("VALUE", store(self.out, &self.value))
            .render();
        let body = if self.philox.is_some() { format!("{}\n{body}", crate::shaders::PHILOX) } else { body };
        Ok(module(enables(&dtypes), true, &body))
    }
}

impl GpuContext {
    /// Runs `spec` over `numel` elements of the given inputs into a fresh contiguous buffer.
    pub(crate) fn elementwise(
        self: &std::sync::Arc<Self>,
        op: &'static str,
        spec: &Spec,
        inputs: &[(&GpuStorage, &Layout)],
        params: [u32; 2],
        numel: usize,
    ) -> Result<GpuStorage> {
        if crate::fusion::may_fuse(self, spec.out, inputs, numel) {
            return self.record_elementwise(op, spec, inputs, params, numel);
        }
        let out = GpuStorage::alloc(self, op, spec.out, numel)?;
        self.elementwise_into(op, spec, inputs, params, numel, &out, None)?;
        Ok(out)
    }

    /// Like [`elementwise`](Self::elementwise) but into `out`, through `out_layout` when the spec
    /// writes strided.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn elementwise_into(
        self: &std::sync::Arc<Self>,
        op: &'static str,
        spec: &Spec,
        inputs: &[(&GpuStorage, &Layout)],
        params: [u32; 2],
        numel: usize,
        out: &GpuStorage,
        out_layout: Option<&Layout>,
    ) -> Result<()> {
        if numel == 0 {
            return Ok(());
        }
        let kernel = self.cache.get(&self.device, op, &spec.key(), || spec.source().unwrap_or_default())?;
        let mut meta = vec![numel as u32, params[0], params[1]];
        let base = meta.len() + inputs.len();
        meta.resize(base, 0);
        meta.push(0);
        meta.extend(spec.philox.iter().flatten());
        for (k, (_, layout)) in inputs.iter().enumerate() {
            meta[3 + k] = meta.len() as u32;
            push_layout(op, &mut meta, layout)?;
        }
        if let Some(l) = out_layout {
            meta[3 + inputs.len()] = meta.len() as u32;
            push_layout(op, &mut meta, l)?;
        }
        let mut buffers: Vec<Span<'_>> = inputs.iter().map(|(s, _)| s.binding()).collect();
        buffers.push(out.binding());
        self.dispatch(op, &kernel, &buffers, &meta, (numel as u32).div_ceil(WG))
    }
}

/// WGSL for a unary op on `x0` of `dtype`; `None` when the op is undefined for that dtype.
pub(crate) fn unary_value(op: UnaryOp, dtype: DType) -> Option<String> {
    use UnaryOp::*;
    let float = dtype.is_float();
    if op.float_only() && !float && !matches!(op, IsNan | IsInf) {
        return None;
    }
    let v = match (op, dtype) {
        (IsNan | IsInf, _) if !float => "false",
        (Not, DType::Bool) => "!x0",
        (Not, _) | (_, DType::Bool) => return None,
        (IsNan, _) if float => "kiln_isnan(x0)",
        (IsInf, _) if float => "kiln_isinf(x0)",
        (IsNan | IsInf, _) => "false",
        (Neg, DType::U32) => return None,
        (Neg, _) => "-x0",
        (Abs, DType::U32) => "x0",
        (Abs, _) => "abs(x0)",
        (Sign, DType::U32) => "min(x0, 1u)",
        (Sign, DType::I32) => "sign(x0)",
        (Sign, _) => "kiln_sign(x0)",
        (Square, _) => "x0 * x0",
        (Relu, DType::U32) => "x0",
        (Relu, DType::I32) => "max(x0, 0)",
        // NaN passes through. NVIDIA's Vulkan compiler folds a compare-and-select into
        // max/min, which return the other operand for NaN, so NaN is tested on the bits.
        (Relu, _) => "select(select(x0, 0.0, x0 < 0.0), x0, kiln_isnan(x0))",
        (Clamp(..), DType::I32 | DType::U32) => "min(max(x0, p0), p1)",
        (Clamp(..), _) => "select(select(select(x0, p0, x0 < p0), p1, x0 > p1), x0, kiln_isnan(x0))",
        (Exp, _) => "exp(x0)",
        (Exp2, _) => "exp2(x0)",
        (Log, _) => "log(x0)",
        (Log2, _) => "log2(x0)",
        (Log1p, _) => "kiln_log1p(x0)",
        (Expm1, _) => "kiln_expm1(x0)",
        (Logit, _) => "log(x0 / (1.0 - x0))",
        (Sqrt, _) => "sqrt(x0)",
        (Rsqrt, _) => "inverseSqrt(x0)",
        (Recip, _) => "1.0 / x0",
        (Sin, _) => "kiln_sin(x0)",
        (Cos, _) => "kiln_cos(x0)",
        (Tanh, _) => "kiln_tanh(x0)",
        (Sigmoid, _) => "kiln_sigmoid(x0)",
        (LeakyRelu(_), _) => "select(p0 * x0, x0, x0 > 0.0 || kiln_isnan(x0))",
        (Elu(_), _) => "select(p0 * kiln_expm1(x0), x0, x0 > 0.0 || kiln_isnan(x0))",
        (GeluErf, _) => "0.5 * x0 * (1.0 + kiln_erf(x0 * 0.70710678118654752))",
        // Φ(x) + x·φ(x), with φ(x) = exp(−x²/2)/√(2π).
        (GeluErfGrad, _) => {
            "0.5 * (1.0 + kiln_erf(x0 * 0.70710678118654752)) + x0 * 0.39894228040143268 * exp(-0.5 * x0 * x0)"
        }
        (GeluTanh, _) => "0.5 * x0 * (1.0 + kiln_tanh(0.79788456080286536 * (x0 + 0.044715 * x0 * x0 * x0)))",
        (Silu, _) => "x0 * kiln_sigmoid(x0)",
        (Softplus, _) => "kiln_softplus(x0)",
        (Mish, _) => "x0 * kiln_tanh(kiln_softplus(x0))",
        (Floor, _) => "floor(x0)",
        (Ceil, _) => "ceil(x0)",
        (Round, _) => "round(x0)",
        (Powf(_), _) => "kiln_pow(x0, p0)",
    };
    Some(v.to_string())
}

/// WGSL for a binary op on `x0`, `x1` of `dtype`; `None` when undefined for that dtype.
pub(crate) fn binary_value(op: BinaryOp, dtype: DType) -> Option<String> {
    use BinaryOp::*;
    let v = match (op, dtype) {
        (And, DType::Bool) => "x0 && x1",
        (Or, DType::Bool) => "x0 || x1",
        (And | Or, _) => return None,
        // NaN compares unequal to everything: test the bits, since drivers may fold `!=`.
        (Ne, DType::F32 | DType::F16) => "x0 != x1 || kiln_isnan(x0) || kiln_isnan(x1)",
        (Eq, DType::F32 | DType::F16) => "x0 == x1 && !kiln_isnan(x0) && !kiln_isnan(x1)",
        (Eq, _) => "x0 == x1",
        (Ne, _) => "x0 != x1",
        // false < true, as on the CPU.
        (Lt, DType::Bool) => "select(0u, 1u, x0) < select(0u, 1u, x1)",
        (Le, DType::Bool) => "select(0u, 1u, x0) <= select(0u, 1u, x1)",
        (Gt, DType::Bool) => "select(0u, 1u, x0) > select(0u, 1u, x1)",
        (Ge, DType::Bool) => "select(0u, 1u, x0) >= select(0u, 1u, x1)",
        (_, DType::Bool) => return None,
        (Lt, _) => "x0 < x1",
        (Le, _) => "x0 <= x1",
        (Gt, _) => "x0 > x1",
        (Ge, _) => "x0 >= x1",
        (Add, _) => "x0 + x1",
        (Sub, _) => "x0 - x1",
        (Mul, _) => "x0 * x1",
        (Div, DType::I32) => "kiln_floordiv_i32(x0, x1)",
        (Div, DType::U32) => "kiln_div_u32(x0, x1)",
        (Div, _) => "x0 / x1",
        (Rem, DType::I32) => "kiln_rem_i32(x0, x1)",
        (Rem, DType::U32) => "kiln_rem_u32(x0, x1)",
        (Rem, _) => "kiln_rem_f32(x0, x1)",
        (Pow, DType::I32) => "kiln_pow_i32(x0, x1)",
        (Pow, DType::U32) => "kiln_pow_u32(x0, x1)",
        (Pow, _) => "kiln_pow(x0, x1)",
        (Maximum, DType::I32 | DType::U32) => "max(x0, x1)",
        (Minimum, DType::I32 | DType::U32) => "min(x0, x1)",
        (Maximum, _) => "select(select(x1, x0, x0 > x1), x0 + x1, kiln_isnan(x0) || kiln_isnan(x1))",
        (Minimum, _) => "select(select(x1, x0, x0 < x1), x0 + x1, kiln_isnan(x0) || kiln_isnan(x1))",
    };
    Some(v.to_string())
}

/// WGSL converting `x0` from `from`'s compute type to `to`'s, as Rust's `as` does (saturating,
/// NaN → 0, nonzero → true).
pub(crate) fn cast_value(from: DType, to: DType) -> String {
    let (f, t) = (compute_type(from), compute_type(to));
    match (f, t) {
        _ if f == t => "x0".into(),
        ("bool", "f32") => "select(0.0, 1.0, x0)".into(),
        ("bool", "i32") => "select(0, 1, x0)".into(),
        ("bool", "u32") => "select(0u, 1u, x0)".into(),
        ("f32", "bool") => "x0 != 0.0 || kiln_isnan(x0)".into(),
        ("i32", "bool") => "x0 != 0".into(),
        ("u32", "bool") => "x0 != 0u".into(),
        // f32 cannot represent i32::MAX: saturate explicitly past the largest float below 2^31.
        ("f32", "i32") => {
            "select(select(i32(clamp(x0, -2147483648.0, 2147483520.0)), 2147483647, x0 >= 2147483648.0), 0, kiln_isnan(x0))"
                .into()
        }
        ("f32", "u32") => {
            "select(select(u32(clamp(x0, 0.0, 4294967040.0)), 4294967295u, x0 >= 4294967296.0), 0u, kiln_isnan(x0))".into()
        }
        _ => format!("{t}(x0)"),
    }
}

fn contiguous(l: &Layout) -> bool {
    l.is_contiguous()
}

pub(crate) fn unary_spec(op: UnaryOp, dtype: DType, layout_contiguous: bool) -> Result<Spec> {
    let value =
        unary_value(op, dtype).ok_or_else(|| Error::UnsupportedDType { op: op.name(), dtype, why: String::new() })?;
    let out = if op.returns_bool() { DType::Bool } else { dtype };
    Ok(Spec {
        name: op.name().into(),
        inputs: vec![(dtype, layout_contiguous)],
        out,
        value,
        strided_out: false,
        philox: None,
    })
}

pub(crate) fn binary_spec(op: BinaryOp, dtype: DType, c0: bool, c1: bool) -> Result<Spec> {
    let value =
        binary_value(op, dtype).ok_or_else(|| Error::UnsupportedDType { op: op.name(), dtype, why: String::new() })?;
    let out = if op.returns_bool() { DType::Bool } else { dtype };
    Ok(Spec {
        name: op.name().into(),
        inputs: vec![(dtype, c0), (dtype, c1)],
        out,
        value,
        strided_out: false,
        philox: None,
    })
}

/// WGSL for a ternary op on `x0`, `x1`, `x2` (float compute type) with parameter `p0`.
pub(crate) fn ternary_value(op: TernaryOp) -> &'static str {
    match op {
        TernaryOp::Addcmul(_) => "x0 + p0 * x1 * x2",
        TernaryOp::Addcdiv(_) => "x0 + p0 * (x1 / x2)",
    }
}

pub(crate) fn ternary_spec(op: TernaryOp, dtype: DType, c: [bool; 3]) -> Result<Spec> {
    if !dtype.is_float() {
        return Err(Error::UnsupportedDType { op: op.name(), dtype, why: " (float dtypes only)".into() });
    }
    Ok(Spec {
        name: op.name().into(),
        inputs: vec![(dtype, c[0]), (dtype, c[1]), (dtype, c[2])],
        out: dtype,
        value: ternary_value(op).into(),
        strided_out: false,
        philox: None,
    })
}

pub(crate) fn where_spec(dtype: DType, c: [bool; 3]) -> Spec {
    Spec {
        name: "where".into(),
        inputs: vec![(DType::Bool, c[0]), (dtype, c[1]), (dtype, c[2])],
        out: dtype,
        value: "select(x2, x1, x0)".into(),
        strided_out: false,
        philox: None,
    }
}

pub(crate) fn cast_spec(from: DType, to: DType, c: bool) -> Spec {
    Spec {
        name: "cast".into(),
        inputs: vec![(from, c)],
        out: to,
        value: cast_value(from, to),
        strided_out: false,
        philox: None,
    }
}

pub(crate) fn fill_spec(dtype: DType) -> Spec {
    // A fill has no input: the parameter is read in the output's own compute type.
    Spec { name: "fill".into(), inputs: vec![], out: dtype, value: "p0".into(), strided_out: false, philox: None }
}

/// A random op: `dist` at `key` into `dtype` (u32 for bits, f32 or f16 otherwise). Parameters
/// ([`random_params`]): a Bernoulli's value and keep probability.
pub(crate) fn random_spec(dist: Distribution, key: PhiloxKey, dtype: DType) -> Result<Spec> {
    let value = match (dist, dtype) {
        (Distribution::Bits, DType::U32) => "kiln_lane(b, l)",
        (Distribution::Uniform, DType::F16) => "kiln_uniform_f16(kiln_lane(b, l))",
        (Distribution::Uniform, DType::F32) => "kiln_uniform(kiln_lane(b, l))",
        (Distribution::Normal, DType::F32 | DType::F16) => "kiln_normal(b, l)",
        (Distribution::Bernoulli { .. }, DType::F32 | DType::F16) => {
            "select(0.0, p0, kiln_uniform(kiln_lane(b, l)) < p1)"
        }
        _ => {
            return Err(Error::UnsupportedDType {
                op: dist.name(),
                dtype,
                why: " (random bits are u32; the rest f32 or f16 on the GPU)".into(),
            });
        }
    };
    Ok(Spec {
        name: dist.name().into(),
        inputs: vec![],
        out: dtype,
        value: value.into(),
        strided_out: false,
        philox: Some(key.words()),
    })
}

/// The parameter words of a random op of `dtype` (compute type f32 for the float outputs).
pub(crate) fn random_params(dist: Distribution, dtype: DType) -> [u32; 2] {
    match dist {
        Distribution::Bernoulli { keep, value } => [param_bits(value, dtype), param_bits(keep, dtype)],
        _ => [0, 0],
    }
}

pub(crate) fn copy_into_spec(dtype: DType, c: bool) -> Spec {
    Spec {
        name: "copy_into".into(),
        inputs: vec![(dtype, c)],
        out: dtype,
        value: "x0".into(),
        strided_out: true,
        philox: None,
    }
}

pub(crate) fn layout_flags(layouts: &[&Layout]) -> Vec<bool> {
    layouts.iter().map(|l| contiguous(l)).collect()
}

const GPU_DTYPES: [DType; 5] = [DType::F32, DType::F16, DType::I32, DType::U32, DType::Bool];

/// Every elementwise source the backend can generate.
pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut specs = Vec::new();
    for &d in &GPU_DTYPES {
        for c in [true, false] {
            for op in UnaryOp::ALL {
                specs.extend(unary_spec(op, d, c).ok());
            }
            for op in BinaryOp::ALL {
                for c1 in [true, false] {
                    specs.extend(binary_spec(op, d, c, c1).ok());
                }
            }
            for &to in &GPU_DTYPES {
                specs.push(cast_spec(d, to, c));
            }
            for c1 in [true, false] {
                for c2 in [true, false] {
                    specs.push(where_spec(d, [c, c1, c2]));
                    for op in TernaryOp::ALL {
                        specs.extend(ternary_spec(op, d, [c, c1, c2]).ok());
                    }
                }
            }
        }
        specs.push(fill_spec(d));
        let key = PhiloxKey { seed: 0, counter: 0 };
        for dist in [
            Distribution::Bits,
            Distribution::Uniform,
            Distribution::Normal,
            Distribution::Bernoulli { keep: 0.5, value: 2.0 },
        ] {
            specs.extend(random_spec(dist, key, d).ok());
        }
        for c in [true, false] {
            specs.push(copy_into_spec(d, c));
        }
    }
    specs.into_iter().filter_map(|s| Some((s.key(), s.source().ok()?))).collect()
}
