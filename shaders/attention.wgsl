// Scaled dot-product attention forward, flash-attention style: no [q_len, kv_len] score matrix
// ever exists. A workgroup of TR×TC threads owns BR = 4·TR query rows of one (batch, head),
// staged (pre-scaled) in workgroup memory; keys and values stream through one shared tile of
// BC = CN·TC rows. Thread (tr, tc) owns four consecutive query rows (4·tr..4·tr+3, held as the
// lanes of a vec4) and computes, like a small matmul, their scores against keys tc + TC·jj
// (jj < CN), then their output columns (vec4s) tc + TC·u (u < OV). Per key tile:
//   1. K is staged;                                                     barrier
//   2. scores S (4×CN per thread), masked to -inf, and each thread's row maxima to `red`; barrier
//   3. the row max over the tile (TC entries of `red`), the online-softmax rescale of the
//      accumulator and of the per-thread partial row sums, P = exp(S − m) to `ps`; V is staged
//      over K (every thread is past its reads of K);                    barrier
//   4. O += P·V from `ps` and the tile;                                 barrier
// The row sums stay per-thread partial sums (over the thread's own keys, rescaled in step) and
// are added across the row group once at the end. The causal mask is computed from indices
// (key j > i is hidden; tiles past the workgroup's last row are never loaded); the key mask is
// [batch, kv_len] u32 words, nonzero = hidden. An optional bias is added to the scaled scores
// (-inf hides the key) and dropout scales P before it weights V, not the row sums
// (attention_extras.wgsl, appended).
//
// info: [batch·heads, heads, q_len, kv_len, causal, has_mask, scale (f32 bits), q_tiles], then
// the ten words of attention_extras.wgsl.
// Bindings (prepended): q, k, v (read), mask (u32, read), o (q's dtype), lse (f32), with
// ld4_q/ld4_k/ld4_v/st4_o. Output: o = Σ softmax·v, lse = m + log l (+inf where no key is seen,
// with o = 0: the backward then gives that row zero gradients).

const D: u32 = {{D}}u;
// vec4s holding a row's head dim, and the resident rows' pitch (one vec4 of padding spreads
// the rows over the banks).
const D4: u32 = {{D4}}u;
const QP: u32 = D4 + 1u;
const TR: u32 = {{TR}}u;
const TC: u32 = {{TC}}u;
const CN: u32 = {{CN}}u;
const OV: u32 = {{OV}}u;
const BR: u32 = 4u * TR;
const BC: u32 = CN * TC;
const WG: u32 = TR * TC;
// vec4s of a streamed row the output columns cover (D4 rounded up to TC·OV), and its pitch.
const SW: u32 = OV * TC;
const SP: u32 = SW + 1u;

var<workgroup> qs: array<vec4<f32>, {{QS_LEN}}>;
var<workgroup> kv: array<vec4<f32>, {{KV_LEN}}>;
// P of the tile: [key][row group], the four rows of a group as one vec4.
var<workgroup> ps: array<vec4<f32>, {{PS_LEN}}>;
// Per-thread row maxima (then row sums): [tc][row group].
var<workgroup> red: array<vec4<f32>, {{RED_LEN}}>;

