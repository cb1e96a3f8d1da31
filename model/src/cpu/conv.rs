//! Convolution (stride 1, with zero padding of `pad` pixels on every side) as matrix
//! multiplies, one image at a time: with `cols [k, p]` an image unfolded (im2col: `k = c*kh*kw`
//! rows, `p = oh*ow` output positions) and `w [o, k]` the flattened weights,
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
    y.par_chunks_mut(g.output_len())
        .zip(x.par_chunks(g.image_len()))
        .for_each_init(
            || vec![0.0f32; g.cols_len()],
            |cols, (y, x)| g.forward_image(w, bias, x, cols, y),
        );
    let [n, _, _, _] = g.image;
    let [oh, ow] = g.output();
    FlexTensor::from_data(TensorData::new(y, [n, g.filters, oh, ow]))
}

/// A convolution followed by a `size x size` max-pool: the pooled `[n, o, oh / size,
/// ow / size]` and where in its plane of the convolution each maximum was. The convolution's
/// output only exists one image at a time, in a thread's buffer.
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
    pooled
        .par_chunks_mut(pooled_len)
        .zip(argmax.par_chunks_mut(pooled_len))
        .zip(x.par_chunks(g.image_len()))
        .for_each_init(
            || (vec![0.0f32; g.cols_len()], vec![0.0f32; g.output_len()]),
            |(cols, y), ((pooled, argmax), x)| {
                g.forward_image(w, bias, x, cols, y);
                pool::forward_planes(y, g.output(), size, pooled, argmax);
            },
        );
    let shape = [g.image[0], g.filters, ph, pw];
    (
        FlexTensor::from_data(TensorData::new(pooled, shape)),
        FlexTensor::from_data(TensorData::new(argmax, shape)),
    )
}

/// Images per task of the backward pass, whose weight gradients one task sums. Fixed, so that the
/// sums do not depend on the thread count; small, so that a batch keeps many cores busy: a
/// batch of 64 makes 32 tasks (with 8 images a task it made 8, and 16 cores idled half the
/// time in the largest part of a CNN's step).
const IMAGES_PER_TASK: usize = 2;

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
        .chunks(IMAGES_PER_TASK)
        .map_init(
            || Scratch::new(&g),
            |scratch, images| {
                let mut sums = Sums::new(&g);
                for ((dx, x), dy) in images {
                    scratch.add_image(&g, w, x, dy, dx, &mut sums);
                }
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

/// A thread's scratch buffers for the backward pass, reused from task to task.
struct Scratch {
    cols: Vec<f32>,
    dcols: Vec<f32>,
    /// The convolution's output gradient, when it comes from a max-pool's.
    dy: Vec<f32>,
}

impl Scratch {
    fn new(g: &Geometry) -> Self {
        Self {
            cols: vec![0.0; g.cols_len()],
            dcols: vec![0.0; g.cols_len()],
            dy: Vec::new(),
        }
    }

    /// Adds one image's weight and bias gradients to `sums`, and writes its input gradient to
    /// `dx`.
    fn add_image(
        &mut self,
        g: &Geometry,
        w: &[f32],
        x: &[f32],
        dy: OutputGrad,
        dx: Option<&mut [f32]>,
        sums: &mut Sums,
    ) {
        let dy = match dy {
            OutputGrad::Dense(dy) => dy,
            OutputGrad::Pooled { dy, argmax } => {
                self.dy.resize(g.output_len(), 0.0);
                pool::backward_planes(dy, argmax, g.positions(), &mut self.dy);
                &self.dy
            }
        };
        let (k, p) = (g.patch(), g.positions());
        g.unfold(x, &mut self.cols);
        let dy_m = Matrix::new(dy, g.filters, p);
        matmul(
            &mut sums.dweight_t,
            Matrix::new(&self.cols, k, p),
            dy_m.t(),
            true,
        );
        let isa = InstructionSet::detected();
        for (sum, row) in sums.dbias.iter_mut().zip(dy.chunks(p)) {
            *sum += reduce::sum(isa, row);
        }
        if let Some(dx) = dx {
            matmul(
                &mut self.dcols,
                Matrix::new(w, g.filters, k).t(),
                dy_m,
                false,
            );
            g.fold(&self.dcols, dx);
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

/// Where one row of unfolded pixels comes from: `cols[to + skip..to + skip + len]` is
/// `image[from..from + len]`, and the rest of the row's `ow` values are padding (zero).
struct Run {
    to: usize,
    from: usize,
    skip: usize,
    len: usize,
}

impl Run {
    /// The pixels of the image the row copies.
    fn source(&self) -> std::ops::Range<usize> {
        self.from..self.from + self.len
    }

    /// Where in `cols` they go.
    fn target(&self) -> std::ops::Range<usize> {
        self.to + self.skip..self.to + self.skip + self.len
    }
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

    fn cols_len(&self) -> usize {
        self.patch() * self.positions()
    }

    /// Calls `f` with each [`Run`] of each unfolded row: the pixels under kernel position
    /// `(i, j)` of channel `ch` for one output row. Rows that fall wholly in the padding have
    /// `len` 0.
    fn for_each_run(&self, mut f: impl FnMut(Run)) {
        let [_, _, h, w] = self.image;
        let [kh, kw] = self.kernel;
        let [oh, ow] = self.output();
        let pad = self.pad;
        for row in 0..self.patch() {
            let (ch, i, j) = (row / (kh * kw), row / kw % kh, row % kw);
            // Output columns whose input column `x + j - pad` is inside the image.
            let skip = pad.saturating_sub(j).min(ow);
            let end = (w + pad).saturating_sub(j).min(ow);
            for y in 0..oh {
                let to = row * oh * ow + y * ow;
                let source = (y + i).checked_sub(pad).filter(|&sy| sy < h);
                match source {
                    Some(sy) if end > skip => f(Run {
                        to,
                        from: ch * h * w + sy * w + skip + j - pad,
                        skip,
                        len: end - skip,
                    }),
                    _ => f(Run {
                        to,
                        from: 0,
                        skip: 0,
                        len: 0,
                    }),
                }
            }
        }
    }

    /// One image's convolution: `y [o, p] = w x unfold(x) + bias`, with `cols` as scratch.
    fn forward_image(&self, w: &[f32], bias: &[f32], x: &[f32], cols: &mut [f32], y: &mut [f32]) {
        for (row, &b) in y.chunks_mut(self.positions()).zip(bias) {
            row.fill(b);
        }
        self.unfold(x, cols);
        let w = Matrix::new(w, self.filters, self.patch());
        let cols = Matrix::new(cols, self.patch(), self.positions());
        matmul(y, w, cols, true);
    }

    /// im2col: `image [c, h, w]` to `cols [k, p]`.
    fn unfold(&self, image: &[f32], cols: &mut [f32]) {
        let ow = self.output()[1];
        self.for_each_run(|run| {
            let target = run.target();
            cols[run.to..target.start].fill(0.0);
            cols[target.clone()].copy_from_slice(&image[run.source()]);
            cols[target.end..run.to + ow].fill(0.0);
        });
    }

    /// The adjoint of [`Geometry::unfold`]: `cols [k, p]` summed into `image [c, h, w]`.
    fn fold(&self, cols: &[f32], image: &mut [f32]) {
        image.fill(0.0);
        self.for_each_run(|run| add(&mut image[run.source()], &cols[run.target()]));
    }
}
