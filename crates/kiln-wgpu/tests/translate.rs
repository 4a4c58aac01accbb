//! Every WGSL module Kiln can generate, translated by naga for every wgpu backend with the
//! options wgpu 30's HAL passes (read from wgpu-hal 30.0.2: `vulkan/adapter.rs`,
//! `metal/device.rs`, `dx12/device.rs`, `gles/device.rs`), so that a kernel Metal's, DX12's or
//! GL's path would reject fails here, on Linux, without those GPUs. Where a real compiler for the
//! output is installed (`glslangValidator`, `spirv-val`), a second test compiles it too.
//!
//! A kernel that needs a capability a backend lacks (f16 and subgroups on GL and FXC-era DX12,
//! Kiln's 16×16×16 cooperative matrices everywhere but Vulkan) is not translated for it:
//! Kiln never builds it there (the runtime tests check the typed errors instead).

use naga::valid::{Capabilities as Caps, ModuleInfo, ValidationFlags, Validator};
use std::collections::BTreeMap;

/// What a backend's shader path gets: the naga output language and the capabilities a Kiln
/// device opened there validates with (wgpu-core maps the device's features to these).
#[derive(Clone, Copy)]
enum Lang {
    /// SPIR-V of this version (Vulkan 1.1 gives 1.3, Vulkan 1.3 gives 1.6).
    Spv((u8, u8)),
    /// Metal Shading Language of this version (what the OS offers: 2.4 is macOS 12 / iOS 15).
    Msl((u8, u8)),
    /// HLSL for this shader model: 5.1 when wgpu falls back to FXC (no `dxcompiler.dll`),
    /// 6.x with DXC.
    Hlsl(naga::back::hlsl::ShaderModel),
    /// GLSL: `Embedded { 310 }` is GLES 3.1 (Android, ANGLE), `Desktop(450)` is what wgpu picks
    /// on Mesa's llvmpipe (capped there: naga knows nothing past 4.50).
    Glsl(naga::back::glsl::Version),
}

struct Target {
    name: &'static str,
    lang: Lang,
    caps: Caps,
}

fn targets() -> Vec<Target> {
    use naga::back::glsl::Version;
    use naga::back::hlsl::ShaderModel;
    // f16 packing in f32 words (`unpack2x16float`) is a downlevel flag every native backend
    // sets, GL included.
    let base = Caps::SHADER_FLOAT16_IN_FLOAT32;
    let f16_subgroups = base | Caps::SHADER_FLOAT16 | Caps::SUBGROUP | Caps::SUBGROUP_BARRIER;
    vec![
        // Kiln asks for f16, subgroups and (where the shape fits) cooperative matrices.
        Target {
            name: "vulkan 1.1 (SPIR-V 1.3)",
            lang: Lang::Spv((1, 3)),
            caps: f16_subgroups | Caps::COOPERATIVE_MATRIX,
        },
        Target {
            name: "vulkan 1.3 (SPIR-V 1.6)",
            lang: Lang::Spv((1, 6)),
            caps: f16_subgroups | Caps::COOPERATIVE_MATRIX,
        },
        // Metal has f16 and SIMD-group operations; its simdgroup matrices are 8×8, which Kiln's
        // 16×16×16 cooperative kernels cannot use, so they never run there.
        Target { name: "metal (MSL 2.4)", lang: Lang::Msl((2, 4)), caps: f16_subgroups },
        Target { name: "metal (MSL 3.1)", lang: Lang::Msl((3, 1)), caps: f16_subgroups },
        // FXC (wgpu's fallback without dxcompiler.dll): shader model 5.1, no f16, no wave ops.
        Target { name: "dx12 fxc (HLSL SM 5.1)", lang: Lang::Hlsl(ShaderModel::V5_1), caps: base },
        // DXC: f16 from shader model 6.2, wave operations from 6.0.
        Target { name: "dx12 dxc (HLSL SM 6.2)", lang: Lang::Hlsl(ShaderModel::V6_2), caps: f16_subgroups },
        Target {
            name: "gl (GLSL ES 3.10)",
            lang: Lang::Glsl(Version::Embedded { version: 310, is_webgl: false }),
            caps: base,
        },
        Target { name: "gl (GLSL 4.50)", lang: Lang::Glsl(Version::Desktop(450)), caps: base },
    ]
}

