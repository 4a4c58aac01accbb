//! Batched strided matmul, `[b, m, k] · [b, k, n] → [b, m, n]` (contiguous). Operands are read in
//! place through their strides: transposed views, a batch stride of 0 (broadcast) and offsets
//! cost no copy. Two WGSL templates: a register-tiled kernel (`shaders/matmul.wgsl`, operand
//! fetches from `shaders/matmul_load*.wgsl`) specialised by dtype, tile size and each operand's
//! layout class, and a split-k dot-product kernel for matrix-vector-like shapes
//! (`shaders/matmul_small.wgsl`).

use super::{compute_type, enables, gpu_size, load, module, storage_type, store};
use crate::storage::GpuStorage;
use kiln_backend::{BackendStorage, DType, Error, Layout, Result};

const OP: &str = "matmul";

/// The output tile of one workgroup (tm×tn), how deep along k it stages the operands (tk), and
/// the block of that tile each thread accumulates (rm×rn, multiples of 4: read as vec4s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tile {
    tm: u32,
    tn: u32,
    tk: u32,
    rm: u32,
    rn: u32,
}

impl Tile {
    fn name(self) -> String {
        format!("{}x{}x{}/{}x{}", self.tm, self.tn, self.tk, self.rm, self.rn)
    }

    const fn threads(self) -> u32 {
        (self.tm / self.rm) * (self.tn / self.rn)
    }

    /// Bytes of workgroup memory: both staged slabs, rows padded by one vec4 of f32 or i32.
    const fn workgroup_bytes(self) -> u32 {
        self.tk * (self.tm / 4 + 1 + self.tn / 4 + 1) * 16
    }
}

/// 64×64 tiles, 4×4 per thread: enough workgroups to fill a large GPU from about 1024² outputs.
const MEDIUM: Tile = Tile { tm: 64, tn: 64, tk: 16, rm: 4, rn: 4 };
/// 128×128 tiles, 8×8 per thread: twice the multiply-adds per workgroup-memory read. Measured on
/// an H200 (Vulkan, f32): 30–31 TFLOP/s at 4096³ in every layout against 19–21 for MEDIUM, 28
/// against 21 at 2048³, but 13–17 against 17–19 at 1536³, where too few workgroups fill the GPU.
const LARGE: Tile = Tile { tm: 128, tn: 128, tk: 16, rm: 8, rn: 8 };
/// 32×32 tiles, 4×4 per thread (64 threads): four times the workgroups of MEDIUM, for shapes
/// too small to fill a GPU with 64×64 tiles. Offered to the autotuner only.
const SMALL: Tile = Tile { tm: 32, tn: 32, tk: 16, rm: 4, rn: 4 };
/// 64×128 and 128×64 tiles, 4×8 (8×4) per thread: between MEDIUM and LARGE. Autotuner only.
const WIDE: Tile = Tile { tm: 64, tn: 128, tk: 16, rm: 4, rn: 8 };
const TALL: Tile = Tile { tm: 128, tn: 64, tk: 16, rm: 8, rn: 4 };

/// Every tile the autotuner may pick for a float matmul, in the order tests address them.
const CANDIDATES: [Tile; 5] = [SMALL, MEDIUM, WIDE, TALL, LARGE];

/// GPUs take LARGE from this many LARGE tiles on (2048² outputs).
const LARGE_MIN_TILES: u64 = 256;
/// CPU adapters (lavapipe) take it as soon as both cores get work: there every workgroup-memory
/// read is a loop over SIMD lanes and costs more than the arithmetic, so LARGE is about twice as
/// fast.
const LARGE_MIN_TILES_CPU: u64 = 4;

/// Shapes with this few rows or columns take the dot-product kernel: a 64-wide tile would be
/// mostly padding.
const SMALL_MN: usize = 4;

const DTYPES: [DType; 4] = [DType::F32, DType::F16, DType::I32, DType::U32];

/// How the tiled kernel fetches one operand: its layout class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fetch {
    /// Element by element, neighbouring threads on neighbouring k.
    K,
    /// Element by element, neighbouring threads on neighbouring m (a) or n (b).
    X,
    /// vec4s along m (n), whose stride is 1. (vec4s along a stride-1 k, fetched as 4×4 blocks
    /// and transposed in registers, measured slower than `K` on an H200: they are not offered.)
    X4,
}

const FETCHES: [Fetch; 3] = [Fetch::K, Fetch::X, Fetch::X4];

enum Spec {
    Tiled { dtype: DType, tile: Tile, a: Fetch, b: Fetch },
    Small { dtype: DType },
}

