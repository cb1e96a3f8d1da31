//! Vector registers for kernels written with explicit tiles of accumulators, where the
//! compiler's vectorisation of plain loops (see [`super::isa::simd_kernel`]) does not keep a
//! tile in registers: one type per instruction set, each of whose methods the kernel's
//! `#[target_feature]` copy inlines.

/// A vector of `WIDTH` f32 lanes.
///
/// # Safety
/// Each method needs the CPU features of its type (see its `impl`), and reads or writes
/// `WIDTH` values at the pointers given.
pub(super) trait Lanes: Copy {
    const WIDTH: usize;
    unsafe fn zero() -> Self;
    unsafe fn load(from: *const f32) -> Self;
    /// Every lane `*from`.
    unsafe fn splat(from: *const f32) -> Self;
    /// `self + a * b`, lane by lane (fused where the instruction set has it).
    unsafe fn mul_add(self, a: Self, b: Self) -> Self;
    unsafe fn add(self, other: Self) -> Self;
    unsafe fn store(self, to: *mut f32);

    /// Writes lane `r` of `columns[skip + m]` to `to[r * stride + m]` for `m < len` and
    /// `r < lanes`: a tile's vectors of channels, one a position, into rows of channels
    /// along which those positions lie consecutive. This one lane at a time.
    unsafe fn store_transposed<const P: usize>(
        columns: &[Self; P],
        skip: usize,
        len: usize,
        lanes: usize,
        to: *mut f32,
        stride: usize,
    ) {
        const { assert!(Self::WIDTH <= 16) };
        let mut values = [0.0f32; 16];
        for (m, column) in columns[skip..skip + len].iter().enumerate() {
            // SAFETY (this block): `values` holds `WIDTH` lanes; the writes are the caller's.
            unsafe {
                column.store(values.as_mut_ptr());
                for (r, &value) in values[..lanes].iter().enumerate() {
                    *to.add(r * stride + m) = value;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Lanes;

    /// 16 lanes: AVX-512F.
    #[derive(Clone, Copy)]
    pub struct Avx512(__m512);

    impl Lanes for Avx512 {
        const WIDTH: usize = 16;
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn zero() -> Self {
            Self(_mm512_setzero_ps())
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn load(from: *const f32) -> Self {
            // SAFETY: the caller's (the trait's contract).
            Self(unsafe { _mm512_loadu_ps(from) })
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn splat(from: *const f32) -> Self {
            // SAFETY: as above.
            Self(_mm512_set1_ps(unsafe { *from }))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn mul_add(self, a: Self, b: Self) -> Self {
            Self(_mm512_fmadd_ps(a.0, b.0, self.0))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn add(self, other: Self) -> Self {
            Self(_mm512_add_ps(self.0, other.0))
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn store(self, to: *mut f32) {
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(to, self.0) }
        }
        /// The positions transposed in registers, then one masked store a lane: 16 stores
        /// where the lane-by-lane copy made 16 a position.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn store_transposed<const P: usize>(
            columns: &[Self; P],
            skip: usize,
            len: usize,
            lanes: usize,
            to: *mut f32,
            stride: usize,
        ) {
            const { assert!(P <= 16) };
            let mut rows = [_mm512_setzero_ps(); 16];
            for (row, column) in rows.iter_mut().zip(columns) {
                *row = column.0;
            }
            let rows = transpose(rows);
            let first = ((1u32 << len) - 1) as __mmask16;
            let kept = first << skip;
            for (r, &row) in rows[..lanes].iter().enumerate() {
                let row = match skip {
                    0 => row,
                    _ => _mm512_maskz_compress_ps(kept, row),
                };
                // SAFETY: the caller's.
                unsafe { _mm512_mask_storeu_ps(to.add(r * stride), first, row) };
            }
        }
    }

    /// Where each lane of the two results of a stage of [`transpose`] comes from, for
    /// `permutex2var` (16 and on: the second operand): of rows `i` and `i + b`, the first
    /// takes the first `b` lanes of each `2b` from both, the second the last `b`.
    const fn swaps(b: usize, second: bool) -> [i32; 16] {
        let mut from = [0; 16];
        let mut lane = 0;
        while lane < 16 {
            let (block, within) = (lane / (2 * b) * (2 * b), lane % (2 * b));
            let half = if second { b } else { 0 };
            from[lane] = if within < b {
                block + within + half
            } else {
                16 + block + within - b + half
            } as i32;
            lane += 1;
        }
        from
    }

    /// Transposes the 16 x 16 matrix of `rows`: each stage swaps the off-diagonal `b x b`
    /// blocks of every `2b x 2b` block.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn transpose(rows: [__m512; 16]) -> [__m512; 16] {
        let rows = stage::<8>(rows);
        let rows = stage::<4>(rows);
        let rows = stage::<2>(rows);
        stage::<1>(rows)
    }

    /// One stage of [`transpose`], unrolled (a loop kept the rows in memory).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn stage<const B: usize>(rows: [__m512; 16]) -> [__m512; 16] {
        let [first, second] = [const { swaps(B, false) }, const { swaps(B, true) }];
        // SAFETY: each index array holds 16 lanes.
        let [first, second] =
            [first, second].map(|from| unsafe { _mm512_loadu_si512(from.as_ptr().cast()) });
        std::array::from_fn(|i| match i & B {
            0 => _mm512_permutex2var_ps(rows[i], first, rows[i + B]),
            _ => _mm512_permutex2var_ps(rows[i - B], second, rows[i]),
        })
    }

    /// 8 lanes: AVX2 with FMA.
    #[derive(Clone, Copy)]
    pub struct Avx2(__m256);

    impl Lanes for Avx2 {
        const WIDTH: usize = 8;
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn zero() -> Self {
            Self(_mm256_setzero_ps())
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn load(from: *const f32) -> Self {
            // SAFETY: the caller's (the trait's contract).
            Self(unsafe { _mm256_loadu_ps(from) })
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn splat(from: *const f32) -> Self {
            // SAFETY: as above.
            Self(_mm256_set1_ps(unsafe { *from }))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn mul_add(self, a: Self, b: Self) -> Self {
            Self(_mm256_fmadd_ps(a.0, b.0, self.0))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn add(self, other: Self) -> Self {
            Self(_mm256_add_ps(self.0, other.0))
        }
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn store(self, to: *mut f32) {
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(to, self.0) }
        }
    }
}

/// 4 lanes of plain arithmetic, which the compiler maps onto SSE2 or NEON: every CPU.
#[derive(Clone, Copy)]
pub(super) struct Portable([f32; 4]);

impl Lanes for Portable {
    const WIDTH: usize = 4;
    #[inline(always)]
    unsafe fn zero() -> Self {
        Self([0.0; 4])
    }
    #[inline(always)]
    unsafe fn load(from: *const f32) -> Self {
        // SAFETY: the caller's (the trait's contract).
        Self(unsafe { from.cast::<[f32; 4]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn splat(from: *const f32) -> Self {
        // SAFETY: as above.
        Self([unsafe { *from }; 4])
    }
    #[inline(always)]
    unsafe fn mul_add(self, a: Self, b: Self) -> Self {
        Self(std::array::from_fn(|i| self.0[i] + a.0[i] * b.0[i]))
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        Self(std::array::from_fn(|i| self.0[i] + other.0[i]))
    }
    #[inline(always)]
    unsafe fn store(self, to: *mut f32) {
        // SAFETY: as above.
        unsafe { to.cast::<[f32; 4]>().write_unaligned(self.0) }
    }
}
