//! The CPU optimizers give Burn's optimizers' parameters and states bit for bit, step after
//! step, on a parameter one thread updates and on one large enough for several.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    AdamConfig, AdamWConfig, Optimizer, RecordState, SgdConfig, StateSink, StateSource,
};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use model::cpu::{AdamSettings, CpuAdam, CpuAdamW, CpuSgd, CpuSgdState, moving_average};

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

fn bits(tensor: &Tensor<2>) -> Vec<u8> {
    tensor.to_data().as_bytes().to_vec()
}

/// Runs `ours` and `reference` side by side for a few steps with a changing learning rate and
/// asserts the same parameters after each.
fn same_steps<O: Optimizer, R: Optimizer>(what: &str, ours: O, reference: R) {
    for shape in [[3, 12_000], [3, 350_000]] {
        same_steps_of_shape(
            &format!("{what}, {shape:?}"),
            &ours,
            &reference,
            shape,
            DType::F32,
        );
    }
}

fn same_steps_of_shape<O: Optimizer, R: Optimizer>(
    what: &str,
    ours: &O,
    reference: &R,
    shape: [usize; 2],
    dtype: DType,
) {
    let device = Device::flex();
    let values = |seed| values(shape, seed, &device).cast(dtype);
    let mut param = (values(1), values(1));
    let mut states = (None, None);
    for step in 0..6 {
        let grad = values(100 + step);
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
    let plain = MomentumConfig::new().with_momentum(0.9).with_dampening(0.0);
    let momentum = [
        None,
        Some(plain.clone()),
        Some(plain.clone().with_nesterov(true)),
        Some(MomentumConfig::new().with_momentum(0.8).with_dampening(0.1)),
    ];
    for penalty in [None, Some(0.01)] {
        for momentum in &momentum {
            let reference = SgdConfig::new()
                .with_momentum(momentum.clone())
                .with_weight_decay(penalty.map(WeightDecayConfig::new))
                .build();
            let what = format!("sgd, penalty {penalty:?}, momentum {momentum:?}");
            let ours = CpuSgd::new(momentum.clone(), penalty);
            same_steps(&what, ours.clone(), reference.clone());
            // Where the kernels do not apply (here f64), the same step in tensor operations.
            same_steps_of_shape(
                &format!("{what}, f64"),
                &ours,
                &reference,
                [3, 100],
                DType::F64,
            );
        }
    }
}

/// SGD's velocity is recorded under the names Burn's `SgdState` gives it, with the same
/// values, and Burn's record loads as ours: a checkpoint loads whichever optimizer wrote it.
#[test]
fn sgd_state_is_recorded_as_burns() {
    let device = Device::flex();
    let momentum = MomentumConfig::new().with_momentum(0.9).with_dampening(0.0);
    let ours = CpuSgd::new(Some(momentum.clone()), Some(0.01));
    let reference = SgdConfig::new()
        .with_momentum(Some(momentum))
        .with_weight_decay(Some(WeightDecayConfig::new(0.01)))
        .build();
    let (mut param, mut state) = (values([3, 50], 1, &device), None);
    let (mut burn_param, mut burn_state) = (param.clone(), None);
    for step in 0..2 {
        let grad = values([3, 50], 10 + step, &device);
        (param, state) = ours.step(0.1, param, grad.clone(), state);
        (burn_param, burn_state) = reference.step(0.1, burn_param, grad, burn_state);
    }
    let (state, burn_state) = (state.unwrap(), burn_state.unwrap());
    let recorded = |state: &dyn RecordStateRef| {
        let mut sink = StateSink::default();
        state.flatten("p", &mut sink);
        sink.tensors
    };
    let (ours_recorded, burns) = (recorded(&state), recorded(&burn_state));
    let names = |leaves: &[(String, TensorData)]| {
        leaves
            .iter()
            .map(|(name, _)| name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&ours_recorded), ["p.momentum.velocity"]);
    assert_eq!(names(&ours_recorded), names(&burns));
    assert_eq!(
        ours_recorded[0].1.as_bytes(),
        burns[0].1.as_bytes(),
        "the velocities differ"
    );

    let mut source = StateSource::default();
    for (name, data) in burns {
        source.insert_tensor(name, data);
    }
    let loaded = CpuSgdState::<2>::state_unflatten("p", &mut source, &device);
    assert!(loaded.is_some(), "Burn's record does not load");
    let grad = values([3, 50], 20, &device);
    let (next, _) = ours.step(0.1, param, grad.clone(), loaded);
    let (burn_next, _) = reference.step(0.1, burn_param, grad, Some(burn_state));
    assert!(
        bits(&next) == bits(&burn_next),
        "a step from Burn's loaded state differs"
    );
}

/// A state recorded through a reference, whichever its type.
trait RecordStateRef {
    fn flatten(&self, prefix: &str, sink: &mut StateSink);
}

impl<T: RecordState> RecordStateRef for T {
    fn flatten(&self, prefix: &str, sink: &mut StateSink) {
        self.state_flatten(prefix, sink);
    }
}

#[test]
fn moving_average_is_burns_operations() {
    let device = Device::flex();
    for (shape, dtype) in [
        ([3, 100], DType::F32),
        ([3, 350_000], DType::F32),
        ([3, 100], DType::F64),
    ] {
        let [average, weights] = [1, 2].map(|seed| values(shape, seed, &device).cast(dtype));
        let burn = average.clone().mul_scalar(0.998) + weights.clone().mul_scalar(1.0 - 0.998);
        let ours = moving_average(average, weights, 0.998);
        assert!(
            bits(&ours) == bits(&burn),
            "{shape:?} {dtype:?}: the averages differ"
        );
    }
}
