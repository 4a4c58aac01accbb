//! Pipelines are built once per specialisation key and reused for every later dispatch, through
//! the persistent pipeline cache where there is one.

use crate::pipeline_cache::PipelineStore;
use kiln_backend::{Error, Result};
// Fx hashing: looked up on every dispatch, with keys up to a few hundred bytes.
use rustc_hash::FxHashMap as HashMap;
use std::sync::{Arc, Mutex, atomic::AtomicU64, atomic::Ordering};

/// A compiled compute kernel: pipeline plus the bind-group layout its dispatches use.
pub(crate) struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    /// The key, shortened for the profile table.
    pub name: Arc<str>,
    /// Binding 0 takes a dynamic offset: bind groups can be reused across dispatches.
    pub dynamic_meta: bool,
}

/// The storage bindings of a generated kernel, `(binding, read_only)` for bindings 0..n in
/// order, or `None` when the source declares anything else (then wgpu derives the layout).
pub(crate) fn storage_bindings(wgsl: &str) -> Option<Vec<(u32, bool)>> {
    let mut found = Vec::new();
    for line in wgsl.lines() {
        let code = line.split("//").next().unwrap_or("");
        let Some(at) = code.find("@binding(") else { continue };
        if !code.contains("@group(0)") {
            return None;
        }
        let rest = &code[at + "@binding(".len()..];
        let binding: u32 = rest[..rest.find(')')?].trim().parse().ok()?;
        let decl = &rest[rest.find("var<")? + 4..];
        let access: Vec<&str> = decl[..decl.find('>')?].split(',').map(str::trim).collect();
        let read_only = match access.as_slice() {
            ["storage"] | ["storage", "read"] => true,
            ["storage", "read_write"] => false,
            _ => return None,
        };
        found.push((binding, read_only));
    }
    found.sort_unstable();
    let complete = found.iter().enumerate().all(|(i, &(b, _))| b == i as u32);
    (complete && found.first() == Some(&(0, true))).then_some(found)
}

/// `wgsl` with every storage binding but binding 0 (the metadata) declared `read_write`. With
/// the pool's blocks on (see `pool`), a kernel's input and output can be blocks of one buffer,
/// and wgpu refuses a buffer bound read-only and writable in one dispatch (its usage scope is
/// the whole buffer); bound writable twice it accepts. Only the declarations change: a kernel
/// that only reads a binding still only reads it.
pub(crate) fn writable_inputs(wgsl: &str) -> String {
    let mut out = String::with_capacity(wgsl.len() + 256);
    for line in wgsl.split_inclusive('\n') {
        let code = line.split("//").next().unwrap_or("");
        let meta = code.contains("@binding(0)") || !code.contains("@group(0)");
        if !meta && code.contains("var<storage, read>") {
            out.push_str(&line.replacen("var<storage, read>", "var<storage, read_write>", 1));
        } else if !meta && code.contains("var<storage>") {
            out.push_str(&line.replacen("var<storage>", "var<storage, read_write>", 1));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// A layout whose binding 0 (the metadata) takes a dynamic offset.
fn dynamic_layout(device: &wgpu::Device, bindings: &[(u32, bool)]) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
        .iter()
        .map(|&(binding, read_only)| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: binding == 0,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries });
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: None,
        bind_group_layouts: &[Some(&bgl)],
        immediate_size: 0,
    });
    (bgl, pl)
}

/// Which of naga's runtime checks a kernel is built with.
#[derive(Clone, Copy)]
enum Checks {
    All,
    /// No index clamps, no loop counters (see [`KernelCache::get_trusted`]).
    TrustedIndices,
}

#[derive(Default)]
pub(crate) struct KernelCache {
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
    built: AtomicU64,
    pub(crate) store: Option<PipelineStore>,
    /// Build every kernel through [`writable_inputs`] (the pool lends blocks of shared buffers).
    pub(crate) writable: bool,
}

impl KernelCache {
    /// The kernel for `key`, compiling `source()` on first use. WGSL errors become `Error::Backend`.
    pub(crate) fn get(
        &self,
        device: &wgpu::Device,
        op: &'static str,
        key: &str,
        source: impl FnOnce() -> String,
    ) -> Result<Arc<Kernel>> {
        self.get_with(device, op, key, source, Checks::All)
    }

    /// [`get`](Self::get) for a kernel whose every index is in range by construction and whose
    /// every loop ends (the matmul kernels' hot loops): built without naga's index clamps and
    /// loop counters. Those cost the inner loops of a register-tiled kernel an integer `min` per
    /// workgroup-memory read, and keep the driver from unrolling them into reads at constant
    /// offsets. Storage-buffer reads stay as robust as the platform makes them (Vulkan's
    /// robustBufferAccess, which wgpu enables where it exists); integer division keeps its
    /// checks. The caller promises the source's workgroup-array indices stay within bounds.
    pub(crate) fn get_trusted(
        &self,
        device: &wgpu::Device,
        op: &'static str,
        key: &str,
        source: impl FnOnce() -> String,
    ) -> Result<Arc<Kernel>> {
        self.get_with(device, op, key, source, Checks::TrustedIndices)
    }

