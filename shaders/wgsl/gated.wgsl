// The gated MLP's elementwise part, in place on the gate: gate = act(gate) * up, with
// act = silu (mode 0, x / (1 + exp(-x))) or the tanh GELU (mode 1, Gemma's GeGLU).

struct Params {
    n: u32,
    mode: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if (i >= params.n) {
        return;
    }
    let g = gate[i];
    var a: f32;
    if (params.mode == 1u) {
        let c = 0.7978845608028654;
        a = 0.5 * g * (1.0 + tanh(c * (g + 0.044715 * g * g * g)));
    } else {
        a = g / (1.0 + exp(-g));
    }
    gate[i] = a * up[i];
}
