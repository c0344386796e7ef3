// The matmul for decode-shaped work (1 to 8 tokens), bound by reading the weights once; the
// formula is in linear.wgsl. A workgroup of 64 threads computes 8 outputs: 8 threads per output
// row walk its blocks of 32 in turn (consecutive threads, consecutive blocks), decode each block
// once (quant.wgsl) and apply it to every token; the 8 partial sums meet in shared memory.

const TOKENS: u32 = 8u;
var<workgroup> red: array<f32, 512>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = li / 8u;
    let lane = li % 8u;
    let o = (wid.y * nwg.x + wid.x) * 8u + r;
    let rows = min(params.rows, TOKENS);

    // Norm prologue: 8 threads per token (LayerNorm: the mean, then the centred squares).
    var st: array<vec2<f32>, 8>;
    for (var t = 0u; t < TOKENS; t++) {
        st[t] = vec2<f32>(0.0, 1.0);
    }
    if (params.norm != 0u) {
        for (var which = select(1u, 0u, params.norm == 2u); which < 2u; which++) {
            red[li] = partial_stat(r, lane, 8u, which, st[min(r, TOKENS - 1u)].x);
            workgroupBarrier();
            for (var t = 0u; t < rows; t++) {
                var s = 0.0;
                for (var l = 0u; l < 8u; l++) {
                    s += red[t * 8u + l];
                }
                if (which == 0u) {
                    st[t].x = s / f32(params.in_dim);
                } else {
                    st[t].y = rstd_of(s);
                }
            }
            workgroupBarrier();
        }
    }

    var acc: array<f32, 8>;
    for (var t = 0u; t < TOKENS; t++) {
        acc[t] = 0.0;
    }
    if (o < params.out_rows) {
        let blocks = (params.in_dim + 31u) / 32u;
        for (var c = lane; c < blocks; c += 8u) {
            let k0 = c * 32u;
            let n = min(32u, params.in_dim - k0);
            decode_run(params.fmt, o * params.in_dim + k0, n);
            for (var t = 0u; t < rows; t++) {
                var s = 0.0;
                if (params.norm != 0u) {
                    for (var j = 0u; j < n; j++) {
                        s += wv[j] * input_at(t, k0 + j, st[t]);
                    }
                } else {
                    let xb = t * params.in_dim + k0;
                    for (var j = 0u; j < n; j++) {
                        s += wv[j] * x[xb + j];
                    }
                }
                acc[t] += s;
            }
        }
    }
    for (var t = 0u; t < TOKENS; t++) {
        red[li * 8u + t] = acc[t];
    }
    workgroupBarrier();
    if (lane == 0u && o < params.out_rows) {
        for (var t = 0u; t < rows; t++) {
            var s = 0.0;
            for (var l = 0u; l < 8u; l++) {
                s += red[(r * 8u + l) * 8u + t];
            }
            store(t, params.o_offset + o, s);
        }
    }
}
