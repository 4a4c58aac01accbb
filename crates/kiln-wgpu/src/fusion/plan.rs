//! Turning the pending list into kernels. Ops are taken in record order; an op joins the open
//! kernel when it has the same element count and reads every producer inside that kernel
//! index-for-index (contiguous, offset 0), within the op and binding caps. A producer read any
//! other way (a transpose, a broadcast, a narrow) is written by its kernel and read back from
//! memory by a later one. An output is written only when someone still holds it or a later
//! kernel reads it.

use super::codegen::{Arg, GroupPlan, LoadKind, LoadPlan, OpPlan};
use super::{Node, Src};
use crate::pool::Span;
use crate::{context::GpuContext, kernels, pool::PooledBuffer};
use kiln_backend::{DType, Layout, Result};
use std::sync::Arc;

/// Below this many elements a kernel is one workgroup or so either way: keep it scalar (and its
/// source small).
const VEC4_MIN: usize = 1024;

/// Ops per kernel: keeps the generated WGSL small enough to compile quickly everywhere. A run
/// (see [`RunTracker`]) counts as `MIN_RUN` ops however long it is.
const MAX_OPS: usize = 64;

/// Ops per kernel counting every op of a run: bounds the metadata (2 words per op).
const MAX_NODES: usize = 4096;

/// Runs at least this long become a loop in the kernel; shorter ones are written out.
const MIN_RUN: usize = 4;

const OP: &str = "fused elementwise";

pub(crate) struct Done {
    pub kernels: u64,
    pub outputs: u64,
}

/// A consumer may compute its producer inline only when it reads element i at index i.
fn inline_read(layout: &Layout, numel: usize) -> bool {
    layout.is_contiguous() && layout.offset() == 0 && layout.numel() == numel
}

/// Finds runs: ops that apply one function again and again to the previous op's value, every
/// other operand the same (`y = y + 1` a thousand times, W8b). A run of any length becomes one
/// loop whose trip count and parameters are metadata, so chains of every length share one
/// kernel and its pipeline. Planning and code generation walk the ops with the same tracker.
#[derive(Default)]
struct RunTracker {
    /// The first op of the open run and how many ops it holds.
    first: usize,
    len: usize,
    /// The operand that carries the previous value (set once the run has two ops).
    chained: Option<usize>,
}

impl RunTracker {
    fn start(&mut self, j: usize) {
        *self = RunTracker { first: j, len: 1, chained: None };
    }

    /// Whether op `j` (the op after the run's last) extends the run; if not, it starts a new one.
    fn step(&mut self, nodes: &[Node], readers: &[u32], alive: &[bool], j: usize) -> bool {
        let extends = self.len > 0 && self.first + self.len == j && self.link(nodes, readers, alive, j);
        if extends {
            self.len += 1;
        } else {
            self.start(j);
        }
        extends
    }

    fn link(&mut self, nodes: &[Node], readers: &[u32], alive: &[bool], j: usize) -> bool {
        let (prev, node, first) = (&nodes[j - 1], &nodes[j], &nodes[self.first]);
        // The previous value must be needed by nothing but this op: it is never stored.
        if !Arc::ptr_eq(&node.sig, &prev.sig) || node.sig.random || alive[j - 1] || readers[j - 1] != 1 {
            return false;
        }
        let at = node
            .inputs
            .iter()
            .position(|(src, l)| matches!(src, Src::Node(i) if *i == j - 1) && inline_read(l, node.numel));
        let Some(at) = at else { return false };
        if self.chained.is_some_and(|c| c != at) || node.numel != first.numel {
            return false;
        }
        let same = node.inputs.iter().zip(&first.inputs).enumerate().all(|(k, ((s, l), (fs, fl)))| {
            k == at || (source_key(s) == source_key(fs) && l == fl && !matches!(s, Src::Node(i) if *i >= self.first))
        });
        if same {
            self.chained = Some(at);
        }
        same
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SourceKey {
    Buf(usize),
    Node(usize),
}

fn source_key(src: &Src) -> SourceKey {
    match src {
        Src::Buf(b) => SourceKey::Buf(Arc::as_ptr(b) as usize),
        Src::Node(i) => SourceKey::Node(*i),
    }
}

/// The open kernel while ops are assigned in order; joining is checked incrementally.
struct Grouping<'a> {
    nodes: &'a [Node],
    alive: &'a [bool],
    /// The last op reading each op's output (`NONE` when nothing pending reads it).
    last_use: &'a [usize],
    /// How many operands of pending ops read each op's output.
    readers: &'a [u32],
    max_bindings: usize,
    start: usize,
    /// Distinct buffers the open kernel reads.
    sources: Vec<SourceKey>,
    /// For each op index m: how many unheld ops of the open kernel are last read by op m.
    ending: Vec<(usize, u32)>,
    /// Outputs the open kernel writes if it closes now.
    outputs: usize,
    /// Ops the open kernel's source spells out (a run counts `MIN_RUN`).
    source_ops: usize,
    runs: RunTracker,
}

const NONE: usize = usize::MAX;

impl Grouping<'_> {
    fn open(&mut self, j: usize) {
        self.start = j;
        self.sources.clear();
        self.outputs = 0;
        self.source_ops = 0;
        self.runs = RunTracker::default();
        self.add(j);
    }

