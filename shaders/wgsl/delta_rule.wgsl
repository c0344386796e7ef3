// The gated delta rule of a Gated DeltaNet layer, one workgroup per (sequence, value head),
// token after token. y `[batch * seq, channels]` is the convolution's output (queries and keys of
// k_heads heads of k_dim, then values of v_heads heads of v_dim); b, a `[batch * seq, v_heads]`
// the beta and decay inputs; vecs = [A (-exp(A_log)), dt_bias, each v_heads long, then the gated
// norm's weight, v_dim]; state `[batch, v_heads, k_dim, width]` the recurrent state (columns are
// value dims, or with mode 1 the tokens). Per token: q and k L2-normalized (q times scale),
// beta = sigmoid(b), decay = exp(A softplus(a + dt_bias)); each thread owns state columns:
// S *= decay, delta = beta (v - S^T k), S += k delta^T, o = S^T q.
// Mode 0: out `[batch * seq, v_heads * v_dim]` = rmsnorm(o) * norm weight * silu(z).
// Mode 1: the values are one-hot over the tokens (width = seq), out `[batch, v_heads, seq, seq]`
// gets o itself: the rule unrolled into a token-mixing matrix (state starts at zero).

const WG: u32 = 256u;

struct Params {
    batch: u32,
    seq: u32,
    channels: u32,
    k_heads: u32,
    v_heads: u32,
    k_dim: u32,
    v_dim: u32,
    tiled: u32,
    mode: u32,
    width: u32,
    eps: f32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read> z: array<f32>;
@group(0) @binding(3) var<storage, read> bb: array<f32>;
@group(0) @binding(4) var<storage, read> aa: array<f32>;
@group(0) @binding(5) var<storage, read> vecs: array<f32>;
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

var<workgroup> qs: array<f32, 256>;
var<workgroup> ks: array<f32, 256>;

fn softplus(x: f32) -> f32 {
    if (x > 20.0) {
        return x;
    }
    return log(1.0 + exp(x));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let li = lid.x;
    let nv = params.v_heads;
    let b = wid.x / nv;
    let hv = wid.x % nv;
    let dk = params.k_dim;
    let dv = params.v_dim;
    let c = params.channels;
    let width = params.width;
    var kh = hv / (nv / params.k_heads);
    if (params.tiled == 1u) {
        kh = hv % params.k_heads;
    }
    let qk_len = params.k_heads * dk;
    let base = (b * nv + hv) * dk * width;
    for (var t = 0u; t < params.seq; t++) {
        let row = b * params.seq + t;
        var qv = 0.0;
        var kv = 0.0;
        if (li < dk) {
            qv = y[row * c + kh * dk + li];
            kv = y[row * c + qk_len + kh * dk + li];
        }
        let qss = group_sum(qv * qv, li);
        let kss = group_sum(kv * kv, li);
        qs[li] = qv / sqrt(qss + 1e-6) * params.scale;
        ks[li] = kv / sqrt(kss + 1e-6);
        workgroupBarrier();
        let beta = 1.0 / (1.0 + exp(-bb[row * nv + hv]));
        let decay = exp(vecs[hv] * softplus(aa[row * nv + hv] + vecs[nv + hv]));
        var o = 0.0;
        for (var col = li; col < width; col += WG) {
            var mem = 0.0;
            for (var i = 0u; i < dk; i++) {
                mem += state[base + i * width + col] * decay * ks[i];
            }
            var v = 0.0;
            if (params.mode == 0u) {
                v = y[row * c + 2u * qk_len + hv * dv + col];
            } else if (col == t) {
                v = 1.0;
            }
            let delta = (v - mem) * beta;
            var acc = 0.0;
            for (var i = 0u; i < dk; i++) {
                let s = state[base + i * width + col] * decay + ks[i] * delta;
                state[base + i * width + col] = s;
                acc += s * qs[i];
            }
            o = acc;
            if (params.mode == 1u) {
                var m = 0.0;
                if (col <= t) {
                    m = acc;
                }
                out[((b * nv + hv) * params.seq + t) * params.seq + col] = m;
            }
        }
        if (params.mode == 0u) {
            let ss = group_sum(o * o, li);
            let inv = 1.0 / sqrt(ss / f32(dv) + params.eps);
            if (li < dv) {
                let zi = row * nv * dv + hv * dv + li;
                let g = z[zi];
                out[zi] = vecs[2u * nv + li] * (o * inv) * (g / (1.0 + exp(-g)));
            }
        }
        workgroupBarrier();
    }
}
