//! Adam, AdamW and plain SGD updating a parameter in one pass on the CPU backend, vectorised
//! for the CPU's instruction set (and spread over the threads for the largest parameters),
//! where Burn's optimizers make a pass per element-wise operation (a dozen for Adam): the
//! update was a quarter of the MLP's training step.
//!
//! Each computes what Burn's optimizer computes, operation for operation in the same order, so
//! the figures are the same to the bit, and keeps Burn's state (SGD's under Burn's names), so
//! checkpoints are the same whichever ran. Elsewhere (wgpu, other element types) and for what
//! the kernels leave out (AMSGrad) Burn's own optimizer runs; SGD then runs as the same
//! operations in Burn's tensors.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    Adam, AdamConfig, AdamState, AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState,
    LearningRate, Optimizer, RecordState, StateSink, StateSource, join_path,
};
use burn::prelude::*;
use burn::tensor::TensorData;
use rayon::prelude::*;

use super::isa::{InstructionSet, simd_kernel};
use super::supported;

/// Elements per task: four arrays of this many fit a core's L2 cache.
const CHUNK: usize = 1 << 14;
/// Parameters smaller than this (2 MB, a core's L2 cache) are updated by one thread: the next
/// step's products read them from that thread's caches. With the MLP's 200,000-weight layer
/// spread over two threads, its training ran at 65,000 samples/s instead of 79,000. Larger
/// ones are not in one core's cache anyway: fashion-best's 885,000-weight layer on one thread
/// left the other idle for 1.5 ms a step.
const PARALLEL_FROM: usize = 1 << 19;

/// How many elements of a `len`-element parameter one task updates.
fn chunk_len(len: usize) -> usize {
    if len >= PARALLEL_FROM {
        CHUNK
    } else {
        len.max(1)
    }
}

/// Adam's hyper-parameters, as Burn's `AdamConfig` names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamSettings {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    /// Adam: an L2 penalty added to the gradient; AdamW: the decoupled decay.
    pub weight_decay: f32,
}

/// Adam with Burn's `Adam`'s state and figures.
#[derive(Clone)]
pub struct CpuAdam {
    settings: AdamSettings,
    burn: Adam,
}

impl CpuAdam {
    pub fn new(settings: AdamSettings) -> Self {
        let burn = AdamConfig::new()
            .with_beta_1(settings.beta_1)
            .with_beta_2(settings.beta_2)
            .with_epsilon(settings.epsilon)
            .with_weight_decay(
                (settings.weight_decay > 0.0)
                    .then(|| WeightDecayConfig::new(settings.weight_decay)),
            )
            .build();
        Self { settings, burn }
    }
}

/// AdamW with Burn's `AdamW`'s state and figures.
#[derive(Clone)]
pub struct CpuAdamW {
    settings: AdamSettings,
    burn: AdamW,
}

impl CpuAdamW {
    pub fn new(settings: AdamSettings) -> Self {
        let burn = AdamWConfig::new()
            .with_beta_1(settings.beta_1)
            .with_beta_2(settings.beta_2)
            .with_epsilon(settings.epsilon)
            .with_weight_decay(settings.weight_decay)
            .build();
        Self { settings, burn }
    }
}

/// The `Optimizer` of one of Adam's family: `$kernel` with `$step`'s scalars where the
/// kernels apply, else Burn's `$burn` itself; the state is Burn's `$state` either way.
macro_rules! adaptive_optimizer {
    ($name:ident, $burn:ident, $state:ident, $step:ident, $kernel:ident) => {
        impl Optimizer for $name {
            type State<const D: usize> = $state<D>;

            fn step<const D: usize>(
                &self,
                lr: LearningRate,
                tensor: Tensor<D>,
                grad: Tensor<D>,
                state: Option<$state<D>>,
            ) -> (Tensor<D>, Option<$state<D>>) {
                let momentum = state.map(|state| state.momentum);
                if !kernels_apply(&tensor, &grad, momentum.as_ref()) {
                    return self.burn.step(lr, tensor, grad, momentum.map($state::new));
                }
                let (tensor, momentum) = adaptive(
                    tensor,
                    grad,
                    momentum,
                    |time| $step::new(&self.settings, lr, time),
                    $kernel,
                );
                (tensor, Some($state::new(momentum)))
            }

            fn to_device<const D: usize>(state: $state<D>, device: &Device) -> $state<D> {
                $burn::to_device(state, device)
            }
        }
    };
}

