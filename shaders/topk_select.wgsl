// topk over the last dim for small k: one workgroup per row makes k selection passes; pass t
// finds the best entry ranked after the one pass t-1 chose. Entries are ranked by (key, index):
// a larger order key first, ties to the lower index (the same order as topk.wgsl's sort).
// kernels/index.rs picks this kernel only while k·(len/64 + 8) loop iterations per invocation
// stay far below 65535: llvmpipe (lavapipe) silently ends every loop of an invocation past
// that many iterations in all. Longer rows or larger k go to the bitonic sort (topk.wgsl).
// info: [rows, len, k, largest, last_stride, src layout block...]
// The generator fills T (storage) and KEY, which maps a value to a u32 whose unsigned order is
// the value order, with NaN above everything and -0 equal to +0. For smallest-first the key is
// complemented, which keeps NaN ranked last there too.

@group(0) @binding(1) var<storage, read> src: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> values: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> indices: array<u32>;

const SRC: u32 = 5u;
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
    let row = linear_group(wid, nwg);
    if row >= info[0] { return; }
    let len = info[1];
    let k = info[2];
    let flip = select(0xffffffffu, 0u, info[3] != 0u);
    let step = info[4];
    let base = layout_index(SRC, row * len);
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
