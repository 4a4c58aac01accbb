// Attention backward, recomputing probabilities from the forward's saved log-sum-exp
// (P_ij = exp(scale·q_i·k_j − lse_i)) instead of storing them: nothing of size q_len × kv_len
// is ever materialised. Two kernels, selected by PASS, share this file; both split each row
// over a quad of 4 threads (V-vec4 slices of the zero-padded head dim) as the forward does, and
// sum the quad's partial dot products through shared memory once per tile.
//
// PASS 0 (dq): BR query rows i per workgroup, keys and values streamed through shared memory.
//   δ_i = dO_i·O_i (the softmax backward's row term, also written out for pass 1);
//   dS_ij = P_ij (dO_i·v_j − δ_i);  dq_i = scale · Σ_j dS_ij k_j.
// PASS 1 (dk, dv): BR key rows j per workgroup, queries and output gradients (with lse and δ)
//   streamed through shared memory: dv_j = Σ_i P_ij dO_i;  dk_j = scale · Σ_i dS_ij q_i.
// Each thread owns its outputs, so there are no atomics and the result is deterministic.
//
// info: [batch·heads, heads, q_len, kv_len, causal, has_mask, scale (f32 bits), tiles]
// Bindings (prepended): q, k, v, o, dout (read), mask (u32), lse (f32, read), delta (f32,
// written by pass 0, read by pass 1), then dq (pass 0: st4_ga) or dk, dv (pass 1: st4_ga,
// st4_gb); ld_*/st_* helpers, the unused ones as no-ops.

const D: u32 = {{D}}u;
const V: u32 = {{V}}u;
const W4: u32 = 4u * V;
const BC: u32 = {{BC}}u;
const BR: u32 = 16u;
const PASS: u32 = {{PASS}}u;

// Pass 0: k and v tiles; pass 1: q and dO tiles.
var<workgroup> ta: array<vec4<f32>, {{TILE4}}>;
var<workgroup> tb: array<vec4<f32>, {{TILE4}}>;
var<workgroup> part_a: array<f32, {{PART}}>;
var<workgroup> part_b: array<f32, {{PART}}>;
var<workgroup> tl: array<f32, {{BC}}>;
var<workgroup> td: array<f32, {{BC}}>;

// The quad's four partial dot products for (row r, key or query c).
fn sum_a(r: u32, c: u32) -> f32 {
    let k = (r * BC + c) * 4u;
    return part_a[k] + part_a[k + 1u] + part_a[k + 2u] + part_a[k + 3u];
}

fn sum_b(r: u32, c: u32) -> f32 {
    let k = (r * BC + c) * 4u;
    return part_b[k] + part_b[k + 1u] + part_b[k + 2u] + part_b[k + 3u];
}

