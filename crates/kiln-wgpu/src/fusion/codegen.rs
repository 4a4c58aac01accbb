//! WGSL for one fused kernel, and the cache key that names its structure. The key holds op
//! expressions, dtypes, load kinds and wiring, never buffers or sizes or parameter values, so a
//! repeated training step reuses every kernel it built the first time.

use crate::kernels::{compute_type, enables, load, module, param, param_word, storage_type, store};
use crate::shaders::Template;
use kiln_backend::{DType, Result};
use std::fmt::Write;

/// One op's expression as a function of `x0..x2` and `p0`, `p1`. Interned per context, so a
/// pending op holds a pointer and a kernel compares them by identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FnSig {
    pub value: String,
    pub in_dtypes: Vec<DType>,
    pub out: DType,
    /// A random op (no inputs): the value reads `b`, its element's Philox block, and `l`, the
    /// lane in it; the op's metadata carries 4 key words after its 2 parameters.
    pub random: bool,
    /// Its part of a kernel's cache key.
    pub key: String,
}

impl FnSig {
    pub(crate) fn new(value: String, in_dtypes: Vec<DType>, out: DType, random: bool) -> FnSig {
        let mut key = format!("{}{value}:", if random { "rng " } else { "" });
        for d in &in_dtypes {
            let _ = write!(key, "{d},");
        }
        let _ = write!(key, ">{out};");
        FnSig { value, in_dtypes, out, random, key }
    }

