// Flash attention forward on tensor cores (cooperative matrices, 16×16×16, f16 operands, f32
// accumulation): f16 q, k, v and output, f32 softmax statistics and lse; the same contract as
// attention.wgsl (no key seen: zeros and lse = +inf; causal from indices; key mask).
// A workgroup of NS subgroups of 32 owns BR = 16·NS query rows of one (batch, head); subgroup
// `sid` owns the 16-row strip sid·16.. . Per tile of BC keys:
//   1. K is staged (f16);                                                        barrier
//   2. each subgroup: S strip = Q·Kᵀ (BC/16 tiles of D/16 products) to `ss` (f32); barrier
//   3. V is staged over K; thread r < BR runs row r's online softmax over `ss`: scale, mask,
//      row max, rescale of its running sum and of its output row in `os`, P (f16) to `ps`; barrier
//   4. each subgroup: O strip (loaded from `os`) += P strip · V, stored back;    barrier
// The output rows live in workgroup memory (`os`, f32) because a cooperative matrix cannot be
// rescaled row by row. Every decision around cooperative ops and barriers depends on the
// workgroup alone; a workgroup past the last (the grid may overshoot) recomputes the last one
// and stores nothing.
//
// A bias is added to the scaled scores (-inf hides the key) and dropout scales P before it
// weights V, not the row sums (attention_extras.wgsl, appended).
//
// info: [batch·heads, heads, q_len, kv_len, causal, has_mask, scale (f32 bits), q_tiles], then
// the ten words of attention_extras.wgsl.
// Bindings: q, k, v, o (array<vec4<f16>>: the head dim is a multiple of 16), mask (u32), lse
// (f32), bias (f32).

@group(0) @binding(1) var<storage, read> q: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<f16>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<f16>>;
@group(0) @binding(4) var<storage, read> mask: array<u32>;
@group(0) @binding(5) var<storage, read_write> o: array<vec4<f16>>;
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;
@group(0) @binding(7) var<storage, read> bias: array<f32>;

const D: u32 = {{D}}u;
const D4: u32 = D / 4u;
const NS: u32 = {{NS}}u;
const BR: u32 = 16u * NS;
const BC: u32 = {{BC}}u;
const WG: u32 = 32u * NS;
// Pitches: f16 rows of q, k, v (halves, and vec4s), P rows, f32 rows of S and O.
const QH: u32 = D + 8u;
const Q4: u32 = QH / 4u;
const PH: u32 = BC + 8u;
const P4: u32 = PH / 4u;
const SF: u32 = BC + 4u;
const OF: u32 = D + 4u;

var<workgroup> qs: array<vec4<f16>, {{QS_LEN}}>;
var<workgroup> kv: array<vec4<f16>, {{KV_LEN}}>;
var<workgroup> ss: array<f32, {{SS_LEN}}>;
var<workgroup> ps: array<vec4<f16>, {{PS_LEN}}>;
var<workgroup> os: array<f32, {{OS_LEN}}>;
var<workgroup> fin: array<f32, {{BR}}>;

fn neg_inf() -> f32 {
    return kiln_f32_bits(0xff800000u);
}

@compute @workgroup_size({{WG}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sid: u32,
) {
    let q_tiles = info[7];
    let groups = info[0] * q_tiles;
    let linear = linear_group(wid, nwg);
    let store = linear < groups;
    let g = min(linear, groups - 1u);
    let bh = g / q_tiles;
    let tile = g % q_tiles;
    let heads = info[1];
    let q_len = info[2];
    let kv_len = info[3];
    let causal = info[4] != 0u;
    let has_mask = info[5] != 0u;
    let scale = bitcast<f32>(info[6]);
    let i0 = tile * BR;
    let kv_base = bh * kv_len;
    let mask_base = (bh / heads) * kv_len;

    for (var x = lid; x < BR * D4; x += WG) {
        let r = x / D4;
        var val = vec4<f16>();
        if i0 + r < q_len {
            val = q[(bh * q_len + i0 + r) * D4 + x % D4];
        }
        qs[r * Q4 + x % D4] = val;
    }
    for (var x = lid; x < BR * OF; x += WG) {
        os[x] = 0.0;
    }
    // Row statistics, meaningful in threads lid < BR (row lid).
    let i = i0 + lid;
    var m = neg_inf();
    var l = 0.0;
    var kv_end = kv_len;
    if causal {
        kv_end = min(kv_len, i0 + BR);
    }
    workgroupBarrier();
    for (var t0 = 0u; t0 < kv_end; t0 += BC) {
        for (var x = lid; x < BC * D4; x += WG) {
            let c = x / D4;
            var val = vec4<f16>();
            if t0 + c < kv_len {
                val = k[(kv_base + t0 + c) * D4 + x % D4];
            }
            kv[c * Q4 + x % D4] = val;
        }
        workgroupBarrier();
{{SCORES}}
        workgroupBarrier();
        for (var x = lid; x < BC * D4; x += WG) {
            let c = x / D4;
            var val = vec4<f16>();
            if t0 + c < kv_len {
                val = v[(kv_base + t0 + c) * D4 + x % D4];
            }
            kv[c * Q4 + x % D4] = val;
        }
        if lid < BR {
            let row = lid * SF;
            var tmax = neg_inf();
            for (var c = 0u; c < BC; c++) {
                let j = t0 + c;
                var visible = i < q_len && j < kv_len && !(causal && j > i);
                if visible && has_mask {
                    visible = mask[mask_base + j] == 0u;
                }
                var s = ss[row + c] * scale;
                if visible && attn_has_bias() {
                    s += attn_bias(bh / heads, bh % heads, i, j);
                }
                s = select(neg_inf(), s, visible);
                ss[row + c] = s;
                tmax = max(tmax, s);
            }
            let m_new = max(m, tmax);
            if m_new > neg_inf() {
                // exp(-inf) = 0 on the first visible tile, where the row is still zero.
                let corr = exp(m - m_new);
                l *= corr;
                if corr != 1.0 {
                    for (var e = 0u; e < D; e++) {
                        os[lid * OF + e] *= corr;
                    }
                }
            }
            m = m_new;
            for (var c = 0u; c < BC; c += 4u) {
                var p = vec4<f32>(0.0);
                for (var x = 0u; x < 4u; x++) {
                    let s = ss[row + c + x];
                    if s > neg_inf() {
                        p[x] = exp(s - m_new);
                    }
                }
                l += p.x + p.y + p.z + p.w;
                ps[lid * P4 + c / 4u] = vec4<f16>(p * attn_drop4(bh * q_len + i, t0 + c, kv_len));
            }
        }
        workgroupBarrier();
{{OUTPUT}}
        workgroupBarrier();
    }
    // Row r's 1/l, then every thread stores whole vec4s of the output.
    if lid < BR {
        var inv = 0.0;
        var z = kiln_f32_bits(0x7f800000u);
        if l > 0.0 {
            inv = 1.0 / l;
            z = m + log(l);
        }
        fin[lid] = inv;
        if store && i < q_len {
            lse[bh * q_len + i] = z;
        }
    }
    workgroupBarrier();
    for (var x = lid; x < BR * D4; x += WG) {
        let r = x / D4;
        let e = x % D4;
        if store && i0 + r < q_len {
            let at = r * OF + e * 4u;
            let val = vec4<f32>(os[at], os[at + 1u], os[at + 2u], os[at + 3u]) * fin[r];
            o[(bh * q_len + i0 + r) * D4 + e] = vec4<f16>(val);
        }
    }
}
