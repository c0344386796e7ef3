//! Prism's CPU matrix multiply: C[m, n] (+)= A[m, k] · B[n, k]^T, where B is a weight matrix in
//! its stored format (decoded panel by panel, never expanded whole) or a strided f32 view
//! (attention's keys and values).
//!
//! The loop nest is BLIS's: for each k-block, the rows of A are packed once per task; each
//! NR-wide panel of B is decoded straight into a packed `[kc][NR]` tile that stays in L1 while a
//! register-tiled microkernel sweeps every MR-row block of A over it. Each weight is therefore
//! decoded once per pass, whatever the number of tokens. Microkernels exist for AVX-512 (8 x 32),
//! AVX2 + FMA (6 x 16) and plain Rust (4 x 8); `PRISM_CPU_ISA=avx2|scalar` caps the choice so an
//! AVX-512 machine can measure its AVX2 path. For one to four rows of A (token-by-token
//! generation) a row-streaming GEMV is used instead.

use std::cell::RefCell;
use std::sync::OnceLock;

use super::pool::Pool;
use crate::quant::{dequantize, GgmlType};
use crate::weights::Weight;

/// The instruction set the kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

/// The best instruction set this CPU has, capped by `PRISM_CPU_ISA` (avx512, avx2, scalar).
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let available = detect();
        let cap = match std::env::var("PRISM_CPU_ISA").ok().as_deref() {
            Some("scalar") => Isa::Scalar,
            Some("avx2") => Isa::Avx2,
            _ => Isa::Avx512,
        };
        available.min(cap)
    })
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

/// A row-major f32 matrix `[rows, cols]` with `stride` floats between rows.
#[derive(Clone, Copy)]
pub struct MatA<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

/// The B operand: `n` rows of `k` values, decodable into packed panels.
pub trait PanelSource: Sync {
    fn n(&self) -> usize;
    fn k(&self) -> usize;
    /// k-blocks start and end on multiples of this (the weight's block size).
    fn k_step(&self) -> usize;
    /// Rows `n0..n0+nr`, columns `k0..k0+kc`, into `dst[kk * width + j]`, zero for
    /// `nr <= j < width`.
    #[allow(clippy::too_many_arguments)]
    fn pack(
        &self,
        n0: usize,
        nr: usize,
        k0: usize,
        kc: usize,
        width: usize,
        dst: &mut [f32],
        row: &mut [f32],
    );
    /// Row `r` (all k values) into `out`.
    fn row(&self, r: usize, out: &mut [f32]);
}

/// A weight matrix `[out, in]` as the B operand.
pub struct WeightPanel<'a>(pub &'a Weight);

impl PanelSource for WeightPanel<'_> {
    fn n(&self) -> usize {
        self.0.rows()
    }

    fn k(&self) -> usize {
        self.0.cols()
    }

    fn k_step(&self) -> usize {
        self.0.dtype.block_values()
    }

    #[inline(always)]
    fn pack(
        &self,
        n0: usize,
        nr: usize,
        k0: usize,
        kc: usize,
        width: usize,
        dst: &mut [f32],
        row: &mut [f32],
    ) {
        let w = self.0;
        let (rs, cs) = w.strides();
        if cs != 1 && w.dtype == GgmlType::F32 && rs == 1 {
            // A transposed dense view (GPT-2 Conv1D): the NR rows of one column are contiguous.
            for kk in 0..kc {
                let d = &mut dst[kk * width..kk * width + width];
                for (j, v) in d.iter_mut().enumerate() {
                    *v = if j < nr {
                        w.dense_at(n0 + j, k0 + kk)
                    } else {
                        0.0
                    };
                }
            }
            return;
        }
        for j in 0..width {
            if j < nr {
                let r = &mut row[..kc];
                w.decode_row(n0 + j, k0, r);
                for (kk, &v) in r.iter().enumerate() {
                    dst[kk * width + j] = v;
                }
            } else {
                for kk in 0..kc {
                    dst[kk * width + j] = 0.0;
                }
            }
        }
    }

    #[inline(always)]
    fn row(&self, r: usize, out: &mut [f32]) {
        self.0.decode_row(r, 0, out);
    }
}

