//! Tensor-core f16 matmul through wgpu's experimental cooperative matrices
//! (`shaders/matmul_coop.wgsl`): f16 operands, f32 accumulation, f16 output, the same contract
//! as the tiled kernel's f16 path. `matmul.rs` offers every call here first; shapes, layouts
//! and adapters this kernel does not cover return `None` and take the tiled kernel. The block
//! comes from the autotuner on hardware adapters (every candidate timed once per shape class,
//! like the tiled kernel's tiles), else from a size rule.

use crate::shaders::Template;
use crate::storage::GpuStorage;
use kiln_backend::{BackendStorage, DType, Error, Layout, Result};
use std::sync::OnceLock;

const OP: &str = "matmul";

/// The block of one workgroup (bm×bn), its split into sg_m×sg_n subgroups of 32, the depth bk
/// of the slabs staged in workgroup memory, and whether it double-buffers them (`db`: see
/// `shaders/matmul_coop.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Block {
    bm: u32,
    bn: u32,
    sg_m: u32,
    sg_n: u32,
    bk: u32,
    db: bool,
}

/// How an operand lies in memory. `Rows`: row-major along k for a (`[m, k]`), along n for b
/// (`[k, n]`). `Cols`: the other dim is contiguous (a transposed view, as in backward's
/// `g · bᵀ` and `aᵀ · g`); the slab is staged as stored and the tiles load column-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Major {
    Rows,
    Cols,
}

impl Block {
    const fn threads(self) -> u32 {
        self.sg_m * self.sg_n * 32
    }

    /// Accumulator tiles per subgroup along m and n.
    const fn frags(self) -> (u32, u32) {
        (self.bm / self.sg_m / 16, self.bn / self.sg_n / 16)
    }

    /// Staged rows and their pitch in halves (padded by 8 halves to spread the tile loads over
    /// the banks) of a's slab (`a = true`) or b's.
    const fn slab(self, a: bool, major: Major) -> (u32, u32) {
        let (outer, kdim) = if a { (self.bm, self.bk) } else { (self.bn, self.bk) };
        // a/Rows and b/Cols stage one row per m (n) of bk halves; the other two one row per k.
        match (a, major) {
            (true, Major::Rows) | (false, Major::Cols) => (outer, kdim + 8),
            _ => (kdim, outer + 8),
        }
    }

    /// Halves in one staged slab of a (`a = true`) or b.
    const fn slab_halves(self, a: bool, major: Major) -> u32 {
        let (rows, pitch) = self.slab(a, major);
        rows * pitch
    }

    const fn workgroup_bytes(self, ma: Major, mb: Major) -> u32 {
        let slabs = if self.db { 2 } else { 1 };
        (self.slab_halves(true, ma) + self.slab_halves(false, mb)) * 2 * slabs + self.sg_m * self.sg_n * 256 * 4
    }

    fn name(self) -> String {
        let db = if self.db { "db" } else { "" };
        format!("{}x{}/{}x{}/k{}{db}", self.bm, self.bn, self.sg_m, self.sg_n, self.bk)
    }

