// Split-k epilogue of the tiled matmul: out[i] = Σ_s part[s · count + i], added in f32 and
// converted to the output type once. Elements are scalars, or vec4s when the output's length is
// a multiple of 4 (then count and i are in vec4s).
// info: [count, S]

@group(0) @binding(1) var<storage, read> part: array<{{PT}}>;
@group(0) @binding(2) var<storage, read_write> out: array<{{OT}}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    let count = info[0];
    if i >= count { return; }
    var sum = part[i];
    for (var s = 1u; s < info[1]; s++) {
        sum += part[s * count + i];
    }
    out[i] = {{OT}}(sum);
}
