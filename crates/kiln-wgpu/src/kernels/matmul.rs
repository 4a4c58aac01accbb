//! Batched strided matmul, `[b, m, k] · [b, k, n] → [b, m, n]` (contiguous): the tiles, each
//! operand's layout class, the size rule and the autotuner's choice, and recording the dispatches.
//! The WGSL they run is generated in `matmul_source.rs`.
//!
//! Operands are read in place through their strides: transposed views, a batch stride of 0
//! (broadcast) and offsets cost no copy. Two kernels: a register-tiled one specialised by dtype,
//! tile size and each operand's layout class, and a split-k dot-product kernel for
//! matrix-vector-like shapes.
//!
//! Float products with too few output tiles to fill the GPU and a long k (weight gradients
//! `xᵀ · dy` over many rows) run the tiled kernel split along k: S workgroups per output tile,
//! each over its own k range, write f32 partials `[S, batch, m, n]` to a pooled buffer, and
//! `shaders/matmul_splitk_sum.wgsl` adds them into the output.

use super::matmul_source::Spec;
use super::{gpu_size, storage_type};
use crate::pool::Span;
use crate::storage::GpuStorage;
use kiln_backend::{BackendStorage, DType, Error, Layout, Result};

pub(super) const OP: &str = "matmul";

/// The output tile of one workgroup (tm×tn), how deep along k it stages the operands (tk), the
/// block of that tile each thread accumulates (rm×rn, multiples of 4: read as vec4s), whether
/// it double-buffers its slabs (`db`: see `shaders/matmul.wgsl`), whether each 32 threads
/// cover an 8×4 patch of thread blocks (`warp`) rather than a 16×2 or wider strip, whether a
/// double-buffered tile reads the next slab's first fragments before the last k step of the
/// current one (`pf`), and how many tile rows its workgroups walk column by column (`group`;
/// 0: the whole grid row by row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Tile {
    pub(super) tm: u32,
    pub(super) tn: u32,
    pub(super) tk: u32,
    pub(super) rm: u32,
    pub(super) rn: u32,
    pub(super) db: bool,
    pub(super) warp: bool,
    pub(super) pf: bool,
    pub(super) group: u32,
}

impl Tile {
    /// `"128x128x16/8x8"`, `"128x128x8/8x8db"` double-buffered, `..w` in 8×4 patches, `..p`
    /// with fragments read ahead across the barrier, `..g8` in groups of 8 tile rows: kernel
    /// keys and tuning files.
    pub(super) fn name(self) -> String {
        let db = if self.db { "db" } else { "" };
        let warp = if self.warp { "w" } else { "" };
        let pf = if self.pf { "p" } else { "" };
        let group = if self.group > 0 { format!("g{}", self.group) } else { String::new() };
        format!("{}x{}x{}/{}x{}{db}{warp}{pf}{group}", self.tm, self.tn, self.tk, self.rm, self.rn)
    }

    pub(super) const fn threads(self) -> u32 {
        (self.tm / self.rm) * (self.tn / self.rn)
    }

    /// Bytes of workgroup memory: both operands' staged slabs (two of each when
    /// double-buffered), rows padded by one vec4 of f32 or i32.
    const fn workgroup_bytes(self) -> u32 {
        let slabs = if self.db { 2 } else { 1 };
        slabs * self.tk * (self.tm / 4 + 1 + self.tn / 4 + 1) * 16
    }

    /// Whether the generator can build it: whole vec4 blocks per thread, and every thread
    /// moving the same whole number of quads of each slab.
    #[cfg(test)]
    fn valid(self) -> bool {
        let t = self.threads();
        self.rm.is_multiple_of(4)
            && self.rn.is_multiple_of(4)
            && self.tm.is_multiple_of(self.rm)
            && self.tn.is_multiple_of(self.rn)
            && (self.tm / 4 * self.tk).is_multiple_of(t)
            && (self.tn / 4 * self.tk).is_multiple_of(t)
            && self.tm / 4 * self.tk >= t
            && self.tn / 4 * self.tk >= t
            && (!self.warp
                || ((self.tn / self.rn).is_multiple_of(8)
                    && (self.tm / self.rm).is_multiple_of(4)
                    && t.is_multiple_of(32)))
            && (!self.pf || (self.db && self.tk >= 2))
            && self.group != 1
    }
}

/// 64×64 tiles, 4×4 per thread: enough workgroups to fill a large GPU from about 1024² outputs.
pub(super) const MEDIUM: Tile =
    Tile { tm: 64, tn: 64, tk: 16, rm: 4, rn: 4, db: false, warp: false, pf: false, group: 0 };
