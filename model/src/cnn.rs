use burn::nn::activation::Activation;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{ActivationKind, InputShape, ShapeError, layers};

/// A convolutional network shaped like PyTorch's MNIST example: unpadded convolutions, each
/// followed by `activation`; one max-pool; dropout; fully connected `hidden` layers with
/// activation and dropout; a linear output layer producing logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnConfig {
    /// Output channels of each convolution, input side first.
    pub channels: Vec<usize>,
    /// Side of the square convolution kernels.
    #[serde(default = "default_kernel")]
    pub kernel_size: usize,
    /// Side (and stride) of the max-pool after the last convolution; 1 disables it.
    #[serde(default = "default_pool")]
    pub pool: usize,
    /// Width of each fully connected hidden layer.
    pub hidden: Vec<usize>,
    #[serde(default)]
    pub activation: ActivationKind,
    /// Dropout probability after the pool.
    #[serde(default)]
    pub conv_dropout: f64,
    /// Dropout probability after each hidden layer.
    #[serde(default)]
    pub dropout: f64,
}

fn default_kernel() -> usize {
    3
}

fn default_pool() -> usize {
    2
}

impl CnnConfig {
    /// Height and width of what each convolution reads, then of what the last one writes: one
    /// more entry than there are convolutions. Each unpadded convolution shrinks the sides by
    /// `kernel_size - 1` (to 0 at least, for a config [`CnnConfig::check`] refuses).
    fn conv_sides(&self, input: InputShape) -> Vec<[usize; 2]> {
        let shrink = self.kernel_size.saturating_sub(1);
        std::iter::successors(Some([input.height, input.width]), |sides| {
            Some(sides.map(|side| side.saturating_sub(shrink)))
        })
        .take(self.channels.len() + 1)
        .collect()
    }

    /// Height and width of the feature maps after the convolutions and the pool.
    fn feature_shape(&self, input: InputShape) -> [usize; 2] {
        self.conv_sides(input)[self.channels.len()].map(|side| side / self.pool.max(1))
    }

    pub(crate) fn check(&self, input: InputShape) -> Result<(), ShapeError> {
        let sides = self.conv_sides(input);
        let k = self.kernel_size;
        for (i, &[height, width]) in sides[..self.channels.len()].iter().enumerate() {
            if k > height || k > width {
                return Err(ShapeError {
                    key: "model.kernel_size",
                    problem: format!(
                        "the {k}x{k} kernel of convolution {} is larger than its {height}x{width} \
                         input",
                        i + 1
                    ),
                });
            }
        }
        let pool = self.pool.max(1);
        let [height, width] = sides[self.channels.len()];
        if pool > height || pool > width {
            return Err(ShapeError {
                key: "model.pool",
                problem: format!(
                    "the {pool}x{pool} pool is larger than the {height}x{width} feature maps it \
                     pools"
                ),
            });
        }
        Ok(())
    }

    /// Values per image that the first fully connected layer reads.
    fn flat_features(&self, input: InputShape) -> usize {
        let [height, width] = self.feature_shape(input);
        self.channels.last().copied().unwrap_or(1) * height * width
    }

    pub fn init(&self, input: InputShape, classes: usize, device: &Device) -> Cnn {
        let mut in_channels = 1;
        let convs = self
            .channels
            .iter()
            .map(|&out| {
                let conv =
                    Conv2dConfig::new([in_channels, out], [self.kernel_size; 2]).init(device);
                in_channels = out;
                conv
            })
            .collect();
        let mut features = self.flat_features(input);
        let hidden = self
            .hidden
            .iter()
            .map(|&out| {
                let layer = LinearConfig::new(features, out).init(device);
                features = out;
                layer
            })
            .collect();
        let pool = self.pool.max(1);
        Cnn {
            convs,
            pool: MaxPool2dConfig::new([pool; 2]).init(),
            conv_dropout: DropoutConfig::new(self.conv_dropout).init(),
            hidden,
            dropout: DropoutConfig::new(self.dropout).init(),
            output: LinearConfig::new(features, classes).init(device),
            activation: self.activation.init(device),
            height: input.height,
            width: input.width,
        }
    }

    pub(crate) fn multiply_adds(&self, input: InputShape, classes: usize) -> u64 {
        let taps = (self.kernel_size * self.kernel_size) as u64;
        let in_channels = std::iter::once(1).chain(self.channels.iter().copied());
        let convolutions: u64 = self
            .channels
            .iter()
            .zip(in_channels)
            .zip(&self.conv_sides(input)[1..])
            .map(|((&out, c), [height, width])| (height * width * out * c) as u64 * taps)
            .sum();
        convolutions
            + crate::dense_multiply_adds(
                std::iter::once(self.flat_features(input))
                    .chain(self.hidden.iter().copied())
                    .chain(std::iter::once(classes)),
            )
    }

