// Weight decoding shared by matmul.wgsl and embed.wgsl (prepended to them; not a shader on its own).
//
// Weights are uploaded into one array<u32> per matrix, row-major [rows][cols], blocks of 32 along
// each row. Formats:
//   0 F32   one f32 per word
//   1 F16   two f16 per word (element e in word e/2, low half first)
//   2 BF16  two bf16 per word
//   3 Q8_0  [nblocks scales as f32][nblocks * 8 words of i8]          w = d * q
//   4 Q4_0  [nblocks scales as f32][nblocks * 4 words of nibbles]     w = d * (q - 8)
//   5 Q4_1  [nblocks (d, m) pairs as f32][nblocks * 4 words]          w = d * q + m
// In the Q4 formats byte j of a block holds element j in its low nibble and j + 16 in its high one.

@group(0) @binding(1) var<storage, read> wq: array<u32>;

// IEEE half to f32 by bit manipulation (unpack2x16float needs a capability some adapters lack).
fn f16_bits_to_f32(h: u32) -> f32 {
    let sign = (h >> 15u) & 1u;
    let exponent = (h >> 10u) & 0x1fu;
    let mantissa = h & 0x3ffu;
    var magnitude: f32;
    if (exponent == 0u) {
        magnitude = f32(mantissa) * 5.9604644775390625e-8;
    } else if (exponent == 31u) {
        magnitude = bitcast<f32>(0x7f800000u | (mantissa << 13u));
    } else {
        magnitude = bitcast<f32>(((exponent + 112u) << 23u) | (mantissa << 13u));
    }
    return select(magnitude, -magnitude, sign == 1u);
}

fn weight_byte(word_base: u32, byte_index: u32) -> u32 {
    return (wq[word_base + byte_index / 4u] >> ((byte_index % 4u) * 8u)) & 0xffu;
}

// One weight, at flat element index e = row * cols + col (cols a multiple of 32 for block formats).
fn weight_at(fmt: u32, nblocks: u32, e: u32) -> f32 {
    switch fmt {
        case 0u: {
            return bitcast<f32>(wq[e]);
        }
        case 1u: {
            let word = wq[e / 2u];
            return f16_bits_to_f32(select(word & 0xffffu, word >> 16u, (e & 1u) == 1u));
        }
        case 2u: {
            let word = wq[e / 2u];
            let bits = select(word << 16u, word & 0xffff0000u, (e & 1u) == 1u);
            return bitcast<f32>(bits);
        }
        case 3u: {
            let blk = e / 32u;
            let j = e % 32u;
            let q = weight_byte(nblocks + blk * 8u, j);
            let signed_q = f32(i32(q << 24u) >> 24u);
            return bitcast<f32>(wq[blk]) * signed_q;
        }
        case 4u: {
            let blk = e / 32u;
            let j = e % 32u;
            let byte = weight_byte(nblocks + blk * 4u, j % 16u);
            let q = select(byte & 0xfu, byte >> 4u, j >= 16u);
            return bitcast<f32>(wq[blk]) * (f32(q) - 8.0);
        }
        default: {
            let blk = e / 32u;
            let j = e % 32u;
            let byte = weight_byte(2u * nblocks + blk * 4u, j % 16u);
            let q = select(byte & 0xfu, byte >> 4u, j >= 16u);
            return bitcast<f32>(wq[2u * blk]) * f32(q) + bitcast<f32>(wq[2u * blk + 1u]);
        }
    }
}
