//! The machine's f32 matrix-multiply peak, which the benchmarks' share-of-peak figures divide
//! by: the gemm crate (the one the CPU kernels and Burn's Flex backend multiply with) on a
//! square product large enough to reach it, best of five, on each thread count given.
//!
//! usage: gemm_peak THREADS...   prints `gemm_peak_gflops threads N GFLOPS` per count

use std::time::Instant;

use model::cpu::{self, Matrix};

/// The side of the square matrices: 2 x 2048^3 = 17 GFLOP a product, a second or two.
const SIDE: usize = 2048;
const TRIES: usize = 5;

fn main() {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .map(|arg| arg.parse())
        .collect::<Result<_, _>>()
        .unwrap_or_else(|err| {
            eprintln!("gemm_peak: thread counts expected: {err}");
            std::process::exit(2)
        });
    // Values of ordinary size: no denormals, nothing that a multiply could skip.
    let lhs: Vec<f32> = (0..SIDE * SIDE)
        .map(|i| (i % 17) as f32 * 0.01 + 0.5)
        .collect();
    let rhs: Vec<f32> = (0..SIDE * SIDE)
        .map(|i| (i % 13) as f32 * 0.02 - 0.1)
        .collect();
    let mut dst = vec![0.0f32; SIDE * SIDE];
    for threads in counts.into_iter().filter(|&threads| threads > 0) {
        let best = (0..TRIES)
            .map(|_| {
                let started = Instant::now();
                multiply(&mut dst, &lhs, &rhs, threads);
                2.0 * (SIDE as f64).powi(3) / started.elapsed().as_secs_f64() / 1e9
            })
            .fold(0.0, f64::max);
        println!("gemm_peak_gflops threads {threads} {best:.0}");
    }
}

/// `dst = lhs x rhs`, row-major squares of `SIDE`, on `threads` threads.
fn multiply(dst: &mut [f32], lhs: &[f32], rhs: &[f32], threads: usize) {
    let parallelism = match threads {
        1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    };
    let square = |data| Matrix::new(data, SIDE, SIDE);
    cpu::multiply(dst, square(lhs), square(rhs), false, parallelism);
}
