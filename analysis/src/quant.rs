//! ggml's weight formats and their exact decoders.
//!
//! Every decoder reproduces gguf-py's `dequantize` bit for bit (the same f32 operations in the
//! same order), so a quantized model computes the function transformers computes on the
//! dequantized weights. The CPU backend decodes rows at use; the GPU backend repacks the same
//! blocks and decodes them in WGSL (`shaders/wgsl/quant.wgsl`).

// The block decoders index several arrays with one counter, as the format descriptions do.
#![allow(clippy::needless_range_loop)]

use half::bf16;
use serde::Serialize;

/// Every ggml type id Prism knows: its name, block size in values and bytes per block. Types Prism
/// cannot decode are still listed, so that a file using one is refused by name.
const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
    (42, "Q2_0", 64, 18),
];

/// (values per block, bytes per block) of any known ggml type.
pub fn ggml_block(id: u32) -> Option<(u64, u64)> {
    GGML_TYPES.iter().find(|t| t.0 == id).map(|t| (t.2, t.3))
}

/// The name of a ggml type id ("Q4_K"), or "unknown".
pub fn ggml_type_name(id: u32) -> &'static str {
    GGML_TYPES
        .iter()
        .find(|t| t.0 == id)
        .map(|t| t.1)
        .unwrap_or("unknown")
}

/// The element types Prism decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    IQ4NL,
    IQ4XS,
    /// OCP microscaling FP4: an e8m0 power-of-two scale and 32 e2m1 values (gpt-oss's experts).
    MXFP4,
    /// Ternary: 256 values in {-1, 0, 1} times an f16 scale, five per byte in base 3 (1.69 bpw).
    TQ1_0,
    /// Ternary: 256 values in {-1, 0, 1} times an f16 scale, four per byte (2.06 bpw).
    TQ2_0,
    /// Binary: 128 values, each +d or -d by one bit, an f16 d (1.125 bpw).
    Q1_0,
    /// 64 values in {-1, 0, 1, 2} times an f16 d, four per byte (2.25 bpw).
    Q2_0,
}

impl GgmlType {
    pub const ALL: [GgmlType; 20] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::IQ4NL,
        GgmlType::IQ4XS,
        GgmlType::MXFP4,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::Q1_0,
        GgmlType::Q2_0,
    ];

    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::BF16 => 30,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2K => 10,
            GgmlType::Q3K => 11,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::IQ4NL => 20,
            GgmlType::IQ4XS => 23,
            GgmlType::MXFP4 => 39,
            GgmlType::TQ1_0 => 34,
            GgmlType::TQ2_0 => 35,
            GgmlType::Q1_0 => 41,
            GgmlType::Q2_0 => 42,
        }
    }

    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|t| t.id() == id)
    }

    pub fn name(self) -> &'static str {
        ggml_type_name(self.id())
    }

    pub fn supported_names() -> String {
        GgmlType::ALL.map(|t| t.name()).join(", ")
    }

    /// Values per block.
    #[inline]
    pub fn block_values(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::IQ4NL
            | GgmlType::MXFP4 => 32,
            GgmlType::Q1_0 => 128,
            GgmlType::Q2_0 => 64,
            _ => 256,
        }
    }

    /// Bytes per block.
    #[inline]
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 | GgmlType::IQ4NL => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q2K => 84,
            GgmlType::Q3K => 110,
            GgmlType::Q4K => 144,
            GgmlType::Q5K => 176,
            GgmlType::Q6K => 210,
            GgmlType::IQ4XS => 136,
            GgmlType::MXFP4 => 17,
            GgmlType::TQ1_0 => 54,
            GgmlType::TQ2_0 => 66,
            GgmlType::Q1_0 | GgmlType::Q2_0 => 18,
        }
    }

    pub fn is_dense(self) -> bool {
        matches!(self, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
    }

    /// Bytes of `n` values (`n` a multiple of the block size).
    pub fn bytes_for(self, n: usize) -> usize {
        n / self.block_values() * self.block_bytes()
    }
}

/// IEEE half to f32, exactly, by bit manipulation (inlined into the decoders).
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let exponent = (h >> 10) & 0x1f;
    let mantissa = h & 0x3ff;
    if exponent == 0 {
        // Zero and subnormals: mantissa * 2^-24, exact in f32.
        f32::from_bits((mantissa as f32 * 5.960_464_5e-8).to_bits() | sign)
    } else if exponent == 31 {
        f32::from_bits(sign | 0x7f80_0000 | (mantissa << 13))
    } else {
        f32::from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13))
    }
}

