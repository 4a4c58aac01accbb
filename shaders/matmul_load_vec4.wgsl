// Fetches from matmul operand {{X}} through a vec4 view, for layouts whose m (a) or n (b) stride
// is 1 and whose other strides and offset are multiples of 4, so that every quad along m (n) is
// one aligned vec4. Quads that cross the matrix's edge fall back to single elements.

@group(0) @binding({{BINDING}}) var<storage, read> {{X}}: array<vec4<{{T}}>>;

fn {{X}}_one(p: u32, ok: bool) -> {{C}} {
    if ok { return {{C}}({{X}}[p / 4u][p % 4u]); }
    return {{C}}(0);
}

// The quad x..x+3 along m (a) or n (b) at one k (p a multiple of 4); zeros past the matrix's edge
// `lim` (M or N, the caller's: no metadata read in the k loop) or when !ok (past K).
fn {{X}}_quad_x(p: u32, x: u32, lim: u32, ok: bool) -> vec4<{{C}}> {
    if ok && x + 3u < lim { return vec4<{{C}}>({{X}}[p / 4u]); }
    return vec4<{{C}}>({{X}}_one(p, ok && x < lim), {{X}}_one(p + 1u, ok && x + 1u < lim),
        {{X}}_one(p + 2u, ok && x + 2u < lim), {{X}}_one(p + 3u, ok && x + 3u < lim));
}
