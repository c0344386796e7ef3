// Embedding gather: y[t][j] = W[ids[t]][j], decoding W from its stored format (quant.wgsl).

struct Params {
    rows: u32,
    width: u32,
    fmt: u32,
    nblocks: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let t = gid.y;
    if (j >= params.width || t >= params.rows) {
        return;
    }
    y[t * params.width + j] = weight_at(params.fmt, params.nblocks, ids[t] * params.width + j);
}
