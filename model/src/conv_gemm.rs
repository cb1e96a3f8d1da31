//! Convolution on the CPU as one matrix multiply per image (im2col), forward and backward.
//!
//! Burn's Flex backend computes the forward pass of a convolution with im2col and gemm, but its
//! backward pass falls back on generic formulas: the input gradient as a transposed convolution
//! and the weight gradient as a convolution with a 24x24 kernel. Those dominate a training step
//! of the reference CNN. Here the whole layer is one autodiff operation: the forward pass keeps
//! its unfolded input, and the backward pass is two matrix multiplies and a fold.
//!
//! Shapes, for `n` images of `c` channels, `o` filters of `kh x kw`, `k = c*kh*kw` and
//! `p = oh*ow` output positions:
//! - `cols [n, k + 1, p]`: the unfolded input, with a row of ones that carries the bias;
//! - `filters [o, k + 1]`: the weights, flattened, with the bias as their last column;
//! - `y = filters x cols [n, o, p]`, and for an output gradient `dy`:
//!   `dfilters = sum over images of dy x colsᵀ`, `dcols = filtersᵀ x dy`, `dx = fold(dcols)`.
//!
//! Only unpadded convolutions with stride 1, no dilation and no groups take this path (the
//! layers of [`crate::CnnConfig`]); [`crate::Cnn`] uses it on the Flex backend only.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, DispatchDevice, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::{DType, Slice, TensorData};
use rayon::prelude::*;

/// A stride-1, unpadded convolution with bias: `x [n, c, h, w]`, `weight [o, c, kh, kw]`,
/// `bias [o]`, result `[n, o, h - kh + 1, w - kw + 1]`.
#[backend_extension(Flex, Autodiff)]
pub trait ConvGemm: Backend {
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// Whether [`conv2d`] runs this module's operation for `x` (f32 on the Flex backend).
pub fn supported(x: &Tensor<4>) -> bool {
    matches!(x.device().inner().as_dispatch(), DispatchDevice::Flex(_)) && x.dtype() == DType::F32
}

/// The convolution of `x` with `weight` plus `bias`, computed by this module's operation.
/// The caller checks [`supported`].
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(<burn::backend::Dispatch as ConvGemm>::conv2d_gemm(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// The unfolding and folding of images on one backend; the matrix multiplies are the
/// backend's own.
pub trait Im2col: Backend {
    /// `x [n, c, h, w]` to `cols [n, c*kh*kw + 1, oh*ow]`, the last row all ones.
    fn unfold(x: FloatTensor<Self>, kernel: [usize; 2]) -> FloatTensor<Self>;
    /// The adjoint of [`Im2col::unfold`] without its row of ones: `cols [n, c*kh*kw, oh*ow]`
    /// summed back into images `[n, c, h, w]`.
    fn fold(cols: FloatTensor<Self>, image: [usize; 4], kernel: [usize; 2]) -> FloatTensor<Self>;
}

/// The geometry of one convolution.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    /// Images, channels, height, width of the input.
    image: [usize; 4],
    kernel: [usize; 2],
    filters: usize,
}

impl Geometry {
    fn of<B: Backend>(x: &FloatTensor<B>, weight: &FloatTensor<B>) -> Self {
        let image = x.shape().dims::<4>();
        let [filters, channels, kh, kw] = weight.shape().dims::<4>();
        assert_eq!(
            channels, image[1],
            "conv2d_gemm: input and weight channels differ"
        );
        Self {
            image,
            kernel: [kh, kw],
            filters,
        }
    }

    fn output(&self) -> [usize; 2] {
        let [_, _, h, w] = self.image;
        let [kh, kw] = self.kernel;
        [h + 1 - kh, w + 1 - kw]
    }

    /// Rows of the unfolded input, without the row of ones.
    fn patch(&self) -> usize {
        self.image[1] * self.kernel[0] * self.kernel[1]
    }
}

/// `[o, k + 1]`: the weights flattened, the bias as the last column.
fn filters<B: Backend>(
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    g: &Geometry,
) -> FloatTensor<B> {
    let weight = B::float_reshape(weight, Shape::new([g.filters, g.patch()]));
    let bias = B::float_reshape(bias, Shape::new([g.filters, 1]));
    B::float_cat(vec![weight, bias], 1)
}

/// `y [n, o, oh, ow]` from the unfolded input and the filters.
fn apply<B: Backend>(
    cols: FloatTensor<B>,
    filters: FloatTensor<B>,
    g: &Geometry,
) -> FloatTensor<B> {
    let filters = B::float_reshape(filters, Shape::new([1, g.filters, g.patch() + 1]));
    let y = B::float_matmul(filters, cols);
    let [oh, ow] = g.output();
    B::float_reshape(y, Shape::new([g.image[0], g.filters, oh, ow]))
}

/// Columns `range` of the matrix `m`.
fn columns<B: Backend>(m: FloatTensor<B>, range: std::ops::Range<usize>) -> FloatTensor<B> {
    let rows = m.shape()[0];
    B::float_slice(m, &[Slice::from(0..rows), Slice::from(range)])
}

impl ConvGemm for Flex {
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let g = Geometry::of::<Self>(&x, &weight);
        let cols = Self::unfold(x, g.kernel);
        apply::<Self>(cols, filters::<Self>(weight, bias, &g), &g)
    }
}

/// What the backward pass keeps from the forward pass.
#[derive(Debug, Clone)]
struct Saved<B: Backend> {
    cols: FloatTensor<B>,
    filters: FloatTensor<B>,
    geometry: Geometry,
}

#[derive(Debug)]
struct ConvGemmBackward;

impl<B: Backend + Im2col> Backward<B, 3> for ConvGemmBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let Saved {
            cols,
            filters,
            geometry: g,
        } = ops.state;
        let [n, _, _, _] = g.image;
        let [oh, ow] = g.output();
        let dy = B::float_reshape(
            grads.consume::<B>(&ops.node),
            Shape::new([n, g.filters, oh * ow]),
        );
        let k = g.patch();

