//! Choosing the device the stages compute on: wgpu on a real GPU when one is present, Burn's
//! Flex backend on the CPU otherwise. Everything downstream takes a `Device`, so this module is
//! the only place that knows about backends.

use std::fmt;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::prelude::*;
use burn::tensor::DeviceKind;
use burn::tensor::wgpu::{WgpuBackend, wgpu};
use clap::ValueEnum;
use model::cpu::InstructionSet;
use serde::{Deserialize, Serialize};

use super::{cpu, gpu_cache};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// wgpu on a real GPU if one initialises, else the CPU.
    Auto,
    /// wgpu on the best adapter, even a software one (with a warning).
    Wgpu,
    /// Burn's Flex backend on the CPU.
    Cpu,
}

/// What the stages ran on, as recorded in `model.json` and the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// `cpu` or `wgpu`.
    pub name: String,
    /// The device, e.g. `flex (16 threads, AVX-512, denormals flushed)` or the adapter's name.
    pub device: String,
    /// The vector instructions the CPU kernels use (`avx512`, `avx2`, `neon`, `baseline`), on
    /// the CPU backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction_set: Option<String>,
    /// The wgpu adapter, when wgpu was used.
    pub adapter: Option<AdapterInfo>,
    /// Why this backend was chosen.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterInfo {
    pub name: String,
    /// `discrete`, `integrated`, `virtual`, `cpu` (a software rasterizer) or `other`.
    pub kind: String,
    /// The graphics API: `vulkan`, `metal` or `dx12`.
    pub api: String,
    pub driver: String,
    pub driver_info: String,
}

impl fmt::Display for AdapterInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} adapter, {}, driver {} {})",
            self.name, self.kind, self.api, self.driver, self.driver_info
        )
    }
}

/// The environment variable that keeps Mesa's device-select Vulkan layer from probing for a
/// display server, which on a headless machine prints `error: XDG_RUNTIME_DIR is invalid` lines
/// into the log: this module ranks the adapters itself.
pub const HEADLESS: (&str, &str) = ("NODEVICE_SELECT", "1");

pub struct Selected {
    pub device: Device,
    pub info: BackendInfo,
    /// When the device was chosen, before it initialised: start-up is measured from here.
    pub chosen: Instant,
}

/// A training workload, for `auto` to weigh the GPU against the CPU.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Multiply-adds of one image's forward pass.
    pub multiply_adds: u64,
    pub batch_size: usize,
}

/// The least time a training step takes on the GPU, however small: kernel launches and
/// synchronisation, not arithmetic. Measured on an H200 with wgpu: the 784-387-10 MLP at batch
/// 1 ran 326 steps/s (3.1 ms), the reference CNN at batch 64 373 steps/s (2.7 ms).
const GPU_STEP_FLOOR_SECONDS: f64 = 2.7e-3;
/// Multiply-adds per second that one CPU thread sustains in training (forward and backward):
/// the reference CNN trained at 1,036 samples/s on one thread of an AVX-512 EPYC, 37 G; the
/// 784-256-10 MLP at 80,000, 49 G. The lower errs towards the GPU.
const CPU_MULTIPLY_ADDS_PER_THREAD: f64 = 35e9;
/// All cores together stop scaling: the reference CNN on the H200 host's 16 threads sustained
/// 60 G multiply-adds per second (before this project's AVX-512 kernels: a floor).
const CPU_MULTIPLY_ADDS_MAX: f64 = 60e9;

impl Workload {
    /// Estimated seconds of one training step on `threads` CPU threads: a step costs about
    /// three forward passes (the forward, and the two products of the backward).
    fn cpu_step_seconds(&self, threads: usize) -> f64 {
        let rate = (threads as f64 * CPU_MULTIPLY_ADDS_PER_THREAD).min(CPU_MULTIPLY_ADDS_MAX);
        3.0 * self.multiply_adds as f64 * self.batch_size as f64 / rate
    }

    /// Why the CPU is the faster device for this workload, or `None` when the GPU is.
    fn cpu_is_faster(&self, threads: usize) -> Option<String> {
        let cpu = self.cpu_step_seconds(threads);
        (cpu < GPU_STEP_FLOOR_SECONDS).then(|| {
            format!(
                "a GPU is present, but this workload is faster on the CPU: a step of batch {} \
                 at {:.2} M multiply-adds per image takes about {:.2} ms on {threads} CPU \
                 threads, a GPU step at least {:.1} ms (--backend wgpu uses the GPU anyway)",
                self.batch_size,
                self.multiply_adds as f64 / 1e6,
                cpu * 1e3,
                GPU_STEP_FLOOR_SECONDS * 1e3,
            )
        })
    }
}

