//! The CPU kernels give the results of Burn's own layers: outputs and the gradients of the
//! input, the weights and the bias, on fixed random inputs; whatever the thread count.

use std::sync::{Mutex, MutexGuard, PoisonError};

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use model::{cpu, layers};

/// The CPU device, seeded, and the lock on its random generator: Flex has one generator for
/// the process, and tests run in parallel, so a test that seeds it and then draws (dropout's
/// "same seed, same mask") would otherwise see another test's draws in between.
fn device() -> (Device, MutexGuard<'static, ()>) {
    static GENERATOR: Mutex<()> = Mutex::new(());
    let guard = GENERATOR.lock().unwrap_or_else(PoisonError::into_inner);
    let device = Device::flex().autodiff();
    device.seed(7);
    (device, guard)
}

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}

/// Asserts that `ours` and `reference` agree to float rounding.
fn assert_close<const D: usize>(what: &str, ours: Tensor<D>, reference: Tensor<D>) {
    assert_eq!(ours.dims(), reference.dims(), "{what}: shapes");
    let scale = reference.clone().abs().max().into_scalar::<f32>().max(1.0);
    let error = (ours - reference).abs().max().into_scalar::<f32>();
    assert!(
        error <= 1e-5 * scale,
        "{what}: largest difference {error} (values up to {scale})"
    );
}

/// Output and gradients (input, `weight`, `bias`) of `ours` (the CPU kernels) against
/// `reference` (Burn's layers), for the same input and the same weighting of the output.
fn assert_same_layer<const D: usize, const W: usize>(
    (weight, bias): (&Param<Tensor<W>>, Option<&Param<Tensor<1>>>),
    x: Tensor<D>,
    ours: impl Fn(Tensor<D>) -> Tensor<D>,
    reference: impl Fn(Tensor<D>) -> Tensor<D>,
) {
    assert!(
        cpu::supported(&x),
        "the CPU kernels must be the ones under test"
    );
    let (x_ours, x_ref) = (x.clone().require_grad(), x.require_grad());
    let (y_ours, y_ref) = (ours(x_ours.clone()), reference(x_ref.clone()));
    let g = random(y_ref.dims(), &y_ref.device());
    let grads_ours = (y_ours.clone() * g.clone()).sum().backward();
    let grads_ref = (y_ref.clone() * g).sum().backward();
    assert_close("output", y_ours, y_ref);
    let grad = |x: &Tensor<D>, grads| x.grad(grads).expect("input gradient");
    assert_close(
        "input gradient",
        grad(&x_ours, &grads_ours),
        grad(&x_ref, &grads_ref),
    );
    let weight = |grads| weight.grad(grads).expect("weight gradient");
    assert_close("weight gradient", weight(&grads_ours), weight(&grads_ref));
    let bias = |grads| bias.and_then(|b| b.grad(grads)).expect("bias gradient");
    assert_close("bias gradient", bias(&grads_ours), bias(&grads_ref));
}

/// `f` run on a thread pool of `threads` threads.
fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
        .install(f)
}

fn parameters(conv: &Conv2d) -> (&Param<Tensor<4>>, Option<&Param<Tensor<1>>>) {
    (&conv.weight, conv.bias.as_ref())
}

fn conv(channels: [usize; 2], kernel: [usize; 2], device: &Device) -> Conv2d {
    Conv2dConfig::new(channels, kernel).init(device)
}

#[test]
fn convolution_matches_burn() {
    let (device, _generator) = device();
    // Rectangular images and kernel, several images, channels in and out.
    for (channels, kernel, input) in [
        ([1, 4], [3, 3], [5, 1, 12, 12]),
        ([3, 5], [3, 2], [4, 3, 10, 9]),
        ([8, 2], [1, 1], [2, 8, 4, 7]),
    ] {
        let layer = conv(channels, kernel, &device);
        assert_same_layer(
            parameters(&layer),
            random(input, &device),
            |x| layers::conv2d(&layer, x),
            |x| layer.forward(x),
        );
    }
}

