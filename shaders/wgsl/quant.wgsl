// Weight decoding shared by matmul.wgsl and embed.wgsl (prepended to them; not a shader on its own).
//
// A matrix is uploaded into one array<u32>, row-major [rows][cols]. Dense formats pack elements
// into words; block formats keep ggml's block bytes exactly, each block padded to whole words, so
// that the GPU holds at most 1.12x the file's bytes. Every decoder reproduces gguf-py's arithmetic.
//   fmt  name     values/block  words/block
//    0   F32      1             1
//    1   F16      2 per word
//    2   BF16     2 per word
//    3   Q8_0     32            9    f16 d, 32 x i8                        w = q * d
//    4   Q4_0     32            5    f16 d, 16 bytes of nibbles            w = d * (q - 8)
//    5   Q4_1     32            5    f16 d, f16 m, 16 bytes                w = d * q + m
//    6   Q5_0     32            6    f16 d, u32 qh, 16 bytes               w = d * (q - 16)
//    7   Q5_1     32            6    f16 d, f16 m, u32 qh, 16 bytes        w = d * q + m
//    8   Q2_K     256           21   scales[16], qs[64], f16 d, f16 dmin
//    9   Q3_K     256           28   hmask[32], qs[64], scales[12], f16 d
//   10   Q4_K     256           36   f16 d, f16 dmin, scales[12], qs[128]
//   11   Q5_K     256           44   f16 d, f16 dmin, scales[12], qh[32], qs[128]
//   12   Q6_K     256           53   ql[128], qh[64], i8 scales[16], f16 d
//   13   IQ4_NL   32            5    f16 d, 16 bytes of level indices
//   14   IQ4_XS   256           34   f16 d, u16 scales_h, scales_l[4], qs[128]
//   15   MXFP4    32            17 bytes, unpadded: u8 e8m0 exponent, 16 bytes of e2m1 indices
//                                      w = 2^(e-128) * level (padding 17-byte blocks would cost 18%)
//   16   TQ1_0    256           14   qs[48] (base-3 digits, five per byte), qh[4], f16 d
//   17   TQ2_0    256           17   qs[64] (2-bit digits), f16 d              w = d * (q - 1)
//   18   Q1_0     128           5    f16 d, qs[16] (one bit each)              w = bit ? d : -d
//   19   Q2_0     64            5    f16 d, qs[16] (2-bit digits)              w = (q - 1) * d
// In the 32-value nibble formats byte j holds element j in its low nibble and j + 16 in its high one.

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

// Byte `i` of the block that starts at word `base`.
fn byte_at(base: u32, i: u32) -> u32 {
    return (wq[base + i / 4u] >> ((i % 4u) * 8u)) & 0xffu;
}

// The f16 at (even) byte `i` of the block at `base`.
fn half_at(base: u32, i: u32) -> f32 {
    return f16_bits_to_f32((wq[base + i / 4u] >> ((i % 4u) * 8u)) & 0xffffu);
}

fn signed_byte(b: u32) -> f32 {
    return f32(i32(b << 24u) >> 24u);
}

fn mxfp4_level(q: u32) -> f32 {
    var levels = array<f32, 16>(0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0,
                                0.0, -1.0, -2.0, -3.0, -4.0, -6.0, -8.0, -12.0);
    return levels[q];
}

// Byte `off` of the matrix's bytes (formats stored without padding).
fn raw_byte(off: u32) -> u32 {
    return (wq[off / 4u] >> ((off % 4u) * 8u)) & 0xffu;
}

// An e8m0 exponent as 2^(e - 128), subnormal below e = 2 (ggml's E8M0_TO_FP32_HALF).
fn e8m0_half(e: u32) -> f32 {
    return bitcast<f32>(select((e - 1u) << 23u, 0x00200000u << e, e < 2u));
}

// Element j of the MXFP4 block at byte `b0`: byte 1 + j % 16, low nibble for j < 16.
fn mxfp4_value(b0: u32, j: u32) -> f32 {
    let q = raw_byte(b0 + 1u + j % 16u);
    return mxfp4_level(select(q & 0xfu, q >> 4u, j >= 16u));
}

