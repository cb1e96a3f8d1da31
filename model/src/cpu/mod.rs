//! The CNN's convolution, max-pool and dropout computed by kernels of our own on the CPU (Flex
//! backend).
//!
//! Burn's Flex backend computes a convolution's forward pass with im2col and gemm, but its
//! backward pass with generic formulas (the input gradient as a transposed convolution, the
//! weight gradient as a convolution with a 24x24 kernel), and its max-pool on one thread. Those
//! dominated a training step of the reference CNN. Each layer here is one autodiff operation
//! whose forward and backward passes are kernels in [`conv`] and [`pool`], spread over the
//! images of the batch on the rayon pool's threads.
//!
//! The operations are a Burn backend extension: the trait [`CpuLayers`] is implemented for Flex
//! and for autodiff over Flex, and `#[backend_extension]` routes `Tensor`s to them. Other
//! backends (wgpu) keep Burn's own layers; [`supported`] says which applies.

mod conv;
mod dropout;
mod pool;

pub use dropout::dropout;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{
    Autodiff, Backend, Dispatch, DispatchDevice, Flex, TensorMetadata, backend_extension,
};
use burn::prelude::*;
use burn::tensor::DType;

#[backend_extension(Flex, Autodiff)]
pub trait CpuLayers: Backend {
    /// A stride-1, unpadded convolution plus bias: `x [n, c, h, w]`, `weight [o, c, kh, kw]`,
    /// `bias [o]`, result `[n, o, h - kh + 1, w - kw + 1]`.
    fn cpu_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// Max-pool over `size x size` windows with stride `size`, no padding:
    /// `x [n, c, h, w]` to `[n, c, h / size, w / size]`.
    fn cpu_max_pool2d(x: FloatTensor<Self>, size: usize) -> FloatTensor<Self>;
}

/// Whether the layers here can compute on `x`'s device and type (f32 on the Flex backend).
pub fn supported<const D: usize>(x: &Tensor<D>) -> bool {
    matches!(x.device().inner().as_dispatch(), DispatchDevice::Flex(_)) && x.dtype() == DType::F32
}

/// See [`CpuLayers::cpu_conv2d`]. The caller checks [`supported`].
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as CpuLayers>::cpu_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// See [`CpuLayers::cpu_max_pool2d`]. The caller checks [`supported`].
pub fn max_pool2d(x: Tensor<4>, size: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as CpuLayers>::cpu_max_pool2d(
        x.into_dispatch(),
        size,
    ))
}

/// The gradients of one convolution.
#[derive(Debug)]
pub struct ConvGrads<B: Backend> {
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
    ) -> FloatTensor<Self>;

    /// The gradients for the output gradient `dy`; that of `x` only if `input_grad`.
    fn conv_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        input_grad: bool,
    ) -> ConvGrads<Self>;

    /// The pooled maxima, and where in its image plane each one was.
    fn pool_forward(x: FloatTensor<Self>, size: usize) -> (FloatTensor<Self>, IntTensor<Self>);

    /// The output gradient `dy` routed back to the maxima of an input of `shape`.
    fn pool_backward(
        dy: FloatTensor<Self>,
        argmax: IntTensor<Self>,
        shape: Shape,
    ) -> FloatTensor<Self>;
}

impl Kernels for Flex {
    fn conv_forward(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        conv::forward(x, weight, bias)
    }

    fn conv_backward(
        x: FlexTensor,
        weight: FlexTensor,
        dy: FlexTensor,
        input_grad: bool,
    ) -> ConvGrads<Self> {
        conv::backward(x, weight, dy, input_grad)
    }

    fn pool_forward(x: FlexTensor, size: usize) -> (FlexTensor, FlexTensor) {
        pool::forward(x, size)
    }

    fn pool_backward(dy: FlexTensor, argmax: FlexTensor, shape: Shape) -> FlexTensor {
        pool::backward(dy, argmax, shape)
    }
}

impl CpuLayers for Flex {
    fn cpu_conv2d(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        Self::conv_forward(x, weight, bias)
    }

    fn cpu_max_pool2d(x: FlexTensor, size: usize) -> FlexTensor {
        Self::pool_forward(x, size).0
    }
}

#[derive(Debug)]
struct ConvBackward;

impl<B: Kernels> Backward<B, 3> for ConvBackward {
    /// The input and the weights.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let (x, weight) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let computed = B::conv_backward(x, weight, dy, node_x.is_some());
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

#[derive(Debug)]
struct PoolBackward;

impl<B: Kernels> Backward<B, 1> for PoolBackward {
    /// Where the maxima were, and the input's shape.
    type State = (IntTensor<B>, Shape);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let (argmax, shape) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::pool_backward(dy, argmax, shape));
        }
    }
}

impl<B: Kernels, C: CheckpointStrategy> CpuLayers for Autodiff<B, C> {
    fn cpu_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let prepared = ConvBackward
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
                let state = (x.clone(), weight.clone());
                prep.finish(state, B::conv_forward(x, weight, bias))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv_forward(x, weight, bias)),
        }
    }

    fn cpu_max_pool2d(x: FloatTensor<Self>, size: usize) -> FloatTensor<Self> {
        let prepared = PoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let x = x.into_primitive();
        let shape = x.shape();
        let (y, argmax) = B::pool_forward(x, size);
        match prepared {
            OpsKind::Tracked(prep) => prep.finish((argmax, shape), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
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
