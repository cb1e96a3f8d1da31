//! Max-pool over non-overlapping square windows, for the image planes of one image. It
//! records where in its plane each maximum was: the convolution's backward pass routes each
//! gradient there.

use super::isa::InstructionSet;

/// Pools `planes` (each `[h, w]`) into `pooled` (each `[h / size, w / size]`), recording in
/// `argmax` the index in its plane of each maximum: the first maximum in reading order, as
/// Burn's and PyTorch's pools pick.
pub(super) fn forward_planes(
    isa: InstructionSet,
    planes: &[f32],
    [h, w]: [usize; 2],
    size: usize,
    pooled: &mut [f32],
    argmax: &mut [i32],
) {
    let (ph, pw) = (h / size, w / size);
    if ph == 0 || pw == 0 {
        return;
    }
    assert!(
        h * w <= i32::MAX as usize,
        "an image plane has fewer than 2^31 pixels"
    );
    let outputs = pooled.chunks_mut(ph * pw).zip(argmax.chunks_mut(ph * pw));
    for (plane, (pooled, argmax)) in planes.chunks(h * w).zip(outputs) {
        let rows = pooled.chunks_exact_mut(pw).zip(argmax.chunks_exact_mut(pw));
        for (top, (pooled, argmax)) in (0..).step_by(size * w).zip(rows) {
            if size == 2 {
                pool_pairs(isa, &plane[top..top + 2 * w], w, top, pooled, argmax);
            } else {
                pool_windows(plane, w, size, top, pooled, argmax);
            }
        }
    }
}

/// One row of 2x2 windows, whose two rows of pixels `pair` start at `top` in their plane: the
/// common case, unrolled; with AVX-512, a row of up to 32 pixels in a few vectors.
fn pool_pairs(
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] isa: InstructionSet,
    pair: &[f32],
    w: usize,
    top: usize,
    pooled: &mut [f32],
    argmax: &mut [i32],
) {
    #[cfg(target_arch = "x86_64")]
    if isa == InstructionSet::Avx512 && w <= avx512::WIDEST {
        // SAFETY: the CPU has AVX-512 (`isa` is detected), and the lengths are checked.
        return unsafe { avx512::pool_pairs(pair, w, top, pooled, argmax) };
    }
    let (upper, lower) = pair.split_at(w);
    let windows = upper.chunks_exact(2).zip(lower.chunks_exact(2));
    for (left, ((max, at), (upper, lower))) in (top..)
        .step_by(2)
        .zip(pooled.iter_mut().zip(argmax.iter_mut()).zip(windows))
    {
        let (mut value, mut best) = (upper[0], left);
        if upper[1] > value {
            (value, best) = (upper[1], left + 1);
        }
        if lower[0] > value {
            (value, best) = (lower[0], left + w);
        }
        if lower[1] > value {
            (value, best) = (lower[1], left + w + 1);
        }
        *max = value;
        *at = best as i32;
    }
}