adaptive_optimizer!(CpuAdam, Adam, AdamState, AdamStep, adam);
adaptive_optimizer!(CpuAdamW, AdamW, AdamWState, AdamWStep, adamw);

/// SGD with Burn's `Sgd`'s figures, momentum (with dampening, Nesterov's) and L2 penalty
/// included: one pass over a parameter, where Burn's makes up to eight on one thread.
#[derive(Clone)]
pub struct CpuSgd {
    momentum: Option<MomentumConfig>,
    /// The L2 penalty added to the gradient, if any.
    penalty: Option<f32>,
}

impl CpuSgd {
    /// `penalty`: the L2 penalty added to the gradient, if any.
    pub fn new(momentum: Option<MomentumConfig>, penalty: Option<f32>) -> Self {
        Self { momentum, penalty }
    }
}

/// [`CpuSgd`]'s state: the momentum's velocity, once there is one. It is recorded under the
/// name Burn's `SgdState` gives it (`momentum.velocity`): a checkpoint loads whichever of the
/// two wrote it.
#[derive(Clone)]
pub struct CpuSgdState<const D: usize> {
    velocity: Option<Tensor<D>>,
}

/// Where Burn's `SgdState` records the velocity under a parameter's prefix.
const VELOCITY: [&str; 2] = ["momentum", "velocity"];

impl<const D: usize> RecordState for CpuSgdState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        if let Some(velocity) = &self.velocity {
            let [nested, leaf] = VELOCITY;
            out.push_tensor(
                &join_path(prefix, nested),
                leaf,
                velocity.clone().into_data(),
            );
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let [nested, leaf] = VELOCITY;
        let velocity = src
            .take_tensor(&join_path(prefix, nested), leaf)
            .map(|data| Tensor::from_data(data, device));
        Some(Self { velocity })
    }
}

impl Optimizer for CpuSgd {
    type State<const D: usize> = CpuSgdState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<CpuSgdState<D>>,
    ) -> (Tensor<D>, Option<CpuSgdState<D>>) {
        let velocity = state.and_then(|state| state.velocity);
        let step = SgdStep::new(self, lr, velocity.is_none());
        let cpu = kernels_apply(&tensor, &grad, None) && velocity.as_ref().is_none_or(supported);
        let (tensor, velocity) = if cpu {
            sgd_kernels(&step, tensor, grad, velocity)
        } else {
            sgd_tensors(&step, tensor, grad, velocity)
        };
        (tensor, Some(CpuSgdState { velocity }))
    }

    fn to_device<const D: usize>(state: CpuSgdState<D>, device: &Device) -> CpuSgdState<D> {
        CpuSgdState {
            velocity: state.velocity.map(|velocity| velocity.to_device(device)),
        }
    }
}

/// One SGD step's scalars, as Burn's `Sgd` and `Momentum` take them: the learning rate and
/// the dampening stay f64 (a tensor of f64 gets them whole), the kernels round them to f32.
struct SgdStep {
    lr: LearningRate,
    penalty: Option<f32>,
    momentum: Option<MomentumStep>,
}

struct MomentumStep {
    momentum: f32,
    /// What of the gradient goes into the velocity: one less the dampening.
    keep: f64,
    nesterov: bool,
    /// Whether there is no velocity yet: it starts as the gradient itself.
    first: bool,
}

impl SgdStep {
    fn new(sgd: &CpuSgd, lr: LearningRate, first: bool) -> Self {
        Self {
            lr,
            penalty: sgd.penalty,
            momentum: sgd.momentum.as_ref().map(|config| MomentumStep {
                momentum: config.momentum as f32,
                keep: 1.0 - config.dampening,
                nesterov: config.nesterov,
                first,
            }),
        }
    }
}

