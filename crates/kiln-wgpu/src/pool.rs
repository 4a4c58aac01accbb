//! Buffer reuse. A dropped tensor returns its buffer to a free list keyed by size class;
//! allocation takes from that list before it asks the driver. Classes are quarter-octave steps,
//! so no request wastes more than a quarter of its buffer (up to half when a larger free buffer
//! serves it, below).
//!
//! Two bounds, both on what the pool keeps rather than on what tensors need: the free lists
//! hold at most `budget` bytes (`KILN_POOL_BUDGET_MB`; by default live + free bytes stay within
//! the peak of live bytes, or [`KEEP_FLOOR`] when that is more, so a training step reuses its
//! buffers every step instead of giving them to the driver and allocating them again, and the
//! pool holds about what the step needs rather than every size class it ever used: a 2 GiB
//! floor let a CNN step whose live peak was 312 MiB pool 599). Within that, a request that
//! would grow the pool takes a free buffer up to twice its size, else the least recently used
//! free buffers go to make room; a class let go and asked for again raises what the pool keeps
//! by its size, so a step whose sizes shift settles with no allocation per step. With a `limit`
//! (`KILN_POOL_LIMIT` MiB or `set_limit`) a new buffer that would take live + free bytes past it
//! first lets free buffers go, largest first, and a dropped buffer that would leave the pool
//! past it goes to the driver. The limit never fails an allocation: tensors that need more than
//! it still get their memory, the pool just keeps nothing free for them.
//!
//! Blocks: a storage request from [`SPLIT_MIN`] up to the largest binding is not a buffer of its
//! own but a block of a shared one (a segment; `segments` keeps the books), rounded to 256 bytes
//! (or the adapter's offset alignment). Whole buffers of one size class cannot serve another, so
//! a step whose sizes shift (a CNN's activations, columns and gradients) kept buffers of every
//! size it met: W7 pooled 1.8× its live peak. Blocks split and merge, as PyTorch's caching
//! allocator's do, so freed memory serves whatever size comes next. A segment is
//! the request that first needs it, rounded up to [`SEGMENT_ROUND`]; only a wholly
//! free segment goes back to the driver, and only to keep a limit or a budget, or on `trim`
//! (not by LRU, see `PoolState::evict_lru`); a new segment the pool cannot make room for raises
//! what it keeps, as a re-requested class does. Kernels bind a block by its offset and size
//! ([`PooledBuffer::binding`]) and declare every tensor `read_write` (see `cache`): wgpu refuses
//! a buffer bound read-only and writable in one dispatch, which blocks of one segment would
//! otherwise often be. `KILN_POOL_SPLIT=0` turns blocks off (every request a whole buffer,
//! inputs read-only again), for comparisons.

use crate::segments::{Block, Segments};
use kiln_backend::{Error, Result};
// Fx hashing: the free lists are looked up on every allocation and release.
use rustc_hash::FxHashMap as HashMap;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

const MIN_CLASS: u64 = 256;

/// The smallest request served by a block; smaller ones get whole buffers of their size class,
/// which waste at most 256 bytes or a quarter. A new segment is the request rounded up to
/// [`SEGMENT_ROUND`]; later requests split it when it is free. Chosen on the allocation traces
/// of the suite's workloads (kiln-bench on lavapipe, replayed offline): W7 pools 305 MiB for a
/// 178 MiB live peak, where PyTorch's rules (blocks from 1 MiB, 20 MiB segments below 10 MiB,
/// else 2 MiB rounding) pool 299 but grow the small workloads' pools past the whole-buffer
/// pool's (W5 `--small` 42 MiB against 32, W9 28 against 18); from 4 MiB none grows.
pub(crate) const SPLIT_MIN: u64 = 4 << 20;
pub(crate) const SEGMENT_ROUND: u64 = 256 << 10;