/// 128×128 tiles, 8×8 per thread: twice the multiply-adds per workgroup-memory read. Measured on
/// an H200 (Vulkan, f32): 30–31 TFLOP/s at 4096³ in every layout against 19–21 for MEDIUM, 28
/// against 21 at 2048³, but 13–17 against 17–19 at 1536³, where too few workgroups fill the GPU.
const LARGE: Tile = Tile { tm: 128, tn: 128, tk: 16, rm: 8, rn: 8, db: false, warp: false, pf: false, group: 0 };
/// 32×32 tiles, 4×4 per thread (64 threads): four times the workgroups of MEDIUM, for shapes
/// too small to fill a GPU with 64×64 tiles. Offered to the autotuner only.
const SMALL: Tile = Tile { tm: 32, tn: 32, tk: 16, rm: 4, rn: 4, db: false, warp: false, pf: false, group: 0 };
/// 64×128 and 128×64 tiles, 4×8 (8×4) per thread: between MEDIUM and LARGE. Autotuner only.
const WIDE: Tile = Tile { tm: 64, tn: 128, tk: 16, rm: 4, rn: 8, db: false, warp: false, pf: false, group: 0 };
const TALL: Tile = Tile { tm: 128, tn: 64, tk: 16, rm: 8, rn: 4, db: false, warp: false, pf: false, group: 0 };

/// LARGE staged 32 deep: half the barriers per k step, for the biggest products. Autotuner only.
const DEEP: Tile = Tile { tm: 128, tn: 128, tk: 32, rm: 8, rn: 8, db: false, warp: false, pf: false, group: 0 };

/// Double-buffered tiles (see `shaders/matmul.wgsl`): one barrier per slab instead of two, and
/// the global reads of slab i+1 in flight while slab i is multiplied, for two slabs of
/// workgroup memory and a few registers per thread. None is measured yet: the autotuner decides.
/// All fit 32 KiB of workgroup memory (lavapipe's, where tests check them).
/// LARGE 8 deep, double-buffered: as many barriers per k as LARGE, half its workgroup memory
/// per slab.
const LARGE_DB: Tile = Tile { tm: 128, tn: 128, tk: 8, rm: 8, rn: 8, db: true, warp: false, pf: false, group: 0 };
/// 8×16 and 16×8 per thread: a third fewer workgroup-memory reads per multiply-add than 8×8, for
/// 128 accumulators a thread (one 256-thread workgroup per SM on an H100/H200).
const HUGE_N_DB: Tile = Tile { tm: 128, tn: 256, tk: 8, rm: 8, rn: 16, db: true, warp: false, pf: false, group: 0 };
const HUGE_M_DB: Tile = Tile { tm: 256, tn: 128, tk: 8, rm: 16, rn: 8, db: true, warp: false, pf: false, group: 0 };
/// 128×64, 8×4 per thread: twice LARGE's workgroups, for outputs a few LARGE tiles wide (W10's
/// n = 384).
const HALF_DB: Tile = Tile { tm: 128, tn: 64, tk: 16, rm: 8, rn: 4, db: true, warp: false, pf: false, group: 0 };
/// MEDIUM double-buffered, for mid-sized products.
const MEDIUM_DB: Tile = Tile { tm: 64, tn: 64, tk: 16, rm: 4, rn: 4, db: true, warp: false, pf: false, group: 0 };
/// LARGE and LARGE_DB with each 32 threads on an 8×4 patch of thread blocks: a 32-wide subgroup's
/// workgroup-memory reads then touch 8 of b's quads (128 bytes) and 4 of a's per k, against 16
/// and 2 in a 16×2 strip: fewer bytes per read where the hardware serves repeated addresses once.
const LARGE_W: Tile = Tile { tm: 128, tn: 128, tk: 16, rm: 8, rn: 8, db: false, warp: true, pf: false, group: 0 };
const LARGE_DB_W: Tile = Tile { tm: 128, tn: 128, tk: 8, rm: 8, rn: 8, db: true, warp: true, pf: false, group: 0 };

/// LARGE_DB and LARGE_DB_W staged 16 deep: half the barriers per k. 33 KiB of workgroup memory:
/// more than lavapipe's 32 KiB, so only hardware adapters (48 KiB on NVIDIA) run them.
const LARGE_DB16: Tile = Tile { tm: 128, tn: 128, tk: 16, rm: 8, rn: 8, db: true, warp: false, pf: false, group: 0 };
const LARGE_DB16_W: Tile = Tile { tm: 128, tn: 128, tk: 16, rm: 8, rn: 8, db: true, warp: true, pf: false, group: 0 };
/// HUGE_N_DB and HUGE_M_DB single-buffered, 16 deep: the same 128 accumulators a thread with
/// fewer registers held across the multiply.
const HUGE_N: Tile = Tile { tm: 128, tn: 256, tk: 16, rm: 8, rn: 16, db: false, warp: false, pf: false, group: 0 };
const HUGE_M: Tile = Tile { tm: 256, tn: 128, tk: 16, rm: 16, rn: 8, db: false, warp: false, pf: false, group: 0 };

