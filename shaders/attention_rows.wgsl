// Shared by the materialised-attention row kernels (attention_probs.wgsl and its backward):
// which score row a thread works on, and which keys that row sees.
//
// info: [rows (batch·heads·q_len), q_len, kv_len, heads, causal, has_mask, scale (f32 bits), lanes],
// then the bias and dropout words of attention_extras.wgsl (prepended too).
// A workgroup of 64 threads owns 64 / lanes rows; a row's lanes are neighbours.

const WG: u32 = 64u;

fn row_len() -> u32 {
    return info[2u];
}

// Key j of a row whose visible prefix ends at `end` (causal, or kv_len), under the key mask.
fn visible(j: u32, end: u32, mask_base: u32) -> bool {
    if j >= end {
        return false;
    }
    return info[5u] == 0u || mask[mask_base + j] == 0u;
}

// The scaled, biased scores of chunk c (keys 4c..4c+3) of `row`; keys past the row read no bias.
fn scores4(row: ScoreRow, c: u32) -> vec4<f32> {
    var x = ld4_s(row.base, c) * row.scale;
    if attn_has_bias() {
        let bh = row.r / info[1u];
        let i = row.r % info[1u];
        for (var e = 0u; e < 4u; e++) {
            let j = c * 4u + e;
            if j < info[2u] {
                x[e] += attn_bias(bh / info[3u], bh % info[3u], i, j);
            }
        }
    }
    return x;
}

struct ScoreRow {
    // False for the threads past the last row: they take part in the barriers only.
    live: bool,
    // The row (clamped to the last one) and the thread's lane in it.
    r: u32,
    lane: u32,
    // Where the row starts in the score matrix and in the key mask.
    base: u32,
    mask_base: u32,
    // Keys j < end may be visible (0 for a dead thread).
    end: u32,
    scale: f32,
}

fn score_row(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> ScoreRow {
    let rows = info[0u];
    let q_len = info[1u];
    let kv_len = info[2u];
    let lanes = info[7u];
    let row = linear_group(wid, nwg) * (WG / lanes) + lid / lanes;
    let live = row < rows;
    let r = min(row, rows - 1u);
    let i = r % q_len;
    var end = kv_len;
    if info[4u] != 0u {
        end = min(kv_len, i + 1u);
    }
    if !live {
        end = 0u;
    }
    return ScoreRow(live, r, lid % lanes, r * kv_len, (r / q_len / info[3u]) * kv_len, end, bitcast<f32>(info[6u]));
}
