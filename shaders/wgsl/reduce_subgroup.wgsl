// reduce.wgsl's interface with subgroup operations: each subgroup reduces in registers, then one
// value per subgroup meets in shared memory, read in subgroup order (so the result does not depend
// on timing). Used only where the device's subgroups are runs of consecutive invocation indices
// starting at multiples of their size, which Prism checks on the device before choosing this path
// (GpuContext's subgroup probe), and only on devices with wgpu's SUBGROUP feature.

var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;

struct Best {
    v: f32,
    i: u32,
}

fn group_sum(x: f32, li: u32) -> f32 {
    let size = subgroupAdd(1u);
    let s = subgroupAdd(x);
    if (li % size == 0u) {
        red_v[li / size] = s;
    }
    workgroupBarrier();
    var r = 0.0;
    for (var j = 0u; j < WG / size; j++) {
        r += red_v[j];
    }
    workgroupBarrier();
    return r;
}

fn group_max(x: f32, li: u32) -> f32 {
    let size = subgroupAdd(1u);
    let s = subgroupMax(x);
    if (li % size == 0u) {
        red_v[li / size] = s;
    }
    workgroupBarrier();
    var r = red_v[0];
    for (var j = 1u; j < WG / size; j++) {
        r = max(r, red_v[j]);
    }
    workgroupBarrier();
    return r;
}

fn group_best(v: f32, i: u32, li: u32) -> Best {
    let size = subgroupAdd(1u);
    let m = subgroupMax(v);
    let idx = subgroupMin(select(0xffffffffu, i, v == m));
    if (li % size == 0u) {
        red_v[li / size] = m;
        red_i[li / size] = idx;
    }
    workgroupBarrier();
    var r = Best(red_v[0], red_i[0]);
    for (var j = 1u; j < WG / size; j++) {
        let b = red_v[j];
        if (b > r.v || (b == r.v && red_i[j] < r.i)) {
            r = Best(b, red_i[j]);
        }
    }
    workgroupBarrier();
    return r;
}
