// topk over the last dim: one workgroup per row makes k selection passes; pass t finds the best
// entry ranked after the one pass t-1 chose. Entries are ranked by (key, index): a larger
// order key first, ties to the lower index.
// Parameters: TopkParams (kernels/index.rs); src's layout block follows at `src`.
// The generator fills T (storage) and KEY, which maps a value to a u32 whose unsigned order is
// the value order, with NaN above everything and -0 equal to +0. For smallest-first the key is
// complemented, which keeps NaN ranked last there too.

{{PARAMS}}
@group(0) @binding(1) var<storage, read> src: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> values: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> indices: array<u32>;

const THREADS: u32 = 64u;

var<workgroup> cand_key: array<u32, 64>;
var<workgroup> cand_idx: array<u32, 64>;

fn order_key(x: {{T}}) -> u32 {
{{KEY}}
}

fn ranks_before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia < ib);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = params();
    let row = linear_group(wid, nwg);
    if row >= p.rows { return; }
    let len = p.len;
    let k = p.k;
    let flip = select(0xffffffffu, 0u, p.largest != 0u);
    let step = p.last_stride;
    let base = layout_index(p.src, row * len);
    var prev_key = 0u;
    var prev_idx = 0u;
    for (var t = 0u; t < k; t++) {
        // (0, u32 max) ranks after every real entry: the "none found" marker.
        var best_key = 0u;
        var best_idx = 0xffffffffu;
        for (var j = lid; j < len; j += THREADS) {
            let key = order_key(src[base + j * step]) ^ flip;
            if (t == 0u || ranks_before(prev_key, prev_idx, key, j)) && ranks_before(key, j, best_key, best_idx) {
                best_key = key;
                best_idx = j;
            }
        }
        cand_key[lid] = best_key;
        cand_idx[lid] = best_idx;
        workgroupBarrier();
        for (var s = THREADS / 2u; s > 0u; s >>= 1u) {
            if lid < s && ranks_before(cand_key[lid + s], cand_idx[lid + s], cand_key[lid], cand_idx[lid]) {
                cand_key[lid] = cand_key[lid + s];
                cand_idx[lid] = cand_idx[lid + s];
            }
            workgroupBarrier();
        }
        prev_key = cand_key[0];
        prev_idx = cand_idx[0];
        if lid == 0u {
            values[row * k + t] = src[base + prev_idx * step];
            indices[row * k + t] = prev_idx;
        }
        // Nobody may overwrite the candidates before every thread has read the winner.
        workgroupBarrier();
    }
}
