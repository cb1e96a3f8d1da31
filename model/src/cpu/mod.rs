//! The networks' fully connected and convolution layers, max-pool and dropout computed by kernels
//! of our own on the CPU (Flex backend).
//!
//! Burn's Flex backend computes a convolution's forward pass with im2col and gemm, but its
//! backward pass with generic formulas (the input gradient as a transposed convolution, the
//! weight gradient as a convolution with a 24x24 kernel), its max-pool and dropout mask on one
//! thread, and copies the operands and result of every matrix multiply. Those dominated a
//! training step of the reference CNN. Each layer here is one autodiff operation whose forward
//! and backward passes are kernels in [`conv`], [`pool`] and [`linear`], spread over the images
//! of the batch on the rayon pool's threads; [`dropout`] draws its mask in parallel. The last
//! convolution and the max-pool are one operation: the convolution's output then only exists an
//! image at a time, in cache.
//!
//! The operations are a Burn backend extension: the trait [`CpuLayers`] is implemented for Flex
//! and for autodiff over Flex, and `#[backend_extension]` routes `Tensor`s to them. Other
//! backends (wgpu) keep Burn's own layers; [`supported`] says which applies.

mod conv;
mod dropout;
mod elementwise;
mod fresh;
pub mod isa;
mod lanes;
mod linear;
mod matmul;
mod norm;
mod optim;
mod pool;
mod reduce;

pub use dropout::{Mask, dropout};
pub use isa::InstructionSet;
pub use matmul::{Matrix, multiply};
pub use optim::{AdamSettings, CpuAdam, CpuAdamW, CpuSgd, CpuSgdState, moving_average};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, DispatchDevice, Flex, backend_extension,
};
use burn::prelude::*;
use burn::tensor::DType;

#[backend_extension(Flex, Autodiff)]
pub trait CpuLayers: Backend {
    /// A stride-1 convolution plus bias, the input padded with `pad` zeros on every side:
    /// `x [n, c, h, w]`, `weight [o, c, kh, kw]`, `bias [o]`, result
    /// `[n, o, h + 2 pad - kh + 1, w + 2 pad - kw + 1]`.
    fn cpu_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        pad: usize,
    ) -> FloatTensor<Self>;

    /// A fully connected layer: `x [n, in]`, `weight [in, out]`, `bias [out]`, result
    /// `[n, out]`.
    fn cpu_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// [`CpuLayers::cpu_conv2d`] followed by a max-pool over `size x size` windows with stride
    /// `size`: `[n, o, oh / size, ow / size]`.
    fn cpu_conv2d_max_pool2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        pad: usize,
        size: usize,
    ) -> FloatTensor<Self>;

    /// Each channel's mean and biased variance over `x [n, c, ...]`: `[2, c]`, not tracked by
    /// autodiff (as Burn's batch statistics are detached).
    fn cpu_batch_statistics(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Batch normalization of `x [n, c, ...]` with `stats [2, c]` (means, variances): the
    /// batch's own when `batch` (the gradient then goes through them too), else fixed ones.
    fn cpu_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
        batch: bool,
    ) -> FloatTensor<Self>;

    /// ReLU, as Burn's.
    fn cpu_relu(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `x` times dropout's `mask`.
    fn cpu_dropout(x: FloatTensor<Self>, mask: Mask) -> FloatTensor<Self>;
}

/// Whether the layers here can compute on `x`'s device and type (f32 on the Flex backend).
pub fn supported<const D: usize>(x: &Tensor<D>) -> bool {
    matches!(x.device().inner().as_dispatch(), DispatchDevice::Flex(_)) && x.dtype() == DType::F32
}

/// See [`CpuLayers::cpu_conv2d`]. The caller checks [`supported`].
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>, pad: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as CpuLayers>::cpu_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        pad,
    ))
}

