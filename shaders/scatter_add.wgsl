// scatter_add: a contiguous copy of `dst` with src[q] added at q with q[dim] = ids[q].
// info: [numel, dim, base(dst), base(ids), base(src), ...layout blocks]
// Each thread adds the matches on its output element in increasing order (scatter_site, in
// scatter_site.wgsl): the sum is deterministic. Outside the ids extent p is a plain copy. The
// generator fills SITE, T (storage) and C (compute: f16 accumulates in f32; integers wrap).

@group(0) @binding(1) var<storage, read> dst: array<{{T}}>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read> src: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> out: array<{{T}}>;

{{SITE}}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if i >= info[0] { return; }
    let p = scatter_site(i);
    var acc = {{C}}(dst[p.at]);
    if p.inside {
        for (var m = 0u; m < p.len; m++) {
            if ids[p.id_at + m * p.id_step] == p.want {
                acc += {{C}}(src[p.src_at + m * p.src_step]);
            }
        }
    }
    out[i] = {{T}}(acc);
}
