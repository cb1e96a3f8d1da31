//! The vector instructions the CPU kernels run with: the widest the CPU has, found at run time,
//! so that one binary serves every x86-64 and AArch64 machine. gemm (the matrix products) and
//! Flex's own kernels choose theirs in the same way, each by itself.

use std::fmt;
use std::sync::OnceLock;

/// An instruction set the kernels are compiled for, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InstructionSet {
    /// What every CPU of the target has: SSE2 on x86-64.
    Baseline,
    /// AArch64's Advanced SIMD, which every AArch64 CPU has.
    Neon,
    /// AVX2 with FMA (x86-64-v3).
    Avx2,
    /// AVX-512 (x86-64-v4).
    Avx512,
}

impl InstructionSet {
    /// The widest instruction set this CPU has, detected once.
    pub fn detected() -> Self {
        static DETECTED: OnceLock<InstructionSet> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                // gemm's AVX-512 kernels ask for these (pulp's x86-64-v4).
                if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
                    return Self::Avx512;
                }
                if has!("avx2") && has!("fma") {
                    return Self::Avx2;
                }
            }
            #[cfg(target_arch = "aarch64")]
            return Self::Neon;
            #[allow(unreachable_code)]
            Self::Baseline
        })
    }

    /// The instruction sets this CPU can run, narrowest first.
    pub fn available() -> Vec<Self> {
        [Self::Baseline, Self::Neon, Self::Avx2, Self::Avx512]
            .into_iter()
            .filter(|isa| {
                *isa <= Self::detected() && (*isa != Self::Neon || cfg!(target_arch = "aarch64"))
            })
            .collect()
    }

    /// The name `model.json` and the log use: `avx512`, `avx2`, `neon` or `baseline`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Neon => "neon",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }
}

impl fmt::Display for InstructionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Baseline if cfg!(target_arch = "x86_64") => "SSE2",
            Self::Baseline => "baseline",
            Self::Neon => "NEON",
            Self::Avx2 => "AVX2+FMA",
            Self::Avx512 => "AVX-512",
        })
    }
}

/// Defines `fn $name(isa: InstructionSet, args…) -> T`, which runs `$body` compiled for `isa`:
/// the body is written once, as plain loops, and the compiler vectorises each copy for the
/// width its instruction set has. Panics if `isa` is wider than the CPU's.
macro_rules! simd_kernel {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name(isa: $crate::cpu::isa::InstructionSet, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn kernel($($arg: $ty),*) $(-> $ret)? $body

            assert!(
                isa <= $crate::cpu::isa::InstructionSet::detected(),
                "{isa} is not available on this CPU"
            );
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    kernel($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    kernel($($arg),*)
                }
                match isa {
                    // SAFETY: the CPU has `isa`'s features, asserted above.
                    $crate::cpu::isa::InstructionSet::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::cpu::isa::InstructionSet::Avx2 => return unsafe { avx2($($arg),*) },
                    _ => {}
                }
            }
            kernel($($arg),*)
        }
    };
}

pub(crate) use simd_kernel;
