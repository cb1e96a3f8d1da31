//! Max-pool over non-overlapping square windows, image plane by image plane. The forward pass
//! records where in its plane each maximum was; the backward pass routes each output gradient
//! there.

use burn::backend::flex::FlexTensor;
use burn::backend::{Shape, TensorMetadata};
use burn::tensor::TensorData;
use rayon::prelude::*;

use super::{f32s, i32s};

pub(super) fn forward(x: FlexTensor, size: usize) -> (FlexTensor, FlexTensor) {
    let [n, c, h, w] = x.shape().dims::<4>();
    let (oh, ow) = (h / size, w / size);
    let x = x.to_contiguous();
    let mut y = vec![0.0f32; n * c * oh * ow];
    let mut argmax = vec![0i32; y.len()];
    y.par_chunks_mut(oh * ow)
        .zip(argmax.par_chunks_mut(oh * ow))
        .zip(f32s(&x).par_chunks(h * w))
        .for_each(|((y, argmax), plane)| {
            for (k, (y, argmax)) in y.iter_mut().zip(argmax).enumerate() {
                let (top, left) = (k / ow * size, k % ow * size);
                // The first maximum in reading order, as Burn's and PyTorch's max-pools pick.
                let (mut best, mut max) = (top * w + left, plane[top * w + left]);
                for row in (top..top + size).map(|i| i * w + left) {
                    for (at, &value) in (row..).zip(&plane[row..row + size]) {
                        if value > max {
                            (best, max) = (at, value);
                        }
                    }
                }
                *y = max;
                *argmax = i32::try_from(best).expect("an image plane has fewer than 2^31 pixels");
            }
        });
    let shape = [n, c, oh, ow];
    (
        FlexTensor::from_data(TensorData::new(y, shape)),
        FlexTensor::from_data(TensorData::new(argmax, shape)),
    )
}

pub(super) fn backward(dy: FlexTensor, argmax: FlexTensor, shape: Shape) -> FlexTensor {
    let [n, c, h, w] = shape.dims::<4>();
    let [_, _, oh, ow] = dy.shape().dims::<4>();
    let dy = dy.to_contiguous();
    let mut dx = vec![0.0f32; n * c * h * w];
    dx.par_chunks_mut(h * w)
        .zip(f32s(&dy).par_chunks(oh * ow))
        .zip(i32s(&argmax).par_chunks(oh * ow))
        .for_each(|((dx, dy), argmax)| {
            for (&dy, &at) in dy.iter().zip(argmax) {
                dx[at as usize] += dy;
            }
        });
    FlexTensor::from_data(TensorData::new(dx, [n, c, h, w]))
}
