//! The CPU optimizers give Burn's optimizers' parameters and states bit for bit, step after
//! step, on a parameter one thread updates and on one large enough for several.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, Optimizer, SgdConfig};
use burn::prelude::*;
use burn::tensor::TensorData;
use model::cpu::{AdamSettings, CpuAdam, CpuAdamW, CpuSgd};

/// Values drawn from a generator of our own: Flex's one generator is shared by the tests that
/// run in parallel.
fn values(shape: [usize; 2], seed: u64, device: &Device) -> Tensor<2> {
    let mut state = seed;
    let data: Vec<f32> = (0..shape[0] * shape[1])
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Mostly small values, some zero gradients (a dead ReLU's), a few large ones.
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            match state % 7 {
                0 => 0.0,
                1 => unit * 40.0,
                _ => unit * 1e-2,
            }
        })
        .collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn bits(tensor: &Tensor<2>) -> Vec<u32> {
    tensor
        .to_data()
        .try_to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Runs `ours` and `reference` side by side for a few steps with a changing learning rate and
/// asserts the same parameters after each.
fn same_steps<O: Optimizer, R: Optimizer>(what: &str, ours: O, reference: R) {
    for shape in [[3, 12_000], [3, 350_000]] {
        same_steps_of_shape(&format!("{what}, {shape:?}"), &ours, &reference, shape);
    }
}

fn same_steps_of_shape<O: Optimizer, R: Optimizer>(
    what: &str,
    ours: &O,
    reference: &R,
    shape: [usize; 2],
) {
    let device = Device::flex();
    let mut param = (values(shape, 1, &device), values(shape, 1, &device));
    let mut states = (None, None);
    for step in 0..6 {
        let grad = values(shape, 100 + step, &device);
        let lr = 1e-3 * (1.0 + step as f64);
        let (p, s) = ours.step(lr, param.0, grad.clone(), states.0);
        let (q, t) = reference.step(lr, param.1, grad, states.1);
        assert!(
            bits(&p) == bits(&q),
            "{what}: step {step}: the parameters differ"
        );
        param = (p, q);
        states = (s, t);
    }
}

fn settings(weight_decay: f32) -> AdamSettings {
    AdamSettings {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-8,
        weight_decay,
    }
}

#[test]
fn adam_is_burns_adam() {
    for decay in [0.0, 0.05] {
        let reference = AdamConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay((decay > 0.0).then(|| WeightDecayConfig::new(decay)))
            .build();
        same_steps(
            &format!("adam, decay {decay}"),
            CpuAdam::new(settings(decay)),
            reference,
        );
    }
}

#[test]
fn adamw_is_burns_adamw() {
    for decay in [0.0, 0.01] {
        let reference = AdamWConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(decay)
            .build();
        same_steps(
            &format!("adamw, decay {decay}"),
            CpuAdamW::new(settings(decay)),
            reference,
        );
    }
}

#[test]
fn sgd_is_burns_sgd() {
    for penalty in [None, Some(0.01)] {
        let momentum = [
            None,
            Some(MomentumConfig::new().with_momentum(0.9).with_dampening(0.0)),
        ];
        for momentum in momentum {
            let reference = SgdConfig::new()
                .with_momentum(momentum.clone())
                .with_weight_decay(penalty.map(WeightDecayConfig::new))
                .build();
            same_steps(
                &format!("sgd, penalty {penalty:?}, momentum {}", momentum.is_some()),
                CpuSgd::new(momentum, penalty),
                reference,
            );
        }
    }
}
