//! Turning the pending list into kernels. Ops are taken in record order; an op joins the open
//! kernel when it has the same element count and reads every producer inside that kernel
//! index-for-index (contiguous, offset 0), within the op and binding caps. A producer read any
//! other way (a transpose, a broadcast, a narrow) is written by its kernel and read back from
//! memory by a later one. An output is written only when someone still holds it or a later
//! kernel reads it.

use super::codegen::{Arg, GroupPlan, LoadKind, LoadPlan, OpPlan};
use super::{Node, Src};
use crate::{context::GpuContext, kernels, pool::PooledBuffer};
use kiln_backend::{DType, Layout, Result};
use std::sync::Arc;

/// Below this many elements a kernel is one workgroup or so either way: keep it scalar (and its
/// source small).
const VEC4_MIN: usize = 1024;

/// Ops per kernel: keeps the generated WGSL small enough to compile quickly everywhere.
const MAX_OPS: usize = 64;

const OP: &str = "fused elementwise";

pub(crate) struct Done {
    pub kernels: u64,
    pub outputs: u64,
}

/// A consumer may compute its producer inline only when it reads element i at index i.
fn inline_read(layout: &Layout, numel: usize) -> bool {
    layout.is_contiguous() && layout.offset() == 0 && layout.numel() == numel
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
    max_bindings: usize,
    start: usize,
    /// Distinct buffers the open kernel reads.
    sources: Vec<SourceKey>,
    /// For each op index m: how many unheld ops of the open kernel are last read by op m.
    ending: Vec<(usize, u32)>,
    /// Outputs the open kernel writes if it closes now.
    outputs: usize,
}

const NONE: usize = usize::MAX;

impl Grouping<'_> {
    fn open(&mut self, j: usize) {
        self.start = j;
        self.sources.clear();
        self.outputs = 0;
        self.add(j);
    }

    /// Adds node `j` (already checked) to the open kernel.
    fn add(&mut self, j: usize) {
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
        if j - self.start >= MAX_OPS || self.nodes[self.start].numel != node.numel {
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
        for (j, node) in nodes.iter().enumerate() {
            for (src, _) in &node.inputs {
                if let Src::Node(i) = src {
                    last_use[*i] = j;
                }
            }
        }
        // Binding 0 is the metadata.
        let max_bindings = (self.limits.max_storage_buffers_per_shader_stage as usize).saturating_sub(1).max(4);
        let mut grouping = Grouping {
            nodes: &nodes,
            alive: &alive,
            last_use: &last_use,
            max_bindings,
            start: 0,
            sources: Vec::new(),
            ending: vec![(NONE, 0); n],
            outputs: 0,
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
            done.outputs += self.run_group(&nodes, start..end, &bufs)?;
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
    ) -> Result<u64> {
        let start = range.start;
        let numel = nodes[start].numel;
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
        let mut buffers: Vec<&wgpu::Buffer> = Vec::new();
        // (source binding, layout) per load, for dedup and metadata.
        let mut load_layouts: Vec<(usize, &Layout)> = Vec::new();
        for k in range.clone() {
            let node = &nodes[k];
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
                    args.push(Arg::Local(*i - start));
                    continue;
                }
                let key = source_key(src);
                let binding = match sources.iter().position(|s| *s == key) {
                    Some(b) => b,
                    None => {
                        let buffer = match src {
                            Src::Buf(b) => b.buffer(),
                            Src::Node(i) => match &bufs[*i] {
                                Some(b) => b.buffer(),
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
            plan.ops.push(OpPlan { func, args });
        }
        let mut written = 0;
        for k in range.clone() {
            // Only outputs someone holds, or a later kernel reads, got a buffer.
            if let Some(b) = &bufs[k] {
                plan.outputs.push((k - start, nodes[k].sig.out));
                buffers.push(b.buffer());
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
        let mut meta = vec![invocations as u32, 0];
        for k in range.clone() {
            meta.extend_from_slice(&nodes[k].params);
            meta.extend(nodes[k].philox.iter().flatten());
        }
        let words = meta.len();
        meta.resize(words + plan.loads.len(), 0);
        for (l, (_, layout)) in load_layouts.iter().enumerate() {
            meta[words + l] = match plan.loads[l].kind {
                LoadKind::Contiguous | LoadKind::Scalar => layout.offset() as u32,
                LoadKind::Strided => {
                    let base = meta.len() as u32;
                    kernels::push_layout(OP, &mut meta, layout)?;
                    base
                }
            };
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
    } else {
        LoadKind::Strided
    }
}