impl Spec {
    fn key(&self) -> String {
        match self {
            Spec::Tiled { dtype, tile: t, a, b } => {
                format!("matmul|{}x{}x{}/{}x{}|{dtype}|a{a:?}|b{b:?}", t.tm, t.tn, t.tk, t.rm, t.rn)
            }
            Spec::Small { dtype } => format!("matmul|small|{dtype}"),
        }
    }

    fn source(&self) -> Result<String> {
        match *self {
            Spec::Tiled { dtype, tile, a, b } => tiled_source(dtype, tile, a, b),
            Spec::Small { dtype } => small_source(dtype),
        }
    }
}

fn bindings(dtype: DType) -> Result<String> {
    let t = storage_type(OP, dtype)?;
    Ok(format!(
        "@group(0) @binding(1) var<storage, read> a: array<{t}>;\n\
         @group(0) @binding(2) var<storage, read> b: array<{t}>;\n\
         @group(0) @binding(3) var<storage, read_write> out: array<{t}>;\n"
    ))
}

/// `acc + x * y` for vectors of the compute type (a fused multiply-add for floats).
fn mac(dtype: DType, acc: &str, x: &str, y: &str) -> String {
    if dtype.is_float() { format!("fma({x}, {y}, {acc})") } else { format!("{acc} + {x} * {y}") }
}

/// The generated WGSL that moves both operands' tk-deep slabs into workgroup memory.
#[derive(Default)]
struct Staging {
    decls: String,
    setup: String,
    stage: String,
}

/// Staging code for operand `name` (`a` or `b`), whose tile is `len` long along m (n). Each
/// thread moves `quads·tk / threads` quads (4 neighbours along m or n at one k) per slab.
fn stage(dtype: DType, tile: Tile, name: &str, len: u32, fetch: Fetch, out: &mut Staging) -> Result<()> {
    let is_a = name == "a";
    let (array, pitch, binding, origin) = if is_a { ("As", "PA", 1, "m0") } else { ("Bs", "PB", 2, "n0") };
    // a: [off, sb, sm, sk] at info[6..10]; b: [off, sb, sk, sn] at info[10..14].
    let (off, sb, sx, sk) = if is_a { (6, 7, "a_sm", "a_sk") } else { (10, 11, "b_sn", "b_sk") };
    let template = if fetch == Fetch::X4 { crate::shaders::MATMUL_LOAD_VEC4 } else { crate::shaders::MATMUL_LOAD };
    out.decls += &template
        .replace("{{X}}", name)
        .replace("{{BINDING}}", &binding.to_string())
        .replace("{{T}}", storage_type(OP, dtype)?)
        .replace("{{C}}", compute_type(dtype))
        .replace("{{LIMIT}}", if is_a { "info[0]" } else { "info[1]" });
    out.decls += "\n";
    let (threads, quads) = (tile.threads(), len / 4);
    for r in 0..quads * tile.tk / threads {
        let q = format!("(lid + {}u)", r * threads);
        let (k, x, p) = (format!("{name}k{r}"), format!("{name}x{r}"), format!("{name}p{r}"));
        let (kq, xq) = if fetch == Fetch::K {
            (format!("{q} % TK"), format!("{q} / TK"))
        } else {
            (format!("{q} / {quads}u"), format!("{q} % {quads}u"))
        };
        out.setup += &format!(
            "    let {k} = {kq};\n    let {x}q = {xq};\n    let {x} = {origin} + {x}q * 4u;\n    \
             var {p} = info[{off}] + bi * info[{sb}] + {x} * {sx} + {k} * {sk};\n"
        );
        let quad = if fetch == Fetch::X4 {
            format!("{name}_quad_x({p}, {x}, k0 + {k} < K)")
        } else {
            format!("{name}_quad({p}, {sx}, {x}, k0 + {k} < K)")
        };
        out.stage += &format!("        {array}[{k} * {pitch} + {x}q] = {quad};\n        {p} += TK * {sk};\n");
    }
    Ok(())
}

