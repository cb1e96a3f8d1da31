use burn::nn::activation::Activation;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{ActivationKind, InputShape, layers};

/// A fully connected network: `hidden` layers, each followed by `activation` and dropout, then
/// an output layer followed by `output_activation` (identity for logits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Width of each hidden layer, input side first.
    pub hidden: Vec<usize>,
    #[serde(default)]
    pub activation: ActivationKind,
    /// Applied to the output layer; `sigmoid` reproduces the older Go example.
    #[serde(default = "identity")]
    pub output_activation: ActivationKind,
    /// Dropout probability after each hidden layer.
    #[serde(default)]
    pub dropout: f64,
}

fn identity() -> ActivationKind {
    ActivationKind::Identity
}

impl MlpConfig {
    pub fn init(&self, input: InputShape, classes: usize, device: &Device) -> Mlp {
        let mut width = input.pixels();
        let hidden = self
            .hidden
            .iter()
            .map(|&out| {
                let layer = LinearConfig::new(width, out).init(device);
                width = out;
                layer
            })
            .collect();
        Mlp {
            hidden,
            output: LinearConfig::new(width, classes).init(device),
            activation: self.activation.init(device),
            output_activation: self.output_activation.init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }

    pub(crate) fn multiply_adds(&self, input: InputShape, classes: usize) -> u64 {
        crate::dense_multiply_adds(
            std::iter::once(input.pixels())
                .chain(self.hidden.iter().copied())
                .chain(std::iter::once(classes)),
        )
    }

    /// Multiply-adds of the first layer, whose input gradient nothing needs.
    pub(crate) fn first_layer_multiply_adds(&self, input: InputShape, classes: usize) -> u64 {
        (input.pixels() * self.hidden.first().copied().unwrap_or(classes)) as u64
    }

    pub(crate) fn describe(&self, input: InputShape, classes: usize) -> String {
        let widths: Vec<String> = std::iter::once(input.pixels())
            .chain(self.hidden.iter().copied())
            .chain(std::iter::once(classes))
            .map(|w| w.to_string())
            .collect();
        format!(
            "mlp {} {}/{}",
            widths.join("-"),
            self.activation.name(),
            self.output_activation.name()
        )
    }
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub(crate) hidden: Vec<Linear>,
    pub(crate) output: Linear,
    pub(crate) activation: Activation,
    pub(crate) output_activation: Activation,
    dropout: Dropout,
}

impl Mlp {
    pub fn forward(&self, images: Tensor<2>) -> Tensor<2> {
        let x = self.hidden.iter().fold(images, |x, layer| {
            layers::dropout(
                &self.dropout,
                layers::activate(&self.activation, layers::linear(layer, x)),
            )
        });
        layers::activate(&self.output_activation, layers::linear(&self.output, x))
    }
}