    /// `"128x128/2x4/k32"`, `"128x256/2x4/k16db"` double-buffered (the `KILN_COOP_TILE` syntax
    /// and the tuning file's), if every part divides evenly.
    fn parse(s: &str) -> Option<Block> {
        let (s, db) = match s.strip_suffix("db") {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        let nums: Vec<u32> =
            s.split(['x', '/', 'k']).filter(|p| !p.is_empty()).map(|p| p.parse().ok()).collect::<Option<_>>()?;
        let &[bm, bn, sg_m, sg_n, bk] = nums.as_slice() else { return None };
        let b = Block { bm, bn, sg_m, sg_n, bk, db };
        b.valid().then_some(b)
    }

    /// Whether this adapter can run it for operands of these majors.
    fn fits(self, limits: &wgpu::Limits, ma: Major, mb: Major) -> bool {
        self.workgroup_bytes(ma, mb) <= limits.max_compute_workgroup_storage_size
            && self.threads() <= limits.max_compute_invocations_per_workgroup
    }

    /// Every thread fetches whole vec4s of both slabs, and every subgroup owns whole tiles.
    fn valid(self) -> bool {
        let t = self.threads();
        self.sg_m > 0
            && self.sg_n > 0
            && t <= 1024
            && self.bk.is_multiple_of(16)
            && self.bk > 0
            && self.bm.is_multiple_of(self.sg_m * 16)
            && self.bn.is_multiple_of(self.sg_n * 16)
            && (self.bm * self.bk / 4).is_multiple_of(t)
            && (self.bn * self.bk / 4).is_multiple_of(t)
    }
}

/// 64×64 blocks, 4 subgroups of 2×2 tiles: enough workgroups to fill a large GPU at 1024².
const MEDIUM: Block = Block { bm: 64, bn: 64, sg_m: 2, sg_n: 2, bk: 32, db: false };
/// 128×128 blocks, 8 subgroups of 4×2 tiles: twice the tile loads' reuse. H200 (Vulkan), W1h
/// 2048³: 93 TFLOP/s, against 80 for HUGE.
const LARGE: Block = Block { bm: 128, bn: 128, sg_m: 2, sg_n: 4, bk: 32, db: false };
/// 128×256 blocks, 16 subgroups of 2×4 tiles. H200 (Vulkan), W1h 4096³ (one session, every
/// block forced in turn): 155 TFLOP/s, against 96 for LARGE, 77 for 64×256 in 2×4 subgroups;
/// an earlier session: 115 for 128×256 in 2×4 subgroups, 100 for 256×128 in 4×2, 91 for
/// 128×128 in 2×2, 87 for LARGE with 64-deep slabs.
const HUGE: Block = Block { bm: 128, bn: 256, sg_m: 4, sg_n: 4, bk: 32, db: false };
/// Double-buffered blocks: one barrier per slab instead of two, the next slab's stores overlapping
/// the tensor-core work. Not measured yet: the autotuner (or `KILN_COOP_TILE`) decides. Their
/// workgroup memory (two slabs of each operand, plus 1 KiB of f32 scratch per subgroup for the
/// f16 output) is what 48 KiB allows.
/// LARGE double-buffered: 42–48 KiB depending on the operands' majors.
const LARGE_DB: Block = Block { bm: 128, bn: 128, sg_m: 2, sg_n: 4, bk: 32, db: true };
/// HUGE double-buffered in 16-deep slabs: 41–45 KiB where b is row-major; over 48 KiB (so not
/// offered) where b is transposed, whose 256 staged rows each hold 16 halves and 8 of padding.
const HUGE_DB: Block = Block { bm: 128, bn: 256, sg_m: 4, sg_n: 4, bk: 16, db: true };
/// 128×256 and 256×128 blocks of 8 subgroups with 4×4 accumulator tiles each (64×64): each tile
/// load feeds four multiply-adds instead of two or three.
const WIDE_DB: Block = Block { bm: 128, bn: 256, sg_m: 2, sg_n: 4, bk: 16, db: true };
const TALL_DB: Block = Block { bm: 256, bn: 128, sg_m: 4, sg_n: 2, bk: 16, db: true };
/// 128×128 blocks of 4 subgroups with 4×4 tiles each, 32 deep: the classic tensor-core layout
/// (a 64×64 sub-block per subgroup), with two workgroups per SM.
const SQUARE_DB: Block = Block { bm: 128, bn: 128, sg_m: 2, sg_n: 2, bk: 32, db: true };
/// MEDIUM double-buffered, for products with few blocks.
const MEDIUM_DB: Block = Block { bm: 64, bn: 64, sg_m: 2, sg_n: 2, bk: 32, db: true };
/// Every block the autotuner times (those that fit the adapter and operands), in the order
/// `force_coop_candidate` addresses them: the size rule's three, then the double-buffered ones.
const CANDIDATES: [Block; 9] = [MEDIUM, LARGE, HUGE, LARGE_DB, HUGE_DB, WIDE_DB, TALL_DB, SQUARE_DB, MEDIUM_DB];
/// Blocks `KILN_COOP_TILE` is expected to try on a new GPU (all of them are compiled by the
/// shader tests): the runners-up above.
const TRIAL: [Block; 5] = [
    Block { bm: 128, bn: 256, sg_m: 2, sg_n: 4, bk: 32, db: false },
    Block { bm: 128, bn: 128, sg_m: 2, sg_n: 4, bk: 64, db: false },
    Block { bm: 128, bn: 128, sg_m: 2, sg_n: 2, bk: 32, db: false },
    Block { bm: 256, bn: 128, sg_m: 4, sg_n: 2, bk: 32, db: false },
    Block { bm: 64, bn: 256, sg_m: 2, sg_n: 4, bk: 32, db: false },
];
/// HUGE from this many HUGE blocks on (4096² has 512; 2048², where LARGE wins, 128).
const HUGE_MIN_BLOCKS: u64 = 256;
/// Split k when a product has fewer blocks than this: the GPU would idle (a 256×256 weight
/// gradient over 4096 rows is 16 MEDIUM blocks on a 132-SM H200).
const SPLIT_TARGET: u64 = 256;
/// The shortest k range a split gets.
const SPLIT_MIN_CHUNK: usize = 256;
/// LARGE from this many LARGE blocks on: about one per SM of a large GPU.
const LARGE_MIN_BLOCKS: u64 = 128;
/// Halves per element of the staged slabs as the tile loads see them (f16, vec2 or vec4).
const WIDTHS: [u32; 3] = [1, 2, 4];
/// 4 measured fastest on an H200 (Vulkan, 4096³: 95 TFLOP/s against 93 for 2 and 85 for 1).
const DEFAULT_WIDTH: u32 = 4;

struct Spec {
    block: Block,
    width: u32,
    ma: Major,
    mb: Major,
    /// Split k: f32 partial products per k range, summed by `matmul_coop_splitk.wgsl`.
    split: bool,
}

/// One operand's side of the generated code: register fetches from global memory, their
/// stores into the staged slab, and the tile loads from it.
struct Operand {
    /// `a` or `b`.
    name: &'static str,
    /// The staged slab's array.
    slab: &'static str,
    /// Its row pitch constant (halves).
    pitch: &'static str,
    /// Rows of the slab and vec4s per row.
    rows: u32,
    quads: u32,
    /// The dim that runs along a slab row (`M`, `N` or `K`) and its block origin (`m0`, `n0`,
    /// or the slab's k) — and the same for the rows.
    col_dim: &'static str,
    row_dim: &'static str,
    /// Whether k runs along the slab's rows (then rows are offset by the slab's k).
    k_in_rows: bool,
    origin: &'static str,
}

impl Operand {
    fn new(a: bool, block: Block, major: Major) -> Operand {
        let (rows, pitch_h) = block.slab(a, major);
        let quads = (pitch_h - 8) / 4;
        let (name, slab, pitch, origin, outer) =
            if a { ("a", "As", "PA_H", "m0", "M") } else { ("b", "Bs", "PB_H", "n0", "N") };
        // a/Rows and b/Cols: one slab row per m (n), k along the row.
        let k_along_row = matches!((a, major), (true, Major::Rows) | (false, Major::Cols));
        let (col_dim, row_dim) = if k_along_row { ("K", outer) } else { (outer, "K") };
        Operand { name, slab, pitch, rows, quads, col_dim, row_dim, k_in_rows: !k_along_row, origin }
    }

