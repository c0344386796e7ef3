// Rotary position embedding, in place on x[r][head * head_dim + d], over the first `dims` dims of
// each head (partial RoPE rotates fewer than head_dim).
// pairing 0: HF rotate_half, dims i and i + dims/2 form a pair.
// pairing 1: llama.cpp interleaved, dims 2i and 2i + 1 form a pair (raw GGUF q/k rows).
// cos/sin tables [r][dims / 2] come from the host, computed exactly as the CPU backend does.

struct Params {
    rows: u32,
    heads: u32,
    head_dim: u32,
    pairing: u32,
    dims: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> cos_table: array<f32>;
@group(0) @binding(2) var<storage, read> sin_table: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = params.dims / 2u;
    let i = gid.x;
    let h = gid.y;
    let t = gid.z;
    if (i >= half || h >= params.heads || t >= params.rows) {
        return;
    }
    let base = (t * params.heads + h) * params.head_dim;
    var a = base + i;
    var b = base + i + half;
    if (params.pairing == 1u) {
        a = base + 2u * i;
        b = a + 1u;
    }
    let c = cos_table[t * half + i];
    let s = sin_table[t * half + i];
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x1 * c + x0 * s;
}
