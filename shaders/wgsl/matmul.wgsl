// The matmul for prefill-shaped work (more than 8 tokens); the formula is in linear.wgsl.
// A workgroup computes a T-output x T-token tile (T from the prelude: 64 with 256 threads, or 32
// with 64 threads for small problems, so that they still fill a GPU), walking the input in steps of
// 32 staged in shared memory: each step the threads decode the tile's T x 32 weights once (RUN
// consecutive weights each, one block's scales per run, quant.wgsl) and load the T x 32 inputs,
// then each thread accumulates a 4 x 4 register tile from vec4 reads of both. Weights are staged
// as `Staged`: f32 on the exact path, f16 on the fast one (accumulation stays f32).

const BK: u32 = 32u;
// Vec4 groups per tile side, threads, threads per staged row, and the run each one stages.
const G: u32 = T / 4u;
const WG: u32 = G * G;
const LANES: u32 = WG / T;
const RUN: u32 = BK / LANES;
// [k][output / 4] and [k][token / 4], as vec4s.
var<workgroup> ws: array<vec4<Staged>, BK * G>;
var<workgroup> xs: array<vec4<f32>, BK * G>;

// The LANES partial sums of staged row `r`, left in xs[r] by the norm prologue.
fn lane_sum(r: u32) -> f32 {
    let p = xs[r];
    var s = 0.0;
    for (var c = 0u; c < LANES; c++) {
        s += p[c];
    }
    return s;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let tx = li % G;
    let ty = li / G;
    let o0 = wid.x * T;
    let t0 = wid.y * T;
    // The staging role of this thread: row (or token) li / LANES, inputs (li % LANES) * RUN + RUN.
    let sr = li / LANES;
    let sq = li % LANES;

    // Norm prologue: the statistics of each of the T tokens, LANES threads per token (LayerNorm:
    // the mean, then the centred squares); each thread keeps those of the token it stages.
    var st = vec2<f32>(0.0, 1.0);
    if (params.norm != 0u) {
        let t = t0 + sr;
        if (params.norm == 2u) {
            xs[sr][sq] = partial_stat(t, sq, LANES, 0u, 0.0);
            workgroupBarrier();
            st.x = lane_sum(sr) / f32(params.in_dim);
            workgroupBarrier();
        }
        xs[sr][sq] = partial_stat(t, sq, LANES, 1u, st.x);
        workgroupBarrier();
        st.y = rstd_of(lane_sum(sr));
        workgroupBarrier();
    }

    var acc: array<vec4<f32>, 4>;
    for (var j = 0u; j < 4u; j++) {
        acc[j] = vec4<f32>(0.0);
    }
    let steps = (params.in_dim + BK - 1u) / BK;
    for (var c = 0u; c < steps; c++) {
        let k0 = c * BK + sq * RUN;
        // Weights: row o0 + sr, inputs k0 .. k0 + RUN, decoded once for all T tokens.
        let o = o0 + sr;
        let n = min(RUN, params.in_dim - min(k0, params.in_dim));
        if (o < params.out_rows && n > 0u) {
            decode_run(params.fmt, o * params.in_dim + k0, n);
        }
        for (var j = 0u; j < RUN; j++) {
            var w = 0.0;
            if (o < params.out_rows && j < n) {
                w = wv[j];
            }
            ws[(sq * RUN + j) * G + sr / 4u][sr % 4u] = Staged(w);
            xs[(sq * RUN + j) * G + sr / 4u][sr % 4u] = input_at(t0 + sr, k0 + j, st);
        }
        workgroupBarrier();
        for (var k = 0u; k < BK; k++) {
            let a = vec4<f32>(ws[k * G + tx]);
            let b = xs[k * G + ty];
            acc[0] += a * b.x;
            acc[1] += a * b.y;
            acc[2] += a * b.z;
            acc[3] += a * b.w;
        }
        workgroupBarrier();
    }
    for (var j = 0u; j < 4u; j++) {
        let t = t0 + ty * 4u + j;
        if (t >= params.rows) {
            continue;
        }
        for (var i = 0u; i < 4u; i++) {
            let o = o0 + tx * 4u + i;
            if (o < params.out_rows) {
                store(t, params.o_offset + o, acc[j][i]);
            }
        }
    }
}