/// A kernel's storage bindings in group 0, in binding order: `(binding, writable)`.
fn bindings(module: &naga::Module) -> Vec<(u32, bool)> {
    let mut found: Vec<(u32, bool)> = module
        .global_variables
        .iter()
        .filter_map(|(_, var)| {
            let binding = var.binding.as_ref()?;
            assert_eq!(binding.group, 0, "Kiln's kernels bind group 0 only");
            let writable = match var.space {
                naga::AddressSpace::Storage { access } => access.contains(naga::StorageAccess::STORE),
                _ => panic!("Kiln's kernels bind storage buffers only"),
            };
            Some((binding.binding, writable))
        })
        .collect();
    found.sort_unstable();
    found
}

/// Whether Kiln gives binding 0 (the metadata) a dynamic offset: when the bindings are 0..n with
/// binding 0 read-only (`cache::storage_bindings`; otherwise wgpu derives the layout).
fn dynamic_meta(bindings: &[(u32, bool)]) -> bool {
    bindings.iter().enumerate().all(|(i, &(b, _))| b == i as u32) && bindings.first() == Some(&(0, false))
}

/// The checks wgpu asks for by default (`ShaderRuntimeChecks::checked()`; Kiln's matmul hot
/// loops turn index clamps off, which only removes code).
fn spv(module: &naga::Module, info: &ModuleInfo, version: (u8, u8), caps: Caps) -> Result<Vec<u32>, String> {
    use naga::back::spv::{Capability as C, Options, PipelineOptions, WriterFlags, ZeroInitializeWorkgroupMemoryMode};
    use naga::proc::{BoundsCheckPolicies, BoundsCheckPolicy};
    // wgpu-hal's list: always-on capabilities, then one per enabled device feature.
    let mut capabilities = vec![
        C::Shader,
        C::Matrix,
        C::Sampled1D,
        C::Image1D,
        C::ImageQuery,
        C::DerivativeControl,
        C::StorageImageExtendedFormats,
        C::SampledCubeArray,
        C::SampleRateShading,
    ];
    if caps.contains(Caps::SUBGROUP) {
        capabilities.extend([
            C::GroupNonUniform,
            C::GroupNonUniformVote,
            C::GroupNonUniformArithmetic,
            C::GroupNonUniformBallot,
            C::GroupNonUniformShuffle,
            C::GroupNonUniformShuffleRelative,
            C::GroupNonUniformQuad,
        ]);
    }
    if caps.contains(Caps::SHADER_FLOAT16) {
        capabilities.push(C::Float16);
    }
    if caps.contains(Caps::COOPERATIVE_MATRIX) {
        capabilities.extend([C::CooperativeMatrixKHR, C::VulkanMemoryModel]);
    }
    // wgpu-hal's Vulkan path numbers a bind group's descriptors 0.. in binding order.
    let binding_map = bindings(module)
        .iter()
        .enumerate()
        .map(|(i, &(binding, _))| {
            let info = naga::back::spv::BindingInfo { descriptor_set: 0, binding: i as u32, binding_array_size: None };
            (naga::ResourceBinding { group: 0, binding }, info)
        })
        .collect();
    let options = Options {
        lang_version: version,
        flags: WriterFlags::LABEL_VARYINGS | WriterFlags::FORCE_POINT_SIZE,
        capabilities: Some(capabilities.into_iter().collect()),
        // Without robustBufferAccess2 (lavapipe and many drivers) buffers are clamped too.
        bounds_check_policies: BoundsCheckPolicies {
            index: BoundsCheckPolicy::Restrict,
            buffer: BoundsCheckPolicy::Restrict,
            image_load: BoundsCheckPolicy::Restrict,
            binding_array: BoundsCheckPolicy::Unchecked,
        },
        // The polyfill (drivers without VK_KHR_zero_initialize_workgroup_memory) writes more code.
        zero_initialize_workgroup_memory: ZeroInitializeWorkgroupMemoryMode::Polyfill,
        force_loop_bounding: true,
        ray_query_initialization_tracking: true,
        use_storage_input_output_16: caps.contains(Caps::SHADER_FLOAT16),
        fake_missing_bindings: false,
        binding_map,
        debug_info: None,
        task_dispatch_limits: None,
        mesh_shader_primitive_indices_clamp: true,
        trace_ray_argument_validation: true,
        emit_int_div_checks: true,
    };
    let pipeline = PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: "main".into() };
    naga::back::spv::write_vec(module, info, &options, Some(&pipeline)).map_err(|e| e.to_string())
}

