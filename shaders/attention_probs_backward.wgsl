// Materialised attention, backward: the row kernel between S = Q·Kᵀ, dP = dO·Vᵀ and the three
// gradient matmuls. It recomputes P = exp(scale·S − lse) from the forward's log-sum-exp (hidden
// keys, and every key of a row with lse = +inf, give 0), reduces D = Σ_j P·dP over the row
// (equal to Σ_d dO·O, without reading O), and overwrites S with P (for dV = Pᵀ·dO) and dP with
// dS = scale·P·(dP − D) (for dQ = dS·K and dK = dSᵀ·Q). Visibility as in attention_probs.wgsl.
//
// Workgroup layout as attention_probs.wgsl: 64 threads, LANES per row, chunks of 4 elements.
//
// info: [rows (batch·heads·q_len), q_len, kv_len, heads, causal, has_mask, scale (f32 bits), lanes]
// Bindings (prepended): s and dp (read_write, ld4_/st4_ by row base and chunk), mask (u32),
// lse (f32, read).

const WG: u32 = 64u;

var<workgroup> red: array<f32, 64>;

fn row_len() -> u32 {
    return info[2u];
}

fn visible(j: u32, end: u32, mask_base: u32) -> bool {
    if j >= end {
        return false;
    }
    return info[5u] == 0u || mask[mask_base + j] == 0u;
}

// The probabilities of chunk c (0 where hidden).
fn probs(base: u32, c: u32, end: u32, mask_base: u32, scale: f32, z: f32) -> vec4<f32> {
    let x = ld4_s(base, c) * scale;
    var p = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if visible(c * 4u + e, end, mask_base) {
            p[e] = exp(x[e] - z);
        }
    }
    return p;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = info[0u];
    let q_len = info[1u];
    let kv_len = info[2u];
    let causal = info[4u] != 0u;
    let scale = bitcast<f32>(info[6u]);
    let lanes = info[7u];
    let row = linear_group(wid, nwg) * (WG / lanes) + lid / lanes;
    let lane = lid % lanes;
    let live = row < rows;
    let r = min(row, rows - 1u);
    let i = r % q_len;
    let mask_base = (r / q_len / info[3u]) * kv_len;
    let base = r * kv_len;
    let z = lse[r];
    var end = kv_len;
    if causal {
        end = min(kv_len, i + 1u);
    }
    if !live {
        end = 0u;
    }

    var acc = 0.0;
    for (var c = lane; c * 4u < end; c += lanes) {
        acc += dot(probs(base, c, end, mask_base, scale, z), ld4_dp(base, c));
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var half = lanes / 2u; half > 0u; half = half / 2u) {
        if lane < half {
            red[lid] += red[lid + half];
        }
        workgroupBarrier();
    }
    let d = red[lid - lane];

    if !live {
        return;
    }
    for (var c = lane; c * 4u < kv_len; c += lanes) {
        let p = probs(base, c, end, mask_base, scale, z);
        let ds = scale * p * (ld4_dp(base, c) - d);
        st4_s(base, c, p);
        st4_dp(base, c, ds);
    }
}