fn tiled_source(dtype: DType, tile: Tile, fa: Fetch, fb: Fetch) -> Result<String> {
    let Tile { tm, tn, tk, rm, rn } = tile;
    let c = compute_type(dtype);
    let mut st = Staging::default();
    stage(dtype, tile, "a", tm, fa, &mut st)?;
    stage(dtype, tile, "b", tn, fb, &mut st)?;
    // Threads along m and n; a thread's row quads sit TY quads apart, its column quads TX apart,
    // so that neighbouring threads read neighbouring vec4s of workgroup memory.
    let (ty_n, tx_n) = (tm / rm, tn / rn);
    let mut acc = String::new();
    let mut macs = String::new();
    let mut stores = String::new();
    for i in 0..rm / 4 {
        macs += &format!("            let a{i} = As[kk * PA + ty + {}u];\n", i * ty_n);
    }
    for j in 0..rn / 4 {
        macs += &format!("            let b{j} = Bs[kk * PB + tx + {}u];\n", j * tx_n);
    }
    let lanes = ["x", "y", "z", "w"];
    for i in 0..rm / 4 {
        for (l, lane) in lanes.iter().enumerate() {
            stores += &format!(
                "    {{\n        let row = m0 + (ty + {}u) * 4u + {l}u;\n        if row < M {{\n            let base = out_base + row * N;\n",
                i * ty_n
            );
            for j in 0..rn / 4 {
                let v = format!("acc{i}{lane}{j}");
                acc += &format!("    var {v} = vec4<{c}>(0);\n");
                macs += &format!(
                    "            {v} = {};\n",
                    mac(dtype, &v, &format!("vec4<{c}>(a{i}.{lane})"), &format!("b{j}"))
                );
                stores += &format!("            let col{j} = n0 + (tx + {}u) * 4u;\n", j * tx_n);
                for (l2, lane2) in lanes.iter().enumerate() {
                    stores += &format!(
                        "            if col{j} + {l2}u < N {{ out[base + col{j} + {l2}u] = {}; }}\n",
                        store(dtype, &format!("{v}.{lane2}"))
                    );
                }
            }
            stores += "        }\n    }\n";
        }
    }
    let body = crate::shaders::MATMUL
        .replace("{{OPERANDS}}", &st.decls)
        .replace("{{T}}", storage_type(OP, dtype)?)
        .replace("{{C}}", c)
        .replace("{{PA}}", &(tm / 4 + 1).to_string())
        .replace("{{PB}}", &(tn / 4 + 1).to_string())
        .replace("{{TK}}", &tk.to_string())
        .replace("{{AS_LEN}}", &(tk * (tm / 4 + 1)).to_string())
        .replace("{{BS_LEN}}", &(tk * (tn / 4 + 1)).to_string())
        .replace("{{WG}}", &tile.threads().to_string())
        .replace("{{TM}}", &tm.to_string())
        .replace("{{TN}}", &tn.to_string())
        .replace("{{TX}}", &tx_n.to_string())
        .replace("{{SETUP}}", &st.setup)
        .replace("{{ACC_DECL}}", &acc)
        .replace("{{STAGE}}", &st.stage)
        .replace("{{MAC}}", &macs)
        .replace("{{STORE}}", &stores);
    Ok(module(enables(&[dtype]), false, &body))
}

fn small_source(dtype: DType) -> Result<String> {
    let body = crate::shaders::MATMUL_SMALL
        .replace("{{BINDINGS}}", &bindings(dtype)?)
        .replace("{{C}}", compute_type(dtype))
        .replace("{{LOAD_A}}", &load(dtype, "a[pa]"))
        .replace("{{LOAD_B}}", &load(dtype, "b[pb]"))
        .replace("{{STORE}}", &store(dtype, "partial[slot]"));
    Ok(module(enables(&[dtype]), false, &body))
}

/// A 3-D operand's offset and strides as u32 words, `[offset, s0, s1, s2]`. Size-1 dims get
/// stride 0, so that no pointer walk can pass u32.
fn words(l: &Layout, len: usize, side: &str) -> Result<[u32; 4]> {
    if l.numel() == 0 {
        return Ok([0; 4]);
    }
    let extent = l.storage_extent();
    if extent > len {
        return Err(Error::invalid(OP, format!("{side} layout {l:?} reaches past its buffer of {len} elements")));
    }
    if extent > u32::MAX as usize {
        return Err(Error::OutOfMemory { op: OP, msg: format!("{side} layout {l:?} needs indices past u32") });
    }
    let s = |d: usize| if l.shape()[d] <= 1 { 0 } else { l.strides()[d] as u32 };
    Ok([l.offset() as u32, s(0), s(1), s(2)])
}

/// Whether neighbouring threads should walk k (stride `sk`) rather than the other dim
/// (stride `sx`, size `x`) to read neighbouring addresses.
fn k_fast(sk: u32, sx: u32, k: usize, x: usize) -> bool {
    k > 1 && (x <= 1 || sk <= sx)
}

