//! Convolution (stride 1, with zero padding of `pad` pixels on every side) as matrix
//! multiplies, a small group of images at a time: with `cols [k, n]` the group's images
//! unfolded side by side (im2col: `k = c*kh*kw` rows, `n = images * oh*ow` output positions)
//! and `w [o, k]` the flattened weights,
//! - forward: `y = w x cols + bias`;
//! - backward: `dwᵀ += cols x dyᵀ`, `dbias += rows of dy summed`, `dx = fold(wᵀ x dy)`.
//!
//! Each thread unfolds into its own small buffer (a few hundred KB, cache-resident) rather than
//! materialising the unfolded batch; the backward pass unfolds again instead of keeping it.

use burn::backend::flex::FlexTensor;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::TensorData;
use rayon::prelude::*;

use super::isa::InstructionSet;
use super::matmul::{Matrix, matmul};
use super::{Grads, f32s, i32s, pool, reduce};

/// A convolution: `[n, o, oh, ow]`.
pub(super) fn forward(
    x: FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
    pad: usize,
) -> FlexTensor {
    let g = Geometry::of(&x, &weight, pad);
    let [x, weight, bias] = [x, weight, bias].map(|t| t.to_contiguous());
    let (x, w, bias) = (f32s(&x), f32s(&weight), f32s(&bias));
    let mut y = vec![0.0f32; g.image[0] * g.output_len()];
    let group = g.group();
    y.par_chunks_mut(group * g.output_len())
        .zip(x.par_chunks(group * g.image_len()))
        .for_each_init(
            || Products::new(&g),
            |products, (y, x)| products.forward(&g, w, bias, x, y),
        );
    let [n, _, _, _] = g.image;
    let [oh, ow] = g.output();
    FlexTensor::from_data(TensorData::new(y, [n, g.filters, oh, ow]))
}

/// A convolution followed by a `size x size` max-pool: the pooled `[n, o, oh / size,
/// ow / size]` and where in its plane of the convolution each maximum was. The convolution's
/// output only exists one group of images at a time, in a thread's buffer.
pub(super) fn forward_pooled(
    x: FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
    pad: usize,
    size: usize,
) -> (FlexTensor, FlexTensor) {
    let g = Geometry::of(&x, &weight, pad);
    let [x, weight, bias] = [x, weight, bias].map(|t| t.to_contiguous());
    let (x, w, bias) = (f32s(&x), f32s(&weight), f32s(&bias));
    let [ph, pw] = g.output().map(|side| side / size);
    let pooled_len = g.filters * ph * pw;
    let mut pooled = vec![0.0f32; g.image[0] * pooled_len];
    let mut argmax = vec![0i32; pooled.len()];
    let (plane, p) = (ph * pw, g.positions());
    let group = g.group();
    pooled
        .par_chunks_mut(group * pooled_len)
        .zip(argmax.par_chunks_mut(group * pooled_len))
        .zip(x.par_chunks(group * g.image_len()))
        .for_each_init(
            || Products::new(&g),
            |products, ((pooled, argmax), x)| {
                let wide = products.product(&g, w, bias, x);
                let n = wide.len() / g.filters;
                let images = pooled
                    .chunks_mut(pooled_len)
                    .zip(argmax.chunks_mut(pooled_len));
                for (i, (pooled, argmax)) in images.enumerate() {
                    let planes = pooled.chunks_mut(plane).zip(argmax.chunks_mut(plane));
                    for (row, (pooled, argmax)) in wide.chunks(n).zip(planes) {
                        let y = &row[i * p..(i + 1) * p];
                        pool::forward_planes(y, g.output(), size, pooled, argmax);
                    }
                }
            },
        );
    let shape = [g.image[0], g.filters, ph, pw];
    (
        FlexTensor::from_data(TensorData::new(pooled, shape)),
        FlexTensor::from_data(TensorData::new(argmax, shape)),
    )
}

