//! Burn's layers, applied by the project's CPU kernels ([`crate::cpu`]) where those apply and
//! by Burn's own implementation elsewhere (wgpu, other shapes or types). The parameters are
//! Burn's either way, so models and checkpoints do not depend on where they were trained.

use burn::nn::activation::Activation;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{Dropout, Linear, PaddingConfig2d};
use burn::prelude::*;

use crate::cpu;

/// `conv` applied to `x`.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match &conv.bias {
        Some(bias) if plain_conv(conv) && cpu::supported(&x) => {
            cpu::conv2d(x, conv.weight.val(), bias.val())
        }
        _ => conv.forward(x),
    }
}

/// `layer` applied to `x`.
pub fn linear(layer: &Linear, x: Tensor<2>) -> Tensor<2> {
    match &layer.bias {
        Some(bias) if cpu::supported(&x) => cpu::linear(x, layer.weight.val(), bias.val()),
        _ => layer.forward(x),
    }
}

/// `conv` then `pool` applied to `x`.
pub fn conv2d_max_pool2d(conv: &Conv2d, pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    match (&conv.bias, plain_pool(pool)) {
        (Some(bias), Some(size)) if plain_conv(conv) && cpu::supported(&x) => {
            cpu::conv2d_max_pool2d(x, conv.weight.val(), bias.val(), size)
        }
        _ => pool.forward(conv2d(conv, x)),
    }
}

/// Whether the CPU kernels compute `conv`: stride 1, no padding, dilation or groups.
fn plain_conv(conv: &Conv2d) -> bool {
    conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && matches!(conv.padding, PaddingConfig2d::Valid)
}

/// The window side of `pool` if the CPU kernels compute it: square windows as far apart as they
/// are wide, no padding or dilation.
fn plain_pool(pool: &MaxPool2d) -> Option<usize> {
    let [size, width] = pool.kernel_size;
    let plain = size == width
        && pool.stride == pool.kernel_size
        && pool.dilation == [1, 1]
        && !pool.ceil_mode
        && matches!(pool.padding, PaddingConfig2d::Valid);
    plain.then_some(size)
}

/// `activation` applied to `x`.
pub fn activate<const D: usize>(activation: &Activation, x: Tensor<D>) -> Tensor<D> {
    match activation {
        Activation::Relu(_) if cpu::supported(&x) => cpu::relu(x),
        _ => activation.forward(x),
    }
}

/// `layer` applied to `x`.
pub fn dropout<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    if cpu::supported(&x) {
        cpu::dropout(layer, x)
    } else {
        layer.forward(x)
    }
}
