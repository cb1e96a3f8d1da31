use burn::nn::activation::{Activation, ActivationConfig};
use burn::prelude::Device;
use serde::{Deserialize, Serialize};

/// The element-wise non-linearities a config can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationKind {
    #[default]
    Relu,
    Sigmoid,
    Tanh,
    Identity,
}

impl ActivationKind {
    pub(crate) fn init(self, device: &Device) -> Activation {
        let config = match self {
            Self::Relu => ActivationConfig::Relu,
            Self::Sigmoid => ActivationConfig::Sigmoid,
            Self::Tanh => ActivationConfig::Tanh,
            Self::Identity => ActivationConfig::Identity,
        };
        config.init(device)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::Sigmoid => "sigmoid",
            Self::Tanh => "tanh",
            Self::Identity => "identity",
        }
    }
}