/// Output positions a product of a group of images has at least: gemm's AVX-512 kernel works
/// on blocks of columns, and the 49 of one 7x7 image left a fifth of it idle (fashion-best's
/// 7x7 convolution, one core: 78-99 GFLOP/s per image, 100-112 four at a time).
const GROUP_COLUMNS: usize = 192;
/// Images a group has at least and at most. Groups are also the backward pass's tasks, whose
/// weight gradients are summed in order: their size depends on the shapes alone, so that the
/// sums do not depend on the thread count; small, so that a batch keeps many cores busy (a
/// batch of 64 makes 32 tasks at 2 images a task).
const GROUP_IMAGES: std::ops::RangeInclusive<usize> = 2..=8;

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

    let mut dx = input_grad.then(|| vec![0.0f32; n * g.image_len()]);
    let dx_images: Vec<Option<&mut [f32]>> = match dx.as_mut() {
        Some(dx) => dx.chunks_mut(g.image_len()).map(Some).collect(),
        None => (0..n).map(|_| None).collect(),
    };
    // Fixed groups of images, summed in order: the same gradients whatever the thread count
    // and however the work is split between threads.
    let partials: Vec<Sums> = dx_images
        .into_par_iter()
        .zip(x.par_chunks(g.image_len()))
        .zip(grads)
        .chunks(g.group())
        .map_init(
            || Products::new(&g),
            |products, images| {
                let mut sums = Sums::new(&g);
                products.backward(&g, w, images, &mut sums);
                sums
            },
        )
        .collect();
    let mut total = Sums::new(&g);
    for partial in &partials {
        add(&mut total.dweight_t, &partial.dweight_t);
        add(&mut total.dbias, &partial.dbias);
    }
    let Sums { dweight_t, dbias } = total;
    let (k, filters) = (g.patch(), g.filters);
    let dweight: Vec<f32> = (0..filters * k)
        .map(|i| dweight_t[i % k * filters + i / k])
        .collect();
    let [kh, kw] = g.kernel;
    Grads {
        x: dx.map(|dx| FlexTensor::from_data(TensorData::new(dx, [n, c, h, wd]))),
        weight: FlexTensor::from_data(TensorData::new(dweight, [g.filters, c, kh, kw])),
        bias: FlexTensor::from_data(TensorData::new(dbias, [g.filters])),
    }
}

/// A task's sums over its images. The weight gradient is summed transposed, `[k, o]`: gemm
/// computes `cols x dyᵀ` a fifth faster than `dy x colsᵀ` (103 against 83 GFLOPS on one
/// AVX-512 core for the reference CNN's second convolution).
struct Sums {
    dweight_t: Vec<f32>,
    dbias: Vec<f32>,
}

impl Sums {
    fn new(g: &Geometry) -> Self {
        Self {
            dweight_t: vec![0.0; g.patch() * g.filters],
            dbias: vec![0.0; g.filters],
        }
    }
}

/// One image of a backward group: where its input gradient goes (when it is wanted), the
/// image, and its output's gradient.
type BackwardImage<'a> = ((Option<&'a mut [f32]>, &'a [f32]), OutputGrad<'a>);

/// A thread's buffers for the products of one group of images, reused from group to group:
/// one padded image (or its gradient), the unfolded images, their gradient, and an `[o, n]`
/// output or output gradient.
struct Products {
    padded: Vec<f32>,
    cols: Vec<f32>,
    dcols: Vec<f32>,
    wide: Vec<f32>,
}

impl Products {
    fn new(g: &Geometry) -> Self {
        let columns = g.group() * g.positions();
        Self {
            padded: vec![0.0; g.padded_len()],
            cols: vec![0.0; g.patch() * columns],
            dcols: Vec::new(),
            wide: vec![0.0; g.filters * columns],
        }
    }

    /// The convolution of the images `x [images, c, h, w]` as `[o, images * p]`: each row
    /// holds one filter's outputs, image after image.
    fn product(&mut self, g: &Geometry, w: &[f32], bias: &[f32], x: &[f32]) -> &[f32] {
        let n = x.len() / g.image_len() * g.positions();
        let cols = &mut self.cols[..g.patch() * n];
        for (i, image) in x.chunks(g.image_len()).enumerate() {
            g.unfold(image, cols, n, i * g.positions(), &mut self.padded);
        }
        let wide = &mut self.wide[..g.filters * n];
        for (row, &b) in wide.chunks_mut(n).zip(bias) {
            row.fill(b);
        }
        let w = Matrix::new(w, g.filters, g.patch());
        matmul(wide, w, Matrix::new(cols, g.patch(), n), true);
        wide
    }

    /// The convolution `y [images, o, p]` of the images `x [images, c, h, w]`.
    fn forward(&mut self, g: &Geometry, w: &[f32], bias: &[f32], x: &[f32], y: &mut [f32]) {
        let p = g.positions();
        let wide = self.product(g, w, bias, x);
        let n = wide.len() / g.filters;
        for (i, y) in y.chunks_mut(g.output_len()).enumerate() {
            for (row, wide) in y.chunks_mut(p).zip(wide.chunks(n)) {
                row.copy_from_slice(&wide[i * p..(i + 1) * p]);
            }
        }
    }

