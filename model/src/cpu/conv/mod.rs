//! Convolution (stride 1, with zero padding of `pad` pixels on every side) as products read
//! straight from padded copies of the images ([`tiles`]), an image at a time:
//! - forward: `y[o][q] = bias[o] + Σ_(c,i,j) w[o][c][i][j] · x[c][q + (i, j)]`;
//! - backward: `dw[o][c][i][j] = Σ_q dy[o][q] · x[c][q + (i, j)]`, `dbias[o] = Σ_q dy[o][q]`,
//!   and `dx` the convolution of `dy`, padded by the kernel's size less one less `pad`, with
//!   the kernel turned half a turn.
//!
//! The padded layouts share one column of zeros between rows: row `y` of a plane is
//! `stride = w + pad` values apart, its left padding the right padding of the row before. A
//! product's tiles run along the rows where they fit them (with AVX-512, 14 positions on
//! 14x14 and 28x28 images, 7 on 7x7); elsewhere a product computes `stride` positions a row
//! and drops the `stride - ow` that read across a row's end (7% more positions on 14x14
//! images with AVX2's tiles of 6), for no unfolding at all. The weight gradient sums over
//! the real positions only.

mod tiles;

use burn::backend::flex::FlexTensor;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::TensorData;
use rayon::iter::Either;
use rayon::prelude::*;

use super::fresh::Fresh;
use super::isa::InstructionSet;
use super::{Grads, f32s, i32s, pool, reduce};
use tiles::{BLOCK, Grid, Operand, Output, SLACK, TapImage};

/// A convolution: `[n, o, oh, ow]`.
pub(super) fn forward(
    x: FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
    pad: usize,
) -> FlexTensor {
    let g = Geometry::of(&x, &weight, pad);
    let [x, weight, bias] = [x, weight, bias].map(|t| t.to_contiguous());
    let weights = Weights::forward(&g, f32s(&weight), f32s(&bias));
    let mut y = Fresh::new(g.image[0] * g.output_len());
    y.par_chunks_mut(g.output_len())
        .zip(f32s(&x).par_chunks(g.image_len()))
        .for_each_init(
            || vec![0.0; g.padded_len()],
            |padded, (y, x)| weights.convolve(&g, x, padded, y),
        );
    let y = y.into_vec();
    let [n, _, _, _] = g.image;
    let [oh, ow] = g.output();
    FlexTensor::from_data(TensorData::new(y, [n, g.filters, oh, ow]))
}

/// A convolution followed by a `size x size` max-pool: the pooled `[n, o, oh / size,
/// ow / size]` and where in its plane of the convolution each maximum was. The convolution's
/// output only exists an image at a time, in a thread's buffer.
pub(super) fn forward_pooled(
    x: FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
    pad: usize,
    size: usize,
) -> (FlexTensor, FlexTensor) {
    let g = Geometry::of(&x, &weight, pad);
    let [x, weight, bias] = [x, weight, bias].map(|t| t.to_contiguous());
    let weights = Weights::forward(&g, f32s(&weight), f32s(&bias));
    let [ph, pw] = g.output().map(|side| side / size);
    let pooled_len = g.filters * ph * pw;
    let mut pooled = Fresh::new(g.image[0] * pooled_len);
    let mut argmax = Fresh::new(g.image[0] * pooled_len);
    let isa = InstructionSet::detected();
    pooled
        .par_chunks_mut(pooled_len)
        .zip(argmax.par_chunks_mut(pooled_len))
        .zip(f32s(&x).par_chunks(g.image_len()))
        .for_each_init(
            || (vec![0.0; g.padded_len()], vec![0.0; g.output_len()]),
            |(padded, y), ((pooled, argmax), x)| {
                weights.convolve(&g, x, padded, y);
                pool::forward_planes(isa, y, g.output(), size, pooled, argmax);
            },
        );
    let shape = [g.image[0], g.filters, ph, pw];
    let argmax: Vec<i32> = argmax.into_vec();
    (
        FlexTensor::from_data(TensorData::new(pooled.into_vec(), shape)),
        FlexTensor::from_data(TensorData::new(argmax, shape)),
    )
}