// A TQ1_0 digit: the byte times 3^m, wrapped to 8 bits, then (b * 3) >> 8, minus 1.
fn ternary_digit(byte: u32, m: u32) -> f32 {
    var pow3 = array<u32, 5>(1u, 3u, 9u, 27u, 81u);
    let b = (byte * pow3[m]) & 0xffu;
    return f32(i32((b * 3u) >> 8u) - 1);
}

// Value v (0..255) of the TQ1_0 block at `base`.
fn tq1_value(base: u32, v: u32) -> f32 {
    if (v < 160u) {
        return ternary_digit(byte_at(base, v % 32u), v / 32u);
    }
    if (v < 240u) {
        let w = v - 160u;
        return ternary_digit(byte_at(base, 32u + w % 16u), w / 16u);
    }
    let w = v - 240u;
    return ternary_digit(byte_at(base, 48u + w % 4u), w / 4u);
}

// Value v (0..255) of the TQ2_0 block at `base`: bits 2s of byte c*32 + l for v = c*128 + s*32 + l.
fn tq2_value(base: u32, v: u32) -> f32 {
    let q = (byte_at(base, (v / 128u) * 32u + v % 32u) >> (2u * ((v % 128u) / 32u))) & 3u;
    return f32(i32(q) - 1);
}

fn iq4_level(q: u32) -> f32 {
    var levels = array<f32, 16>(-127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0,
                                1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0);
    return levels[q];
}

// The 6-bit scale (which = 0) or min (which = 1) of sub-block `sub` of a Q4_K/Q5_K block whose
// 12 scale bytes start at byte 4.
fn k_scale(base: u32, sub: u32, which: u32) -> f32 {
    let o = 4u + which * 4u;
    if (sub < 4u) {
        return f32(byte_at(base, o + sub) & 63u);
    }
    let j = sub - 4u;
    let packed = byte_at(base, 12u + j);
    let low = select(packed & 0xfu, packed >> 4u, which == 1u);
    return f32(low | ((byte_at(base, o + j) >> 2u) & 0x30u));
}

// A 32-value nibble block: element j's nibble at byte `first + j % 16`.
fn nibble(base: u32, first: u32, j: u32) -> u32 {
    let b = byte_at(base, first + j % 16u);
    return select(b & 0xfu, b >> 4u, j >= 16u);
}

// The fifth bit of element j of a Q5 block whose qh word starts at byte `at`.
fn fifth_bit(base: u32, at: u32, j: u32) -> u32 {
    return (byte_at(base, at + j / 8u) >> (j % 8u)) & 1u;
}