// This thread's share of row r's dot products with every staged row c: a·ta_c into part_a
// and b·tb_c into part_b (pass 0: q·k and dO·v; pass 1: k·q and v·dO).
fn quad_dots(r: u32, quad: u32, a: array<vec4<f32>, V>, b: array<vec4<f32>, V>) {
    for (var c = 0u; c < BC; c++) {
        var s = 0.0;
        var dp = 0.0;
        for (var u = 0u; u < V; u++) {
            s += dot(a[u], ta[c * W4 + quad * V + u]);
            dp += dot(b[u], tb[c * W4 + quad * V + u]);
        }
        part_a[(r * BC + c) * 4u + quad] = s;
        part_b[(r * BC + c) * 4u + quad] = dp;
    }
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
    let r = lid / 4u;
    let quad = lid % 4u;
    // This thread's row: a query (pass 0) or a key (pass 1).
    let row_i = tile * BR + r;

    var a: array<vec4<f32>, V>;
    var b: array<vec4<f32>, V>;
    var ga: array<vec4<f32>, V>;
    var gb: array<vec4<f32>, V>;
    if PASS == 0u {
        let live = row_i < q_len;
        let row = q0 + min(row_i, q_len - 1u);
        var dpart = 0.0;
        for (var u = 0u; u < V; u++) {
            let e = (quad * V + u) * 4u;
            a[u] = ld4_q(row * D, e);
            b[u] = ld4_dout(row * D, e);
            ga[u] = vec4<f32>(0.0);
            dpart += dot(b[u], ld4_o(row * D, e));
        }
        part_a[r * 4u + quad] = dpart;
        workgroupBarrier();
        let delta = part_a[r * 4u] + part_a[r * 4u + 1u] + part_a[r * 4u + 2u] + part_a[r * 4u + 3u];
        workgroupBarrier();
        let z = lse[row];
        var kv_end = kv_len;
        if causal {
            kv_end = min(kv_len, tile * BR + BR);
        }
        for (var t0 = 0u; t0 < kv_end; t0 += BC) {
            for (var x = lid; x < BC * W4; x += 64u) {
                let j = t0 + x / W4;
                var kx = vec4<f32>(0.0);
                var vx = vec4<f32>(0.0);
                if j < kv_len {
                    kx = ld4_k((k0 + j) * D, (x % W4) * 4u);
                    vx = ld4_v((k0 + j) * D, (x % W4) * 4u);
                }
                ta[x] = kx;
                tb[x] = vx;
            }
            workgroupBarrier();
            quad_dots(r, quad, a, b);
            workgroupBarrier();
            for (var c = 0u; c < BC; c++) {
                let j = t0 + c;
                var visible = live && j < kv_len && !(causal && j > row_i);
                if visible && has_mask {
                    visible = mask[mask_base + j] == 0u;
                }
                if visible {
                    let p = exp(scale * sum_a(r, c) - z);
                    let ds = p * (sum_b(r, c) - delta);
                    for (var u = 0u; u < V; u++) {
                        ga[u] += ds * ta[c * W4 + quad * V + u];
                    }
                }
            }
            workgroupBarrier();
        }
        if live {
            if quad == 0u {
                st_delta(row, delta);
            }
            for (var u = 0u; u < V; u++) {
                st4_ga(row * D, (quad * V + u) * 4u, ga[u] * scale);
            }
        }
    } else {
        let live = row_i < kv_len;
        let row = k0 + min(row_i, kv_len - 1u);
        for (var u = 0u; u < V; u++) {
            let e = (quad * V + u) * 4u;
            a[u] = ld4_k(row * D, e);
            b[u] = ld4_v(row * D, e);
            ga[u] = vec4<f32>(0.0);
            gb[u] = vec4<f32>(0.0);
        }
        var seen = live;
        if live && has_mask {
            seen = mask[mask_base + row_i] == 0u;
        }
        // Causal: query i sees key j only when i >= j, so earlier query tiles are skipped.
        var start = 0u;
        if causal {
            start = (tile * BR / BC) * BC;
        }
        for (var t0 = start; t0 < q_len; t0 += BC) {
            for (var x = lid; x < BC * W4; x += 64u) {
                let i = t0 + x / W4;
                var qx = vec4<f32>(0.0);
                var dx = vec4<f32>(0.0);
                if i < q_len {
                    qx = ld4_q((q0 + i) * D, (x % W4) * 4u);
                    dx = ld4_dout((q0 + i) * D, (x % W4) * 4u);
                }
                ta[x] = qx;
                tb[x] = dx;
            }
            for (var c = lid; c < BC; c += 64u) {
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
            quad_dots(r, quad, a, b);
            workgroupBarrier();
            for (var c = 0u; c < BC; c++) {
                let i = t0 + c;
                if seen && i < q_len && !(causal && row_i > i) {
                    let p = exp(scale * sum_a(r, c) - tl[c]);
                    let ds = p * (sum_b(r, c) - td[c]);
                    for (var u = 0u; u < V; u++) {
                        gb[u] += p * tb[c * W4 + quad * V + u];
                        ga[u] += ds * ta[c * W4 + quad * V + u];
                    }
                }
            }
            workgroupBarrier();
        }
        if live {
            for (var u = 0u; u < V; u++) {
                st4_ga(row * D, (quad * V + u) * 4u, ga[u] * scale);
                st4_gb(row * D, (quad * V + u) * 4u, gb[u]);
            }
        }
    }
}