/// An f32 view as the B operand: element (r, c) at `data[r * row_stride + c * col_stride]`.
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub n: usize,
    pub k: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl PanelSource for Strided<'_> {
    fn n(&self) -> usize {
        self.n
    }

    fn k(&self) -> usize {
        self.k
    }

    fn k_step(&self) -> usize {
        1
    }

    #[inline(always)]
    fn pack(
        &self,
        n0: usize,
        nr: usize,
        k0: usize,
        kc: usize,
        width: usize,
        dst: &mut [f32],
        _row: &mut [f32],
    ) {
        for kk in 0..kc {
            let base = (k0 + kk) * self.col_stride;
            let d = &mut dst[kk * width..kk * width + width];
            for (j, v) in d.iter_mut().enumerate() {
                *v = if j < nr {
                    self.data[base + (n0 + j) * self.row_stride]
                } else {
                    0.0
                };
            }
        }
    }

    #[inline(always)]
    fn row(&self, r: usize, out: &mut [f32]) {
        for (c, o) in out.iter_mut().enumerate() {
            *o = self.data[r * self.row_stride + c * self.col_stride];
        }
    }
}

/// A writable C matrix shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
pub struct MatC {
    ptr: *mut f32,
    len: usize,
    pub stride: usize,
}

// SAFETY: tasks write disjoint column ranges of C (see `gemm`).
unsafe impl Send for MatC {}
unsafe impl Sync for MatC {}

impl MatC {
    pub fn new(data: &mut [f32], stride: usize) -> MatC {
        MatC {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            stride,
        }
    }

    /// Elements `s..e`.
    ///
    /// # Safety
    /// The caller is the only one touching that range while the slice lives.
    pub unsafe fn slice_mut<'x>(&self, s: usize, e: usize) -> &'x mut [f32] {
        debug_assert!(s <= e && e <= self.len);
        std::slice::from_raw_parts_mut(self.ptr.add(s), e - s)
    }

    /// The first `width` elements of row `r`.
    ///
    /// # Safety
    /// As [`MatC::slice_mut`].
    pub unsafe fn row_mut<'x>(&self, r: usize, width: usize) -> &'x mut [f32] {
        self.slice_mut(r * self.stride, r * self.stride + width)
    }

    /// The same matrix starting `off` elements further.
    ///
    /// # Safety
    /// `off` is within the matrix, and the caller writes only what it owns.
    pub unsafe fn offset(&self, off: usize) -> MatC {
        debug_assert!(off <= self.len);
        MatC {
            ptr: self.ptr.add(off),
            len: self.len - off,
            stride: self.stride,
        }
    }
}

const KC: usize = 256;
const MC: usize = 256;
/// Rows of A up to which the GEMV path is used.
const GEMV_ROWS: usize = 4;

