// topk over the last dim, part 3 of 3: the first k sorted pairs of each row (topk.wgsl) give
// the indices, and the values are read back from the source at them. One thread per output.
// info: [rows, len, padded, k, row0, step, src layout block...]
// rows counts the rows of this dispatch, which start at row0 of the source and of the outputs.

@group(0) @binding(1) var<storage, read> src: array<{{T}}>;
@group(0) @binding(2) var<storage, read> pairs: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read_write> values: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> indices: array<u32>;

const SRC: u32 = 6u;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = info[3];
    let o = linear_group(wid, nwg) * 256u + lid;
    if o >= info[0] * k { return; }
    let row = o / k;
    let i = pairs[row * info[2] + o % k].y;
    let out = info[4] * k + o;
    values[out] = src[layout_index(SRC, (info[4] + row) * info[1]) + i * info[5]];
    indices[out] = i;
}