#[inline(always)]
pub fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Decodes `dst.len()` values from `src`, which holds exactly the blocks that cover them.
/// For dense types any length works; for block types `dst.len()` is a multiple of the block.
#[inline(always)]
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len() / ty.block_values() * ty.block_bytes());
    match ty {
        GgmlType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16_to_f32(u16::from_le_bytes([s[0], s[1]]));
            }
        }
        GgmlType::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32();
            }
        }
        GgmlType::Q4_0 => blocks::<18, 32>(src, dst, q4_0),
        GgmlType::Q4_1 => blocks::<20, 32>(src, dst, q4_1),
        GgmlType::Q5_0 => blocks::<22, 32>(src, dst, q5_0),
        GgmlType::Q5_1 => blocks::<24, 32>(src, dst, q5_1),
        GgmlType::Q8_0 => blocks::<34, 32>(src, dst, q8_0),
        GgmlType::Q2K => blocks::<84, 256>(src, dst, q2_k),
        GgmlType::Q3K => blocks::<110, 256>(src, dst, q3_k),
        GgmlType::Q4K => blocks::<144, 256>(src, dst, q4_k),
        GgmlType::Q5K => blocks::<176, 256>(src, dst, q5_k),
        GgmlType::Q6K => blocks::<210, 256>(src, dst, q6_k),
        GgmlType::IQ4NL => blocks::<18, 32>(src, dst, iq4_nl),
        GgmlType::IQ4XS => blocks::<136, 256>(src, dst, iq4_xs),
        GgmlType::MXFP4 => blocks::<17, 32>(src, dst, mxfp4),
        GgmlType::TQ1_0 => blocks::<54, 256>(src, dst, tq1_0),
        GgmlType::TQ2_0 => blocks::<66, 256>(src, dst, tq2_0),
        GgmlType::Q1_0 => blocks::<18, 128>(src, dst, q1_0),
        GgmlType::Q2_0 => blocks::<18, 64>(src, dst, q2_0),
    }
}

/// Applies a block decoder to every block. The blocks are fixed-size arrays, so the decoders
/// index without bounds checks and the compiler vectorizes them.
#[inline(always)]
fn blocks<const BB: usize, const QK: usize>(
    src: &[u8],
    dst: &mut [f32],
    f: fn(&[u8; BB], &mut [f32; QK]),
) {
    for (d, s) in dst.chunks_exact_mut(QK).zip(src.chunks_exact(BB)) {
        if let (Ok(d), Ok(s)) = (<&mut [f32; QK]>::try_from(d), <&[u8; BB]>::try_from(s)) {
            f(s, d);
        }
    }
}

#[inline(always)]
fn q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = d * ((qs[j] & 0xf) as i32 - 8) as f32;
        y[j + 16] = d * ((qs[j] >> 4) as i32 - 8) as f32;
    }
}

#[inline(always)]
fn q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = d * (qs[j] & 0xf) as f32 + m;
        y[j + 16] = d * (qs[j] >> 4) as f32 + m;
    }
}

#[inline(always)]
fn q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let lo = (qs[j] & 0xf) as u32 | ((qh >> j) & 1) << 4;
        let hi = (qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        y[j] = d * (lo as i32 - 16) as f32;
        y[j + 16] = d * (hi as i32 - 16) as f32;
    }
}

#[inline(always)]
fn q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let lo = (qs[j] & 0xf) as u32 | ((qh >> j) & 1) << 4;
        let hi = (qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        y[j] = d * lo as f32 + m;
        y[j + 16] = d * hi as f32 + m;
    }
}

#[inline(always)]
fn q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (v, &q) in y.iter_mut().zip(&b[2..34]) {
        *v = (q as i8) as f32 * d;
    }
}

/// Q2_K: scales[16], qs[64], d, dmin. Value 128g + 32s + j is bits 2s..2s+1 of qs[32g + j];
/// sub-block v/16 has scale d*(sc & 15) and offset dmin*(sc >> 4).
#[inline(always)]
fn q2_k(b: &[u8; 84], y: &mut [f32; 256]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    for g in 0..2 {
        for s in 0..4 {
            for half in 0..2 {
                let sc = scales[g * 8 + s * 2 + half];
                let dl = d * (sc & 0xf) as f32;
                let ml = dmin * (sc >> 4) as f32;
                let q = &qs[g * 32 + half * 16..g * 32 + half * 16 + 16];
                let out = &mut y[g * 128 + s * 32 + half * 16..][..16];
                for j in 0..16 {
                    out[j] = dl * ((q[j] >> (2 * s)) & 3) as f32 - ml;
                }
            }
        }
    }
}

