//! The CPU backend on this CPU and on older ones: the instruction set it names, denormals
//! flushed on every thread that computes, and one binary that trains on a CPU without AVX-512
//! or without AVX at all (run by qemu's user-mode emulation, as such a CPU) to the same
//! predictions as here.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// The instruction set `mnist` should find here, as `model.json` names it and as the log
/// shows it.
fn expected_instruction_set() -> (&'static str, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
            return ("avx512", "AVX-512");
        }
        if has!("avx2") && has!("fma") {
            return ("avx2", "AVX2+FMA");
        }
        ("baseline", "SSE2")
    }
    #[cfg(target_arch = "aarch64")]
    return ("neon", "NEON");
}

#[test]
fn the_cpu_backend_names_its_instruction_set_and_flushes_denormals_on_every_thread() {
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("model");
    let output = succeeds(
        mnist()
            .args([
                "train",
                "--backend",
                "cpu",
                "--threads",
                "3",
                "--epochs",
                "1",
                "--config",
            ])
            .arg(config("smoke.toml"))
            .arg("--output")
            .arg(&model),
    );
    let (name, shown) = expected_instruction_set();
    let log = stderr(&output);
    assert!(
        log.contains(&format!(
            "backend: cpu on flex (3 threads, {shown}, denormals flushed): requested"
        )),
        "{log}"
    );
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("model.json")).unwrap()).unwrap();
    assert_eq!(card["backend"]["instruction_set"], name);
}

/// Trains the smoke config with `runner` (empty: natively) into `model`; returns the log.
fn train_with(runner: &[&str], model: &Path) -> String {
    let binary = env!("CARGO_BIN_EXE_mnist");
    let mut command = match runner {
        [] => Command::new(binary),
        [program, args @ ..] => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
    };
    let native = mnist();
    for (name, value) in native.get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    stderr(&succeeds(
        command
            .args(["train", "--backend", "cpu", "--threads", "2", "--config"])
            .arg(config("smoke.toml"))
            .arg("--output")
            .arg(model),
    ))
}

/// The labels `model` predicts for the digits in `digits`, inferred here.
fn predictions(model: &Path, digits: &Path, out: &Path) -> Vec<String> {
    infer(model, digits, out, "cpu");
    std::fs::read_to_string(out.join("test.csv"))
        .unwrap()
        .lines()
        .map(|row| row.rsplit(',').next().unwrap().to_owned())
        .collect()
}

#[test]
#[cfg(target_arch = "x86_64")]
fn models_trained_on_older_cpus_predict_as_the_one_trained_here() {
    let qemu = "qemu-x86_64";
    assert!(
        Command::new(qemu).arg("--version").output().is_ok(),
        "{qemu} missing: apt-get install qemu-user (make setup does)"
    );
    let work = tempfile::tempdir().unwrap();
    let (digits, rows) = sample_attributes(work.path(), "test.csv", 1000);
    let native = work.path().join("native");
    train_with(&[], &native);
    let expected = predictions(&native, &digits, &work.path().join("native-out"));
    assert_eq!(expected.len(), rows.len());

    // Haswell: AVX2 and FMA, no AVX-512. Nehalem: SSE4.2, no AVX at all.
    for (cpu, shown) in [("Haswell", "AVX2+FMA"), ("Nehalem", "SSE2")] {
        let model = work.path().join(cpu);
        let log = train_with(&[qemu, "-cpu", cpu], &model);
        assert!(
            log.contains(&format!("flex (2 threads, {shown}, denormals flushed)")),
            "{cpu}: {log}"
        );
        let got = predictions(&model, &digits, &work.path().join(format!("{cpu}-out")));
        let agree = got.iter().zip(&expected).filter(|(a, b)| a == b).count();
        eprintln!("{cpu}: {agree} of {} predictions agree", expected.len());
        assert!(
            agree * 100 >= expected.len() * 99,
            "{cpu}: {agree} of {} predictions agree with the native model's",
            expected.len()
        );
    }
}
