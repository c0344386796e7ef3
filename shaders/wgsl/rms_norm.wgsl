// RMSNorm over the last dimension: y = x / sqrt(mean(x^2) + eps) * w.
// One workgroup per row (rows beyond 65535 continue in the y dimension); the sum of squares is
// reduced with reduce.wgsl (or its subgroup form).

struct Params {
    rows: u32,
    width: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.y * 65535u + wid.x;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.width;
    var acc = 0.0;
    for (var i = lid.x; i < params.width; i += WG) {
        let v = x[base + i];
        acc += v * v;
    }
    let scale = 1.0 / sqrt(group_sum(acc, lid.x) / f32(params.width) + params.eps);
    for (var i = lid.x; i < params.width; i += WG) {
        y[base + i] = x[base + i] * scale * w[i];
    }
}
