// scatter_reduce (and scatter): a contiguous copy of `dst` where each element p named by an
// index position q (p = q with q[dim] = ids[q]) becomes a reduction of the src[q] landing on
// it, and of dst[p] too when include_self. Elements no index names are plain copies.
// Parameters: ScatterParams (kernels/index.rs); `dst`, `ids`, `src` are layout block bases.
// `op`: 0 replace (the last q wins: PyTorch's scatter), 1 sum, 2 prod, 3 mean (floor division
// for i32), 4 amax, 5 amin (NaN propagates, as torch.amax). Replace ignores include_self.
// WGSL has no float atomics, so as in scatter_add.wgsl each thread owns one output element
// and scans the ids positions along `dim` that share its other coordinates, in increasing
// order: the result is deterministic and combines in the CPU oracle's order. The cost is
// (output elements) × (ids extent along dim). The generator fills T (storage), C (compute: f16
// works in f32; integers wrap), NAN (is_nan_c's body) and MEAN (mean_of's body).

{{PARAMS}}
@group(0) @binding(1) var<storage, read> dst: array<{{T}}>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read> src: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> out: array<{{T}}>;

fn is_nan_c(v: {{C}}) -> bool {
{{NAN}}
}

fn mean_of(s: {{C}}, n: u32) -> {{C}} {
{{MEAN}}
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = params();
    let i = linear_group(wid, nwg) * 256u + lid;
    if i >= p.numel { return; }
    let dim = p.dim;
    let op = p.op;
    let with_self = p.include_self != 0u || op == 0u;
    let rank = layout_rank(p.dst);
    var at = layout_offset(p.dst);
    var id_at = layout_offset(p.ids);
    var src_at = layout_offset(p.src);
    var inside = true;
    var want = 0u;
    var rem = i;
    var d = rank;
    loop {
        if d == 0u { break; }
        d -= 1u;
        let extent = layout_size(p.dst, d);
        let c = rem % extent;
        rem /= extent;
        at += c * layout_stride(p.dst, rank, d);
        if d == dim {
            want = c;
        } else {
            inside = inside && c < layout_size(p.ids, d);
            id_at += c * layout_stride(p.ids, rank, d);
            src_at += c * layout_stride(p.src, rank, d);
        }
    }
    let x = {{C}}(dst[at]);
    // Without self, sums start at 0 and products at 1; amax/amin take their first value as is.
    var acc = x;
    if !with_self {
        acc = select({{C}}(0), {{C}}(1), op == 2u);
    }
    var count = 0u;
    if inside {
        let len = layout_size(p.ids, dim);
        let id_step = layout_stride(p.ids, rank, dim);
        let src_step = layout_stride(p.src, rank, dim);
        for (var m = 0u; m < len; m++) {
            if ids[id_at + m * id_step] != want { continue; }
            let v = {{C}}(src[src_at + m * src_step]);
            if op == 0u || (op >= 4u && count == 0u && !with_self) {
                acc = v;
            } else if op == 1u || op == 3u {
                acc += v;
            } else if op == 2u {
                acc *= v;
            } else if !is_nan_c(acc) && (is_nan_c(v) || (op == 4u && v > acc) || (op == 5u && v < acc)) {
                acc = v;
            }
            count += 1u;
        }
    }
    if count == 0u {
        acc = x;
    } else if op == 3u {
        acc = mean_of(acc, count + select(0u, 1u, with_self));
    }
    out[i] = {{T}}(acc);
}
