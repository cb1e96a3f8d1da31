//! The Burn networks of the `mnist` tool: their configurations, forward passes and weights.
//!
//! Nothing here knows about files on disk, command lines or training policy: a network is built
//! from an [`Architecture`] and the shape of the data ([`InputShape`], class count), and its
//! weights travel as burnpack bytes.

mod activation;
mod cnn;
pub mod cpu;
pub mod export;
pub mod layers;
mod mlp;
mod preprocess;
mod views;
mod weights;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use activation::ActivationKind;
pub use cnn::{Cnn, CnnConfig};
pub use mlp::{Mlp, MlpConfig};
pub use preprocess::Preprocess;
pub use views::{Classified, View, Views};
pub use weights::{WeightsError, load_weights, save_weights};

/// A layer that does not fit what feeds it, for images of a given shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ShapeError {
    /// The config key to change, e.g. `model.kernel_size`.
    pub key: &'static str,
    /// What does not fit, with the sizes.
    pub problem: String,
}

/// Height and width of the (single-channel) images a network reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputShape {
    pub height: usize,
    pub width: usize,
}

/// Multiply-adds of fully connected layers of the given widths, input first.
fn dense_multiply_adds(widths: impl IntoIterator<Item = usize>) -> u64 {
    let widths: Vec<u64> = widths.into_iter().map(|w| w as u64).collect();
    widths.windows(2).map(|pair| pair[0] * pair[1]).sum()
}

impl InputShape {
    /// The 28x28 images of MNIST and Fashion-MNIST.
    pub const MNIST: Self = Self {
        height: 28,
        width: 28,
    };

    pub fn pixels(&self) -> usize {
        self.height * self.width
    }
}

/// Which network to build, and its hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Architecture {
    Mlp(MlpConfig),
    Cnn(CnnConfig),
}

impl Architecture {
    /// Builds the network with freshly initialised parameters on `device`.
    pub fn init(&self, input: InputShape, classes: usize, device: &Device) -> Network {
        match self {
            Self::Mlp(config) => Network::Mlp(config.init(input, classes, device)),
            Self::Cnn(config) => Network::Cnn(config.init(input, classes, device)),
        }
    }

    /// Whether every layer fits what feeds it when the images are `input`'s shape.
    pub fn check(&self, input: InputShape) -> Result<(), ShapeError> {
        match self {
            Self::Mlp(_) => Ok(()),
            Self::Cnn(config) => config.check(input),
        }
    }

    /// Multiply-adds of one image's forward pass: what a step's compute scales with (a training
    /// step costs about three times this per image: forward, and two products backward).
    pub fn multiply_adds(&self, input: InputShape, classes: usize) -> u64 {
        match self {
            Self::Mlp(config) => config.multiply_adds(input, classes),
            Self::Cnn(config) => config.multiply_adds(input, classes),
        }
    }

    /// Floating-point operations of one image's training step: the forward pass and the
    /// backward pass's two products (weight and input gradients), but for the first layer's
    /// input gradient, which nothing needs. What a share of the machine's peak counts.
    pub fn training_flops(&self, input: InputShape, classes: usize) -> u64 {
        let first = match self {
            Self::Mlp(config) => config.first_layer_multiply_adds(input, classes),
            Self::Cnn(config) => config.first_layer_multiply_adds(input, classes),
        };
        2 * (3 * self.multiply_adds(input, classes) - first)
    }

    /// A short human-readable description, e.g. `mlp 784-256-10 relu`.
    pub fn describe(&self, input: InputShape, classes: usize) -> String {
        match self {
            Self::Mlp(config) => config.describe(input, classes),
            Self::Cnn(config) => config.describe(input, classes),
        }
    }
}

/// A classifier: flattened images `[batch, height * width]` in, one score per class out.
#[derive(Module, Debug)]
pub enum Network {
    Mlp(Mlp),
    Cnn(Cnn),
}

