//! `mnist devices`: every wgpu adapter, then the device `--backend auto` uses, and why.

use anyhow::Result;

use crate::device::backend;
use crate::files::output;

pub fn run() -> Result<()> {
    let survey = backend::survey();
    let mut report = String::new();
    if survey.adapters.is_empty() {
        report.push_str("no wgpu adapters\n");
    }
    for adapter in &survey.adapters {
        report += &format!("wgpu adapter: {adapter}\n");
    }
    report += &format!(
        "--backend auto uses: {} on {}\n",
        survey.auto.name, survey.auto.device
    );
    output::print(&report)
}
