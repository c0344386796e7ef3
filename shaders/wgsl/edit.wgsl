// Interventions on a buffer x[rows][width], over columns col0 .. col0 + ncols of the listed rows:
//   mode 0 add:  x += scale * values[c]
//   mode 1 set:  x = values[i * ncols + c] (one vector per listed row)
//   mode 2 zero: x = 0
//   mode 3 mean: x = the mean of column c over the rows listed after the edited ones
// One thread per column; rows[0 .. n_rows] are edited, rows[n_rows .. n_rows + n_mean] averaged.

struct Params {
    n_rows: u32,
    n_mean: u32,
    width: u32,
    col0: u32,
    ncols: u32,
    mode: u32,
    scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> rows: array<u32>;
@group(0) @binding(2) var<storage, read> values: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= params.ncols) {
        return;
    }
    let col = params.col0 + c;
    var mean = 0.0;
    if (params.mode == 3u) {
        var sum = 0.0;
        for (var i = 0u; i < params.n_mean; i++) {
            sum += x[rows[params.n_rows + i] * params.width + col];
        }
        mean = sum / f32(max(params.n_mean, 1u));
    }
    for (var i = 0u; i < params.n_rows; i++) {
        let at = rows[i] * params.width + col;
        switch params.mode {
            case 0u: {
                x[at] = x[at] + params.scale * values[c];
            }
            case 1u: {
                x[at] = values[i * params.ncols + c];
            }
            case 2u: {
                x[at] = 0.0;
            }
            default: {
                x[at] = mean;
            }
        }
    }
}
