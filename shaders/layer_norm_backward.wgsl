// dx of LayerNorm / RMSNorm, one row per workgroup of 256 threads:
//   g = dy·weight,  x̂ = (x − mean)·rstd,
//   dx = rstd·(g − mean(g) − x̂·mean(g·x̂))      (no mean(g) term when CENTER is false).
//
// info: [rows, n, has_weight]
// Bindings (prepended): x, dy, weight (read), stats (f32 [rows, 2], read), dx; ld_x/ld_dy/ld_w/st_dx.

const CENTER: bool = {{CENTER}};

var<workgroup> red_g: array<f32, 256>;
var<workgroup> red_gx: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wid, nwg);
    let rows = info[0];
    let n = info[1];
    if row >= rows {
        return;
    }
    let has_w = info[2] != 0u;
    let base = row * n;
    let mean = stats[2u * row];
    let rstd = stats[2u * row + 1u];
    var sg = 0.0;
    var sgx = 0.0;
    for (var j = lid; j < n; j += 256u) {
        var g = ld_dy(base + j);
        if has_w {
            g *= ld_w(j);
        }
        sg += g;
        sgx += g * (ld_x(base + j) - mean) * rstd;
    }
    red_g[lid] = sg;
    red_gx[lid] = sgx;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if lid < s {
            red_g[lid] += red_g[lid + s];
            red_gx[lid] += red_gx[lid + s];
        }
        workgroupBarrier();
    }
    var mean_g = 0.0;
    if CENTER {
        mean_g = red_g[0] / f32(n);
    }
    let mean_gx = red_gx[0] / f32(n);
    for (var j = lid; j < n; j += 256u) {
        var g = ld_dy(base + j);
        if has_w {
            g *= ld_w(j);
        }
        let xhat = (ld_x(base + j) - mean) * rstd;
        st_dx(base + j, rstd * (g - mean_g - xhat * mean_gx));
    }
}
