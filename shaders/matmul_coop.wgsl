// Tensor-core f16 matmul: out[b, m, n] = Σ_k a[b, m, k] · b[b, k, n], f16 operands and output,
// f32 accumulation, through wgpu's experimental cooperative matrices (16×16×16 tiles).
// info: [M, N, K, tiles_m, tiles_n, tiles_total,
//        a_off, a_sb, a_row, b_off, b_sb, b_row,   (offsets and strides in vec4<f16> units)
//        splits, k_chunk]                          (split-k variant only)
// Each operand has one contiguous matrix dim whose extent is a multiple of 4, with 4-aligned
// offsets and other strides; the host routes everything else elsewhere. a_row / b_row is the
// stride of the other matrix dim. Which dim is contiguous is baked into the generated code
// (SETUP, FETCH, MMA): a row-major a ([m, k], k contiguous) is staged one row per m, a
// transposed one (m contiguous, as `g · bᵀ`'s and `aᵀ · g`'s operands are) one row per k and
// its tiles load column-major (`coopLoad`); likewise for b.
//
// A workgroup owns a BM×BN block of one batch entry and is split into SG_M×SG_N subgroups of 32,
// each owning an (FM·16)×(FN·16) sub-block held in FM·FN accumulator tiles. Both operands pass
// through workgroup memory BK deep: every thread fetches a few vec4s per slab into registers
// while the subgroups multiply the previous slab, so global latency hides behind the tensor
// cores. The main loop (MAIN) is single-buffered (store the registers, barrier, fetch the next
// slab, multiply, barrier) or, for blocks named `..db`, double-buffered: two slabs per operand,
// the registers of slab i+1 stored into the other slab while slab i is multiplied, one barrier
// per slab, two slabs per iteration so that slab offsets are constants (a slab past K is zeros). Rows of the staged slabs are padded by 8 halves to spread the tile loads over the
// banks. Edge blocks stage zeros past M, N and K and skip stores past M and N. The f32
// accumulators reach the f16 output through a per-subgroup 16×16 f32 scratch tile, since a
// cooperative matrix cannot change its element type in WGSL.
// Every control-flow decision around cooperative ops and barriers depends on the workgroup
// alone (they need uniform control flow); the subgroup's identity only picks addresses.

@group(0) @binding(1) var<storage, read> a: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f16>>;
@group(0) @binding(3) var<storage, read_write> out: array<{{OUT_T}}>;

const BM: u32 = {{BM}}u;
const BN: u32 = {{BN}}u;
const BK: u32 = {{BK}}u;
// Row pitches of the staged slabs in halves (8 halves of padding each), and in elements of the
// staging type.
const PA_H: u32 = {{PA_H}}u;
const PB_H: u32 = {{PB_H}}u;
const PA: u32 = PA_H / {{W}}u;
const PB: u32 = PB_H / {{W}}u;

var<workgroup> As: array<{{WT}}, {{AS_LEN}}>;
var<workgroup> Bs: array<{{WT}}, {{BS_LEN}}>;
var<workgroup> Cs: array<f32, {{CS_LEN}}>;

@compute @workgroup_size({{WG}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    // A workgroup past the last block (the grid may overshoot, see batch.rs) recomputes the
    // last one and stores nothing: an early return would break the uniform control flow that
    // naga demands around cooperative ops.
    let linear = linear_group(wid, nwg);
    let live = linear < info[5];
    let tile = min(linear, info[5] - 1u);
    let M = info[0];
    let N = info[1];
    let K = info[2];
    let per_batch = info[3] * info[4];
    // With split k (info[12] ranges of info[13] each) `bi` counts (batch entry, range) pairs
    // and the output holds one f32 partial product per pair.
    let bi = tile / per_batch;
    let t = tile % per_batch;
{{K_RANGE}}
    let m0 = (t / info[4]) * BM;
    let n0 = (t % info[4]) * BN;
    let a_base = info[6] + ba * info[7];
    let a_row = info[8];
    let b_base = info[9] + ba * info[10];
    let b_row = info[11];
    // This subgroup's sub-block within the workgroup's block.
    let wm = (sid / {{SG_N}}u) * {{FM}}u * 16u;
    let wn = (sid % {{SG_N}}u) * {{FN}}u * 16u;
{{SETUP}}
{{ACC_DECL}}
{{MAIN}}
    let out_base = bi * M * N;
    let scratch = sid * 256u;
    let pitch = 16u;
{{STORE}}
}