/// See [`CpuLayers::cpu_linear`]. The caller checks [`supported`].
pub fn linear(x: Tensor<2>, weight: Tensor<2>, bias: Tensor<1>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as CpuLayers>::cpu_linear(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// See [`CpuLayers::cpu_conv2d_max_pool2d`]. The caller checks [`supported`].
pub fn conv2d_max_pool2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    pad: usize,
    size: usize,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as CpuLayers>::cpu_conv2d_max_pool2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        pad,
        size,
    ))
}

/// See [`CpuLayers::cpu_batch_statistics`]. The caller checks [`supported`].
pub fn batch_statistics<const D: usize>(x: Tensor<D>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as CpuLayers>::cpu_batch_statistics(
        x.into_dispatch(),
    ))
}

/// See [`CpuLayers::cpu_batch_norm`]. The caller checks [`supported`].
pub fn batch_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    stats: Tensor<2>,
    epsilon: f64,
    batch: bool,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as CpuLayers>::cpu_batch_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        stats.into_dispatch(),
        epsilon,
        batch,
    ))
}

/// See [`CpuLayers::cpu_relu`]. The caller checks [`supported`].
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as CpuLayers>::cpu_relu(x.into_dispatch()))
}

/// See [`CpuLayers::cpu_dropout`]. The caller checks [`supported`].
fn masked<const D: usize>(x: Tensor<D>, mask: Mask) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as CpuLayers>::cpu_dropout(
        x.into_dispatch(),
        mask,
    ))
}

/// The gradients of a layer with weights and a bias.
#[derive(Debug)]
pub struct Grads<B: Backend> {
    /// Absent when the input needs none.
    pub x: Option<FloatTensor<B>>,
    pub weight: FloatTensor<B>,
    pub bias: FloatTensor<B>,
}

/// The forward and backward passes on one backend, without autodiff.
pub trait Kernels: Backend {
    fn conv_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        pad: usize,
    ) -> FloatTensor<Self>;

    /// The gradients for the output gradient `dy`; that of `x` only if `input_grad`.
    fn conv_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        pad: usize,
        input_grad: bool,
    ) -> Grads<Self>;

    fn linear_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// The gradients for the output gradient `dy`; that of `x` only if `input_grad`.
    fn linear_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        input_grad: bool,
    ) -> Grads<Self>;

    /// The pooled output, and where in its plane of the convolution each maximum was.
    fn conv_pool_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        pad: usize,
        size: usize,
    ) -> (FloatTensor<Self>, IntTensor<Self>);

    /// The gradients for the gradient `dy` of the pooled output.
    fn conv_pool_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        argmax: IntTensor<Self>,
        pad: usize,
        input_grad: bool,
    ) -> Grads<Self>;

    fn batch_statistics(x: FloatTensor<Self>) -> FloatTensor<Self>;

    fn norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f32,
    ) -> FloatTensor<Self>;

    /// The gradients for `dy`: `weight` is gamma's, `bias` beta's.
    fn norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        norm: Norm<Self>,
        input_grad: bool,
    ) -> Grads<Self>;

    fn relu_forward(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// The gradient of ReLU from its output `y` and the output's gradient `dy`.
    fn relu_gradient(y: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `x` times `mask`: dropout, and its own backward pass.
    fn masked(x: FloatTensor<Self>, mask: Mask) -> FloatTensor<Self>;
}

impl Kernels for Flex {
    fn conv_forward(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, pad: usize) -> FlexTensor {
        conv::forward(x, weight, bias, pad)
    }

    fn conv_backward(
        x: FlexTensor,
        weight: FlexTensor,
        dy: FlexTensor,
        pad: usize,
        input_grad: bool,
    ) -> Grads<Self> {
        conv::backward(x, weight, dy, pad, input_grad)
    }

    fn linear_forward(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        linear::forward(x, weight, bias)
    }

    fn linear_backward(
        x: FlexTensor,
        weight: FlexTensor,
        dy: FlexTensor,
        input_grad: bool,
    ) -> Grads<Self> {
        linear::backward(x, weight, dy, input_grad)
    }

    fn conv_pool_forward(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        pad: usize,
        size: usize,
    ) -> (FlexTensor, FlexTensor) {
        conv::forward_pooled(x, weight, bias, pad, size)
    }

    fn conv_pool_backward(
        x: FlexTensor,
        weight: FlexTensor,
        dy: FlexTensor,
        argmax: FlexTensor,
        pad: usize,
        input_grad: bool,
    ) -> Grads<Self> {
        conv::backward_pooled(x, weight, dy, argmax, pad, input_grad)
    }

    fn batch_statistics(x: FlexTensor) -> FlexTensor {
        norm::statistics(x)
    }

    fn norm_forward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stats: FlexTensor,
        epsilon: f32,
    ) -> FlexTensor {
        norm::forward(x, gamma, beta, stats, epsilon)
    }

    fn norm_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        dy: FlexTensor,
        norm: Norm<Self>,
        input_grad: bool,
    ) -> Grads<Self> {
        norm::backward(x, gamma, dy, norm, input_grad)
    }

    fn relu_forward(x: FlexTensor) -> FlexTensor {
        elementwise::relu(x)
    }

    fn relu_gradient(y: FlexTensor, dy: FlexTensor) -> FlexTensor {
        elementwise::relu_backward(y, dy)
    }

    fn masked(x: FlexTensor, mask: Mask) -> FlexTensor {
        elementwise::dropout(x, mask)
    }
}

