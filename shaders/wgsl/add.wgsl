// Residual-style add in place: y[i] += x[i % x_len]. With x_len = n it is a plain add; with
// x_len = width it broadcasts one row (BERT's token-type embedding). Mode 1 gates instead:
// y[i] *= sigmoid(x[i / x_len]) (x_len 1: gated attention's output gate; x_len = width: one gate
// per row, a shared expert's). Mode 2 multiplies: y[i] *= x[i % x_len] (Gemma 4's per-layer input).

struct Params {
    n: u32,
    x_len: u32,
    mode: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if (i >= params.n) {
        return;
    }
    if (params.mode == 1u) {
        y[i] = y[i] / (1.0 + exp(-x[i / params.x_len]));
    } else if (params.mode == 2u) {
        y[i] *= x[i % params.x_len];
    } else {
        y[i] += x[i % params.x_len];
    }
}