/// LARGE_DB_W with the next slab's first fragments read from workgroup memory right after the
/// barrier and before the current slab's last k step (as CUTLASS's SIMT kernels do): the
/// multiply-adds of that step then cover the barrier's wait and the reads' latency, on which
/// LARGE_DB_W's warps can only wait, once per slab. 16 more registers a thread.
const LARGE_DB_W_PF: Tile = Tile { pf: true, ..LARGE_DB_W };
/// LARGE_DB_W with its workgroups in groups of 8 tile rows walked column by column (Triton's
/// GROUP_M order), so that workgroups running together share A's rows and B's columns in L2;
/// row by row, each wave of workgroups reads nearly all of B.
const LARGE_DB_W_G8: Tile = Tile { group: 8, ..LARGE_DB_W };
/// 128×128 in 128 threads, 8×16 each (cuBLAS's SIMT tile on sm80/sm90: 4 warps of 64×64): 128
/// accumulators a thread and 6 workgroup-memory reads per 128 multiply-adds (8×8: 4 per 64).
const LARGE_16_DB_W_PF: Tile = Tile { rn: 16, ..LARGE_DB_W_PF };
/// 128×64 in 128 threads, 8×8 each: half LARGE_DB_W_PF's registers per workgroup, so that more
/// workgroups (and warps) share an SM where register use limits residency; twice the tiles for
/// W10's n = 384 products.
const HALF_DB_W_PF: Tile = Tile { tn: 64, ..LARGE_DB_W_PF };
/// LARGE_DB_W_PF in groups of 8 tile rows: the two changes together, should each gain alone.
const LARGE_DB_W_PF_G8: Tile = Tile { group: 8, ..LARGE_DB_W_PF };
/// HUGE_N_DB (second at 4096³ on an H100) in 8×4 patches with fragments read ahead.
const HUGE_N_DB_W_PF: Tile = Tile { warp: true, pf: true, ..HUGE_N_DB };
/// LARGE_16_DB_W_PF without the read-ahead: 24 fewer registers a thread next to 128
/// accumulators, should those cost more than the barrier stalls they hide.
const LARGE_16_DB_W: Tile = Tile { rn: 16, ..LARGE_DB_W };

/// Every tile the autotuner may pick for a float matmul, in the order tests address them (new
/// tiles go at the end, so that an index keeps naming the same tile).
pub(super) const CANDIDATES: [Tile; 24] = [
    SMALL,
    MEDIUM,
    WIDE,
    TALL,
    LARGE,
    DEEP,
    LARGE_DB,
    HUGE_N_DB,
    HUGE_M_DB,
    HALF_DB,
    MEDIUM_DB,
    LARGE_W,
    LARGE_DB_W,
    LARGE_DB16,
    LARGE_DB16_W,
    HUGE_N,
    HUGE_M,
    LARGE_DB_W_PF,
    LARGE_DB_W_G8,
    LARGE_16_DB_W_PF,
    HALF_DB_W_PF,
    LARGE_DB_W_PF_G8,
    HUGE_N_DB_W_PF,
    LARGE_16_DB_W,
];

/// Tiles whose other split counts the autotuner times after timing every tile once.
const FINALISTS: usize = 3;

/// GPUs take LARGE from this many LARGE tiles on (2048² outputs).
const LARGE_MIN_TILES: u64 = 256;
/// CPU adapters (lavapipe) take it as soon as both cores get work: there every workgroup-memory
/// read is a loop over SIMD lanes and costs more than the arithmetic, so LARGE is about twice as
/// fast.
const LARGE_MIN_TILES_CPU: u64 = 4;

/// Shapes with this few rows or columns take the dot-product kernel: a 64-wide tile would be
/// mostly padding.
const SMALL_MN: usize = 4;

pub(super) const DTYPES: [DType; 4] = [DType::F32, DType::F16, DType::I32, DType::U32];

