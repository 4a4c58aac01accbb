//! Tensor-core f16 matmul through wgpu's experimental cooperative matrices
//! (`shaders/matmul_coop.wgsl`): f16 operands, f32 accumulation, f16 output, the same contract
//! as the tiled kernel's f16 path. `matmul.rs` offers every call here first; shapes, layouts
//! and adapters this kernel does not cover return `None` and take the tiled kernel.

use crate::storage::GpuStorage;
use kiln_backend::{BackendStorage, DType, Error, Layout, Result};
use std::sync::OnceLock;

const OP: &str = "matmul";

/// The block of one workgroup (bm×bn) and its split into sg_m×sg_n subgroups of 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    bm: u32,
    bn: u32,
    sg_m: u32,
    sg_n: u32,
}

impl Block {
    const fn threads(self) -> u32 {
        self.sg_m * self.sg_n * 32
    }

    /// Accumulator tiles per subgroup along m and n.
    const fn frags(self) -> (u32, u32) {
        (self.bm / self.sg_m / 16, self.bn / self.sg_n / 16)
    }

    /// Halves of the staged a and b slabs (rows padded by 8 halves), f32s of the scratch tiles.
    const fn lens(self) -> (u32, u32, u32) {
        (self.bm * (BK + 8), BK * (self.bn + 8), self.sg_m * self.sg_n * 256)
    }

    const fn workgroup_bytes(self) -> u32 {
        let (a, b, c) = self.lens();
        (a + b) * 2 + c * 4
    }
}

const BK: u32 = 32;
/// 64×64 blocks, 4 subgroups of 2×2 tiles: enough workgroups to fill a large GPU at 1024².
const MEDIUM: Block = Block { bm: 64, bn: 64, sg_m: 2, sg_n: 2 };
/// 128×128 blocks, 8 subgroups of 4×2 tiles: twice the tile loads' reuse.
const LARGE: Block = Block { bm: 128, bn: 128, sg_m: 2, sg_n: 4 };
/// LARGE from this many LARGE blocks on: about one per SM of a large GPU.
const LARGE_MIN_BLOCKS: u64 = 128;
/// Halves per element of the staged slabs as the tile loads see them (f16, vec2 or vec4).
const WIDTHS: [u32; 3] = [1, 2, 4];
/// 4 measured fastest on an H200 (Vulkan, 4096³: 95 TFLOP/s against 93 for 2 and 85 for 1).
const DEFAULT_WIDTH: u32 = 4;

struct Spec {
    block: Block,
    width: u32,
}

impl Spec {
    fn key(&self) -> String {
        let b = self.block;
        format!("matmul|coop|{}x{}/{}x{}|w{}", b.bm, b.bn, b.sg_m, b.sg_n, self.width)
    }

