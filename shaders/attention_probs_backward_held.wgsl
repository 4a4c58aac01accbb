// Materialised attention, backward, for rows short enough to live in registers (each thread
// holds at most HELD chunks of 4 of P and of dP): the contract of attention_probs_backward.wgsl
// (which serves longer rows by streaming them twice), with each visible element of S and dP
// read once and each of P and dS written once. Past the row's last visible key (causal) P and
// dS are 0 and nothing is read.
//
// The thread's chunks are c = lane + k·lanes, k < HELD; one tree sums D = Σ_j P·dP·r.
//
// info and the row layout: attention_rows.wgsl, prepended.
// Bindings (prepended): s and dp (read_write, ld4_/st4_ by row base and chunk), mask (u32),
// lse (f32, read).

const HELD: u32 = {{HELD}}u;

var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = score_row(wid, nwg, lid);
    // Read here, not through score_row: the barrier loops need it visibly uniform.
    let lanes = info[7u];
    let kv_len = info[2u];
    let z = lse[row.r];

    // P, and dP times the dropout factor r (1 without dropout).
    var ps: array<vec4<f32>, HELD>;
    var dps: array<vec4<f32>, HELD>;
    var acc = 0.0;
    for (var k = 0u; k < HELD; k++) {
        let c = row.lane + k * lanes;
        var p = vec4<f32>(0.0);
        var dp = vec4<f32>(0.0);
        if c * 4u < row.end {
            let x = scores4(row, c);
            for (var e = 0u; e < 4u; e++) {
                if visible(c * 4u + e, row.end, row.mask_base) && x[e] > kiln_f32_bits(0xff800000u) {
                    p[e] = exp(x[e] - z);
                }
            }
            dp = ld4_dp(row.base, c) * attn_drop4(row.r, c * 4u, kv_len);
        }
        ps[k] = p;
        dps[k] = dp;
        acc += dot(p, dp);
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
    for (var k = 0u; k < HELD; k++) {
        let c = row.lane + k * lanes;
        if c * 4u < kv_len {
            let p = ps[k];
            // S becomes P·r; dS = scale·P·(dP·r − D), 0 where P is.
            st4_s(row.base, c, p * attn_drop4(row.r, c * 4u, kv_len));
            st4_dp(row.base, c, row.scale * p * (dps[k] - d));
        }
    }
}