/// The kernels over the parameter's chunks in parallel: the new parameter and velocity.
fn sgd_kernels<const D: usize>(
    step: &SgdStep,
    tensor: Tensor<D>,
    grad: Tensor<D>,
    velocity: Option<Tensor<D>>,
) -> (Tensor<D>, Option<Tensor<D>>) {
    let pass = Pass::over(&tensor);
    let (chunk, isa) = (pass.chunk, pass.isa);
    let mut p = owned(flex(tensor));
    let g = flex(grad);
    let g = super::f32s(&g);
    let chunks = p.par_chunks_mut(chunk).zip(g.par_chunks(chunk));
    let velocity = match &step.momentum {
        None => {
            let lr = step.lr as f32;
            chunks.for_each(|(p, g)| sgd(isa, lr, step.penalty, p, g));
            None
        }
        Some(momentum) => {
            let mut velocity = match velocity {
                Some(velocity) => owned(flex(velocity)),
                None => vec![0.0; g.len()],
            };
            chunks
                .zip(velocity.par_chunks_mut(chunk))
                .for_each(|((p, g), v)| sgd_momentum(isa, step, momentum, p, g, v));
            Some(pass.tensor(velocity))
        }
    };
    (pass.tensor(p), velocity)
}

/// The kernels' step in Burn's tensor operations, where the kernels do not apply (wgpu).
fn sgd_tensors<const D: usize>(
    step: &SgdStep,
    tensor: Tensor<D>,
    grad: Tensor<D>,
    velocity: Option<Tensor<D>>,
) -> (Tensor<D>, Option<Tensor<D>>) {
    let grad = match step.penalty {
        Some(penalty) => tensor.clone().mul_scalar(penalty).add(grad),
        None => grad,
    };
    let (grad, velocity) = match (&step.momentum, velocity) {
        (None, _) => (grad, None),
        (Some(momentum), velocity) => {
            let velocity = match velocity {
                Some(velocity) => grad
                    .clone()
                    .mul_scalar(momentum.keep)
                    .add(velocity.mul_scalar(momentum.momentum)),
                None => grad.clone(),
            };
            let grad = if momentum.nesterov {
                velocity.clone().mul_scalar(momentum.momentum).add(grad)
            } else {
                velocity.clone()
            };
            (grad, Some(velocity))
        }
    };
    (tensor - grad.mul_scalar(step.lr), velocity)
}

/// A moving average's step toward `weights`: `average * decay + weights * (1 - decay)`, with
/// Burn's figures, in one parallel pass on the CPU backend (Burn makes three, on one thread).
pub fn moving_average<const D: usize>(
    average: Tensor<D>,
    weights: Tensor<D>,
    decay: f64,
) -> Tensor<D> {
    if !(supported(&average) && supported(&weights)) {
        return average.mul_scalar(decay) + weights.mul_scalar(1.0 - decay);
    }
    let pass = Pass::over(&average);
    let mut average = owned(flex(average));
    let weights = flex(weights);
    let weights = super::f32s(&weights);
    let (decay, keep) = (decay as f32, (1.0 - decay) as f32);
    average
        .par_chunks_mut(pass.chunk)
        .zip(weights.par_chunks(pass.chunk))
        .for_each(|(average, weights)| toward(pass.isa, decay, keep, weights, average));
    pass.tensor(average)
}

/// Whether the kernels take this parameter: f32 on the CPU backend, and a momentum state they
/// know (not AMSGrad's maximum).
fn kernels_apply<const D: usize>(
    tensor: &Tensor<D>,
    grad: &Tensor<D>,
    momentum: Option<&AdaptiveMomentumState<D>>,
) -> bool {
    supported(tensor)
        && supported(grad)
        && momentum.is_none_or(|m| {
            m.max_moment_2.is_none() && supported(&m.moment_1) && supported(&m.moment_2)
        })
}

/// A kernel of Adam's family: `(isa, step, param, grad, moment 1, moment 2)`, each updated in
/// place but the gradient.
type AdaptiveKernel<S> = fn(InstructionSet, &S, &mut [f32], &[f32], &mut [f32], &mut [f32]);

