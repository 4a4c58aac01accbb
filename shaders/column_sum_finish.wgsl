// Column sums, the second pass: thread c4 adds the `chunks` vec4 partials of vec4 column c4
// (written by column_sum.wgsl, one row of `cols4` per chunk, so neighbouring threads read
// neighbouring words) and stores the four sums in the output dtype.
//
// Parameters: ColumnSumParams (kernels/column_sum.rs).
// Prepended: binding 1 `part` (array<vec4<f32>>, read), binding 2 `dst` (array<vec4<T>>) and
// `store4(i, v)`.

{{PARAMS}}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = params();
    let c4 = linear_group(wid, nwg) * 256u + lid;
    if c4 >= h.cols4 {
        return;
    }
    var acc = vec4<f32>(0.0);
    for (var p = 0u; p < h.chunks; p++) {
        acc += part[p * h.cols4 + c4];
    }
    store4(c4, acc);
}
