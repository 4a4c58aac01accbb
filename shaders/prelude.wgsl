// Shared by every Kiln kernel: the metadata binding and strided indexing.
// A layout block in `info` is [offset, rank, shape[rank], strides[rank]].

@group(0) @binding(0) var<storage, read> info: array<u32>;

// Storage index of the i-th element (row-major) of the layout block at `base`.
fn layout_index(base: u32, i: u32) -> u32 {
    let rank = info[base + 1u];
    var idx = info[base];
    var rem = i;
    var d = rank;
    loop {
        if d == 0u { break; }
        d -= 1u;
        let size = info[base + 2u + d];
        idx += (rem % size) * info[base + 2u + rank + d];
        rem /= size;
    }
    return idx;
}

// Fields of the layout block at `base` (kernels with typed parameters keep each block's base
// in a `u32` field of their params struct).
fn layout_offset(base: u32) -> u32 {
    return info[base];
}

fn layout_rank(base: u32) -> u32 {
    return info[base + 1u];
}

fn layout_size(base: u32, d: u32) -> u32 {
    return info[base + 2u + d];
}

// `rank` is the block's own (passed in so that loops load it once).
fn layout_stride(base: u32, rank: u32, d: u32) -> u32 {
    return info[base + 2u + rank + d];
}

// a / d for a window's stride or dilation: u32 division by a run-time value costs a long
// instruction sequence on GPUs (it dominated col2im on the H100), and these divisors are
// nearly always 1 or 2. The branches are uniform: every thread has the same d.
fn div_window(a: u32, d: u32) -> u32 {
    if d == 1u { return a; }
    if d == 2u { return a >> 1u; }
    return a / d;
}

// Workgroup grids may be 2-D when a 1-D count would pass 65,535 (see batch.rs).
fn linear_group(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// The f32 with these bits. WGSL makes a constant expression that evaluates to inf or NaN an
// error (Chrome's Tint enforces it, naga does not), and a call to a user function is never a
// constant expression: kernels build inf and NaN through this.
fn kiln_f32_bits(b: u32) -> f32 {
    return bitcast<f32>(b);
}