/// Positions a backward task has at least: a tile's set-up is spread over many, and each
/// task's partial weight gradient (`taps x filters` values, written, then read by the sum)
/// serves as many multiply-adds a value. At 192, a 64-to-192-filter 7x7 layer's 32 partials
/// a batch of 128 took 14 MB, and training ran 3-4% slower.
const GROUP_POSITIONS: usize = 392;
/// Images a backward task has at least and at most. Their weight gradients are summed task
/// by task in order: the task's size depends on the shapes alone, so that the sums do not
/// depend on the thread count; small, so that a batch keeps many cores busy (a batch of 64
/// makes 32 tasks at 2 images a task).
const GROUP_IMAGES: std::ops::RangeInclusive<usize> = 2..=8;

/// Values of the weight gradient a thread sums over the tasks at a time.
const SUM_CHUNK: usize = 4096;

/// The gradient of one image's output.
enum OutputGrad<'a> {
    /// Of the convolution itself: `[o, oh * ow]`.
    Dense(&'a [f32]),
    /// Of its max-pool: `dy` for the maxima at `argmax`.
    Pooled { dy: &'a [f32], argmax: &'a [i32] },
}

/// The gradients of [`forward`] for `dy`.
pub(super) fn backward(
    x: FlexTensor,
    weight: FlexTensor,
    dy: FlexTensor,
    pad: usize,
    input_grad: bool,
) -> Grads<Flex> {
    let g = Geometry::of(&x, &weight, pad);
    let dy = dy.to_contiguous();
    let grads = f32s(&dy).par_chunks(g.output_len()).map(OutputGrad::Dense);
    backward_images(g, x, weight, grads, input_grad)
}

/// The gradients of [`forward_pooled`] for the gradient `dy` of its pooled output.
pub(super) fn backward_pooled(
    x: FlexTensor,
    weight: FlexTensor,
    dy: FlexTensor,
    argmax: FlexTensor,
    pad: usize,
    input_grad: bool,
) -> Grads<Flex> {
    let g = Geometry::of(&x, &weight, pad);
    let dy = dy.to_contiguous();
    let per_image = dy.shape().num_elements() / g.image[0];
    let grads = f32s(&dy)
        .par_chunks(per_image)
        .zip(i32s(&argmax).par_chunks(per_image))
        .map(|(dy, argmax)| OutputGrad::Pooled { dy, argmax });
    backward_images(g, x, weight, grads, input_grad)
}

