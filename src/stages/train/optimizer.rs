//! The configured optimizer: Burn's Adam, AdamW or SGD, whose updates run as one parallel pass
//! per parameter on the CPU backend (the model crate's `CpuAdam`, `CpuAdamW`, `CpuSgd`).

use burn::optim::ModuleOptimizer;
use burn::optim::momentum::MomentumConfig;
use model::cpu::{AdamSettings, CpuAdam, CpuAdamW, CpuSgd};

use crate::formats::config::Optimizer;

pub fn build(config: &Optimizer) -> ModuleOptimizer {
    match *config {
        Optimizer::Sgd {
            momentum,
            nesterov,
            weight_decay,
            ..
        } => {
            // PyTorch's SGD: no dampening unless asked for.
            let momentum = (momentum > 0.0).then(|| {
                MomentumConfig::new()
                    .with_momentum(momentum)
                    .with_dampening(0.0)
                    .with_nesterov(nesterov)
            });
            CpuSgd::new(
                momentum,
                (weight_decay > 0.0).then_some(weight_decay as f32),
            )
            .into()
        }
        Optimizer::Adam {
            beta1,
            beta2,
            epsilon,
            weight_decay,
            ..
        } => CpuAdam::new(settings(beta1, beta2, epsilon, weight_decay)).into(),
        Optimizer::Adamw {
            beta1,
            beta2,
            epsilon,
            weight_decay,
            ..
        } => CpuAdamW::new(settings(beta1, beta2, epsilon, weight_decay)).into(),
    }
}

fn settings(beta1: f32, beta2: f32, epsilon: f32, weight_decay: f64) -> AdamSettings {
    AdamSettings {
        beta_1: beta1,
        beta_2: beta2,
        epsilon,
        weight_decay: weight_decay as f32,
    }
}