        if node_weight.is_some() || node_bias.is_some() {
            // Per image dy x colsᵀ [o, k + 1], summed over the images.
            let per_image = B::float_matmul(dy.clone(), B::float_swap_dims(cols, 1, 2));
            let dfilters = B::float_reshape(
                B::float_sum_dim(per_image, 0),
                Shape::new([g.filters, k + 1]),
            );
            if let Some(node) = node_weight {
                let dweight = columns::<B>(dfilters.clone(), 0..k);
                let shape = Shape::new([g.filters, g.image[1], g.kernel[0], g.kernel[1]]);
                grads.register::<B>(node.id, B::float_reshape(dweight, shape));
            }
            if let Some(node) = node_bias {
                let dbias = columns::<B>(dfilters, k..k + 1);
                grads.register::<B>(node.id, B::float_reshape(dbias, Shape::new([g.filters])));
            }
        }
        if let Some(node) = node_x {
            let weights = columns::<B>(filters, 0..k);
            let weights_t = B::float_reshape(
                B::float_swap_dims(weights, 0, 1),
                Shape::new([1, k, g.filters]),
            );
            let dcols = B::float_matmul(weights_t, dy);
            grads.register::<B>(node.id, B::fold(dcols, g.image, g.kernel));
        }
    }
}

impl<B: Backend + Im2col, C: CheckpointStrategy> ConvGemm for Autodiff<B, C> {
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let g = Geometry::of::<B>(x.primitive(), weight.primitive());
        let prepared = ConvGemmBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful();
        let cols = B::unfold(x.into_primitive(), g.kernel);
        let filters = filters::<B>(weight.into_primitive(), bias.into_primitive(), &g);
        match prepared {
            OpsKind::Tracked(prep) => {
                let saved = Saved {
                    cols: cols.clone(),
                    filters: filters.clone(),
                    geometry: g,
                };
                prep.finish(saved, apply::<B>(cols, filters, &g))
            }
            OpsKind::UnTracked(prep) => prep.finish(apply::<B>(cols, filters, &g)),
        }
    }
}

impl Im2col for Flex {
    fn unfold(x: FlexTensor, [kh, kw]: [usize; 2]) -> FlexTensor {
        let [n, c, h, w] = x.shape().dims::<4>();
        let (oh, ow) = (h + 1 - kh, w + 1 - kw);
        let (rows, p) = (c * kh * kw + 1, oh * ow);
        let x = x.to_contiguous();
        let src = f32_slice(&x);
        let mut cols = vec![0.0f32; n * rows * p];
        cols.par_chunks_mut(rows * p)
            .zip(src.par_chunks(c * h * w))
            .for_each(|(cols, image)| {
                let (patches, ones) = cols.split_at_mut((rows - 1) * p);
                ones.fill(1.0);
                for (row, patch) in patches.chunks_mut(p).enumerate() {
                    let (ch, i, j) = (row / (kh * kw), row / kw % kh, row % kw);
                    let plane = &image[ch * h * w..(ch + 1) * h * w];
                    for (y, out) in patch.chunks_mut(ow).enumerate() {
                        let start = (y + i) * w + j;
                        out.copy_from_slice(&plane[start..start + ow]);
                    }
                }
            });
        FlexTensor::from_data(TensorData::new(cols, [n, rows, p]))
    }

    fn fold(cols: FlexTensor, [n, c, h, w]: [usize; 4], [kh, kw]: [usize; 2]) -> FlexTensor {
        let (oh, ow) = (h + 1 - kh, w + 1 - kw);
        let (rows, p) = (c * kh * kw, oh * ow);
        let cols = cols.to_contiguous();
        let src = f32_slice(&cols);
        let mut images = vec![0.0f32; n * c * h * w];
        images
            .par_chunks_mut(c * h * w)
            .zip(src.par_chunks(rows * p))
            .for_each(|(image, cols)| {
                for (row, patch) in cols.chunks(p).enumerate() {
                    let (ch, i, j) = (row / (kh * kw), row / kw % kh, row % kw);
                    let plane = &mut image[ch * h * w..(ch + 1) * h * w];
                    for (y, from) in patch.chunks(ow).enumerate() {
                        let start = (y + i) * w + j;
                        for (to, from) in plane[start..start + ow].iter_mut().zip(from) {
                            *to += from;
                        }
                    }
                }
            });
        FlexTensor::from_data(TensorData::new(images, [n, c, h, w]))
    }
}

fn f32_slice(tensor: &FlexTensor) -> &[f32] {
    tensor
        .as_slice::<f32>()
        .expect("conv2d_gemm runs on contiguous f32 tensors only")
}
