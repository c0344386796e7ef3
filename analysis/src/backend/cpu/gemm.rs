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

use super::pool::Pool;
use crate::quant::{dequantize, GgmlType};
use crate::weights::Weight;

pub use crate::simd::{detect, isa, Isa};

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
    /// Rows `n0..n0+nr`, columns `k0..k0+kc`, into `dst[kk * K::NR + j]`, zero for
    /// `nr <= j < K::NR`; `tmp` holds at least `8 * kc` floats.
    fn pack<K: Kernel>(
        &self,
        n0: usize,
        nr: usize,
        k0: usize,
        kc: usize,
        dst: &mut [f32],
        tmp: &mut [f32],
    );
    /// Row `r` (all k values) into `out`.
    fn row<K: Kernel>(&self, r: usize, out: &mut [f32]);
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
    fn pack<K: Kernel>(
        &self,
        n0: usize,
        nr: usize,
        k0: usize,
        kc: usize,
        dst: &mut [f32],
        tmp: &mut [f32],
    ) {
        let w = self.0;
        let width = K::NR;
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
        // Eight rows at a time: decoded row by row, then transposed eight by eight.
        let mut j = 0;
        while j < width {
            let rows = 8.min(nr.saturating_sub(j));
            let block = &mut tmp[..8 * kc];
            let contiguous = w.is_contiguous();
            let (b0, b1) = (w.dtype.bytes_for(k0), w.dtype.bytes_for(k0 + kc));
            for r in 0..8 {
                let out = &mut block[r * kc..(r + 1) * kc];
                if r >= rows {
                    out.iter_mut().for_each(|x| *x = 0.0);
                } else if contiguous {
                    // SAFETY: the kernel's decoder runs where its instruction set exists.
                    unsafe { K::decode(w.dtype, &w.row_bytes(n0 + j + r, 1)[b0..b1], out) };
                } else {
                    w.decode_row(n0 + j + r, k0, out);
                }
            }
            // SAFETY: `block` holds 8 rows of kc, and dst columns j..j+8 of kc rows exist.
            unsafe { K::transpose8(block.as_ptr(), kc, dst.as_mut_ptr().add(j), width) };
            j += 8;
        }
    }

    #[inline(always)]
    fn row<K: Kernel>(&self, r: usize, out: &mut [f32]) {
        if self.0.is_contiguous() {
            // SAFETY: the kernel's decoder runs where its instruction set exists.
            unsafe { K::decode(self.0.dtype, self.0.row_bytes(r, 1), out) }
        } else {
            self.0.decode_row(r, 0, out);
        }
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
    fn pack<K: Kernel>(
        &self,
        n0: usize,
        nr: usize,
        k0: usize,
        kc: usize,
        dst: &mut [f32],
        tmp: &mut [f32],
    ) {
        let width = K::NR;
        if self.row_stride == 1 && nr == width {
            // Columns of the panel are contiguous (attention's values): plain copies.
            for kk in 0..kc {
                let base = (k0 + kk) * self.col_stride + n0;
                dst[kk * width..kk * width + width].copy_from_slice(&self.data[base..base + width]);
            }
            return;
        }
        if self.col_stride == 1 {
            // Rows are contiguous (attention's keys): copied eight at a time, then transposed.
            let mut j = 0;
            while j < width {
                let block = &mut tmp[..8 * kc];
                for r in 0..8 {
                    let out = &mut block[r * kc..(r + 1) * kc];
                    if j + r < nr {
                        let base = (n0 + j + r) * self.row_stride + k0;
                        out.copy_from_slice(&self.data[base..base + kc]);
                    } else {
                        out.iter_mut().for_each(|x| *x = 0.0);
                    }
                }
                // SAFETY: `block` holds 8 rows of kc, and dst columns j..j+8 of kc rows exist.
                unsafe { K::transpose8(block.as_ptr(), kc, dst.as_mut_ptr().add(j), width) };
                j += 8;
            }
            return;
        }
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
    fn row<K: Kernel>(&self, r: usize, out: &mut [f32]) {
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
    /// The packed A of the multiply this thread started last.
    static PACKED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// C[m, n] (+)= A[m, k] · B^T, split over the pool by columns of C.
pub fn gemm<S: PanelSource>(a: MatA<'_>, b: &S, c: MatC, accumulate: bool, pool: Option<&Pool>) {
    gemm_on(isa(), a, b, c, accumulate, pool)
}

/// [`gemm`] with a given instruction set (`isa` must not exceed what the CPU has; tests use it to
/// check every path on one machine).
pub fn gemm_on<S: PanelSource>(
    isa: Isa,
    a: MatA<'_>,
    b: &S,
    c: MatC,
    accumulate: bool,
    pool: Option<&Pool>,
) {
    let (m, n) = (a.rows, b.n());
    if m == 0 || n == 0 {
        return;
    }
    debug_assert_eq!(a.cols, b.k());
    debug_assert!((m - 1) * c.stride + n <= c.len);
    let isa = isa.min(detect());
    let (mr, nr) = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => (x86::Avx512::MR, x86::Avx512::NR),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => (x86::Avx2::MR, x86::Avx2::NR),
        _ => (Portable::MR, Portable::NR),
    };
    // A is packed once, shared by every task (GEMV reads it as it is).
    let step = b.k_step().max(1);
    let packed = (m > GEMV_ROWS).then(|| PackedA::new(a, mr, (KC / step).max(1) * step, pool));
    // Column chunks: enough for load balance, each a whole number of panels.
    let threads = pool.map(|p| p.threads()).unwrap_or(1);
    let work = m.max(1) * a.cols * n;
    let want = if threads > 1 && work > 1 << 16 {
        threads * 3
    } else {
        1
    };
    let chunk = n.div_ceil(want).div_ceil(nr).max(1) * nr;
    let tasks = n.div_ceil(chunk);
    let task = |t: usize| {
        let n0 = t * chunk;
        let n1 = (n0 + chunk).min(n);
        let job = Job {
            a,
            packed: packed.as_ref(),
            c,
            n0,
            n1,
            acc: accumulate,
        };
        // SAFETY: the kernels only run on CPUs that have their instruction set (`isa()`), and
        // each task writes only columns n0..n1 of C.
        unsafe {
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => columns_avx512(&job, b),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => columns_avx2(&job, b),
                _ => columns_scalar(&job, b),
            }
        }
    };
    match pool {
        Some(p) if tasks > 1 => p.run(tasks, &task),
        _ => (0..tasks).for_each(task),
    }
}

/// A packed once: every (row block, k block) as MR-row panels `[kc][MR]`, zero-padded.
struct PackedA {
    data: Vec<f32>,
    kc_max: usize,
    /// Rows per block: a multiple of MR, so that no panel straddles two blocks.
    mc: usize,
    /// Offset of block (mi, ki) at `offsets[mi * k_blocks + ki]`.
    offsets: Vec<usize>,
    k_blocks: usize,
}

impl Drop for PackedA {
    fn drop(&mut self) {
        // Hand the buffer back for the next multiply on this thread.
        let data = std::mem::take(&mut self.data);
        PACKED.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.capacity() < data.capacity() {
                *slot = data;
            }
        });
    }
}

