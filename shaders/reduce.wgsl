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
// this pass writes one partial per (row, chunk) and a second pass (PARTIAL_IN) folds them.
//
// The generator fills BINDINGS (buffers, `load_src`, `row_base`, `element`, `position`,
// `write_out`), CT (compute type), IDENTITY, FOLD and ACCUMULATE.
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

var<workgroup> sh: array<State, 256>;

fn kiln_isnan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn fold(a: State, b: State) -> State {
{{FOLD}}
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

    // One thread per row has nothing to merge, and a barrier-free path is much cheaper where
    // workgroups with barriers are emulated (lavapipe runs each invocation as a coroutine).
    if lanes == 1u {
        if live {
            write_out(g, p, chunks, st);
        }
        return;
    }
}