// One weight, at flat element index e = row * cols + col of the uploaded matrix.
fn weight_at(fmt: u32, e: u32) -> f32 {
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
            return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (e & 1u) == 1u));
        }
        case 3u: {
            let base = (e / 32u) * 9u;
            return signed_byte(byte_at(base, 2u + e % 32u)) * half_at(base, 0u);
        }
        case 4u: {
            let base = (e / 32u) * 5u;
            return half_at(base, 0u) * (f32(nibble(base, 2u, e % 32u)) - 8.0);
        }
        case 5u: {
            let base = (e / 32u) * 5u;
            return half_at(base, 0u) * f32(nibble(base, 4u, e % 32u)) + half_at(base, 2u);
        }
        case 6u: {
            let base = (e / 32u) * 6u;
            let j = e % 32u;
            let q = nibble(base, 6u, j) | (fifth_bit(base, 2u, j) << 4u);
            return half_at(base, 0u) * (f32(q) - 16.0);
        }
        case 7u: {
            let base = (e / 32u) * 6u;
            let j = e % 32u;
            let q = nibble(base, 8u, j) | (fifth_bit(base, 4u, j) << 4u);
            return half_at(base, 0u) * f32(q) + half_at(base, 2u);
        }
        case 8u: {
            let base = (e / 256u) * 21u;
            let v = e % 256u;
            let q = (byte_at(base, 16u + (v / 128u) * 32u + v % 32u) >> (2u * ((v % 128u) / 32u))) & 3u;
            let sc = byte_at(base, v / 16u);
            let dl = half_at(base, 80u) * f32(sc & 0xfu);
            let ml = half_at(base, 82u) * f32(sc >> 4u);
            return dl * f32(q) - ml;
        }
        case 9u: {
            let base = (e / 256u) * 28u;
            let v = e % 256u;
            let s = v / 16u;
            let low_sc = (byte_at(base, 96u + s % 8u) >> (4u * (s / 8u))) & 0xfu;
            let high_sc = (byte_at(base, 104u + s % 4u) >> (2u * (s / 4u))) & 3u;
            let scale = f32(i32(low_sc | (high_sc << 4u)) - 32);
            let dl = half_at(base, 108u) * scale;
            let low = (byte_at(base, 32u + (v / 128u) * 32u + v % 32u) >> (2u * ((v % 128u) / 32u))) & 3u;
            let unset = ((byte_at(base, v % 32u) >> (v / 32u)) & 1u) ^ 1u;
            return dl * f32(i32(low) - i32(unset << 2u));
        }
        case 10u: {
            let base = (e / 256u) * 36u;
            let v = e % 256u;
            let sub = v / 32u;
            let q = (byte_at(base, 16u + (sub / 2u) * 32u + v % 32u) >> (4u * (sub % 2u))) & 0xfu;
            let dl = half_at(base, 0u) * k_scale(base, sub, 0u);
            let ml = half_at(base, 2u) * k_scale(base, sub, 1u);
            return dl * f32(q) - ml;
        }
        case 11u: {
            let base = (e / 256u) * 44u;
            let v = e % 256u;
            let sub = v / 32u;
            let low = (byte_at(base, 48u + (sub / 2u) * 32u + v % 32u) >> (4u * (sub % 2u))) & 0xfu;
            let high = (byte_at(base, 16u + v % 32u) >> sub) & 1u;
            let dl = half_at(base, 0u) * k_scale(base, sub, 0u);
            let ml = half_at(base, 2u) * k_scale(base, sub, 1u);
            return dl * f32(low | (high << 4u)) - ml;
        }
        case 12u: {
            let base = (e / 256u) * 53u;
            let v = e % 256u;
            let g = v / 128u;
            let l = v % 128u;
            let low = (byte_at(base, g * 64u + l % 64u) >> (4u * (l / 64u))) & 0xfu;
            let high = (byte_at(base, 128u + g * 32u + l % 32u) >> (2u * (l / 32u))) & 3u;
            let dl = half_at(base, 208u) * signed_byte(byte_at(base, 192u + v / 16u));
            return dl * f32(i32(low | (high << 4u)) - 32);
        }
        case 13u: {
            let base = (e / 32u) * 5u;
            return half_at(base, 0u) * iq4_level(nibble(base, 2u, e % 32u));
        }
        case 15u: {
            let b0 = (e / 32u) * 17u;
            return e8m0_half(raw_byte(b0)) * mxfp4_value(b0, e % 32u);
        }
        case 16u: {
            let base = (e / 256u) * 14u;
            return half_at(base, 52u) * tq1_value(base, e % 256u);
        }
        case 17u: {
            let base = (e / 256u) * 17u;
            return half_at(base, 64u) * tq2_value(base, e % 256u);
        }
        case 18u: {
            let base = (e / 128u) * 5u;
            let v = e % 128u;
            let d = half_at(base, 0u);
            return select(-d, d, ((byte_at(base, 2u + v / 8u) >> (v % 8u)) & 1u) == 1u);
        }
        case 19u: {
            let base = (e / 64u) * 5u;
            let v = e % 64u;
            let q = (byte_at(base, 2u + v / 4u) >> (2u * (v % 4u))) & 3u;
            return f32(i32(q) - 1) * half_at(base, 0u);
        }
        default: {
            let base = (e / 256u) * 34u;
            let v = e % 256u;
            let sub = v / 32u;
            let low_sc = (byte_at(base, 4u + sub / 2u) >> (4u * (sub % 2u))) & 0xfu;
            let scales_h = byte_at(base, 2u) | (byte_at(base, 3u) << 8u);
            let high_sc = (scales_h >> (2u * sub)) & 3u;
            let dl = half_at(base, 0u) * f32(i32(low_sc | (high_sc << 4u)) - 32);
            let j = v % 32u;
            let b = byte_at(base, 8u + sub * 16u + j % 16u);
            let q = select(b & 0xfu, b >> 4u, j >= 16u);
            return dl * iq4_level(q);
        }
    }
}