    fn fetches(&self, threads: u32) -> u32 {
        self.rows * self.quads / threads
    }

    /// Per-thread constants: which slab row and quad each of its fetches covers, whether the
    /// non-k coordinate is in range, the k-independent part of its address, its slab index.
    fn setup(&self, threads: u32, w: u32) -> String {
        let (x, q) = (self.name, self.quads);
        let mut s = String::new();
        for r in 0..self.fetches(threads) {
            let c = format!("(lid + {}u)", r * threads);
            s += &format!("    let {x}r{r} = {c} / {q}u;\n    let {x}q{r} = {c} % {q}u;\n");
            // The coordinate that does not move with k, and the address without k's part.
            let (fixed_ok, base) = if self.k_in_rows {
                (
                    format!("{o} + {x}q{r} * 4u < {d}", o = self.origin, d = self.col_dim),
                    format!("{x}_base + {x}r{r} * {x}_row + {o} / 4u + {x}q{r}", o = self.origin),
                )
            } else {
                (
                    format!("{o} + {x}r{r} < {d}", o = self.origin, d = self.row_dim),
                    format!("{x}_base + ({o} + {x}r{r}) * {x}_row + {x}q{r}", o = self.origin),
                )
            };
            s += &format!(
                "    let {x}_ok{r} = {fixed_ok};\n    let {x}_p{r} = {base};\n    \
                 let {x}s{r} = ({x}r{r} * {p} + {x}q{r} * 4u) / {w}u;\n    var {x}v{r}: vec4<f16>;\n",
                p = self.pitch
            );
        }
        s
    }

    /// Register fetches of the slab starting at k = `k`.
    fn fetch(&self, threads: u32, k: &str) -> String {
        let x = self.name;
        let mut s = String::new();
        for r in 0..self.fetches(threads) {
            let (k_ok, addr) = if self.k_in_rows {
                (format!("{k} + {x}r{r} < KE"), format!("{x}_p{r} + {k} * {x}_row"))
            } else {
                (format!("{k} + {x}q{r} * 4u < KE"), format!("{x}_p{r} + {k} / 4u"))
            };
            s += &format!(
                "        {x}v{r} = vec4<f16>();\n        if {x}_ok{r} && {k_ok} {{ {x}v{r} = {x}[{addr}]; }}\n"
            );
        }
        s
    }

