use burn::module::Module;
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;

use crate::{Architecture, InputShape, Network};

/// Why weights could not be turned into a network.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("not a burnpack weights file: {0}")]
    Format(String),
    #[error("weights do not fit the {architecture} architecture: {reason}")]
    Mismatch {
        architecture: String,
        reason: String,
    },
}

/// Serialises a network's parameters in Burn's burnpack format.
pub fn save_weights(network: &Network) -> Result<Vec<u8>, WeightsError> {
    let bytes = network
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|err| WeightsError::Format(err.to_string()))?;
    Ok(bytes.to_vec())
}

/// Builds the network that `architecture` describes and loads `bytes` into it, refusing weights
/// whose tensors are missing, extra or of another shape.
pub fn load_weights(
    architecture: &Architecture,
    input: InputShape,
    classes: usize,
    bytes: Vec<u8>,
    device: &Device,
) -> Result<Network, WeightsError> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|err| WeightsError::Format(err.to_string()))?;
    architecture
        .init(input, classes, device)
        .try_load_record(record)
        .map_err(|err| WeightsError::Mismatch {
            architecture: architecture.describe(input, classes),
            reason: err.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActivationKind, MlpConfig};

    fn mlp(hidden: usize) -> Architecture {
        Architecture::Mlp(MlpConfig {
            hidden: vec![hidden],
            activation: ActivationKind::Relu,
            output_activation: ActivationKind::Identity,
            dropout: 0.0,
        })
    }

    #[test]
    fn weights_round_trip_and_refuse_another_architecture() {
        let device = Device::flex();
        let network = mlp(8).init(InputShape::MNIST, 10, &device);
        let input = Tensor::<2>::ones([2, 784], &device);
        let expected = network.forward(input.clone()).into_data();

        let bytes = save_weights(&network).unwrap();
        let loaded = load_weights(&mlp(8), InputShape::MNIST, 10, bytes.clone(), &device).unwrap();
        loaded.forward(input).into_data().assert_eq(&expected, true);

        let err = load_weights(&mlp(9), InputShape::MNIST, 10, bytes, &device).unwrap_err();
        assert!(matches!(err, WeightsError::Mismatch { .. }), "{err}");
        let err = load_weights(&mlp(8), InputShape::MNIST, 10, vec![1, 2, 3], &device).unwrap_err();
        assert!(matches!(err, WeightsError::Format(_)), "{err}");
    }
}