thread_local! {
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// C[m, n] (+)= A[m, k] · B^T, split over the pool by columns of C.
pub fn gemm<S: PanelSource>(a: MatA<'_>, b: &S, c: MatC, accumulate: bool, pool: Option<&Pool>) {
    let (m, n) = (a.rows, b.n());
    if m == 0 || n == 0 {
        return;
    }
    debug_assert_eq!(a.cols, b.k());
    debug_assert!((m - 1) * c.stride + n <= c.len);
    let isa = isa();
    let nr = match isa {
        Isa::Avx512 => 32,
        Isa::Avx2 => 16,
        Isa::Scalar => 8,
    };
    // Column chunks: enough for load balance, each a whole number of panels.
    let threads = pool.map(|p| p.threads()).unwrap_or(1);
    let work = m.max(1) * a.cols * n;
    let want = if threads > 1 && work > 1 << 16 {
        threads * 4
    } else {
        1
    };
    let chunk = n.div_ceil(want).div_ceil(nr).max(1) * nr;
    let tasks = n.div_ceil(chunk);
    let task = |t: usize| {
        let n0 = t * chunk;
        let n1 = (n0 + chunk).min(n);
        // SAFETY: the kernels only run on CPUs that have their instruction set (`isa()`), and
        // each task writes only columns n0..n1 of C.
        unsafe {
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => columns_avx512(a, b, c, n0, n1, accumulate),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => columns_avx2(a, b, c, n0, n1, accumulate),
                _ => columns_scalar(a, b, c, n0, n1, accumulate),
            }
        }
    };
    match pool {
        Some(p) if tasks > 1 => p.run(tasks, &task),
        _ => (0..tasks).for_each(task),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn columns_avx512<S: PanelSource>(
    a: MatA<'_>,
    b: &S,
    c: MatC,
    n0: usize,
    n1: usize,
    acc: bool,
) {
    columns::<x86::Avx512, S>(a, b, c, n0, n1, acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn columns_avx2<S: PanelSource>(
    a: MatA<'_>,
    b: &S,
    c: MatC,
    n0: usize,
    n1: usize,
    acc: bool,
) {
    columns::<x86::Avx2, S>(a, b, c, n0, n1, acc)
}

unsafe fn columns_scalar<S: PanelSource>(
    a: MatA<'_>,
    b: &S,
    c: MatC,
    n0: usize,
    n1: usize,
    acc: bool,
) {
    columns::<Portable, S>(a, b, c, n0, n1, acc)
}

/// A register-tiled microkernel: C[mr, nr] (+)= A-panel `[kc][MR]` · B-panel `[kc][NR]`.
pub(crate) trait Kernel {
    const MR: usize;
    const NR: usize;
    /// # Safety
    /// `a` holds `kc * MR` floats, `b` `kc * NR`, and C rows `0..mr`, columns `0..nr` (stride
    /// `ldc`) are writable; the CPU has the kernel's instruction set.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        acc: bool,
    );
    /// sum(x[i] * y[i]).
    unsafe fn dot(x: &[f32], y: &[f32]) -> f32;
}

/// Columns `n0..n1` of C.
#[inline(always)]
unsafe fn columns<K: Kernel, S: PanelSource>(
    a: MatA<'_>,
    b: &S,
    c: MatC,
    n0: usize,
    n1: usize,
    acc: bool,
) {
    let (m, k) = (a.rows, a.cols);
    if m <= GEMV_ROWS {
        return gemv::<K, S>(a, b, c, n0, n1, acc);
    }
    let step = b.k_step().max(1);
    let kc_max = (KC / step).max(1) * step;
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        let (apack, bpack, row) = &mut *scratch;
        let mc_max = MC.min(m).div_ceil(K::MR) * K::MR;
        apack.resize(mc_max * kc_max, 0.0);
        bpack.resize(kc_max * K::NR, 0.0);
        row.resize(kc_max.max(k.min(kc_max)), 0.0);
        let mut k0 = 0;
        while k0 < k {
            let kc = kc_max.min(k - k0);
            let first = k0 == 0;
            let mut m0 = 0;
            while m0 < m {
                let mc = MC.min(m - m0);
                pack_a::<K>(a, m0, mc, k0, kc, apack);
                let mut j0 = n0;
                while j0 < n1 {
                    let nr = K::NR.min(n1 - j0);
                    b.pack(j0, nr, k0, kc, K::NR, bpack, row);
                    for mb in 0..mc.div_ceil(K::MR) {
                        let mr = K::MR.min(mc - mb * K::MR);
                        let cp = c.ptr.add((m0 + mb * K::MR) * c.stride + j0);
                        K::run(
                            kc,
                            apack.as_ptr().add(mb * kc * K::MR),
                            bpack.as_ptr(),
                            cp,
                            c.stride,
                            mr,
                            nr,
                            acc || !first,
                        );
                    }
                    j0 += K::NR;
                }
                m0 += MC;
            }
            k0 += kc;
        }
    });
}

/// Rows `m0..m0+mc`, columns `k0..k0+kc` of A as MR-row panels `[kc][MR]`, zero-padded.
#[inline(always)]
fn pack_a<K: Kernel>(a: MatA<'_>, m0: usize, mc: usize, k0: usize, kc: usize, out: &mut [f32]) {
    for mb in 0..mc.div_ceil(K::MR) {
        let panel = &mut out[mb * kc * K::MR..(mb + 1) * kc * K::MR];
        for i in 0..K::MR {
            let r = mb * K::MR + i;
            if r < mc {
                let src = &a.data[(m0 + r) * a.stride + k0..][..kc];
                for (p, &v) in src.iter().enumerate() {
                    panel[p * K::MR + i] = v;
                }
            } else {
                for p in 0..kc {
                    panel[p * K::MR + i] = 0.0;
                }
            }
        }
    }
}

/// Few rows of A: each row of B is decoded once into L1 and dotted with every row of A.
#[inline(always)]
unsafe fn gemv<K: Kernel, S: PanelSource>(
    a: MatA<'_>,
    b: &S,
    c: MatC,
    n0: usize,
    n1: usize,
    acc: bool,
) {
    let k = a.cols;
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        let row = &mut scratch.2;
        row.resize(k.max(row.len()), 0.0);
        let row = &mut row[..k];
        for j in n0..n1 {
            b.row(j, row);
            for i in 0..a.rows {
                let x = &a.data[i * a.stride..i * a.stride + k];
                let v = K::dot(x, row);
                let cp = c.ptr.add(i * c.stride + j);
                *cp = if acc { *cp + v } else { v };
            }
        }
    });
}

