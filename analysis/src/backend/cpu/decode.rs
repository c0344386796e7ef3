//! Block decoding on the CPU: ggml blocks to f32 with the vector instructions this CPU has. The
//! AVX2 decoders cover the commonest formats bit for bit as `quant::dequantize` computes them; the
//! packing of the GEMM (`gemm.rs`) calls them as it packs panels.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::quant::{dequantize, GgmlType};
#[cfg(target_arch = "x86_64")]
use crate::quant::{f16_at, k_scale_min};
use crate::simd::{isa, Isa};

/// Decodes `src` into `dst` with the vector instructions this CPU has (the block decoders are
/// written so that the compiler vectorizes them).
pub fn decode(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    // SAFETY: the AVX2 build runs only where `isa()` found AVX2.
    unsafe {
        match isa() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx2 => decode_avx2(ty, src, dst),
            _ => dequantize(ty, src, dst),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn decode_avx2(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    blocks_avx2(ty, src, dst)
}

#[cfg(target_arch = "x86_64")]
/// AVX2 decoders for the commonest formats (Q8_0, Q4_0, Q4_1, Q4_K, Q6_K), bit for bit what `quant::dequantize` computes
/// (the same f32 multiplies and adds, never fused); the rest go to the portable decoders.
///
/// # Safety
/// The CPU has AVX2; `src` holds the blocks of `dst.len()` values.
#[inline(always)]
pub(super) unsafe fn blocks_avx2(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    let n = dst.len() / ty.block_values();
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let bb = ty.block_bytes();
    match ty {
        GgmlType::Q8_0 => {
            for b in 0..n {
                let p = s.add(b * bb);
                let scale = _mm256_set1_ps(f16_at(src, b * bb));
                for part in 0..4 {
                    let q = _mm_loadl_epi64(p.add(2 + part * 8) as *const __m128i);
                    let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                    _mm256_storeu_ps(d.add(b * 32 + part * 8), _mm256_mul_ps(v, scale));
                }
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let low4 = _mm_set1_epi8(0x0f);
            let eight = _mm256_set1_epi32(8);
            for b in 0..n {
                let p = s.add(b * bb);
                let scale = _mm256_set1_ps(f16_at(src, b * bb));
                let (q_at, min) = if ty == GgmlType::Q4_1 {
                    (4, Some(_mm256_set1_ps(f16_at(src, b * bb + 2))))
                } else {
                    (2, None)
                };
                let raw = _mm_loadu_si128(p.add(q_at) as *const __m128i);
                let lo = _mm_and_si128(raw, low4);
                let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), low4);
                for (half, nib) in [lo, hi].into_iter().enumerate() {
                    for part in 0..2 {
                        let bytes = if part == 0 {
                            nib
                        } else {
                            _mm_srli_si128::<8>(nib)
                        };
                        let mut q = _mm256_cvtepu8_epi32(bytes);
                        if min.is_none() {
                            q = _mm256_sub_epi32(q, eight);
                        }
                        let v = _mm256_mul_ps(scale, _mm256_cvtepi32_ps(q));
                        let v = match min {
                            Some(m) => _mm256_add_ps(v, m),
                            None => v,
                        };
                        _mm256_storeu_ps(d.add(b * 32 + half * 16 + part * 8), v);
                    }
                }
            }
        }
        GgmlType::Q4K => {
            let low4 = _mm_set1_epi8(0x0f);
            for b in 0..n {
                let blk = &src[b * bb..(b + 1) * bb];
                let dd = f16_at(blk, 0);
                let dmin = f16_at(blk, 2);
                let (sc, m) = k_scale_min(&blk[4..16]);
                for sub in 0..8 {
                    let dl = _mm256_set1_ps(dd * sc[sub] as f32);
                    let ml = _mm256_set1_ps(dmin * m[sub] as f32);
                    let (g, shift) = (sub / 2, sub % 2);
                    for part in 0..2 {
                        let raw = _mm_loadu_si128(
                            blk.as_ptr().add(16 + g * 32 + part * 16) as *const __m128i
                        );
                        let nib = if shift == 0 {
                            _mm_and_si128(raw, low4)
                        } else {
                            _mm_and_si128(_mm_srli_epi16::<4>(raw), low4)
                        };
                        for eighth in 0..2 {
                            let bytes = if eighth == 0 {
                                nib
                            } else {
                                _mm_srli_si128::<8>(nib)
                            };
                            let q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
                            let v = _mm256_sub_ps(_mm256_mul_ps(dl, q), ml);
                            _mm256_storeu_ps(d.add(b * 256 + sub * 32 + part * 16 + eighth * 8), v);
                        }
                    }
                }
            }
        }
        GgmlType::Q6K => {
            let low4 = _mm_set1_epi8(0x0f);
            let three = _mm_set1_epi8(3);
            let bias = _mm256_set1_epi32(32);
            for b in 0..n {
                let blk = &src[b * bb..(b + 1) * bb];
                let (ql, qh) = (blk.as_ptr(), blk.as_ptr().add(128));
                let dd = f16_at(blk, 208);
                for g in 0..2 {
                    for sub in 0..4 {
                        let shift_low = 4 * (sub / 2);
                        let shift_high = _mm_cvtsi32_si128(2 * sub as i32);
                        for half in 0..2 {
                            let scale = blk[192 + g * 8 + sub * 2 + half] as i8;
                            let dl = _mm256_set1_ps(dd * scale as f32);
                            let k0 = half * 16;
                            let raw = _mm_loadu_si128(
                                ql.add(g * 64 + 32 * (sub % 2) + k0) as *const __m128i
                            );
                            let low = if shift_low == 0 {
                                _mm_and_si128(raw, low4)
                            } else {
                                _mm_and_si128(_mm_srli_epi16::<4>(raw), low4)
                            };
                            let rawh = _mm_loadu_si128(qh.add(g * 32 + k0) as *const __m128i);
                            let high = _mm_and_si128(_mm_srl_epi16(rawh, shift_high), three);
                            let q = _mm_or_si128(low, _mm_slli_epi16::<4>(high));
                            for eighth in 0..2 {
                                let bytes = if eighth == 0 {
                                    q
                                } else {
                                    _mm_srli_si128::<8>(q)
                                };
                                let v = _mm256_cvtepi32_ps(_mm256_sub_epi32(
                                    _mm256_cvtepu8_epi32(bytes),
                                    bias,
                                ));
                                _mm256_storeu_ps(
                                    d.add(b * 256 + g * 128 + sub * 32 + k0 + eighth * 8),
                                    _mm256_mul_ps(dl, v),
                                );
                            }
                        }
                    }
                }
            }
        }
        _ => dequantize(ty, src, dst),
    }
}

#[cfg(test)]
mod decode_tests {
    use super::*;

    #[test]
    fn vector_decoders_are_bit_identical_to_the_portable_ones() {
        // Every byte pattern the decoders care about, from a seeded generator.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut byte = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        };
        for ty in GgmlType::ALL.into_iter().filter(|t| !t.is_dense()) {
            let blocks = 7;
            let mut src: Vec<u8> = (0..blocks * ty.block_bytes()).map(|_| byte()).collect();
            // Keep the f16 scales finite so that the values compare.
            for b in 0..blocks {
                let at = b * ty.block_bytes();
                let scale_at = match ty {
                    GgmlType::Q2K => 80,
                    GgmlType::Q3K => 108,
                    GgmlType::Q6K => 208,
                    _ => 0,
                };
                src[at + scale_at + 1] &= 0x3b;
                if matches!(
                    ty,
                    GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q2K
                ) {
                    let min_at = if ty == GgmlType::Q2K { 82 } else { 2 };
                    src[at + min_at + 1] &= 0x3b;
                }
            }
            let n = blocks * ty.block_values();
            let mut want = vec![0f32; n];
            dequantize(ty, &src, &mut want);
            let mut got = vec![f32::NAN; n];
            decode(ty, &src, &mut got);
            assert_eq!(
                got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{ty:?}"
            );
        }
    }
}
