// topk over the last dim, part 1 of 3: work on tiles of a row held in workgroup memory.
//
// Each row is sorted as (key, index) pairs padded to `padded`, a power of two, by a bitonic
// network (kernels/index.rs drives it; topk_step.wgsl and topk_out.wgsl are the other parts).
// A pair ranks before another when its key is larger, ties to the lower index, so every pair is
// distinct and the result is one deterministic order. Padding is (0, u32 max): it ranks after
// every real entry. "Ascending" below means best first.
//
// The network's direction for a compare at row position i in a merge of size s is ascending
// when (i & s) == 0. A workgroup holds one tile of `tile` pairs (a power of two, at most TILE)
// and runs, for each size s from s_lo to s_hi, the compare distances min(s, tile)/2 down to 1.
// Rows shorter than TILE are one tile each, and TILE / tile of them share a workgroup.
// Its tile comes from, by `mode`:
// - 0: the source values (keys made here), run with s from 2 to tile: sorts each tile, even
//   tiles ascending and odd ones descending;
// - 1: pairs[tile t], run with s_lo = s_hi = s > tile: the in-tile half of merge s, after
//   topk_step.wgsl has done its distances of a tile or more;
// - 2: the better of pairs at tile positions 2t·gap/tile and that + gap/tile, entry by entry
//   (two sorted tiles, one ascending and one descending, so the better halves make a bitonic
//   sequence holding the best `tile` of both), run with s = tile (so even t ascending, odd t
//   descending) and written back at the first of the two. Each such pass halves a row's
//   tiles while keeping its best `tile` entries; the final tile 0 is ascending.
// Work per tile: log2(tile)² / 2 barrier-separated steps, each `tile / 2` compares. Each
// invocation loops a few hundred times at most: llvmpipe (lavapipe) silently ends every loop
// of an invocation once its loops have made 65535 iterations in all.
//
// info: [rows, len, padded, tile, mode, s_lo, s_hi, gap, row0, step, flip, src layout block...]
// rows counts the rows of this dispatch, which start at row0 of the source.
// The generator fills T (storage) and KEY, which maps a value to a u32 whose unsigned order is
// the value order, with NaN above everything and -0 equal to +0. For smallest-first the key is
// complemented (flip), which keeps NaN ranked last there too.

@group(0) @binding(1) var<storage, read> src: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> pairs: array<vec2<u32>>;

const SRC: u32 = 11u;
const THREADS: u32 = 256u;
const TILE: u32 = 1024u;

var<workgroup> keys: array<u32, TILE>;
var<workgroup> ids: array<u32, TILE>;

fn order_key(x: {{T}}) -> u32 {
{{KEY}}
}

fn ranks_before(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x > b.x || (a.x == b.x && a.y < b.y);
}

fn better(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return select(b, a, ranks_before(a, b));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = info[0];
    let len = info[1];
    let padded = info[2];
    let tile = info[3];
    let mode = info[4];
    let gap = info[7];
    // Workgroups per row: tiles (modes 0, 1) or tile pairs (mode 2); or, for rows shorter
    // than TILE (one tile each, mode 0 only), `pack` rows per workgroup.
    let per_row = select(padded / tile, padded / (2u * gap), mode == 2u);
    let pack = TILE / tile;
    let g = linear_group(wid, nwg);
    if g * pack >= rows * per_row { return; }
    let t = g % per_row;
    let count = pack * tile; // TILE
    // Where the tile is written back in its row; t·tile is also its place in the direction rule.
    let home = select(t * tile, t * 2u * gap, mode == 2u);
    for (var e = lid; e < count; e += THREADS) {
        let row = (g * pack + e / tile) / per_row;
        let i = home + e % tile;
        var p = vec2<u32>(0u, 0xffffffffu);
        if mode == 0u {
            if row < rows && i < len {
                p = vec2<u32>(order_key(src[layout_index(SRC, (info[8] + row) * len) + i * info[9]]) ^ info[10], i);
            }
        } else {
            p = pairs[row * padded + i];
            if mode == 2u {
                p = better(p, pairs[row * padded + i + gap]);
            }
        }
        keys[e] = p.x;
        ids[e] = p.y;
    }
    workgroupBarrier();
    for (var s = info[5]; s <= info[6]; s <<= 1u) {
        for (var j = min(s, tile) >> 1u; j > 0u; j >>= 1u) {
            for (var q = lid; q < count / 2u; q += THREADS) {
                // The q-th pair of positions (e, e + j) with bit j of e clear (never across tiles).
                let e = ((q & ~(j - 1u)) << 1u) | (q & (j - 1u));
                let a = vec2<u32>(keys[e], ids[e]);
                let b = vec2<u32>(keys[e + j], ids[e + j]);
                let ascending = ((t * tile + (e & (tile - 1u))) & s) == 0u;
                if ranks_before(b, a) == ascending {
                    keys[e] = b.x;
                    ids[e] = b.y;
                    keys[e + j] = a.x;
                    ids[e + j] = a.y;
                }
            }
            workgroupBarrier();
        }
    }
    for (var e = lid; e < count; e += THREADS) {
        let row = (g * pack + e / tile) / per_row;
        if row < rows {
            pairs[row * padded + home + e % tile] = vec2<u32>(keys[e], ids[e]);
        }
    }
}
