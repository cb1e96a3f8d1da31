//! Choosing the device the stages compute on: wgpu on a real GPU when one is present, Burn's
//! Flex backend on the CPU otherwise. Everything downstream takes a `Device`, so this module is
//! the only place that knows about backends.

use std::fmt;

use anyhow::{Result, bail};
use burn::prelude::*;
use burn::tensor::DeviceKind;
use burn::tensor::wgpu::{WgpuBackend, wgpu};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// wgpu on a real GPU if one initialises, else the CPU.
    Auto,
    /// wgpu on the best adapter, even a software one (with a warning).
    Wgpu,
    /// Burn's Flex backend on the CPU.
    Cpu,
}

/// What the stages ran on, as recorded in `model.json`, `metrics.json` and the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// `cpu` or `wgpu`.
    pub name: String,
    /// The device, e.g. `flex (16 threads)` or the adapter's name.
    pub device: String,
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

pub struct Selected {
    pub device: Device,
    pub info: BackendInfo,
}

/// Picks and initialises the device, logging one line that says which and why.
pub fn select(choice: BackendChoice) -> Result<Selected> {
    let selected = match choice {
        BackendChoice::Cpu => cpu("requested".into()),
        BackendChoice::Wgpu => requested_wgpu(&probe())?,
        BackendChoice::Auto => auto(&probe()),
    };
    log(&selected.info);
    Ok(selected)
}

/// `mnist devices`: every wgpu adapter, then the choice `--backend auto` makes.
pub fn report() -> Result<()> {
    let adapters = probe();
    if adapters.is_empty() {
        println!("no wgpu adapters");
    }
    for candidate in &adapters {
        println!("wgpu adapter: {}", describe(&candidate.info));
    }
    let selected = auto(&adapters);
    log(&selected.info);
    println!(
        "--backend auto uses: {} on {}",
        selected.info.name, selected.info.device
    );
    Ok(())
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

/// `--backend auto`: a real GPU if one initialises and computes, else the CPU.
fn auto(adapters: &[Candidate]) -> Selected {
    match best(adapters) {
        Some(gpu) if gpu.info.device_type != wgpu::DeviceType::Cpu => {
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
    // The command runs inside its rayon pool (see main), which Flex computes on.
    let threads = rayon::current_num_threads();
    Selected {
        device: Device::flex(),
        info: BackendInfo {
            name: "cpu".into(),
            device: format!("flex ({threads} threads)"),
            adapter: None,
            reason,
        },
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
    let (graphics_api, _) = api(candidate.info.backend).unwrap_or((WgpuBackend::Auto, ""));
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
            adapter: Some(adapter),
            reason,
        },
    })
}