/// Split k aims for this many threads in flight: 512 workgroups of MEDIUM's 256, about four per
/// SM of a 132-SM GPU (H200), where MEDIUM reaches 17–19 TFLOP/s (1536³, 576 tiles) against 6
/// for the 256 SMALL tiles of an unsplit W6 weight gradient. A product splits only when that is
/// at least twice its tiles' threads.
const SPLIT_TARGET_THREADS: u64 = 512 * 256;
/// The shortest k range the size rule gives one split: 16 slabs of 16, so that each workgroup's
/// prologue, its partial-tile store and the sum pass (S·8 bytes per output) stay small next to
/// its 2·256 flops per output.
const SPLIT_MIN_CHUNK: usize = 256;
/// The shortest k range the autotuner tries.
const SPLIT_MIN_CHUNK_TUNED: usize = 128;

/// How the tiled kernel fetches one operand: its layout class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fetch {
    /// Element by element, neighbouring threads on neighbouring k.
    K,
    /// Element by element, neighbouring threads on neighbouring m (a) or n (b).
    X,
    /// vec4s along m (n), whose stride is 1. (vec4s along a stride-1 k, fetched as 4×4 blocks
    /// and transposed in registers, measured slower than `K` on an H200: they are not offered.)
    X4,
}

/// A tiled configuration: the tile, and how many k ranges the product runs as (1: no split).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Choice {
    tile: Tile,
    splits: usize,
}

impl Choice {
    const fn whole(tile: Tile) -> Choice {
        Choice { tile, splits: 1 }
    }

    /// `"64x64x16/4x4"`, or `"64x64x16/4x4/s8"` with split k: the form the autotuner stores.
    fn name(self) -> String {
        if self.splits > 1 { format!("{}/s{}", self.tile.name(), self.splits) } else { self.tile.name() }
    }

    /// The choice `name` stands for among `tiles`; `None` for anything else (an older or
    /// damaged tuning file), which the caller treats as no choice.
    fn parse(name: &str, tiles: &[Tile]) -> Option<Choice> {
        let (tile, splits) = match name.rsplit_once("/s") {
            Some((tile, s)) => (tile, s.parse().ok().filter(|&s| (1..=u16::MAX as usize).contains(&s))?),
            None => (name, 1),
        };
        Some(Choice { tile: tiles.iter().copied().find(|t| t.name() == tile)?, splits })
    }
}

/// The dims of a batched product `[batch, m, k] · [batch, k, n]`.
#[derive(Clone, Copy, Debug)]
struct Dims {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
}

impl Dims {
    fn tiles(self, t: Tile) -> u64 {
        (self.m.div_ceil(t.tm as usize) * self.n.div_ceil(t.tn as usize)) as u64 * self.batch as u64
    }

    fn numel(self) -> usize {
        self.batch * self.m * self.n
    }

    /// The length of each of `splits` k ranges: a whole number of slabs, so that the last range
    /// is the short one (or, with more ranges than slabs, empty ranges that write zeros).
    fn chunk(self, tile: Tile, splits: usize) -> usize {
        self.k.div_ceil(splits.max(1)).max(1).next_multiple_of(tile.tk as usize)
    }

    /// Whether `splits` ranges can run: partials and workgroups indexable in u32, and the
    /// partial buffer (as the pool rounds it) within one storage binding.
    fn split_fits(self, tile: Tile, splits: usize, max_binding: u64) -> bool {
        let Some(elems) = self.numel().checked_mul(splits) else { return false };
        elems <= u32::MAX as usize
            && (splits as u64).saturating_mul(self.chunk(tile, splits) as u64) <= u32::MAX as u64
            && self.tiles(tile).saturating_mul(splits as u64) <= u32::MAX as u64
            && crate::pool::size_class((elems as u64).saturating_mul(4)) <= max_binding
    }