/// `KILN_POOL_SPLIT=0` (or `off`, `false`) turns blocks off. In the browser they are always
/// off: blocks need every tensor bound `read_write` (see the module comment), and WebGPU
/// refuses two writable bindings of overlapping ranges in one dispatch, which one tensor read
/// twice by a kernel (`x * x`) is. wgpu's native backends do not check that rule.
pub(crate) fn split_enabled() -> bool {
    if cfg!(target_arch = "wasm32") {
        return false;
    }
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("KILN_POOL_SPLIT").map(|v| !matches!(v.trim(), "0" | "off" | "false")).unwrap_or(true)
    })
}

/// Live + free bytes the pool may keep however low the live peak: small workloads (tests,
/// inference of a small model) then never give buffers back, whatever order they free them in.
pub(crate) const KEEP_FLOOR: u64 = 256 << 20;

/// Bytes held by the pool: `live` in tensors, `pooled` in free lists, `allocations` made so far;
/// the context adds its pipeline, submit, bind-group and sync counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub live_bytes: u64,
    pub pooled_bytes: u64,
    pub allocations: u64,
    /// The most `live_bytes` since the device opened or the last
    /// [`GpuContext::reset_peak_memory_stats`](crate::GpuContext::reset_peak_memory_stats)
    /// (PyTorch's `max_memory_allocated`).
    pub peak_live_bytes: u64,
    /// The most bytes the pool held from the driver over the same span, in tensors and free
    /// (PyTorch's `max_memory_reserved`): `live_bytes + pooled_bytes`, plus what larger free
    /// buffers serving smaller requests add (`live_bytes` counts the classes asked for).
    pub peak_total_bytes: u64,
    pub pipelines: u64,
    pub submits: u64,
    /// Dispatches that reused a cached bind group instead of creating one.
    pub bind_groups_reused: u64,
    /// Times the host waited for the GPU (see [`Gpu::sync_count`](crate::Gpu::sync_count)).
    pub syncs: u64,
}

/// Storage buffers can be bound, copied from and copied to.
pub(crate) const STORAGE_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

#[derive(Default)]
struct PoolState {
    /// Free buffers by (class, usage), each with the tick it was last freed at.
    free: HashMap<(u64, wgpu::BufferUsages), Vec<(wgpu::Buffer, u64)>>,
    /// Shared storage buffers lent out in blocks; their free blocks count in `pooled_bytes`.
    segments: Segments<wgpu::Buffer>,
    /// Counts allocations and drops: the free buffer with the lowest tick is the least recently
    /// used, the first to go when the pool is over what it keeps.
    tick: u64,
    /// Bytes the pool keeps beyond the live peak: grown by each class that was let go and then
    /// asked for again (a step that needs more buffers than its live peak because sizes shift
    /// gets them, instead of giving one back and allocating it again every step).
    grown: u64,
    /// The classes let go most recently (at most `GHOSTS`), to recognise such a request.
    ghosts: VecDeque<(u64, wgpu::BufferUsages)>,
    live_bytes: u64,
    /// Bytes of the buffers lent to tensors: `live_bytes` plus what a larger free buffer
    /// serving a smaller request adds. Live + free bytes the pool holds are `lent + pooled`.
    lent_bytes: u64,
    /// The most `lent_bytes` (what the pool keeps follows it: see `PoolState::keep`).
    peak_lent: u64,
    pooled_bytes: u64,
    allocations: u64,
    /// Times the pool let buffers go to the driver (bind-group caches drop theirs then).
    released: u64,
    /// Most `live_bytes`, and most `live_bytes + pooled_bytes`, since creation or the last
    /// `reset_peak`.
    peak_live: u64,
    peak_total: u64,
    /// See the module comment; `None`: no limit.
    limit: Option<u64>,
    /// Live bytes per allocating op, kept only under `KILN_MEMORY_CENSUS=1`.
    census: Option<Census>,
    /// No `KILN_POOL_BUDGET_MB` given: live + free bytes may reach the live peak (see above).
    budget_follows_peak: bool,
}

/// Which ops' outputs hold the live bytes, now and at the live peak: the answer to "why is the
/// peak this high" that totals alone cannot give. Off by default (a map update per buffer).
#[derive(Default)]
struct Census {
    live: HashMap<&'static str, (u64, u64)>,
    at_peak: Vec<(&'static str, u64, u64)>,
}

impl Census {
    fn add(&mut self, op: &'static str, bytes: u64) {
        let e = self.live.entry(op).or_default();
        e.0 += 1;
        e.1 += bytes;
    }

