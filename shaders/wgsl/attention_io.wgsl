// What the attention kernels share (prepended to attention.wgsl, attention_tiled.wgsl and
// attention_merge.wgsl): the parameters, the bindings, and which keys a query may see.
// Allowed keys of query qi: all, or with causal = 1 those with key <= position and
// position - key < window, where position = past + qi: one range key_lo(qi)..=key_hi(qi).
// With has_sinks = 1 each head's softmax also counts a sink: a key of score sinks[h] and no value
// (gpt-oss), so a row's probabilities sum to less than one. A kernel starts its running max and
// sum at (sinks[h], 1) instead of (-inf, 0); of a split query, only part 0 does.

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
    has_sinks: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> probs: array<f32>;
@group(0) @binding(6) var<storage, read> sinks: array<f32>;

// The running (max, sum) a row starts from: the sink's, or nothing.
fn start_m(h: u32, with_sink: bool) -> f32 {
    if (params.has_sinks == 1u && with_sink) {
        return sinks[h];
    }
    return neg_inf();
}

fn start_l(with_sink: bool) -> f32 {
    return select(0.0, 1.0, params.has_sinks == 1u && with_sink);
}

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
