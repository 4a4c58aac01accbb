// Materialised attention, forward, for rows short enough to live in registers (each thread
// holds at most HELD chunks of 4 scores): the contract of attention_probs.wgsl (which serves
// longer rows by streaming them twice), with each visible score read once and each
// probability written once. Scores past the row's last visible key (causal) are never read.
//
// The thread's chunks are c = lane + k·lanes, k < HELD. A first tree takes the row max, a second
// the sum of exp(x − max); there is no online rescaling, so each score takes one exp.
//
// info and the row layout: attention_rows.wgsl, prepended.
// Bindings (prepended): s (read_write, ld4_s / st4_s by row base and chunk), mask (u32), lse (f32).

const HELD: u32 = {{HELD}}u;

var<workgroup> red_m: array<f32, 64>;
var<workgroup> red_l: array<f32, 64>;

fn neg_inf() -> f32 {
    return kiln_f32_bits(0xff800000u);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = score_row(wid, nwg, lid);
    // Read here, not through score_row: the barrier loops need it visibly uniform.
    let lanes = info[7u];
    let kv_len = info[2u];

    // Scaled, biased scores; -inf where hidden (and past the visible prefix).
    var xs: array<vec4<f32>, HELD>;
    var m = neg_inf();
    for (var k = 0u; k < HELD; k++) {
        let c = row.lane + k * lanes;
        var x = vec4<f32>(neg_inf());
        if c * 4u < row.end {
            let y = scores4(row, c);
            for (var e = 0u; e < 4u; e++) {
                if visible(c * 4u + e, row.end, row.mask_base) && y[e] > neg_inf() {
                    x[e] = y[e];
                }
            }
        }
        xs[k] = x;
        m = max(m, max(max(x.x, x.y), max(x.z, x.w)));
    }
    red_m[lid] = m;
    workgroupBarrier();
    for (var half = lanes / 2u; half > 0u; half = half / 2u) {
        if row.lane < half {
            red_m[lid] = max(red_m[lid], red_m[lid + half]);
        }
        workgroupBarrier();
    }
    m = red_m[lid - row.lane];

    // exp(x − m), 0 where hidden (a visible key makes m finite, so no -inf − -inf).
    var l = 0.0;
    for (var k = 0u; k < HELD; k++) {
        let x = xs[k];
        var p = vec4<f32>(0.0);
        for (var e = 0u; e < 4u; e++) {
            if x[e] > neg_inf() {
                p[e] = exp(x[e] - m);
            }
        }
        xs[k] = p;
        l += (p.x + p.y) + (p.z + p.w);
    }
    red_l[lid] = l;
    workgroupBarrier();
    for (var half = lanes / 2u; half > 0u; half = half / 2u) {
        if row.lane < half {
            red_l[lid] += red_l[lid + half];
        }
        workgroupBarrier();
    }
    l = red_l[lid - row.lane];

    if !row.live {
        return;
    }
    var inv = 0.0;
    if l > 0.0 {
        inv = 1.0 / l;
    }
    // The whole row is written: hidden keys (past `row.end` too) get 0.
    for (var k = 0u; k < HELD; k++) {
        let c = row.lane + k * lanes;
        if c * 4u < kv_len {
            st4_s(row.base, c, xs[k] * inv * attn_drop4(row.r, c * 4u, kv_len));
        }
    }
    if row.lane == 0u {
        var z = kiln_f32_bits(0x7f800000u);
        if l > 0.0 {
            z = m + log(l);
        }
        lse[row.r] = z;
    }
}