    /// Adds node `j` (already checked) to the open kernel.
    fn add(&mut self, j: usize) {
        self.runs.step(self.nodes, self.readers, self.alive, j);
        if self.runs.len <= MIN_RUN {
            self.source_ops += 1;
        }
        let node = &self.nodes[j];
        for (src, _) in &node.inputs {
            if matches!(src, Src::Node(i) if *i >= self.start) {
                continue;
            }
            let key = source_key(src);
            if !self.sources.contains(&key) {
                self.sources.push(key);
            }
        }
        self.outputs -= self.ended_by(j);
        let last = self.last_use[j];
        if self.alive[j] || last != NONE {
            self.outputs += 1;
        }
        if !self.alive[j] && last != NONE {
            let e = &mut self.ending[last];
            *e = if e.0 == self.start { (e.0, e.1 + 1) } else { (self.start, 1) };
        }
    }

    /// Unheld ops of the open kernel whose last reader is `j`: once `j` joins, they need no store.
    fn ended_by(&self, j: usize) -> usize {
        let e = self.ending[j];
        if e.0 == self.start { e.1 as usize } else { 0 }
    }

    /// Whether node `j` may join the open kernel (nodes `start..j`).
    fn joins(&self, j: usize) -> bool {
        let node = &self.nodes[j];
        if self.source_ops >= MAX_OPS || j - self.start >= MAX_NODES || self.nodes[self.start].numel != node.numel {
            return false;
        }
        let mut new_sources = 0;
        for (k, (src, layout)) in node.inputs.iter().enumerate() {
            if let Src::Node(i) = src
                && *i >= self.start
            {
                if !inline_read(layout, node.numel) {
                    return false;
                }
                continue;
            }
            let key = source_key(src);
            let seen = self.sources.contains(&key) || node.inputs[..k].iter().any(|(s, _)| source_key(s) == key);
            new_sources += usize::from(!seen);
        }
        let mine = usize::from(self.alive[j] || self.last_use[j] != NONE);
        self.sources.len() + new_sources + self.outputs - self.ended_by(j) + mine <= self.max_bindings
    }
}

impl GpuContext {
    /// Plans, builds and dispatches kernels for `nodes`; the caller holds the pending lock.
    pub(crate) fn run_pending(&self, nodes: Vec<super::Node>) -> Result<Done> {
        let n = nodes.len();
        // Strong for the flush: a tensor still held now is written even if dropped meanwhile.
        let held: Vec<Option<Arc<PooledBuffer>>> = nodes.iter().map(|n| n.out_buf.upgrade()).collect();
        let alive: Vec<bool> = held.iter().map(Option::is_some).collect();
        let mut last_use = vec![NONE; n];
        let mut readers = vec![0u32; n];
        for (j, node) in nodes.iter().enumerate() {
            for (src, _) in &node.inputs {
                if let Src::Node(i) = src {
                    last_use[*i] = j;
                    readers[*i] += 1;
                }
            }
        }
        // Binding 0 is the metadata.
        let max_bindings = (self.limits.max_storage_buffers_per_shader_stage as usize).saturating_sub(1).max(4);
        let mut grouping = Grouping {
            nodes: &nodes,
            alive: &alive,
            last_use: &last_use,
            readers: &readers,
            max_bindings,
            start: 0,
            sources: Vec::new(),
            ending: vec![(NONE, 0); n],
            outputs: 0,
            source_ops: 0,
            runs: RunTracker::default(),
        };
        let mut starts = Vec::new();
        let mut group_of = vec![0usize; n];
        for (j, group) in group_of.iter_mut().enumerate() {
            if !starts.is_empty() && grouping.joins(j) {
                grouping.add(j);
            } else {
                starts.push(j);
                grouping.open(j);
            }
            *group = starts.len() - 1;
        }
        // Buffers for every output that will be written: the holder's, or a temporary one for
        // an intermediate only a later kernel reads. Temporaries are taken just before their
        // kernel and returned after their last reader, so a long chain reuses one or two.
        let last_reader: Vec<usize> =
            (0..n).map(|k| if last_use[k] == NONE { group_of[k] } else { group_of[last_use[k]] }).collect();
        let mut release: Vec<Vec<usize>> = vec![Vec::new(); starts.len()];
        for (k, &g) in last_reader.iter().enumerate() {
            if alive[k] || g != group_of[k] {
                release[g].push(k);
            }
        }
        let mut bufs: Vec<Option<Arc<PooledBuffer>>> = held;
        let mut done = Done { kernels: 0, outputs: 0 };
        for (g, &start) in starts.iter().enumerate() {
            let end = starts.get(g + 1).copied().unwrap_or(n);
            for k in start..end {
                if bufs[k].is_none() && last_reader[k] != g {
                    let bytes = nodes[k].numel as u64 * kernels::gpu_size(nodes[k].sig.out);
                    bufs[k] = Some(Arc::new(self.pool.storage(&self.device, OP, bytes)?));
                }
            }
            done.outputs += self.run_group(&nodes, start..end, &bufs, &readers, &alive)?;
            done.kernels += 1;
            for &k in &release[g] {
                bufs[k] = None;
            }
        }
        Ok(done)
    }

