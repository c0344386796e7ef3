// Attention in one kernel, as attention.wgsl computes it (same parameters, bindings and result,
// from attention_io.wgsl),
// for heads of up to 128 dimensions: a workgroup takes a tile of 8 queries of one head of one
// sequence (x: query tile, y: head, z: sequence), so that each tile of 16 keys and of 16 values is
// loaded into shared memory once for the 8 queries instead of once per query.
//   per key tile: stage K; 128 scores (2 per thread) from shared memory, masked per query;
//   each query's row: running max and sum (online softmax), or, when the probabilities are
//   written, a first sweep for the max and sum and a second that writes them; stage V; each thread
//   updates its dimensions (d = thread, thread + 64) of the 8 outputs.

const WG: u32 = 64u;
const QT: u32 = 8u;
const KT: u32 = 16u;
const HD: u32 = 128u;
var<workgroup> qs: array<f32, 1024>;
var<workgroup> kv: array<f32, 2048>;
var<workgroup> sc: array<f32, 128>;
var<workgroup> row_m: array<f32, 8>;
var<workgroup> row_l: array<f32, 8>;
var<workgroup> row_alpha: array<f32, 8>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let q_first = params.q0 + wid.x * QT;
    let nq = min(QT, params.q0 + params.q_rows - q_first);
    let h = wid.y;
    let b = params.b0 + wid.z;
    let hd = params.head_dim;
    let kvh = h / (params.heads / params.kv_heads);
    let kv_step = params.kv_heads * hd;
    let kv_base = b * params.key_stride * kv_step + kvh * hd;
    let lo_t = key_lo(q_first);
    let hi_t = key_hi(q_first + nq - 1u);

    for (var i = li; i < QT * hd; i += WG) {
        let qq = i / hd;
        var val = 0.0;
        if (qq < nq) {
            val = q[((b * params.seq + q_first + qq) * params.heads + h) * hd + i % hd];
        }
        qs[qq * HD + i % hd] = val;
    }
    if (li < QT) {
        row_m[li] = start_m(h, true);
        row_l[li] = start_l(true);
        row_alpha[li] = 1.0;
    }
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    workgroupBarrier();

    let two_pass = params.write_probs == 1u;
    let passes = select(1u, 2u, two_pass);
    for (var sweep = 0u; sweep < passes; sweep++) {
        let with_values = !two_pass || sweep == 1u;
        for (var t0 = lo_t; t0 <= hi_t; t0 += KT) {
            for (var i = li; i < KT * hd; i += WG) {
                let key = t0 + i / hd;
                var val = 0.0;
                if (key <= hi_t) {
                    val = k[kv_base + key * kv_step + i % hd];
                }
                kv[(i / hd) * HD + i % hd] = val;
            }
            workgroupBarrier();
            for (var r = 0u; r < 2u; r++) {
                let pair = li + r * WG;
                let qq = pair / KT;
                let key = t0 + pair % KT;
                var s = neg_inf();
                if (qq < nq && key >= key_lo(q_first + qq) && key <= key_hi(q_first + qq)) {
                    var dot = 0.0;
                    for (var d = 0u; d < hd; d++) {
                        dot += qs[qq * HD + d] * kv[(pair % KT) * HD + d];
                    }
                    s = dot * params.scale;
                    if (params.softcap > 0.0) {
                        s = tanh(s / params.softcap) * params.softcap;
                    }
                }
                sc[pair] = s;
            }
            workgroupBarrier();
            if (li < QT) {
                let base = li * KT;
                var tmax = neg_inf();
                for (var j = 0u; j < KT; j++) {
                    tmax = max(tmax, sc[base + j]);
                }
                let m = row_m[li];
                if (two_pass && sweep == 1u) {
                    // m and l are final: the probabilities themselves.
                    for (var j = 0u; j < KT; j++) {
                        let s = sc[base + j];
                        sc[base + j] = select(exp(s - m) / row_l[li], 0.0, s == neg_inf());
                    }
                    row_alpha[li] = 1.0;
                } else {
                    let m_new = max(m, tmax);
                    var sum = 0.0;
                    for (var j = 0u; j < KT; j++) {
                        let s = sc[base + j];
                        let p = select(exp(s - m_new), 0.0, s == neg_inf());
                        sc[base + j] = p;
                        sum += p;
                    }
                    // Nothing seen yet (every key so far masked for this query): nothing to rescale.
                    let alpha = select(exp(m - m_new), 1.0, m == neg_inf());
                    row_l[li] = row_l[li] * alpha + sum;
                    row_m[li] = m_new;
                    row_alpha[li] = alpha;
                }
            }
            workgroupBarrier();
            if (!with_values) {
                continue;
            }
            if (two_pass) {
                for (var r = 0u; r < 2u; r++) {
                    let pair = li + r * WG;
                    let qq = pair / KT;
                    let key = t0 + pair % KT;
                    if (qq < nq && key >= key_lo(q_first + qq) && key <= key_hi(q_first + qq)) {
                        let row = (wid.z * params.heads + h) * params.q_rows + (q_first + qq - params.q0);
                        probs[row * params.keys + key] = sc[pair];
                    }
                }
            }
            for (var i = li; i < KT * hd; i += WG) {
                let key = t0 + i / hd;
                var val = 0.0;
                if (key <= hi_t) {
                    val = v[kv_base + key * kv_step + i % hd];
                }
                kv[(i / hd) * HD + i % hd] = val;
            }
            workgroupBarrier();
            for (var qq = 0u; qq < QT; qq++) {
                let alpha = row_alpha[qq];
                for (var slot = 0u; slot < 2u; slot++) {
                    let d = li + slot * WG;
                    if (d < hd) {
                        var a = acc[qq * 2u + slot] * alpha;
                        for (var j = 0u; j < KT; j++) {
                            a += sc[qq * KT + j] * kv[j * HD + d];
                        }
                        acc[qq * 2u + slot] = a;
                    }
                }
            }
            workgroupBarrier();
        }
    }
    for (var qq = 0u; qq < nq; qq++) {
        let qi = q_first + qq;
        if (two_pass) {
            // Masked keys have probability exactly 0.
            let row = (wid.z * params.heads + h) * params.q_rows + (qi - params.q0);
            for (var key = li; key < params.keys; key += WG) {
                if (key < key_lo(qi) || key > key_hi(qi)) {
                    probs[row * params.keys + key] = 0.0;
                }
            }
        }
        let norm = select(1.0 / row_l[qq], 1.0, two_pass);
        for (var slot = 0u; slot < 2u; slot++) {
            let d = li + slot * WG;
            if (d < hd) {
                out[((b * params.seq + qi) * params.heads + h) * hd + d] = acc[qq * 2u + slot] * norm;
            }
        }
    }
}
