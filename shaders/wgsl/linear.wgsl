// What the two matmul kernels share (prepended to matmul.wgsl and matvec.wgsl, after quant.wgsl):
// the parameters, the bindings, the RMSNorm prologue's input and the epilogue.
//
//   y[t][o] (op)= sum_i (x[t][i] * rstd[t] * g[i]) * W[o][i] + bias[o]
//
// W may be one row chunk of a larger matrix: its rows are outputs o_offset .. o_offset + out_rows.
// With norm = 1 the input is RMSNorm(x) * g, computed inside the matmul (rstd[t] = 1 / sqrt(mean
// x[t]^2 + eps)) so that the normalized activations are never written out. `epilogue` says what
// happens to y: 0 store, 1 add (a residual), 2 y = silu(y) * result, 3 y = gelu_tanh(y) * result
// (the gated MLP, with y holding the gate projection).

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
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> norm_w: array<f32>;

// Input i of token t (0 outside the matrix); with the norm folded in, normalized with the
// token's factor `rstd` exactly as rms_norm.wgsl does it: x * rstd * g.
fn input_at(t: u32, i: u32, rstd: f32) -> f32 {
    if (t >= params.rows || i >= params.in_dim) {
        return 0.0;
    }
    let v = x[t * params.in_dim + i];
    if (params.norm == 1u) {
        return v * rstd * norm_w[i];
    }
    return v;
}

// The RMSNorm factor of a token from its sum of squares (1 without the norm).
fn rstd_of(sum_sq: f32) -> f32 {
    if (params.norm == 1u) {
        return 1.0 / sqrt(sum_sq / f32(params.in_dim) + params.eps);
    }
    return 1.0;
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
        default: {}
    }
    y[idx] = v;
}
