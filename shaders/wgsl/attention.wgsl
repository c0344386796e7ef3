// Attention in one kernel: scores, mask, softmax and the weighted sum of values, for one query of
// one head of one sequence per workgroup (x: query q0 + x, y: head, z: sequence b0 + z):
//   s[key] = cap(scale * dot(q[q_row + qi][h], k[k_row + key][h / group]))   for allowed keys
//   out[q_row + qi][h] = sum_key softmax(s)[key] * v[k_row + key][h / group]
// Allowed keys: key_lo(qi)..=key_hi(qi) (attention_io.wgsl). cap(x) = softcap * tanh(x / softcap)
// when softcap > 0. Keys go by in tiles of 64, one score per thread; the values' rows are read
// by consecutive threads (one dimension each).
// Without probabilities (write_probs = 0) one pass keeps a running max and sum (online softmax).
// With them, a first pass finds the max and the sum, and a second writes every probability of the
// row to probs[z][h][x][key] (exactly 0 where masked) and sums the values with them; a dispatch
// covers queries q0 .. q0 + q_rows, so that the probabilities of a long text can come in blocks.
// With splits > 1 (decoding over many keys, no probabilities), x = query * splits + part, and each
// workgroup takes one part of the query's keys and leaves its running max, sum and unnormalized
// values in `probs` as [query][head][part][m, l, values...] for attention_merge.wgsl.

const WG: u32 = 64u;
// Head dimensions up to 8 * 64 (Gemma 4's global layers have 512).
const SLOTS: u32 = 8u;
var<workgroup> qs: array<f32, 512>;
var<workgroup> ps: array<f32, 64>;

// The score of `key` (allowed) for the query row staged in `qs`.
fn score(kb: u32) -> f32 {
    var acc = 0.0;
    for (var d = 0u; d < params.head_dim; d++) {
        acc += qs[d] * k[kb + d];
    }
    var s = acc * params.scale;
    if (params.softcap > 0.0) {
        s = tanh(s / params.softcap) * params.softcap;
    }
    return s;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let splits = max(params.splits, 1u);
    let qi = params.q0 + wid.x / splits;
    let part = wid.x % splits;
    let h = wid.y;
    let b = params.b0 + wid.z;
    let kvh = h / (params.heads / params.kv_heads);
    let q_base = ((b * params.seq + qi) * params.heads + h) * params.head_dim;
    let k_row = b * params.key_stride;
    let kv_step = params.kv_heads * params.head_dim;
    let kv_base = k_row * kv_step + kvh * params.head_dim;
    var lo = key_lo(qi);
    var hi = key_hi(qi);
    if (splits > 1u) {
        // Parts of whole key tiles; the last ones may be short or empty (lo > hi).
        let chunk = ((hi - lo + splits) / splits + WG - 1u) / WG * WG;
        lo = lo + part * chunk;
        hi = min(hi, lo + chunk - 1u);
    }
    for (var d = li; d < params.head_dim; d += WG) {
        qs[d] = q[q_base + d];
    }
    workgroupBarrier();

    var m = start_m(h, part == 0u);
    var l = start_l(part == 0u);
    var acc: array<f32, 8>;
    for (var i = 0u; i < SLOTS; i++) {
        acc[i] = 0.0;
    }
    let two_pass = params.write_probs == 1u;
    if (two_pass) {
        // Pass 1: the row's max and sum, tile by tile.
        for (var t0 = lo; t0 <= hi; t0 += WG) {
            let key = t0 + li;
            var s = neg_inf();
            if (key <= hi) {
                s = score(kv_base + key * kv_step);
            }
            let m_new = max(m, group_max(s, li));
            var e = 0.0;
            if (key <= hi) {
                e = exp(s - m_new);
            }
            l = l * exp(m - m_new) + group_sum(e, li);
            m = m_new;
        }
    }
    let p_row = ((wid.z * params.heads + h) * params.q_rows + wid.x) * params.keys;
    for (var t0 = lo; t0 <= hi; t0 += WG) {
        let key = t0 + li;
        var s = neg_inf();
        if (key <= hi) {
            s = score(kv_base + key * kv_step);
        }
        var p = 0.0;
        if (two_pass) {
            if (key <= hi) {
                p = exp(s - m) / l;
                probs[p_row + key] = p;
            }
        } else {
            let m_new = max(m, group_max(s, li));
            if (key <= hi) {
                p = exp(s - m_new);
            }
            let alpha = exp(m - m_new);
            l = l * alpha + group_sum(p, li);
            for (var i = 0u; i < SLOTS; i++) {
                acc[i] *= alpha;
            }
            m = m_new;
        }
        ps[li] = p;
        workgroupBarrier();
        let n = min(WG, hi + 1u - t0);
        for (var j = 0u; j < n; j++) {
            let w = ps[j];
            let vb = kv_base + (t0 + j) * kv_step;
            for (var i = 0u; i < SLOTS; i++) {
                let d = li + i * WG;
                if (d >= params.head_dim) {
                    break;
                }
                acc[i] += w * v[vb + d];
            }
        }
        workgroupBarrier();
    }
    if (two_pass) {
        // Masked keys have probability exactly 0.
        for (var key = li; key < params.keys; key += WG) {
            if (key < lo || key > hi) {
                probs[p_row + key] = 0.0;
            }
        }
    }
    if (splits > 1u) {
        let base = (((b * params.seq + qi) * params.heads + h) * splits + part) * (params.head_dim + 2u);
        if (li == 0u) {
            probs[base] = m;
            probs[base + 1u] = l;
        }
        for (var i = 0u; i < SLOTS; i++) {
            let d = li + i * WG;
            if (d < params.head_dim) {
                probs[base + 2u + d] = acc[i];
            }
        }
        return;
    }
    let norm = select(1.0 / l, 1.0, two_pass);
    for (var i = 0u; i < SLOTS; i++) {
        let d = li + i * WG;
        if (d < params.head_dim) {
            out[q_base + d] = acc[i] * norm;
        }
    }
}
