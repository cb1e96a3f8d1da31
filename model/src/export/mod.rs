//! A trained network written for other runtimes: ONNX (ONNX Runtime, TensorRT), safetensors with
//! PyTorch's names and layouts, and the PyTorch module those load into.
//!
//! Every format is written from one [`Plan`]: the network at inference time as a sequence of
//! named layers with their weights (dropout gone, batch normalization with its running
//! statistics). Each takes raw pixels `[batch, 1, height, width]`, 0..255 with 0 the background,
//! and applies the model's preprocessing itself, so a user feeds it what an image file holds.

mod onnx;
mod onnx_proto;
mod pytorch;
mod safetensors;

use burn::module::Param;
use burn::nn::activation::Activation;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::prelude::*;

pub use onnx::{INPUT, INPUT_DOC, LOGITS, OPSET, PROBABILITIES, onnx};
pub use pytorch::pytorch_module;
pub use safetensors::safetensors;

use crate::{ActivationKind, InputShape, Network, layers};

/// Why a network could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("layer {layer} cannot be exported: {reason}")]
    Unsupported { layer: String, reason: String },
    #[error("reading the weights of {layer}: {reason}")]
    Read { layer: String, reason: String },
    #[error("writing {format}: {reason}")]
    Write {
        format: &'static str,
        reason: String,
    },
}

/// A network at inference time: what every export format is written from.
#[derive(Debug, Clone)]
pub struct Plan {
    pub input: InputShape,
    pub classes: usize,
    /// In the order they apply; names are unique (`conv1`, `conv1_norm`, `fc1`, `output`).
    pub layers: Vec<Step>,
}

/// One named layer of a [`Plan`].
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub layer: Layer,
}

#[derive(Debug, Clone)]
pub enum Layer {
    /// `[batch, channels, height, width]` to `[batch, channels * height * width]`.
    Flatten,
    /// Stride 1, `padding` zeros on every side; weight `[out, in, kernel, kernel]`.
    Conv {
        weight: Values,
        bias: Values,
        padding: usize,
    },
    /// Square windows `size` apart.
    MaxPool {
        size: usize,
    },
    /// With the running statistics, over dimension 1.
    BatchNorm {
        gamma: Values,
        beta: Values,
        mean: Values,
        variance: Values,
        epsilon: f64,
    },
    Activation(ActivationKind),
    /// Weight `[in, out]` (Burn's layout; PyTorch's is the transpose).
    Linear {
        weight: Values,
        bias: Values,
    },
}

/// A tensor's values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Plan {
    /// The inference layers of `network`, which reads `input`-shaped images.
    pub fn of(network: &Network, input: InputShape, classes: usize) -> Result<Self, ExportError> {
        let mut plan = Self {
            input,
            classes,
            layers: Vec::new(),
        };
        match network {
            Network::Mlp(mlp) => {
                plan.push("flatten", Layer::Flatten);
                for (i, layer) in mlp.hidden.iter().enumerate() {
                    let name = format!("fc{}", i + 1);
                    plan.linear(&name, layer)?;
                    plan.activation(&name, &mlp.activation)?;
                }
                plan.linear("output", &mlp.output)?;
                plan.activation("output", &mlp.output_activation)?;
            }
            Network::Cnn(cnn) => {
                for (i, conv) in cnn.convs.iter().enumerate() {
                    let name = format!("conv{}", i + 1);
                    plan.conv(&name, conv)?;
                    if let Some(pool) = &cnn.pools[i] {
                        let size =
                            layers::plain_pool(pool).ok_or_else(|| ExportError::Unsupported {
                                layer: format!("pool{}", i + 1),
                                reason: "only square windows as far apart as they are wide".into(),
                            })?;
                        plan.push(&format!("pool{}", i + 1), Layer::MaxPool { size });
                    }
                    if let Some(norm) = cnn.conv_norms.get(i) {
                        plan.batch_norm(&format!("{name}_norm"), norm)?;
                    }
                    plan.activation(&name, &cnn.activation)?;
                }
                plan.push("flatten", Layer::Flatten);
                for (i, layer) in cnn.hidden.iter().enumerate() {
                    let name = format!("fc{}", i + 1);
                    plan.linear(&name, layer)?;
                    if let Some(norm) = cnn.hidden_norms.get(i) {
                        plan.batch_norm(&format!("{name}_norm"), norm)?;
                    }
                    plan.activation(&name, &cnn.activation)?;
                }
                plan.linear("output", &cnn.output)?;
            }
        }
        Ok(plan)
    }

    fn push(&mut self, name: &str, layer: Layer) {
        self.layers.push(Step {
            name: name.to_owned(),
            layer,
        });
    }

    fn conv(&mut self, name: &str, conv: &Conv2d) -> Result<(), ExportError> {
        let padding = layers::plain_conv(conv).ok_or_else(|| ExportError::Unsupported {
            layer: name.to_owned(),
            reason: "only stride 1 and the same padding on every side".into(),
        })?;
        let weight = values(name, conv.weight.val())?;
        let bias = bias(name, conv.bias.as_ref(), weight.shape[0])?;
        self.push(
            name,
            Layer::Conv {
                weight,
                bias,
                padding,
            },
        );
        Ok(())
    }

    fn linear(&mut self, name: &str, layer: &Linear) -> Result<(), ExportError> {
        let weight = values(name, layer.weight.val())?;
        let bias = bias(name, layer.bias.as_ref(), weight.shape[1])?;
        self.push(name, Layer::Linear { weight, bias });
        Ok(())
    }

    fn batch_norm(&mut self, name: &str, norm: &BatchNorm) -> Result<(), ExportError> {
        let layer = Layer::BatchNorm {
            gamma: values(name, norm.gamma.val())?,
            beta: values(name, norm.beta.val())?,
            mean: values(name, norm.running_mean.value())?,
            variance: values(name, norm.running_var.value())?,
            epsilon: norm.epsilon,
        };
        self.push(name, layer);
        Ok(())
    }

    /// `activation` after the layer `after`, unless it is the identity.
    fn activation(&mut self, after: &str, activation: &Activation) -> Result<(), ExportError> {
        let kind = match activation {
            Activation::Identity(_) => return Ok(()),
            Activation::Relu(_) => ActivationKind::Relu,
            Activation::Sigmoid(_) => ActivationKind::Sigmoid,
            Activation::Tanh(_) => ActivationKind::Tanh,
            _ => {
                return Err(ExportError::Unsupported {
                    layer: format!("{after}'s activation"),
                    reason: "only relu, sigmoid, tanh and identity".into(),
                });
            }
        };
        self.push(&format!("{after}_{}", kind.name()), Layer::Activation(kind));
        Ok(())
    }
}

