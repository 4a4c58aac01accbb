//! Elementwise fusion by deferred dispatch. An elementwise op (unary, binary, where, cast,
//! fill, random) does not dispatch: it allocates its output buffer as before, records itself in the
//! context's pending list and returns. The list is flushed, as a few generated kernels, before
//! anything else can touch those buffers: any other dispatch or copy, a submit, a readback, or
//! `GpuStorage::buffer()` interop.
//!
//! A pending op holds strong references to the buffers it reads and only a *weak* one to its
//! own output: at flush time an output nobody holds any more is not written (its buffer may
//! already serve another tensor), and consumers that read it index-for-index compute it inline.
//! See [`plan`] for how ops are grouped into kernels and [`codegen`] for the WGSL.

pub(crate) mod codegen;
mod plan;

use crate::{context::GpuContext, kernels::elementwise::Spec, pool::PooledBuffer, storage::GpuStorage};
use codegen::FnSig;
use kiln_backend::{DType, Layout, Result};
use std::cell::Cell;
// Fx hashing: these maps are touched once or twice per recorded op, with pointer-sized or short
// keys that SipHash's DoS resistance does nothing for.
use rustc_hash::FxHashMap as HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Pending ops past this count are flushed at once, bounding the buffers they keep alive.
const MAX_PENDING: usize = 1024;

/// 0: not decided yet (read `KILN_FUSION` on first use), 1: on, 2: off.
static SWITCH: AtomicU8 = AtomicU8::new(0);

/// Turns elementwise fusion on or off for every GPU device (default: on, or `KILN_FUSION=0`
/// for off). Work already recorded is unaffected; results are the same either way.
pub fn set_fusion(on: bool) {
    SWITCH.store(if on { 1 } else { 2 }, Ordering::SeqCst);
}

/// Whether elementwise ops are deferred and fused.
pub fn fusion_enabled() -> bool {
    match SWITCH.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = std::env::var("KILN_FUSION").map(|v| v.trim() != "0").unwrap_or(true);
            // A concurrent `set_fusion` wins over the environment.
            let _ = SWITCH.compare_exchange(0, if on { 1 } else { 2 }, Ordering::SeqCst, Ordering::SeqCst);
            SWITCH.load(Ordering::Relaxed) == 1
        }
    }
}

/// What fusion did on one device since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FusionStats {
    /// Elementwise ops recorded for fusion.
    pub recorded: u64,
    /// Fused kernels dispatched.
    pub kernels: u64,
    /// Op outputs those kernels wrote (the rest were dropped before the flush or only read inline).
    pub outputs_written: u64,
    /// Flushes that dispatched at least one kernel.
    pub flushes: u64,
}

/// Where a pending op's input comes from.
pub(crate) enum Src {
    /// The output of the pending op with this index in the list.
    Node(usize),
    /// A buffer that already holds (or, by submission order, will hold) the data.
    Buf(Arc<PooledBuffer>),
}

pub(crate) struct Node {
    pub sig: Arc<FnSig>,
    pub params: [u32; 2],
    /// A random op's key words (its `sig.random` is set).
    pub philox: Option<[u32; 4]>,
    pub inputs: Vec<(Src, Layout)>,
    pub numel: usize,
    pub out_buf: Weak<PooledBuffer>,
}

#[derive(Default)]
pub(crate) struct Pending {
    pub nodes: Vec<Node>,
    /// Output buffer identity → node index, to wire a consumer to its pending producer.
    by_buffer: HashMap<usize, usize>,
    /// Every op expression seen, by value (kept across flushes; the set of specs is finite).
    sigs: HashMap<String, Vec<Arc<FnSig>>>,
}

impl Pending {
    fn intern(&mut self, spec: &Spec) -> Arc<FnSig> {
        let same = |f: &&Arc<FnSig>| {
            f.out == spec.out
                && f.random == spec.philox.is_some()
                && f.in_dtypes.iter().eq(spec.inputs.iter().map(|d| &d.0))
        };
        if let Some(f) = self.sigs.get(&spec.value).and_then(|v| v.iter().find(same)) {
            return f.clone();
        }
        let f = Arc::new(FnSig::new(
            spec.value.clone(),
            spec.inputs.iter().map(|d| d.0).collect(),
            spec.out,
            spec.philox.is_some(),
        ));
        self.sigs.entry(spec.value.clone()).or_default().push(f.clone());
        f
    }
}

#[derive(Default)]
pub(crate) struct Fusion {
    pending: Mutex<Pending>,
    recorded: AtomicU64,
    kernels: AtomicU64,
    outputs_written: AtomicU64,
    flushes: AtomicU64,
}

