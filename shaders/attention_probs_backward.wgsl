// Materialised attention, backward: the row kernel between S = Q·Kᵀ, dP = dO·Vᵀ and the three
// gradient matmuls. It recomputes P = exp(scale·S + bias − lse) from the forward's log-sum-exp
// (hidden keys, and every key of a row with lse = +inf, give 0), reduces D = Σ_j P·dP over the
// row (equal to Σ_d dO·O, without reading O), and overwrites S with P (for dV = Pᵀ·dO) and dP
// with dS = scale·P·(dP − D) (for dQ = dS·K and dK = dSᵀ·Q). Visibility as in
// attention_probs.wgsl. With dropout (factor r: 1/keep or 0, attention_extras.wgsl) the forward
// used P·r: dP becomes dP·r, and S is overwritten with P·r.
//
// Workgroup layout as attention_probs.wgsl: 64 threads, LANES per row, chunks of 4 elements.
//
// info and the row layout: attention_rows.wgsl, prepended.
// Bindings (prepended): s and dp (read_write, ld4_/st4_ by row base and chunk), mask (u32),
// lse (f32, read).

var<workgroup> red: array<f32, 64>;

// The probabilities of chunk c (0 where hidden).
fn probs(row: ScoreRow, c: u32, z: f32) -> vec4<f32> {
    let x = scores4(row, c);
    var p = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if visible(c * 4u + e, row.end, row.mask_base) && x[e] > kiln_f32_bits(0xff800000u) {
            p[e] = exp(x[e] - z);
        }
    }
    return p;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = score_row(wid, nwg, lid);
    // Read here, not through score_row: the barrier loops need it visibly uniform.
    let lanes = info[7u];
    let kv_len = info[2u];
    let z = lse[row.r];

    var acc = 0.0;
    for (var c = row.lane; c * 4u < row.end; c += lanes) {
        acc += dot(probs(row, c, z), ld4_dp(row.base, c) * attn_drop4(row.r, c * 4u, kv_len));
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var half = lanes / 2u; half > 0u; half = half / 2u) {
        if row.lane < half {
            red[lid] += red[lid + half];
        }
        workgroupBarrier();
    }
    let d = red[lid - row.lane];

    if !row.live {
        return;
    }
    for (var c = row.lane; c * 4u < kv_len; c += lanes) {
        let p = probs(row, c, z);
        let r = attn_drop4(row.r, c * 4u, kv_len);
        let ds = row.scale * p * (ld4_dp(row.base, c) * r - d);
        st4_s(row.base, c, p * r);
        st4_dp(row.base, c, ds);
    }
}