impl CpuLayers for Flex {
    fn cpu_conv2d(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, pad: usize) -> FlexTensor {
        Self::conv_forward(x, weight, bias, pad)
    }

    fn cpu_linear(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        Self::linear_forward(x, weight, bias)
    }

    fn cpu_conv2d_max_pool2d(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        pad: usize,
        size: usize,
    ) -> FlexTensor {
        Self::conv_pool_forward(x, weight, bias, pad, size).0
    }

    fn cpu_batch_statistics(x: FlexTensor) -> FlexTensor {
        Self::batch_statistics(x)
    }

    fn cpu_batch_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stats: FlexTensor,
        epsilon: f64,
        _batch: bool,
    ) -> FlexTensor {
        Self::norm_forward(x, gamma, beta, stats, epsilon as f32)
    }

    fn cpu_relu(x: FlexTensor) -> FlexTensor {
        Self::relu_forward(x)
    }

    fn cpu_dropout(x: FlexTensor, mask: Mask) -> FlexTensor {
        Self::masked(x, mask)
    }
}

/// The backward step of ReLU, which keeps the output.
#[derive(Debug)]
struct ReluBackward;

impl<B: Kernels> Backward<B, 1> for ReluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        if let [Some(node)] = ops.parents {
            grads.register::<B>(node.id, B::relu_gradient(ops.state, dy));
        }
    }
}

/// The backward step of dropout, which keeps the mask's seed only.
#[derive(Debug)]
struct DropoutBackward;

impl<B: Kernels> Backward<B, 1> for DropoutBackward {
    type State = Mask;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        if let [Some(node)] = ops.parents {
            grads.register::<B>(node.id, B::masked(dy, ops.state));
        }
    }
}

/// The backward step of a layer with weights and a bias.
#[derive(Debug)]
struct WeightedBackward;

/// What the backward step keeps: the input, the weights, and which layer they belong to.
#[derive(Debug, Clone)]
struct WeightedState<B: Backend> {
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    layer: Layer<B>,
}

#[derive(Debug, Clone)]
enum Layer<B: Backend> {
    Linear,
    Conv {
        pad: usize,
    },
    /// A convolution and its max-pool, with where the maxima were.
    ConvPool {
        argmax: IntTensor<B>,
        pad: usize,
    },
    /// Batch normalization: the weights are gamma, the bias beta.
    Norm(Norm<B>),
}

/// What the backward step of batch normalization needs besides the input and gamma.
#[derive(Debug, Clone)]
pub struct Norm<B: Backend> {
    /// Means, then variances: `[2, c]`.
    pub stats: FloatTensor<B>,
    pub epsilon: f32,
    /// Whether `stats` are the batch's own.
    pub batch: bool,
}

