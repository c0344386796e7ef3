// Attention scores for a block of queries of one sequence:
//   s[h][qi][key] = cap(scale * dot(q[q_row + q0 + qi][h], k[k_row + key][h / group])),
// then -inf where the mask forbids it (causal: key > position; sliding window: position - key >=
// window), where position = past + q0 + qi. cap(x) = softcap * tanh(x / softcap) when softcap > 0.

struct Params {
    q_rows: u32,
    q0: u32,
    past: u32,
    keys: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    causal: u32,
    window: u32,
    q_row: u32,
    k_row: u32,
    scale: f32,
    softcap: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read_write> s: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let key = gid.x;
    let qi = gid.y;
    let h = gid.z;
    if (key >= params.keys || qi >= params.q_rows || h >= params.heads) {
        return;
    }
    let position = params.past + params.q0 + qi;
    let out = (h * params.q_rows + qi) * params.keys + key;
    let masked = params.causal == 1u && (key > position || position - key >= params.window);
    if (masked) {
        s[out] = bitcast<f32>(0xff800000u);
        return;
    }
    let kvh = h / (params.heads / params.kv_heads);
    let qb = ((params.q_row + params.q0 + qi) * params.heads + h) * params.head_dim;
    let kb = ((params.k_row + key) * params.kv_heads + kvh) * params.head_dim;
    var acc = 0.0;
    for (var d = 0u; d < params.head_dim; d++) {
        acc += q[qb + d] * k[kb + d];
    }
    var score = acc * params.scale;
    if (params.softcap > 0.0) {
        score = tanh(score / params.softcap) * params.softcap;
    }
    s[out] = score;
}
