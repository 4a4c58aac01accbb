//! Every adapter wgpu sees, with the features Kiln uses and the limits it runs into: where the
//! README's backend table comes from. `cargo run -p kiln-wgpu --example adapters`.

fn main() {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    if adapters.is_empty() {
        println!("no adapter (on Linux: apt-get install mesa-vulkan-drivers libvulkan1 libegl1 libgl1-mesa-dri)");
    }
    for adapter in adapters {
        let info = adapter.get_info();
        let f = adapter.features();
        let l = adapter.limits();
        let has = |x: wgpu::Features| if f.contains(x) { "yes" } else { "no" };
        println!(
            "{} ({:?}, {:?}, driver {} {})",
            info.name, info.backend, info.device_type, info.driver, info.driver_info
        );
        println!(
            "  f16 {}  subgroups {} (size {}..{})  timestamps {} (inside passes {})  pipeline cache {}",
            has(wgpu::Features::SHADER_F16),
            has(wgpu::Features::SUBGROUP),
            info.subgroup_min_size,
            info.subgroup_max_size,
            has(wgpu::Features::TIMESTAMP_QUERY),
            has(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
            has(wgpu::Features::PIPELINE_CACHE)
        );
        let coop: Vec<String> = adapter
            .cooperative_matrix_properties()
            .iter()
            .map(|p| format!("{}x{}x{} {:?}->{:?}", p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type))
            .collect();
        println!("  cooperative matrices {}", if coop.is_empty() { "none".to_string() } else { coop.join(", ") });
        println!(
            "  storage binding {} MiB, buffer {} MiB, {} storage buffers per stage, workgroup storage {} KiB, {} invocations per workgroup",
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_storage_buffers_per_shader_stage,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup
        );
    }
}