    /// Stores of the fetched registers into the slab that starts `off` elements into the array,
    /// as `w`-half elements.
    fn stage(&self, threads: u32, w: u32, off: u32) -> String {
        let (x, lanes) = (self.name, ["x", "y", "z", "w"]);
        let off = if off == 0 { String::new() } else { format!("{off}u + ") };
        let mut s = String::new();
        for r in 0..self.fetches(threads) {
            for p in 0..4 / w {
                let part = if w == 4 {
                    format!("{x}v{r}")
                } else {
                    format!("{x}v{r}.{}", lanes[(p * w) as usize..((p + 1) * w) as usize].concat())
                };
                s += &format!("        {}[{off}{x}s{r} + {p}u] = {part};\n", self.slab);
            }
        }
        s
    }

    /// The tile load at slab coordinates (`outer`: the m or n offset; `k`) of the slab that
    /// starts `off` elements into the array.
    fn load(&self, role: &str, outer: &str, k: u32, w: u32, off: u32) -> String {
        let k_along_row = !self.k_in_rows;
        let idx = if k_along_row {
            format!("(({outer}) * {p} + {k}u) / {w}u", p = self.pitch)
        } else {
            format!("({k}u * {p} + {outer}) / {w}u", p = self.pitch)
        };
        let idx = if off == 0 { idx } else { format!("{off}u + {idx}") };
        // A tile whose rows are the slab's rows loads row-major; otherwise it is stored
        // transposed and loads column-major.
        let f = if (role == "A") == k_along_row { "coopLoadT" } else { "coopLoad" };
        let stride = if self.name == "a" { "PA" } else { "PB" };
        format!("{f}<coop_mat16x16<f16, {role}>>(&{}[{idx}], {stride})", self.slab)
    }
}

impl Spec {
    fn key(&self) -> String {
        let m = |x: Major| if x == Major::Rows { "n" } else { "t" };
        let split = if self.split { "|split" } else { "" };
        format!("matmul|coop|{}|w{}|{}{}{split}", self.block.name(), self.width, m(self.ma), m(self.mb))
    }

