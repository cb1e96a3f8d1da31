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
//! transposed copy of the batch per reduction, on one thread. After a fully connected layer
//! (`[n, c]`, one value per channel and image) the vectors run across the channels instead:
//! a row of one value a kernel call made the 512 channels of fashion-best's dense layer cost
//! as much as its convolutions' normalizations.

use std::ops::Range;

use burn::backend::flex::FlexTensor;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::TensorData;
use rayon::prelude::*;

use super::fresh::Fresh;
use super::isa::{InstructionSet, simd_kernel};
use super::{Grads, Norm, f32s, reduce};

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

    /// Whether each channel has one value an image (`[n, c]`, after a fully connected layer).
    fn dense(&self) -> bool {
        self.plane == 1
    }

    /// Channel `ch`'s row in each image.
    fn rows<'a>(&self, values: &'a [f32], ch: usize) -> impl Iterator<Item = &'a [f32]> {
        let (c, p) = (self.channels, self.plane);
        (0..self.images).map(move |i| &values[(i * c + ch) * p..(i * c + ch + 1) * p])
    }
}

/// Channels a task of [`dense_sums`] takes.
const COLUMNS: usize = 64;

/// `K` sums per channel of a dense batch (`[n, c]`), each over the images in order:
/// `add(image, channels, sums)` adds image `image`'s terms for `channels` to their sums.
/// Blocks of channels run in parallel.
fn dense_sums<const K: usize>(
    layout: &Layout,
    add: impl Fn(usize, Range<usize>, [&mut [f64]; K]) + Sync,
) -> [Vec<f64>; K] {
    let blocks: Vec<[Vec<f64>; K]> = (0..layout.channels.div_ceil(COLUMNS))
        .into_par_iter()
        .map(|block| {
            let channels = block * COLUMNS..layout.channels.min((block + 1) * COLUMNS);
            let mut sums = [(); K].map(|_| vec![0.0; channels.len()]);
            for image in 0..layout.images {
                add(
                    image,
                    channels.clone(),
                    sums.each_mut().map(Vec::as_mut_slice),
                );
            }
            sums
        })
        .collect();
    std::array::from_fn(|k| blocks.iter().flat_map(|sums| &sums[k]).copied().collect())
}

