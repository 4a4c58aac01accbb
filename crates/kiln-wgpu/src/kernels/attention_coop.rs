//! Flash attention on tensor cores (cooperative matrices) for f16 q, k and v: the forward
//! (`shaders/attention_coop.wgsl`) and both backward passes (`attention_coop_backward_dq.wgsl`,
//! `attention_coop_backward_dkv.wgsl`), with f16 operands, f32 accumulation and f32 softmax
//! statistics, and the contract of the f32 flash kernels (`attention.rs`), which offers every
//! f16 call here first. Calls this path does not cover (no cooperative matrices, a head dim
//! that is not a multiple of 16, too little workgroup memory, `KILN_COOP=0`) return `None`.
//!
//! The 16×16 tile loops are unrolled here, as in `matmul_coop.rs`: WGSL has no arrays of
//! cooperative matrices, so each accumulator is a variable of its own.

use super::attention::{Kernel, Launch};
use crate::shaders::Template;
use crate::storage::GpuStorage;
use kiln_backend::{AttentionParams, BackendStorage, DType, Result};
use std::sync::atomic::{AtomicBool, Ordering};

/// How one coop kernel is blocked: `ns` subgroups of 32 each own a 16-row strip of the
/// `16·ns` resident rows; the other side streams through in tiles of `bc` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    d: u32,
    ns: u32,
    bc: u32,
}

/// (ns, bc) from the largest down: the first that fits the adapter's workgroup memory wins.
const BLOCKS: [(u32, u32); 6] = [(4, 64), (4, 32), (2, 64), (2, 32), (1, 32), (1, 16)];

impl Block {
    pub(crate) fn choose(kernel: Kernel, d: u32, max_bytes: u32, max_threads: u32) -> Option<Block> {
        if d == 0 || !d.is_multiple_of(16) {
            return None;
        }
        BLOCKS
            .iter()
            .map(|&(ns, bc)| Block { d, ns, bc })
            .find(|b| b.workgroup_bytes(kernel) <= max_bytes && b.threads() <= max_threads)
    }

    pub(crate) fn threads(&self) -> u32 {
        32 * self.ns
    }

    /// Resident rows per workgroup.
    pub(crate) fn rows(&self) -> u32 {
        16 * self.ns
    }

    /// Lengths of the workgroup arrays: resident and streamed f16 rows (vec4s, pitch d + 8
    /// halves), f32 score rows (pitch bc + 4), f16 probability rows (vec4s, pitch bc + 8),
    /// f32 output rows (pitch d + 4).
    fn lens(&self) -> (u32, u32, u32, u32, u32) {
        let (br, bc, d) = (self.rows(), self.bc, self.d);
        (br * (d + 8) / 4, bc * (d + 8) / 4, br * (bc + 4), br * (bc + 8) / 4, br * (d + 4))
    }

    pub(crate) fn workgroup_bytes(&self, kernel: Kernel) -> u32 {
        let (resident, streamed, scores, probs, out) = self.lens();
        let (br, bc) = (self.rows(), self.bc);
        match kernel {
            Kernel::Forward => resident * 8 + streamed * 8 + scores * 4 + probs * 8 + out * 4 + br * 4,
            Kernel::Dq => 2 * resident * 8 + 2 * streamed * 8 + 2 * scores * 4 + probs * 8 + 2 * br * 4,
            Kernel::Dkv => 2 * resident * 8 + 2 * streamed * 8 + 2 * scores * 4 + 2 * probs * 8 + 2 * bc * 4 + br * 4,
        }
    }

    pub(crate) fn name(&self) -> String {
        format!("d{}|coop{}x{}", self.d, self.ns, self.bc)
    }