    /// Builds (or reuses) and dispatches the kernel of nodes `range`; returns outputs written.
    fn run_group(
        &self,
        nodes: &[Node],
        range: std::ops::Range<usize>,
        bufs: &[Option<Arc<PooledBuffer>>],
        readers: &[u32],
        alive: &[bool],
    ) -> Result<u64> {
        let start = range.start;
        let numel = nodes[start].numel;
        // Runs of the group as (first op, length, chained operand), found as planning found them.
        let mut runs: Vec<(usize, usize, Option<usize>)> = Vec::new();
        let mut tracker = RunTracker::default();
        for k in range.clone() {
            if tracker.step(nodes, readers, alive, k) {
                if let Some(last) = runs.last_mut() {
                    *last = (tracker.first, tracker.len, tracker.chained);
                }
            } else {
                runs.push((k, 1, None));
            }
        }
        // The plan op computing each node's value (a run's ops all map to its loop).
        let mut op_of = vec![0usize; range.len()];
        // (op, first node, nodes) of each run that became a loop.
        let mut loops: Vec<(usize, usize, usize)> = Vec::new();
        let mut plan = GroupPlan {
            fns: Vec::new(),
            ops: Vec::new(),
            loads: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            vec4: false,
        };
        // Binding sources in order, and the buffers behind them.
        let mut sources: Vec<SourceKey> = Vec::new();
        let mut buffers: Vec<Span<'_>> = Vec::new();
        // (source binding, layout) per load, for dedup and metadata.
        let mut load_layouts: Vec<(usize, &Layout)> = Vec::new();
        let members = runs.iter().flat_map(|&(first, len, chained)| {
            let looped = len >= MIN_RUN;
            let heads = if looped { 1 } else { len };
            (first..first + heads).map(move |k| (k, if looped { Some((len, chained)) } else { None }))
        });
        let mut heads = Vec::with_capacity(range.len());
        for (k, run) in members {
            let node = &nodes[k];
            let op = plan.ops.len();
            heads.push(k);
            match run {
                Some((len, _)) => {
                    op_of[k - start..k - start + len].fill(op);
                    loops.push((op, k, len));
                }
                None => op_of[k - start] = op,
            }
            let func = match plan.fns.iter().position(|f| Arc::ptr_eq(f, &node.sig)) {
                Some(f) => f,
                None => {
                    plan.fns.push(node.sig.clone());
                    plan.fns.len() - 1
                }
            };
            let mut args = Vec::with_capacity(node.inputs.len());
            for (a, (src, layout)) in node.inputs.iter().enumerate() {
                if let Src::Node(i) = src
                    && *i >= start
                {
                    args.push(Arg::Local(op_of[*i - start]));
                    continue;
                }
                let key = source_key(src);
                let binding = match sources.iter().position(|s| *s == key) {
                    Some(b) => b,
                    None => {
                        let buffer = match src {
                            Src::Buf(b) => b.binding(),
                            Src::Node(i) => match &bufs[*i] {
                                Some(b) => b.binding(),
                                None => unreachable_output(*i)?,
                            },
                        };
                        sources.push(key);
                        buffers.push(buffer);
                        plan.inputs.push(node.sig.in_dtypes[a]);
                        sources.len() - 1
                    }
                };
                let kind = load_kind(layout);
                let same = |(l, (b, lay)): &(usize, &(usize, &Layout))| {
                    *b == binding
                        && plan.loads[*l].kind == kind
                        && if kind == LoadKind::Scalar { lay.offset() == layout.offset() } else { *lay == layout }
                };
                let load = match load_layouts.iter().enumerate().find(same).map(|(l, _)| l) {
                    Some(l) => l,
                    None => {
                        plan.loads.push(LoadPlan { binding, dtype: node.sig.in_dtypes[a], kind });
                        load_layouts.push((binding, layout));
                        plan.loads.len() - 1
                    }
                };
                args.push(Arg::Load(load));
            }
            plan.ops.push(OpPlan { func, args, run: run.and_then(|(_, chained)| chained) });
        }
        let mut written = 0;
        for k in range.clone() {
            // Only outputs someone holds, or a later kernel reads, got a buffer.
            if let Some(b) = &bufs[k] {
                plan.outputs.push((op_of[k - start], nodes[k].sig.out));
                buffers.push(b.binding());
                written += 1;
            }
        }
        if plan.outputs.is_empty() {
            return Ok(0);
        }
        plan.vec4 = vec4_ok(&plan, &load_layouts, numel);
        let invocations = if plan.vec4 { numel / 4 } else { numel };
        // Metadata: [numel, 0, params per op (and key words per random op), one word per load,
        // layout blocks of strided loads].
        // Word 1 is always 0: the kernel cannot know that (see `kiln_opaque_*` in fused.wgsl).
        // A loop's two words are its trip count and where its ops' parameters start: a block
        // after everything else, so no other word moves with the run's length.
        let mut meta = vec![invocations as u32, 0];
        let mut blocks = Vec::with_capacity(loops.len());
        let mut next_loop = loops.iter().peekable();
        for (op, &k) in heads.iter().enumerate() {
            if let Some(&(_, first, len)) = next_loop.next_if(|l| l.0 == op) {
                blocks.push((meta.len() + 1, first, len));
                meta.extend([len as u32, 0]);
                continue;
            }
            meta.extend_from_slice(&nodes[k].params);
            meta.extend(nodes[k].philox.iter().flatten());
        }
        let words = meta.len();
        meta.resize(words + plan.loads.len(), 0);
        for (l, (_, layout)) in load_layouts.iter().enumerate() {
            meta[words + l] = match plan.loads[l].kind {
                LoadKind::Contiguous | LoadKind::Scalar => layout.offset() as u32,
                LoadKind::Strided | LoadKind::StridedRows => {
                    let base = meta.len() as u32;
                    kernels::push_layout(OP, &mut meta, layout)?;
                    base
                }
            };
        }
        for (word, first, len) in blocks {
            meta[word] = meta.len() as u32;
            for node in &nodes[first..first + len] {
                meta.extend_from_slice(&node.params);
            }
        }
        let key = plan.key();
        let kernel = self.cache.get(&self.device, OP, &key, || plan.source())?;
        self.dispatch(OP, &kernel, &buffers, &meta, (invocations as u32).div_ceil(kernels::WG))?;
        Ok(written)
    }
}

