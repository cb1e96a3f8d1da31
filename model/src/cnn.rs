use burn::nn::activation::Activation;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{ActivationKind, InputShape, ShapeError, layers};

/// A convolutional network: stride-1 convolutions, each followed by a max-pool where
/// `pool_after` says, batch normalization when `batch_norm`, and `activation`; dropout;
/// fully connected `hidden` layers (each with batch normalization when `batch_norm`), activation
/// and dropout; a linear output layer producing logits. The defaults are PyTorch's MNIST
/// example: unpadded convolutions and one pool after the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnConfig {
    /// Output channels of each convolution, input side first.
    pub channels: Vec<usize>,
    /// Side of the square convolution kernels.
    #[serde(default = "default_kernel")]
    pub kernel_size: usize,
    /// Zero pixels added on every side of each convolution's input: `(kernel_size - 1) / 2`
    /// keeps the sides; less than `kernel_size`.
    #[serde(default)]
    pub padding: usize,
    /// Side (and stride) of the max-pools; 1 disables them.
    #[serde(default = "default_pool")]
    pub pool: usize,
    /// Which convolutions (from 1) a max-pool follows; the last one when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_after: Option<Vec<usize>>,
    /// Batch normalization after each convolution (after its pool) and each hidden layer,
    /// before the activation.
    #[serde(default)]
    pub batch_norm: bool,
    /// Width of each fully connected hidden layer.
    pub hidden: Vec<usize>,
    #[serde(default)]
    pub activation: ActivationKind,
    /// Dropout probability after the convolutions.
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

/// The sides of one convolution's maps: what it reads, what it writes, and what its pool (if
/// any) leaves.
#[derive(Debug, Clone, Copy)]
struct ConvSides {
    input: [usize; 2],
    output: [usize; 2],
    pooled: [usize; 2],
}

impl CnnConfig {
    /// Whether a max-pool follows convolution `index` (from 0).
    fn pooled(&self, index: usize) -> bool {
        self.pool > 1
            && match &self.pool_after {
                Some(after) => after.contains(&(index + 1)),
                None => index + 1 == self.channels.len(),
            }
    }

    /// The sides of each convolution's maps. A convolution shrinks them by
    /// `kernel_size - 1 - 2 padding` (to 0 at least, for a config [`CnnConfig::check`]
    /// refuses).
    fn conv_sides(&self, input: InputShape) -> Vec<ConvSides> {
        let mut sides = [input.height, input.width];
        (0..self.channels.len())
            .map(|index| {
                let output = sides
                    .map(|side| (side + 2 * self.padding).saturating_sub(self.kernel_size - 1));
                let pool = if self.pooled(index) { self.pool } else { 1 };
                let pooled = output.map(|side| side / pool);
                let conv = ConvSides {
                    input: sides,
                    output,
                    pooled,
                };
                sides = pooled;
                conv
            })
            .collect()
    }

    /// Height and width of the feature maps after the convolutions and the pools.
    fn feature_shape(&self, input: InputShape) -> [usize; 2] {
        self.conv_sides(input)
            .last()
            .map_or([input.height, input.width], |sides| sides.pooled)
    }