fn backward_images<'a>(
    g: Geometry,
    x: FlexTensor,
    weight: FlexTensor,
    grads: impl IndexedParallelIterator<Item = OutputGrad<'a>>,
    input_grad: bool,
) -> Grads<Flex> {
    let [x, weight] = [x, weight].map(|t| t.to_contiguous());
    let (x, w) = (f32s(&x), f32s(&weight));
    let [n, c, h, wd] = g.image;
    let flipped = input_grad.then(|| Weights::flipped(&g, w));

    let mut dx = input_grad.then(|| Fresh::new(n * g.image_len()));
    let dx_images = match dx.as_mut() {
        Some(dx) => Either::Left(dx.par_chunks_mut(g.image_len()).map(Some)),
        None => Either::Right((0..n).into_par_iter().map(|_| None)),
    };
    // Fixed groups of images, summed in order: the same gradients whatever the thread count
    // and however the work is split between threads.
    let (k, columns) = (g.patch(), g.filter_columns());
    let groups = n.div_ceil(g.group());
    let mut partial_weights = Fresh::new(groups * k * columns);
    let mut partial_biases = Fresh::new(groups * g.filters);
    dx_images
        .zip(x.par_chunks(g.image_len()))
        .zip(grads)
        .chunks(g.group())
        .zip(partial_weights.par_chunks_mut(k * columns))
        .zip(partial_biases.par_chunks_mut(g.filters))
        .for_each_init(
            || Buffers::new(&g),
            |buffers, ((images, dweight_t), dbias)| {
                let sums = Sums { dweight_t, dbias };
                buffers.backward(&g, flipped.as_ref(), images, sums);
            },
        );
    let [partial_weights, partial_biases] = [partial_weights, partial_biases].map(Fresh::into_vec);
    let mut dweight_t = vec![0.0; k * columns];
    // Each value summed over the tasks in order (the same sums at any thread count), the
    // values spread over the threads: a large layer's tasks have millions of them a step.
    dweight_t
        .par_chunks_mut(SUM_CHUNK)
        .enumerate()
        .for_each(|(chunk, sum)| {
            for partial in partial_weights.chunks(k * columns) {
                add(sum, &partial[chunk * SUM_CHUNK..]);
            }
        });
    let mut dbias = vec![0.0; g.filters];
    for partial in partial_biases.chunks(g.filters) {
        add(&mut dbias, partial);
    }
    let dweight: Vec<f32> = (0..g.filters)
        .flat_map(|o| dweight_t[o..].iter().step_by(columns).take(k).copied())
        .collect();
    let [kh, kw] = g.kernel;
    Grads {
        x: dx.map(|dx| FlexTensor::from_data(TensorData::new(dx.into_vec(), [n, c, h, wd]))),
        weight: FlexTensor::from_data(TensorData::new(dweight, [g.filters, c, kh, kw])),
        bias: FlexTensor::from_data(TensorData::new(dbias, [g.filters])),
    }
}

/// A task's sums over its images, from zero: its parts of the step's partial sums. The weight
/// gradient is summed transposed, `[k, o]` with `o` padded to a multiple of [`BLOCK`], as
/// [`tiles::tap_sums`] computes it.
struct Sums<'a> {
    dweight_t: &'a mut [f32],
    dbias: &'a mut [f32],
}

/// A product's taps and weights: `[taps, channels]`, channels padded to a multiple of
/// [`BLOCK`] with zeros.
struct Weights {
    taps: Vec<usize>,
    weights: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl Weights {
    /// The forward product's: tap `(c, i, j)` of the padded image, each row the filters'
    /// weights for it.
    fn forward(g: &Geometry, w: &[f32], bias: &[f32]) -> Self {
        let (k, columns) = (g.patch(), g.filter_columns());
        let mut weights = vec![0.0; k * columns];
        for (o, filter) in w.chunks(k).enumerate() {
            for (t, &value) in filter.iter().enumerate() {
                weights[t * columns + o] = value;
            }
        }
        let mut padded_bias = vec![0.0; columns];
        padded_bias[..g.filters].copy_from_slice(bias);
        Self {
            taps: g.image_taps(),
            weights,
            bias: Some(padded_bias),
        }
    }

    /// The input gradient's: tap `(o, i, j)` of the padded output gradient, each row the
    /// input channels' weights of filter `o` at kernel position `(kh - 1 - i, kw - 1 - j)`.
    fn flipped(g: &Geometry, w: &[f32]) -> Self {
        let [_, c, _, _] = g.image;
        let [kh, kw] = g.kernel;
        let columns = c.next_multiple_of(BLOCK);
        let mut weights = vec![0.0; kh * kw * g.filters * columns];
        // Nested loops, not an index split by division: this runs on one thread every step.
        for (o, filter) in w.chunks(c * kh * kw).enumerate() {
            for (ch, kernel) in filter.chunks(kh * kw).enumerate() {
                for (i, row) in kernel.chunks(kw).enumerate() {
                    let turned = (o * kh + kh - 1 - i) * kw + kw - 1;
                    for (j, &value) in row.iter().enumerate() {
                        weights[(turned - j) * columns + ch] = value;
                    }
                }
            }
        }
        Self {
            taps: g.grad_taps(),
            weights,
            bias: None,
        }
    }

    fn operand<'a>(&'a self, src: &'a [f32]) -> Operand<'a> {
        Operand {
            src,
            taps: &self.taps,
            weights: &self.weights,
        }
    }

    /// The convolution `y [o, oh * ow]` of one image `x [c, h, w]`, through `padded`.
    fn convolve(&self, g: &Geometry, x: &[f32], padded: &mut [f32], y: &mut [f32]) {
        g.pad(x, padded);
        let mut out = Output {
            data: y,
            rows: g.filters,
            row_stride: g.positions(),
        };
        let grid = g.grid(g.output());
        let isa = InstructionSet::detected();
        tiles::outputs(
            isa,
            &self.operand(padded),
            self.bias.as_deref(),
            grid,
            &mut out,
        );
    }
}

/// One image of a backward group: where its input gradient goes (when it is wanted), the
/// image, and its output's gradient.
type BackwardImage<'a> = ((Option<&'a mut [f32]>, &'a [f32]), OutputGrad<'a>);