crate::simd::multiversion! {
    /// `rows` rows of `kc` values (row stride `stride`, from `start`) as one panel `[kc][mr]`.
    fn interleave(src: &[f32], start: usize, stride: usize, rows: usize, kc: usize, mr: usize, panel: &mut [f32]) {
        for i in 0..rows {
            let row = &src[start + i * stride..start + i * stride + kc];
            for q in 0..kc {
                panel[q * mr + i] = row[q];
            }
        }
    }
}

impl PackedA {
    fn new(a: MatA<'_>, mr: usize, kc_max: usize, pool: Option<&Pool>) -> PackedA {
        let (m, k) = (a.rows, a.cols);
        let mc_block = (MC / mr).max(1) * mr;
        let k_blocks = k.div_ceil(kc_max);
        let mut offsets = Vec::new();
        let mut total = 0;
        for m0 in (0..m).step_by(mc_block) {
            let padded = mc_block.min(m - m0).div_ceil(mr) * mr;
            for k0 in (0..k).step_by(kc_max) {
                offsets.push(total);
                total += padded * kc_max.min(k - k0);
            }
        }
        let mut data = PACKED.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
        data.clear();
        data.resize(total, 0.0);
        let out = MatC::new(&mut data, 0);
        // One task per MR-row panel group of one block.
        let panels = m.div_ceil(mr);
        let pack = |p: usize| {
            let r0 = p * mr;
            let (mi, within) = (r0 / mc_block, r0 % mc_block);
            let m0 = mi * mc_block;
            let mc = mc_block.min(m - m0);
            let rows = mr.min(mc - within);
            for ki in 0..k_blocks {
                let k0 = ki * kc_max;
                let kc = kc_max.min(k - k0);
                let base = offsets[mi * k_blocks + ki] + within * kc;
                // SAFETY: each panel (p) owns its own kc * mr floats of every block.
                let panel = unsafe { out.slice_mut(base, base + kc * mr) };
                interleave(
                    a.data,
                    (m0 + within) * a.stride + k0,
                    a.stride,
                    rows,
                    kc,
                    mr,
                    panel,
                );
            }
        };
        match pool {
            Some(p) if m * k > 1 << 16 => p.run(panels, &pack),
            _ => (0..panels).for_each(pack),
        }
        PackedA {
            data,
            kc_max,
            mc: mc_block,
            offsets,
            k_blocks,
        }
    }
}