    pub(crate) fn check(&self, input: InputShape) -> Result<(), ShapeError> {
        let (k, pad) = (self.kernel_size, self.padding);
        if pad >= k {
            return Err(ShapeError {
                key: "model.padding",
                problem: format!(
                    "padding of {pad} is as wide as the {k}x{k} kernel or wider: the outputs it \
                     adds would see only padding (at most {} is useful)",
                    k - 1
                ),
            });
        }
        for (i, sides) in self.conv_sides(input).iter().enumerate() {
            let [height, width] = sides.input;
            if k > height + 2 * pad || k > width + 2 * pad {
                return Err(ShapeError {
                    key: "model.kernel_size",
                    problem: format!(
                        "the {k}x{k} kernel of convolution {} is larger than its {height}x{width} \
                         input{}",
                        i + 1,
                        if pad > 0 {
                            format!(" padded by {pad}")
                        } else {
                            String::new()
                        }
                    ),
                });
            }
            let [height, width] = sides.output;
            let pool = self.pool;
            if self.pooled(i) && (pool > height || pool > width) {
                return Err(ShapeError {
                    key: "model.pool",
                    problem: format!(
                        "the {pool}x{pool} pool after convolution {} is larger than the \
                         {height}x{width} feature maps it pools",
                        i + 1
                    ),
                });
            }
        }
        if let Some(&bad) = (self.pool_after.iter().flatten())
            .find(|&&after| after == 0 || after > self.channels.len())
        {
            return Err(ShapeError {
                key: "model.pool_after",
                problem: format!(
                    "{bad} is not the number of a convolution (1 to {})",
                    self.channels.len()
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
        let pad = self.padding;
        let convs = self
            .channels
            .iter()
            .map(|&out| {
                let conv = Conv2dConfig::new([in_channels, out], [self.kernel_size; 2])
                    .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                    .init(device);
                in_channels = out;
                conv
            })
            .collect();
        let pools = (0..self.channels.len())
            .map(|index| {
                self.pooled(index)
                    .then(|| MaxPool2dConfig::new([self.pool; 2]).init())
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
        let norms = |widths: &[usize]| -> Vec<BatchNorm> {
            match self.batch_norm {
                true => (widths.iter())
                    .map(|&width| BatchNormConfig::new(width).init(device))
                    .collect(),
                false => Vec::new(),
            }
        };
        Cnn {
            convs,
            pools,
            conv_norms: norms(&self.channels),
            conv_dropout: DropoutConfig::new(self.conv_dropout).init(),
            hidden,
            hidden_norms: norms(&self.hidden),
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
            .zip(&self.conv_sides(input))
            .map(|((&out, c), sides)| {
                let [height, width] = sides.output;
                (height * width * out * c) as u64 * taps
            })
            .sum();
        convolutions
            + crate::dense_multiply_adds(
                std::iter::once(self.flat_features(input))
                    .chain(self.hidden.iter().copied())
                    .chain(std::iter::once(classes)),
            )
    }

    /// Multiply-adds of the first layer, whose input gradient nothing needs.
    pub(crate) fn first_layer_multiply_adds(&self, input: InputShape, classes: usize) -> u64 {
        match (self.conv_sides(input).first(), self.channels.first()) {
            (Some(sides), Some(&out)) => {
                let [height, width] = sides.output;
                (height * width * out * self.kernel_size * self.kernel_size) as u64
            }
            _ => {
                let first = self.hidden.first().copied().unwrap_or(classes);
                (self.flat_features(input) * first) as u64
            }
        }
    }

    pub(crate) fn describe(&self, input: InputShape, classes: usize) -> String {
        let pool = format!("-pool{}", self.pool);
        let channels: Vec<String> = (self.channels.iter().enumerate())
            .map(|(i, c)| format!("{c}{}", if self.pooled(i) { &pool[..] } else { "" }))
            .collect();
        let dense: Vec<String> = std::iter::once(self.flat_features(input))
            .chain(self.hidden.iter().copied())
            .chain(std::iter::once(classes))
            .map(|w| w.to_string())
            .collect();
        let padded = match self.padding {
            0 => String::new(),
            pad => format!(" pad{pad}"),
        };
        let norm = if self.batch_norm { " batchnorm" } else { "" };
        format!(
            "cnn conv{}x{}{padded} 1-{} fc {} {}{norm}",
            self.kernel_size,
            self.kernel_size,
            channels.join("-"),
            dense.join("-"),
            self.activation.name()
        )
    }
}

#[derive(Module, Debug)]
pub struct Cnn {
    pub(crate) convs: Vec<Conv2d>,
    /// The max-pool after each convolution, where there is one.
    pub(crate) pools: Vec<Option<MaxPool2d>>,
    /// One per convolution with batch normalization, else none.
    pub(crate) conv_norms: Vec<BatchNorm>,
    conv_dropout: Dropout,
    pub(crate) hidden: Vec<Linear>,
    /// One per hidden layer with batch normalization, else none.
    pub(crate) hidden_norms: Vec<BatchNorm>,
    dropout: Dropout,
    pub(crate) output: Linear,
    pub(crate) activation: Activation,
    height: usize,
    width: usize,
}

impl Cnn {
    pub fn forward(&self, images: Tensor<2>) -> Tensor<2> {
        let [batch, _] = images.dims();
        let x = images.reshape([batch, 1, self.height, self.width]);
        // A convolution and its max-pool are one operation. The activation comes after the
        // pool: max-pooling commutes with the activations a config can name (all
        // non-decreasing), and it then applies to a quarter of the values.
        let x = self.convs.iter().enumerate().fold(x, |x, (i, conv)| {
            let x = match &self.pools[i] {
                Some(pool) => layers::conv2d_max_pool2d(conv, pool, x),
                None => layers::conv2d(conv, x),
            };
            let x = match self.conv_norms.get(i) {
                Some(norm) => layers::batch_norm(norm, x),
                None => x,
            };
            layers::activate(&self.activation, x)
        });
        let x = layers::dropout(&self.conv_dropout, x);
        let x: Tensor<2> = x.flatten(1, 3);
        let x = self.hidden.iter().enumerate().fold(x, |x, (i, layer)| {
            let x = layers::linear(layer, x);
            let x = match self.hidden_norms.get(i) {
                Some(norm) => layers::batch_norm(norm, x),
                None => x,
            };
            layers::dropout(&self.dropout, layers::activate(&self.activation, x))
        });
        layers::linear(&self.output, x)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, PoisonError};

    use burn::tensor::Distribution;

    use super::*;

    /// The layers in the order the config names them, each Burn's own (dropout off).
    fn straightforward(cnn: &Cnn, images: Tensor<2>) -> Tensor<2> {
        let [batch, _] = images.dims();
        let x = images.reshape([batch, 1, cnn.height, cnn.width]);
        let x = cnn.convs.iter().enumerate().fold(x, |x, (i, conv)| {
            let x = conv.forward(x);
            let x = match &cnn.pools[i] {
                Some(pool) => pool.forward(x),
                None => x,
            };
            let x = match cnn.conv_norms.get(i) {
                Some(norm) => norm.forward(x),
                None => x,
            };
            cnn.activation.forward(x)
        });
        let x: Tensor<2> = x.flatten(1, 3);
        let x = cnn.hidden.iter().enumerate().fold(x, |x, (i, layer)| {
            let x = layer.forward(x);
            let x = match cnn.hidden_norms.get(i) {
                Some(norm) => norm.forward(x),
                None => x,
            };
            cnn.activation.forward(x)
        });
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
        let norms = cnn
            .conv_norms
            .iter()
            .chain(&cnn.hidden_norms)
            .flat_map(|n| [n.gamma.grad(grads), n.beta.grad(grads)]);
        conv.chain(dense)
            .chain(norms)
            .map(|grad| grad.expect("every parameter has a gradient"))
            .collect()
    }

    /// Every batch normalization's running means and variances, flattened, in a fixed order.
    fn running_stats(cnn: &Cnn) -> Vec<Tensor<1>> {
        (cnn.conv_norms.iter().chain(&cnn.hidden_norms))
            .flat_map(|n| [n.running_mean.value_sync(), n.running_var.value_sync()])
            .collect()
    }

    fn max_difference(a: Tensor<1>, b: Tensor<1>) -> f32 {
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1.0);
        (a - b).abs().max().into_scalar::<f32>() / scale
    }

    /// Our layers and Burn's on the same weights and images: outputs within 1e-5, every
    /// gradient within 1e-5, the same running statistics after a training step.
    fn check_against_burn(config: &CnnConfig, input: InputShape, label: &str) {
        // Flex has one random generator for the process and tests run in parallel: without the
        // lock, another test's draws come between the seed and this one's, and the weights and
        // images change from run to run.
        static GENERATOR: Mutex<()> = Mutex::new(());
        let _generator = GENERATOR.lock().unwrap_or_else(PoisonError::into_inner);
        let device = Device::flex().autodiff();
        device.seed(11);
        let ours = config.init(input, 10, &device);
        // The same weights with running statistics of their own (a clone would share them).
        let reference = ours.valid().train();
        let images = Tensor::<2>::random([5, input.pixels()], Distribution::Default, &device);
        let images = images * 4.0 - 1.0;
        let y_ours = ours.forward(images.clone());
        let y_ref = straightforward(&reference, images.clone());
        let g = Tensor::<2>::random(y_ours.dims(), Distribution::Normal(0.0, 1.0), &device);
        let grads_ours = (y_ours.clone() * g.clone()).sum().backward();
        let grads_ref = (y_ref.clone() * g).sum().backward();
        let output = max_difference(y_ours.flatten(0, 1), y_ref.flatten(0, 1));
        assert!(output < 1e-5, "{label}: outputs differ by {output}");
        let pairs = parameter_grads(&ours, &grads_ours)
            .into_iter()
            .zip(parameter_grads(&reference, &grads_ref));
        for (i, (a, b)) in pairs.enumerate() {
            let difference = max_difference(a, b);
            assert!(
                difference < 1e-5,
                "{label}: gradient of parameter {i} differs by {difference}"
            );
        }
        let stats = running_stats(&ours)
            .into_iter()
            .zip(running_stats(&reference));
        for (i, (a, b)) in stats.enumerate() {
            let difference = max_difference(a, b);
            assert!(
                difference < 1e-5,
                "{label}: running statistic {i} differs by {difference}"
            );
        }
        // Evaluation mode: the running statistics, on the device without autodiff.
        let (ours, reference) = (ours.valid(), reference.valid());
        let images = images.inner();
        let eval = max_difference(
            ours.forward(images.clone()).flatten(0, 1),
            straightforward(&reference, images).flatten(0, 1),
        );
        assert!(eval < 1e-5, "{label}: evaluation outputs differ by {eval}");
    }

    fn config(activation: ActivationKind) -> CnnConfig {
        CnnConfig {
            channels: vec![4, 6],
            kernel_size: 3,
            padding: 0,
            pool: 2,
            pool_after: None,
            batch_norm: false,
            hidden: vec![16],
            activation,
            conv_dropout: 0.0,
            dropout: 0.0,
        }
    }

    const INPUT: InputShape = InputShape {
        height: 12,
        width: 11,
    };

    #[test]
    fn forward_and_gradients_match_the_straightforward_layers() {
        for activation in [
            ActivationKind::Relu,
            ActivationKind::Sigmoid,
            ActivationKind::Tanh,
            ActivationKind::Identity,
        ] {
            check_against_burn(&config(activation), INPUT, &format!("{activation:?}"));
        }
    }

    #[test]
    fn padded_pooled_and_batch_normalized_layers_match_burns() {
        let padded = CnnConfig {
            channels: vec![4, 6, 8],
            padding: 1,
            pool_after: Some(vec![1, 3]),
            ..config(ActivationKind::Relu)
        };
        check_against_burn(&padded, INPUT, "padded");
        let normalized = CnnConfig {
            batch_norm: true,
            hidden: vec![16, 12],
            ..padded.clone()
        };
        check_against_burn(&normalized, INPUT, "batch norm");
        let wide_padding = CnnConfig {
            channels: vec![3],
            kernel_size: 5,
            padding: 3,
            batch_norm: true,
            ..config(ActivationKind::Relu)
        };
        check_against_burn(&wide_padding, INPUT, "padding wider than half the kernel");
    }
}
