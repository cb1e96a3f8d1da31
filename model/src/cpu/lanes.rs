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
