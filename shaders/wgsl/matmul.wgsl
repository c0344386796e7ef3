// y[t][o] = sum_i x[t][i] * W[o][i] + bias[o]  (+ y[t][o] when accumulate = 1, for residual adds).
// W may be one row chunk of a larger matrix: its rows are outputs o_offset .. o_offset + out_rows.
// W is decoded from its stored format inside the loop (quant.wgsl); activations stay f32.
// A workgroup computes 64 outputs for 16 tokens, walking the input in chunks of 32 staged in
// shared memory; each thread decodes its row's 32 weights of a chunk at once (`decode32`: a
// block's scales once per chunk), so each weight is decoded once per 16 tokens.

struct Params {
    rows: u32,
    in_dim: u32,
    out_stride: u32,
    out_rows: u32,
    o_offset: u32,
    fmt: u32,
    has_bias: u32,
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const TILE_T: u32 = 16u;
const CHUNK: u32 = 32u;
var<workgroup> xs: array<f32, 512>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let local_o = wid.x * 64u + lid.x;
    let o = params.o_offset + local_o;
    let t0 = wid.y * TILE_T;
    var acc: array<f32, 16>;
    for (var tt = 0u; tt < TILE_T; tt++) {
        acc[tt] = 0.0;
    }
    let n_chunks = (params.in_dim + CHUNK - 1u) / CHUNK;
    for (var c = 0u; c < n_chunks; c++) {
        for (var j = 0u; j < TILE_T / 2u; j++) {
            let idx = lid.x * (TILE_T / 2u) + j;
            let t = t0 + idx / CHUNK;
            let i = c * CHUNK + idx % CHUNK;
            var v = 0.0;
            if (t < params.rows && i < params.in_dim) {
                v = x[t * params.in_dim + i];
            }
            xs[idx] = v;
        }
        workgroupBarrier();
        if (local_o < params.out_rows) {
            let e0 = local_o * params.in_dim + c * CHUNK;
            let width = min(CHUNK, params.in_dim - c * CHUNK);
            if (params.fmt >= 3u) {
                // Block formats: rows are whole blocks, so a chunk is 32 weights of one block.
                decode32(params.fmt, e0);
            } else {
                for (var k = 0u; k < width; k++) {
                    wv[k] = weight_at(params.fmt, e0 + k);
                }
            }
            for (var k = 0u; k < width; k++) {
                let w = wv[k];
                for (var tt = 0u; tt < TILE_T; tt++) {
                    acc[tt] += w * xs[tt * CHUNK + k];
                }
            }
        }
        workgroupBarrier();
    }
    if (local_o >= params.out_rows) {
        return;
    }
    var b = 0.0;
    if (params.has_bias == 1u) {
        b = bias[o];
    }
    for (var tt = 0u; tt < TILE_T; tt++) {
        let t = t0 + tt;
        if (t < params.rows) {
            let idx = t * params.out_stride + o;
            var v = acc[tt] + b;
            if (params.accumulate == 1u) {
                v += y[idx];
            }
            y[idx] = v;
        }
    }
}