    fn source(&self) -> String {
        let Spec { block, width: w } = *self;
        let threads = block.threads();
        let (fm, fn_) = block.frags();
        let (quads_a, quads_b) = (BK / 4, block.bn / 4);
        let wt = if w == 1 { "f16".to_string() } else { format!("vec{w}<f16>") };
        let lanes = ["x", "y", "z", "w"];
        let (mut setup, mut fetch0, mut fetch1, mut stage) =
            (String::new(), String::new(), String::new(), String::new());
        // Each thread fetches vec4s of 4 neighbouring halves along k (a) or n (b).
        let fetch = |k: &str| {
            let mut s = String::new();
            for r in 0..block.bm * quads_a / threads {
                s += &format!(
                    "        av{r} = vec4<f16>();\n        if a_ok{r} && {k} + aq{r} * 4u < K {{ av{r} = a[a_p{r} + {k} / 4u]; }}\n"
                );
            }
            for r in 0..BK * quads_b / threads {
                s += &format!(
                    "        bv{r} = vec4<f16>();\n        if b_ok{r} && {k} + bk{r} < K {{ bv{r} = b[b_p{r} + {k} * b_sk]; }}\n"
                );
            }
            s
        };
        fetch0 += &fetch("0u");
        fetch1 += &fetch("k1");
        let put = |array: &str, idx: &str, v: &str| -> String {
            (0..4 / w)
                .map(|p| {
                    let part = if w == 4 {
                        v.to_string()
                    } else {
                        let sw: String = lanes[(p * w) as usize..((p + 1) * w) as usize].concat();
                        format!("{v}.{sw}")
                    };
                    format!("        {array}[{idx} + {p}u] = {part};\n")
                })
                .collect()
        };
        for r in 0..block.bm * quads_a / threads {
            let c = format!("(lid + {}u)", r * threads);
            setup += &format!(
                "    let ar{r} = {c} / {quads_a}u;\n    let aq{r} = {c} % {quads_a}u;\n    \
                 let a_ok{r} = m0 + ar{r} < M;\n    let a_p{r} = a_base + (m0 + ar{r}) * a_sm + aq{r};\n    \
                 let as{r} = (ar{r} * PA_H + aq{r} * 4u) / {w}u;\n    var av{r}: vec4<f16>;\n"
            );
            stage += &put("As", &format!("as{r}"), &format!("av{r}"));
        }
        for r in 0..BK * quads_b / threads {
            let c = format!("(lid + {}u)", r * threads);
            setup += &format!(
                "    let bk{r} = {c} / {quads_b}u;\n    let bq{r} = {c} % {quads_b}u;\n    \
                 let b_ok{r} = n0 + bq{r} * 4u < N;\n    let b_p{r} = b_base + bk{r} * b_sk + n0 / 4u + bq{r};\n    \
                 let bs{r} = (bk{r} * PB_H + bq{r} * 4u) / {w}u;\n    var bv{r}: vec4<f16>;\n"
            );
            stage += &put("Bs", &format!("bs{r}"), &format!("bv{r}"));
        }
        let mut acc = String::new();
        let mut mma = String::new();
        let mut store = String::new();
        for i in 0..fm {
            for j in 0..fn_ {
                acc += &format!("    var acc{i}{j} = coop_mat16x16<f32, C>();\n");
                store += &format!(
                    "    {{\n        let cm = acc{i}{j};\n        coopStoreT(cm, &Cs[scratch], pitch);\n        workgroupBarrier();\n        \
                     for (var e = lane; e < 256u; e += 32u) {{\n            \
                     let row = m0 + wm + {}u + e / 16u;\n            let col = n0 + wn + {}u + e % 16u;\n            \
                     if live && row < M && col < N {{ out[out_base + row * N + col] = f16(Cs[scratch + e]); }}\n        }}\n        \
                     workgroupBarrier();\n    }}\n",
                    i * 16,
                    j * 16
                );
            }
        }
        for kk in 0..BK / 16 {
            mma += "        {\n";
            for i in 0..fm {
                mma += &format!(
                    "            let fa{i} = coopLoadT<coop_mat16x16<f16, A>>(&As[((wm + {}u) * PA_H + {}u) / {w}u], PA);\n",
                    i * 16,
                    kk * 16
                );
            }
            for j in 0..fn_ {
                mma += &format!(
                    "            let fb{j} = coopLoadT<coop_mat16x16<f16, B>>(&Bs[({}u * PB_H + wn + {}u) / {w}u], PB);\n",
                    kk * 16,
                    j * 16
                );
            }
            for i in 0..fm {
                for j in 0..fn_ {
                    mma += &format!("            acc{i}{j} = coopMultiplyAdd(fa{i}, fb{j}, acc{i}{j});\n");
                }
            }
            mma += "        }\n";
        }
        let (la, lb, lc) = block.lens();
        let body = crate::shaders::MATMUL_COOP
            .replace("{{BM}}", &block.bm.to_string())
            .replace("{{BN}}", &block.bn.to_string())
            .replace("{{W}}", &w.to_string())
            .replace("{{WT}}", &wt)
            .replace("{{AS_LEN}}", &(la / w).to_string())
            .replace("{{BS_LEN}}", &(lb / w).to_string())
            .replace("{{CS_LEN}}", &lc.to_string())
            .replace("{{WG}}", &threads.to_string())
            .replace("{{SG_N}}", &block.sg_n.to_string())
            .replace("{{FM}}", &fm.to_string())
            .replace("{{FN}}", &fn_.to_string())
            .replace("{{SETUP}}", &setup)
            .replace("{{ACC_DECL}}", &acc)
            .replace("{{FETCH0}}", &fetch0)
            .replace("{{FETCH1}}", &fetch1)
            .replace("{{STAGE}}", &stage)
            .replace("{{MMA}}", &mma)
            .replace("{{STORE}}", &store);
        super::module("enable f16;\nenable wgpu_cooperative_matrix;\n", false, &body)
    }
}