    fn remove(&mut self, op: &'static str, bytes: u64) {
        if let Some(e) = self.live.get_mut(op) {
            e.0 -= 1;
            e.1 -= bytes;
        }
    }

    fn snapshot(&mut self) {
        self.at_peak = self.live.iter().filter(|(_, v)| v.0 > 0).map(|(k, v)| (*k, v.0, v.1)).collect();
        self.at_peak.sort_by_key(|e| std::cmp::Reverse(e.2));
    }
}

/// One line of [`BufferPool::census_at_peak`]: the op that allocated, its live buffers and
/// their bytes (size classes) at the moment live bytes peaked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CensusEntry {
    pub op: &'static str,
    pub buffers: u64,
    pub bytes: u64,
}

/// How many let-go classes the pool remembers.
const GHOSTS: usize = 64;

impl PoolState {
    /// Live + free bytes the pool keeps without `KILN_POOL_BUDGET_MB`: the peak of bytes lent, or
    /// `floor` when that is more, plus what re-requested classes added.
    fn keep(&self, floor: u64) -> u64 {
        floor.max(self.peak_lent) + self.grown
    }

    /// Lets the least recently used free buffers go until `extra` more bytes fit within `keep`
    /// (or none is left), remembering their classes. Segments stay: a free block serves any
    /// smaller request, so a segment is rarely stale the way a buffer of an unused class is, and
    /// letting wholly free ones go here made a CNN step (W7) give back segments it needed again
    /// later in the step: 385 MiB pooled where keeping them, as PyTorch's allocator does, pools
    /// 299. The limit, `trim` and the budget still give wholly free segments back.
    fn evict_lru(&mut self, extra: u64, keep: u64) {
        let mut any = false;
        while self.lent_bytes + self.pooled_bytes + extra > keep {
            let Some((key, i)) = self
                .free
                .iter()
                .flat_map(|(k, v)| v.iter().enumerate().map(move |(i, e)| (e.1, *k, i)))
                .min_by_key(|e| e.0)
                .map(|e| (e.1, e.2))
            else {
                break;
            };
            let list = self.free.get_mut(&key).expect("the key was just found");
            drop(list.swap_remove(i));
            if list.is_empty() {
                self.free.remove(&key);
            }
            self.pooled_bytes -= key.0;
            if self.ghosts.len() >= GHOSTS {
                self.ghosts.pop_front();
            }
            self.ghosts.push_back(key);
            any = true;
        }
        if any {
            self.released += 1;
        }
    }

    /// Gives a wholly free segment back to the driver.
    fn drop_segment(&mut self, seg: usize) {
        let (buffer, size) = self.segments.remove(seg);
        drop(buffer);
        self.pooled_bytes -= size;
    }

    /// A miss for a class the pool let go recently: keep that much more from now on.
    fn note_miss(&mut self, key: (u64, wgpu::BufferUsages)) {
        if let Some(i) = self.ghosts.iter().position(|g| *g == key) {
            self.ghosts.remove(i);
            self.grown += key.0;
        }
    }

    fn note_peaks(&mut self) {
        if self.live_bytes > self.peak_live
            && let Some(c) = &mut self.census
        {
            c.snapshot();
        }
        self.peak_live = self.peak_live.max(self.live_bytes);
        self.peak_lent = self.peak_lent.max(self.lent_bytes);
        self.peak_total = self.peak_total.max(self.lent_bytes + self.pooled_bytes);
    }

    /// The smallest free buffer of a class above `class` and at most twice it, with its class.
    fn take_larger(&mut self, class: u64, usage: wgpu::BufferUsages) -> Option<(wgpu::Buffer, u64)> {
        let mut next = size_class(class + 1);
        while next <= 2 * class {
            if let Some((b, _)) = self.free.get_mut(&(next, usage)).and_then(|v| v.pop()) {
                return Some((b, next));
            }
            next = size_class(next + 1);
        }
        None
    }