/// Q3_K: hmask[32], qs[64], scales[12] (16 six-bit values, offset 32), d. The low two bits are
/// as in Q2_K; bit v/32 of hmask[v % 32] unset subtracts 4.
#[inline(always)]
fn q3_k(b: &[u8; 110], y: &mut [f32; 256]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let sc = &b[96..108];
    let d = f16_at(b, 108);
    let mut scales = [0f32; 16];
    for (s, out) in scales.iter_mut().enumerate() {
        let low = (sc[s % 8] >> (4 * (s / 8))) & 0xf;
        let high = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
        *out = d * (((low | high << 4) as i8) - 32) as f32;
    }
    for g in 0..2 {
        for s in 0..4 {
            let bit = g * 4 + s;
            for half in 0..2 {
                let dl = scales[g * 8 + s * 2 + half];
                let at = g * 32 + half * 16;
                let out = &mut y[g * 128 + s * 32 + half * 16..][..16];
                for j in 0..16 {
                    let low = ((qs[at + j] >> (2 * s)) & 3) as i8;
                    let unset = (((hmask[half * 16 + j] >> bit) & 1) ^ 1) as i8;
                    out[j] = dl * (low - (unset << 2)) as f32;
                }
            }
        }
    }
}

/// The eight 6-bit (scale, min) pairs of Q4_K and Q5_K.
pub fn k_scale_min(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0xf) | ((s[j] >> 2) & 0x30);
        m[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, m)
}

/// Q4_K: d, dmin, scales[12], qs[128]; sub-block 2g+s uses nibble s of qs[32g..32g+32].
#[inline(always)]
fn q4_k(b: &[u8; 144], y: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, m) = k_scale_min(&b[4..16]);
    let qs = &b[16..144];
    for sub in 0..8 {
        let dl = d * sc[sub] as f32;
        let ml = dmin * m[sub] as f32;
        let (g, s) = (sub / 2, sub % 2);
        for j in 0..32 {
            let q = (qs[g * 32 + j] >> (4 * s)) & 0xf;
            y[sub * 32 + j] = dl * q as f32 - ml;
        }
    }
}

/// Q5_K: as Q4_K plus qh[32], bit `sub` of qh[j] is the fifth bit.
#[inline(always)]
fn q5_k(b: &[u8; 176], y: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, m) = k_scale_min(&b[4..16]);
    let qh = &b[16..48];
    let qs = &b[48..176];
    for sub in 0..8 {
        let dl = d * sc[sub] as f32;
        let ml = dmin * m[sub] as f32;
        let (g, s) = (sub / 2, sub % 2);
        for j in 0..32 {
            let q = ((qs[g * 32 + j] >> (4 * s)) & 0xf) | (((qh[j] >> sub) & 1) << 4);
            y[sub * 32 + j] = dl * q as f32 - ml;
        }
    }
}

/// Q6_K: ql[128], qh[64], scales[16] (i8), d. Value 128g + 32s + j: low nibble (s < 2) or high
/// nibble (s >= 2) of ql[64g + 32(s % 2) + j], and bits 2s..2s+1 of qh[32g + j] on top.
#[inline(always)]
fn q6_k(b: &[u8; 210], y: &mut [f32; 256]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let scales = &b[192..208];
    let d = f16_at(b, 208);
    for g in 0..2 {
        for s in 0..4 {
            let low = &ql[g * 64 + 32 * (s % 2)..][..32];
            let high = &qh[g * 32..][..32];
            let shift = 4 * (s / 2);
            for half in 0..2 {
                let dl = d * (scales[g * 8 + s * 2 + half] as i8) as f32;
                let out = &mut y[g * 128 + s * 32 + half * 16..][..16];
                for j in 0..16 {
                    let k = half * 16 + j;
                    let q = ((low[k] >> shift) & 0xf) | (((high[k] >> (2 * s)) & 3) << 4);
                    out[j] = dl * ((q as i8) - 32) as f32;
                }
            }
        }
    }
}

/// The 16 non-linear levels of IQ4_NL and IQ4_XS.
pub const IQ4_LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

#[inline(always)]
fn iq4_nl(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = d * IQ4_LEVELS[(qs[j] & 0xf) as usize] as f32;
        y[j + 16] = d * IQ4_LEVELS[(qs[j] >> 4) as usize] as f32;
    }
}

/// IQ4_XS: d, scales_h (u16), scales_l[4], qs[128]; eight sub-blocks of 32 with 6-bit scales.
#[inline(always)]
fn iq4_xs(b: &[u8; 136], y: &mut [f32; 256]) {
    let d = f16_at(b, 0);
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let scales_l = &b[4..8];
    let qs = &b[8..136];
    for sub in 0..8 {
        let low = (scales_l[sub / 2] >> (4 * (sub % 2))) & 0xf;
        let high = ((scales_h >> (2 * sub)) & 3) as u8;
        let dl = d * (((low | high << 4) as i8) - 32) as f32;
        let q = &qs[sub * 16..sub * 16 + 16];
        for j in 0..16 {
            y[sub * 32 + j] = dl * IQ4_LEVELS[(q[j] & 0xf) as usize] as f32;
            y[sub * 32 + 16 + j] = dl * IQ4_LEVELS[(q[j] >> 4) as usize] as f32;
        }
    }
}

