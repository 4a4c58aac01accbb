// index_select: `out` is `src` with dim `dim` replaced by the entries `ids` names, in order.
// Parameters: IndexSelectParams (kernels/index.rs); `inner` is the product of the dims after
// `dim`, and src's layout block follows the struct at `src`. The generator fills T (the
// storage word: this is pure data movement, so every 4-byte dtype travels as u32) and
// CONTIGUOUS (src is row-major from its offset, so its index is arithmetic instead of a walk
// over the dims). An id past the dim (i32 negatives arrive as huge u32) reads nothing and
// writes zero.

{{PARAMS}}
@group(0) @binding(1) var<storage, read> src: array<{{T}}>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<{{T}}>;

const CONTIGUOUS: bool = {{CONTIGUOUS}};

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = params();
    let i = linear_group(wid, nwg) * 256u + lid;
    if i >= p.numel { return; }
    let dim = p.dim;
    let n = p.n_ids;
    let inner = p.inner;
    let id = ids[p.ids_offset + ((i / inner) % n) * p.ids_stride];
    let rank = layout_rank(p.src);
    let size = layout_size(p.src, dim);
    if id >= size {
        out[i] = {{T}}();
        return;
    }
    var at: u32;
    if CONTIGUOUS {
        at = layout_offset(p.src) + ((i / (inner * n)) * size + id) * inner + i % inner;
    } else {
        at = layout_offset(p.src) + id * layout_stride(p.src, rank, dim);
        var rem = i;
        var d = rank;
        loop {
            if d == 0u { break; }
            d -= 1u;
            let extent = select(layout_size(p.src, d), n, d == dim);
            if d != dim { at += (rem % extent) * layout_stride(p.src, rank, d); }
            rem /= extent;
        }
    }
    out[i] = src[at];
}
