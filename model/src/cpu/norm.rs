//! Batch normalization over `x [n, c, ...]`, per channel `ch` with the values of all images and
//! positions (`m` of them):
//! - statistics: `mean`, and the biased variance `var` (what Burn's running statistics take);
//! - forward: `y = (x - mean) * inv + beta` with `inv = gamma / sqrt(var + epsilon)`;
//! - backward, with `Σdy` and `Σdy (x - mean)` per channel: `dbeta = Σdy`,
//!   `dgamma = Σdy (x - mean) / std`, and `dx = a dy + b x + c` per channel. With the batch's own
//!   statistics `b` and `c` carry their dependence on `x`; with fixed (running) ones they are 0.
//!
//! Each channel's sums run over the images in order, sixteen lanes within a row: the same
//! figures at any thread count. Burn's Flex computes these with generic tensor operations, one
//! transposed copy of the batch per reduction, on one thread.

use burn::backend::flex::FlexTensor;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::TensorData;
use rayon::prelude::*;

use super::isa::{InstructionSet, simd_kernel};
use super::{Grads, Norm, f32s, reduce, zeros};

/// The layout of a batch: images, channels, values per channel of one image.
#[derive(Debug, Clone, Copy)]
struct Layout {
    images: usize,
    channels: usize,
    plane: usize,
}

impl Layout {
    fn of(x: &FlexTensor) -> Self {
        let shape = x.shape();
        let (images, channels) = (shape[0], shape[1]);
        Self {
            images,
            channels,
            plane: shape.num_elements() / (images * channels).max(1),
        }
    }

    /// Values per channel over the batch.
    fn count(&self) -> f64 {
        (self.images * self.plane) as f64
    }

    /// Channel `ch`'s row in each image.
    fn rows<'a>(&self, values: &'a [f32], ch: usize) -> impl Iterator<Item = &'a [f32]> {
        let (c, p) = (self.channels, self.plane);
        (0..self.images).map(move |i| &values[(i * c + ch) * p..(i * c + ch + 1) * p])
    }
}

/// Each channel's mean, then each channel's biased variance: `[2, c]`.
pub(super) fn statistics(x: FlexTensor) -> FlexTensor {
    let layout = Layout::of(&x);
    let x = x.to_contiguous();
    let x = f32s(&x);
    let isa = InstructionSet::detected();
    let stats: Vec<(f32, f32)> = (0..layout.channels)
        .into_par_iter()
        .map(|ch| {
            let sum: f64 = layout
                .rows(x, ch)
                .map(|row| f64::from(reduce::sum(isa, row)))
                .sum();
            let mean = (sum / layout.count()) as f32;
            let squares: f64 = layout
                .rows(x, ch)
                .map(|row| f64::from(squared_deviations(isa, row, mean)))
                .sum();
            (mean, (squares / layout.count()) as f32)
        })
        .collect();
    let (mean, var): (Vec<f32>, Vec<f32>) = stats.into_iter().unzip();
    FlexTensor::from_data(TensorData::new([mean, var].concat(), [2, layout.channels]))
}

/// Per channel, `1 / sqrt(var + epsilon)` from `stats [2, c]`.
fn inverse_std(stats: &[f32], channels: usize, epsilon: f32) -> Vec<f32> {
    stats[channels..]
        .iter()
        .map(|&var| 1.0 / (var + epsilon).sqrt())
        .collect()
}

/// The normalized batch, with `stats [2, c]` (means, variances).
pub(super) fn forward(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    stats: FlexTensor,
    epsilon: f32,
) -> FlexTensor {
    let layout = Layout::of(&x);
    let shape = x.shape();
    let [x, gamma, beta, stats] = [x, gamma, beta, stats].map(|t| t.to_contiguous());
    let (gamma, beta, stats) = (f32s(&gamma), f32s(&beta), f32s(&stats));
    let c = layout.channels;
    let inv = inverse_std(stats, c, epsilon);
    // y = x * scale + shift
    let scale: Vec<f32> = gamma.iter().zip(&inv).map(|(g, i)| g * i).collect();
    let shift: Vec<f32> = (0..c).map(|ch| beta[ch] - stats[ch] * scale[ch]).collect();
    let x = f32s(&x);
    let isa = InstructionSet::detected();
    let mut y = zeros(shape.num_elements());
    per_image(&layout, &mut y, |ch, at, y| {
        affine(isa, &x[at..at + y.len()], scale[ch], shift[ch], y);
    });
    FlexTensor::from_data(TensorData::new(y, shape))
}