    /// Adds the group's weight and bias gradients to `sums`, and writes each image's input
    /// gradient to its `dx`.
    fn backward(&mut self, g: &Geometry, w: &[f32], images: Vec<BackwardImage>, sums: &mut Sums) {
        let (k, p) = (g.patch(), g.positions());
        let n = images.len() * p;
        let (cols, wide) = (&mut self.cols[..k * n], &mut self.wide[..g.filters * n]);
        for (i, ((_, x), dy)) in images.iter().enumerate() {
            g.unfold(x, cols, n, i * p, &mut self.padded);
            let planes = wide.chunks_mut(n).map(|row| &mut row[i * p..(i + 1) * p]);
            match dy {
                OutputGrad::Dense(dy) => {
                    for (plane, dy) in planes.zip(dy.chunks(p)) {
                        plane.copy_from_slice(dy);
                    }
                }
                OutputGrad::Pooled { dy, argmax } => pool::backward_planes(dy, argmax, planes),
            }
        }
        let dy = Matrix::new(wide, g.filters, n);
        matmul(&mut sums.dweight_t, Matrix::new(cols, k, n), dy.t(), true);
        let isa = InstructionSet::detected();
        for (sum, row) in sums.dbias.iter_mut().zip(wide.chunks(n)) {
            *sum += reduce::sum(isa, row);
        }
        if images.iter().any(|((dx, _), _)| dx.is_some()) {
            self.dcols.resize(k * n, 0.0);
            let w = Matrix::new(w, g.filters, k).t();
            matmul(&mut self.dcols, w, dy, false);
            for (i, ((dx, _), _)) in images.into_iter().enumerate() {
                if let Some(dx) = dx {
                    g.fold(&self.dcols, n, i * p, dx, &mut self.padded);
                }
            }
        }
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
        assert_eq!(
            channels, image[1],
            "conv2d_gemm: input and weight channels differ"
        );
        assert!(
            image[2] + 2 * pad >= kh && image[3] + 2 * pad >= kw,
            "conv2d_gemm: the kernel is larger than the padded image"
        );
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

    /// Rows of an unfolded image: one per input channel and kernel position.
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

    /// Images per product: see [`GROUP_COLUMNS`].
    fn group(&self) -> usize {
        let (least, most) = (*GROUP_IMAGES.start(), *GROUP_IMAGES.end());
        GROUP_COLUMNS.div_ceil(self.positions()).clamp(least, most)
    }

    /// Rows and columns of the input with its padding.
    fn padded(&self) -> [usize; 2] {
        let [_, _, h, w] = self.image;
        [h + 2 * self.pad, w + 2 * self.pad]
    }

    fn padded_len(&self) -> usize {
        let [hp, wp] = self.padded();
        self.image[1] * hp * wp
    }

    /// Calls `f(row, y, from)` for each unfolded row (channel `ch`, kernel position `(i, j)`)
    /// and each output row `y`: the row's `ow` values for `y` are those of the padded image
    /// from `from` on.
    fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize)) {
        let ([kh, kw], [oh, _], [hp, wp]) = (self.kernel, self.output(), self.padded());
        for row in 0..self.patch() {
            let (ch, i, j) = (row / (kh * kw), row / kw % kh, row % kw);
            for y in 0..oh {
                f(row, y, (ch * hp + y + i) * wp + j);
            }
        }
    }

    /// Where row `index` of an image (`ch * h + y`) starts in the padded image.
    fn padded_row(&self, index: usize) -> usize {
        let ([_, _, h, _], [hp, wp], pad) = (self.image, self.padded(), self.pad);
        (index / h * hp + index % h + pad) * wp + pad
    }

    /// `image [c, h, w]` into `padded [c, h + 2 pad, w + 2 pad]`, zeros around.
    fn pad(&self, image: &[f32], padded: &mut [f32]) {
        let w = self.image[3];
        padded.fill(0.0);
        for (index, row) in image.chunks(w).enumerate() {
            let start = self.padded_row(index);
            padded[start..start + w].copy_from_slice(row);
        }
    }

    /// im2col: `image [c, h, w]` into columns `at..at + p` of `cols [k, width]`, through
    /// `padded` (a buffer of [`Geometry::padded_len`] values).
    fn unfold(&self, image: &[f32], cols: &mut [f32], width: usize, at: usize, padded: &mut [f32]) {
        let ow = self.output()[1];
        self.pad(image, padded);
        self.for_each_run(|row, y, from| {
            let to = row * width + at + y * ow;
            copy_run(&mut cols[to..to + ow], &padded[from..from + ow]);
        });
    }

    /// The adjoint of [`Geometry::unfold`]: columns `at..at + p` of `cols [k, width]` summed
    /// into `image [c, h, w]`, through `padded`.
    fn fold(&self, cols: &[f32], width: usize, at: usize, image: &mut [f32], padded: &mut [f32]) {
        let (w, ow) = (self.image[3], self.output()[1]);
        padded.fill(0.0);
        self.for_each_run(|row, y, from| {
            let to = row * width + at + y * ow;
            add(&mut padded[from..from + ow], &cols[to..to + ow]);
        });
        for (index, row) in image.chunks_mut(w).enumerate() {
            let start = self.padded_row(index);
            row.copy_from_slice(&padded[start..start + w]);
        }
    }
}

/// Values [`copy_run`] moves at once.
const RUN: usize = 8;

/// `dst = src`, for the short rows of an unfolded image (7 to 28 values in the networks here),
/// in blocks of a fixed size, the last one overlapping the one before: the compiler turns a
/// copy of a length it cannot see into a call to `memmove`, which took a tenth of a step.
fn copy_run(dst: &mut [f32], src: &[f32]) {
    let len = dst.len();
    if len < RUN {
        dst.copy_from_slice(&src[..len]);
        return;
    }
    for start in (0..len).step_by(RUN) {
        let start = start.min(len - RUN);
        dst[start..start + RUN].copy_from_slice(&src[start..start + RUN]);
    }
}