/// The layout class of an operand with words `[off, sb, sx, sk]` (x is m for a, n for b) in a
/// buffer of `bytes`: vec4 fetches need stride 1 along x, the other strides and the offset
/// 4-aligned, and a buffer of whole vec4s.
fn classify(dtype: DType, [off, sb, sx, sk]: [u32; 4], k: usize, x: usize, bytes: u64) -> Fetch {
    let aligned = dtype.is_float()
        && off.is_multiple_of(4)
        && sb.is_multiple_of(4)
        && sk.is_multiple_of(4)
        && bytes.is_multiple_of(4 * gpu_size(dtype));
    if aligned && sx == 1 {
        Fetch::X4
    } else if k_fast(sk, sx, k, x) {
        Fetch::K
    } else {
        Fetch::X
    }
}

/// The number of tiles the autotuner chooses from (tests force each in turn).
pub(crate) fn candidate_count() -> usize {
    CANDIDATES.len()
}

/// The candidates this adapter can run (LARGE needs more than 16 KiB of workgroup memory).
fn usable(ctx: &crate::context::GpuContext) -> Vec<Tile> {
    let max = ctx.limits.max_compute_workgroup_storage_size;
    CANDIDATES.into_iter().filter(|t| t.workgroup_bytes() <= max && t.threads() <= ctx.limits.max_compute_invocations_per_workgroup).collect()
}

/// The tile for a float matmul: a forced candidate (tests), the autotuner's choice for the
/// shape class (tuning it now on `run` when there is none), or the size rule.
fn choose_tile(
    ctx: &crate::context::GpuContext,
    class: impl FnOnce() -> String,
    fallback: Tile,
    mut run: impl FnMut(Tile) -> Result<()>,
) -> Result<Tile> {
    if let Some(i) = ctx.tuner.forced() {
        return Ok(CANDIDATES.get(i).copied().filter(|t| usable(ctx).contains(t)).unwrap_or(fallback));
    }
    if !ctx.tuner.enabled {
        return Ok(fallback);
    }
    let class = class();
    let tiles = usable(ctx);
    if let Some(name) = ctx.tuner.lookup(&class)
        && let Some(&tile) = tiles.iter().find(|t| t.name() == name)
    {
        return Ok(tile);
    }
    let mut best = (f64::INFINITY, fallback);
    for &tile in &tiles {
        let secs = crate::autotune::time_runs(|| run(tile), || ctx.sync())?;
        if secs < best.0 {
            best = (secs, tile);
        }
    }
    ctx.tuner.store(&class, &best.1.name());
    Ok(best.1)
}

/// Whether a float matmul with these output dims should take LARGE tiles.
fn prefer_large(ctx: &crate::context::GpuContext, batch: usize, m: usize, n: usize) -> bool {
    let padded = |t: usize| (m.next_multiple_of(t) * n.next_multiple_of(t)) as u64;
    let tiles = (m.div_ceil(128) * n.div_ceil(128)) as u64 * batch as u64;
    let min_tiles = if ctx.summary.software { LARGE_MIN_TILES_CPU } else { LARGE_MIN_TILES };
    // LARGE needs 16.5 KiB of workgroup memory, just past WebGPU's guaranteed 16 KiB.
    let fits = ctx.limits.max_compute_workgroup_storage_size >= LARGE.workgroup_bytes();
    // Padding an edge to 128 rather than 64 must not add more than a quarter to the work.
    fits && tiles >= min_tiles && padded(128) * 4 <= padded(64) * 5
}

