// The causal depthwise convolution of a Gated DeltaNet layer. x `[batch * seq, channels]` are the
// qkv projections, w `[channels, kernel]` the taps, state `[batch, kernel - 1, channels]` the
// previous kernel - 1 inputs of each sequence (oldest first).
// Mode 0, one thread per output value: y = silu(sum_j w[c, j] x[t + j - (kernel - 1)]), inputs
// before the run taken from the state. Mode 1, one thread per (sequence, channel), after mode 0:
// the state becomes the last kernel - 1 inputs, written oldest first in place (each read is of a
// later slot than the write, or of x).

struct Params {
    batch: u32,
    seq: u32,
    channels: u32,
    kernel: u32,
    mode: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// The input at position p of sequence b (p < 0: from the state).
fn input(b: u32, p: i32, ch: u32) -> f32 {
    let c = params.channels;
    let past = i32(params.kernel) - 1;
    if (p >= 0) {
        return x[(b * params.seq + u32(p)) * c + ch];
    }
    return state[(b * u32(past) + u32(past + p)) * c + ch];
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    let c = params.channels;
    let past = i32(params.kernel) - 1;
    if (params.mode == 0u) {
        if (i >= params.batch * params.seq * c) {
            return;
        }
        let ch = i % c;
        let row = i / c;
        let b = row / params.seq;
        let t = i32(row % params.seq);
        var acc = 0.0;
        for (var j = 0u; j < params.kernel; j++) {
            acc += w[ch * params.kernel + j] * input(b, t + i32(j) - past, ch);
        }
        y[i] = acc / (1.0 + exp(-acc));
        return;
    }
    if (i >= params.batch * c) {
        return;
    }
    let ch = i % c;
    let b = i / c;
    for (var j = 0; j < past; j++) {
        let v = input(b, i32(params.seq) - past + j, ch);
        state[(b * u32(past) + u32(j)) * c + ch] = v;
    }
}
