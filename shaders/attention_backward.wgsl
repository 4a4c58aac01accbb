// Attention backward, recomputing probabilities from the forward's saved log-sum-exp
// (P_ij = exp(scale·q_i·k_j − lse_i)) instead of storing them: nothing of size q_len × kv_len
// is ever materialised. Two kernels, selected by PASS, share this file:
//
// PASS 0 (dq): one thread per query row i, keys streamed through shared memory as in the
//   forward. δ_i = dO_i·O_i (the softmax backward's row term, also written out for pass 1);
//   dS_ij = P_ij (dO_i·v_j − δ_i);  dq_i = scale · Σ_j dS_ij k_j.
// PASS 1 (dk, dv): one thread per key row j, query rows (q, dO, lse, δ) streamed through
//   shared memory: dv_j = Σ_i P_ij dO_i;  dk_j = scale · Σ_i dS_ij q_i.
// Each thread owns its outputs, so there are no atomics and the result is deterministic.
//
// info: [batch·heads, heads, q_len, kv_len, causal, has_mask, scale (f32 bits), tiles]
// Bindings (prepended): q, k, v, o, dout (read), mask (u32), lse (f32, read), delta (f32,
// written by pass 0, read by pass 1), then dq (pass 0: st_ga) or dk, dv (pass 1: st_ga, st_gb);
// ld_*/st_* helpers, the unused ones as no-ops.

const D: u32 = {{D}}u;
const BC: u32 = {{BC}}u;
const BR: u32 = 64u;
const PASS: u32 = {{PASS}}u;

var<workgroup> ta: array<f32, {{TILE}}>;
var<workgroup> tb: array<f32, {{TILE}}>;
var<workgroup> tl: array<f32, {{BC}}>;
var<workgroup> td: array<f32, {{BC}}>;

fn dot_a(c: u32, x: ptr<function, array<f32, D>>) -> f32 {
    var s = 0.0;
    for (var e = 0u; e < D; e++) {
        s += (*x)[e] * ta[c * D + e];
    }
    return s;
}

fn dot_b(c: u32, x: ptr<function, array<f32, D>>) -> f32 {
    var s = 0.0;
    for (var e = 0u; e < D; e++) {
        s += (*x)[e] * tb[c * D + e];
    }
    return s;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = linear_group(wid, nwg);
    let tiles = info[7];
    let bh = g / tiles;
    if bh >= info[0] {
        return;
    }
    let tile = g % tiles;
    let heads = info[1];
    let q_len = info[2];
    let kv_len = info[3];
    let causal = info[4] != 0u;
    let has_mask = info[5] != 0u;
    let scale = bitcast<f32>(info[6]);
    let mask_base = (bh / heads) * kv_len;
    let q0 = bh * q_len;
    let k0 = bh * kv_len;
    // This thread's row: a query (pass 0) or a key (pass 1).
    let r = tile * BR + lid;

    var a: array<f32, D>;
    var b: array<f32, D>;
    var ga: array<f32, D>;
    var gb: array<f32, D>;
    if PASS == 0u {
        let live = r < q_len;
        let row = q0 + min(r, q_len - 1u);
        var delta = 0.0;
        for (var e = 0u; e < D; e++) {
            a[e] = ld_q(row * D + e);
            b[e] = ld_dout(row * D + e);
            ga[e] = 0.0;
            delta += b[e] * ld_o(row * D + e);
        }
        let z = lse[row];
        var kv_end = kv_len;
        if causal {
            kv_end = min(kv_len, tile * BR + BR);
        }
        for (var t0 = 0u; t0 < kv_end; t0 += BC) {
            for (var e = lid; e < BC * D; e += BR) {
                let j = t0 + e / D;
                var kx = 0.0;
                var vx = 0.0;
                if j < kv_len {
                    kx = ld_k((k0 + j) * D + e % D);
                    vx = ld_v((k0 + j) * D + e % D);
                }
                ta[e] = kx;
                tb[e] = vx;
            }
            workgroupBarrier();
            if live {
                let here = min(BC, kv_len - t0);
                for (var c = 0u; c < here; c++) {
                    let j = t0 + c;
                    if causal && j > r {
                        break;
                    }
                    if has_mask && mask[mask_base + j] != 0u {
                        continue;
                    }
                    let p = exp(scale * dot_a(c, &a) - z);
                    let ds = p * (dot_b(c, &b) - delta);
                    for (var e = 0u; e < D; e++) {
                        ga[e] += ds * ta[c * D + e];
                    }
                }
            }
            workgroupBarrier();
        }
        if live {
            st_delta(row, delta);
            for (var e = 0u; e < D; e++) {
                st_ga(row * D + e, ga[e] * scale);
            }
        }
    } else {
        let live = r < kv_len;
        let row = k0 + min(r, kv_len - 1u);
        for (var e = 0u; e < D; e++) {
            a[e] = ld_k(row * D + e);
            b[e] = ld_v(row * D + e);
            ga[e] = 0.0;
            gb[e] = 0.0;
        }
        let hidden = has_mask && mask[mask_base + min(r, kv_len - 1u)] != 0u;
        // Causal: query i sees key j only when i >= j, so earlier query tiles are skipped.
        var start = 0u;
        if causal {
            start = (tile * BR / BC) * BC;
        }
        for (var t0 = start; t0 < q_len; t0 += BC) {
            for (var e = lid; e < BC * D; e += BR) {
                let i = t0 + e / D;
                var qx = 0.0;
                var dx = 0.0;
                if i < q_len {
                    qx = ld_q((q0 + i) * D + e % D);
                    dx = ld_dout((q0 + i) * D + e % D);
                }
                ta[e] = qx;
                tb[e] = dx;
            }
            for (var c = lid; c < BC; c += BR) {
                let i = t0 + c;
                var z = bitcast<f32>(0x7f800000u);
                var dl = 0.0;
                if i < q_len {
                    z = lse[q0 + i];
                    dl = ld_delta(q0 + i);
                }
                tl[c] = z;
                td[c] = dl;
            }
            workgroupBarrier();
            if live && !hidden {
                let here = min(BC, q_len - t0);
                for (var c = 0u; c < here; c++) {
                    if causal && r > t0 + c {
                        continue;
                    }
                    let p = exp(scale * dot_a(c, &a) - tl[c]);
                    let ds = p * (dot_b(c, &b) - td[c]);
                    for (var e = 0u; e < D; e++) {
                        gb[e] += p * tb[c * D + e];
                        ga[e] += ds * ta[c * D + e];
                    }
                }
            }
            workgroupBarrier();
        }
        if live {
            for (var e = 0u; e < D; e++) {
                st_ga(row * D + e, ga[e] * scale);
                st_gb(row * D + e, gb[e]);
            }
        }
    }
}