    /// Parameters are read in the first input's compute type (the output's for a fill).
    fn param_dtype(&self) -> DType {
        self.in_dtypes.first().copied().unwrap_or(self.out)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LoadKind {
    /// `in[offset + i]`.
    Contiguous,
    /// One element broadcast to all: `in[offset]`.
    Scalar,
    /// Through a layout block.
    Strided,
    /// Through a layout block whose last dimension is contiguous (stride 1) and a multiple of 4
    /// long, as a transposed view of heads is: the four elements of a vec4 invocation are then
    /// adjacent in memory, so one `layout_index` (a division and a remainder per dimension, the
    /// costly part of a strided copy on GPUs) serves all four. Scalar invocations treat it as
    /// `Strided`.
    StridedRows,
}

#[derive(Clone, Debug)]
pub(crate) struct LoadPlan {
    pub binding: usize,
    pub dtype: DType,
    pub kind: LoadKind,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    Load(usize),
    /// The value of the group's op with this index.
    Local(usize),
}

#[derive(Clone, Debug)]
pub(crate) struct OpPlan {
    pub func: usize,
    pub args: Vec<Arg>,
    /// A run (see `plan::RunTracker`): the op is applied in a loop, its two metadata words being
    /// the trip count and where the ops' parameters start; every application after the first
    /// takes the previous value as operand `run` (the other operands stay `args`).
    pub run: Option<usize>,
}

/// Everything that shapes one fused kernel's source.
#[derive(Clone, Debug)]
pub(crate) struct GroupPlan {
    pub fns: Vec<std::sync::Arc<FnSig>>,
    pub ops: Vec<OpPlan>,
    pub loads: Vec<LoadPlan>,
    /// The dtype of each input binding.
    pub inputs: Vec<DType>,
    /// (op index, dtype) of each output binding, after the inputs.
    pub outputs: Vec<(usize, DType)>,
    /// Four elements per invocation through `vec4` bindings (see `plan::vec4_ok`).
    pub vec4: bool,
}

/// Appends `n` in decimal.
fn push_num(k: &mut String, n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    k.extend(digits[at..].iter().map(|&d| d as char));
}

impl GroupPlan {
    pub(crate) fn key(&self) -> String {
        let mut k = String::with_capacity(64 + 16 * self.ops.len());
        k.push_str(if self.vec4 { "fz4|" } else { "fz|" });
        for f in &self.fns {
            k.push_str(&f.key);
        }
        k.push('|');
        // Built for every dispatched kernel, one entry per op: digits are pushed by hand, as
        // `write!` cost more than the rest of planning a 64-op scalar chain.
        for op in &self.ops {
            if let Some(chained) = op.run {
                k.push('R');
                push_num(&mut k, chained);
            }
            push_num(&mut k, op.func);
            k.push('(');
            for a in &op.args {
                let (tag, n) = match a {
                    Arg::Load(l) => ('a', *l),
                    Arg::Local(v) => ('v', *v),
                };
                k.push(tag);
                push_num(&mut k, n);
            }
            k.push(')');
        }
        k.push('|');
        for l in &self.loads {
            let _ = write!(k, "{}{}{:?};", l.binding, l.dtype, l.kind);
        }
        k.push('|');
        for d in &self.inputs {
            let _ = write!(k, "{d},");
        }
        k.push('|');
        for (v, d) in &self.outputs {
            let _ = write!(k, "{v}{d},");
        }
        k
    }

    fn dtypes(&self) -> Vec<DType> {
        let mut all: Vec<DType> = self.inputs.clone();
        all.extend(self.outputs.iter().map(|o| o.1));
        for f in &self.fns {
            all.extend(&f.in_dtypes);
            all.push(f.out);
        }
        all
    }

    pub(crate) fn try_source(&self) -> Result<String> {
        let op = "fused elementwise";
        // In vec4 mode every binding is an array of 4-element vectors and each invocation
        // computes 4 consecutive elements: 16-byte loads and stores.
        let lanes = if self.vec4 { 4 } else { 1 };
        let array = |d: DType| -> Result<String> {
            let t = storage_type(op, d)?;
            Ok(if self.vec4 { format!("vec4<{t}>") } else { t.to_string() })
        };
        let mut bindings = String::new();
        for (b, &d) in self.inputs.iter().enumerate() {
            let _ = writeln!(bindings, "@group(0) @binding({}) var<storage, read> in{b}: array<{}>;", b + 1, array(d)?);
        }
        for (m, &(_, d)) in self.outputs.iter().enumerate() {
            let binding = self.inputs.len() + m + 1;
            let _ = writeln!(
                bindings,
                "@group(0) @binding({binding}) var<storage, read_write> out{m}: array<{}>;",
                array(d)?
            );
        }
        let mut functions = String::new();
        for (f, sig) in self.fns.iter().enumerate() {
            let mut args: Vec<String> =
                sig.in_dtypes.iter().enumerate().map(|(k, &d)| format!("x{k}: {}", compute_type(d))).collect();
            if sig.random {
                args.extend(["b: vec4<u32>".to_string(), "l: u32".to_string()]);
            }
            let pty = compute_type(sig.param_dtype());
            args.push(format!("p0: {pty}"));
            args.push(format!("p1: {pty}"));
            // Unfused, every f16 result is rounded to f16 when stored: round here too.
            let value = if sig.out == DType::F16 { format!("f32(f16({}))", sig.value) } else { sig.value.clone() };
            let _ = writeln!(
                functions,
                "fn kf{f}({}) -> {} {{\n    return {value};\n}}",
                args.join(", "),
                compute_type(sig.out)
            );
        }
        // Each op's parameter words: p0, p1, and a random op's 4 key words.
        let mut param_at = Vec::with_capacity(self.ops.len());
        let mut loads_base = 2;
        for op in &self.ops {
            param_at.push(loads_base);
            loads_base += if self.fns[op.func].random { 6 } else { 2 };
        }
        // Every use of a value goes through `kiln_opaque_*` with its own factor, so the compiler
        // cannot prove two operands equal and fold `x - x` to 0 or `x / x` to 1 (wrong for NaN
        // and inf) or contract across ops: each op then computes what it computes unfused.
        let mut uses = 0u32;
        let mut body = String::new();
        // The WGSL naming lane `c` of load `l`.
        let mut lane_of: Vec<Vec<String>> = Vec::with_capacity(self.loads.len());
        for (l, plan) in self.loads.iter().enumerate() {
            let word = format!("info[{}u]", loads_base + l);
            let buf = format!("in{}", plan.binding);
            let names = if !self.vec4 {
                let index = match plan.kind {
                    LoadKind::Contiguous => format!("{word} + i"),
                    LoadKind::Scalar => word,
                    LoadKind::Strided | LoadKind::StridedRows => format!("layout_index({word}, i)"),
                };
                let _ = writeln!(body, "    let a{l} = {};", load(plan.dtype, &format!("{buf}[{index}]")));
                vec![format!("a{l}")]
            } else {
                match plan.kind {
                    LoadKind::Contiguous => {
                        let _ = writeln!(body, "    let a{l} = {buf}[({word} >> 2u) + i];");
                        ["x", "y", "z", "w"].iter().map(|c| load(plan.dtype, &format!("a{l}.{c}"))).collect()
                    }
                    LoadKind::Scalar => {
                        let _ = writeln!(
                            body,
                            "    let a{l} = {};",
                            load(plan.dtype, &format!("{buf}[{word} >> 2u][{word} & 3u]"))
                        );
                        vec![format!("a{l}"); 4]
                    }
                    LoadKind::StridedRows => {
                        let _ = writeln!(body, "    let e{l} = layout_index({word}, 4u * i);");
                        (0..4)
                            .map(|c| {
                                let e = format!("(e{l} + {c}u)");
                                let _ = writeln!(
                                    body,
                                    "    let a{l}_{c} = {};",
                                    load(plan.dtype, &format!("{buf}[{e} >> 2u][{e} & 3u]"))
                                );
                                format!("a{l}_{c}")
                            })
                            .collect()
                    }
                    LoadKind::Strided => (0..4)
                        .map(|c| {
                            let _ = writeln!(body, "    let e{l}_{c} = layout_index({word}, 4u * i + {c}u);");
                            let _ = writeln!(
                                body,
                                "    let a{l}_{c} = {};",
                                load(plan.dtype, &format!("{buf}[e{l}_{c} >> 2u][e{l}_{c} & 3u]"))
                            );
                            format!("a{l}_{c}")
                        })
                        .collect(),
                }
            };
            lane_of.push(names);
        }
        // A random op's Philox block, once per invocation: element e = 4q + l is lane l of block
        // q, and a vec4 invocation's four elements are exactly block i.
        for (k, op) in self.ops.iter().enumerate() {
            if self.fns[op.func].random {
                let w = param_at[k] + 2;
                let q = if self.vec4 { "i" } else { "(i >> 2u)" };
                let _ = writeln!(
                    body,
                    "    let b{k} = kiln_philox_block({q}, vec4<u32>(info[{w}u], info[{}u], info[{}u], info[{}u]));",
                    w + 1,
                    w + 2,
                    w + 3
                );
            }
        }
        #[allow(clippy::needless_range_loop)] // `c` also names the lane's values
        for c in 0..lanes {
            for (k, op) in self.ops.iter().enumerate() {
                let sig = &self.fns[op.func];
                let mut args = Vec::with_capacity(op.args.len() + 2);
                for (a, &dtype) in op.args.iter().zip(&sig.in_dtypes) {
                    let name = match a {
                        Arg::Load(l) => lane_of[*l][c].clone(),
                        Arg::Local(v) => format!("v{v}_{c}"),
                    };
                    uses += 1;
                    args.push(format!("kiln_opaque_{}({name}, {uses}u)", compute_type(dtype)));
                }
                if sig.random {
                    args.push(format!("b{k}"));
                    args.push(if self.vec4 { format!("{c}u") } else { "(i & 3u)".to_string() });
                }
                let pty = sig.param_dtype();
                let Some(chained) = op.run else {
                    args.push(param(pty, param_at[k]));
                    args.push(param(pty, param_at[k] + 1));
                    let _ = writeln!(body, "    let v{k}_{c} = kf{}({});", op.func, args.join(", "));
                    continue;
                };
                // The first application as written, the rest in a loop over the parameter block.
                let block = format!("info[{}u]", param_at[k] + 1);
                args.push(param_word(pty, &block));
                args.push(param_word(pty, &format!("{block} + 1u")));
                let _ = writeln!(body, "    var v{k}_{c} = kf{}({});", op.func, args.join(", "));
                uses += 1;
                args[chained] = format!("kiln_opaque_{}(v{k}_{c}, {uses}u)", compute_type(sig.in_dtypes[chained]));
                let n = args.len();
                args[n - 2] = param_word(pty, &format!("{block} + 2u * t"));
                args[n - 1] = param_word(pty, &format!("{block} + 2u * t + 1u"));
                let _ = writeln!(
                    body,
                    "    for (var t = 1u; t < info[{}u]; t = t + 1u) {{\n        v{k}_{c} = kf{}({});\n    }}",
                    param_at[k],
                    op.func,
                    args.join(", ")
                );
            }
        }
        for (m, &(v, d)) in self.outputs.iter().enumerate() {
            let value = if self.vec4 {
                let parts: Vec<String> = (0..4).map(|c| store(d, &format!("v{v}_{c}"))).collect();
                format!("vec4<{}>({})", storage_type(op, d)?, parts.join(", "))
            } else {
                store(d, &format!("v{v}_0"))
            };
            let _ = writeln!(body, "    out{m}[i] = {value};");
        }
        let mut src = Template::new(crate::shaders::FUSED)
            .set("BINDINGS", bindings)
            .set("FUNCTIONS", functions)
            .set("BODY", body)
            .render();
        if self.fns.iter().any(|f| f.random) {
            src = format!("{}\n{src}", crate::shaders::PHILOX);
        }
        Ok(module(enables(&self.dtypes()), true, &src))
    }

    /// The source, or an empty module whose build error names the problem.
    pub(crate) fn source(&self) -> String {
        self.try_source().unwrap_or_default()
    }
}

/// A few fused structures for the shader validation test: a long scalar-add chain (W8b), the
/// W3 chain with a broadcast operand, mixed dtypes through compare/where/cast, f16, and a fill.
pub(crate) fn specialisations() -> Vec<(String, String)> {
    use crate::kernels::elementwise::{binary_value, cast_value, unary_value};
    use kiln_backend::{BinaryOp, UnaryOp};
    let sig = |value: Option<String>, ins: &[DType], out: DType| {
        std::sync::Arc::new(FnSig::new(value.unwrap_or_default(), ins.to_vec(), out, false))
    };
    let load = |binding, dtype, kind| LoadPlan { binding, dtype, kind };
    let (f, i, b, h) = (DType::F32, DType::I32, DType::Bool, DType::F16);
    let add = sig(binary_value(BinaryOp::Add, f), &[f, f], f);
    let mut chain = GroupPlan {
        fns: vec![add.clone()],
        ops: vec![OpPlan { func: 0, args: vec![Arg::Load(0), Arg::Load(1)], run: None }],
        loads: vec![load(0, f, LoadKind::Contiguous), load(1, f, LoadKind::Scalar)],
        inputs: vec![f, f],
        outputs: vec![(63, f)],
        vec4: false,
    };
    for k in 1..64 {
        chain.ops.push(OpPlan { func: 0, args: vec![Arg::Local(k - 1), Arg::Load(1)], run: None });
    }
    let w3 = GroupPlan {
        fns: vec![
            sig(binary_value(BinaryOp::Mul, f), &[f, f], f),
            add,
            sig(unary_value(UnaryOp::GeluTanh, f), &[f], f),
        ],
        ops: vec![
            OpPlan { func: 0, args: vec![Arg::Load(0), Arg::Load(1)], run: None },
            OpPlan { func: 1, args: vec![Arg::Local(0), Arg::Load(2)], run: None },
            OpPlan { func: 2, args: vec![Arg::Local(1)], run: None },
        ],
        loads: vec![load(0, f, LoadKind::Contiguous), load(1, f, LoadKind::Contiguous), load(2, f, LoadKind::Strided)],
        inputs: vec![f, f, f],
        outputs: vec![(0, f), (2, f)],
        vec4: true,
    };
    let mixed = GroupPlan {
        fns: vec![
            sig(binary_value(BinaryOp::Gt, f), &[f, f], b),
            sig(Some("select(x2, x1, x0)".into()), &[b, f, f], f),
            sig(Some(cast_value(f, i)), &[f], i),
            sig(binary_value(BinaryOp::Div, i), &[i, i], i),
            sig(Some(cast_value(i, h)), &[i], h),
            sig(unary_value(UnaryOp::Clamp(0.0, 1.0), h), &[h], h),
            sig(Some("p0".into()), &[], i),
        ],
        ops: vec![
            OpPlan { func: 0, args: vec![Arg::Load(0), Arg::Load(1)], run: None },
            OpPlan { func: 1, args: vec![Arg::Local(0), Arg::Load(0), Arg::Load(1)], run: None },
            OpPlan { func: 2, args: vec![Arg::Local(1)], run: None },
            OpPlan { func: 6, args: vec![], run: None },
            OpPlan { func: 3, args: vec![Arg::Local(2), Arg::Local(3)], run: None },
            OpPlan { func: 4, args: vec![Arg::Local(4)], run: None },
            OpPlan { func: 5, args: vec![Arg::Local(5)], run: None },
        ],
        loads: vec![load(0, f, LoadKind::Strided), load(1, f, LoadKind::Scalar)],
        inputs: vec![f, f],
        outputs: vec![(0, b), (4, i), (6, h)],
        vec4: false,
    };
    // Mixed dtypes in vec4 mode: no f16 binding there.
    let mut mixed4 = mixed.clone();
    mixed4.outputs = vec![(0, b), (4, i)];
    mixed4.vec4 = true;
    let mut chain4 = chain.clone();
    chain4.vec4 = true;
    // W8b as a run: one loop for a chain of any length, here after a product and feeding a
    // cast (f16, whose rounding sits inside the looped function), chained on either operand.
    let sub16 = sig(binary_value(BinaryOp::Sub, h), &[h, h], h);
    let run = |chained: usize| {
        let (first, then) = if chained == 0 { (Arg::Local(0), Arg::Load(1)) } else { (Arg::Load(1), Arg::Local(0)) };
        let mut args = vec![then, then];
        args[chained] = first;
        GroupPlan {
            fns: vec![sig(Some(cast_value(f, h)), &[f], h), sub16.clone(), sig(Some(cast_value(h, f)), &[h], f)],
            ops: vec![
                OpPlan { func: 0, args: vec![Arg::Load(0)], run: None },
                OpPlan { func: 1, args, run: Some(chained) },
                OpPlan { func: 2, args: vec![Arg::Local(1)], run: None },
            ],
            loads: vec![load(0, f, LoadKind::Contiguous), load(1, h, LoadKind::Scalar)],
            inputs: vec![f, h],
            outputs: vec![(1, h), (2, f)],
            vec4: false,
        }
    };
    let mut add_run = chain.clone();
    add_run.ops.truncate(1);
    add_run.ops[0].run = Some(0);
    add_run.outputs = vec![(0, f)];
    let mut add_run4 = add_run.clone();
    add_run4.vec4 = true;
    // Dropout (x · mask, the mask never stored) after a producer, two random ops in one kernel,
    // and every random value, scalar and vec4, f32 and f16.
    let random = |dist, d| {
        let spec =
            crate::kernels::elementwise::random_spec(dist, kiln_backend::PhiloxKey { seed: 0, counter: 0 }, d).ok()?;
        Some(std::sync::Arc::new(FnSig::new(spec.value, vec![], d, true)))
    };
    let bern = kiln_backend::Distribution::Bernoulli { keep: 0.8, value: 1.25 };
    // A transposed view whose rows stay contiguous (attention's heads), scalar and vec4.
    let mut rows4 = w3.clone();
    rows4.loads[0].kind = LoadKind::StridedRows;
    let mut rows = rows4.clone();
    rows.vec4 = false;
    let mut plans = vec![chain, chain4, w3, rows, rows4, mixed, mixed4, add_run, add_run4, run(0), run(1)];
    for vec4 in [false, true] {
        let fns: Vec<_> = [
            random(bern, f),
            Some(sig(binary_value(BinaryOp::Mul, f), &[f, f], f)),
            Some(sig(unary_value(UnaryOp::GeluErf, f), &[f], f)),
            random(kiln_backend::Distribution::Normal, f),
            random(kiln_backend::Distribution::Uniform, f),
            random(kiln_backend::Distribution::Bits, DType::U32),
        ]
        .into_iter()
        .flatten()
        .collect();
        plans.push(GroupPlan {
            fns,
            ops: vec![
                OpPlan { func: 2, args: vec![Arg::Load(0)], run: None },
                OpPlan { func: 0, args: vec![], run: None },
                OpPlan { func: 1, args: vec![Arg::Local(0), Arg::Local(1)], run: None },
                OpPlan { func: 3, args: vec![], run: None },
                OpPlan { func: 4, args: vec![], run: None },
                OpPlan { func: 0, args: vec![], run: None },
                OpPlan { func: 5, args: vec![], run: None },
            ],
            loads: vec![load(0, f, LoadKind::Contiguous)],
            inputs: vec![f],
            outputs: vec![(2, f), (3, f), (4, f), (5, f), (6, DType::U32)],
            vec4,
        });
        let fns16: Vec<_> = [
            random(bern, h),
            random(kiln_backend::Distribution::Normal, h),
            random(kiln_backend::Distribution::Uniform, h),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !vec4 {
            plans.push(GroupPlan {
                fns: fns16,
                ops: (0..3).map(|func| OpPlan { func, args: vec![], run: None }).collect(),
                loads: vec![],
                inputs: vec![],
                outputs: vec![(0, h), (1, h), (2, h)],
                vec4,
            });
        }
    }
    plans.iter().map(|p| (p.key(), p.source())).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn push_num_writes_decimal() {
        for n in [0, 7, 9, 10, 63, 100, 4097, 1_000_000, usize::MAX] {
            let mut k = String::from("x");
            super::push_num(&mut k, n);
            assert_eq!(k, format!("x{n}"));
        }
    }
}
