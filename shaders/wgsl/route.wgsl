// Mixture-of-experts routing, one thread per token row. On entry probs[r, :] holds the router's
// logits; on exit their softmax (max subtracted, in f32). weights[r, :] gets the top_k largest
// probabilities (ties to the lower expert index), divided by their sum when renormalize is 1,
// and zero for every other expert: the rule of `ExpertSpec::route` on the CPU. The j-th choice is
// the largest (p, -index) strictly below the (j-1)-th in that order, so no marks are needed.

struct Params {
    rows: u32,
    experts: u32,
    top_k: u32,
    renormalize: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> probs: array<f32>;
@group(0) @binding(2) var<storage, read_write> weights: array<f32>;

// (p, e) comes before (q, f) in the order of choice.
fn before(p: f32, e: u32, q: f32, f: u32) -> bool {
    return p > q || (p == q && e < f);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.y * nwg.x * 64u + gid.x;
    if (r >= params.rows) {
        return;
    }
    let n = params.experts;
    let base = r * n;
    var m = probs[base];
    for (var e = 1u; e < n; e++) {
        m = max(m, probs[base + e]);
    }
    var sum = 0.0;
    for (var e = 0u; e < n; e++) {
        let v = exp(probs[base + e] - m);
        probs[base + e] = v;
        sum += v;
    }
    for (var e = 0u; e < n; e++) {
        probs[base + e] = probs[base + e] / sum;
        weights[base + e] = 0.0;
    }
    // The chosen probabilities sum in the order chosen, as on the CPU.
    var total = 0.0;
    var last_p = 0.0;
    var last_e = 0xffffffffu;
    for (var j = 0u; j < params.top_k; j++) {
        var best_p = -1.0;
        var best_e = 0xffffffffu;
        for (var e = 0u; e < n; e++) {
            let p = probs[base + e];
            let below = j == 0u || before(last_p, last_e, p, e);
            if (below && (best_e == 0xffffffffu || before(p, e, best_p, best_e))) {
                best_p = p;
                best_e = e;
            }
        }
        if (best_e == 0xffffffffu) {
            break;
        }
        weights[base + best_e] = best_p;
        total += best_p;
        last_p = best_p;
        last_e = best_e;
    }
    if (params.renormalize == 1u) {
        for (var e = 0u; e < n; e++) {
            weights[base + e] = weights[base + e] / total;
        }
    }
}