/// One task's share of a multiply.
struct Job<'a> {
    a: MatA<'a>,
    packed: Option<&'a PackedA>,
    c: MatC,
    n0: usize,
    n1: usize,
    acc: bool,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn columns_avx512<S: PanelSource>(job: &Job<'_>, b: &S) {
    columns::<x86::Avx512, S>(job, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn columns_avx2<S: PanelSource>(job: &Job<'_>, b: &S) {
    columns::<x86::Avx2, S>(job, b)
}

unsafe fn columns_scalar<S: PanelSource>(job: &Job<'_>, b: &S) {
    columns::<Portable, S>(job, b)
}

/// A register-tiled microkernel: C[mr, nr] (+)= A-panel `[kc][MR]` · B-panel `[kc][NR]`.
pub trait Kernel {
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
    ///
    /// # Safety
    /// The CPU has the kernel's instruction set.
    unsafe fn dot(x: &[f32], y: &[f32]) -> f32;

    /// Decodes whole blocks of `ty` (the stored bytes `src`) into `dst`, exactly as
    /// [`crate::quant::dequantize`] does.
    ///
    /// # Safety
    /// The CPU has the kernel's instruction set.
    #[inline(always)]
    unsafe fn decode(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
        dequantize(ty, src, dst)
    }

    /// `dst[kk * width + r] = src[r * kc + kk]` for 8 rows r and kc columns kk.
    ///
    /// # Safety
    /// `src` holds 8 rows of `kc`, `dst` holds `kc` rows of `width >= 8`, and the CPU has the
    /// kernel's instruction set.
    #[inline(always)]
    unsafe fn transpose8(src: *const f32, kc: usize, dst: *mut f32, width: usize) {
        for kk in 0..kc {
            for r in 0..8 {
                *dst.add(kk * width + r) = *src.add(r * kc + kk);
            }
        }
    }
}

/// Columns `n0..n1` of C.
#[inline(always)]
unsafe fn columns<K: Kernel, S: PanelSource>(job: &Job<'_>, b: &S) {
    let Some(packed) = job.packed else {
        return gemv::<K, S>(job, b);
    };
    let (a, n0, n1) = (job.a, job.n0, job.n1);
    let (m, k) = (a.rows, a.cols);
    let kc_max = packed.kc_max;
    // No closures from here on: code inside a closure would not get this function's target
    // features, and the intrinsics would become calls.
    let mut scratch = SCRATCH.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
    let (bpack, tmp, _) = &mut scratch;
    bpack.resize(kc_max * K::NR, 0.0);
    tmp.resize(8 * kc_max, 0.0);
    // When A is small enough to stay in L2, each panel of C is finished over every k-block
    // before the next (C never leaves the cache: what matters for a wide C such as the logits);
    // otherwise each k-block of A stays in L2 while every panel passes over it.
    let panel_outer = m * k * 4 <= 512 << 10;
    let panels = n1.saturating_sub(n0).div_ceil(K::NR);
    if panel_outer {
        for p in 0..panels {
            for ki in 0..packed.k_blocks {
                tile::<K, S>(job, b, packed, bpack, tmp, n0 + p * K::NR, ki);
            }
        }
    } else {
        for ki in 0..packed.k_blocks {
            for p in 0..panels {
                tile::<K, S>(job, b, packed, bpack, tmp, n0 + p * K::NR, ki);
            }
        }
    }
    SCRATCH.with(|cell| *cell.borrow_mut() = scratch);
}

/// One NR-wide panel of B over one k-block: packed, then swept by every MR-row block of A.
#[inline(always)]
unsafe fn tile<K: Kernel, S: PanelSource>(
    job: &Job<'_>,
    b: &S,
    packed: &PackedA,
    bpack: &mut [f32],
    tmp: &mut [f32],
    j0: usize,
    ki: usize,
) {
    let (m, k, c) = (job.a.rows, job.a.cols, job.c);
    let k0 = ki * packed.kc_max;
    let kc = packed.kc_max.min(k - k0);
    let nr = K::NR.min(job.n1 - j0);
    b.pack::<K>(j0, nr, k0, kc, bpack, tmp);
    let mut m0 = 0;
    let mut mi = 0;
    while m0 < m {
        let mc = packed.mc.min(m - m0);
        let apack = &packed.data[packed.offsets[mi * packed.k_blocks + ki]..];
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
                job.acc || k0 > 0,
            );
        }
        m0 += packed.mc;
        mi += 1;
    }
}

