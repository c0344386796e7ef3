// Attention scores for a block of queries: s[h][qi][k] = scale * dot(q[q0 + qi][h], k[k][h / group]),
// with -inf where the mask forbids it (causal: k > q; sliding window: q - k >= window).

struct Params {
    q_rows: u32,
    q0: u32,
    keys: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    causal: u32,
    window: u32,
    scale: f32,
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
    let query = params.q0 + qi;
    let out = (h * params.q_rows + qi) * params.keys + key;
    let masked = params.causal == 1u && (key > query || query - key >= params.window);
    if (masked) {
        s[out] = bitcast<f32>(0xff800000u);
        return;
    }
    let kvh = h / (params.heads / params.kv_heads);
    let qb = (query * params.heads + h) * params.head_dim;
    let kb = (key * params.kv_heads + kvh) * params.head_dim;
    var acc = 0.0;
    for (var d = 0u; d < params.head_dim; d++) {
        acc += q[qb + d] * k[kb + d];
    }
    s[out] = acc * params.scale;
}