    fn source(&self) -> String {
        let Spec { block, width: w, ma, mb, split } = *self;
        let threads = block.threads();
        let (fm, fn_) = block.frags();
        let wt = if w == 1 { "f16".to_string() } else { format!("vec{w}<f16>") };
        let (a, b) = (Operand::new(true, block, ma), Operand::new(false, block, mb));
        let setup = a.setup(threads, w) + &b.setup(threads, w);
        let fetch = |k: &str| a.fetch(threads, k) + &b.fetch(threads, k);
        // Slab `buf`'s offsets into As and Bs, in staging elements.
        let offs = |buf: u32| (buf * block.slab_halves(true, ma) / w, buf * block.slab_halves(false, mb) / w);
        let stage = |buf: u32| {
            let (oa, ob) = offs(buf);
            a.stage(threads, w, oa) + &b.stage(threads, w, ob)
        };
        let mut acc = String::new();
        let mut store = String::new();
        for i in 0..fm {
            for j in 0..fn_ {
                acc += &format!("    var acc{i}{j} = coop_mat16x16<f32, C>();\n");
                store += &format!(
                    "    {{\n        let cm = acc{i}{j};\n        coopStoreT(cm, &Cs[scratch], pitch);\n        workgroupBarrier();\n        \
                     for (var e = lane; e < 256u; e += 32u) {{\n            \
                     let row = m0 + wm + {}u + e / 16u;\n            let col = n0 + wn + {}u + e % 16u;\n            \
                     if live && row < M && col < N {{ out[out_base + row * N + col] = {}; }}\n        }}\n        \
                     workgroupBarrier();\n    }}\n",
                    i * 16,
                    j * 16,
                    if split { "Cs[scratch + e]" } else { "f16(Cs[scratch + e])" }
                );
            }
        }
        // The tensor-core work on slab `buf`.
        let mma = |buf: u32| {
            let (oa, ob) = offs(buf);
            let mut mma = String::new();
            for kk in 0..block.bk / 16 {
                mma += "        {\n";
                for i in 0..fm {
                    mma += &format!(
                        "            let fa{i} = {};\n",
                        a.load("A", &format!("wm + {}u", i * 16), kk * 16, w, oa)
                    );
                }
                for j in 0..fn_ {
                    mma += &format!(
                        "            let fb{j} = {};\n",
                        b.load("B", &format!("wn + {}u", j * 16), kk * 16, w, ob)
                    );
                }
                for i in 0..fm {
                    for j in 0..fn_ {
                        mma += &format!("            acc{i}{j} = coopMultiplyAdd(fa{i}, fb{j}, acc{i}{j});\n");
                    }
                }
                mma += "        }\n";
            }
            mma
        };
        let main = if block.db {
            format!(
                "{}{}    workgroupBarrier();\n    for (var k0 = KB; k0 < KE; k0 += 2u * BK) {{\n        let k1 = k0 + BK;\n\
                 {}{}{}        workgroupBarrier();\n        let k2 = k1 + BK;\n{}{}{}        workgroupBarrier();\n    }}",
                fetch("KB"),
                stage(0),
                fetch("k1"),
                mma(0),
                stage(1),
                fetch("k2"),
                mma(1),
                stage(0)
            )
        } else {
            format!(
                "{}    for (var k0 = KB; k0 < KE; k0 += BK) {{\n{}        workgroupBarrier();\n        let k1 = k0 + BK;\n\
                 {}{}        workgroupBarrier();\n    }}",
                fetch("KB"),
                stage(0),
                fetch("k1"),
                mma(0)
            )
        };
        let (ra, pa) = block.slab(true, ma);
        let (rb, pb) = block.slab(false, mb);
        let slabs = if block.db { 2 } else { 1 };
        let body = Template::new(crate::shaders::MATMUL_COOP)
            .set("BM", block.bm.to_string())
            .set("BN", block.bn.to_string())
            .set("BK", block.bk.to_string())
            .set("PA_H", pa.to_string())
            .set("PB_H", pb.to_string())
            .set("W", w.to_string())
            .set("WT", wt)
            .set("AS_LEN", (slabs * ra * pa / w).to_string())
            .set("BS_LEN", (slabs * rb * pb / w).to_string())
            .set("CS_LEN", (block.sg_m * block.sg_n * 256).to_string())
            .set("WG", threads.to_string())
            .set("OUT_T", if split { "f32" } else { "f16" })
            .set(
                "K_RANGE",
                if split {
                    "    let ba = bi / info[12];\n    let KB = (bi % info[12]) * info[13];\n    let KE = min(K, KB + info[13]);\n"
                } else {
                    "    let ba = bi;\n    let KB = 0u;\n    let KE = K;\n"
                },
            )
            .set("SG_N", block.sg_n.to_string())
            .set("FM", fm.to_string())
            .set("FN", fn_.to_string())
            .set("SETUP", setup)
            .set("ACC_DECL", acc)
            .set("MAIN", main)
            .set("STORE", store)
            .render();
        super::module("enable f16;\nenable wgpu_cooperative_matrix;\n", false, &body)
    }
}

/// `KILN_COOP=0` turns the path off (to compare against the tiled kernel); `KILN_COOP_WIDTH`
/// picks how the tile loads read workgroup memory (1, 2 or 4 halves an element);
/// `KILN_COOP_TILE=128x128/2x4/k32` (`..db`: double-buffered) forces one block for every
/// product, over the autotuner;
/// `KILN_COOP_SPLITK=0` turns split k off.
struct Settings {
    on: bool,
    width: u32,
    tile: Option<Block>,
    split_k: bool,
}

fn settings() -> &'static Settings {
    static S: OnceLock<Settings> = OnceLock::new();
    S.get_or_init(|| {
        let on = !std::env::var("KILN_COOP").is_ok_and(|v| v == "0" || v.eq_ignore_ascii_case("off"));
        let width = std::env::var("KILN_COOP_WIDTH")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|w| WIDTHS.contains(w))
            .unwrap_or(DEFAULT_WIDTH);
        let tile = std::env::var("KILN_COOP_TILE").ok().and_then(|v| {
            let b = Block::parse(&v);
            if b.is_none() {
                eprintln!("kiln: KILN_COOP_TILE={v:?} is not a valid block (e.g. 128x128/2x4/k32); ignored");
            }
            b
        });
        let split_k = !std::env::var("KILN_COOP_SPLITK").is_ok_and(|v| v == "0" || v.eq_ignore_ascii_case("off"));
        Settings { on, width, tile, split_k }
    })
}

impl crate::GpuContext {
    /// Whether Kiln's tensor-core kernels run on this device: the adapter has cooperative
    /// matrices (see `CoopConfig`) and `KILN_COOP` is not `0`.
    pub fn uses_cooperative_matrices(&self) -> bool {
        self.coop.is_some() && settings().on
    }
}

