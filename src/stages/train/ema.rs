//! An exponential moving average of a network's weights (and of its batch normalizations'
//! running statistics), updated after every step: `average = d average + (1 - d) weights`.
//! Early on, `d` is `(1 + step) / (10 + step)` when that is smaller than the configured decay,
//! so that the first, random weights fade quickly. The decay depends on the global step only:
//! a resumed run continues the average as the uninterrupted one would have.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use model::Network;

pub struct Ema {
    decay: f64,
    /// The average, on the device without autodiff.
    pub network: Network,
}

impl Ema {
    /// Starts the average at `network`'s weights, or continues `average`.
    pub fn new(decay: f64, network: &Network, average: Option<Network>) -> Self {
        Self {
            decay,
            network: average.unwrap_or_else(|| network.valid()),
        }
    }

    /// Takes in `network`'s weights after global step `step` (from 1). It takes the average by
    /// value so that, held nowhere else, each tensor is updated where it lies.
    pub fn update(self, network: &Network, step: usize) -> Self {
        let warm = (1 + step) as f64 / (10 + step) as f64;
        let decay = self.decay.min(warm);
        let mut weights = Weights(Vec::new());
        network.visit(&mut weights);
        let mut average = Average {
            decay,
            weights: weights.0.into_iter(),
        };
        Self {
            decay: self.decay,
            network: self.network.map(&mut average),
        }
    }
}

/// Every tensor of a network, flattened, in the order the module visits them.
struct Weights(Vec<Tensor<1>>);

impl ModuleVisitor for Weights {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val().inner();
        let len = tensor.shape().num_elements();
        self.0.push(tensor.reshape([len]));
    }
}

/// Moves each tensor of the average toward the next of `weights`.
struct Average<I> {
    decay: f64,
    weights: I,
}

impl<I: Iterator<Item = Tensor<1>>> ModuleMapper for Average<I> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let weights = self
            .weights
            .next()
            .expect("the average and the network have the same tensors");
        let decay = self.decay;
        param.map(|average| {
            let dims = average.dims();
            model::cpu::moving_average(average, weights.reshape(dims), decay)
        })
    }
}