    /// Lets free buffers and wholly free segments go, largest first, until `extra` more bytes
    /// fit under the limit (or nothing more can go). Counts one release if any went.
    fn make_room(&mut self, extra: u64) {
        let Some(limit) = self.limit else { return };
        let mut any = false;
        while self.lent_bytes + self.pooled_bytes + extra > limit {
            let buffer = self.free.keys().copied().max_by_key(|k| k.0);
            match (buffer, self.segments.largest_empty()) {
                (Some(key), Some(seg)) if seg.1 > key.0 => {
                    self.drop_segment(seg.0);
                }
                (Some(key), _) => {
                    let list = self.free.get_mut(&key).expect("the key was just found");
                    drop(list.pop());
                    if list.is_empty() {
                        self.free.remove(&key);
                    }
                    self.pooled_bytes -= key.0;
                }
                (None, Some(seg)) => {
                    self.drop_segment(seg.0);
                }
                (None, None) => break,
            }
            any = true;
        }
        if any {
            self.released += 1;
        }
    }
}

/// `KILN_POOL_LIMIT`: MiB, a positive whole number; anything else means no limit.
pub(crate) fn parse_limit_mib(value: Option<&str>) -> Option<u64> {
    let mib = value?.trim().parse::<u64>().ok().filter(|&m| m > 0)?;
    mib.checked_mul(1 << 20)
}

pub(crate) struct BufferPool {
    state: Arc<Mutex<PoolState>>,
    max_buffer: u64,
    budget: u64,
    /// Blocks on (see the module comment): requests from `SPLIT_MIN` to `max_binding` bytes
    /// are blocks of segments, at offsets and sizes that are multiples of `align`.
    split: bool,
    max_binding: u64,
    align: u64,
}

/// A buffer, or a block of one, on loan from the pool; returned when dropped.
pub struct PooledBuffer {
    /// The whole buffer, or the segment the block lies in.
    buffer: Option<wgpu::Buffer>,
    /// Where in `buffer` the block lies; `None`: the whole buffer is this one's.
    block: Option<Block>,
    /// The op that asked for it (the memory census's key).
    op: &'static str,
    /// The buffer's class, and the class asked for (smaller when a larger free buffer served):
    /// live bytes count what was asked, as PyTorch's allocated bytes do, and the pool's bytes
    /// what it holds.
    class: u64,
    asked: u64,
    usage: wgpu::BufferUsages,
    state: Arc<Mutex<PoolState>>,
    budget: u64,
}

fn lock(state: &Mutex<PoolState>) -> MutexGuard<'_, PoolState> {
    // A panic elsewhere while holding the lock leaves plain counters behind: keep going.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn size_class(bytes: u64) -> u64 {
    if bytes <= MIN_CLASS {
        return MIN_CLASS;
    }
    let top = 1u64 << (63 - bytes.leading_zeros());
    let step = (top / 4).max(MIN_CLASS);
    bytes.div_ceil(step) * step
}

impl BufferPool {
    /// `limit`: see the module comment (from `ContextOptions::pool_limit`).
    pub(crate) fn new(limits: &wgpu::Limits, limit: Option<u64>) -> Self {
        let given = std::env::var("KILN_POOL_BUDGET_MB").ok().and_then(|v| v.parse::<u64>().ok()).map(|mb| mb << 20);
        let budget = given.unwrap_or(KEEP_FLOOR);
        BufferPool {
            state: Arc::new(Mutex::new(PoolState {
                limit,
                budget_follows_peak: given.is_none(),
                census: std::env::var("KILN_MEMORY_CENSUS").is_ok_and(|v| v == "1").then(Census::default),
                segments: Segments::new(SPLIT_MIN),
                ..Default::default()
            })),
            max_buffer: limits.max_buffer_size,
            budget,
            split: split_enabled(),
            max_binding: limits.max_storage_buffer_binding_size,
            align: u64::from(limits.min_storage_buffer_offset_alignment).max(256),
        }
    }

    /// Whether requests of a middle range are blocks of shared segments (see the module comment).
    pub(crate) fn splits(&self) -> bool {
        self.split
    }