impl<B: Kernels> Backward<B, 3> for WeightedBackward {
    type State = WeightedState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let WeightedState { x, weight, layer } = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let input_grad = node_x.is_some();
        let computed = match layer {
            Layer::Linear => B::linear_backward(x, weight, dy, input_grad),
            Layer::Conv { pad } => B::conv_backward(x, weight, dy, pad, input_grad),
            Layer::ConvPool { argmax, pad } => {
                B::conv_pool_backward(x, weight, dy, argmax, pad, input_grad)
            }
            Layer::Norm(norm) => B::norm_backward(x, weight, dy, norm, input_grad),
        };
        if let (Some(node), Some(dx)) = (node_x, computed.x) {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_weight {
            grads.register::<B>(node.id, computed.weight);
        }
        if let Some(node) = node_bias {
            grads.register::<B>(node.id, computed.bias);
        }
    }
}

impl<B: Kernels, C: CheckpointStrategy> CpuLayers for Autodiff<B, C> {
    fn cpu_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        pad: usize,
    ) -> FloatTensor<Self> {
        weighted_step::<B, C>(x, weight, bias, |x, weight, bias| {
            (B::conv_forward(x, weight, bias, pad), Layer::Conv { pad })
        })
    }

    fn cpu_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        weighted_step::<B, C>(x, weight, bias, |x, weight, bias| {
            (B::linear_forward(x, weight, bias), Layer::Linear)
        })
    }

    fn cpu_conv2d_max_pool2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        pad: usize,
        size: usize,
    ) -> FloatTensor<Self> {
        weighted_step::<B, C>(x, weight, bias, |x, weight, bias| {
            let (y, argmax) = B::conv_pool_forward(x, weight, bias, pad, size);
            (y, Layer::ConvPool { argmax, pad })
        })
    }

    fn cpu_batch_statistics(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::batch_statistics(x.into_primitive()))
    }

    fn cpu_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
        batch: bool,
    ) -> FloatTensor<Self> {
        let (stats, epsilon) = (stats.into_primitive(), epsilon as f32);
        weighted_step::<B, C>(x, gamma, beta, |x, gamma, beta| {
            let y = B::norm_forward(x, gamma, beta, stats.clone(), epsilon);
            let norm = Norm {
                stats,
                epsilon,
                batch,
            };
            (y, Layer::Norm(norm))
        })
    }

    fn cpu_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let prepared = ReluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        match prepared {
            OpsKind::Tracked(prep) => {
                let y = B::relu_forward(x.into_primitive());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::relu_forward(x.into_primitive())),
        }
    }

    fn cpu_dropout(x: FloatTensor<Self>, mask: Mask) -> FloatTensor<Self> {
        let prepared = DropoutBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        match prepared {
            OpsKind::Tracked(prep) => prep.finish(mask, B::masked(x.into_primitive(), mask)),
            OpsKind::UnTracked(prep) => prep.finish(B::masked(x.into_primitive(), mask)),
        }
    }
}

/// Runs `forward` on the inputs' primitives and records its backward step when a gradient is
/// needed.
fn weighted_step<B: Kernels, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
    forward: impl FnOnce(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) -> (FloatTensor<B>, Layer<B>),
) -> FloatTensor<Autodiff<B, C>> {
    let prepared = WeightedBackward
        .prepare::<C>([x.node(), weight.node(), bias.node()])
        .compute_bound()
        .stateful();
    let (x, weight, bias) = (
        x.into_primitive(),
        weight.into_primitive(),
        bias.into_primitive(),
    );
    match prepared {
        OpsKind::Tracked(prep) => {
            let (y, layer) = forward(x.clone(), weight.clone(), bias);
            prep.finish(WeightedState { x, weight, layer }, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x, weight, bias).0),
    }
}

fn f32s(tensor: &FlexTensor) -> &[f32] {
    tensor
        .as_slice()
        .expect("the CPU layers compute on contiguous f32 tensors")
}

fn i32s(tensor: &FlexTensor) -> &[i32] {
    tensor
        .as_slice()
        .expect("the max-pool's indices are contiguous i32 tensors")
}
