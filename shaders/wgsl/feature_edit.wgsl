// An SAE feature clamped on rows of x `[rows, width]`, the SAE's error term kept: per listed row,
// f = the feature's activation on the same row of src `[rows, src_width]` (x's own values for an
// SAE, a transcoder's input for a transcoder), then x += (goal - f) * direction. One workgroup per
// row.
//   rule 0 ReLU:     f = max(pre, 0), pre = b_enc[0] + (x - b_dec) . w_enc (w_enc the column)
//   rule 1 JumpReLU: f = pre if pre > threshold, else 0
//   rule 2 TopK:     w_enc `[d_in, d_sae]` whole, b_enc whole; f = max(pre_j, 0) if fewer than k
//                    features have a larger pre-activation (ties: the lower index first), else 0.
// b_dec is subtracted from the input when has_bdec is 1.

const WG: u32 = 256u;

struct Params {
    n_rows: u32,
    width: u32,
    d_in: u32,
    d_sae: u32,
    feature: u32,
    rule: u32,
    k: u32,
    has_bdec: u32,
    threshold: f32,
    goal: f32,
    src_width: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> rows: array<u32>;
@group(0) @binding(2) var<storage, read> w_enc: array<f32>;
@group(0) @binding(3) var<storage, read> b_enc: array<f32>;
@group(0) @binding(4) var<storage, read> b_dec: array<f32>;
@group(0) @binding(5) var<storage, read> direction: array<f32>;
@group(0) @binding(6) var<storage, read> src: array<f32>;
@group(0) @binding(7) var<storage, read_write> x: array<f32>;

var<workgroup> pre_j: f32;

fn input(base: u32, i: u32) -> f32 {
    var v = src[base + i];
    if (params.has_bdec == 1u) {
        v -= b_dec[i];
    }
    return v;
}

// The pre-activation of feature f of the whole encoder, summed in input order.
fn pre_of(base: u32, f: u32) -> f32 {
    let m = params.d_sae;
    var acc = 0.0;
    for (var i = 0u; i < params.d_in; i++) {
        acc += input(base, i) * w_enc[i * m + f];
    }
    return b_enc[f] + acc;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let li = lid.x;
    let r = wid.y * 65535u + wid.x;
    // Uniform across the workgroup: a whole workgroup returns or none does.
    if (r >= params.n_rows) {
        return;
    }
    let base = rows[r] * params.src_width;
    let n = params.d_in;
    var f = 0.0;
    if (params.rule == 2u) {
        let j = params.feature;
        if (li == j % WG) {
            pre_j = pre_of(base, j);
        }
        workgroupBarrier();
        let pj = pre_j;
        var above = 0.0;
        for (var g = li; g < params.d_sae; g += WG) {
            if (g != j) {
                let p = pre_of(base, g);
                if (p > pj || (p == pj && g < j)) {
                    above += 1.0;
                }
            }
        }
        let count = group_sum(above, li);
        if (count < f32(params.k)) {
            f = max(pj, 0.0);
        }
    } else {
        var part = 0.0;
        for (var i = li; i < n; i += WG) {
            part += input(base, i) * w_enc[i];
        }
        let pre = b_enc[0] + group_sum(part, li);
        if (params.rule == 1u) {
            if (pre > params.threshold) {
                f = pre;
            }
        } else {
            f = max(pre, 0.0);
        }
    }
    // group_sum ends on a barrier: every thread has read its inputs.
    let d = params.goal - f;
    let out = rows[r] * params.width;
    for (var i = li; i < params.width; i += WG) {
        x[out + i] += d * direction[i];
    }
}