/// A thread's buffers for the backward pass of a group of images, reused from group to
/// group: each image padded, and its output gradient padded twice, position by position (for
/// the weight gradient) and plane by plane (for the input gradient); where the weight
/// gradient's taps start in a padded image, and where each output position goes in a padded
/// gradient.
struct Buffers {
    taps: Vec<usize>,
    grad_positions: Vec<usize>,
    padded: Vec<f32>,
    grads: Vec<f32>,
    grad_planes: Vec<f32>,
}

impl Buffers {
    fn new(g: &Geometry) -> Self {
        Self {
            taps: g.image_taps(),
            grad_positions: g.grad_positions(),
            padded: vec![0.0; g.group() * g.padded_len()],
            grads: vec![0.0; g.group() * g.grads_len()],
            grad_planes: vec![0.0; g.grads_positions() * g.filters],
        }
    }

    /// Adds the group's weight and bias gradients to `sums`, and writes each image's input
    /// gradient to its `dx` with the `flipped` weights.
    fn backward(
        &mut self,
        g: &Geometry,
        flipped: Option<&Weights>,
        images: Vec<BackwardImage>,
        sums: Sums,
    ) {
        let isa = InstructionSet::detected();
        let count = images.len();
        let padded = self.padded.chunks_mut(g.padded_len());
        let grads = self.grads.chunks_mut(g.grads_len());
        for ((((dx, x), dy), padded), grads) in images.into_iter().zip(padded).zip(grads) {
            g.pad(x, padded);
            let planes = flipped.map(|_| &mut self.grad_planes[..]);
            g.pad_grads(&dy, &self.grad_positions, grads, planes, sums.dbias);
            if let (Some(flipped), Some(dx)) = (flipped, dx) {
                let mut out = Output {
                    data: dx,
                    rows: g.image[1],
                    row_stride: g.image[2] * g.image[3],
                };
                let operand = flipped.operand(&self.grad_planes);
                let grid = g.grid([g.image[2], g.image[3]]);
                tiles::outputs(isa, &operand, None, grid, &mut out);
            }
        }
        let images: Vec<TapImage> = self
            .padded
            .chunks(g.padded_len())
            .zip(self.grads.chunks(g.grads_len()))
            .take(count)
            .map(|(src, grads)| TapImage { src, grads })
            .collect();
        tiles::tap_sums(
            isa,
            &images,
            &self.taps,
            g.grid(g.output()),
            g.grads_shift(),
            sums.dweight_t,
        );
    }
}

fn add(sum: &mut [f32], more: &[f32]) {
    for (s, m) in sum.iter_mut().zip(more) {
        *s += m;
    }
}

/// The shapes of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    /// Images, channels, height, width of the input.
    image: [usize; 4],
    kernel: [usize; 2],
    filters: usize,
    /// Zero pixels around every side of the input.
    pad: usize,
}

