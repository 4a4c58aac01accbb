// Fetches from matmul operand {{X}} through a vec4 view, for layouts whose fast dim has stride 1
// and whose other strides and offset are multiples of 4 (so every quad along it is one aligned
// vec4). Quads that cross the matrix's edge fall back to single elements.

@group(0) @binding({{BINDING}}) var<storage, read> {{X}}: array<vec4<{{T}}>>;

fn {{X}}_one(p: u32, ok: bool) -> {{C}} {
    if ok { return {{C}}({{X}}[p / 4u][p % 4u]); }
    return {{C}}(0);
}

// Four neighbours p..p+3 (p a multiple of 4) at positions i..i+3 of a dim of length lim.
fn {{X}}_vec(p: u32, i: u32, lim: u32, ok: bool) -> vec4<{{C}}> {
    if ok && i + 3u < lim { return vec4<{{C}}>({{X}}[p / 4u]); }
    return vec4<{{C}}>({{X}}_one(p, ok && i < lim), {{X}}_one(p + 1u, ok && i + 1u < lim),
        {{X}}_one(p + 2u, ok && i + 2u < lim), {{X}}_one(p + 3u, ok && i + 3u < lim));
}

// The quad x..x+3 along m (a) or n (b) at one k, when that dim has stride 1.
fn {{X}}_quad_x(p: u32, x: u32, ok: bool) -> vec4<{{C}}> {
    return {{X}}_vec(p, x, {{LIMIT}}, ok);
}

// k..k+3 of one row (a) or column (b), when k has stride 1; zeros when !ok (past the edge).
fn {{X}}_quad_k(p: u32, k: u32, ok: bool) -> vec4<{{C}}> {
    return {{X}}_vec(p, k, info[2], ok);
}