/// An operand's major order and `[offset, batch stride, row stride]` in vec4<f16> units, if one
/// of its two matrix dims is contiguous, its extent a multiple of 4, and every other stride and
/// the offset 4-aligned and indexable in u32. Dim 2 contiguous is `Rows`, dim 1 `Cols`.
fn quad_words(l: &Layout, len: usize, bytes: u64) -> Option<(Major, [u32; 3])> {
    let (shape, strides) = (l.shape(), l.strides());
    let s = |d: usize| if shape[d] <= 1 { 0 } else { strides[d] };
    let fits = l.storage_extent() <= len && bytes.is_multiple_of(8) && bytes / 8 <= u32::MAX as u64;
    let try_major = |inner: usize, row: usize, major: Major| {
        let ok =
            s(inner) == 1 && shape[inner].is_multiple_of(4) && [l.offset(), s(0), s(row)].iter().all(|x| x % 4 == 0);
        ok.then(|| (major, [l.offset() / 4, s(0) / 4, s(row) / 4].map(|x| x as u32)))
    };
    if !fits {
        return None;
    }
    try_major(2, 1, Major::Rows).or_else(|| try_major(1, 2, Major::Cols))
}

/// The cooperative product of `[b, m, k] · [b, k, n]` f16 operands (shapes already checked by
/// the caller), or `None` where this kernel does not apply.
pub(crate) fn matmul(a: &GpuStorage, al: &Layout, b: &GpuStorage, bl: &Layout) -> Result<Option<GpuStorage>> {
    let ctx = a.context();
    let set = settings();
    if ctx.coop.is_none() || !set.on || a.dtype() != DType::F16 || b.dtype() != DType::F16 {
        return Ok(None);
    }
    let (batch, m, k, n) = (al.shape()[0], al.shape()[1], al.shape()[2], bl.shape()[2]);
    // Below 16 along any dim most of every tile would be padding.
    if m < 16 || n < 16 || k < 16 {
        return Ok(None);
    }
    let (Some((ma, wa)), Some((mb, wb))) =
        (quad_words(al, a.len(), a.byte_size()), quad_words(bl, b.len(), b.byte_size()))
    else {
        return Ok(None);
    };
    let Some(numel) = batch.checked_mul(m).and_then(|x| x.checked_mul(n)).filter(|&x| x <= u32::MAX as usize) else {
        return Ok(None);
    };
    let product = Product { a, b, ma, mb, wa, wb, batch, m, k, n, numel };
    let fits = |blk: Block| blk.fits(&ctx.limits, ma, mb);
    let rule = product.rule_block();
    // The block: forced by a test or the bench, forced by `KILN_COOP_TILE`, the size rule's
    // where nothing is tuned, else (`None`) the autotuner's.
    let chosen = if let Some(i) = ctx.tuner.forced_coop() {
        // A forced block that cannot run these operands here leaves the choice to the rule.
        Some(CANDIDATES.get(i).copied().filter(|&blk| fits(blk)).unwrap_or(rule))
    } else if set.tile.is_some() {
        set.tile
    } else if !ctx.tuner.enabled {
        Some(rule)
    } else {
        None
    };
    let runnable = match chosen {
        Some(block) => fits(block),
        None => CANDIDATES.into_iter().any(fits),
    };
    if !runnable {
        return Ok(None);
    }
    let out = GpuStorage::alloc(ctx, OP, DType::F16, numel)?;
    let block = match chosen {
        Some(block) => block,
        None => product.tuned(&out, rule)?,
    };
    product.run(block, &out)?;
    Ok(Some(out))
}

/// A cooperative product whose operands passed `quad_words`, ready to record in any block.
struct Product<'a> {
    a: &'a GpuStorage,
    b: &'a GpuStorage,
    ma: Major,
    mb: Major,
    /// `[offset, batch stride, row stride]` of each operand in vec4<f16> units.
    wa: [u32; 3],
    wb: [u32; 3],
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    numel: usize,
}

