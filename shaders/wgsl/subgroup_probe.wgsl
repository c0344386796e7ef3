// Checks, on a device with subgroups, what reduce_subgroup.wgsl assumes: every subgroup is a run of
// consecutive local invocation indices starting at a multiple of its size, and the size divides
// both workgroup sizes the reductions use (64 and 256). bad[i] = 1 where invocation i disagrees.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> bad: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) li: u32) {
    let size = subgroupAdd(1u);
    let lane = subgroupExclusiveAdd(1u);
    let first = subgroupBroadcastFirst(li);
    let ok = size > 0u && 64u % size == 0u && lane == li % size && first == li - lane;
    if (li < params.n) {
        bad[li] = select(1u, 0u, ok);
    }
}