/// One update of Adam's family: the step's scalars for its step number (`step`), then `kernel`
/// over the parameter's chunks in parallel; returns the new parameter and momentum state.
fn adaptive<const D: usize, S: Sync>(
    tensor: Tensor<D>,
    grad: Tensor<D>,
    momentum: Option<AdaptiveMomentumState<D>>,
    step: impl FnOnce(usize) -> S,
    kernel: AdaptiveKernel<S>,
) -> (Tensor<D>, AdaptiveMomentumState<D>) {
    let pass = Pass::over(&tensor);
    let (chunk, isa) = (pass.chunk, pass.isa);
    // The moments so far, zero before the first step.
    let (time, [mut moment_1, mut moment_2]) = match momentum {
        Some(state) => (
            state.time + 1,
            [state.moment_1, state.moment_2].map(|moment| owned(flex(moment))),
        ),
        None => (1, [0, 1].map(|_| vec![0.0; pass.shape.num_elements()])),
    };
    let step = step(time);
    let mut p = owned(flex(tensor));
    let g = flex(grad);
    let g = super::f32s(&g);
    p.par_chunks_mut(chunk)
        .zip(moment_1.par_chunks_mut(chunk))
        .zip(moment_2.par_chunks_mut(chunk))
        .zip(g.par_chunks(chunk))
        .for_each(|(((p, m), v), g)| kernel(isa, &step, p, g, m, v));
    let [moment_1, moment_2] = [moment_1, moment_2].map(|moment| pass.tensor(moment));
    (
        pass.tensor(p),
        AdaptiveMomentumState::new(time, moment_1, moment_2),
    )
}

/// What a kernel's pass over one parameter needs besides its values: how they split into
/// tasks, the instruction set, and where the new values go.
struct Pass {
    chunk: usize,
    isa: InstructionSet,
    shape: Shape,
    device: Device,
}

impl Pass {
    fn over<const D: usize>(tensor: &Tensor<D>) -> Self {
        let shape = tensor.shape();
        Self {
            chunk: chunk_len(shape.num_elements()),
            isa: InstructionSet::detected(),
            shape,
            device: tensor.device(),
        }
    }

    /// `values` as a tensor of the parameter's shape and device.
    fn tensor<const D: usize>(&self, values: Vec<f32>) -> Tensor<D> {
        Tensor::from_data(TensorData::new(values, self.shape.clone()), &self.device)
    }
}

fn flex<const D: usize>(tensor: Tensor<D>) -> FlexTensor {
    tensor
        .try_into_primitive::<Flex>()
        .expect("kernels_apply checked the backend")
        .to_contiguous()
}

/// The values of `tensor`, without a copy when nothing else holds them.
fn owned(tensor: FlexTensor) -> Vec<f32> {
    tensor
        .into_data()
        .try_into_vec::<f32>()
        .expect("kernels_apply checked the element type")
}

/// One Adam step's scalars, as Burn's `Adam` computes them.
struct AdamStep {
    lr: f32,
    beta_1: f32,
    beta_2: f32,
    /// The bias corrections of both moments in one factor of the first.
    factor: f32,
    /// Epsilon scaled by the second moment's bias correction.
    epsilon: f32,
    penalty: Option<f32>,
}

impl AdamStep {
    /// The scalars of step number `time` (from 1).
    fn new(settings: &AdamSettings, lr: LearningRate, time: usize) -> Self {
        let powers = time as i32;
        let correction_2 = (1.0 - settings.beta_2.powi(powers)).sqrt();
        Self {
            lr: lr as f32,
            beta_1: settings.beta_1,
            beta_2: settings.beta_2,
            factor: correction_2 / (1.0 - settings.beta_1.powi(powers)),
            epsilon: settings.epsilon * correction_2,
            penalty: (settings.weight_decay > 0.0).then_some(settings.weight_decay),
        }
    }
}

simd_kernel! {
    /// Burn's `Adam`: the parameter and moments updated in place.
    fn adam(k: &AdamStep, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let (b1, b2) = (k.beta_1, k.beta_2);
        let (f1, f2) = (1.0 - b1, 1.0 - b2);
        let lanes = p.iter_mut().zip(g).zip(m.iter_mut().zip(v.iter_mut()));
        match k.penalty {
            Some(penalty) => {
                for ((p, &g), (m, v)) in lanes {
                    let g = *p * penalty + g;
                    *m = *m * b1 + g * f1;
                    *v = *v * b2 + g * g * f2;
                    *p -= *m * k.factor / (v.sqrt() + k.epsilon) * k.lr;
                }
            }
            None => {
                for ((p, &g), (m, v)) in lanes {
                    *m = *m * b1 + g * f1;
                    *v = *v * b2 + g * g * f2;
                    *p -= *m * k.factor / (v.sqrt() + k.epsilon) * k.lr;
                }
            }
        }
    }
}