impl Product<'_> {
    fn blocks(&self, blk: Block) -> u64 {
        (self.m.div_ceil(blk.bm as usize) * self.n.div_ceil(blk.bn as usize)) as u64 * self.batch as u64
    }

    /// The size rule: HUGE for large outputs, LARGE for mid-sized ones, else MEDIUM.
    fn rule_block(&self) -> Block {
        if self.blocks(HUGE) >= HUGE_MIN_BLOCKS {
            HUGE
        } else if self.blocks(LARGE) >= LARGE_MIN_BLOCKS {
            LARGE
        } else {
            MEDIUM
        }
    }

    /// The autotuner's block for this product's shape class: stored, or found now by timing
    /// every candidate that fits (each split along k as the rule splits it) into `out`.
    fn tuned(&self, out: &GpuStorage, rule: Block) -> Result<Block> {
        use crate::autotune::bucket;
        let ctx = self.a.context();
        let major = |x: Major| if x == Major::Rows { "n" } else { "t" };
        let class = format!(
            "f16|coop|{}{}|b{}|m{}|n{}|k{}",
            major(self.ma),
            major(self.mb),
            bucket(self.batch),
            bucket(self.m),
            bucket(self.n),
            bucket(self.k)
        );
        let usable: Vec<Block> = CANDIDATES.into_iter().filter(|b| b.fits(&ctx.limits, self.ma, self.mb)).collect();
        if let Some(name) = ctx.tuner.lookup(&class)
            && let Some(block) = Block::parse(&name).filter(|b| usable.contains(b))
        {
            return Ok(block);
        }
        let mut best = (f64::INFINITY, usable.first().copied().unwrap_or(rule));
        for (block, secs) in crate::autotune::time_candidates(&usable, |b| self.run(b, out), || ctx.sync()) {
            if ctx.tuner.log {
                let (batch, m, n, k) = (self.batch, self.m, self.n, self.k);
                let flops = 2.0 * (batch * m * n * k) as f64;
                eprintln!(
                    "autotune class={class} batch={batch} m={m} n={n} k={k} choice={} us={:.2} tflops={:.2}",
                    block.name(),
                    secs * 1e6,
                    flops / secs / 1e12
                );
            }
            if secs < best.0 {
                best = (secs, block);
            }
        }
        if best.0.is_finite() {
            ctx.tuner.store(&class, &best.1.name());
        }
        Ok(best.1)
    }

    /// Records the product in `block` into `out`: one dispatch, or (split k) the partial
    /// products into a pooled f32 buffer and their sum.
    fn run(&self, block: Block, out: &GpuStorage) -> Result<()> {
        let ctx = self.a.context();
        let set = settings();
        let (m, n, k, numel) = (self.m, self.n, self.k, self.numel);
        let (tiles_m, tiles_n) = ((m as u32).div_ceil(block.bm), (n as u32).div_ceil(block.bn));
        let tiles = self.blocks(block);
        let (splits, chunk) = split_k(set.split_k, tiles, k, block.bk as usize);
        let part_bytes = (numel as u64).saturating_mul(splits as u64).saturating_mul(4);
        let (splits, chunk) = if splits > 1
            && numel.checked_mul(splits).is_some_and(|x| x <= u32::MAX as usize)
            // As the pool rounds it: the partial buffer must fit one binding.
            && crate::pool::size_class(part_bytes) <= ctx.limits.max_storage_buffer_binding_size
        {
            (splits, chunk)
        } else {
            (1, k)
        };
        let total = u32::try_from(tiles * splits as u64).map_err(|_| Error::OutOfMemory {
            op: OP,
            msg: format!("[{}, {m}, {k}] · [{}, {k}, {n}] needs too many workgroups", self.batch, self.batch),
        })?;
        let spec = Spec { block, width: set.width, ma: self.ma, mb: self.mb, split: splits > 1 };
        // Built without naga's index clamps and loop counters (see `KernelCache::get_trusted`):
        // slab indices are a thread's or subgroup's own offset plus constants within the slab.
        let kernel = if super::matmul::matmul_checks(ctx) {
            ctx.cache.get(&ctx.device, OP, &(spec.key() + "|checked"), || spec.source())?
        } else {
            ctx.cache.get_trusted(&ctx.device, OP, &spec.key(), || spec.source())?
        };
        let (wa, wb) = (self.wa, self.wb);
        let mut meta =
            vec![m as u32, n as u32, k as u32, tiles_m, tiles_n, total, wa[0], wa[1], wa[2], wb[0], wb[1], wb[2]];
        if splits == 1 {
            return ctx.dispatch(OP, &kernel, &[self.a.binding(), self.b.binding(), out.binding()], &meta, total);
        }
        meta.extend([splits as u32, chunk as u32]);
        let part = GpuStorage::alloc(ctx, OP, DType::F32, numel * splits)?;
        ctx.dispatch(OP, &kernel, &[self.a.binding(), self.b.binding(), part.binding()], &meta, total)?;
        let sum = ctx.cache.get(&ctx.device, OP, SPLIT_SUM_KEY, split_sum_source)?;
        let meta = [numel as u32, splits as u32, (m * n) as u32];
        ctx.dispatch(OP, &sum, &[part.binding(), out.binding()], &meta, (numel as u32).div_ceil(256))
    }
}

/// The number of blocks `force_coop_candidate` chooses from.
pub(crate) fn candidate_count() -> usize {
    CANDIDATES.len()
}

