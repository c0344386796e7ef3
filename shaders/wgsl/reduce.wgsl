// Workgroup reductions of one value per thread over a 64-thread workgroup, through shared memory
// (prepended to the shaders that use them). Every thread gets the result; every thread must call.

var<workgroup> red: array<f32, 64>;

fn group_max(x: f32, li: u32) -> f32 {
    red[li] = x;
    workgroupBarrier();
    for (var stride = 32u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            red[li] = max(red[li], red[li + stride]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn group_sum(x: f32, li: u32) -> f32 {
    red[li] = x;
    workgroupBarrier();
    for (var stride = 32u; stride > 0u; stride /= 2u) {
        if (li < stride) {
            red[li] += red[li + stride];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}
