//! Dropout whose mask comes from a counter-based generator: each element's fate is a hash of
//! its index and a seed, so the mask is computed where it is applied, in parallel, and again in
//! the backward pass instead of being kept. Burn's Dropout draws every element through its
//! general-purpose random distributions on one thread, which cost a tenth of the reference
//! CNN's training step.

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::Distribution;

/// Which elements dropout keeps, and the factor of those kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mask {
    seed: u64,
    /// An element is kept when the top 32 bits of its hash fall below this.
    threshold: u64,
    scale: f32,
}

impl Mask {
    /// The factor of element `index`: `scale` if kept, else zero.
    #[inline(always)]
    pub(super) fn factor(&self, index: u64) -> f32 {
        if splitmix64(self.seed.wrapping_add(index)) >> 32 < self.threshold {
            self.scale
        } else {
            0.0
        }
    }
}

/// `layer` applied to `x`: in training, each element kept with probability `1 - prob` and
/// scaled by `1 / (1 - prob)`, as Burn's Dropout; otherwise `x` itself. The caller checks
/// [`super::supported`].
pub fn dropout<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !layer.training.is_enabled() || !device.is_autodiff() || layer.prob == 0.0 {
        return x;
    }
    let keep = 1.0 - layer.prob;
    let mask = Mask {
        seed: seed(&device),
        threshold: (keep * 2f64.powi(32)) as u64,
        scale: (1.0 / keep) as f32,
    };
    super::masked(x, mask)
}

/// A seed drawn from the device's generator, so that `Device::seed` makes the masks
/// reproducible as it does Burn's.
fn seed(device: &Device) -> u64 {
    let draws = Tensor::<1>::random([2], Distribution::Default, device).into_data();
    draws.iter::<f32>().fold(0, |seed, draw| {
        seed << 24 | (draw * (1 << 24) as f32) as u64
    })
}

/// SplitMix64's output function on the counter `state`: a well-mixed 64-bit value per index.
#[inline(always)]
fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
