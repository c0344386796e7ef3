// What the attention kernels share (prepended to attention.wgsl, attention_tiled.wgsl and
// attention_merge.wgsl): the parameters, the bindings, and which keys a query may see.
// Allowed keys of query qi: all, or with causal = 1 those with key <= position and
// position - key < window, where position = past + qi: one range key_lo(qi)..=key_hi(qi).

struct Params {
    seq: u32,
    past: u32,
    keys: u32,
    key_stride: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    causal: u32,
    window: u32,
    scale: f32,
    softcap: f32,
    write_probs: u32,
    q0: u32,
    q_rows: u32,
    b0: u32,
    splits: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> probs: array<f32>;

fn neg_inf() -> f32 {
    return bitcast<f32>(0xff800000u);
}

fn key_lo(qi: u32) -> u32 {
    let position = params.past + qi;
    if (params.causal == 1u && position >= params.window) {
        return position + 1u - params.window;
    }
    return 0u;
}

fn key_hi(qi: u32) -> u32 {
    if (params.causal == 1u) {
        return min(params.past + qi, params.keys - 1u);
    }
    return params.keys - 1u;
}
