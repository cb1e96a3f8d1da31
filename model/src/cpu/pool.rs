//! Max-pool over non-overlapping square windows, for the image planes of one image. It
//! records where in its plane each maximum was: the convolution's backward pass routes each
//! gradient there.

/// Pools `planes` (each `[h, w]`) into `pooled` (each `[h / size, w / size]`), recording in
/// `argmax` the index in its plane of each maximum: the first maximum in reading order, as
/// Burn's and PyTorch's pools pick.
pub(super) fn forward_planes(
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
                pool_pairs(&plane[top..top + 2 * w], w, top, pooled, argmax);
            } else {
                pool_windows(plane, w, size, top, pooled, argmax);
            }
        }
    }
}

/// One row of 2x2 windows, whose two rows of pixels `pair` start at `top` in their plane: the
/// common case, unrolled.
fn pool_pairs(pair: &[f32], w: usize, top: usize, pooled: &mut [f32], argmax: &mut [i32]) {
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