impl Geometry {
    fn of(x: &FlexTensor, weight: &FlexTensor, pad: usize) -> Self {
        let image = x.shape().dims::<4>();
        let [filters, channels, kh, kw] = weight.shape().dims::<4>();
        assert_eq!(channels, image[1], "conv: input and weight channels differ");
        assert!(
            image[2] + 2 * pad >= kh && image[3] + 2 * pad >= kw,
            "conv: the kernel is larger than the padded image"
        );
        // Wider padding only adds outputs that see nothing but zeros; the layouts below
        // assume it away (CnnConfig::check refuses it).
        assert!(pad < kh && pad < kw, "conv: padding as wide as the kernel");
        Self {
            image,
            kernel: [kh, kw],
            filters,
            pad,
        }
    }

    fn output(&self) -> [usize; 2] {
        let [_, _, h, w] = self.image;
        let [kh, kw] = self.kernel;
        [h + 2 * self.pad + 1 - kh, w + 2 * self.pad + 1 - kw]
    }

    fn positions(&self) -> usize {
        let [oh, ow] = self.output();
        oh * ow
    }

    /// The filters padded to a multiple of [`BLOCK`]: the channels of the forward product's
    /// weights and of the padded output gradient.
    fn filter_columns(&self) -> usize {
        self.filters.next_multiple_of(BLOCK)
    }

    /// Taps of the forward product: one per input channel and kernel position.
    fn patch(&self) -> usize {
        self.image[1] * self.kernel[0] * self.kernel[1]
    }

    fn image_len(&self) -> usize {
        let [_, c, h, w] = self.image;
        c * h * w
    }

    fn output_len(&self) -> usize {
        self.filters * self.positions()
    }

    /// Images per backward task: see [`GROUP_POSITIONS`].
    fn group(&self) -> usize {
        let (least, most) = (*GROUP_IMAGES.start(), *GROUP_IMAGES.end());
        GROUP_POSITIONS
            .div_ceil(self.positions())
            .clamp(least, most)
    }

    /// The distance between rows in every padded layout and grid: a row and the padding on
    /// one side of it (which serves as the other side's for the next row).
    fn stride(&self) -> usize {
        self.image[3] + self.pad
    }

    /// The positions a product computes for `[rows, width]` outputs (the convolution's, or
    /// the input gradient's `[h, w]`): `stride` a row.
    fn grid(&self, [rows, width]: [usize; 2]) -> Grid {
        Grid {
            positions: rows * self.stride(),
            stride: self.stride(),
            width,
        }
    }

    /// Values of one padded plane of an image: its `h + 2 pad` rows, what the last kernel
    /// position reads past them, and [`SLACK`].
    fn plane_len(&self) -> usize {
        let [_, _, h, _] = self.image;
        (h + 2 * self.pad) * self.stride() + self.kernel[1] + SLACK
    }

    fn padded_len(&self) -> usize {
        self.image[1] * self.plane_len()
    }

    /// Where each forward tap `(c, i, j)` starts in a padded image.
    fn image_taps(&self) -> Vec<usize> {
        let [kh, kw] = self.kernel;
        (0..self.patch())
            .map(|t| (t / (kh * kw)) * self.plane_len() + (t / kw % kh) * self.stride() + t % kw)
            .collect()
    }

    /// `image [c, h, w]` into `padded`, [`Geometry::plane_len`] values a channel, zeros
    /// around. Only the image's own places are written: `padded` starts as zeros, or as this
    /// left it for another image (the padding of every image is the same).
    fn pad(&self, image: &[f32], padded: &mut [f32]) {
        let [_, _, h, w] = self.image;
        let (stride, pad) = (self.stride(), self.pad);
        for (plane, channel) in padded.chunks_mut(self.plane_len()).zip(image.chunks(h * w)) {
            for (y, row) in channel.chunks(w).enumerate() {
                let start = (y + pad) * stride + pad;
                plane[start..start + w].copy_from_slice(row);
            }
        }
    }