/// `KILN_COOP=0` turns the path off (to compare against the tiled kernel); `KILN_COOP_WIDTH`
/// picks how the tile loads read workgroup memory (1, 2 or 4 halves an element).
fn settings() -> (bool, u32) {
    static S: OnceLock<(bool, u32)> = OnceLock::new();
    *S.get_or_init(|| {
        let on = !std::env::var("KILN_COOP").is_ok_and(|v| v == "0" || v.eq_ignore_ascii_case("off"));
        let width = std::env::var("KILN_COOP_WIDTH")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|w| WIDTHS.contains(w))
            .unwrap_or(DEFAULT_WIDTH);
        (on, width)
    })
}

/// An operand's `[offset, batch stride, row stride]` in vec4<f16> units, if it is row-major
/// along its last dim with every other stride and the offset 4-aligned and indexable in u32.
fn quad_words(l: &Layout, len: usize, bytes: u64) -> Option<[u32; 3]> {
    let (shape, strides) = (l.shape(), l.strides());
    let s = |d: usize| if shape[d] <= 1 { 0 } else { strides[d] };
    let ok = (shape[2] <= 1 || strides[2] == 1)
        && [l.offset(), s(0), s(1)].iter().all(|x| x % 4 == 0)
        && l.storage_extent() <= len
        && bytes.is_multiple_of(8)
        && bytes / 8 <= u32::MAX as u64;
    ok.then(|| [l.offset() / 4, s(0) / 4, s(1) / 4].map(|x| x as u32))
}

/// The cooperative product of `[b, m, k] · [b, k, n]` f16 operands (shapes already checked by
/// the caller), or `None` where this kernel does not apply.
pub(crate) fn matmul(a: &GpuStorage, al: &Layout, b: &GpuStorage, bl: &Layout) -> Result<Option<GpuStorage>> {
    let ctx = a.context();
    let (on, width) = settings();
    if ctx.coop.is_none() || !on || a.dtype() != DType::F16 || b.dtype() != DType::F16 {
        return Ok(None);
    }
    let (batch, m, k, n) = (al.shape()[0], al.shape()[1], al.shape()[2], bl.shape()[2]);
    // Below 16 along any dim most of every tile would be padding.
    if m < 16 || n < 16 || k < 16 || k % 4 != 0 || n % 4 != 0 {
        return Ok(None);
    }
    let (Some(wa), Some(wb)) = (quad_words(al, a.len(), a.buffer().size()), quad_words(bl, b.len(), b.buffer().size()))
    else {
        return Ok(None);
    };
    let blocks = |blk: Block| (m.div_ceil(blk.bm as usize) * n.div_ceil(blk.bn as usize)) as u64 * batch as u64;
    let block = if blocks(LARGE) >= LARGE_MIN_BLOCKS { LARGE } else { MEDIUM };
    if ctx.limits.max_compute_workgroup_storage_size < block.workgroup_bytes() {
        return Ok(None);
    }
    let Some(numel) = batch.checked_mul(m).and_then(|x| x.checked_mul(n)).filter(|&x| x <= u32::MAX as usize) else {
        return Ok(None);
    };
    let (tiles_m, tiles_n) = ((m as u32).div_ceil(block.bm), (n as u32).div_ceil(block.bn));
    let total = u32::try_from(blocks(block))
        .map_err(|_| Error::OutOfMemory { op: OP, msg: format!("{al:?} · {bl:?} needs too many workgroups") })?;
    let out = GpuStorage::alloc(ctx, OP, DType::F16, numel)?;
    let spec = Spec { block, width };
    let kernel = ctx.cache.get(&ctx.device, OP, &spec.key(), || spec.source())?;
    let meta = [m as u32, n as u32, k as u32, tiles_m, tiles_n, total, wa[0], wa[1], wa[2], wb[0], wb[1], wb[2]];
    ctx.dispatch(OP, &kernel, &[a.buffer(), b.buffer(), out.buffer()], &meta, total)?;
    Ok(Some(out))
}

/// Every cooperative source: both block sizes in every staging width.
pub(crate) fn specialisations() -> Vec<(String, String)> {
    [MEDIUM, LARGE]
        .into_iter()
        .flat_map(|block| WIDTHS.map(|width| Spec { block, width }))
        .map(|s| (s.key(), s.source()))
        .collect()
}
