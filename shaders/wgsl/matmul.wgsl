// The matmul for prefill-shaped work (more than 8 tokens); the formula is in linear.wgsl.
// A workgroup of 256 threads computes a 64-output x 64-token tile, walking the input in steps of
// 32 staged in shared memory: each step the 256 threads decode the tile's 64 x 32 weights once
// (8 consecutive weights each, one block's scales per run, quant.wgsl) and load the 64 x 32 inputs,
// then each thread accumulates a 4 x 4 register tile from vec4 reads of both. Weights are staged
// as `Staged`: f32 on the exact path, f16 on the fast one (accumulation stays f32).

const BK: u32 = 32u;
// [k][output / 4] and [k][token / 4], as vec4s.
var<workgroup> ws: array<vec4<Staged>, 512>;
var<workgroup> xs: array<vec4<f32>, 512>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let tx = li % 16u;
    let ty = li / 16u;
    let o0 = wid.x * 64u;
    let t0 = wid.y * 64u;
    // The staging role of this thread: row (or token) li / 4, inputs (li % 4) * 8 .. + 8.
    let sr = li / 4u;
    let sq = li % 4u;

    // Norm prologue: the statistics of each of the 64 tokens, 4 threads per token (LayerNorm:
    // the mean, then the centred squares); each thread keeps those of the token it stages.
    var st = vec2<f32>(0.0, 1.0);
    if (params.norm != 0u) {
        let t = t0 + sr;
        if (params.norm == 2u) {
            xs[sr][sq] = partial_stat(t, sq, 4u, 0u, 0.0);
            workgroupBarrier();
            let p = xs[sr];
            st.x = (p.x + p.y + p.z + p.w) / f32(params.in_dim);
            workgroupBarrier();
        }
        xs[sr][sq] = partial_stat(t, sq, 4u, 1u, st.x);
        workgroupBarrier();
        let p = xs[sr];
        st.y = rstd_of(p.x + p.y + p.z + p.w);
        workgroupBarrier();
    }

    var acc: array<vec4<f32>, 4>;
    for (var j = 0u; j < 4u; j++) {
        acc[j] = vec4<f32>(0.0);
    }
    let steps = (params.in_dim + BK - 1u) / BK;
    for (var c = 0u; c < steps; c++) {
        let k0 = c * BK + sq * 8u;
        // Weights: row o0 + sr, inputs k0 .. k0 + 8, decoded once for all 64 tokens.
        let o = o0 + sr;
        let n = min(8u, params.in_dim - min(k0, params.in_dim));
        if (o < params.out_rows && n > 0u) {
            decode_run(params.fmt, o * params.in_dim + k0, n);
        }
        for (var j = 0u; j < 8u; j++) {
            var w = 0.0;
            if (o < params.out_rows && j < n) {
                w = wv[j];
            }
            ws[(sq * 8u + j) * 16u + sr / 4u][sr % 4u] = Staged(w);
            xs[(sq * 8u + j) * 16u + sr / 4u][sr % 4u] = input_at(t0 + sr, k0 + j, st);
        }
        workgroupBarrier();
        for (var k = 0u; k < BK; k++) {
            let a = vec4<f32>(ws[k * 16u + tx]);
            let b = xs[k * 16u + ty];
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