/// Plain Rust: a 4 x 8 tile (vectorized by the compiler where it can).
struct Portable;

impl Kernel for Portable {
    const MR: usize = 4;
    const NR: usize = 8;

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        acc: bool,
    ) {
        let mut t = [0f32; 32];
        for p in 0..kc {
            let bp = std::slice::from_raw_parts(b.add(p * 8), 8);
            let ap = std::slice::from_raw_parts(a.add(p * 4), 4);
            for i in 0..4 {
                for j in 0..8 {
                    t[i * 8 + j] += ap[i] * bp[j];
                }
            }
        }
        store_tile(&t, 8, c, ldc, mr, nr, acc);
    }

    #[inline(always)]
    unsafe fn dot(x: &[f32], y: &[f32]) -> f32 {
        let mut lanes = [0f32; 8];
        let chunks = x.len() / 8;
        for ch in 0..chunks {
            for l in 0..8 {
                lanes[l] += x[ch * 8 + l] * y[ch * 8 + l];
            }
        }
        let mut s: f32 = lanes.iter().sum();
        for i in chunks * 8..x.len() {
            s += x[i] * y[i];
        }
        s
    }
}

/// Writes (or adds) the valid part of a tile `[MR][width]` into C.
#[inline(always)]
unsafe fn store_tile(
    t: &[f32],
    width: usize,
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    acc: bool,
) {
    for i in 0..mr {
        for j in 0..nr {
            let cp = c.add(i * ldc + j);
            let v = t[i * width + j];
            *cp = if acc { *cp + v } else { v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{store_tile, Kernel};

    /// AVX2 + FMA: a 6 x 16 tile in twelve ymm accumulators.
    pub struct Avx2;

    macro_rules! avx2_rows {
        ($kc:ident, $a:ident, $b:ident; $($acc0:ident $acc1:ident $i:expr),*) => {{
            $(let mut $acc0 = _mm256_setzero_ps(); let mut $acc1 = _mm256_setzero_ps();)*
            let mut ap = $a;
            let mut bp = $b;
            for _ in 0..$kc {
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                $(
                    let x = _mm256_broadcast_ss(&*ap.add($i));
                    $acc0 = _mm256_fmadd_ps(x, b0, $acc0);
                    $acc1 = _mm256_fmadd_ps(x, b1, $acc1);
                )*
                ap = ap.add(6);
                bp = bp.add(16);
            }
            [$([$acc0, $acc1]),*]
        }};
    }

    impl Kernel for Avx2 {
        const MR: usize = 6;
        const NR: usize = 16;

        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn run(
            kc: usize,
            a: *const f32,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            mr: usize,
            nr: usize,
            acc: bool,
        ) {
            let rows = avx2_rows!(kc, a, b; c00 c01 0, c10 c11 1, c20 c21 2, c30 c31 3, c40 c41 4, c50 c51 5);
            if mr == 6 && nr == 16 {
                for (i, [v0, v1]) in rows.into_iter().enumerate() {
                    let cp = c.add(i * ldc);
                    let (mut v0, mut v1) = (v0, v1);
                    if acc {
                        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(cp));
                        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(cp.add(8)));
                    }
                    _mm256_storeu_ps(cp, v0);
                    _mm256_storeu_ps(cp.add(8), v1);
                }
            } else {
                let mut t = [0f32; 96];
                for (i, [v0, v1]) in rows.into_iter().enumerate() {
                    _mm256_storeu_ps(t.as_mut_ptr().add(i * 16), v0);
                    _mm256_storeu_ps(t.as_mut_ptr().add(i * 16 + 8), v1);
                }
                store_tile(&t, 16, c, ldc, mr, nr, acc);
            }
        }

        #[inline(always)]
        unsafe fn dot(x: &[f32], y: &[f32]) -> f32 {
            let n = x.len().min(y.len());
            let (xp, yp) = (x.as_ptr(), y.as_ptr());
            let mut s0 = _mm256_setzero_ps();
            let mut s1 = _mm256_setzero_ps();
            let mut s2 = _mm256_setzero_ps();
            let mut s3 = _mm256_setzero_ps();
            let mut i = 0;
            while i + 32 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(yp.add(i)), s0);
                s1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(xp.add(i + 8)),
                    _mm256_loadu_ps(yp.add(i + 8)),
                    s1,
                );
                s2 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(xp.add(i + 16)),
                    _mm256_loadu_ps(yp.add(i + 16)),
                    s2,
                );
                s3 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(xp.add(i + 24)),
                    _mm256_loadu_ps(yp.add(i + 24)),
                    s3,
                );
                i += 32;
            }
            while i + 8 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(yp.add(i)), s0);
                i += 8;
            }
            let s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), s);
            let mut total: f32 = lanes.iter().sum();
            while i < n {
                total += x[i] * y[i];
                i += 1;
            }
            total
        }
    }

    /// AVX-512: an 8 x 32 tile in sixteen zmm accumulators.
    pub struct Avx512;

    macro_rules! avx512_rows {
        ($kc:ident, $a:ident, $b:ident; $($acc0:ident $acc1:ident $i:expr),*) => {{
            $(let mut $acc0 = _mm512_setzero_ps(); let mut $acc1 = _mm512_setzero_ps();)*
            let mut ap = $a;
            let mut bp = $b;
            for _ in 0..$kc {
                let b0 = _mm512_loadu_ps(bp);
                let b1 = _mm512_loadu_ps(bp.add(16));
                $(
                    let x = _mm512_set1_ps(*ap.add($i));
                    $acc0 = _mm512_fmadd_ps(x, b0, $acc0);
                    $acc1 = _mm512_fmadd_ps(x, b1, $acc1);
                )*
                ap = ap.add(8);
                bp = bp.add(32);
            }
            [$([$acc0, $acc1]),*]
        }};
    }

    impl Kernel for Avx512 {
        const MR: usize = 8;
        const NR: usize = 32;

        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn run(
            kc: usize,
            a: *const f32,
            b: *const f32,
            c: *mut f32,
            ldc: usize,
            mr: usize,
            nr: usize,
            acc: bool,
        ) {
            let rows = avx512_rows!(kc, a, b; c00 c01 0, c10 c11 1, c20 c21 2, c30 c31 3, c40 c41 4, c50 c51 5, c60 c61 6, c70 c71 7);
            if mr == 8 && nr == 32 {
                for (i, [v0, v1]) in rows.into_iter().enumerate() {
                    let cp = c.add(i * ldc);
                    let (mut v0, mut v1) = (v0, v1);
                    if acc {
                        v0 = _mm512_add_ps(v0, _mm512_loadu_ps(cp));
                        v1 = _mm512_add_ps(v1, _mm512_loadu_ps(cp.add(16)));
                    }
                    _mm512_storeu_ps(cp, v0);
                    _mm512_storeu_ps(cp.add(16), v1);
                }
            } else {
                let mut t = [0f32; 256];
                for (i, [v0, v1]) in rows.into_iter().enumerate() {
                    _mm512_storeu_ps(t.as_mut_ptr().add(i * 32), v0);
                    _mm512_storeu_ps(t.as_mut_ptr().add(i * 32 + 16), v1);
                }
                store_tile(&t, 32, c, ldc, mr, nr, acc);
            }
        }

        #[inline(always)]
        unsafe fn dot(x: &[f32], y: &[f32]) -> f32 {
            let n = x.len().min(y.len());
            let (xp, yp) = (x.as_ptr(), y.as_ptr());
            let mut s0 = _mm512_setzero_ps();
            let mut s1 = _mm512_setzero_ps();
            let mut i = 0;
            while i + 32 <= n {
                s0 = _mm512_fmadd_ps(_mm512_loadu_ps(xp.add(i)), _mm512_loadu_ps(yp.add(i)), s0);
                s1 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(xp.add(i + 16)),
                    _mm512_loadu_ps(yp.add(i + 16)),
                    s1,
                );
                i += 32;
            }
            while i + 16 <= n {
                s0 = _mm512_fmadd_ps(_mm512_loadu_ps(xp.add(i)), _mm512_loadu_ps(yp.add(i)), s0);
                i += 16;
            }
            let mut total = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
            while i < n {
                total += x[i] * y[i];
                i += 1;
            }
            total
        }
    }
}

