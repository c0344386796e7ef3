// Workgroup reductions through shared memory, over the including shader's `WG` threads (prepended
// to the shaders that use them; reduce_subgroup.wgsl is the same interface with subgroup
// operations). Every thread gets the result, and every thread must call, in uniform control flow.

var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;

// The largest value, and among equal values the smallest index.
struct Best {
    v: f32,
    i: u32,
}

fn group_sum(x: f32, li: u32) -> f32 {
    red_v[li] = x;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            red_v[li] += red_v[li + stride];
        }
        workgroupBarrier();
    }
    let r = red_v[0];
    workgroupBarrier();
    return r;
}

fn group_max(x: f32, li: u32) -> f32 {
    red_v[li] = x;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            red_v[li] = max(red_v[li], red_v[li + stride]);
        }
        workgroupBarrier();
    }
    let r = red_v[0];
    workgroupBarrier();
    return r;
}

fn group_best(v: f32, i: u32, li: u32) -> Best {
    red_v[li] = v;
    red_i[li] = i;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            let a = red_v[li];
            let b = red_v[li + stride];
            let ib = red_i[li + stride];
            if (b > a || (b == a && ib < red_i[li])) {
                red_v[li] = b;
                red_i[li] = ib;
            }
        }
        workgroupBarrier();
    }
    let r = Best(red_v[0], red_i[0]);
    workgroupBarrier();
    return r;
}
