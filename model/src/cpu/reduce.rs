//! Sums that the compiler vectorises: one running sum is a chain of dependent additions, a
//! scalar add each few cycles; sixteen independent ones fill a vector register.

use super::isa::simd_kernel;

const LANES: usize = 16;

simd_kernel! {
    /// The sum of `values` in sixteen lanes, added pairwise at the end: the same figure on
    /// every instruction set.
    pub(super) fn sum(values: &[f32]) -> f32 {
        let mut lanes = [0.0f32; LANES];
        let chunks = values.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            for (lane, value) in lanes.iter_mut().zip(chunk) {
                *lane += value;
            }
        }
        for (lane, value) in lanes.iter_mut().zip(tail) {
            *lane += value;
        }
        let mut width = LANES;
        while width > 1 {
            width /= 2;
            for i in 0..width {
                lanes[i] += lanes[i + width];
            }
        }
        lanes[0]
    }
}

#[cfg(test)]
mod tests {
    use super::super::isa::InstructionSet;
    use super::*;

    #[test]
    fn sums_agree_with_a_running_sum_and_across_instruction_sets() {
        for len in [0, 1, 15, 16, 17, 576, 1000] {
            let values: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 8.0)
                .collect();
            let exact: f64 = values.iter().map(|&v| f64::from(v)).sum();
            let lanes = sum(InstructionSet::Baseline, &values);
            assert!(
                (f64::from(lanes) - exact).abs() < 1e-3,
                "{len}: {lanes} vs {exact}"
            );
            for isa in InstructionSet::available() {
                assert_eq!(sum(isa, &values).to_bits(), lanes.to_bits(), "{isa}, {len}");
            }
        }
    }
}
