// Row-wise softmax in place: p = exp(s - max) / sum. Masked entries (-inf) become exactly 0.
// One workgroup per row.

struct Params {
    rows: u32,
    width: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> s: array<f32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = (wid.y * 65535u + wid.x) * params.width;
    if (wid.y * 65535u + wid.x >= params.rows) {
        return;
    }
    var m = bitcast<f32>(0xff800000u);
    for (var i = lid.x; i < params.width; i += WG) {
        m = max(m, s[base + i]);
    }
    partial[lid.x] = m;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid.x < stride) {
            partial[lid.x] = max(partial[lid.x], partial[lid.x + stride]);
        }
        workgroupBarrier();
    }
    let row_max = partial[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var i = lid.x; i < params.width; i += WG) {
        let e = exp(s[base + i] - row_max);
        s[base + i] = e;
        sum += e;
    }
    partial[lid.x] = sum;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid.x < stride) {
            partial[lid.x] += partial[lid.x + stride];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / partial[0];
    for (var i = lid.x; i < params.width; i += WG) {
        s[base + i] = s[base + i] * inv;
    }
}