/// wgpu-hal's Metal path: buffers take argument-table slots in binding order, then one slot for
/// the buffer of runtime-array sizes.
fn msl(module: &naga::Module, info: &ModuleInfo, version: (u8, u8)) -> Result<String, String> {
    use naga::back::msl;
    let binds = bindings(module);
    let mut resources = msl::BindingMap::default();
    for (slot, &(binding, writable)) in binds.iter().enumerate() {
        let target = msl::BindTarget { buffer: Some(slot as u8), mutable: writable, ..Default::default() };
        resources.insert(naga::ResourceBinding { group: 0, binding }, target);
    }
    let entry = msl::EntryPointResources {
        resources,
        immediates_buffer: None,
        sizes_buffer: (!binds.is_empty()).then_some(binds.len() as u8),
    };
    let checked = naga::proc::BoundsCheckPolicy::Restrict;
    let options = msl::Options {
        lang_version: version,
        per_entry_point_map: BTreeMap::from([("main".to_string(), entry)]),
        inline_samplers: Vec::new(),
        spirv_cross_compatibility: false,
        fake_missing_bindings: false,
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: checked,
            buffer: checked,
            image_load: checked,
            binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
        },
        zero_initialize_workgroup_memory: true,
        force_loop_bounding: true,
        task_dispatch_limits: None,
        mesh_shader_primitive_indices_clamp: true,
        emit_int_div_checks: true,
        ray_query_initialization_tracking: true,
    };
    let pipeline = msl::PipelineOptions {
        entry_point: Some((naga::ShaderStage::Compute, "main".into())),
        allow_and_force_point_size: false,
        vertex_pulling_transform: true,
        vertex_buffer_mappings: Vec::new(),
        binding_array_length_map: Default::default(),
    };
    msl::write_string(module, info, &options, &pipeline).map(|(s, _)| s).map_err(|e| format!("{e:?}"))
}

/// wgpu-hal's DX12 path: read-only storage buffers are SRVs (t0, t1, ..), writable ones UAVs
/// (u0, ..); a dynamic offset comes from root constants at b0, and wgpu-core always asks for
/// the special constants (`num_workgroups`) in the next constant-buffer register.
fn hlsl(module: &naga::Module, info: &ModuleInfo, model: naga::back::hlsl::ShaderModel) -> Result<String, String> {
    use naga::back::hlsl;
    let binds = bindings(module);
    let dynamic = dynamic_meta(&binds);
    let (mut srv, mut uav) = (0, 0);
    let mut binding_map = hlsl::BindingMap::default();
    for &(binding, writable) in &binds {
        let register = if writable { &mut uav } else { &mut srv };
        let target = hlsl::BindTarget {
            space: 0,
            register: *register,
            binding_array_size: None,
            dynamic_storage_buffer_offsets_index: (dynamic && binding == 0).then_some(0),
            restrict_indexing: false,
        };
        *register += 1;
        binding_map.insert(naga::ResourceBinding { group: 0, binding }, target);
    }
    let mut cbv = 0;
    let mut offsets = BTreeMap::new();
    if dynamic {
        offsets.insert(0, hlsl::OffsetsBindTarget { space: 0, register: cbv, size: 1 });
        cbv += 1;
    }
    let options = hlsl::Options {
        shader_model: model,
        binding_map,
        fake_missing_bindings: false,
        special_constants_binding: Some(hlsl::BindTarget { space: 0, register: cbv, ..Default::default() }),
        dynamic_storage_buffer_offsets_targets: offsets,
        zero_initialize_workgroup_memory: true,
        restrict_indexing: true,
        force_loop_bounding: true,
        ..Default::default()
    };
    let pipeline = hlsl::PipelineOptions { entry_point: Some((naga::ShaderStage::Compute, "main".into())) };
    let mut out = String::new();
    hlsl::Writer::new(&mut out, &options, &pipeline).write(module, info, None).map_err(|e| format!("{e:?}"))?;
    Ok(out)
}

