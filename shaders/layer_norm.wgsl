// LayerNorm and RMSNorm forward over the last dim of contiguous [rows, n]. A workgroup of 256
// threads owns 256 / L rows, L = LANES threads each (neighbours, so a row reads coalesced):
// short rows share a workgroup instead of leaving most of its threads idle behind eight
// barriers ([4096, 256] on an H200: 24.5 µs with one row per workgroup). RMSNorm is the same
// kernel with CENTER = false (no mean).
//
// Parameters: NormForwardParams (kernels/norm.rs).
//
// The variance is a second sweep over (x − mean)², not E[x²] − mean²: the row is in cache by
// then, and the one-sweep form cancels catastrophically when |mean| ≫ std.
// The generator prepends the bindings: x, weight, bias (read), y, stats (f32 [rows, 2]) and
// ld_x/ld_w/ld_b/st_y.

{{PARAMS}}
const CENTER: bool = {{CENTER}};

const L: u32 = {{LANES}}u;

var<workgroup> red: array<f32, 256>;

/// The sum of `v` over the L lanes of this thread's row, in every lane.
fn row_sum(lid: u32, lane: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = L / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[lid - lane];
    // Every lane has read the total before the next reduction overwrites it.
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = params();
    let rows = p.rows;
    let n = p.n;
    let lane = lid % L;
    let row = linear_group(wid, nwg) * (256u / L) + lid / L;
    // Threads past the last row still take part in the barriers; they read and write nothing.
    let live = row < rows;
    let end = select(0u, n, live);
    let has_w = p.has_weight != 0u;
    let has_b = p.has_bias != 0u;
    let eps = p.eps;
    let base = row * n;
    var mean = 0.0;
    if CENTER {
        var s = 0.0;
        for (var j = lane; j < end; j += L) {
            s += ld_x(base + j);
        }
        mean = row_sum(lid, lane, s) / f32(n);
    }
    var q = 0.0;
    for (var j = lane; j < end; j += L) {
        let d = ld_x(base + j) - mean;
        q += d * d;
    }
    let rstd = inverseSqrt(row_sum(lid, lane, q) / f32(n) + eps);
    if live && lane == 0u {
        stats[2u * row] = mean;
        stats[2u * row + 1u] = rstd;
    }
    for (var j = lane; j < end; j += L) {
        var y = (ld_x(base + j) - mean) * rstd;
        if has_w {
            y *= ld_w(j);
        }
        if has_b {
            y += ld_b(j);
        }
        st_y(base + j, y);
    }
}
