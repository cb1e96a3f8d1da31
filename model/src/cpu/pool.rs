//! Max-pool over non-overlapping square windows, for the image planes of one image. The
//! forward pass records where in its plane each maximum was; the backward pass routes each
//! gradient there.

/// Pools `planes` (each `[h, w]`) into `pooled` (each `[h / size, w / size]`), recording in
/// `argmax` the index in its plane of each maximum.
pub(super) fn forward_planes(
    planes: &[f32],
    [h, w]: [usize; 2],
    size: usize,
    pooled: &mut [f32],
    argmax: &mut [i32],
) {
    let (ph, pw) = (h / size, w / size);
    let outputs = pooled.chunks_mut(ph * pw).zip(argmax.chunks_mut(ph * pw));
    for (plane, (pooled, argmax)) in planes.chunks(h * w).zip(outputs) {
        let rows = pooled.chunks_mut(pw).zip(argmax.chunks_mut(pw));
        for (top, (pooled, argmax)) in (0..).step_by(size).zip(rows) {
            for (left, (max, at)) in (0..).step_by(size).zip(pooled.iter_mut().zip(argmax)) {
                // The first maximum in reading order, as Burn's and PyTorch's pools pick.
                let (mut best, mut value) = (top * w + left, plane[top * w + left]);
                for row in (top..top + size).map(|i| i * w + left) {
                    for (index, &candidate) in (row..).zip(&plane[row..row + size]) {
                        if candidate > value {
                            (best, value) = (index, candidate);
                        }
                    }
                }
                *max = value;
                *at = i32::try_from(best).expect("an image plane has fewer than 2^31 pixels");
            }
        }
    }
}

/// The gradient of the planes [`forward_planes`] pooled (each of `plane_len` values), from that
/// of the maxima: `dy` where the maxima were, zero elsewhere.
pub(super) fn backward_planes(dy: &[f32], argmax: &[i32], plane_len: usize, planes: &mut [f32]) {
    planes.fill(0.0);
    let per_plane = dy.len() / (planes.len() / plane_len);
    let pooled = dy.chunks(per_plane).zip(argmax.chunks(per_plane));
    for (plane, (dy, argmax)) in planes.chunks_mut(plane_len).zip(pooled) {
        for (&dy, &at) in dy.iter().zip(argmax) {
            plane[at as usize] += dy;
        }
    }
}