// The n (at most 32) weights at flat indices e0 .. e0 + n - 1 of a matrix, into `wv`. For block
// formats the run lies inside one 32-value block or K-quant sub-block (e0 % 32 + n <= 32), so a
// block's f16 scales and sub-block scales are decoded once per run; every value is computed with
// exactly the arithmetic of `weight_at`, so the results are bit-identical. Dense formats decode
// value by value. The matvec kernel decodes runs of 32, the tiled matmul runs of 8.
var<private> wv: array<f32, 32>;

fn decode_run(fmt: u32, e0: u32, n: u32) {
    let p0 = e0 % 32u;
    switch fmt {
        case 3u: {
            let base = (e0 / 32u) * 9u;
            let d = half_at(base, 0u);
            for (var j = 0u; j < n; j++) {
                wv[j] = signed_byte(byte_at(base, 2u + p0 + j)) * d;
            }
        }
        case 4u: {
            let base = (e0 / 32u) * 5u;
            let d = half_at(base, 0u);
            for (var j = 0u; j < n; j++) {
                wv[j] = d * (f32(nibble(base, 2u, p0 + j)) - 8.0);
            }
        }
        case 5u: {
            let base = (e0 / 32u) * 5u;
            let d = half_at(base, 0u);
            let m = half_at(base, 2u);
            for (var j = 0u; j < n; j++) {
                wv[j] = d * f32(nibble(base, 4u, p0 + j)) + m;
            }
        }
        case 6u: {
            let base = (e0 / 32u) * 6u;
            let d = half_at(base, 0u);
            for (var j = 0u; j < n; j++) {
                let q = nibble(base, 6u, p0 + j) | (fifth_bit(base, 2u, p0 + j) << 4u);
                wv[j] = d * (f32(q) - 16.0);
            }
        }
        case 7u: {
            let base = (e0 / 32u) * 6u;
            let d = half_at(base, 0u);
            let m = half_at(base, 2u);
            for (var j = 0u; j < n; j++) {
                let q = nibble(base, 8u, p0 + j) | (fifth_bit(base, 4u, p0 + j) << 4u);
                wv[j] = d * f32(q) + m;
            }
        }
        case 8u: {
            let base = (e0 / 256u) * 21u;
            let d = half_at(base, 80u);
            let dmin = half_at(base, 82u);
            for (var j = 0u; j < n; j++) {
                let v = e0 % 256u + j;
                let q = (byte_at(base, 16u + (v / 128u) * 32u + v % 32u) >> (2u * ((v % 128u) / 32u))) & 3u;
                let sc = byte_at(base, v / 16u);
                wv[j] = d * f32(sc & 0xfu) * f32(q) - dmin * f32(sc >> 4u);
            }
        }
        case 9u: {
            let base = (e0 / 256u) * 28u;
            let d = half_at(base, 108u);
            for (var j = 0u; j < n; j++) {
                let v = e0 % 256u + j;
                let s = v / 16u;
                let low_sc = (byte_at(base, 96u + s % 8u) >> (4u * (s / 8u))) & 0xfu;
                let high_sc = (byte_at(base, 104u + s % 4u) >> (2u * (s / 4u))) & 3u;
                let dl = d * f32(i32(low_sc | (high_sc << 4u)) - 32);
                let low = (byte_at(base, 32u + (v / 128u) * 32u + v % 32u) >> (2u * ((v % 128u) / 32u))) & 3u;
                let unset = ((byte_at(base, v % 32u) >> (v / 32u)) & 1u) ^ 1u;
                wv[j] = dl * f32(i32(low) - i32(unset << 2u));
            }
        }
        case 10u: {
            let base = (e0 / 256u) * 36u;
            let sub = (e0 % 256u) / 32u;
            let dl = half_at(base, 0u) * k_scale(base, sub, 0u);
            let ml = half_at(base, 2u) * k_scale(base, sub, 1u);
            let first = 16u + (sub / 2u) * 32u + p0;
            let shift = 4u * (sub % 2u);
            for (var j = 0u; j < n; j++) {
                let q = (byte_at(base, first + j) >> shift) & 0xfu;
                wv[j] = dl * f32(q) - ml;
            }
        }
        case 11u: {
            let base = (e0 / 256u) * 44u;
            let sub = (e0 % 256u) / 32u;
            let dl = half_at(base, 0u) * k_scale(base, sub, 0u);
            let ml = half_at(base, 2u) * k_scale(base, sub, 1u);
            let first = 48u + (sub / 2u) * 32u + p0;
            let shift = 4u * (sub % 2u);
            for (var j = 0u; j < n; j++) {
                let low = (byte_at(base, first + j) >> shift) & 0xfu;
                let high = (byte_at(base, 16u + p0 + j) >> sub) & 1u;
                wv[j] = dl * f32(low | (high << 4u)) - ml;
            }
        }
        case 12u: {
            let base = (e0 / 256u) * 53u;
            let d = half_at(base, 208u);
            for (var j = 0u; j < n; j++) {
                let v = e0 % 256u + j;
                let g = v / 128u;
                let l = v % 128u;
                let low = (byte_at(base, g * 64u + l % 64u) >> (4u * (l / 64u))) & 0xfu;
                let high = (byte_at(base, 128u + g * 32u + l % 32u) >> (2u * (l / 32u))) & 3u;
                let dl = d * signed_byte(byte_at(base, 192u + v / 16u));
                wv[j] = dl * f32(i32(low | (high << 4u)) - 32);
            }
        }
        case 13u: {
            let base = (e0 / 32u) * 5u;
            let d = half_at(base, 0u);
            for (var j = 0u; j < n; j++) {
                wv[j] = d * iq4_level(nibble(base, 2u, p0 + j));
            }
        }
        case 15u: {
            let b0 = (e0 / 32u) * 17u;
            let d = e8m0_half(raw_byte(b0));
            for (var j = 0u; j < n; j++) {
                wv[j] = d * mxfp4_value(b0, p0 + j);
            }
        }
        case 16u: {
            let base = (e0 / 256u) * 14u;
            let d = half_at(base, 52u);
            for (var j = 0u; j < n; j++) {
                wv[j] = d * tq1_value(base, e0 % 256u + j);
            }
        }
        case 17u: {
            let base = (e0 / 256u) * 17u;
            let d = half_at(base, 64u);
            for (var j = 0u; j < n; j++) {
                wv[j] = d * tq2_value(base, e0 % 256u + j);
            }
        }
        case 14u: {
            let base = (e0 / 256u) * 34u;
            let sub = (e0 % 256u) / 32u;
            let low_sc = (byte_at(base, 4u + sub / 2u) >> (4u * (sub % 2u))) & 0xfu;
            let scales_h = byte_at(base, 2u) | (byte_at(base, 3u) << 8u);
            let high_sc = (scales_h >> (2u * sub)) & 3u;
            let dl = half_at(base, 0u) * f32(i32(low_sc | (high_sc << 4u)) - 32);
            for (var j = 0u; j < n; j++) {
                let pj = p0 + j;
                let b = byte_at(base, 8u + sub * 16u + pj % 16u);
                wv[j] = dl * iq4_level(select(b & 0xfu, b >> 4u, pj >= 16u));
            }
        }
        default: {
            for (var j = 0u; j < n; j++) {
                wv[j] = weight_at(fmt, e0 + j);
            }
        }
    }
}