/// The 16 e2m1 values of MXFP4, doubled (the scale is halved to match).
pub const MXFP4_LEVELS: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// An e8m0 exponent as the f32 2^(e - 128) (half the scale, as ggml stores the levels doubled),
/// subnormal for e < 2.
#[inline(always)]
pub fn e8m0_half(e: u8) -> f32 {
    let e = e as u32;
    f32::from_bits(if e < 2 {
        0x0020_0000 << e
    } else {
        (e - 1) << 23
    })
}

/// MXFP4: e (u8), qs[16]; byte j holds element j low and j + 16 high.
#[inline(always)]
fn mxfp4(b: &[u8; 17], y: &mut [f32; 32]) {
    let d = e8m0_half(b[0]);
    let qs = &b[1..17];
    for j in 0..16 {
        y[j] = d * MXFP4_LEVELS[(qs[j] & 0xf) as usize] as f32;
        y[j + 16] = d * MXFP4_LEVELS[(qs[j] >> 4) as usize] as f32;
    }
}

/// A TQ1_0 digit: the byte times 3^k (wrapping in u8, as ggml multiplies), then `(b * 3) >> 8`.
#[inline(always)]
fn ternary_digit(byte: u8, pow3: u8) -> f32 {
    let b = byte.wrapping_mul(pow3) as u16;
    (((b * 3) >> 8) as i8 - 1) as f32
}

const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// TQ1_0: qs[48] (32 bytes of five digits for 160 values, 16 for 80), qh[4] (four digits each for
/// the last 16 values), f16 d.
#[inline(always)]
fn tq1_0(b: &[u8; 54], y: &mut [f32; 256]) {
    let d = f16_at(b, 52);
    for m in 0..5 {
        for l in 0..32 {
            y[m * 32 + l] = d * ternary_digit(b[l], POW3[m]);
        }
        for l in 0..16 {
            y[160 + m * 16 + l] = d * ternary_digit(b[32 + l], POW3[m]);
        }
    }
    for m in 0..4 {
        for l in 0..4 {
            y[240 + m * 4 + l] = d * ternary_digit(b[48 + l], POW3[m]);
        }
    }
}

/// TQ2_0: qs[64] (two bits per value: element c*128 + s*32 + l at bits 2s of byte c*32 + l), f16 d.
#[inline(always)]
fn tq2_0(b: &[u8; 66], y: &mut [f32; 256]) {
    let d = f16_at(b, 64);
    for c in 0..2 {
        for s in 0..4 {
            for l in 0..32 {
                let q = (b[c * 32 + l] >> (2 * s)) & 3;
                y[c * 128 + s * 32 + l] = d * (q as i8 - 1) as f32;
            }
        }
    }
}

/// Q1_0: f16 d, then qs[16]: value j is +d where bit j % 8 of byte j / 8 is set, else -d.
#[inline(always)]
fn q1_0(b: &[u8; 18], y: &mut [f32; 128]) {
    let d = f16_at(b, 0);
    for (j, v) in y.iter_mut().enumerate() {
        *v = if (b[2 + j / 8] >> (j % 8)) & 1 == 1 {
            d
        } else {
            -d
        };
    }
}

/// Q2_0: f16 d, then qs[16]: value j is (q - 1) d with q the two bits 2 (j % 4) of byte j / 4.
#[inline(always)]
fn q2_0(b: &[u8; 18], y: &mut [f32; 64]) {
    let d = f16_at(b, 0);
    for (j, v) in y.iter_mut().enumerate() {
        let q = (b[2 + j / 4] >> (2 * (j % 4))) & 3;
        *v = (q as i32 - 1) as f32 * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_type_has_a_block_size() {
        for t in GgmlType::ALL {
            let (values, bytes) = ggml_block(t.id()).unwrap();
            assert_eq!(
                (t.block_values(), t.block_bytes()),
                (values as usize, bytes as usize)
            );
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        assert_eq!(ggml_type_name(16), "IQ2_XXS");
        assert_eq!(GgmlType::from_id(16), None);
    }

    #[test]
    fn f16_bits_convert_exactly() {
        for bits in 0..=u16::MAX {
            let want = half::f16::from_bits(bits).to_f32();
            let got = f16_to_f32(bits);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#06x}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn q8_0_block() {
        let mut b = vec![0u8; 34];
        b[0..2].copy_from_slice(&half::f16::from_f32(0.5).to_bits().to_le_bytes());
        b[2] = 4;
        b[3] = (-6i8) as u8;
        let mut y = [0f32; 32];
        dequantize(GgmlType::Q8_0, &b, &mut y);
        assert_eq!((y[0], y[1], y[2]), (2.0, -3.0, 0.0));
    }
}
