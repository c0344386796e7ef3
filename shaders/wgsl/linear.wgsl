// What the two matmul kernels share (prepended to matmul.wgsl and matvec.wgsl, after quant.wgsl):
// the parameters, the bindings, the folded norm's input and the epilogue.
//
//   y[t][o] (op)= sum_i n(x[t])[i] * W[o][i] + bias[o]
//
// W may be one row chunk of a larger matrix: its rows are outputs o_offset .. o_offset + out_rows.
// The norm n is computed inside the matmul, so that normalized activations are never written out:
// norm = 0 none, 1 RMSNorm x * rstd * g (rstd = 1 / sqrt(mean x^2 + eps)), 2 LayerNorm
// (x - mean) * rstd * g + b (rstd = 1 / sqrt(mean (x - mean)^2 + eps)), as rms_norm.wgsl and
// layer_norm.wgsl compute them. `epilogue` says what
// happens to y: 0 store, 1 add (a residual), 2 y = silu(y) * result, 3 y = gelu_tanh(y) * result
// (the gated MLP, with y holding the gate projection), 4 gpt-oss's clamped SwiGLU:
// g = min(y, limit), u = clamp(result, -limit, limit), y = (u + 1) * g * sigmoid(alpha * g).

struct Params {
    rows: u32,
    in_dim: u32,
    out_stride: u32,
    out_rows: u32,
    o_offset: u32,
    fmt: u32,
    has_bias: u32,
    epilogue: u32,
    norm: u32,
    eps: f32,
    alpha: f32,
    limit: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> norm_w: array<f32>;
@group(0) @binding(6) var<storage, read> norm_b: array<f32>;

// Input i of token t (0 outside the matrix), normalized with the token's (mean, rstd).
fn input_at(t: u32, i: u32, st: vec2<f32>) -> f32 {
    if (t >= params.rows || i >= params.in_dim) {
        return 0.0;
    }
    let v = x[t * params.in_dim + i];
    switch params.norm {
        case 1u: {
            return v * st.y * norm_w[i];
        }
        case 2u: {
            return (v - st.x) * st.y * norm_w[i] + norm_b[i];
        }
        default: {
            return v;
        }
    }
}

// The part of token t's statistics that one thread of `lanes` gathers (inputs lane, lane + lanes,
// ...): the sum of x (which = 0, LayerNorm's first pass) or of (x - mean)^2 (which = 1).
fn partial_stat(t: u32, lane: u32, lanes: u32, which: u32, mean: f32) -> f32 {
    var s = 0.0;
    if (t < params.rows) {
        for (var i = lane; i < params.in_dim; i += lanes) {
            let v = x[t * params.in_dim + i];
            if (which == 0u) {
                s += v;
            } else {
                s += (v - mean) * (v - mean);
            }
        }
    }
    return s;
}

fn rstd_of(sum_sq: f32) -> f32 {
    return 1.0 / sqrt(sum_sq / f32(params.in_dim) + params.eps);
}

// Output o (of the whole matrix) of token t, with the bias and the epilogue.
fn store(t: u32, o: u32, acc: f32) {
    let idx = t * params.out_stride + o;
    var v = acc;
    if (params.has_bias == 1u) {
        v += bias[o];
    }
    switch params.epilogue {
        case 1u: {
            v += y[idx];
        }
        case 2u: {
            let g = y[idx];
            v = g / (1.0 + exp(-g)) * v;
        }
        case 3u: {
            let g = y[idx];
            v = 0.5 * g * (1.0 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g))) * v;
        }
        case 4u: {
            let g = min(y[idx], params.limit);
            let u = clamp(v, -params.limit, params.limit);
            v = (u + 1.0) * (g * (1.0 / (1.0 + exp(-(g * params.alpha)))));
        }
        default: {}
    }
    y[idx] = v;
}