/// Few rows of A: each row of B is decoded once into L1 and dotted with every row of A.
#[inline(always)]
unsafe fn gemv<K: Kernel, S: PanelSource>(job: &Job<'_>, b: &S) {
    let (a, c) = (job.a, job.c);
    let k = a.cols;
    let mut scratch = SCRATCH.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
    let row = &mut scratch.2;
    row.resize(k.max(row.len()), 0.0);
    let row = &mut row[..k];
    for j in job.n0..job.n1 {
        b.row::<K>(j, row);
        for i in 0..a.rows {
            let x = &a.data[i * a.stride..i * a.stride + k];
            let v = K::dot(x, row);
            let cp = c.ptr.add(i * c.stride + j);
            *cp = if job.acc { *cp + v } else { v };
        }
    }
    SCRATCH.with(|cell| *cell.borrow_mut() = scratch);
}

/// Plain Rust: a 4 x 8 tile (vectorized by the compiler where it can).
pub struct Portable;

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
pub mod x86 {
    use std::arch::x86_64::*;

    use super::{store_tile, Kernel};
    use crate::quant::GgmlType;

    /// 8 x 8 transposes with AVX shuffles (both x86 kernels use it).
    ///
    /// # Safety
    /// As [`Kernel::transpose8`], on a CPU with AVX.
    #[inline(always)]
    pub unsafe fn transpose8_avx(src: *const f32, kc: usize, dst: *mut f32, width: usize) {
        let mut kk = 0;
        while kk + 8 <= kc {
            let r0 = _mm256_loadu_ps(src.add(kk));
            let r1 = _mm256_loadu_ps(src.add(kc + kk));
            let r2 = _mm256_loadu_ps(src.add(2 * kc + kk));
            let r3 = _mm256_loadu_ps(src.add(3 * kc + kk));
            let r4 = _mm256_loadu_ps(src.add(4 * kc + kk));
            let r5 = _mm256_loadu_ps(src.add(5 * kc + kk));
            let r6 = _mm256_loadu_ps(src.add(6 * kc + kk));
            let r7 = _mm256_loadu_ps(src.add(7 * kc + kk));
            let t0 = _mm256_unpacklo_ps(r0, r1);
            let t1 = _mm256_unpackhi_ps(r0, r1);
            let t2 = _mm256_unpacklo_ps(r2, r3);
            let t3 = _mm256_unpackhi_ps(r2, r3);
            let t4 = _mm256_unpacklo_ps(r4, r5);
            let t5 = _mm256_unpackhi_ps(r4, r5);
            let t6 = _mm256_unpacklo_ps(r6, r7);
            let t7 = _mm256_unpackhi_ps(r6, r7);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let out = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (c, v) in out.into_iter().enumerate() {
                _mm256_storeu_ps(dst.add((kk + c) * width), v);
            }
            kk += 8;
        }
        while kk < kc {
            for r in 0..8 {
                *dst.add(kk * width + r) = *src.add(r * kc + kk);
            }
            kk += 1;
        }
    }

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
        unsafe fn transpose8(src: *const f32, kc: usize, dst: *mut f32, width: usize) {
            transpose8_avx(src, kc, dst, width)
        }

        #[inline(always)]
        unsafe fn decode(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
            super::super::decode::blocks_avx2(ty, src, dst)
        }

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
        unsafe fn transpose8(src: *const f32, kc: usize, dst: *mut f32, width: usize) {
            transpose8_avx(src, kc, dst, width)
        }

        #[inline(always)]
        unsafe fn decode(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
            super::super::decode::blocks_avx2(ty, src, dst)
        }

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

#[cfg(test)]
mod speed {
    use super::super::decode::decode;
    use super::*;

