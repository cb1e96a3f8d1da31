//! Choosing the device the stages compute on. Everything downstream takes a `Device`, so adding
//! a backend touches only this module.

use anyhow::Result;
use burn::prelude::Device;
use clap::ValueEnum;

use crate::model_dir::BackendInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// Burn's Flex backend on the CPU, all cores.
    Cpu,
}

pub struct Selected {
    pub device: Device,
    pub info: BackendInfo,
}

pub fn select(choice: BackendChoice) -> Result<Selected> {
    let selected = match choice {
        BackendChoice::Cpu => Selected {
            device: Device::flex(),
            info: BackendInfo {
                name: "cpu".into(),
                device: format!("flex ({} threads)", rayon_threads()),
            },
        },
    };
    eprintln!(
        "backend: {} on {}",
        selected.info.name, selected.info.device
    );
    Ok(selected)
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