/// The gradients of [`forward`] for `dy`: `weight` is gamma's, `bias` beta's. With the
/// batch's own statistics, the input gradient goes through them too.
pub(super) fn backward(
    x: FlexTensor,
    gamma: FlexTensor,
    dy: FlexTensor,
    norm: Norm<Flex>,
    input_grad: bool,
) -> Grads<Flex> {
    let Norm {
        stats,
        epsilon,
        batch,
    } = norm;
    let layout = Layout::of(&x);
    let shape = x.shape();
    let [x, gamma, stats, dy] = [x, gamma, stats, dy].map(|t| t.to_contiguous());
    let (x, gamma, stats, dy) = (f32s(&x), f32s(&gamma), f32s(&stats), f32s(&dy));
    let c = layout.channels;
    let inv = inverse_std(stats, c, epsilon);
    let isa = InstructionSet::detected();
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            layout
                .rows(dy, ch)
                .zip(layout.rows(x, ch))
                .map(|(dy, x)| {
                    let (d, dx) = gradient_sums(isa, dy, x, stats[ch]);
                    (f64::from(d), f64::from(dx))
                })
                .fold((0.0, 0.0), |(a, b), (d, dx)| (a + d, b + dx))
        })
        .collect();
    let dbeta: Vec<f32> = sums.iter().map(|&(d, _)| d as f32).collect();
    let dgamma: Vec<f32> = sums
        .iter()
        .zip(&inv)
        .map(|(&(_, dx), &inv)| dx as f32 * inv)
        .collect();
    let dx = input_grad.then(|| {
        let m = layout.count();
        // dx = a dy + b x + k, per channel.
        let coefficients: Vec<[f32; 3]> = (0..c)
            .map(|ch| {
                let a = f64::from(gamma[ch] * inv[ch]);
                if !batch {
                    return [a as f32, 0.0, 0.0];
                }
                let (sum_dy, sum_dy_centred) = sums[ch];
                let inv2 = f64::from(inv[ch]) * f64::from(inv[ch]);
                let b = -a * sum_dy_centred / m * inv2;
                let k = -a * sum_dy / m - b * f64::from(stats[ch]);
                [a as f32, b as f32, k as f32]
            })
            .collect();
        let mut dx = zeros(shape.num_elements());
        per_image(&layout, &mut dx, |ch, at, out| {
            let [a, b, k] = coefficients[ch];
            let range = at..at + out.len();
            input_gradient(isa, &dy[range.clone()], &x[range], a, b, k, out);
        });
        FlexTensor::from_data(TensorData::new(dx, shape.clone()))
    });
    Grads {
        x: dx,
        weight: FlexTensor::from_data(TensorData::new(dgamma, [c])),
        bias: FlexTensor::from_data(TensorData::new(dbeta, [c])),
    }
}

/// Calls `f(channel, offset of the row, row of out)` for every channel row of every image,
/// the images in parallel.
fn per_image(layout: &Layout, out: &mut [f32], f: impl Fn(usize, usize, &mut [f32]) + Sync) {
    let image = layout.channels * layout.plane;
    if image == 0 {
        return;
    }
    out.par_chunks_mut(image).enumerate().for_each(|(i, out)| {
        for (ch, row) in out.chunks_mut(layout.plane.max(1)).enumerate() {
            f(ch, i * image + ch * layout.plane, row);
        }
    });
}

simd_kernel! {
    /// `Σ (x - mean)²` in sixteen lanes.
    fn squared_deviations(x: &[f32], mean: f32) -> f32 {
        let mut lanes = [0.0f32; 16];
        for chunk in x.chunks(16) {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane += (v - mean) * (v - mean);
            }
        }
        lanes.iter().sum()
    }
}

simd_kernel! {
    /// `Σ dy` and `Σ dy (x - mean)`, in sixteen lanes each.
    fn gradient_sums(dy: &[f32], x: &[f32], mean: f32) -> (f32, f32) {
        let (mut sum, mut centred) = ([0.0f32; 16], [0.0f32; 16]);
        for (dy, x) in dy.chunks(16).zip(x.chunks(16)) {
            for (((s, c), &dy), &x) in sum.iter_mut().zip(&mut centred).zip(dy).zip(x) {
                *s += dy;
                *c += dy * (x - mean);
            }
        }
        (sum.iter().sum(), centred.iter().sum())
    }
}

simd_kernel! {
    /// `y = x * scale + shift`.
    fn affine(x: &[f32], scale: f32, shift: f32, y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * scale + shift;
        }
    }
}

simd_kernel! {
    /// `dx = a dy + b x + k`.
    fn input_gradient(dy: &[f32], x: &[f32], a: f32, b: f32, k: f32, dx: &mut [f32]) {
        for ((dx, &dy), &x) in dx.iter_mut().zip(dy).zip(x) {
            *dx = a * dy + b * x + k;
        }
    }
}