/// wgpu-hal's GL path: storage buffers take binding points in order; naga adds no index or
/// buffer checks there (GLSL's own rules apply).
fn glsl(module: &naga::Module, info: &ModuleInfo, version: naga::back::glsl::Version) -> Result<String, String> {
    use naga::back::glsl;
    use naga::proc::BoundsCheckPolicy::Unchecked;
    let mut binding_map = glsl::BindingMap::default();
    for (slot, &(binding, _)) in bindings(module).iter().enumerate() {
        binding_map.insert(naga::ResourceBinding { group: 0, binding }, slot as u8);
    }
    let options = glsl::Options {
        version,
        writer_flags: glsl::WriterFlags::ADJUST_COORDINATE_SPACE | glsl::WriterFlags::FORCE_POINT_SIZE,
        binding_map,
        zero_initialize_workgroup_memory: true,
    };
    let pipeline =
        glsl::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: "main".into(), multiview: None };
    let image_load = match version {
        glsl::Version::Desktop(v) if v >= 430 => naga::proc::BoundsCheckPolicy::ReadZeroSkipWrite,
        _ => Unchecked,
    };
    let policies =
        naga::proc::BoundsCheckPolicies { index: Unchecked, buffer: Unchecked, image_load, binding_array: Unchecked };
    let mut out = String::new();
    glsl::Writer::new(&mut out, module, info, &options, &pipeline, policies)
        .and_then(|mut w| w.write())
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// One translated kernel: `(kernel key, target name, file extension, text or SPIR-V words)`.
enum Output {
    Text(String),
    Words(Vec<u32>),
}

struct Translations {
    outputs: Vec<(String, &'static str, Lang, Output)>,
    failures: Vec<String>,
    /// Kernels left out per target because they need a capability it lacks, with naga's reason.
    not_built: BTreeMap<&'static str, Vec<(String, String)>>,
    kernels: usize,
}

fn translate_all() -> Translations {
    let all = kiln_wgpu::shaders::all_specialisations();
    let mut t =
        Translations { outputs: Vec::new(), failures: Vec::new(), not_built: BTreeMap::new(), kernels: all.len() };
    let targets = targets();
    for (key, src) in &all {
        let module = match naga::front::wgsl::parse_str(src) {
            Ok(m) => m,
            Err(e) => {
                t.failures.push(format!("{key}: parse: {}", e.emit_to_string(src)));
                continue;
            }
        };
        for target in &targets {
            // wgpu validates against the device's capabilities; a failure here means the kernel
            // needs one this backend lacks (the all-capabilities validation is naga_validate.rs).
            let info = match Validator::new(ValidationFlags::all(), target.caps).validate(&module) {
                Ok(info) => info,
                Err(e) => {
                    t.not_built.entry(target.name).or_default().push((key.clone(), e.emit_to_string(src)));
                    continue;
                }
            };
            let out = match target.lang {
                Lang::Spv(v) => spv(&module, &info, v, target.caps).map(Output::Words),
                Lang::Msl(v) => msl(&module, &info, v).map(Output::Text),
                Lang::Hlsl(m) => hlsl(&module, &info, m).map(Output::Text),
                Lang::Glsl(v) => glsl(&module, &info, v).map(Output::Text),
            };
            match out {
                Ok(o) => t.outputs.push((key.clone(), target.name, target.lang, o)),
                Err(e) => t.failures.push(format!("{key} on {}: {e}", target.name)),
            }
        }
    }
    t
}

/// The translations, made once for both tests.
fn translations() -> &'static Translations {
    static ALL: std::sync::OnceLock<Translations> = std::sync::OnceLock::new();
    ALL.get_or_init(translate_all)
}