/// One AdamW step's scalars, as Burn's `AdamW` computes them.
struct AdamWStep {
    lr: f32,
    beta_1: f32,
    beta_2: f32,
    correction_1: f32,
    correction_2: f32,
    epsilon: f32,
    /// What the decoupled decay keeps of the parameter, when it decays.
    keep: Option<f32>,
}

impl AdamWStep {
    /// The scalars of step number `time` (from 1).
    fn new(settings: &AdamSettings, lr: LearningRate, time: usize) -> Self {
        let powers = time as i32;
        let decay_rate = lr * f64::from(settings.weight_decay);
        Self {
            lr: lr as f32,
            beta_1: settings.beta_1,
            beta_2: settings.beta_2,
            correction_1: 1.0 - settings.beta_1.powi(powers),
            correction_2: 1.0 - settings.beta_2.powi(powers),
            epsilon: settings.epsilon,
            keep: (decay_rate != 0.0).then_some((1.0 - decay_rate) as f32),
        }
    }
}

simd_kernel! {
    /// Burn's `AdamW`: the parameter and moments updated in place.
    fn adamw(k: &AdamWStep, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let (b1, b2) = (k.beta_1, k.beta_2);
        let (f1, f2) = (1.0 - b1, 1.0 - b2);
        let keep = k.keep;
        for ((p, &g), (m, v)) in p.iter_mut().zip(g).zip(m.iter_mut().zip(v.iter_mut())) {
            *m = *m * b1 + g * f1;
            *v = *v * b2 + g * g * f2;
            let delta = *m / k.correction_1 / ((*v / k.correction_2).sqrt() + k.epsilon);
            let decayed = match keep {
                Some(keep) => *p * keep,
                None => *p,
            };
            *p = decayed - delta * k.lr;
        }
    }
}

simd_kernel! {
    /// Burn's `Sgd` with momentum: the parameter and velocity updated in place (on the first
    /// step, the velocity set to the gradient).
    fn sgd_momentum(k: &SgdStep, m: &MomentumStep, p: &mut [f32], g: &[f32], v: &mut [f32]) {
        let (lr, keep) = (k.lr as f32, m.keep as f32);
        for ((p, &g), v) in p.iter_mut().zip(g).zip(v.iter_mut()) {
            let g = match k.penalty {
                Some(penalty) => *p * penalty + g,
                None => g,
            };
            *v = if m.first { g } else { g * keep + *v * m.momentum };
            let g = if m.nesterov { *v * m.momentum + g } else { *v };
            *p -= g * lr;
        }
    }
}

simd_kernel! {
    /// Burn's `Sgd` without momentum: the parameter updated in place.
    fn sgd(lr: f32, penalty: Option<f32>, p: &mut [f32], g: &[f32]) {
        match penalty {
            Some(penalty) => {
                for (p, &g) in p.iter_mut().zip(g) {
                    *p -= (*p * penalty + g) * lr;
                }
            }
            None => {
                for (p, &g) in p.iter_mut().zip(g) {
                    *p -= g * lr;
                }
            }
        }
    }
}

simd_kernel! {
    /// [`moving_average`]'s step, in place.
    fn toward(decay: f32, keep: f32, weights: &[f32], average: &mut [f32]) {
        for (average, &weight) in average.iter_mut().zip(weights) {
            *average = *average * decay + weight * keep;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let n = 1000;
        let wave = |k: f32| (0..n).map(|i| (i as f32 * k).sin()).collect::<Vec<f32>>();
        let (p, g) = (wave(0.37), wave(1.13));
        let step = AdamStep {
            lr: 1e-3,
            beta_1: 0.9,
            beta_2: 0.999,
            factor: 0.7,
            epsilon: 1e-8,
            penalty: Some(0.01),
        };
        let run = |isa| {
            let (mut out, mut m, mut v) = (p.clone(), wave(0.5), wave(0.25));
            v.iter_mut().for_each(|v| *v = v.abs());
            adam(isa, &step, &mut out, &g, &mut m, &mut v);
            let mut sgd_out = p.clone();
            sgd(isa, 0.1, None, &mut sgd_out, &g);
            [out, m, v, sgd_out]
                .map(|values| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
        };
        let available = InstructionSet::available();
        let baseline = run(InstructionSet::Baseline);
        for isa in available {
            assert!(run(isa) == baseline, "{isa} differs from the baseline");
        }
    }
}
