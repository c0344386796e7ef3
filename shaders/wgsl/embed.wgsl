// Embedding gather: y[t][j] (+)= W[ids[t]][j], decoding W from its stored format (quant.wgsl).
// W may be one row chunk (rows row0 .. row0 + nrows) of a larger table; other rows are left alone.
// With accumulate = 1 the rows are added (learned positions, BERT's token types). Columns
// col0 .. col0 + width of rows `stride` wide are read (a layer's share of Gemma 4's per-layer table).

struct Params {
    rows: u32,
    width: u32,
    fmt: u32,
    row0: u32,
    nrows: u32,
    accumulate: u32,
    col0: u32,
    stride: u32,
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
    let id = ids[t];
    if (id < params.row0 || id >= params.row0 + params.nrows) {
        return;
    }
    let w = weight_at(params.fmt, (id - params.row0) * params.stride + params.col0 + j);
    let at = t * params.width + j;
    if (params.accumulate == 1u) {
        y[at] += w;
    } else {
        y[at] = w;
    }
}
