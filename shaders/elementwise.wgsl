// One template for every elementwise op: unary, binary, where, cast, copy and fill.
// info: [numel, p0, p1, base(in0), base(in1), base(in2), ...layout blocks]
// The generator fills the BINDINGS, LOADS, OUT_INDEX and VALUE slots; contiguous inputs
// skip the strided index walk; `copy_into` writes through a strided output layout.

{{BINDINGS}}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if i >= info[0] { return; }
{{LOADS}}
    out[{{OUT_INDEX}}] = {{VALUE}};
}
