// Reductions over the trailing dims: Sum, Prod, Max, Min, ArgMax, ArgMin.
//
// info: [rows, len, R, lane_major, P, C, s, outer_base, inner_base, ...layout blocks]
//
// A workgroup of 256 threads owns R rows (R a power of two) with L = 256 / R lanes per row.
// R = 1 is the classic one-workgroup-per-row tree reduction; R = 256 is one thread per row
// (short rows); in between serves rows of a few dozen elements without idling most lanes.
// Lanes are numbered inside the workgroup either row-major (a row's lanes are neighbours:
// coalesced when the row is contiguous) or lane-major (neighbouring threads hold neighbouring
// rows: coalesced for column reductions, where rows sit next to each other in memory).
//
// When there are too few rows to fill the GPU, each row is split into P chunks of C elements:
// this pass writes one partial per (row, chunk) and a second pass (stage PartialIn, reading
// the partials as contiguous rows of P) folds them.
//
// The generator fills BINDINGS (buffers, `load_src`, `row_base`, `element`, `position`,
// `write_out`), CT (compute type) and IDENTITY, and the other slots from the `// @@` sections
// at the end of this file: FOLD, ACCUMULATE, SHARED and MERGE.
// - ACCUMULATE keeps several loads in flight per lane and step (four scalars, or two vec4s).
//   Its vec4 forms serve rows that are contiguous and 4-aligned: there `len`, `chunk`, `base`
//   and `j` count vec4s and the element positions are 4j + c.
// - With one lane per row there is nothing to merge, and that specialisation declares no
//   shared memory and no barrier (lavapipe runs any shader holding a barrier as one coroutine
//   per invocation, several times slower even where the barrier is never reached).
//
// A state with i == EMPTY holds no element yet (threads past the row's end, rows past the
// last): the extreme ops skip it, so they need no ±inf or INT_MIN sentinel, and a real -inf
// or INT_MIN still wins its ties by position.

{{BINDINGS}}

// `i` is the element's position in the flattened reduced dims: the Arg ops return it, and the
// extreme ops use it to keep the first of ties when the tree folds out of order.
struct State {
    v: {{CT}},
    i: u32,
}

const EMPTY: u32 = 0xffffffffu;

{{SHARED}}

fn kiln_isnan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn fold(a: State, b: State) -> State {
{{FOLD}}
}

fn fold4(a: State, v: vec4<{{CT}}>, p: u32) -> State {
    return fold(fold(fold(fold(a, State(v.x, p)), State(v.y, p + 1u)), State(v.z, p + 2u)), State(v.w, p + 3u));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = info[0];
    let len = info[1];
    let r = info[2];
    let lanes = 256u / r;
    let lane_major = info[3] != 0u;
    let chunks = info[4];
    let chunk = info[5];
    let w = linear_group(wid, nwg);
    let tile = w / chunks;
    let p = w % chunks;
    var row_local = lid / lanes;
    var lane = lid % lanes;
    var lane_stride = 1u;
    if lane_major {
        row_local = lid % r;
        lane = lid / r;
        lane_stride = r;
    }
    let g = tile * r + row_local;
    let live = g < rows;

    var st = State({{IDENTITY}}, EMPTY);
    if live {
        let base = row_base(g);
        let lo = p * chunk;
        let hi = min(lo + chunk, len);
{{ACCUMULATE}}
    }

{{MERGE}}
}

// @@ fold-sum
    return State(a.v + b.v, 0u);
// @@ fold-prod
    return State(a.v * b.v, 0u);
// @@ fold-extreme
    // `b` replaces `a` when more extreme ({{CMP}}), or equal and earlier.
    if a.i == EMPTY { return b; }
    if b.i == EMPTY { return a; }
{{NAN}}
    if b.v {{CMP}} a.v || (b.v == a.v && b.i < a.i) { return b; }
    return a;