fn neg_inf() -> f32 {
    return kiln_f32_bits(0xff800000u);
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = linear_group(wid, nwg);
    let q_tiles = info[7];
    let bh = g / q_tiles;
    // Uniform across the workgroup, so the barriers below stay in uniform control flow.
    if bh >= info[0] {
        return;
    }
    let tile = g % q_tiles;
    let heads = info[1];
    let q_len = info[2];
    let kv_len = info[3];
    let causal = info[4] != 0u;
    let has_mask = info[5] != 0u;
    let scale = bitcast<f32>(info[6]);
    let tr = lid / TC;
    let tc = lid % TC;
    let i0 = tile * BR;
    let kv_base = bh * kv_len;
    let mask_base = (bh / heads) * kv_len;
    // This thread's four query rows.
    let rows = vec4<u32>(i0 + tr * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
    let live = rows < vec4<u32>(q_len);

    for (var x = lid; x < BR * D4; x += WG) {
        let r = x / D4;
        let e = x % D4;
        var val = vec4<f32>(0.0);
        if i0 + r < q_len {
            val = ld4_q((bh * q_len + i0 + r) * D, e * 4u) * scale;
        }
        qs[r * QP + e] = val;
    }
    var acc: array<vec4<f32>, {{ACC_LEN}}>;
    for (var x = 0u; x < 4u * OV; x++) {
        acc[x] = vec4<f32>(0.0);
    }
    var m = vec4<f32>(neg_inf());
    var l = vec4<f32>(0.0);
    var kv_end = kv_len;
    if causal {
        kv_end = min(kv_len, i0 + BR);
    }
    for (var t0 = 0u; t0 < kv_end; t0 += BC) {
        for (var x = lid; x < BC * D4; x += WG) {
            let c = x / D4;
            let e = x % D4;
            var val = vec4<f32>(0.0);
            if t0 + c < kv_len {
                val = ld4_k((kv_base + t0 + c) * D, e * 4u);
            }
            kv[c * SP + e] = val;
        }
        workgroupBarrier();
        var s: array<vec4<f32>, {{CN}}>;
        for (var jj = 0u; jj < CN; jj++) {
            s[jj] = vec4<f32>(0.0);
        }
        let qr = tr * 4u * QP;
        for (var e = 0u; e < D4; e++) {
            let q0 = qs[qr + e];
            let q1 = qs[qr + QP + e];
            let q2 = qs[qr + 2u * QP + e];
            let q3 = qs[qr + 3u * QP + e];
            for (var jj = 0u; jj < CN; jj++) {
                let k = kv[(tc + jj * TC) * SP + e];
                s[jj] += vec4<f32>(dot(q0, k), dot(q1, k), dot(q2, k), dot(q3, k));
            }
        }
        var tmax = vec4<f32>(neg_inf());
        for (var jj = 0u; jj < CN; jj++) {
            let j = t0 + tc + jj * TC;
            var key_ok = j < kv_len;
            if key_ok && has_mask {
                key_ok = mask[mask_base + j] == 0u;
            }
            var vis = live & vec4<bool>(key_ok);
            if causal {
                vis = vis & (vec4<u32>(j) <= rows);
            }
            if attn_has_bias() && key_ok {
                let ri = min(rows, vec4<u32>(q_len - 1u));
                let b = bh / heads;
                let h = bh % heads;
                s[jj] += vec4<f32>(attn_bias(b, h, ri.x, j), attn_bias(b, h, ri.y, j), attn_bias(b, h, ri.z, j), attn_bias(b, h, ri.w, j));
                vis = vis & (s[jj] > vec4<f32>(neg_inf()));
            }
            s[jj] = select(vec4<f32>(neg_inf()), s[jj], vis);
            tmax = max(tmax, s[jj]);
        }
        red[tc * TR + tr] = tmax;
        workgroupBarrier();
        var m_new = m;
        for (var x = 0u; x < TC; x++) {
            m_new = max(m_new, red[x * TR + tr]);
        }
        // A row that has seen no key yet keeps m = -inf, zero p and a zero accumulator.
        let corr = select(vec4<f32>(1.0), exp(m - m_new), m_new > vec4<f32>(neg_inf()));
        m = m_new;
        l *= corr;
        for (var jj = 0u; jj < CN; jj++) {
            let p = select(vec4<f32>(0.0), exp(s[jj] - m_new), s[jj] > vec4<f32>(neg_inf()));
            var r = vec4<f32>(1.0);
            if attn_dropping() {
                let j = t0 + tc + jj * TC;
                let row0 = bh * q_len;
                r = vec4<f32>(attn_drop(row0 + rows.x, j, kv_len), attn_drop(row0 + rows.y, j, kv_len), attn_drop(row0 + rows.z, j, kv_len), attn_drop(row0 + rows.w, j, kv_len));
            }
            ps[(tc + jj * TC) * TR + tr] = p * r;
            l += p;
        }
        for (var u = 0u; u < OV; u++) {
            acc[u] *= corr.x;
            acc[OV + u] *= corr.y;
            acc[2u * OV + u] *= corr.z;
            acc[3u * OV + u] *= corr.w;
        }
        for (var x = lid; x < BC * SW; x += WG) {
            let c = x / SW;
            let e = x % SW;
            var val = vec4<f32>(0.0);
            if t0 + c < kv_len && e < D4 {
                val = ld4_v((kv_base + t0 + c) * D, e * 4u);
            }
            kv[c * SP + e] = val;
        }
        workgroupBarrier();
        for (var c = 0u; c < BC; c++) {
            let p = ps[c * TR + tr];
            for (var u = 0u; u < OV; u++) {
                let v = kv[c * SP + tc + u * TC];
                acc[u] += p.x * v;
                acc[OV + u] += p.y * v;
                acc[2u * OV + u] += p.z * v;
                acc[3u * OV + u] += p.w * v;
            }
        }
        workgroupBarrier();
    }
    red[tc * TR + tr] = l;
    workgroupBarrier();
    var total = vec4<f32>(0.0);
    for (var x = 0u; x < TC; x++) {
        total += red[x * TR + tr];
    }
    for (var ri = 0u; ri < 4u; ri++) {
        if rows[ri] < q_len {
            let row = bh * q_len + rows[ri];
            var inv = 0.0;
            var z = kiln_f32_bits(0x7f800000u);
            if total[ri] > 0.0 {
                inv = 1.0 / total[ri];
                z = m[ri] + log(total[ri]);
            }
            for (var u = 0u; u < OV; u++) {
                let col = tc + u * TC;
                if col < D4 {
                    st4_o(row * D, col * 4u, acc[ri * OV + u] * inv);
                }
            }
            if tc == 0u {
                lse[row] = z;
            }
        }
    }
}
