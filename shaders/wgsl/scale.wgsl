// In place: x = x * s (mode 0, Gemma's embedding scale), or x = s * tanh(x / s) (mode 1,
// logit soft-capping).

struct Params {
    n: u32,
    mode: u32,
    s: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if (i >= params.n) {
        return;
    }
    if (params.mode == 1u) {
        x[i] = tanh(x[i] / params.s) * params.s;
    } else {
        x[i] = x[i] * params.s;
    }
}
