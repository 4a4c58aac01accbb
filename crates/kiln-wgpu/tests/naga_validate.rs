//! Every WGSL specialisation the backend can generate parses, validates and translates to
//! SPIR-V with naga, without an adapter.

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
    for (key, src) in &all {
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
    assert!(failures.is_empty(), "{} of {} kernels failed:\n{}", failures.len(), all.len(), failures.join("\n"));
}
