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
    // Four loads in flight: a thread folds up to a few hundred partials, and one at a time it
    // would wait on each.
    var a = vec4<f32>(0.0);
    var b = vec4<f32>(0.0);
    var c = vec4<f32>(0.0);
    var d = vec4<f32>(0.0);
    var p = 0u;
    for (; p + 3u < h.chunks; p += 4u) {
        a += part[p * h.cols4 + c4];
        b += part[(p + 1u) * h.cols4 + c4];
        c += part[(p + 2u) * h.cols4 + c4];
        d += part[(p + 3u) * h.cols4 + c4];
    }
    for (; p < h.chunks; p++) {
        a += part[p * h.cols4 + c4];
    }
    store4(c4, (a + b) + (c + d));
}
