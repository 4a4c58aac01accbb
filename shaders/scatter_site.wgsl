// Shared by scatter_add.wgsl and scatter_reduce.wgsl: which ids and src positions can land on
// output element i. Each thread owns one output element p (WGSL has no float atomics) and
// scans the ids positions along `dim` that share p's other coordinates, in increasing order,
// so results are deterministic and combine in the CPU oracle's order.
// info: [numel, dim, base(dst), base(ids), base(src), ...]: bases of the layout blocks.

struct Site {
    // Storage index of p in dst.
    at: u32,
    // p's coordinate along dim: the id that lands on it.
    want: u32,
    // Whether p's other coordinates are inside the ids extent (else nothing lands on it).
    inside: bool,
    // The first ids and src positions of p's line along dim, their steps and its length.
    id_at: u32,
    src_at: u32,
    id_step: u32,
    src_step: u32,
    len: u32,
}

fn scatter_site(i: u32) -> Site {
    let dim = info[1];
    let db = info[2];
    let ib = info[3];
    let sb = info[4];
    let rank = info[db + 1u];
    var p = Site(info[db], 0u, true, info[ib], info[sb], 0u, 0u, 0u);
    var rem = i;
    var d = rank;
    loop {
        if d == 0u { break; }
        d -= 1u;
        let extent = info[db + 2u + d];
        let c = rem % extent;
        rem /= extent;
        p.at += c * info[db + 2u + rank + d];
        if d == dim {
            p.want = c;
        } else {
            p.inside = p.inside && c < info[ib + 2u + d];
            p.id_at += c * info[ib + 2u + rank + d];
            p.src_at += c * info[sb + 2u + rank + d];
        }
    }
    p.len = info[ib + 2u + dim];
    p.id_step = info[ib + 2u + rank + dim];
    p.src_step = info[sb + 2u + rank + dim];
    return p;
}