    pub(crate) fn source(&self, kernel: Kernel) -> String {
        let (resident, streamed, scores, probs, out) = self.lens();
        let (shader, parts) = match kernel {
            Kernel::Forward => (crate::shaders::ATTENTION_COOP, self.forward_parts()),
            Kernel::Dq => (crate::shaders::ATTENTION_COOP_BACKWARD_DQ, self.dq_parts()),
            Kernel::Dkv => (crate::shaders::ATTENTION_COOP_BACKWARD_DKV, self.dkv_parts()),
        };
        let mut template = Template::new(shader)
            .set("D", self.d.to_string())
            .set("NS", self.ns.to_string())
            .set("BC", self.bc.to_string())
            .set("BR", self.rows().to_string())
            .set("WG", self.threads().to_string())
            .set("QS_LEN", resident.to_string())
            .set("KV_LEN", streamed.to_string())
            .set("SS_LEN", scores.to_string())
            .set("PS_LEN", probs.to_string())
            .set_optional("OS_LEN", out.to_string());
        for (name, code) in parts {
            template = template.set(name, code);
        }
        let body = format!("{}\n{}", template.render(), super::attention::extras_source());
        super::module("enable f16;\nenable wgpu_cooperative_matrix;\n", false, &body)
    }

    /// 16-wide tiles along the head dim and along the streamed rows.
    fn tiles(&self) -> (u32, u32) {
        (self.d / 16, self.bc / 16)
    }

    /// Loads of the strip's A tiles `{name}{t}` from `array` (pitch `pitch` vec4s), one per
    /// 16 columns of `count`.
    fn strip(name: &str, array: &str, pitch: &str, count: u32) -> String {
        let mut s = format!("            let {name}_at = sid * 16u * {pitch};\n");
        for t in 0..count {
            s += &format!(
                "            let {name}{t} = coopLoadT<coop_mat16x16<f16, A>>(&{array}[{name}_at + {}u], {pitch});\n",
                t * 4
            );
        }
        s
    }

    /// Strips of `a · bᵀ` stored as f32 rows in `rows` (pitch SF): for every 16 streamed rows
    /// `ct`, `{out}{ct}` = Σ over head-dim tiles of A tile `{a}{dt}` times the transposed
    /// (column-major) tile of `b` at rows ct·16, columns dt·16.
    fn scores(&self, pairs: &[(&str, &str, &str, &str)]) -> String {
        let (dt_n, ct_n) = self.tiles();
        let mut s = String::new();
        for ct in 0..ct_n {
            for (a, b, out, rows) in pairs {
                s += &format!("            var {out}{ct} = coop_mat16x16<f32, C>();\n");
                for dt in 0..dt_n {
                    s += &format!(
                        "            {out}{ct} = coopMultiplyAdd({a}{dt}, coopLoad<coop_mat16x16<f16, B>>(&{b}[{}u * Q4 + {}u], Q4), {out}{ct});\n",
                        ct * 16,
                        dt * 4
                    );
                }
                s += &format!(
                    "            {{\n                let m_ = {out}{ct};\n                let at_ = sid * 16u * SF + {}u;\n                let st_ = SF;\n                coopStoreT(m_, &{rows}[at_], st_);\n            }}\n",
                    ct * 16
                );
            }
        }
        s
    }

    /// `acc{dt} += Σ_ct p{ct} · (rows ct·16.. of b, columns dt·16..)` for each (p, b, acc).
    fn products(&self, pairs: &[(&str, &str, &str)]) -> String {
        let (dt_n, ct_n) = self.tiles();
        let mut s = String::new();
        for dt in 0..dt_n {
            for (p, b, acc) in pairs {
                for ct in 0..ct_n {
                    s += &format!(
                        "            {acc}{dt} = coopMultiplyAdd({p}{ct}, coopLoadT<coop_mat16x16<f16, B>>(&{b}[{}u * Q4 + {}u], Q4), {acc}{dt});\n",
                        ct * 16,
                        dt * 4
                    );
                }
            }
        }
        s
    }

    /// Declarations of zeroed accumulators `{name}{dt}`.
    fn accumulators(&self, names: &[&str]) -> String {
        let (dt_n, _) = self.tiles();
        let mut s = String::new();
        for name in names {
            for dt in 0..dt_n {
                s += &format!("    var {name}{dt} = coop_mat16x16<f32, C>();\n");
            }
        }
        s
    }

