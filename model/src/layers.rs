//! Burn's layers, applied by the project's CPU kernels ([`crate::cpu`]) where those apply and
//! by Burn's own implementation elsewhere (wgpu, other shapes or types). The parameters are
//! Burn's either way, so models and checkpoints do not depend on where they were trained.

use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{Dropout, PaddingConfig2d};
use burn::prelude::*;

use crate::cpu;

/// `conv` applied to `x`: by the CPU kernels of [`cpu`] where they apply (much faster than
/// Flex's own in training), by Burn's convolution elsewhere.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let plain = conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && matches!(conv.padding, PaddingConfig2d::Valid);
    match &conv.bias {
        Some(bias) if plain && cpu::supported(&x) => cpu::conv2d(x, conv.weight.val(), bias.val()),
        _ => conv.forward(x),
    }
}

/// `pool` applied to `x`: by the CPU kernels of [`cpu`] where they apply, by Burn's elsewhere.
pub fn max_pool2d(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [size, width] = pool.kernel_size;
    let plain = size == width
        && pool.stride == pool.kernel_size
        && pool.dilation == [1, 1]
        && !pool.ceil_mode
        && matches!(pool.padding, PaddingConfig2d::Valid);
    if plain && cpu::supported(&x) {
        cpu::max_pool2d(x, size)
    } else {
        pool.forward(x)
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