    /// The size rule's number of k ranges for `tile`: enough to bring the threads near
    /// `SPLIT_TARGET_THREADS`, none shorter than `min_chunk`, no empty one. 1: no split.
    fn rule_splits(self, tile: Tile, min_chunk: usize) -> usize {
        let tiles = self.tiles(tile);
        if tiles == 0 || self.k < 2 * min_chunk {
            return 1;
        }
        let want = (SPLIT_TARGET_THREADS / tile.threads() as u64 / tiles).min((self.k / min_chunk) as u64) as usize;
        if want < 2 {
            return 1;
        }
        self.k.div_ceil(self.chunk(tile, want))
    }
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

/// The number of tiles the autotuner chooses from on this adapter (tests force each in turn).
pub(crate) fn candidate_count(ctx: &crate::context::GpuContext) -> usize {
    usable(ctx).len()
}

/// The candidates this adapter can run (LARGE and the double-buffered tiles need more than 16 KiB
/// of workgroup memory, DEEP more than 32 KiB).
fn usable(ctx: &crate::context::GpuContext) -> Vec<Tile> {
    let max = ctx.limits.max_compute_workgroup_storage_size;
    CANDIDATES
        .into_iter()
        .filter(|t| t.workgroup_bytes() <= max && t.threads() <= ctx.limits.max_compute_invocations_per_workgroup)
        .collect()
}

/// The configuration for a float tiled matmul: forced by tests (tile, split or both), the
/// autotuner's choice for the shape class (tuning it now on `run` when there is none), or the
/// size rule (`fallback`'s tile, split where `split_on` and the rule says so).
fn choose(
    ctx: &crate::context::GpuContext,
    d: Dims,
    class: impl FnOnce() -> String,
    fallback: Tile,
    split_on: bool,
    mut run: impl FnMut(Choice) -> Result<()>,
) -> Result<Choice> {
    let max_binding = ctx.limits.max_storage_buffer_binding_size;
    // A split whose partials do not fit one binding (chunked pieces near the limit) runs whole.
    let fit = |c: Choice| {
        if c.splits > 1 && !d.split_fits(c.tile, c.splits, max_binding) { Choice::whole(c.tile) } else { c }
    };
    let rule_splits = |tile: Tile| if split_on { d.rule_splits(tile, SPLIT_MIN_CHUNK) } else { 1 };
    let rule = |tile: Tile| fit(Choice { tile, splits: rule_splits(tile) });
    let forced_tile = ctx.tuner.forced().map(|i| usable(ctx).get(i).copied().unwrap_or(fallback));
    let forced_split = ctx.tuner.forced_split();
    if forced_tile.is_some() || forced_split.is_some() {
        let tile = forced_tile.unwrap_or(fallback);
        return Ok(match forced_split {
            Some(splits) => fit(Choice { tile, splits }),
            None => rule(tile),
        });
    }
    if !ctx.tuner.enabled {
        return Ok(rule(fallback));
    }
    let tiles = usable(ctx);
    // Each tile whole and at half, once and twice the rule's split count.
    let variants = |tile: Tile| {
        let mut v = vec![Choice::whole(tile)];
        let s = rule_splits(tile);
        for splits in [s / 2, s, s * 2] {
            let c = Choice { tile, splits };
            if splits >= 2
                && d.chunk(tile, splits) >= SPLIT_MIN_CHUNK_TUNED
                && d.k.div_ceil(d.chunk(tile, splits)) == splits
                && fit(c) == c
                && !v.contains(&c)
            {
                v.push(c);
            }
        }
        v
    };
    let candidates: Vec<Choice> = tiles.iter().flat_map(|&t| variants(t)).collect();
    // Classes name the tiles they were tuned among, so that a build with new tiles tunes them
    // again rather than reusing a choice that never saw them; classes with split candidates get
    // their own name too, so that choices stored before split k existed (tiles only) are tuned
    // again rather than reused.
    let split = if candidates.iter().any(|c| c.splits > 1) { "|sk" } else { "" };
    let class = format!("{}|t{}{split}", class(), tile_set_tag(&tiles));
    if let Some(name) = ctx.tuner.lookup(&class)
        && let Some(choice) = Choice::parse(&name, &tiles)
    {
        // Shapes of one class differ in k by up to 2×: no more ranges than this k has slabs.
        let splits = choice.splits.min(d.k.div_ceil(choice.tile.tk as usize)).max(1);
        return Ok(fit(Choice { splits, ..choice }));
    }
    let mut best = (f64::INFINITY, rule(fallback));
    let Dims { batch, m, n, k } = d;
    let flops = 2.0 * (batch * m * n * k) as f64;
    // Two rounds, so that a class costs about a third of timing every variant (W10's first run
    // tuned for 74 s on an H100 with 24 tiles × up to 4 split counts): every tile at the rule's
    // split count, then the other split counts of the fastest few tiles. A tile's split
    // variants differ by tens of percent, tiles by up to 10× (session 9's log).
    let first: Vec<Choice> = tiles.iter().map(|&t| rule(t)).fold(Vec::new(), |mut v, c| {
        if !v.contains(&c) {
            v.push(c);
        }
        v
    });
    let mut timed = crate::autotune::time_candidates(&first, &mut run, || ctx.sync());
    let mut fastest: Vec<(Choice, f64)> = timed.clone();
    fastest.sort_by(|a, b| a.1.total_cmp(&b.1));
    let second: Vec<Choice> =
        fastest.iter().take(FINALISTS).flat_map(|(c, _)| variants(c.tile)).filter(|c| !first.contains(c)).collect();
    timed.extend(crate::autotune::time_candidates(&second, &mut run, || ctx.sync()));
    for (c, secs) in timed {
        if ctx.tuner.log {
            eprintln!(
                "autotune class={class} batch={batch} m={m} n={n} k={k} choice={} us={:.2} tflops={:.2}",
                c.name(),
                secs * 1e6,
                flops / secs / 1e12
            );
        }
        if secs < best.0 {
            best = (secs, c);
        }
    }
    if best.0.is_finite() {
        ctx.tuner.store(&class, &best.1.name());
        if ctx.tuner.log {
            eprintln!(
                "autotune class={class} batch={batch} m={m} n={n} k={k} best={} us={:.2}",
                best.1.name(),
                best.0 * 1e6
            );
        }
    }
    Ok(best.1)
}

/// A short fingerprint of the tiles the autotuner chooses from (their names, in order).
fn tile_set_tag(tiles: &[Tile]) -> String {
    let names: Vec<String> = tiles.iter().map(|t| t.name() + ",").collect();
    let parts: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
    format!("{:08x}", crate::pipeline_cache::fnv1a(&parts) as u32)
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
    if numel > 0
        && let Some(out) = super::matmul_coop::matmul(a, al, b, bl)?
    {
        return Ok(out);
    }
    let ctx = a.context();
    let out = GpuStorage::alloc(ctx, OP, dtype, numel)?;
    if numel == 0 {
        return Ok(out);
    }
    let [a_off, a_sb, a_sm, a_sk] = words(al, a.len(), "lhs")?;
    let [b_off, b_sb, b_sk, b_sn] = words(bl, b.len(), "rhs")?;
    let strides = [a_off, a_sb, a_sm, a_sk, b_off, b_sb, b_sk, b_sn];
    if m.min(n) <= SMALL_MN {
        // Enough lanes per dot product to keep a workgroup busy on long k, few enough that a
        // short k still fills the workgroup with outputs.
        let lanes = k.div_ceil(32).next_power_of_two().clamp(1, 64) as u32;
        let k_inner = if m <= n { k_fast(b_sk, b_sn, k, n) } else { k_fast(a_sk, a_sm, k, m) };
        let mut meta = vec![m as u32, n as u32, k as u32, numel as u32, lanes, k_inner as u32];
        meta.extend(strides);
        let groups = (numel as u32).div_ceil(256 / lanes);
        record(ctx, &Spec::Small { dtype }, &meta, groups, &[a.binding(), b.binding(), out.binding()])?;
        return Ok(out);
    }
    let d = Dims { batch, m, n, k };
    let tiled = Tiled {
        ctx,
        dtype,
        a: classify(dtype, [a_off, a_sb, a_sm, a_sk], k, m, a.byte_size()),
        b: classify(dtype, [b_off, b_sb, b_sn, b_sk], k, n, b.byte_size()),
        d,
        strides,
        buffers: [a.binding(), b.binding(), out.binding()],
    };
    let fallback = if dtype.is_float() && prefer_large(ctx, batch, m, n) { LARGE } else { MEDIUM };
    let choice = if dtype.is_float() {
        let (fa, fb) = (tiled.a, tiled.b);
        let class = || {
            use crate::autotune::bucket;
            format!("{dtype}|a{fa:?}|b{fb:?}|b{}|m{}|n{}|k{}", bucket(batch), bucket(m), bucket(n), bucket(k))
        };
        let split_on = ctx.options.matmul_splitk.unwrap_or(!ctx.summary.software);
        choose(ctx, d, class, fallback, split_on, |c| tiled.run(c))?
    } else {
        // Integers never split: their tiles are few only for small products anyway.
        Choice::whole(fallback)
    };
    tiled.run(choice)?;
    Ok(out)
}

/// A tiled product ready to record in any configuration.
struct Tiled<'a> {
    ctx: &'a crate::context::GpuDevice,
    dtype: DType,
    a: Fetch,
    b: Fetch,
    d: Dims,
    strides: [u32; 8],
    /// a, b and the output.
    buffers: [Span<'a>; 3],
}

impl Tiled<'_> {
    /// Records the product in configuration `c`: one dispatch, or (split k) the partial
    /// products into a pooled f32 buffer, dropped after their sum into the output is recorded.
    fn run(&self, c: Choice) -> Result<()> {
        let Dims { batch, m, n, k } = self.d;
        let (tiles_m, tiles_n) = ((m as u32).div_ceil(c.tile.tm), (n as u32).div_ceil(c.tile.tn));
        let split = c.splits > 1;
        let total =
            u32::try_from(self.d.tiles(c.tile).saturating_mul(c.splits as u64)).map_err(|_| Error::OutOfMemory {
                op: OP,
                msg: format!("[{batch}, {m}, {k}] · [{batch}, {k}, {n}] needs too many workgroups"),
            })?;
        let spec = Spec::Tiled { dtype: self.dtype, tile: c.tile, a: self.a, b: self.b, split };
        let mut meta = vec![m as u32, n as u32, k as u32, tiles_m, tiles_n, total];
        meta.extend(self.strides);
        if !split {
            return record(self.ctx, &spec, &meta, total, &self.buffers);
        }
        meta.extend([batch as u32, self.d.chunk(c.tile, c.splits) as u32]);
        let numel = self.d.numel();
        let part = GpuStorage::alloc(self.ctx, OP, DType::F32, numel * c.splits)?;
        record(self.ctx, &spec, &meta, total, &[self.buffers[0], self.buffers[1], part.binding()])?;
        let vec4 = numel.is_multiple_of(4);
        let count = if vec4 { numel / 4 } else { numel } as u32;
        let sum = Spec::SplitSum { dtype: self.dtype, vec4 };
        record(self.ctx, &sum, &[count, c.splits as u32], count.div_ceil(256), &[part.binding(), self.buffers[2]])
    }
}

