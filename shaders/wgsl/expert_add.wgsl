// One expert's share of a mixture-of-experts output: y[r, c] (+)= weights[r, expert] * x[r, c]
// over rows x width values (mode 0 stores, mode 1 adds). An unchosen expert has weight zero.

struct Params {
    rows: u32,
    width: u32,
    experts: u32,
    expert: u32,
    mode: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if (i >= params.rows * params.width) {
        return;
    }
    let r = i / params.width;
    let v = weights[r * params.experts + params.expert] * x[i];
    if (params.mode == 1u) {
        y[i] += v;
    } else {
        y[i] = v;
    }
}