pub(crate) fn matmul(a: &GpuStorage, al: &Layout, b: &GpuStorage, bl: &Layout) -> Result<GpuStorage> {
    let (sa, sb) = (al.shape(), bl.shape());
    if sa.len() != 3 || sb.len() != 3 || sa[0] != sb[0] || sa[2] != sb[1] {
        return Err(Error::shape(OP, format!("{sa:?} · {sb:?}: expected [b, m, k] · [b, k, n]")));
    }
    let dtype = a.dtype();
    if b.dtype() != dtype {
        return Err(Error::dtype(OP, dtype, b.dtype()));
    }
    storage_type(OP, dtype)?;
    if !DTYPES.contains(&dtype) {
        return Err(Error::UnsupportedDType { op: OP, dtype, why: " (matmul needs a numeric dtype)".into() });
    }
    let (batch, m, k, n) = (sa[0], sa[1], sa[2], sb[2]);
    let numel = batch.checked_mul(m).and_then(|x| x.checked_mul(n)).filter(|&x| x <= u32::MAX as usize);
    let Some(numel) = numel else {
        return Err(Error::OutOfMemory { op: OP, msg: format!("{sa:?} · {sb:?} has more than 2^32 outputs") });
    };
    if numel > 0 && let Some(out) = super::matmul_coop::matmul(a, al, b, bl)? {
        return Ok(out);
    }
    let ctx = a.context();
    let out = GpuStorage::alloc(ctx, OP, dtype, numel)?;
    if numel == 0 {
        return Ok(out);
    }
    let [a_off, a_sb, a_sm, a_sk] = words(al, a.len(), "lhs")?;
    let [b_off, b_sb, b_sk, b_sn] = words(bl, b.len(), "rhs")?;
    let dims = [m as u32, n as u32, k as u32];
    let strides = [a_off, a_sb, a_sm, a_sk, b_off, b_sb, b_sk, b_sn];
    let (spec, head, groups) = if m.min(n) <= SMALL_MN {
        // Enough lanes per dot product to keep a workgroup busy on long k, few enough that a
        // short k still fills the workgroup with outputs.
        let lanes = k.div_ceil(32).next_power_of_two().clamp(1, 64) as u32;
        let k_inner = if m <= n { k_fast(b_sk, b_sn, k, n) } else { k_fast(a_sk, a_sm, k, m) };
        let head = [numel as u32, lanes, k_inner as u32];
        (Spec::Small { dtype }, head, (numel as u32).div_ceil(256 / lanes))
    } else {
        let fa = classify(dtype, [a_off, a_sb, a_sm, a_sk], k, m, a.buffer().size());
        let fb = classify(dtype, [b_off, b_sb, b_sn, b_sk], k, n, b.buffer().size());
        let plan = |tile: Tile| -> Result<(Spec, [u32; 3], u32)> {
            let (tiles_m, tiles_n) = ((m as u32).div_ceil(tile.tm), (n as u32).div_ceil(tile.tn));
            let total = u32::try_from(tiles_m as u64 * tiles_n as u64 * batch as u64)
                .map_err(|_| Error::OutOfMemory { op: OP, msg: format!("{sa:?} · {sb:?} needs too many workgroups") })?;
            Ok((Spec::Tiled { dtype, tile, a: fa, b: fb }, [tiles_m, tiles_n, total], total))
        };
        let fallback = if dtype.is_float() && prefer_large(ctx, batch, m, n) { LARGE } else { MEDIUM };
        let tile = if dtype.is_float() {
            let class = || {
                use crate::autotune::bucket;
                format!("{dtype}|a{fa:?}|b{fb:?}|b{}|m{}|n{}|k{}", bucket(batch), bucket(m), bucket(n), bucket(k))
            };
            choose_tile(ctx, class, fallback, |tile| {
                let (spec, head, groups) = plan(tile)?;
                record(ctx, &spec, dims, head, strides, groups, [a.buffer(), b.buffer(), out.buffer()])
            })?
        } else {
            fallback
        };
        plan(tile)?
    };
    record(ctx, &spec, dims, head, strides, groups, [a.buffer(), b.buffer(), out.buffer()])?;
    Ok(out)
}

/// Builds (or reuses) the kernel for `spec` and records one dispatch of it.
fn record(
    ctx: &crate::context::GpuContext,
    spec: &Spec,
    dims: [u32; 3],
    head: [u32; 3],
    strides: [u32; 8],
    groups: u32,
    buffers: [&wgpu::Buffer; 3],
) -> Result<()> {
    let kernel = ctx.cache.get(&ctx.device, OP, &spec.key(), || spec.source().unwrap_or_default())?;
    let mut meta = dims.to_vec();
    meta.extend(head);
    meta.extend(strides);
    ctx.dispatch(OP, &kernel, &buffers, &meta, groups)
}

/// Every matmul source the backend can generate: floats in every candidate tile and every pair of
/// layout classes, integers (which never take vec4 fetches) in MEDIUM tiles.
pub(crate) fn specialisations() -> Vec<(String, String)> {
    let mut specs = Vec::new();
    for dtype in DTYPES {
        let (tiles, fetches): (&[Tile], &[Fetch]) =
            if dtype.is_float() { (&CANDIDATES, &FETCHES) } else { (&[MEDIUM], &FETCHES[..2]) };
        for &tile in tiles {
            for &a in fetches {
                for &b in fetches {
                    specs.push(Spec::Tiled { dtype, tile, a, b });
                }
            }
        }
        specs.push(Spec::Small { dtype });
    }
    specs.into_iter().filter_map(|s| Some((s.key(), s.source().ok()?))).collect()
}