    /// Stores of accumulators `{name}{dt}` (times `factor`) to rows `first + sid·16 + r` of
    /// `out` (below `len`), through the subgroup's 16×16 scratch tile in `ss`.
    fn store(&self, outs: &[(&str, &str, &str)], first: &str, base: &str, len: &str) -> String {
        let (dt_n, _) = self.tiles();
        let mut s = String::new();
        for (name, out, factor) in outs {
            for dt in 0..dt_n {
                s += &format!(
                    "    {{
        let m_ = {name}{dt};
        let at_ = sid * 16u * SF;
        let st_ = SF;
        coopStoreT(m_, &ss[at_], st_);
        workgroupBarrier();
        for (var e = lane; e < 256u; e += 32u) {{
            let row = {first} + sid * 16u + e / 16u;
            if store && row < {len} {{
                {out}[({base} + row) * D + {col}u + e % 16u] = f16(ss[at_ + (e / 16u) * SF + e % 16u]{factor});
            }}
        }}
        workgroupBarrier();
    }}
",
                    col = dt * 16
                );
            }
        }
        s
    }

    fn forward_parts(&self) -> Vec<(&'static str, String)> {
        let (dt_n, ct_n) = self.tiles();
        let scores = format!(
            "        {{\n{}{}        }}\n",
            Block::strip("qa", "qs", "Q4", dt_n),
            self.scores(&[("qa", "kv", "s", "ss")])
        );
        let mut out = format!("        {{\n{}", Block::strip("pa", "ps", "P4", ct_n));
        for dt in 0..dt_n {
            out += &format!(
                "            {{\n                let at_ = sid * 16u * OF + {}u;\n                let st_ = OF;\n                var o_ = coopLoadT<coop_mat16x16<f32, C>>(&os[at_], st_);\n",
                dt * 16
            );
            for ct in 0..ct_n {
                out += &format!(
                    "                o_ = coopMultiplyAdd(pa{ct}, coopLoadT<coop_mat16x16<f16, B>>(&kv[{}u * Q4 + {}u], Q4), o_);\n",
                    ct * 16,
                    dt * 4
                );
            }
            out += "                let m_ = o_;\n                coopStoreT(m_, &os[at_], st_);\n            }\n";
        }
        out += "        }\n";
        vec![("SCORES", scores), ("OUTPUT", out)]
    }

    fn dq_parts(&self) -> Vec<(&'static str, String)> {
        let (dt_n, ct_n) = self.tiles();
        let scores = format!(
            "        {{\n{}{}{}        }}\n",
            Block::strip("qa", "qs", "Q4", dt_n),
            Block::strip("da", "dos", "Q4", dt_n),
            self.scores(&[("qa", "ks", "s", "ss"), ("da", "vs", "dp", "dps")])
        );
        let grads = format!(
            "        {{\n{}{}        }}\n",
            Block::strip("ga", "dss", "P4", ct_n),
            self.products(&[("ga", "ks", "acc")])
        );
        vec![
            ("ACC_DECL", self.accumulators(&["acc"])),
            ("SCORES", scores),
            ("GRADS", grads),
            ("STORE", self.store(&[("acc", "dq", " * scale")], "i0", "q0", "q_len")),
        ]
    }

    fn dkv_parts(&self) -> Vec<(&'static str, String)> {
        let (dt_n, ct_n) = self.tiles();
        let scores = format!(
            "        {{\n{}{}{}        }}\n",
            Block::strip("ka", "ks", "Q4", dt_n),
            Block::strip("va", "vs", "Q4", dt_n),
            self.scores(&[("ka", "qs", "s", "ss"), ("va", "dos", "dp", "dps")])
        );
        let grads = format!(
            "        {{\n{}{}{}        }}\n",
            Block::strip("pa", "pts", "P4", ct_n),
            Block::strip("ga", "dss", "P4", ct_n),
            self.products(&[("pa", "dos", "accv"), ("ga", "qs", "acck")])
        );
        vec![
            ("ACC_DECL", self.accumulators(&["acck", "accv"])),
            ("SCORES", scores),
            ("GRADS", grads),
            ("STORE", self.store(&[("acck", "dk", " * scale"), ("accv", "dv", "")], "j0", "kv_base", "kv_len")),
        ]
    }
}

