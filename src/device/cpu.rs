//! The threads that compute on the CPU: one rayon pool for the whole process, every thread of
//! which flushes denormal floats to zero.
//!
//! Denormals (|x| < 1.2e-38) take a slow path through x86 floating-point units, tens of times
//! slower than a normal operation. Training makes them as a matter of course: Adam's first
//! moment of a weight whose gradient stays zero shrinks by `beta1` each step, and after about
//! 740 steps (0.9^740 ≈ 1e-34) it is denormal; from that step on, training ran at half speed.
//! Flushed to zero, such values change no figure that training reports.

use std::arch::asm;

use anyhow::{Context, Result};

/// Builds the process's rayon pool, `threads` threads (default: one per core) that flush
/// denormals, and runs `command` on one of them. Every parallel loop of the CPU backend, of
/// gemm and of this crate's kernels then runs on the pool, and the command's own thread takes
/// part in them instead of waking a further worker: on two cores, the two workers' spinning
/// between operations (tens of thousands of `sched_yield` an epoch) took the cores from the
/// command's own thread.
pub fn run_on_pool<T: Send>(threads: Option<u16>, command: impl FnOnce() -> T + Send) -> Result<T> {
    pool(threads)
        .build_global()
        .context("starting the CPU thread pool")?;
    let mut result = None;
    rayon::scope(|scope| scope.spawn(|_| result = Some(command())));
    Ok(result.expect("the pool ran the command to its end"))
}

fn pool(threads: Option<u16>) -> rayon::ThreadPoolBuilder {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.map_or(0, usize::from))
        .thread_name(|i| format!("mnist-{i}"))
        .start_handler(|_| flush_denormals())
}

/// Whether every thread of the current pool flushes denormals: tried on each.
pub fn pool_flushes_denormals() -> bool {
    rayon::broadcast(|_| flushes_denormals())
        .into_iter()
        .all(|flushes| flushes)
}

/// Sets this thread to treat denormal inputs as zero and to flush denormal results to zero:
/// on x86-64 the MXCSR bits DAZ and FTZ (SSE and AVX alike), on AArch64 the FPCR bit FZ.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    {
        const FTZ: u32 = 1 << 15;
        const DAZ: u32 = 1 << 6;
        let mut csr: u32 = 0;
        // SAFETY: stmxcsr and ldmxcsr read and write this thread's SSE control register only;
        // the value written is the current one with two mode bits set.
        unsafe {
            asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
            csr |= FTZ | DAZ;
            asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        const FZ: u64 = 1 << 24;
        let mut fpcr: u64;
        // SAFETY: reads and writes this thread's floating-point control register only, setting
        // one mode bit.
        unsafe {
            asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags));
            fpcr |= FZ;
            asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack, preserves_flags));
        }
    }
}

/// Whether this thread flushes denormals, inputs and results alike: tried, not read from a
/// register, so that what is checked is what arithmetic does.
fn flushes_denormals() -> bool {
    use std::hint::black_box;
    let denormal_result = black_box(f32::MIN_POSITIVE) * black_box(0.5);
    let denormal_input = black_box(1e-40_f32) * black_box(1.0);
    denormal_result == 0.0 && denormal_input == 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_thread_keeps_denormals_and_a_flushing_one_does_not() {
        let (before, after) = std::thread::spawn(|| {
            let before = flushes_denormals();
            flush_denormals();
            (before, flushes_denormals())
        })
        .join()
        .expect("the thread ran");
        assert!(!before, "a thread flushes denormals before it is told to");
        assert!(after);
    }

    #[test]
    fn every_thread_of_the_pool_and_the_cpu_backend_on_it_flush_denormals() {
        use burn::prelude::*;
        let pool = pool(Some(3)).build().expect("a pool");
        let (all, product) = pool.install(|| {
            let device = Device::default();
            let x = Tensor::<1>::from_floats([1e-39, 1.0], &device);
            let product = (x * 0.5)
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32 values");
            (pool_flushes_denormals(), product)
        });
        assert!(all, "a thread of the pool keeps denormals");
        assert_eq!(product, [0.0, 0.5], "the CPU backend computed a denormal");
    }
}