    #[test]
    #[ignore]
    fn gemm_speed() {
        let pool = Pool::global();
        let (m, n, k) = (512, 1536, 576);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32).collect();
        let b: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32).collect();
        let mut c = vec![0f32; m * n];
        for (label, threads) in [("1 thread", None), ("pool", Some(pool))] {
            let t = std::time::Instant::now();
            let reps = 10;
            for _ in 0..reps {
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
                    threads,
                );
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "{label} {:?}: {:.1} ms, {:.1} GFLOP/s",
                isa(),
                s * 1e3,
                2.0 * (m * n * k) as f64 / s / 1e9
            );
        }
        let q = crate::weights::Weight::from_f32("b", vec![n, k], &b).unwrap();
        let t = std::time::Instant::now();
        for _ in 0..10 {
            gemm(
                MatA {
                    data: &a,
                    rows: m,
                    cols: k,
                    stride: k,
                },
                &WeightPanel(&q),
                MatC::new(&mut c, n),
                false,
                Some(pool),
            );
        }
        let s = t.elapsed().as_secs_f64() / 10.0;
        println!(
            "weight f32 pool: {:.1} ms, {:.1} GFLOP/s",
            s * 1e3,
            2.0 * (m * n * k) as f64 / s / 1e9
        );
        use candle_core::quantized::{GgmlDType, QTensor};
        for (ty, cty) in [
            (GgmlType::Q4_1, GgmlDType::Q4_1),
            (GgmlType::Q8_0, GgmlDType::Q8_0),
        ] {
            let t = candle_core::Tensor::from_vec(b.clone(), (n, k), &candle_core::Device::Cpu)
                .unwrap();
            let bytes = QTensor::quantize(&t, cty).unwrap().data().unwrap().to_vec();
            let w = crate::weights::Weight::new(
                "q",
                vec![n, k],
                ty,
                crate::weights::Bytes::Owned(std::sync::Arc::new(bytes)),
                0,
            )
            .unwrap();
            for rows in [512usize, 128, 1] {
                let t = std::time::Instant::now();
                for _ in 0..10 {
                    gemm(
                        MatA {
                            data: &a,
                            rows,
                            cols: k,
                            stride: k,
                        },
                        &WeightPanel(&w),
                        MatC::new(&mut c, n),
                        false,
                        Some(pool),
                    );
                }
                let s = t.elapsed().as_secs_f64() / 10.0;
                println!(
                    "{ty:?} m={rows} pool: {:.2} ms, {:.1} GFLOP/s",
                    s * 1e3,
                    2.0 * (rows * n * k) as f64 / s / 1e9
                );
            }
            if ty == GgmlType::Q8_0 {
                // The unembedding's shape: a vocabulary of outputs.
                let big: Vec<f32> = (0..49152 * k)
                    .map(|i| ((i * 31 % 17) as f32 - 8.0) / 9.0)
                    .collect();
                let t = candle_core::Tensor::from_vec(big, (49152, k), &candle_core::Device::Cpu)
                    .unwrap();
                let bytes = QTensor::quantize(&t, cty).unwrap().data().unwrap().to_vec();
                let w = crate::weights::Weight::new(
                    "u",
                    vec![49152, k],
                    ty,
                    crate::weights::Bytes::Owned(std::sync::Arc::new(bytes)),
                    0,
                )
                .unwrap();
                let mut out = vec![0f32; 256 * (49152 + 16)];
                for rows in [128usize, 256] {
                    let t = std::time::Instant::now();
                    gemm(
                        MatA {
                            data: &a,
                            rows,
                            cols: k,
                            stride: k,
                        },
                        &WeightPanel(&w),
                        MatC::new(&mut out, 49152 + 16),
                        false,
                        Some(pool),
                    );
                    let s = t.elapsed().as_secs_f64();
                    println!(
                        "unembedding Q8_0 m={rows}: {:.2} ms, {:.1} GFLOP/s",
                        s * 1e3,
                        2.0 * (rows * 49152 * k) as f64 / s / 1e9
                    );
                }
            }
            let mut row = vec![0f32; k];
            let raw = w.row_bytes(0, n).to_vec();
            let t = std::time::Instant::now();
            for r in 0..n {
                decode(
                    ty,
                    &raw[r * ty.bytes_for(k)..(r + 1) * ty.bytes_for(k)],
                    &mut row,
                );
            }
            let s = t.elapsed().as_secs_f64();
            println!(
                "  decode_row alone: {:.2} ns/weight",
                s * 1e9 / (n * k) as f64
            );
        }
    }
}