/// Four elements per invocation when every binding holds 4-byte elements and every contiguous
/// load starts on a 4-element boundary (pool buffers are multiples of 256 bytes, so `vec4`
/// arrays cover them).
fn vec4_ok(plan: &GroupPlan, loads: &[(usize, &Layout)], numel: usize) -> bool {
    let wide = |d: &DType| *d != DType::F16;
    numel.is_multiple_of(4)
        && numel >= VEC4_MIN
        && plan.inputs.iter().all(wide)
        && plan.outputs.iter().all(|(_, d)| wide(d))
        && plan
            .loads
            .iter()
            .zip(loads)
            .all(|(l, (_, layout))| l.kind != LoadKind::Contiguous || layout.offset().is_multiple_of(4))
}

fn unreachable_output<T>(i: usize) -> Result<T> {
    Err(kiln_backend::Error::Backend { op: OP, msg: format!("fused op {i} is read but has no buffer") })
}

fn load_kind(layout: &Layout) -> LoadKind {
    if layout.strides().iter().zip(layout.shape()).all(|(&s, &d)| s == 0 || d == 1) {
        LoadKind::Scalar
    } else if layout.is_contiguous() {
        LoadKind::Contiguous
    } else if layout.strides().last() == Some(&1) && layout.shape().last().is_some_and(|d| d % 4 == 0) {
        LoadKind::StridedRows
    } else {
        LoadKind::Strided
    }
}