    pub(crate) fn describe(&self, input: InputShape, classes: usize) -> String {
        let channels: Vec<String> = self.channels.iter().map(|c| c.to_string()).collect();
        let dense: Vec<String> = std::iter::once(self.flat_features(input))
            .chain(self.hidden.iter().copied())
            .chain(std::iter::once(classes))
            .map(|w| w.to_string())
            .collect();
        format!(
            "cnn conv{}x{} 1-{} pool{} fc {} {}",
            self.kernel_size,
            self.kernel_size,
            channels.join("-"),
            self.pool,
            dense.join("-"),
            self.activation.name()
        )
    }
}

#[derive(Module, Debug)]
pub struct Cnn {
    convs: Vec<Conv2d>,
    pool: MaxPool2d,
    conv_dropout: Dropout,
    hidden: Vec<Linear>,
    dropout: Dropout,
    output: Linear,
    activation: Activation,
    height: usize,
    width: usize,
}

impl Cnn {
    pub fn forward(&self, images: Tensor<2>) -> Tensor<2> {
        let [batch, _] = images.dims();
        let x = images.reshape([batch, 1, self.height, self.width]);
        // Max-pooling commutes with the activations a config can name (all non-decreasing), so
        // the last convolution's activation is applied after the pool: to a quarter of the
        // values, and the convolution and the pool can be one operation.
        let x = match self.convs.split_last() {
            Some((last, earlier)) => {
                let x = earlier.iter().fold(x, |x, conv| {
                    layers::activate(&self.activation, layers::conv2d(conv, x))
                });
                layers::activate(
                    &self.activation,
                    layers::conv2d_max_pool2d(last, &self.pool, x),
                )
            }
            None => self.pool.forward(x),
        };
        let x = layers::dropout(&self.conv_dropout, x);
        let x: Tensor<2> = x.flatten(1, 3);
        let x = self.hidden.iter().fold(x, |x, layer| {
            layers::dropout(
                &self.dropout,
                layers::activate(&self.activation, layers::linear(layer, x)),
            )
        });
        layers::linear(&self.output, x)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;

    /// The layers in the order the config names them, each Burn's own (dropout off).
    fn straightforward(cnn: &Cnn, images: Tensor<2>) -> Tensor<2> {
        let [batch, _] = images.dims();
        let x = images.reshape([batch, 1, cnn.height, cnn.width]);
        let x = cnn
            .convs
            .iter()
            .fold(x, |x, conv| cnn.activation.forward(conv.forward(x)));
        let x: Tensor<2> = cnn.pool.forward(x).flatten(1, 3);
        let x = cnn
            .hidden
            .iter()
            .fold(x, |x, layer| cnn.activation.forward(layer.forward(x)));
        cnn.output.forward(x)
    }

    /// Every parameter's gradient, flattened, in a fixed order.
    fn parameter_grads(cnn: &Cnn, grads: &burn::tensor::Gradients) -> Vec<Tensor<1>> {
        let conv = cnn.convs.iter().flat_map(|c| {
            let bias = c.bias.as_ref().and_then(|b| b.grad(grads));
            [c.weight.grad(grads).map(|w| w.flatten(0, 3)), bias]
        });
        let dense = cnn.hidden.iter().chain([&cnn.output]).flat_map(|l| {
            let bias = l.bias.as_ref().and_then(|b| b.grad(grads));
            [l.weight.grad(grads).map(|w| w.flatten(0, 1)), bias]
        });
        conv.chain(dense)
            .map(|grad| grad.expect("every parameter has a gradient"))
            .collect()
    }

    fn max_difference(a: Tensor<1>, b: Tensor<1>) -> f32 {
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1.0);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    #[test]
    fn forward_and_gradients_match_the_straightforward_layers() {
        let device = Device::flex().autodiff();
        device.seed(11);
        let input = InputShape {
            height: 12,
            width: 11,
        };
        for activation in [
            ActivationKind::Relu,
            ActivationKind::Sigmoid,
            ActivationKind::Tanh,
            ActivationKind::Identity,
        ] {
            let config = CnnConfig {
                channels: vec![4, 6],
                kernel_size: 3,
                pool: 2,
                hidden: vec![16],
                activation,
                conv_dropout: 0.0,
                dropout: 0.0,
            };
            let cnn = config.init(input, 10, &device);
            let images = Tensor::<2>::random([5, input.pixels()], Distribution::Default, &device);
            let ours = cnn.forward(images.clone());
            let reference = straightforward(&cnn, images);
            let g = Tensor::<2>::random(ours.dims(), Distribution::Normal(0.0, 1.0), &device);
            let grads_ours = (ours.clone() * g.clone()).sum().backward();
            let grads_ref = (reference.clone() * g).sum().backward();
            let output = max_difference(ours.flatten(0, 1), reference.flatten(0, 1));
            assert!(output < 1e-5, "{activation:?}: outputs differ by {output}");
            let pairs = parameter_grads(&cnn, &grads_ours)
                .into_iter()
                .zip(parameter_grads(&cnn, &grads_ref));
            for (i, (a, b)) in pairs.enumerate() {
                let difference = max_difference(a, b);
                assert!(
                    difference < 1e-5,
                    "{activation:?}: gradient of parameter {i} differs by {difference}"
                );
            }
        }
    }
}