fn values<const D: usize>(layer: &str, tensor: Tensor<D>) -> Result<Values, ExportError> {
    let shape = tensor.dims().to_vec();
    let read = |reason: String| ExportError::Read {
        layer: layer.to_owned(),
        reason,
    };
    let data = tensor
        .try_into_data()
        .map_err(|err| read(format!("{err:?}")))?
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|err| read(format!("{err:?}")))?;
    Ok(Values { shape, data })
}

/// A layer's bias, zeros where it has none.
fn bias(layer: &str, bias: Option<&Param<Tensor<1>>>, len: usize) -> Result<Values, ExportError> {
    match bias {
        Some(bias) => values(layer, bias.val()),
        None => Ok(Values {
            shape: vec![len],
            data: vec![0.0; len],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Architecture, CnnConfig, MlpConfig};

    fn names(architecture: Architecture) -> Vec<String> {
        let network = architecture.init(InputShape::MNIST, 10, &Device::flex());
        let plan = Plan::of(&network, InputShape::MNIST, 10).unwrap();
        plan.layers.into_iter().map(|step| step.name).collect()
    }

    #[test]
    fn layers_are_named_in_the_order_they_apply() {
        let cnn = Architecture::Cnn(CnnConfig {
            channels: vec![4, 8],
            kernel_size: 3,
            padding: 1,
            pool: 2,
            pool_after: Some(vec![2]),
            batch_norm: true,
            hidden: vec![16],
            activation: ActivationKind::Tanh,
            conv_dropout: 0.1,
            dropout: 0.1,
        });
        assert_eq!(
            names(cnn),
            [
                "conv1",
                "conv1_norm",
                "conv1_tanh",
                "conv2",
                "pool2",
                "conv2_norm",
                "conv2_tanh",
                "flatten",
                "fc1",
                "fc1_norm",
                "fc1_tanh",
                "output"
            ]
        );
        // Identity activations leave no layer.
        let mlp = Architecture::Mlp(MlpConfig {
            hidden: vec![16],
            activation: ActivationKind::Identity,
            output_activation: ActivationKind::Sigmoid,
            dropout: 0.0,
        });
        assert_eq!(names(mlp), ["flatten", "fc1", "output", "output_sigmoid"]);
    }

    #[test]
    fn weights_keep_burns_layouts() {
        let network = Architecture::Mlp(MlpConfig {
            hidden: vec![5],
            activation: ActivationKind::Relu,
            output_activation: ActivationKind::Identity,
            dropout: 0.0,
        })
        .init(InputShape::MNIST, 3, &Device::flex());
        let plan = Plan::of(&network, InputShape::MNIST, 3).unwrap();
        let Layer::Linear { weight, bias } = &plan.layers[1].layer else {
            panic!("{:?}", plan.layers[1]);
        };
        assert_eq!(
            (weight.shape.as_slice(), bias.shape.as_slice()),
            (&[784, 5][..], &[5][..])
        );
        assert_eq!(weight.data.len(), 784 * 5);
    }
}