    fn get_with(
        &self,
        device: &wgpu::Device,
        op: &'static str,
        key: &str,
        source: impl FnOnce() -> String,
        checks: Checks,
    ) -> Result<Arc<Kernel>> {
        if let Some(k) = self.kernels.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
            return Ok(k.clone());
        }
        let wgsl = if self.writable { writable_inputs(&source()) } else { source() };
        let explicit = storage_bindings(&wgsl).map(|b| dynamic_layout(device, &b));
        let desc = wgpu::ShaderModuleDescriptor { label: Some(key), source: wgpu::ShaderSource::Wgsl(wgsl.into()) };
        let make_module = || match checks {
            Checks::All => device.create_shader_module(desc),
            Checks::TrustedIndices => {
                let mut runtime = wgpu::ShaderRuntimeChecks::checked();
                runtime.bounds_checks = false;
                runtime.force_loop_bounding = false;
                // SAFETY: `get_trusted`'s callers generate sources whose array indices are in
                // range and whose loops terminate (see their templates); storage buffers keep
                // the platform's own robustness, and every other check stays on.
                unsafe { device.create_shader_module_trusted(desc, runtime) }
            }
        };
        let build = |module: &wgpu::ShaderModule, layout: Option<&wgpu::PipelineLayout>| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(key),
                layout,
                module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: self.store.as_ref().map(|s| s.cache()),
            })
        };
        // In a browser the scope catches nothing (see `platform`): errors surface at the next
        // sync or readback instead.
        let ((module, mut built), mut error) = crate::platform::scoped(device, wgpu::ErrorFilter::Validation, || {
            let module = make_module();
            let built = explicit.as_ref().map(|(bgl, pl)| (build(&module, Some(pl)), bgl.clone(), true));
            (module, built)
        });
        if built.is_none() || error.is_some() {
            // No explicit layout could be derived, or the shader disagreed with it: let wgpu
            // derive one (binding 0 then takes a fresh bind group per dispatch).
            let pipeline;
            (pipeline, error) = crate::platform::scoped(device, wgpu::ErrorFilter::Validation, || build(&module, None));
            let layout = pipeline.get_bind_group_layout(0);
            built = Some((pipeline, layout, false));
        }
        if let Some(e) = error {
            return Err(Error::Backend { op, msg: format!("building kernel {key}: {e}") });
        }
        let Some((pipeline, layout, dynamic_meta)) = built else {
            return Err(Error::Backend { op, msg: format!("building kernel {key}: no pipeline") });
        };
        let kernel = Arc::new(Kernel { pipeline, layout, name: crate::profile::short_name(key), dynamic_meta });
        let built = self.built.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(store) = &self.store {
            store.built(built);
        }
        self.kernels.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), kernel.clone());
        Ok(kernel)
    }

    pub(crate) fn built(&self) -> u64 {
        self.built.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::{storage_bindings, writable_inputs};

    #[test]
    fn writable_inputs_leave_the_metadata_read_only() {
        let src = "@group(0) @binding(0) var<storage, read> info: array<u32>;\n\
                   @group(0) @binding(1) var<storage, read> a: array<f32>; // var<storage, read>\n\
                   @group(0) @binding(2) var<storage> b: array<f32>;\n\
                   @group(0) @binding(3) var<storage, read_write> out: array<f32>;\n\
                   fn f() {}";
        let w = writable_inputs(src);
        assert_eq!(storage_bindings(&w), Some(vec![(0, true), (1, false), (2, false), (3, false)]));
        assert!(w.contains("// var<storage, read>"), "comments stay as they were");
        assert!(w.ends_with("fn f() {}"));
    }

    #[test]
    fn explicit_layouts_only_for_plain_storage_bindings() {
        let src = "@group(0) @binding(0) var<storage, read> info: array<u32>;\n\
                   // @group(0) @binding(7) var<uniform> in_a_comment: u32;\n\
                   @group(0) @binding(2) var<storage, read_write> out: array<f32>;\n\
                   @group(0) @binding(1) var<storage> a: array<f32>;\n";
        assert_eq!(storage_bindings(src), Some(vec![(0, true), (1, true), (2, false)]));
        let uniform = "@group(0) @binding(0) var<storage, read> info: array<u32>;\n@group(0) @binding(1) var<uniform> u: vec4<f32>;";
        assert_eq!(storage_bindings(uniform), None);
        let gap = "@group(0) @binding(0) var<storage, read> info: array<u32>;\n@group(0) @binding(2) var<storage, read> a: array<f32>;";
        assert_eq!(storage_bindings(gap), None);
        let writable_meta = "@group(0) @binding(0) var<storage, read_write> info: array<u32>;";
        assert_eq!(storage_bindings(writable_meta), None);
        assert_eq!(storage_bindings("@group(1) @binding(0) var<storage, read> x: array<u32>;"), None);
    }
}