/// A dot product with the best kernel this CPU has.
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    // SAFETY: each kernel runs only where `isa()` found its instruction set.
    unsafe {
        match isa() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => dot_avx512(x, y),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => dot_avx2(x, y),
            _ => Portable::dot(x, y),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn dot_avx512(x: &[f32], y: &[f32]) -> f32 {
    x86::Avx512::dot(x, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(x: &[f32], y: &[f32]) -> f32 {
    x86::Avx2::dot(x, y)
}

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
    dequantize(ty, src, dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| a[i * k + p] as f64 * b[j * k + p] as f64)
                    .sum::<f64>() as f32;
            }
        }
        c
    }

    #[test]
    fn ragged_sizes_match_a_plain_loop() {
        let pool = Pool::global();
        for &(m, n, k) in &[
            (1, 7, 5),
            (3, 33, 70),
            (7, 17, 300),
            (13, 65, 513),
            (40, 129, 260),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let b: Vec<f32> = (0..n * k)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
                .collect();
            let want = reference(&a, &b, m, n, k);
            let mut c = vec![f32::NAN; m * n];
            gemm(
                MatA {
                    data: &a,
                    rows: m,
                    cols: k,
                    stride: k,
                },
                &Strided {
                    data: &b,
                    n,
                    k,
                    row_stride: k,
                    col_stride: 1,
                },
                MatC::new(&mut c, n),
                false,
                Some(pool),
            );
            for (x, y) in c.iter().zip(&want) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                    "{m}x{n}x{k}: {x} vs {y}"
                );
            }
        }
    }
}