/// Picks and initialises the device, logging one line that says which and why. `workload`, when
/// given, lets `auto` keep a small workload on the CPU.
pub fn select(choice: BackendChoice, workload: Option<Workload>) -> Result<Selected> {
    let selected = match choice {
        BackendChoice::Cpu => cpu("requested".into()),
        BackendChoice::Wgpu => requested_wgpu(&probe())?,
        BackendChoice::Auto => auto(&probe(), workload),
    };
    log(&selected.info);
    Ok(selected)
}

/// What `mnist devices` shows: each wgpu adapter, and the device `--backend auto` chooses.
pub struct Survey {
    /// One line per adapter: its name, kind, API and driver.
    pub adapters: Vec<String>,
    pub auto: BackendInfo,
}

/// Lists the wgpu adapters and makes (and logs) the choice `--backend auto` would make.
pub fn survey() -> Survey {
    let adapters = probe();
    let selected = auto(&adapters, None);
    log(&selected.info);
    Survey {
        adapters: adapters.iter().map(|c| describe(&c.info)).collect(),
        auto: selected.info,
    }
}

fn log(info: &BackendInfo) {
    let device = info
        .adapter
        .as_ref()
        .map_or_else(|| info.device.clone(), AdapterInfo::to_string);
    eprintln!("backend: {} on {device}: {}", info.name, info.reason);
}

/// `--backend wgpu`: the best adapter, software ones included, or an error.
fn requested_wgpu(adapters: &[Candidate]) -> Result<Selected> {
    let Some(best) = best(adapters) else {
        bail!(
            "--backend wgpu: no wgpu adapter found (no Vulkan, Metal or DX12 driver is visible; \
             on Linux install the GPU's Vulkan driver, or Mesa's mesa-vulkan-drivers for a \
             software one)"
        );
    };
    if best.info.device_type == wgpu::DeviceType::Cpu {
        eprintln!(
            "warning: {} is a software rasterizer: wgpu will run, slowly, on the CPU",
            describe(&best.info)
        );
    }
    wgpu_device(best, "requested".into())
        .map_err(|err| err.context("--backend wgpu: the adapter did not initialise"))
}

/// `--backend auto`: a real GPU if one initialises and computes and the workload is not faster
/// on the CPU, else the CPU.
fn auto(adapters: &[Candidate], workload: Option<Workload>) -> Selected {
    let threads = rayon::current_num_threads();
    match best(adapters) {
        Some(gpu) if gpu.info.device_type != wgpu::DeviceType::Cpu => {
            if let Some(reason) = workload.and_then(|w| w.cpu_is_faster(threads)) {
                return cpu(reason);
            }
            wgpu_device(gpu, "a GPU is present".into()).unwrap_or_else(|err| {
                cpu(format!(
                    "the GPU {} failed to initialise: {err:#}",
                    describe(&gpu.info)
                ))
            })
        }
        Some(software) => cpu(format!(
            "the only wgpu adapter is a software rasterizer, {}",
            describe(&software.info)
        )),
        None => cpu("no wgpu adapter (GPU driver) is visible".into()),
    }
}

fn cpu(reason: String) -> Selected {
    // The command runs on the process's rayon pool (`cpu::run_on_pool`), which Flex computes on.
    let threads = rayon::current_num_threads();
    let isa = InstructionSet::detected();
    let denormals = if cpu::pool_flushes_denormals() {
        "denormals flushed"
    } else {
        "denormals kept"
    };
    let plural = if threads == 1 { "" } else { "s" };
    Selected {
        device: Device::flex(),
        info: BackendInfo {
            name: "cpu".into(),
            device: format!("flex ({threads} thread{plural}, {isa}, {denormals})"),
            instruction_set: Some(isa.name().into()),
            adapter: None,
            reason,
        },
        chosen: Instant::now(),
    }
}

/// An adapter, and how Burn addresses it: its graphics API and its index among the adapters
/// of its type on that API.
struct Candidate {
    info: wgpu::AdapterInfo,
    index: usize,
}

/// Every adapter wgpu can see on the compute APIs (Vulkan, Metal, DX12), asked without a
/// window. The instance is dropped before Burn creates its own.
fn probe() -> Vec<Candidate> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
    let infos: Vec<wgpu::AdapterInfo> = adapters.iter().map(wgpu::Adapter::get_info).collect();
    infos
        .iter()
        .enumerate()
        .map(|(i, info)| Candidate {
            info: info.clone(),
            index: infos[..i]
                .iter()
                .filter(|other| {
                    other.device_type == info.device_type && other.backend == info.backend
                })
                .count(),
        })
        .collect()
}