    /// Rows and columns of zeros above and to the left of the output gradient in its padded
    /// layout: the input gradient's padding.
    fn grads_pad(&self) -> [usize; 2] {
        let [kh, kw] = self.kernel;
        [kh - 1 - self.pad, kw - 1 - self.pad]
    }

    /// Positions of an image's padded output gradient, as for [`Geometry::plane_len`].
    fn grads_positions(&self) -> usize {
        let [_, _, h, _] = self.image;
        (h + self.kernel[0] - 1) * self.stride() + self.kernel[1] + SLACK
    }

    /// Values of an image's padded output gradient: one row of the filters, padded to a
    /// multiple of [`BLOCK`], a position.
    fn grads_len(&self) -> usize {
        self.grads_positions() * self.filter_columns()
    }

    /// The position of the output gradient's first value in its padded layout: where the
    /// weight gradient's positions start.
    fn grads_shift(&self) -> usize {
        let [top, left] = self.grads_pad();
        top * self.stride() + left
    }

    /// Where each tap `(o, i, j)` of the input gradient's product starts in the planes of a
    /// padded output gradient.
    fn grad_taps(&self) -> Vec<usize> {
        let [kh, kw] = self.kernel;
        let plane = self.grads_positions();
        (0..self.filters * kh * kw)
            .map(|t| (t / (kh * kw)) * plane + (t / kw % kh) * self.stride() + t % kw)
            .collect()
    }

    /// Where each output position `y * ow + x` goes in the padded output gradient.
    fn grad_positions(&self) -> Vec<usize> {
        let [oh, ow] = self.output();
        let (stride, shift) = (self.stride(), self.grads_shift());
        (0..oh)
            .flat_map(|y| (0..ow).map(move |x| y * stride + x + shift))
            .collect()
    }

    /// One image's output gradient into `grads`, position by position, and into `planes`
    /// (when given), [`Geometry::grads_positions`] values a filter, zeros around both; adds
    /// each filter's sum to `dbias`. `positions` are [`Geometry::grad_positions`]. Both start
    /// as zeros, or as this left them for another image: a dense gradient writes every
    /// position (the padding stays zero), a pooled one only its maxima, so the rest is zeroed.
    fn pad_grads(
        &self,
        dy: &OutputGrad,
        positions: &[usize],
        grads: &mut [f32],
        mut planes: Option<&mut [f32]>,
        dbias: &mut [f32],
    ) {
        let (columns, plane_len) = (self.filter_columns(), self.grads_positions());
        if let OutputGrad::Pooled { .. } = dy {
            grads.fill(0.0);
            if let Some(planes) = planes.as_deref_mut() {
                planes.fill(0.0);
            }
        }
        let mut put = |o: usize, position: usize, value: f32| {
            let at = positions[position];
            grads[at * columns + o] = value;
            if let Some(planes) = planes.as_deref_mut() {
                planes[o * plane_len + at] = value;
            }
        };
        let isa = InstructionSet::detected();
        match dy {
            OutputGrad::Dense(dy) => {
                for ((o, plane), sum) in dy.chunks(self.positions()).enumerate().zip(dbias) {
                    for (position, &value) in plane.iter().enumerate() {
                        put(o, position, value);
                    }
                    *sum += reduce::sum(isa, plane);
                }
            }
            // The pool's windows do not overlap: one gradient at most a position.
            OutputGrad::Pooled { dy, argmax } => {
                let per_plane = dy.len() / self.filters;
                let pooled = dy.chunks(per_plane).zip(argmax.chunks(per_plane));
                for ((o, (dy, argmax)), sum) in pooled.enumerate().zip(dbias) {
                    for (&value, &position) in dy.iter().zip(argmax.iter()) {
                        put(o, position as usize, value);
                    }
                    *sum += reduce::sum(isa, dy);
                }
            }
        }
    }
}
