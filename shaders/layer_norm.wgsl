// LayerNorm and RMSNorm forward over the last dim of contiguous [rows, n]; one row per
// workgroup of 256 threads. RMSNorm is the same kernel with CENTER = false (no mean).
//
// info: [rows, n, has_weight, has_bias, eps (f32 bits)]
//
// The variance is a second sweep over (x − mean)², not E[x²] − mean²: the row is in cache by
// then, and the one-sweep form cancels catastrophically when |mean| ≫ std.
// The generator prepends the bindings: x, weight, bias (read), y, stats (f32 [rows, 2]) and
// ld_x/ld_w/ld_b/st_y.

const CENTER: bool = {{CENTER}};

var<workgroup> red: array<f32, 256>;

fn wg_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if lid < s {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    // Every lane has read red[0] before the next reduction overwrites it.
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wid, nwg);
    let rows = info[0];
    let n = info[1];
    if row >= rows {
        return;
    }
    let has_w = info[2] != 0u;
    let has_b = info[3] != 0u;
    let eps = bitcast<f32>(info[4]);
    let base = row * n;
    var mean = 0.0;
    if CENTER {
        var s = 0.0;
        for (var j = lid; j < n; j += 256u) {
            s += ld_x(base + j);
        }
        mean = wg_sum(lid, s) / f32(n);
    }
    var q = 0.0;
    for (var j = lid; j < n; j += 256u) {
        let d = ld_x(base + j) - mean;
        q += d * d;
    }
    let rstd = inverseSqrt(wg_sum(lid, q) / f32(n) + eps);
    if lid == 0u {
        stats[2u * row] = mean;
        stats[2u * row + 1u] = rstd;
    }
    for (var j = lid; j < n; j += 256u) {
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
