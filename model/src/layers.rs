//! Burn's layers, applied by the project's CPU kernels ([`crate::cpu`]) where those apply and
//! by Burn's own implementation elsewhere (wgpu, other shapes or types). The parameters are
//! Burn's either way, so models and checkpoints do not depend on where they were trained.

use burn::module::RunningState;
use burn::nn::activation::Activation;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, Dropout, Linear, PaddingConfig2d};
use burn::prelude::*;

use crate::cpu;

/// `conv` applied to `x`.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match (&conv.bias, plain_conv(conv)) {
        (Some(bias), Some(pad)) if cpu::supported(&x) => {
            cpu::conv2d(x, conv.weight.val(), bias.val(), pad)
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
    match (&conv.bias, plain_conv(conv), plain_pool(pool)) {
        (Some(bias), Some(pad), Some(size)) if cpu::supported(&x) => {
            cpu::conv2d_max_pool2d(x, conv.weight.val(), bias.val(), pad, size)
        }
        _ => pool.forward(conv2d(conv, x)),
    }
}

/// `norm` applied to `x`: with the batch's statistics (and an update of the running ones) when
/// training on an autodiff device, as Burn's module does, else with the running statistics.
pub fn batch_norm<const D: usize>(norm: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    if !cpu::supported(&x) {
        let y = norm.forward(x);
        settle(norm);
        return y;
    }
    let training = x.device().is_autodiff() && norm.training.is_enabled();
    let stats = if training {
        let stats = cpu::batch_statistics(x.clone());
        let [channels] = norm.gamma.dims();
        let running = |state: &RunningState<Tensor<1>>, row: usize| {
            let batch = stats.clone().narrow(0, row, 1).reshape([channels]);
            let value = state.value_sync().to_device(&x.device());
            state.update(
                (value.mul_scalar(1.0 - norm.momentum) + batch.mul_scalar(norm.momentum)).detach(),
            );
        };
        running(&norm.running_mean, 0);
        running(&norm.running_var, 1);
        settle(norm);
        stats
    } else {
        Tensor::stack(vec![norm.running_mean.value(), norm.running_var.value()], 0)
            .to_device(&x.device())
    };
    cpu::batch_norm(
        x,
        norm.gamma.val(),
        norm.beta.val(),
        stats,
        norm.epsilon,
        training,
    )
}

/// Makes the running statistics' latest update their value. Burn's `RunningState` holds an
/// update per thread until the next one, so a checkpoint or a moving average taken between
/// two steps would see the statistics one step late, and a resumed run would differ.
fn settle(norm: &BatchNorm) {
    norm.running_mean.value_sync();
    norm.running_var.value_sync();
}

/// The padding on every side if the CPU kernels compute `conv`: stride 1, the same padding on
/// every side, no dilation or groups.
pub(crate) fn plain_conv(conv: &Conv2d) -> Option<usize> {
    let pad = match conv.padding {
        PaddingConfig2d::Valid => 0,
        PaddingConfig2d::Explicit(top, left, bottom, right)
            if [left, bottom, right] == [top; 3] =>
        {
            top
        }
        _ => return None,
    };
    let plain = conv.stride == [1, 1] && conv.dilation == [1, 1] && conv.groups == 1;
    plain.then_some(pad)
}

/// The window side of `pool` if the CPU kernels compute it: square windows as far apart as they
/// are wide, no padding or dilation.
pub(crate) fn plain_pool(pool: &MaxPool2d) -> Option<usize> {
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