// @@ fold-nan
    // NaN is more extreme than any number and the first NaN wins, as in torch.max/argmax.
    let an = kiln_isnan(a.v);
    let bn = kiln_isnan(b.v);
    if an || bn {
        if bn && (!an || b.i < a.i) { return b; }
        return a;
    }
// @@ accumulate-fold
        // Four loads in flight per step: a lane that waits on one load at a time leaves most of
        // the memory bandwidth idle. Folding them in order keeps ties with the earlier position.
        var j = lo + lane;
        for (; j < hi && hi - j > 3u * lanes; j += 4u * lanes) {
            let e0 = State(load_src(element(base, j)), position(base, j));
            let e1 = State(load_src(element(base, j + lanes)), position(base, j + lanes));
            let e2 = State(load_src(element(base, j + 2u * lanes)), position(base, j + 2u * lanes));
            let e3 = State(load_src(element(base, j + 3u * lanes)), position(base, j + 3u * lanes));
            st = fold(fold(fold(fold(st, e0), e1), e2), e3);
        }
        for (; j < hi; j += lanes) {
            st = fold(st, State(load_src(element(base, j)), position(base, j)));
        }
// @@ accumulate-float-sum
        // Four loads in flight per step (see accumulate-fold). Blocks of 32 elements are summed
        // apart, then added to the lane's total: a lane folding thousands of elements stays near
        // pairwise accuracy; the tree across lanes is pairwise already.
        var part = 0.0;
        var count = 0u;
        var j = lo + lane;
        for (; j < hi && hi - j > 3u * lanes; j += 4u * lanes) {
            let x0 = load_src(element(base, j));
            let x1 = load_src(element(base, j + lanes));
            let x2 = load_src(element(base, j + 2u * lanes));
            let x3 = load_src(element(base, j + 3u * lanes));
            part += (x0 + x1) + (x2 + x3);
            count += 1u;
            if count == 8u {
                st.v += part;
                part = 0.0;
                count = 0u;
            }
        }
        for (; j < hi; j += lanes) {
            part += load_src(element(base, j));
        }
        st.v += part;
// @@ accumulate-vec-fold
        var j = lo + lane;
        for (; j < hi && hi - j > lanes; j += 2u * lanes) {
            let v0 = load_src4(element(base, j));
            let v1 = load_src4(element(base, j + lanes));
            st = fold4(fold4(st, v0, 4u * j), v1, 4u * (j + lanes));
        }
        for (; j < hi; j += lanes) {
            st = fold4(st, load_src4(element(base, j)), 4u * j);
        }
// @@ accumulate-vec-float-sum
        // Four vec4 loads in flight per step: two left the H200's memory system half idle
        // (row sums of [4096, 4096]: 28.7 µs with two, 25.4 µs with four and longer lanes).
        var part = 0.0;
        var count = 0u;
        var j = lo + lane;
        for (; j < hi && hi - j > 3u * lanes; j += 4u * lanes) {
            let v0 = load_src4(element(base, j));
            let v1 = load_src4(element(base, j + lanes));
            let v2 = load_src4(element(base, j + 2u * lanes));
            let v3 = load_src4(element(base, j + 3u * lanes));
            let s4 = (v0 + v1) + (v2 + v3);
            part += (s4.x + s4.y) + (s4.z + s4.w);
            count += 1u;
            if count == 2u {
                st.v += part;
                part = 0.0;
                count = 0u;
            }
        }
        for (; j < hi; j += lanes) {
            let v = load_src4(element(base, j));
            part += (v.x + v.y) + (v.z + v.w);
        }
        st.v += part;
// @@ shared-tree
var<workgroup> sh: array<State, 256>;
// @@ merge-tree
    sh[lid] = st;
    workgroupBarrier();
    for (var s = lanes / 2u; s > 0u; s >>= 1u) {
        if lane < s {
            sh[lid] = fold(sh[lid], sh[lid + s * lane_stride]);
        }
        workgroupBarrier();
    }
    if live && lane == 0u {
        write_out(g, p, chunks, sh[lid]);
    }
// @@ merge-single
    if live {
        write_out(g, p, chunks, st);
    }