/// Builds (or reuses) the kernel for `spec` and records one dispatch of it. Tiled kernels are
/// built without naga's index clamps and loop counters (`KernelCache::get_trusted`: every
/// workgroup-memory index is a thread's own quad plus a constant below the slab's size, every
/// loop walks k up to K) unless [`matmul_checks`] asks for them.
fn record(
    ctx: &crate::context::GpuContext,
    spec: &Spec,
    meta: &[u32],
    groups: u32,
    buffers: &[Span<'_>],
) -> Result<()> {
    let source = || spec.source().unwrap_or_default();
    let kernel = match spec {
        Spec::Tiled { .. } if matmul_checks(ctx) => {
            ctx.cache.get(&ctx.device, OP, &(spec.key() + "|checked"), source)?
        }
        Spec::Tiled { .. } => ctx.cache.get_trusted(&ctx.device, OP, &spec.key(), source)?,
        _ => ctx.cache.get(&ctx.device, OP, &spec.key(), source)?,
    };
    ctx.dispatch(OP, &kernel, buffers, meta, groups)
}

/// Whether the tiled and cooperative matmul kernels keep naga's runtime checks
/// (`KILN_MM_CHECKS=1`, or the test hook `force_matmul_checks`): to measure what dropping them
/// gains.
pub(super) fn matmul_checks(ctx: &crate::context::GpuContext) -> bool {
    ctx.tuner.checked()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_rule_splits_long_k_products_with_few_tiles() {
        let d = |batch, m, k, n| Dims { batch, m, n, k };
        // W6's weight gradient [256, 4096] · [4096, 1024]: 64 MEDIUM tiles → 8 ranges of 512.
        assert_eq!(d(1, 256, 4096, 1024).rule_splits(MEDIUM, SPLIT_MIN_CHUNK), 8);
        assert_eq!(d(1, 256, 4096, 1024).chunk(MEDIUM, 8), 512);
        // 16 tiles: the ranges stop at 256 long.
        assert_eq!(d(1, 256, 4096, 256).rule_splits(MEDIUM, SPLIT_MIN_CHUNK), 16);
        // W7's conv weight gradient, k = 128·28·28: ranges of whole slabs, none empty.
        let w7 = d(1, 64, 128 * 28 * 28, 288);
        let s = w7.rule_splits(MEDIUM, SPLIT_MIN_CHUNK);
        let c = w7.chunk(MEDIUM, s);
        assert!((90..=110).contains(&s) && c % 16 == 0 && (s - 1) * c < w7.k && s * c >= w7.k, "{s} {c}");
        // Enough tiles, or a short k: no split.
        assert_eq!(d(1, 4096, 4096, 4096).rule_splits(MEDIUM, SPLIT_MIN_CHUNK), 1);
        assert_eq!(d(1, 2048, 8192, 1024).rule_splits(MEDIUM, SPLIT_MIN_CHUNK), 1);
        assert_eq!(d(1, 64, 511, 64).rule_splits(MEDIUM, SPLIT_MIN_CHUNK), 1);
        assert_eq!(d(1, 64, 512, 64).rule_splits(MEDIUM, SPLIT_MIN_CHUNK), 2);
        // The batch counts as tiles.
        assert_eq!(d(64, 256, 4096, 256).rule_splits(MEDIUM, SPLIT_MIN_CHUNK), 1);
        // More ranges than slabs: the tail ranges are empty.
        let tiny = d(1, 37, 20, 29);
        assert_eq!(tiny.chunk(SMALL, 3), 16);
        assert_eq!(tiny.k.div_ceil(tiny.chunk(SMALL, 3)), 2);
    }

    #[test]
    fn partials_must_fit_a_binding() {
        let d = Dims { batch: 1, m: 1024, n: 1024, k: 1 << 20 };
        // 4 MiB of partials per range.
        assert!(d.split_fits(MEDIUM, 8, 128 << 20));
        assert!(d.split_fits(MEDIUM, 32, 128 << 20));
        assert!(!d.split_fits(MEDIUM, 33, 128 << 20));
        assert!(!d.split_fits(MEDIUM, 2, 4 << 20));
        // Partials past u32 indexing.
        let big = Dims { batch: 1, m: 65536, n: 32768, k: 4096 };
        assert!(!big.split_fits(MEDIUM, 2, u64::MAX));
    }

    #[test]
    fn every_candidate_is_buildable_and_distinct() {
        for t in CANDIDATES {
            assert!(t.valid(), "{t:?}");
            assert!(t.threads() <= 256, "{t:?}");
            // Every double-buffered tile but the two 16 deep is checked on lavapipe, which has
            // 32 KiB; all fit NVIDIA's 48 KiB.
            let hardware_only = [LARGE_DB16, LARGE_DB16_W].contains(&t);
            assert!(!t.db || hardware_only || t.workgroup_bytes() <= 32 * 1024, "{t:?}: {} bytes", t.workgroup_bytes());
            assert!(t.workgroup_bytes() <= 48 * 1024, "{t:?}: {} bytes", t.workgroup_bytes());
        }
        let names: std::collections::BTreeSet<_> = CANDIDATES.iter().map(|t| t.name()).collect();
        assert_eq!(names.len(), CANDIDATES.len());
        assert_eq!(LARGE_DB.name(), "128x128x8/8x8db");
        assert_eq!(LARGE_DB.workgroup_bytes(), 2 * 8 * (33 + 33) * 16);
        assert_eq!(LARGE_DB_W_PF.name(), "128x128x8/8x8dbwp");
        assert_eq!(LARGE_DB_W_G8.name(), "128x128x8/8x8dbwg8");
        assert_eq!((LARGE_16_DB_W_PF.name().as_str(), LARGE_16_DB_W_PF.threads()), ("128x128x8/8x16dbwp", 128));
        assert_eq!((HALF_DB_W_PF.name().as_str(), HALF_DB_W_PF.threads()), ("128x64x8/8x8dbwp", 128));
        assert_eq!(LARGE_DB_W_PF_G8.name(), "128x128x8/8x8dbwpg8");
        assert_eq!(HUGE_N_DB_W_PF.name(), "128x256x8/8x16dbwp");
        assert_eq!(LARGE_16_DB_W.name(), "128x128x8/8x16dbw");
        // Read-ahead needs two slab buffers; a group of one row is row order under another name.
        assert!(!Tile { pf: true, ..LARGE }.valid());
        assert!(!Tile { group: 1, ..LARGE }.valid());
    }

    #[test]
    fn choices_round_trip_and_unknown_names_are_none() {
        let tiles = CANDIDATES.to_vec();
        for tile in CANDIDATES {
            for splits in [1, 2, 7, 102] {
                let c = Choice { tile, splits };
                assert_eq!(Choice::parse(&c.name(), &tiles), Some(c), "{}", c.name());
            }
        }
        // Names stored before split k existed are whole tiles.
        assert_eq!(Choice::parse("64x64x16/4x4", &tiles), Some(Choice::whole(MEDIUM)));
        let bad_names =
            ["", "64x64x16/4x4/s", "64x64x16/4x4/s0", "64x64x16/4x4/sx", "64x64x16/4x4/s-2", "99x99x16/4x4"];
        for bad in bad_names.into_iter().chain(["64x64x16/4x4/s99999999999999999999"]) {
            assert_eq!(Choice::parse(bad, &tiles), None, "{bad:?}");
        }
        // A tile the adapter cannot run is no choice either.
        assert_eq!(Choice::parse(&LARGE.name(), &[MEDIUM]), None);
        // Another set of tiles (a build with new candidates) names its classes differently.
        let tag = tile_set_tag(&CANDIDATES);
        assert_eq!(tag.len(), 8);
        assert_eq!(tag, tile_set_tag(&CANDIDATES));
        assert_ne!(tag, tile_set_tag(&CANDIDATES[..CANDIDATES.len() - 1]));
        assert_ne!(tile_set_tag(&[MEDIUM, LARGE]), tile_set_tag(&[LARGE, MEDIUM]));
    }
}
