// Attention-weighted sum for a block of queries of one sequence:
//   ctx[q_row + q0 + qi][h][d] = sum_key p[h][qi][key] * v[k_row + key][h / group][d].

struct Params {
    q_rows: u32,
    q0: u32,
    keys: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    q_row: u32,
    k_row: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> p: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> ctx: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let d = gid.x;
    let qi = gid.y;
    let h = gid.z;
    if (d >= params.head_dim || qi >= params.q_rows || h >= params.heads) {
        return;
    }
    let kvh = h / (params.heads / params.kv_heads);
    let pb = (h * params.q_rows + qi) * params.keys;
    var acc = 0.0;
    for (var key = 0u; key < params.keys; key++) {
        let w = p[pb + key];
        if (w != 0.0) {
            acc += w * v[((params.k_row + key) * params.kv_heads + kvh) * params.head_dim + d];
        }
    }
    ctx[((params.q_row + params.q0 + qi) * params.heads + h) * params.head_dim + d] = acc;
}
