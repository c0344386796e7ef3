// GELU in place. mode 0: tanh approximation (gelu_new); mode 1: exact, 0.5 x (1 + erf(x / sqrt 2)).
// WGSL has no erf: this one is Abramowitz & Stegun 7.1.26 refined (max abs error about 1.5e-7).

struct Params {
    n: u32,
    mode: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

fn erf_approx(v: f32) -> f32 {
    let sign = select(1.0, -1.0, v < 0.0);
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return sign * (1.0 - poly * exp(-a * a));
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.y * nwg.x * 256u + gid.x;
    if (i >= params.n) {
        return;
    }
    let v = x[i];
    if (params.mode == 0u) {
        let inner = 0.7978845608028654 * (v + 0.044715 * v * v * v);
        x[i] = 0.5 * v * (1.0 + tanh(inner));
    } else {
        x[i] = 0.5 * v * (1.0 + erf_approx(v * 0.7071067811865476));
    }
}