#[test]
fn every_kernel_translates_for_every_backend() {
    let t = translations();
    assert!(t.kernels > 300, "only {} kernels listed", t.kernels);
    assert!(t.failures.is_empty(), "{} translations failed:\n{}", t.failures.len(), t.failures.join("\n"));
    for target in targets() {
        let built = t.outputs.iter().filter(|o| o.1 == target.name).count();
        let left = t.not_built.get(target.name).map_or(&[][..], Vec::as_slice);
        eprintln!("{}: {built} kernels translated, {} need a capability it lacks", target.name, left.len());
        assert_eq!(built + left.len(), t.kernels, "{}", target.name);
        // Only f16 and cooperative-matrix kernels may be missing (Kiln has no other
        // feature-gated kernels): every other one must reach every backend.
        for (key, why) in left {
            let gated = ["FLOAT16", "f16", "COOPERATIVE_MATRIX", "coop"].iter().any(|w| why.contains(w));
            assert!(
                gated,
                "{key} does not validate for {} although it needs neither f16 nor cooperative matrices:\n{why}",
                target.name
            );
        }
    }
    // The cooperative-matrix kernels are translated where Kiln runs them (Vulkan)...
    let coop = |name: &str| t.outputs.iter().filter(|o| o.1 == name && o.0.contains("coop")).count();
    assert!(coop("vulkan 1.3 (SPIR-V 1.6)") > 0, "no cooperative-matrix kernel reached SPIR-V");
    // ... and the f16 kernels wherever the backend has f16.
    let f16 = |name: &str| t.outputs.iter().filter(|o| o.1 == name && o.0.contains("f16")).count();
    for name in ["vulkan 1.1 (SPIR-V 1.3)", "metal (MSL 2.4)", "dx12 dxc (HLSL SM 6.2)"] {
        assert!(f16(name) > 0, "no f16 kernel translated for {name}");
    }
}

/// The tools, or `None` and a SKIPPED line (a failure under `KILN_REQUIRE_SHADER_TOOLS=1`).
fn tool(test: &str, name: &str) -> Option<String> {
    let found = std::process::Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stdout.is_empty());
    if found {
        return Some(name.to_string());
    }
    if std::env::var("KILN_REQUIRE_SHADER_TOOLS").is_ok_and(|v| v == "1") {
        panic!(
            "{test}: KILN_REQUIRE_SHADER_TOOLS=1 but `{name}` is not installed (apt-get install glslang-tools spirv-tools)"
        );
    }
    eprintln!(
        "SKIPPED {test}: `{name}` is not installed (apt-get install glslang-tools spirv-tools; KILN_REQUIRE_SHADER_TOOLS=1 makes this a failure)"
    );
    None
}

/// Whether SPIR-V `words` declare the cooperative-matrix capability (`OpCapability 6022`).
fn declares_coop(words: &[u32]) -> bool {
    const OP_CAPABILITY: u32 = (2 << 16) | 17;
    words.windows(2).any(|w| w == [OP_CAPABILITY, 6022])
}

/// Runs `commands` a few at a time; the output of each, in order.
fn run_all(commands: Vec<std::process::Command>) -> Vec<std::process::Output> {
    let mut outputs = Vec::new();
    let mut commands = commands.into_iter().peekable();
    while commands.peek().is_some() {
        let children: Vec<_> = commands.by_ref().take(8).map(|mut c| c.output()).collect();
        outputs.extend(children.into_iter().map(|o| o.expect("running a shader tool")));
    }
    outputs
}