/// The adapter to use: discrete before integrated before virtual before anything else, then
/// software.
fn best(adapters: &[Candidate]) -> Option<&Candidate> {
    let rank = |c: &&Candidate| match c.info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    adapters
        .iter()
        .filter(|c| api(c.info.backend).is_some())
        .min_by_key(rank)
}

fn api(backend: wgpu::Backend) -> Option<(WgpuBackend, &'static str)> {
    match backend {
        wgpu::Backend::Vulkan => Some((WgpuBackend::Vulkan, "vulkan")),
        wgpu::Backend::Metal => Some((WgpuBackend::Metal, "metal")),
        wgpu::Backend::Dx12 => Some((WgpuBackend::Dx12, "dx12")),
        _ => None,
    }
}

fn adapter_info(info: &wgpu::AdapterInfo) -> AdapterInfo {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    };
    AdapterInfo {
        name: info.name.clone(),
        kind: kind.into(),
        api: api(info.backend).map_or("other", |(_, name)| name).into(),
        driver: info.driver.clone(),
        driver_info: info.driver_info.clone(),
    }
}

fn describe(info: &wgpu::AdapterInfo) -> String {
    adapter_info(info).to_string()
}

/// Initialises Burn's wgpu runtime on `candidate` (fallibly: no panic on a worker thread when
/// the driver refuses) and checks it computes.
fn wgpu_device(candidate: &Candidate, reason: String) -> Result<Selected> {
    let kind = match candidate.info.device_type {
        wgpu::DeviceType::DiscreteGpu => DeviceKind::DiscreteGpu(candidate.index),
        wgpu::DeviceType::IntegratedGpu => DeviceKind::IntegratedGpu(candidate.index),
        wgpu::DeviceType::VirtualGpu => DeviceKind::VirtualGpu(candidate.index),
        wgpu::DeviceType::Cpu => DeviceKind::Cpu,
        wgpu::DeviceType::Other => DeviceKind::DefaultDevice,
    };
    let chosen = Instant::now();
    let (graphics_api, _) = api(candidate.info.backend).unwrap_or((WgpuBackend::Auto, ""));
    gpu_cache::open();
    let device = Device::wgpu_options()
        .device_kind(kind)
        .graphics_api(graphics_api)
        .init()?;
    let sum: f32 = (Tensor::<1>::from_floats([1.0, 2.0, 3.0], &device) * 2.0)
        .sum()
        .try_into_scalar()?;
    if sum != 12.0 {
        bail!("smoke test computed 2 * (1 + 2 + 3) = {sum}");
    }
    let adapter = adapter_info(&candidate.info);
    Ok(Selected {
        device,
        info: BackendInfo {
            name: "wgpu".into(),
            device: adapter.name.clone(),
            instruction_set: None,
            adapter: Some(adapter),
            reason,
        },
        chosen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(multiply_adds: u64, batch_size: usize) -> Workload {
        Workload {
            multiply_adds,
            batch_size,
        }
    }

    #[test]
    fn small_steps_stay_on_the_cpu_and_large_ones_go_to_the_gpu() {
        // configs/seed-mlp.toml (batch 1), configs/mlp.toml and configs/smoke.toml (batch 64):
        // the CPU, on 2 threads as on 16.
        for threads in [2, 16] {
            assert!(workload(307_278, 1).cpu_is_faster(threads).is_some());
            assert!(workload(203_264, 64).cpu_is_faster(threads).is_some());
            assert!(workload(92_256, 64).cpu_is_faster(threads).is_some());
        }
        // configs/cnn.toml: 12 M multiply-adds per image, batch 64: the GPU.
        assert!(workload(11_992_448, 64).cpu_is_faster(16).is_none());
        // The MLP at batch 256: the GPU for one thread, the CPU for two.
        assert!(workload(203_264, 256).cpu_is_faster(1).is_none());
        assert!(workload(203_264, 256).cpu_is_faster(2).is_some());
    }

    #[test]
    fn the_reason_gives_the_estimate_and_the_override() {
        let reason = workload(307_278, 1).cpu_is_faster(2).unwrap();
        assert!(
            reason.contains("batch 1 at 0.31 M multiply-adds"),
            "{reason}"
        );
        assert!(reason.contains("--backend wgpu"), "{reason}");
    }
}