/// The coop kernel `kernel` for `rows` resident rows per (batch, head), where this path covers
/// the call: f16 inputs on an adapter with cooperative matrices (and `KILN_COOP` not `0`), a
/// head dim that is a multiple of 16, and a block that fits the adapter. Under
/// [`emulate_cooperative_matrices`] any f16 adapter runs the emulated kernels instead.
pub(crate) fn launch(
    op: &'static str,
    kernel: Kernel,
    q: &GpuStorage,
    p: &AttentionParams,
    rows: usize,
    masked: bool,
    biased: bool,
) -> Result<Option<Launch>> {
    let ctx = q.context();
    let emulate = EMULATE.load(Ordering::SeqCst);
    if q.dtype() != DType::F16 || !(ctx.uses_cooperative_matrices() || emulate) {
        return Ok(None);
    }
    let limits = &ctx.limits;
    let Some(block) = Block::choose(
        kernel,
        p.head_dim as u32,
        limits.max_compute_workgroup_storage_size,
        limits.max_compute_invocations_per_workgroup,
    ) else {
        return Ok(None);
    };
    let key = super::attention::key(kernel, DType::F16, &block.name());
    let pipeline = if emulate {
        ctx.cache.get(&ctx.device, op, &format!("{key}|emulated"), || emulated(&block.source(kernel)))?
    } else {
        ctx.cache.get(&ctx.device, op, &key, || block.source(kernel))?
    };
    super::attention::launch_with(op, pipeline, p, rows, block.rows(), masked, biased).map(Some)
}

static EMULATE: AtomicBool = AtomicBool::new(false);

/// Tests only: runs the tensor-core attention kernels on any adapter with f16 (lavapipe
/// included) by rewriting every cooperative-matrix operation into plain WGSL in which each
/// thread computes whole 16×16 tiles (far slower; `|emulated` in the kernel names), so their
/// indexing, masking and softmax logic can be checked where no tensor cores exist. What it
/// cannot check is the hardware's own behaviour.
#[doc(hidden)]
pub fn emulate_cooperative_matrices(on: bool) {
    EMULATE.store(on, Ordering::SeqCst);
}

