// First pass of the weight and bias gradients of LayerNorm / RMSNorm, a column reduction:
// thread (chunk, j) sums dy·x̂ and dy down column j over the rows of its chunk. Neighbouring
// threads take neighbouring columns, so every row read is coalesced; the chunks give a large
// GPU enough threads when n is small. The backend then sums the chunks with the reduce kernel.
//
// Parameters: NormParamsGradParams (kernels/norm.rs).
// Bindings (prepended): x, dy (read), stats (f32 [rows, 2]), pw, pb (f32 [chunks, n]); ld_x/ld_dy.

{{PARAMS}}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = linear_group(wid, nwg) * 256u + lid;
    let p = params();
    let rows = p.rows;
    let n = p.n;
    let chunk_rows = p.chunk_rows;
    if t >= n * p.chunks {
        return;
    }
    let chunk = t / n;
    let j = t % n;
    let start = chunk * chunk_rows;
    let end = min(rows, start + chunk_rows);
    var sw = 0.0;
    var sb = 0.0;
    for (var r = start; r < end; r++) {
        let dy = ld_dy(r * n + j);
        sw += dy * (ld_x(r * n + j) - stats[2u * r]) * stats[2u * r + 1u];
        sb += dy;
    }
    pw[t] = sw;
    pb[t] = sb;
}