thread_local! {
    /// Set while this thread flushes, so the dispatches of the flush itself do not recurse.
    static FLUSHING: Cell<bool> = const { Cell::new(false) };
}

struct FlushingGuard;

impl FlushingGuard {
    fn enter() -> Self {
        FLUSHING.with(|f| f.set(true));
        FlushingGuard
    }
}

impl Drop for FlushingGuard {
    fn drop(&mut self) {
        FLUSHING.with(|f| f.set(false));
    }
}

impl GpuContext {
    /// Records an elementwise op for fused execution and returns its (not yet written) output.
    pub(crate) fn record_elementwise(
        self: &Arc<Self>,
        op: &'static str,
        spec: &Spec,
        inputs: &[(&GpuStorage, &Layout)],
        params: [u32; 2],
        numel: usize,
    ) -> Result<GpuStorage> {
        if self.is_lost() {
            self.check(op)?;
        }
        for (_, layout) in inputs {
            // The kernel's metadata is u32: report what does not fit at record time.
            if layout.storage_extent() > u32::MAX as usize || layout.numel() > u32::MAX as usize {
                return Err(kiln_backend::Error::OutOfMemory {
                    op,
                    msg: format!("layout {layout:?} needs indices past u32"),
                });
            }
        }
        let out = GpuStorage::alloc(self, op, spec.out, numel)?;
        if numel == 0 {
            return Ok(out);
        }
        let mut st = self.fusion.pending.lock().unwrap_or_else(|e| e.into_inner());
        let inputs = inputs
            .iter()
            .map(|(s, l)| {
                let src = match st.by_buffer.get(&s.identity()) {
                    Some(&n) => Src::Node(n),
                    None => Src::Buf(s.shared_buffer().clone()),
                };
                (src, (*l).clone())
            })
            .collect();
        let index = st.nodes.len();
        let sig = st.intern(spec);
        st.nodes.push(Node {
            sig,
            params,
            philox: spec.philox,
            inputs,
            numel,
            out_buf: Arc::downgrade(out.shared_buffer()),
        });
        st.by_buffer.insert(out.identity(), index);
        self.fusion.recorded.fetch_add(1, Ordering::Relaxed);
        if st.nodes.len() >= MAX_PENDING {
            self.flush_locked(&mut st)?;
        }
        Ok(out)
    }

    /// Dispatches every pending elementwise op. Called before any other GPU work is recorded.
    pub(crate) fn flush_fusion(&self) -> Result<()> {
        if FLUSHING.with(|f| f.get()) {
            return Ok(());
        }
        let mut st = self.fusion.pending.lock().unwrap_or_else(|e| e.into_inner());
        if st.nodes.is_empty() {
            return Ok(());
        }
        self.flush_locked(&mut st)
    }

    /// Holds the pending lock throughout, so another thread's dispatch that depends on these
    /// outputs cannot be recorded before them.
    fn flush_locked(&self, st: &mut Pending) -> Result<()> {
        let nodes = std::mem::take(&mut st.nodes);
        st.by_buffer.clear();
        let _guard = FlushingGuard::enter();
        let done = self.run_pending(nodes)?;
        if done.kernels > 0 {
            self.fusion.flushes.fetch_add(1, Ordering::Relaxed);
        }
        self.fusion.kernels.fetch_add(done.kernels, Ordering::Relaxed);
        self.fusion.outputs_written.fetch_add(done.outputs, Ordering::Relaxed);
        Ok(())
    }

    /// What fusion did on this device so far.
    pub fn fusion_stats(&self) -> FusionStats {
        FusionStats {
            recorded: self.fusion.recorded.load(Ordering::Relaxed),
            kernels: self.fusion.kernels.load(Ordering::Relaxed),
            outputs_written: self.fusion.outputs_written.load(Ordering::Relaxed),
            flushes: self.fusion.flushes.load(Ordering::Relaxed),
        }
    }
}

/// Set by the run switch: whether this op may be deferred (small enough to bind whole).
pub(crate) fn may_fuse(ctx: &GpuContext, out: DType, inputs: &[(&GpuStorage, &Layout)], numel: usize) -> bool {
    if !fusion_enabled() {
        return false;
    }
    let max = ctx.limits.max_storage_buffer_binding_size;
    let fits = |d: DType, n: usize| (n as u64).saturating_mul(crate::kernels::gpu_size(d)) <= max;
    fits(out, numel) && inputs.iter().all(|(s, _)| fits(kiln_backend::BackendStorage::dtype(*s), s.len()))
}