/// `src` with its cooperative matrices emulated (see [`emulate_cooperative_matrices`]), on the
/// statement forms this module generates (one per line). As on the hardware, an accumulator
/// (role C) is spread over the 32 threads of its subgroup, 8 elements each (thread l holds row
/// l / 2, columns 8·(l % 2)..), in a private slot; `coopLoadT` / `coopLoad` of an f32 array fill
/// it row- / column-major, `coopStoreT` writes it back row-major after a barrier. An operand
/// (role A or B) is only a description (array, element index, stride, major order):
/// `coopMultiplyAdd` reads its elements from workgroup memory when it runs, which the kernels
/// here allow (nothing they load from changes before the product that uses it). Subgroups are
/// taken as 32 threads, as the kernels assume.
fn emulated(src: &str) -> String {
    let mut accs: Vec<String> = Vec::new();
    let mut arrays: Vec<(String, bool)> = Vec::new();
    let mut alias: Option<usize> = None;
    let mut body = String::new();
    let src = src.replace("enable wgpu_cooperative_matrix;\n", "");
    let slot = |accs: &mut Vec<String>, name: &str| -> usize {
        if let Some(i) = accs.iter().position(|s| s == name) {
            return i;
        }
        accs.push(name.to_string());
        accs.len() - 1
    };
    // `coopLoad[T]<coop_mat16x16<T, R>>(&array[index], stride)`: (array, index, stride, row-major, role C).
    let parse = |call: &str| -> (String, String, String, bool, bool) {
        let amp = call.find('&').expect("a pointer argument");
        let open = amp + call[amp..].find('[').expect("an index");
        let close = call.rfind("], ").expect("a stride");
        let end = call.rfind(')').expect("the call's end");
        (
            call[amp + 1..open].to_string(),
            call[open + 1..close].to_string(),
            call[close + 3..end].to_string(),
            call.starts_with("coopLoadT"),
            call.contains(", C>>"),
        )
    };
    let operand = |call: &str, arrays: &mut Vec<(String, bool)>| -> String {
        let (array, index, stride, row_major, _) = parse(call);
        let id = match arrays.iter().position(|(a, _)| *a == array) {
            Some(i) => i,
            None => {
                arrays.push((array.clone(), src.contains(&format!("var<workgroup> {array}: array<vec4<f16>"))));
                arrays.len() - 1
            }
        };
        format!("vec4<u32>({id}u, {index}, {stride}, {}u)", row_major as u32)
    };
    for line in src.lines() {
        let t = line.trim();
        let indent = &line[..line.len() - line.trim_start().len()];
        let assigned =
            t.trim_start_matches("let ").trim_start_matches("var ").split(" = ").next().unwrap_or("").to_string();
        let out = if t.starts_with("//")
            || t.contains("@builtin(subgroup_id)")
            || t.contains("@builtin(subgroup_invocation_id)")
        {
            String::new()
        } else if t.ends_with("coop_mat16x16<f32, C>();") {
            format!("{indent}acc_zero({}u);\n", slot(&mut accs, &assigned))
        } else if (t.starts_with("let ") || t.starts_with("var ")) && t.contains(" = coopLoad") {
            let rhs = t.split_once(" = ").map(|x| x.1).unwrap_or("").trim_end_matches(';');
            let (array, index, stride, row_major, role_c) = parse(rhs);
            if role_c {
                format!("{indent}acc_load_{array}({}u, {index}, {stride}, {row_major});\n", slot(&mut accs, &assigned))
            } else {
                format!("{indent}let {assigned} = {};\n", operand(rhs, &mut arrays))
            }
        } else if t.contains("= coopMultiplyAdd(") {
            let dest = slot(&mut accs, &assigned);
            let args = &t[t.find("coopMultiplyAdd(").expect("a call") + 16..t.rfind(");").expect("a call")];
            let (a, rest) = args.split_once(", ").expect("three arguments");
            let (b, _) = rest.rsplit_once(", ").expect("three arguments");
            let b = if b.starts_with("coopLoad") { operand(b, &mut arrays) } else { b.to_string() };
            format!("{indent}acc_mma({a}, {b}, {dest}u);\n")
        } else if t.starts_with("let m_ = ") {
            alias = Some(slot(&mut accs, t.trim_start_matches("let m_ = ").trim_end_matches(';')));
            String::new()
        } else if let Some(rest) = t.strip_prefix("coopStoreT(m_, ") {
            let (array, index, stride, _, _) = parse(rest);
            let from = alias.expect("a matrix bound to m_");
            format!("{indent}workgroupBarrier();\n{indent}acc_store_{array}({from}u, {index}, {stride});\n")
        } else if t == ") {" && body.contains("fn main(") && !body.contains("let sid = lid / 32u;") {
            format!("{line}\n    let sid = lid / 32u;\n    let lane = lid % 32u;\n    emu_lane = lane;\n")
        } else {
            format!("{line}\n")
        };
        assert!(!out.contains("coop"), "an unemulated cooperative operation: {t}");
        body += &out;
    }
    let mut out = format!(
        "var<private> accs: array<array<f32, 8>, {}>;
var<private> emu_lane: u32;
fn acc_zero(c: u32) {{
    for (var e = 0u; e < 8u; e++) {{ accs[c][e] = 0.0; }}
}}
fn acc_mma(a: vec4<u32>, b: vec4<u32>, c: u32) {{
    let i = emu_lane / 2u;
    for (var e = 0u; e < 8u; e++) {{
        let j = (emu_lane % 2u) * 8u + e;
        var s = accs[c][e];
        for (var k = 0u; k < 16u; k++) {{ s += operand(a, i, k) * operand(b, k, j); }}
        accs[c][e] = s;
    }}
}}
",
        accs.len().max(1)
    );
    // Element (r, c) of an operand, from its array at its element index and stride (vec4s of
    // halves for the f16 arrays: element (r, c) of a row-major one sits at half
    // 4·index + r·4·stride + c).
    out += "fn operand(d: vec4<u32>, r: u32, c: u32) -> f32 {\n    switch d.x {\n";
    for (id, (array, half)) in arrays.iter().enumerate() {
        let get = if *half {
            format!(
                "let h = d.y * 4u + select(c * d.z * 4u + r, r * d.z * 4u + c, d.w == 1u); return f32({array}[h / 4u][h % 4u]);"
            )
        } else {
            format!("return {array}[d.y + select(c * d.z + r, r * d.z + c, d.w == 1u)];")
        };
        out += &format!("        case {id}u: {{ {get} }}\n");
    }
    out += "        default: { return 0.0; }\n    }\n}\n";
    // Accumulator loads and stores of the f32 arrays they touch.
    let f32_arrays: Vec<&str> = ["ss", "dps", "os"]
        .into_iter()
        .filter(|a| body.contains(&format!("acc_load_{a}(")) || body.contains(&format!("acc_store_{a}(")))
        .collect();
    for array in f32_arrays {
        out += &format!(
            "fn acc_load_{array}(c: u32, idx: u32, st: u32, row_major: bool) {{
    let i = emu_lane / 2u;
    for (var e = 0u; e < 8u; e++) {{
        let j = (emu_lane % 2u) * 8u + e;
        accs[c][e] = {array}[idx + select(j * st + i, i * st + j, row_major)];
    }}
}}
fn acc_store_{array}(c: u32, idx: u32, st: u32) {{
    let i = emu_lane / 2u;
    for (var e = 0u; e < 8u; e++) {{ {array}[idx + i * st + (emu_lane % 2u) * 8u + e] = accs[c][e]; }}
}}
"
        );
    }
    // The helpers name the workgroup arrays declared in `body`: module scope, any order.
    format!("{body}\n{out}")
}

