//! Every WGSL specialisation the backend can generate parses, validates and translates to
//! SPIR-V with naga, without an adapter: as generated, and as the kernel cache builds it while
//! the pool lends blocks of shared buffers (inputs declared `read_write`).

#[test]
fn every_specialisation_validates() {
    let all = kiln_wgpu::shaders::all_specialisations();
    assert!(all.len() > 300, "only {} specialisations listed", all.len());
    // The random kernels (Philox: bits, uniform, normal, Bernoulli masks) alone and fused.
    for name in ["ew|random_bits|", "ew|rand|", "ew|randn|", "ew|bernoulli|", "fz|rng ", "fz4|rng "] {
        assert!(all.iter().any(|(k, _)| k.contains(name)), "no {name} kernel listed");
    }
    // scatter / scatter_reduce (shaders/scatter_reduce.wgsl), one per numeric storage dtype.
    for name in ["scatter_reduce|f32", "scatter_reduce|f16", "scatter_reduce|i32", "scatter_reduce|u32"] {
        assert!(all.iter().any(|(k, _)| k == name), "no {name} kernel listed");
    }
    let mut failures = Vec::new();
    let writable: Vec<(String, String)> =
        all.iter().map(|(k, s)| (format!("{k} (read_write)"), kiln_wgpu::shaders::writable_inputs(s))).collect();
    for (key, src) in &writable {
        // Every tensor binding was rewritten: a declaration the rewrite missed would be bound
        // read-only next to a writable block of the same buffer, which wgpu refuses.
        let missed = src.lines().find(|l| {
            let code = l.split("//").next().unwrap_or("");
            !code.contains("@binding(0)") && (code.contains("var<storage, read>") || code.contains("var<storage>"))
        });
        if let Some(line) = missed {
            failures.push(format!("{key}: a read-only input left: {line}"));
        }
    }
    for (key, src) in all.iter().chain(&writable) {
        let module = match naga::front::wgsl::parse_str(src) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{key}: parse: {}", e.emit_to_string(src)));
                continue;
            }
        };
        let mut validator =
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
        let info = match validator.validate(&module) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{key}: validate: {}", e.emit_to_string(src)));
                continue;
            }
        };
        if let Err(e) = naga::back::spv::write_vec(&module, &info, &Default::default(), None) {
            failures.push(format!("{key}: spir-v: {e}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} kernels failed:\n{}", failures.len(), 2 * all.len(), failures.join("\n"));
}

/// The first `{{KEY}}` placeholder left in `src` (keys are upper-case words).
fn unfilled(src: &str) -> Option<&str> {
    let mut rest = src;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        if let Some(end) = after.find("}}")
            && !after[..end].is_empty()
            && after[..end].chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Some(&rest[start..start + end + 4]);
        }
        rest = after;
    }
    None
}

#[test]
fn no_specialisation_leaves_a_placeholder() {
    for (key, src) in kiln_wgpu::shaders::all_specialisations() {
        assert_eq!(unfilled(&src), None, "{key} leaves a template placeholder unfilled");
    }
}

/// Typed kernel parameters (kernels/params.rs) are read word by word from `info`, so field k
/// must be word k: every generated params struct must have naga's layout of 4-byte members
/// at offsets 0, 4, 8, … with no padding, the layout the Rust `#[repr(C)]` struct has (its
/// size is asserted at compile time to be 4 bytes a field).
#[test]
fn generated_params_structs_are_packed_words() {
    const MARK: &str = "// Generated from the Rust struct ";
    let mut checked = std::collections::BTreeSet::new();
    for (key, src) in kiln_wgpu::shaders::all_specialisations() {
        let Some(at) = src.find(MARK) else { continue };
        let name: String = src[at + MARK.len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{key}: {e}"));
        let ty = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{key}: no struct {name}"))
            .1;
        let naga::TypeInner::Struct { members, span } = &ty.inner else { panic!("{key}: {name} is not a struct") };
        assert!(!members.is_empty(), "{key}: {name} has no fields");
        for (k, m) in members.iter().enumerate() {
            assert_eq!(m.offset, 4 * k as u32, "{key}: {name}.{:?} is not word {k}", m.name);
            let scalar = matches!(
                module.types[m.ty].inner,
                naga::TypeInner::Scalar(naga::Scalar {
                    width: 4,
                    kind: naga::ScalarKind::Uint | naga::ScalarKind::Sint | naga::ScalarKind::Float
                })
            );
            assert!(scalar, "{key}: {name}.{:?} is not a 4-byte scalar", m.name);
        }
        assert_eq!(*span, 4 * members.len() as u32, "{key}: {name} is padded");
        checked.insert(name);
    }
    // The families converted so far (kernels/index.rs' index_select and gather, conv.rs,
    // norm.rs, cross_entropy.rs, optim.rs, reduce.rs); scatter and topk still read `info`
    // by position.
    for name in [
        "IndexSelectParams",
        "GatherParams",
        "ConvParams",
        "NormForwardParams",
        "NormBackwardParams",
        "NormParamsGradParams",
        "CrossEntropyKernelParams",
        "AdamKernelParams",
        "UnscaleParams",
        "SoftmaxParams",
        "CumsumParams",
    ] {
        assert!(checked.contains(name), "no kernel uses {name}; checked {checked:?}");
    }
}
