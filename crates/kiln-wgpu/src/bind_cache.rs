//! Bind groups reused across dispatches. A kernel whose binding 0 (the metadata) takes a
//! dynamic offset needs a bind group only per set of buffers, not per dispatch; the pool hands
//! the same buffers back step after step, so a training loop soon finds every group here and
//! a dispatch costs a hash lookup instead of a `create_bind_group`.
//!
//! The key holds each binding's buffer, offset and size: blocks of one pooled segment share a
//! buffer (see `pool`).
//!
//! A cached group keeps its buffers alive, so the cache is emptied whenever the pool lets a
//! buffer go (over budget, or trimmed after an out-of-memory), and when it reaches `CAPACITY`.

use crate::cache::Kernel;
use crate::pool::Span;
use rustc_hash::FxHashMap as HashMap;

/// Bytes of metadata a cached group exposes from its dynamic offset on; longer metadata takes a
/// group of its own.
pub(crate) const META_WINDOW: u64 = 4096;
const CAPACITY: usize = 4096;

/// A group's key: the layout's id and each binding's (buffer, offset, size).
type GroupKey = (usize, Vec<(wgpu::Buffer, u64, u64)>);

#[derive(Default)]
pub(crate) struct BindCache {
    groups: HashMap<GroupKey, wgpu::BindGroup>,
    /// The pool's release count when the cache was last emptied.
    released: u64,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

/// `KILN_BIND_CACHE=0` turns reuse off (every dispatch creates its group), for comparisons.
pub(crate) fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("KILN_BIND_CACHE").map(|v| v.trim() != "0").unwrap_or(true))
}

impl BindCache {
    /// Drops every cached group (and with them their hold on buffers the pool let go).
    pub(crate) fn clear(&mut self) {
        self.groups.clear();
    }

    /// The group binding `arena` (at a dynamic offset, `META_WINDOW` long) and `buffers` to
    /// `kernel`'s layout. `released` is the pool's current release count.
    pub(crate) fn get(
        &mut self,
        device: &wgpu::Device,
        kernel: &Kernel,
        arena: &wgpu::Buffer,
        buffers: &[Span<'_>],
        released: u64,
    ) -> wgpu::BindGroup {
        if !enabled() {
            return create(device, kernel, arena, META_WINDOW, buffers);
        }
        if released != self.released || self.groups.len() >= CAPACITY {
            self.groups.clear();
            self.released = released;
        }
        let mut ids = Vec::with_capacity(buffers.len() + 1);
        ids.push((arena.clone(), 0, 0));
        ids.extend(buffers.iter().map(|b| (b.buffer.clone(), b.offset, b.size)));
        let key = (&kernel.pipeline as *const wgpu::ComputePipeline as usize, ids);
        if let Some(g) = self.groups.get(&key) {
            self.hits += 1;
            return g.clone();
        }
        self.misses += 1;
        let group = create(device, kernel, arena, META_WINDOW, buffers);
        self.groups.insert(key, group.clone());
        group
    }
}

/// A group for `kernel` with `meta_bytes` of `arena` at binding 0 (offset 0, or the dynamic
/// offset given at `set_bind_group`) and `buffers` at bindings 1...
pub(crate) fn create(
    device: &wgpu::Device,
    kernel: &Kernel,
    arena: &wgpu::Buffer,
    meta_bytes: u64,
    buffers: &[Span<'_>],
) -> wgpu::BindGroup {
    let mut entries = Vec::with_capacity(buffers.len() + 1);
    entries.push(wgpu::BindGroupEntry {
        binding: 0,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: arena,
            offset: 0,
            size: wgpu::BufferSize::new(meta_bytes),
        }),
    });
    for (i, b) in buffers.iter().enumerate() {
        entries
            .push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: wgpu::BindingResource::Buffer(b.binding()) });
    }
    device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &kernel.layout, entries: &entries })
}