/// How many k ranges (and how long each, a multiple of `bk`) a product of `tiles` blocks gets:
/// enough ranges to bring the workgroups near `SPLIT_TARGET`, none shorter than
/// `SPLIT_MIN_CHUNK`. `(1, k)` means no split.
fn split_k(on: bool, tiles: u64, k: usize, bk: usize) -> (usize, usize) {
    if !on || tiles == 0 || tiles >= SPLIT_TARGET || k < 2 * SPLIT_MIN_CHUNK {
        return (1, k);
    }
    let want = ((SPLIT_TARGET / tiles) as usize).min(k / SPLIT_MIN_CHUNK);
    if want < 2 {
        return (1, k);
    }
    let chunk = k.div_ceil(want).next_multiple_of(bk);
    (k.div_ceil(chunk), chunk)
}

const SPLIT_SUM_KEY: &str = "matmul|coop|splitk-sum";

fn split_sum_source() -> String {
    super::module("enable f16;\n", false, crate::shaders::MATMUL_COOP_SPLITK)
}

/// Every cooperative source: the size rule's blocks in every staging width and operand order,
/// whole and split; the trial blocks in the default width; the double-buffered candidates in
/// the default width, whole and split.
pub(crate) fn specialisations() -> Vec<(String, String)> {
    let orders = [
        (Major::Rows, Major::Rows),
        (Major::Rows, Major::Cols),
        (Major::Cols, Major::Rows),
        (Major::Cols, Major::Cols),
    ];
    let mut specs = Vec::new();
    for block in [MEDIUM, LARGE, HUGE] {
        for width in WIDTHS {
            for (ma, mb) in orders {
                specs.push(Spec { block, width, ma, mb, split: false });
            }
        }
    }
    for block in TRIAL {
        for (ma, mb) in orders {
            specs.push(Spec { block, width: DEFAULT_WIDTH, ma, mb, split: false });
        }
    }
    for block in [MEDIUM, LARGE, HUGE] {
        for (ma, mb) in orders {
            specs.push(Spec { block, width: DEFAULT_WIDTH, ma, mb, split: true });
        }
    }
    // The double-buffered candidates, whole and split, where they fit 48 KiB (an H100's).
    for block in CANDIDATES.into_iter().filter(|b| b.db) {
        for (ma, mb) in orders {
            if block.workgroup_bytes(ma, mb) <= 48 * 1024 {
                specs.extend([false, true].map(|split| Spec { block, width: DEFAULT_WIDTH, ma, mb, split }));
            }
        }
    }
    let mut all: Vec<(String, String)> = specs.into_iter().map(|s| (s.key(), s.source())).collect();
    all.push((SPLIT_SUM_KEY.to_string(), split_sum_source()));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_parse_and_divide_evenly() {
        for b in CANDIDATES.iter().chain(TRIAL.iter()) {
            assert!(b.valid(), "{b:?}");
            assert_eq!(Block::parse(&b.name()), Some(*b));
            for ma in [Major::Rows, Major::Cols] {
                for mb in [Major::Rows, Major::Cols] {
                    // HUGE_DB alone needs more than 48 KiB where b is transposed.
                    let over = *b == HUGE_DB && mb == Major::Cols;
                    assert_eq!(b.workgroup_bytes(ma, mb) > 48 * 1024, over, "{b:?} {ma:?} {mb:?}");
                }
            }
        }
        assert_eq!(Block::parse("128x256/4x4/k16db"), Some(HUGE_DB));
        assert_eq!(LARGE_DB.workgroup_bytes(Major::Rows, Major::Cols), 48 * 1024);
        assert_eq!(Block::parse("128x128/2x4/k32d"), None);
        assert_eq!(Block::parse("db"), None);
        assert_eq!(Block::parse("128x128/2x4"), None);
        // A W6 weight gradient: 16 MEDIUM blocks over k = 4096 → 16 ranges of 256.
        assert_eq!(split_k(true, 16, 4096, 32), (16, 256));
        assert_eq!(split_k(false, 16, 4096, 32), (1, 4096));
        assert_eq!(split_k(true, 300, 4096, 32), (1, 4096));
        assert_eq!(split_k(true, 16, 300, 32), (1, 300));
        // Ragged k: ranges are whole slabs, the last one shorter.
        let (s, c) = split_k(true, 1, 1000, 32);
        assert!(s >= 2 && c % 32 == 0 && (s - 1) * c < 1000 && s * c >= 1000, "{s} {c}");
        assert_eq!(Block::parse("100x128/2x4/k32"), None);
    }
}
