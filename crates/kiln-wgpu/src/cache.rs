//! Pipelines are built once per specialisation key and reused for every later dispatch, through
//! the persistent pipeline cache where there is one.

use crate::pipeline_cache::PipelineStore;
use kiln_backend::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, atomic::AtomicU64, atomic::Ordering};

/// A compiled compute kernel: pipeline plus the bind-group layout its dispatches use.
pub(crate) struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    /// The key, shortened for the profile table.
    pub name: Arc<str>,
}

#[derive(Default)]
pub(crate) struct KernelCache {
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
    built: AtomicU64,
    pub(crate) store: Option<PipelineStore>,
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
        if let Some(k) = self.kernels.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
            return Ok(k.clone());
        }
        let wgsl = source();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(key),
            source: wgpu::ShaderSource::Wgsl(wgsl.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: self.store.as_ref().map(|s| s.cache()),
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Backend { op, msg: format!("building kernel {key}: {e}") });
        }
        let layout = pipeline.get_bind_group_layout(0);
        let kernel = Arc::new(Kernel { pipeline, layout, name: crate::profile::short_name(key) });
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