/// Each channel's mean, then each channel's biased variance: `[2, c]`.
pub(super) fn statistics(x: FlexTensor) -> FlexTensor {
    let layout = Layout::of(&x);
    let x = x.to_contiguous();
    let x = f32s(&x);
    let isa = InstructionSet::detected();
    if layout.dense() {
        return dense_statistics(isa, &layout, x);
    }
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

/// [`statistics`] of a dense batch: the same sums, in the same order.
fn dense_statistics(isa: InstructionSet, layout: &Layout, x: &[f32]) -> FlexTensor {
    let c = layout.channels;
    let [sums] = dense_sums(layout, |i, channels, [sums]| {
        add_values(isa, &x[i * c..][channels], sums);
    });
    let mean: Vec<f32> = sums.iter().map(|&s| (s / layout.count()) as f32).collect();
    let [squares] = dense_sums(layout, |i, channels, [squares]| {
        let x = &x[i * c..][channels.clone()];
        add_squared_deviations(isa, x, &mean[channels], squares);
    });
    let var = squares.iter().map(|&s| (s / layout.count()) as f32);
    let stats: Vec<f32> = mean.iter().copied().chain(var).collect();
    FlexTensor::from_data(TensorData::new(stats, [2, c]))
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
    let y = per_image(&layout, |ch, at, y| {
        let x = &x[at..at + y.len()];
        match layout.dense() {
            true => affine_columns(isa, x, &scale, &shift, y),
            false => affine(isa, x, scale[ch], shift[ch], y),
        }
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
    let sums: Vec<(f64, f64)> = match layout.dense() {
        true => {
            let mean = &stats[..c];
            let [sum, centred] = dense_sums(&layout, |i, channels, [sum, centred]| {
                let at = i * c + channels.start..i * c + channels.end;
                let (dy, x) = (&dy[at.clone()], &x[at]);
                add_gradient_sums(isa, dy, x, &mean[channels], sum, centred);
            });
            sum.into_iter().zip(centred).collect()
        }
        false => (0..c)
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
            .collect(),
    };
    let dbeta: Vec<f32> = sums.iter().map(|&(d, _)| d as f32).collect();
    let dgamma: Vec<f32> = sums
        .iter()
        .zip(&inv)
        .map(|(&(_, dx), &inv)| dx as f32 * inv)
        .collect();
    let dx = input_grad.then(|| {
        let m = layout.count();
        // dx = a dy + b x + k, per channel.
        let per_channel: Vec<[f32; 3]> = (0..c)
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
        // Each term across the channels, as the dense kernel reads them.
        let terms: [Vec<f32>; 3] =
            std::array::from_fn(|term| per_channel.iter().map(|abk| abk[term]).collect());
        let [a, b, k] = terms.each_ref().map(Vec::as_slice);
        let dx = per_image(&layout, |ch, at, out| {
            let range = at..at + out.len();
            let (dy, x) = (&dy[range.clone()], &x[range]);
            match layout.dense() {
                true => input_gradient_columns(isa, dy, x, [a, b, k], out),
                false => input_gradient(isa, dy, x, a[ch], b[ch], k[ch], out),
            }
        });
        FlexTensor::from_data(TensorData::new(dx, shape.clone()))
    });
    Grads {
        x: dx,
        weight: FlexTensor::from_data(TensorData::new(dgamma, [c])),
        bias: FlexTensor::from_data(TensorData::new(dbeta, [c])),
    }
}

/// A batch written by `f(channel, offset of the row, row of the batch)` for every channel row
/// of every image, the images in parallel; in a dense batch, once an image with all its
/// channels (channel 0).
fn per_image(layout: &Layout, f: impl Fn(usize, usize, &mut [f32]) + Sync) -> Vec<f32> {
    let image = layout.channels * layout.plane;
    let row = if layout.dense() { image } else { layout.plane };
    let mut out = Fresh::new(layout.images * image);
    out.par_chunks_mut(image).enumerate().for_each(|(i, out)| {
        for (ch, values) in out.chunks_mut(row).enumerate() {
            f(ch, i * image + ch * row, values);
        }
    });
    out.into_vec()
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
    /// `sums += x`, channel by channel.
    fn add_values(x: &[f32], sums: &mut [f64]) {
        for (sum, &x) in sums.iter_mut().zip(x) {
            *sum += f64::from(x);
        }
    }
}

simd_kernel! {
    /// `sums += (x - mean)²`, channel by channel: [`squared_deviations`]'s terms.
    fn add_squared_deviations(x: &[f32], mean: &[f32], sums: &mut [f64]) {
        for ((sum, &x), &mean) in sums.iter_mut().zip(x).zip(mean) {
            *sum += f64::from((x - mean) * (x - mean));
        }
    }
}

simd_kernel! {
    /// `sums += dy` and `centred += dy (x - mean)`, channel by channel: [`gradient_sums`]'s
    /// terms.
    fn add_gradient_sums(
        dy: &[f32],
        x: &[f32],
        mean: &[f32],
        sums: &mut [f64],
        centred: &mut [f64],
    ) {
        let terms = dy.iter().zip(x).zip(mean);
        for ((sum, centred), ((&dy, &x), &mean)) in sums.iter_mut().zip(centred).zip(terms) {
            *sum += f64::from(dy);
            *centred += f64::from(dy * (x - mean));
        }
    }
}

simd_kernel! {
    /// [`affine`] of a dense image: a scale and shift per channel.
    fn affine_columns(x: &[f32], scale: &[f32], shift: &[f32], y: &mut [f32]) {
        for (((y, &x), &scale), &shift) in y.iter_mut().zip(x).zip(scale).zip(shift) {
            *y = x * scale + shift;
        }
    }
}

simd_kernel! {
    /// [`input_gradient`] of a dense image: `a`, `b` and `k` per channel.
    fn input_gradient_columns(dy: &[f32], x: &[f32], terms: [&[f32]; 3], dx: &mut [f32]) {
        let [a, b, k] = terms;
        let terms = dy.iter().zip(x).zip(a.iter().zip(b).zip(k));
        for (dx, ((&dy, &x), ((&a, &b), &k))) in dx.iter_mut().zip(terms) {
            *dx = a * dy + b * x + k;
        }
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
