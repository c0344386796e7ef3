// The second step of split attention (attention.wgsl with splits > 1): for one query of one head
// of one sequence per workgroup (x: query, y: head, z: sequence), the parts' running maxima m_s,
// sums l_s and unnormalized values a_s (in `probs`) become
//   out = sum_s exp(m_s - M) a_s / sum_s exp(m_s - M) l_s,   M = max_s m_s
// (an empty part has m_s = -inf and weighs nothing).

const WG: u32 = 64u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    // q, k and v are not read, but stay bound (every attention dispatch binds the same list).
    if (params.splits == 0u) {
        out[0] = q[0] + k[0] + v[0];
    }
    let qi = wid.x;
    let h = wid.y;
    let b = wid.z;
    let hd = params.head_dim;
    let row = ((b * params.seq + qi) * params.heads + h) * params.splits;
    var big = neg_inf();
    for (var s = 0u; s < params.splits; s++) {
        big = max(big, probs[(row + s) * (hd + 2u)]);
    }
    var total = 0.0;
    for (var s = 0u; s < params.splits; s++) {
        let m = probs[(row + s) * (hd + 2u)];
        if (m != neg_inf()) {
            total += probs[(row + s) * (hd + 2u) + 1u] * exp(m - big);
        }
    }
    for (var d = li; d < hd; d += WG) {
        var acc = 0.0;
        for (var s = 0u; s < params.splits; s++) {
            let m = probs[(row + s) * (hd + 2u)];
            if (m != neg_inf()) {
                acc += probs[(row + s) * (hd + 2u) + 2u + d] * exp(m - big);
            }
        }
        out[((b * params.seq + qi) * params.heads + h) * hd + d] = acc / total;
    }
}
