// dx of LayerNorm / RMSNorm; rows are laid over workgroups as in layer_norm.wgsl (256 / L rows
// of L = LANES threads each):
//   g = dy·weight,  x̂ = (x − mean)·rstd,
//   dx = rstd·(g − mean(g) − x̂·mean(g·x̂))      (no mean(g) term when CENTER is false).
//
// Parameters: NormBackwardParams (kernels/norm.rs).
// Bindings (prepended): x, dy, weight (read), stats (f32 [rows, 2], read), dx; ld_x/ld_dy/ld_w/st_dx.

{{PARAMS}}
const CENTER: bool = {{CENTER}};
const L: u32 = {{LANES}}u;

var<workgroup> red_g: array<f32, 256>;
var<workgroup> red_gx: array<f32, 256>;

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
    let base = row * n;
    var mean = 0.0;
    var rstd = 0.0;
    if live {
        mean = stats[2u * row];
        rstd = stats[2u * row + 1u];
    }
    var sg = 0.0;
    var sgx = 0.0;
    for (var j = lane; j < end; j += L) {
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
    for (var s = L / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            red_g[lid] += red_g[lid + s];
            red_gx[lid] += red_gx[lid + s];
        }
        workgroupBarrier();
    }
    var mean_g = 0.0;
    if CENTER {
        mean_g = red_g[lid - lane] / f32(n);
    }
    let mean_gx = red_gx[lid - lane] / f32(n);
    for (var j = lane; j < end; j += L) {
        var g = ld_dy(base + j);
        if has_w {
            g *= ld_w(j);
        }
        let xhat = (ld_x(base + j) - mean) * rstd;
        st_dx(base + j, rstd * (g - mean_g - xhat * mean_gx));
    }
}