/// Every coop source: each head dim class as adapters with 32 and 48 KiB of workgroup memory
/// would block it, and the emulated forms of the ones the emulation test runs on lavapipe.
pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = Vec::new();
    for d in [16, 32, 48, 64, 80, 128, 256] {
        for kernel in [Kernel::Forward, Kernel::Dq, Kernel::Dkv] {
            for kib in [32, 48] {
                let Some(b) = Block::choose(kernel, d, kib << 10, 1024) else { continue };
                let key = super::attention::key(kernel, DType::F16, &b.name());
                if !all.iter().any(|(k, _)| *k == key) {
                    all.push((key.clone(), b.source(kernel)));
                    if kib == 32 && d <= 64 {
                        all.push((format!("{key}|emulated"), emulated(&b.source(kernel))));
                    }
                }
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_fit_an_h100() {
        for d in (16..=256).step_by(16) {
            for kernel in [Kernel::Forward, Kernel::Dq, Kernel::Dkv] {
                let b = Block::choose(kernel, d, 48 << 10, 1024).unwrap_or_else(|| panic!("d {d} {kernel:?}"));
                assert!(b.workgroup_bytes(kernel) <= 48 << 10);
                assert!(b.bc.is_multiple_of(16));
            }
        }
        // W10's head dim: 64 query rows per forward workgroup.
        assert_eq!(Block::choose(Kernel::Forward, 64, 48 << 10, 1024).map(|b| (b.ns, b.bc)), Some((4, 32)));
        assert_eq!(Block::choose(Kernel::Forward, 72, 48 << 10, 1024), None);
    }
}