impl Network {
    /// Class scores `[batch, classes]` for flattened images `[batch, height * width]`.
    pub fn forward(&self, images: Tensor<2>) -> Tensor<2> {
        match self {
            Self::Mlp(mlp) => mlp.forward(images),
            Self::Cnn(cnn) => cnn.forward(images),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiply_adds_count_every_layer() {
        // PyTorch's MNIST example: 26x26x32 outputs of 9 taps, 24x24x64 of 32x9, then
        // 9216-128-10.
        assert_eq!(
            cnn(vec![32, 64], 3, 2, vec![128]).multiply_adds(InputShape::MNIST, 10),
            26 * 26 * 32 * 9 + 24 * 24 * 64 * 32 * 9 + 9216 * 128 + 128 * 10
        );
        let mlp = Architecture::Mlp(MlpConfig {
            hidden: vec![387],
            activation: ActivationKind::Sigmoid,
            output_activation: ActivationKind::Sigmoid,
            dropout: 0.0,
        });
        assert_eq!(
            mlp.multiply_adds(InputShape::MNIST, 10),
            784 * 387 + 387 * 10
        );
        // Forward, and both gradients but the first layer's input gradient.
        assert_eq!(
            mlp.training_flops(InputShape::MNIST, 10),
            2 * (2 * 784 * 387 + 3 * 387 * 10)
        );
        let reference = cnn(vec![32, 64], 3, 2, vec![128]);
        assert_eq!(
            reference.training_flops(InputShape::MNIST, 10),
            2 * (3 * reference.multiply_adds(InputShape::MNIST, 10) - 26 * 26 * 32 * 9)
        );
    }

    fn cnn(
        channels: Vec<usize>,
        kernel_size: usize,
        pool: usize,
        hidden: Vec<usize>,
    ) -> Architecture {
        Architecture::Cnn(CnnConfig {
            channels,
            kernel_size,
            padding: 0,
            pool,
            pool_after: None,
            batch_norm: false,
            hidden,
            activation: ActivationKind::Relu,
            conv_dropout: 0.0,
            dropout: 0.0,
        })
    }

    #[test]
    fn shapes_that_do_not_fit_name_the_key_and_the_sizes() {
        let input = InputShape {
            height: 28,
            width: 20,
        };
        assert_eq!(cnn(vec![8, 16], 3, 2, vec![32]).check(input), Ok(()));
        // Two 10x10 kernels fit: 28x20 -> 19x11 -> 10x2; of two 11x11 the second does not:
        // 28x20 -> 18x10.
        assert_eq!(cnn(vec![8, 16], 10, 1, vec![32]).check(input), Ok(()));
        let err = cnn(vec![8, 16], 11, 1, vec![32]).check(input).unwrap_err();
        assert_eq!(err.key, "model.kernel_size");
        assert_eq!(
            err.to_string(),
            "model.kernel_size: the 11x11 kernel of convolution 2 is larger than its 18x10 input"
        );
        // 28x20 -> 26x18, then a 19x19 pool.
        let err = cnn(vec![8], 3, 19, vec![32]).check(input).unwrap_err();
        assert_eq!(
            err.to_string(),
            "model.pool: the 19x19 pool after convolution 1 is larger than the 26x18 feature \
             maps it pools"
        );
        assert_eq!(cnn(vec![8], 3, 18, vec![32]).check(input), Ok(()));
        // Padded by 1, pooled after every convolution: 28x20 -> 14x10 -> 7x5 -> 3x2 -> 1x1,
        // and a fifth pool does not fit.
        let padded = |pool_after: Vec<usize>| match cnn(vec![4; 5], 3, 2, vec![8]) {
            Architecture::Cnn(config) => Architecture::Cnn(CnnConfig {
                padding: 1,
                pool_after: Some(pool_after),
                ..config
            }),
            mlp => mlp,
        };
        assert_eq!(padded(vec![1, 2, 3, 4]).check(input), Ok(()));
        assert_eq!(
            padded(vec![1, 2, 3, 4, 5])
                .check(input)
                .unwrap_err()
                .to_string(),
            "model.pool: the 2x2 pool after convolution 5 is larger than the 1x1 feature maps \
             it pools"
        );
        let err = padded(vec![6]).check(input).unwrap_err();
        assert_eq!(err.key, "model.pool_after");
    }
}