/// One row of `size x size` windows starting at `top` in `plane`.
fn pool_windows(
    plane: &[f32],
    w: usize,
    size: usize,
    top: usize,
    pooled: &mut [f32],
    argmax: &mut [i32],
) {
    for (left, (max, at)) in (top..)
        .step_by(size)
        .zip(pooled.iter_mut().zip(argmax.iter_mut()))
    {
        let (mut value, mut best) = (plane[left], left);
        for row in (left..).step_by(w).take(size) {
            for (index, &candidate) in (row..).zip(&plane[row..row + size]) {
                if candidate > value {
                    (value, best) = (candidate, index);
                }
            }
        }
        *max = value;
        *at = best as i32;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// The widest row [`pool_pairs`] takes: two vectors of pixels.
    pub(super) const WIDEST: usize = 32;

    /// [`super::pool_pairs`] for a row of `w <= WIDEST` pixels: each row's even and odd pixels
    /// gathered into a vector of windows, then the same comparisons in the same order,
    /// lane by lane.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pool_pairs(
        pair: &[f32],
        w: usize,
        top: usize,
        pooled: &mut [f32],
        argmax: &mut [i32],
    ) {
        // The slices below check `pair`, and `forward_planes` that a plane's positions fit i32.
        let windows = w / 2;
        assert!(pooled.len() >= windows && argmax.len() >= windows);
        let (upper_left, upper_right) = halves(&pair[..w]);
        let (lower_left, lower_right) = halves(&pair[w..2 * w]);
        let left = _mm512_add_epi32(_mm512_set1_epi32(top as i32), evens());
        let (mut value, mut best) = (upper_left, left);
        for (candidate, offset) in [(upper_right, 1), (lower_left, w), (lower_right, w + 1)] {
            let greater = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(candidate, value);
            value = _mm512_mask_blend_ps(greater, value, candidate);
            let at = _mm512_add_epi32(left, _mm512_set1_epi32(offset as i32));
            best = _mm512_mask_blend_epi32(greater, best, at);
        }
        let kept = mask(windows);
        // SAFETY: the masks keep the stores within the `windows` outputs, checked above.
        unsafe {
            _mm512_mask_storeu_ps(pooled.as_mut_ptr(), kept, value);
            _mm512_mask_storeu_epi32(argmax.as_mut_ptr().cast(), kept, best);
        }
    }

    /// A row's even pixels and its odd ones, each in a vector: the left and the right pixels
    /// of its windows.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn halves(row: &[f32]) -> (__m512, __m512) {
        assert!(row.len() <= WIDEST);
        let first = mask(row.len());
        let second = mask(row.len().saturating_sub(16));
        // SAFETY: the masks keep the loads within `row`.
        let (lo, hi) = unsafe {
            (
                _mm512_maskz_loadu_ps(first, row.as_ptr()),
                _mm512_maskz_loadu_ps(second, row.as_ptr().wrapping_add(16)),
            )
        };
        let odds = _mm512_add_epi32(evens(), _mm512_set1_epi32(1));
        (
            _mm512_permutex2var_ps(lo, evens(), hi),
            _mm512_permutex2var_ps(lo, odds, hi),
        )
    }

    /// 0, 2, 4, … 30.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn evens() -> __m512i {
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
    }

    /// The first `lanes` of 16 set.
    fn mask(lanes: usize) -> __mmask16 {
        ((1u32 << lanes.min(16)) - 1) as __mmask16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instruction_set_pools_alike_ties_and_nan_included() {
        for (h, w) in [(28, 28), (14, 14), (7, 7), (4, 32), (3, 5), (2, 2), (4, 34)] {
            // Few distinct values, so that windows hold ties; a NaN now and then.
            let planes: Vec<f32> = (0..3 * h * w)
                .map(|i| match i % 23 {
                    7 => f32::NAN,
                    _ => ((i * 7919) % 5) as f32 - 2.0,
                })
                .collect();
            let pooled_len = 3 * (h / 2) * (w / 2);
            let pool = |isa| {
                let (mut pooled, mut argmax) = (vec![0.0; pooled_len], vec![0; pooled_len]);
                forward_planes(isa, &planes, [h, w], 2, &mut pooled, &mut argmax);
                (
                    pooled.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    argmax,
                )
            };
            let baseline = pool(InstructionSet::Baseline);
            for isa in InstructionSet::available() {
                assert_eq!(pool(isa), baseline, "{isa}, {h}x{w}");
            }
            // The first maximum in reading order: check the baseline itself on the first plane.
            let (_, argmax) = &baseline;
            for (k, &at) in argmax[..(h / 2) * (w / 2)].iter().enumerate() {
                let (y, x) = (k / (w / 2) * 2, k % (w / 2) * 2);
                let window = [
                    y * w + x,
                    y * w + x + 1,
                    (y + 1) * w + x,
                    (y + 1) * w + x + 1,
                ];
                let first = window.into_iter().fold(window[0], |best, i| {
                    if planes[i] > planes[best] { i } else { best }
                });
                assert_eq!(at as usize, first, "{h}x{w}, window {k}");
            }
        }
    }
}