/// The GLSL goes through Khronos' reference compiler (glslang) and the SPIR-V through the
/// SPIR-V validator for the Vulkan version that produces it. MSL and HLSL have no compiler in
/// Debian (Apple's `metal` and Microsoft's `dxc` are not packaged), so they stop at naga.
#[test]
fn translations_compile_with_real_compilers() {
    const TEST: &str = "translations_compile_with_real_compilers";
    let (Some(glslang), Some(spirv_val)) = (tool(TEST, "glslangValidator"), tool(TEST, "spirv-val")) else { return };
    let t = translations();
    assert!(t.failures.is_empty(), "translation failed (see every_kernel_translates_for_every_backend)");
    let dir = std::env::temp_dir().join(format!("kiln-translate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut spv = Vec::new();
    let mut glsl: BTreeMap<&str, Vec<(String, std::path::PathBuf)>> = BTreeMap::new();
    for (i, (key, target, lang, out)) in t.outputs.iter().enumerate() {
        match (lang, out) {
            (Lang::Spv(v), Output::Words(words)) => {
                let path = dir.join(format!("{i}.spv"));
                std::fs::write(&path, words.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>()).expect("write");
                let env = if *v >= (1, 6) { "vulkan1.3" } else { "vulkan1.1" };
                spv.push((format!("{key} on {target}"), path, env, declares_coop(words)));
            }
            (Lang::Glsl(_), Output::Text(src)) => {
                let path = dir.join(format!("{i}.comp"));
                std::fs::write(&path, src).expect("write");
                glsl.entry(target).or_default().push((format!("{key} on {target}"), path));
            }
            _ => {}
        }
    }
    let mut failures = Vec::new();
    let (mut checked, mut coop_unknown) = (0, 0);
    let commands = spv
        .iter()
        .map(|(_, path, env, _)| {
            let mut c = std::process::Command::new(&spirv_val);
            c.args(["--target-env", env]).arg(path);
            c
        })
        .collect();
    for ((what, path, _, coop), o) in spv.iter().zip(run_all(commands)) {
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        if o.status.success() {
            checked += 1;
        } else if *coop && text.contains("Invalid capability operand: 6022") {
            // This spirv-val predates SPV_KHR_cooperative_matrix (Debian 12's 2023.1 does).
            coop_unknown += 1;
        } else {
            failures.push(format!("{what} ({}): spirv-val: {text}", path.display()));
        }
    }
    if coop_unknown > 0 {
        eprintln!(
            "{TEST}: {coop_unknown} cooperative-matrix modules not validated: this spirv-val does not know SPV_KHR_cooperative_matrix"
        );
    }
    // glslang compiles the files of one call separately; a call per file costs more than the
    // compile, so they go 200 at a time, and one by one only to name a failure.
    for files in glsl.values() {
        for chunk in files.chunks(200) {
            let o = std::process::Command::new(&glslang)
                .arg("-S")
                .arg("comp")
                .args(chunk.iter().map(|f| &f.1))
                .output()
                .expect("glslangValidator");
            if o.status.success() {
                checked += chunk.len();
                continue;
            }
            for (what, path) in chunk {
                let o = std::process::Command::new(&glslang)
                    .arg("-S")
                    .arg("comp")
                    .arg(path)
                    .output()
                    .expect("glslangValidator");
                if !o.status.success() {
                    failures.push(format!(
                        "{what} ({}): glslang: {}",
                        path.display(),
                        String::from_utf8_lossy(&o.stdout)
                    ));
                }
                checked += 1;
            }
        }
    }
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!("{TEST}: {checked} translated kernels compiled (GLSL) or validated (SPIR-V)");
    assert!(checked > 4000, "only {checked} outputs checked");
    assert!(failures.is_empty(), "{} outputs rejected:\n{}", failures.len(), failures.join("\n"));
}
