// Per-row statistics of logits, so the full [tokens][vocab] matrix need not leave the GPU:
// log-sum-exp, entropy (bits), surprisal (bits) and rank of the target token, and the top-k ids
// and probabilities (k passes, each picking the best entry after the previous one in the order
// (logit descending, id ascending)). One workgroup per row; reductions from reduce.wgsl (or its
// subgroup form).

struct Params {
    rows: u32,
    vocab: u32,
    k: u32,
    row0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> top_ids: array<u32>;
@group(0) @binding(5) var<storage, read_write> top_p: array<f32>;

const WG: u32 = 256u;
const NEG_INF: f32 = -3.4028235e38;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.x;
    let base = row * params.vocab;
    let out_row = params.row0 + row;
    // Maximum.
    var m = NEG_INF;
    for (var i = lid.x; i < params.vocab; i += WG) {
        m = max(m, logits[base + i]);
    }
    let row_max = group_max(m, lid.x);
    // Sum of exponentials.
    var s = 0.0;
    for (var i = lid.x; i < params.vocab; i += WG) {
        s += exp(logits[base + i] - row_max);
    }
    let sum = group_sum(s, lid.x);
    let lse = row_max + log(sum);
    // Entropy in nats: -sum p log p with log p = x - lse.
    var ent = 0.0;
    for (var i = lid.x; i < params.vocab; i += WG) {
        let lp = logits[base + i] - lse;
        let p = exp(lp);
        if (p > 0.0) {
            ent -= p * lp;
        }
    }
    let entropy = group_sum(ent, lid.x);
    // Rank of the target: 1 + how many logits are larger.
    let target_id = targets[out_row];
    var target_logit = 0.0;
    if (target_id < params.vocab) {
        target_logit = logits[base + target_id];
    }
    var larger = 0.0;
    for (var i = lid.x; i < params.vocab; i += WG) {
        if (logits[base + i] > target_logit) {
            larger += 1.0;
        }
    }
    let rank = group_sum(larger, lid.x) + 1.0;
    if (lid.x == 0u) {
        let ln2 = 0.6931471805599453;
        stats[out_row * 4u] = lse;
        stats[out_row * 4u + 1u] = entropy / ln2;
        stats[out_row * 4u + 2u] = (lse - target_logit) / ln2;
        stats[out_row * 4u + 3u] = rank;
    }
    // Top-k.
    var prev_v = bitcast<f32>(0x7f800000u);
    var prev_i = 0u;
    for (var j = 0u; j < params.k; j++) {
        var best_v = NEG_INF;
        var best_i = 0xffffffffu;
        for (var i = lid.x; i < params.vocab; i += WG) {
            let v = logits[base + i];
            let after_prev = v < prev_v || (v == prev_v && i > prev_i) || j == 0u;
            if (after_prev && (v > best_v || (v == best_v && i < best_i))) {
                best_v = v;
                best_i = i;
            }
        }
        let best = group_best(best_v, best_i, lid.x);
        prev_v = best.v;
        prev_i = best.i;
        if (lid.x == 0u) {
            top_ids[out_row * params.k + j] = prev_i;
            top_p[out_row * params.k + j] = exp(prev_v - lse);
        }
    }
}
