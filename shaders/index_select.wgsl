// index_select: `out` is `src` with dim `dim` replaced by the entries `ids` names, in order.
// info: [numel, dim, n_ids, ids_offset, ids_stride, inner, src layout block...]
// `inner` is the product of the dims after `dim`. The generator fills T (the storage word:
// this is pure data movement, so every 4-byte dtype travels as u32) and CONTIGUOUS (src is
// row-major from its offset, so its index is arithmetic instead of a walk over the dims).
// An id past the dim (i32 negatives arrive as huge u32) reads nothing and writes zero.

@group(0) @binding(1) var<storage, read> src: array<{{T}}>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<{{T}}>;

const CONTIGUOUS: bool = {{CONTIGUOUS}};
const SRC: u32 = 6u;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wid, nwg) * 256u + lid;
    if i >= info[0] { return; }
    let dim = info[1];
    let n = info[2];
    let inner = info[5];
    let id = ids[info[3] + ((i / inner) % n) * info[4]];
    let rank = info[SRC + 1u];
    let size = info[SRC + 2u + dim];
    if id >= size {
        out[i] = {{T}}();
        return;
    }
    var at: u32;
    if CONTIGUOUS {
        at = info[SRC] + ((i / (inner * n)) * size + id) * inner + i % inner;
    } else {
        at = info[SRC] + id * info[SRC + 2u + rank + dim];
        var rem = i;
        var d = rank;
        loop {
            if d == 0u { break; }
            d -= 1u;
            let extent = select(info[SRC + 2u + d], n, d == dim);
            if d != dim { at += (rem % extent) * info[SRC + 2u + rank + d]; }
            rem /= extent;
        }
    }
    out[i] = src[at];
}