#[test]
fn padded_convolution_matches_burn() {
    let (device, _generator) = device();
    // Padding of half the kernel, less, and more (the outputs along the sides then see one
    // row or column of the image only; padding as wide as the kernel is refused).
    for (channels, kernel, pad, input) in [
        ([1, 4], [3, 3], 1, [3, 1, 12, 11]),
        ([3, 5], [5, 5], 1, [2, 3, 9, 10]),
        ([2, 3], [3, 3], 2, [2, 2, 5, 4]),
        ([2, 40], [5, 5], 4, [3, 2, 6, 7]),
        ([33, 3], [3, 3], 1, [2, 33, 4, 5]),
    ] {
        let layer = Conv2dConfig::new(channels, kernel)
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .init(&device);
        assert_same_layer(
            parameters(&layer),
            random(input, &device),
            |x| layers::conv2d(&layer, x),
            |x| layer.forward(x),
        );
        let pool: MaxPool2d = MaxPool2dConfig::new([2, 2]).init();
        assert_same_layer(
            parameters(&layer),
            random(input, &device),
            |x| layers::conv2d_max_pool2d(&layer, &pool, x),
            |x| pool.forward(layer.forward(x)),
        );
    }
}

/// A batch norm with gamma and beta of their own (not ones and zeros).
fn batch_norm(channels: usize, device: &Device) -> BatchNorm {
    let values = |f: fn(f32) -> f32| {
        let values: Vec<f32> = (0..channels).map(|i| f(i as f32)).collect();
        Tensor::from_data(TensorData::new(values, [channels]), device).require_grad()
    };
    let mut norm = BatchNormConfig::new(channels).init(device);
    norm.gamma = Param::from_tensor(values(|i| 1.5 - 0.2 * i));
    norm.beta = Param::from_tensor(values(|i| 0.1 * i - 0.3));
    norm
}

fn assert_same_batch_norm<const D: usize>(shape: [usize; D], device: &Device) {
    let norm = batch_norm(shape[1], device);
    let x = random(shape, device) * 3.0 + 2.0;
    // Training mode: the batch's statistics, with the gradient through them.
    assert_same_layer(
        (&norm.gamma, Some(&norm.beta)),
        x.clone(),
        |x| layers::batch_norm(&norm, x),
        |x| norm.forward(x),
    );
    // Evaluation mode, on the device without autodiff: the running statistics both passes
    // above updated (compared with Burn's own updates in the model crate's CNN test).
    let norm = norm.valid();
    let x = x.inner();
    assert_close(
        "evaluation output",
        layers::batch_norm(&norm, x.clone()),
        norm.forward(x),
    );
}

#[test]
fn batch_norm_matches_burn_in_training_and_evaluation() {
    let (device, _generator) = device();
    // After convolutions (odd plane sizes, one image), and after fully connected layers.
    assert_same_batch_norm([4, 3, 7, 5], &device);
    assert_same_batch_norm([1, 5, 9, 9], &device);
    assert_same_batch_norm([33, 17], &device);
    // Dense channels in blocks of 64, the last one short.
    assert_same_batch_norm([40, 150], &device);
}

#[test]
fn batch_norm_gradients_do_not_depend_on_the_thread_count() {
    let (device, _generator) = device();
    assert_same_gradients_on_one_and_two_threads([24, 6, 9, 9], &device);
    assert_same_gradients_on_one_and_two_threads([24, 150], &device);
}

fn assert_same_gradients_on_one_and_two_threads<const D: usize>(
    shape: [usize; D],
    device: &Device,
) {
    let norm = batch_norm(shape[1], device);
    let x = random(shape, device).require_grad();
    let gradients = |threads: usize| {
        on_threads(threads, || {
            let y = layers::batch_norm(&norm, x.clone());
            let grads = (y.clone() * y).sum().backward();
            let input = x.grad(&grads).expect("input gradient").into_data();
            let gamma = norm.gamma.grad(&grads).expect("gamma gradient").into_data();
            (input, gamma)
        })
    };
    assert_eq!(gradients(1), gradients(2), "bit for bit");
}

#[test]
fn convolution_and_max_pool_match_burn() {
    let (device, _generator) = device();
    // Even and odd convolution outputs (8x7: the last row and column are not pooled).
    for (size, input) in [(2, [3, 2, 10, 9]), (3, [2, 2, 11, 11]), (1, [2, 2, 5, 5])] {
        let layer = conv([2, 6], [3, 3], &device);
        let pool: MaxPool2d = MaxPool2dConfig::new([size, size]).init();
        assert_same_layer(
            parameters(&layer),
            random(input, &device),
            |x| layers::conv2d_max_pool2d(&layer, &pool, x),
            |x| pool.forward(layer.forward(x)),
        );
    }
}

