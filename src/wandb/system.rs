//! System metrics for `wandb-events.jsonl`, read from Linux's /proc: CPU use of the machine,
//! memory use, and this process's resident memory and threads.

use std::time::Instant;

use serde_json::{Map, Value, json};

/// CPU time counters between two samples give the CPU share in between.
pub struct SystemSampler {
    last_cpu: Option<(u64, u64)>,
    started: Instant,
}

impl SystemSampler {
    pub fn new(started: Instant) -> Self {
        Self {
            last_cpu: cpu_times(),
            started,
        }
    }

    /// One `wandb-events.jsonl` line, with whatever /proc offers here.
    pub fn sample(&mut self) -> String {
        let mut row = Map::new();
        let cpu = cpu_times();
        if let (Some((busy0, total0)), Some((busy1, total1))) = (self.last_cpu, cpu)
            && total1 > total0
        {
            let share = (busy1 - busy0) as f64 / (total1 - total0) as f64;
            row.insert("system.cpu".into(), json!(100.0 * share));
        }
        self.last_cpu = cpu;
        if let Some((total, available)) = memory_kib() {
            row.insert(
                "system.memory_percent".into(),
                json!(100.0 * (total - available) as f64 / total as f64),
            );
            row.insert(
                "system.proc.memory.availableMB".into(),
                json!(available as f64 / 1024.0),
            );
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if let Some(rss) = status_field(&status, "VmRSS:") {
            row.insert(
                "system.proc.memory.rssMB".into(),
                json!(rss as f64 / 1024.0),
            );
        }
        if let Some(threads) = status_field(&status, "Threads:") {
            row.insert("system.proc.cpu.threads".into(), json!(threads));
        }
        row.insert("_wandb".into(), Value::Bool(true));
        row.insert(
            "_runtime".into(),
            json!(self.started.elapsed().as_secs_f64()),
        );
        row.insert("_timestamp".into(), json!(super::clock::unix_seconds()));
        Value::Object(row).to_string()
    }
}

/// (busy, total) jiffies of all CPUs.
fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().sum();
    // idle and iowait are the 4th and 5th.
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// (total, available) memory in KiB.
fn memory_kib() -> Option<(u64, u64)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some((
        status_field(&meminfo, "MemTotal:")?,
        status_field(&meminfo, "MemAvailable:")?,
    ))
}

/// The number after `name` on its line, e.g. `VmRSS:   1234 kB` → 1234.
fn status_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_hold_memory_and_threads() {
        let mut sampler = SystemSampler::new(Instant::now());
        let row: Value = serde_json::from_str(&sampler.sample()).unwrap();
        assert!(
            row["system.proc.memory.rssMB"].as_f64().unwrap() > 0.0,
            "{row}"
        );
        assert!(
            row["system.proc.cpu.threads"].as_u64().unwrap() >= 1,
            "{row}"
        );
        assert!(row["system.memory_percent"].as_f64().is_some(), "{row}");
        assert_eq!(row["_wandb"], true);
    }
}