    /// A storage buffer of at least `bytes` bytes (contents undefined). It may exceed
    /// `max_storage_buffer_binding_size`: `chunked` runs ops on such buffers in windows, and
    /// `dispatch` refuses to bind one whole.
    pub(crate) fn storage(&self, device: &wgpu::Device, op: &'static str, bytes: u64) -> Result<PooledBuffer> {
        self.get(device, op, bytes, STORAGE_USAGE)
    }

    pub(crate) fn get(
        &self,
        device: &wgpu::Device,
        op: &'static str,
        bytes: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<PooledBuffer> {
        if self.split && usage == STORAGE_USAGE && (SPLIT_MIN..=self.max_binding).contains(&bytes) {
            return self.block(device, op, bytes);
        }
        let class = size_class(bytes.max(4));
        if class > self.max_buffer {
            return Err(Error::OutOfMemory {
                op,
                msg: format!("{bytes} bytes exceeds this adapter's max_buffer_size of {} bytes", self.max_buffer),
            });
        }
        let reused = {
            let mut s = lock(&self.state);
            s.tick += 1;
            let mut found = s.free.get_mut(&(class, usage)).and_then(|v| v.pop()).map(|(b, _)| (b, class));
            if found.is_none() && s.budget_follows_peak && s.lent_bytes + s.pooled_bytes + class > s.keep(self.budget) {
                // A new buffer would take the pool past what it keeps: a free one up to twice
                // the size serves instead (PyTorch's allocator hands out a larger cached block
                // the same way), rather than the pool growing now and giving a buffer back at
                // the next drop, every step.
                found = s.take_larger(class, usage);
            }
            if let Some((_, taken)) = &found {
                let taken = *taken;
                s.pooled_bytes -= taken;
                s.live_bytes += class;
                s.lent_bytes += taken;
                if let Some(c) = &mut s.census {
                    c.add(op, class);
                }
                s.note_peaks();
            } else {
                if s.budget_follows_peak {
                    // Room for the new buffer within what the pool keeps: the least recently
                    // used free buffers go first (sizes a step no longer asks for).
                    s.note_miss((class, usage));
                    let keep = s.keep(self.budget);
                    s.evict_lru(class, keep);
                }
                s.make_room(class);
            }
            found
        };
        let asked = class;
        let (buffer, class) = match reused {
            Some(found) => found,
            None => (self.create(device, op, class, usage)?, class),
        };
        Ok(PooledBuffer {
            buffer: Some(buffer),
            block: None,
            op,
            class,
            asked,
            usage,
            state: self.state.clone(),
            budget: self.budget,
        })
    }

    /// A block of at least `bytes` (see the module comment): the best-fitting free block of a
    /// segment, or one of a new segment.
    fn block(&self, device: &wgpu::Device, op: &'static str, bytes: u64) -> Result<PooledBuffer> {
        let asked = bytes.next_multiple_of(self.align);
        // A segment never passes the largest binding, so a block of it binds like a buffer.
        let mut segment =
            asked.next_multiple_of(SEGMENT_ROUND).min(self.max_binding / self.align * self.align).max(asked);
        let mut s = lock(&self.state);
        s.tick += 1;
        let mut found = s.segments.take(asked);
        if found.is_none() {
            // A new segment would grow the pool: make room as for a new buffer.
            if s.budget_follows_peak {
                let keep = s.keep(self.budget);
                s.evict_lru(segment, keep);
                // Still past what the pool keeps with no free buffer left to let go: the free
                // bytes lie in segments, in pieces too small for this request. A step fragments
                // its segments the same way every time, so it needs this much more: keep it,
                // rather than letting free buffers go at every drop and asking again every step.
                let over = (s.lent_bytes + s.pooled_bytes + segment).saturating_sub(s.keep(self.budget));
                s.grown += over;
            }
            s.make_room(segment);
            if let Some(limit) = s.limit {
                // Under a limit a segment takes at most the room left (the request at least).
                let room = limit.saturating_sub(s.lent_bytes + s.pooled_bytes);
                segment = segment.min(room / self.align * self.align).max(asked);
            }
            drop(s);
            let buffer = self.create_buffer(device, op, segment, STORAGE_USAGE)?;
            s = lock(&self.state);
            s.allocations += 1;
            s.pooled_bytes += segment;
            s.segments.add(buffer, segment);
            found = s.segments.take(asked);
        }
        let block = found.expect("a new segment fits the request");
        s.pooled_bytes -= block.size;
        s.lent_bytes += block.size;
        s.live_bytes += asked;
        if let Some(c) = &mut s.census {
            c.add(op, asked);
        }
        s.note_peaks();
        Ok(PooledBuffer {
            buffer: Some(s.segments.buffer(block.seg).clone()),
            block: Some(block),
            op,
            class: block.size,
            asked,
            usage: STORAGE_USAGE,
            state: self.state.clone(),
            budget: self.budget,
        })
    }

    fn create(
        &self,
        device: &wgpu::Device,
        op: &'static str,
        class: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        let buffer = self.create_buffer(device, op, class, usage)?;
        let mut s = lock(&self.state);
        s.live_bytes += class;
        s.lent_bytes += class;
        s.allocations += 1;
        if let Some(c) = &mut s.census {
            c.add(op, class);
        }
        s.note_peaks();
        Ok(buffer)
    }

    /// A buffer from the driver; on out-of-memory the free lists go back first, and it tries once
    /// more.
    fn create_buffer(
        &self,
        device: &wgpu::Device,
        op: &'static str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        let make = || {
            crate::platform::scoped(device, wgpu::ErrorFilter::OutOfMemory, || {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kiln"),
                    size,
                    usage,
                    mapped_at_creation: false,
                })
            })
        };
        let (mut buffer, mut err) = make();
        if err.is_some() {
            // Give the driver back what the free lists hold, then try once more.
            self.trim();
            (buffer, err) = make();
        }
        if let Some(e) = err {
            return Err(Error::OutOfMemory { op, msg: format!("allocating {size} bytes: {e}") });
        }
        Ok(buffer)
    }

    /// Drops every pooled buffer and wholly free segment (a segment with blocks on loan stays,
    /// its free blocks with it).
    pub(crate) fn trim(&self) {
        let mut s = lock(&self.state);
        s.free.clear();
        s.segments.remove_empty();
        s.pooled_bytes = s.segments.free_bytes;
        s.released += 1;
        s.grown = 0;
        s.ghosts.clear();
    }

    /// Restarts the peaks from the current live and total bytes.
    pub(crate) fn reset_peak(&self) {
        let mut s = lock(&self.state);
        s.peak_live = s.live_bytes;
        s.peak_lent = s.lent_bytes;
        s.peak_total = s.lent_bytes + s.pooled_bytes;
        if let Some(c) = &mut s.census {
            c.snapshot();
        }
    }

    /// Sets (or with `None` lifts) the limit on live + free bytes; free buffers over a lower
    /// limit go at once.
    pub(crate) fn set_limit(&self, limit: Option<u64>) {
        let mut s = lock(&self.state);
        s.limit = limit;
        s.make_room(0);
    }

    pub(crate) fn limit(&self) -> Option<u64> {
        lock(&self.state).limit
    }

    /// How many times buffers have left the pool for good.
    pub(crate) fn released(&self) -> u64 {
        lock(&self.state).released
    }

    /// Live buffers by allocating op at the last live peak, largest first; empty unless the
    /// process started with `KILN_MEMORY_CENSUS=1`.
    pub(crate) fn census_at_peak(&self) -> Vec<CensusEntry> {
        let s = lock(&self.state);
        let Some(c) = &s.census else { return Vec::new() };
        c.at_peak.iter().map(|&(op, buffers, bytes)| CensusEntry { op, buffers, bytes }).collect()
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        let s = lock(&self.state);
        MemoryStats {
            live_bytes: s.live_bytes,
            pooled_bytes: s.pooled_bytes,
            allocations: s.allocations,
            peak_live_bytes: s.peak_live,
            peak_total_bytes: s.peak_total,
            ..Default::default()
        }
    }
}