#[test]
fn fully_connected_layer_matches_burn() {
    let (device, _generator) = device();
    // Small (one thread) and large enough to be split between threads.
    for (inputs, outputs, batch) in [(37, 11, 9), (1024, 256, 160)] {
        let layer: Linear = LinearConfig::new(inputs, outputs).init(&device);
        assert_same_layer(
            (&layer.weight, layer.bias.as_ref()),
            random([batch, inputs], &device),
            |x| layers::linear(&layer, x),
            |x| layer.forward(x),
        );
    }
}

#[test]
fn gradients_do_not_depend_on_the_thread_count() {
    let (device, _generator) = device();
    let layer = conv([4, 8], [3, 3], &device);
    let pool: MaxPool2d = MaxPool2dConfig::new([2, 2]).init();
    let x = random([20, 4, 14, 14], &device);
    let gradients = |threads: usize| {
        on_threads(threads, || {
            let y = layers::conv2d_max_pool2d(&layer, &pool, x.clone());
            let grads = y.sum().backward();
            layer
                .weight
                .grad(&grads)
                .expect("weight gradient")
                .into_data()
        })
    };
    assert_eq!(gradients(1), gradients(2), "bit for bit");
}

#[test]
fn dropout_keeps_and_scales_as_burn_and_is_reproducible() {
    let (device, _generator) = device();
    let layer: Dropout = DropoutConfig::new(0.25).init();
    let x = Tensor::<2>::ones([64, 4096], &device).require_grad();
    device.seed(3);
    let y = layers::dropout(&layer, x.clone());
    let values: Vec<f32> = y.clone().into_data().try_to_vec().expect("f32 values");
    let kept = values.iter().filter(|&&v| v != 0.0).count() as f64 / values.len() as f64;
    assert!(
        (kept - 0.75).abs() < 0.005,
        "kept {kept:.4} of the elements, not 0.75"
    );
    assert!(
        values
            .iter()
            .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6),
        "kept elements are scaled by 1 / (1 - p)"
    );
    // The gradient is the mask itself, and the same seed draws the same mask.
    let grads = y.clone().sum().backward();
    assert_close(
        "gradient",
        x.grad(&grads).expect("input gradient"),
        y.clone(),
    );
    device.seed(3);
    assert_close("same seed", layers::dropout(&layer, x.clone()), y.clone());
    // Outside training (no autodiff), dropout is the identity.
    let plain = Tensor::<2>::ones([2, 3], &Device::flex());
    assert_close("inference", layers::dropout(&layer, plain.clone()), plain);
}

#[test]
fn relu_matches_burn_with_nans_and_signed_zeros() {
    let (device, _generator) = device();
    let relu = burn::nn::activation::ActivationConfig::Relu.init(&device);
    // Three chunks and a bit, with the values where ReLU's edge cases lie.
    let shape = [5, 10_000];
    let special = [
        f32::NAN,
        -0.0,
        0.0,
        -1.0,
        1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    let values: Vec<f32> = random(shape, &device)
        .into_data()
        .iter::<f32>()
        .enumerate()
        .map(|(i, v)| {
            if i % 97 < special.len() {
                special[i % 97]
            } else {
                v
            }
        })
        .collect();
    let x = Tensor::<2>::from_data(TensorData::new(values, shape), &device).require_grad();
    let upstream = random(shape, &device);
    let run = |y: Tensor<2>| {
        let grads = (y.clone() * upstream.clone()).sum().backward();
        [y, x.grad(&grads).expect("input gradient")].map(|t| {
            t.into_data()
                .iter::<f32>()
                .map(f32::to_bits)
                .collect::<Vec<_>>()
        })
    };
    let [ours, our_grad] = run(layers::activate(&relu, x.clone()));
    let [reference, reference_grad] = run(relu.forward(x.clone()));
    assert!(ours == reference, "outputs differ");
    assert!(our_grad == reference_grad, "gradients differ");
}
