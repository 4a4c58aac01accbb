// Register-tiled batched matmul: out[b, m, n] = Σ_k a[b, m, k] · b[b, k, n], strided operands.
// info: [M, N, K, tiles_m, tiles_n, tiles_total,
//        a_off, a_sb, a_sm, a_sk, b_off, b_sb, b_sk, b_sn(, batch, chunk)]
// The host zeroes the stride of every size-1 dim.
//
// Split k (the last two words): a product with too few output tiles to fill the GPU and a long k
// runs as S independent k ranges of `chunk` (a multiple of TK; the last range may be short or
// empty), folded into the workgroup id after the batch. Each writes its f32 partial tile to
// `out` = part[S, batch, M, N], and matmul_splitk_sum.wgsl adds the S partials. An empty range
// writes zeros.
//
// Grouped tiles (named `..g8`): consecutive workgroups take the tiles of G tile rows column by
// column (the last group may have fewer rows) rather than one tile row after another.
//
// A workgroup owns a TM×TN tile of one batch entry (the batch is folded into the linear
// workgroup id); each thread accumulates RM×RN outputs in registers, as vec4 rows. Both operands
// pass through workgroup memory TK deep along k, k-major, as vec4 quads of 4 neighbouring rows
// (a) or columns (b), so a thread reads its rows and columns with RM/4 + RN/4 loads per k and
// every workgroup store is a whole vec4. How an operand is fetched depends on its layout class
// (the generator's SETUP and STAGE): as one vec4 per quad when its m (n) stride is 1 and the rest
// is 4-aligned (matmul_load_vec4.wgsl), else element by element (matmul_load.wgsl) with
// neighbouring threads on the operand's smaller stride. Either way neighbouring threads read
// neighbouring addresses for row-major and transposed operands alike, and transposed or
// broadcast operands are never copied.
// Edge tiles fetch zeros past M, N and K and skip stores past M and N.
//
// The main loop (MAIN) comes in two forms. Single-buffered: stage a slab, barrier, multiply,
// barrier. (Fetching the next slab into registers during the multiply measured up to 25%
// slower on an H200 in this form: the extra registers cost resident workgroups.)
// Double-buffered (tiles named `..db`): two slabs per operand in workgroup memory; each thread
// fetches its quads of slab i+1 into registers, multiplies slab i, stores the registers into the
// other slab, and one barrier per slab separates the two (a thread past barrier i has finished
// reading slab i-1's buffer, which it now overwrites). The loop runs two slabs per iteration so
// that every workgroup-memory index is a constant offset from the thread's own; a slab past K is
// all zeros. The multiply is unrolled along k. Tiles named `..p` also read the next slab's k = 0
// fragments (a thread's a and b quads) into registers right after the barrier, before the last
// k step's multiply-adds, whose fragments were read before the barrier: that step's arithmetic
// then covers the barrier and the reads' latency.

{{OPERANDS}}
@group(0) @binding(3) var<storage, read_write> out: array<{{OUT_T}}>;

// Row pitches of the workgroup tiles in vec4s: the extra vec4 spreads the stores of k-fast
// fetchers (one column of a tile each) over the memory banks.
const PA: u32 = {{PA}}u;
const PB: u32 = {{PB}}u;
const TK: u32 = {{TK}}u;

var<workgroup> As: array<vec4<{{C}}>, {{AS_LEN}}>;
var<workgroup> Bs: array<vec4<{{C}}>, {{BS_LEN}}>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tile = linear_group(wid, nwg);
    if tile >= info[5] { return; }
    let M = info[0];
    let N = info[1];
    let per_batch = info[3] * info[4];
    // The output matrix this workgroup writes: its batch entry, or split · batch + batch entry.
    let slot = tile / per_batch;
    let t = tile % per_batch;
    // This workgroup's k range is [KB, K).
{{K_RANGE}}
    // The tile's first row and column (TILE_XY): row by row through the grid, or in groups of
    // G tile rows walked column by column, so that workgroups running together share a's rows
    // and b's columns in L2.
{{TILE_XY}}
    let a_sm = info[8];
    let a_sk = info[9];
    let b_sk = info[12];
    let b_sn = info[13];
    // This thread's outputs: row quads ty + i·TY, column quads tx + j·TX of the tile.
{{THREAD_XY}}
{{SETUP}}
{{ACC_DECL}}
{{MAIN}}
    let out_base = slot * M * N;
{{STORE}}
}