/// A block of a buffer as a kernel binds it or a copy addresses it. `Copy`, unlike
/// `wgpu::BufferBinding`, so kernels can list their operands in arrays.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl<'a> Span<'a> {
    pub(crate) fn binding(self) -> wgpu::BufferBinding<'a> {
        wgpu::BufferBinding { buffer: self.buffer, offset: self.offset, size: wgpu::BufferSize::new(self.size) }
    }
}

impl PooledBuffer {
    /// The whole buffer (a segment, for a block): bind or copy through [`binding`](Self::binding)
    /// instead, which knows where the block lies.
    pub fn buffer(&self) -> &wgpu::Buffer {
        // Only `drop` takes the buffer out.
        self.buffer.as_ref().expect("pooled buffer present until drop")
    }

    /// Where this one's bytes start in [`buffer`](Self::buffer).
    pub fn offset(&self) -> u64 {
        self.block.map_or(0, |b| b.offset)
    }

    /// Bytes it may bind: the request rounded up, the whole buffer's size for a buffer of its own.
    pub fn size(&self) -> u64 {
        self.block.map_or(self.class, |b| b.size)
    }

    /// This one's bytes, for a bind group entry or a copy.
    pub(crate) fn binding(&self) -> Span<'_> {
        Span { buffer: self.buffer(), offset: self.offset(), size: self.size() }
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let Some(buffer) = self.buffer.take() else { return };
        let mut s = lock(&self.state);
        s.live_bytes -= self.asked;
        s.lent_bytes -= self.class;
        if let Some(c) = &mut s.census {
            c.remove(self.op, self.asked);
        }
        if let Some(block) = self.block {
            drop(buffer);
            s.pooled_bytes += block.size;
            let empty = s.segments.give(block);
            if empty {
                // A wholly free segment past the limit or the budget goes, as a free buffer would.
                let over_limit = s.limit.is_some_and(|l| s.lent_bytes + s.pooled_bytes > l);
                let over_budget = !s.budget_follows_peak && s.pooled_bytes > self.budget;
                if over_limit || over_budget {
                    s.drop_segment(block.seg);
                    s.released += 1;
                }
            }
            if s.budget_follows_peak {
                let keep = s.keep(self.budget);
                s.evict_lru(0, keep);
            }
            return;
        }
        // Live + free only passes the limit here if live bytes alone had passed it.
        let under_limit = s.limit.is_none_or(|l| s.lent_bytes + s.pooled_bytes + self.class <= l);
        // Live + free up to what the pool keeps (the live peak or the floor, see
        // `PoolState::keep`): the next step finds its buffers, and the pool stays near what the
        // step needs rather than its high-water mark plus every size class it ever missed. The
        // buffer just freed is the most recently used: others go before it.
        let keep = s.budget_follows_peak || s.pooled_bytes + self.class <= self.budget;
        if under_limit && keep {
            s.tick += 1;
            let tick = s.tick;
            s.pooled_bytes += self.class;
            s.free.entry((self.class, self.usage)).or_default().push((buffer, tick));
            if s.budget_follows_peak {
                let keep = s.keep(self.budget);
                s.evict_lru(0, keep);
            }
        } else {
            s.released += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_limit_mib, size_class};

    #[test]
    fn limit_from_the_environment_is_whole_mib() {
        assert_eq!(parse_limit_mib(Some("512")), Some(512 << 20));
        assert_eq!(parse_limit_mib(Some(" 1 ")), Some(1 << 20));
        for bad in [None, Some(""), Some("0"), Some("-5"), Some("1.5"), Some("lots"), Some("99999999999999999999")] {
            assert_eq!(parse_limit_mib(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn classes_waste_at_most_a_quarter() {
        for bytes in [1u64, 255, 256, 257, 1000, 4096, 5000, 1 << 20, (1 << 20) + 1, 123_456_789] {
            let c = size_class(bytes);
            assert!(c >= bytes);
            assert!(c <= 256 || (c as f64) <= bytes as f64 * 1.25 + 256.0, "{bytes} -> {c}");
        }
    }
}
