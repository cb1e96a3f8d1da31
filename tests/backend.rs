//! Backend selection and the wgpu path, exercised on Mesa's software Vulkan (lavapipe), the only
//! driver these tests let the Vulkan loader see (CI has no GPU; a machine with one gives the
//! same results): `auto` must choose the CPU, and `--backend wgpu` must still train and agree
//! with the CPU.

mod common;

use std::fs;

use burn::prelude::*;
use burn::tensor::{DeviceKind, TensorData};
use common::*;
use model::{ActivationKind, Architecture, CnnConfig, InputShape, MlpConfig};

/// Makes the Vulkan loader see no driver at all.
const NO_DRIVER: (&str, &str) = ("VK_ICD_FILENAMES", "/nonexistent/icd.json");

fn card(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(dir.join("model.json")).unwrap()).unwrap()
}

#[test]
fn auto_chooses_the_cpu_over_a_software_adapter_and_says_why() {
    let out = tempfile::tempdir().unwrap();
    let output = succeeds(
        software_vulkan(&mut mnist())
            .args(["train", "--epochs", "1", "--config"])
            .arg(config("smoke.toml"))
            .arg("--output")
            .arg(out.path()),
    );
    let log = stderr(&output);
    let line = log.lines().find(|l| l.starts_with("backend:")).unwrap();
    assert!(line.starts_with("backend: cpu on flex"), "{line}");
    assert!(
        line.contains("the only wgpu adapter is a software rasterizer, llvmpipe"),
        "{line}"
    );
    assert!(line.contains("vulkan"), "{line}");
    let card = card(out.path());
    assert_eq!(card["backend"]["name"], "cpu");
    assert!(
        card["backend"]["reason"]
            .as_str()
            .unwrap()
            .contains("llvmpipe")
    );
}

#[test]
fn without_any_driver_wgpu_fails_cleanly_and_auto_falls_back() {
    let out = tempfile::tempdir().unwrap();
    let model = out.path().join("model");
    let err = fails(
        mnist()
            .env(NO_DRIVER.0, NO_DRIVER.1)
            .args(["train", "--backend", "wgpu", "--config"])
            .arg(config("smoke.toml"))
            .arg("--output")
            .arg(&model),
    );
    assert!(
        err.contains("--backend wgpu: no wgpu adapter found"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!model.exists());

    let output = succeeds(
        mnist()
            .env(NO_DRIVER.0, NO_DRIVER.1)
            .args(["train", "--epochs", "1", "--config"])
            .arg(config("smoke.toml"))
            .arg("--output")
            .arg(&model),
    );
    assert!(
        stderr(&output).contains("backend: cpu on flex (2 threads): no wgpu adapter")
            || stderr(&output).contains(": no wgpu adapter (GPU driver) is visible"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn wgpu_trains_on_lavapipe_and_the_cpu_infers_the_same() {
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("model");
    let output = succeeds(
        software_vulkan(&mut mnist())
            .args(["train", "--backend", "wgpu", "--config"])
            .arg(config("smoke.toml"))
            .arg("--output")
            .arg(&model),
    );
    let log = stderr(&output);
    assert!(log.contains("warning: llvmpipe"), "{log}");
    assert!(log.contains("backend: wgpu on llvmpipe"), "{log}");
    let card = card(&model);
    assert_eq!(card["backend"]["name"], "wgpu");
    assert_eq!(card["backend"]["adapter"]["kind"], "cpu");
    assert_eq!(card["backend"]["adapter"]["api"], "vulkan");
    let accuracy = card["metrics"]["test_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.85, "test accuracy on wgpu {accuracy}");

    // The test images, unlabelled, classified on both backends.
    let (digits, _) = sample_attributes(work.path(), "test.csv", 1000);
    let predictions = |backend: &str| {
        let out = work.path().join(backend);
        succeeds(
            software_vulkan(&mut mnist())
                .args(["infer", "--backend", backend, "--model"])
                .arg(&model)
                .arg("--input")
                .arg(&digits)
                .arg("--output")
                .arg(&out),
        );
        fs::read_to_string(out.join("test.csv")).unwrap()
    };
    let (cpu, wgpu) = (predictions("cpu"), predictions("wgpu"));
    assert_eq!(cpu.lines().count(), 1000);
    let differing = cpu
        .lines()
        .zip(wgpu.lines())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        differing, 0,
        "{differing} of 1000 predictions differ between cpu and wgpu"
    );
}

/// The same weights on both devices, the same inputs: the same outputs within 1e-4.
#[test]
fn forward_passes_agree_between_wgpu_and_cpu() {
    let wgpu = Device::wgpu_options()
        .device_kind(DeviceKind::Cpu)
        .init()
        .expect("lavapipe initialises (apt-get install mesa-vulkan-drivers)");
    let cpu = Device::flex();
    let input = InputShape::MNIST;
    let architectures = [
        Architecture::Mlp(MlpConfig {
            hidden: vec![64],
            activation: ActivationKind::Sigmoid,
            output_activation: ActivationKind::Sigmoid,
            dropout: 0.0,
        }),
        Architecture::Cnn(CnnConfig {
            channels: vec![8, 16],
            kernel_size: 3,
            padding: 0,
            pool: 2,
            pool_after: None,
            batch_norm: false,
            hidden: vec![32],
            activation: ActivationKind::Relu,
            conv_dropout: 0.25,
            dropout: 0.5,
        }),
        // Padded, pooled twice, batch-normalized: Burn's own layers on wgpu.
        Architecture::Cnn(CnnConfig {
            channels: vec![8, 16],
            kernel_size: 3,
            padding: 1,
            pool: 2,
            pool_after: Some(vec![1, 2]),
            batch_norm: true,
            hidden: vec![32],
            activation: ActivationKind::Relu,
            conv_dropout: 0.25,
            dropout: 0.5,
        }),
    ];
    let pixels: Vec<f32> = (0..16 * 784)
        .map(|i| ((i * 7919) % 256) as f32 / 255.0)
        .collect();
    for architecture in architectures {
        cpu.seed(3);
        let network = architecture.init(input, 10, &cpu);
        let weights = model::save_weights(&network).unwrap();
        let on_wgpu = model::load_weights(&architecture, input, 10, weights, &wgpu).unwrap();
        let forward = |network: &model::Network, device: &Device| {
            let x = Tensor::<2>::from_data(TensorData::new(pixels.clone(), [16, 784]), device);
            network.forward(x).into_data().try_to_vec::<f32>().unwrap()
        };
        let (a, b) = (forward(&network, &cpu), forward(&on_wgpu, &wgpu));
        let max_diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        eprintln!(
            "{}: max |cpu - wgpu| = {max_diff:e}",
            architecture.describe(input, 10)
        );
        assert!(max_diff < 1e-4, "{max_diff}");
    }
}

#[test]
fn devices_lists_the_adapters_and_the_choice() {
    let output = succeeds(software_vulkan(&mut mnist()).arg("devices"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("wgpu adapter: llvmpipe"), "{stdout}");
    assert!(stdout.contains("cpu adapter, vulkan"), "{stdout}");
    assert!(
        stdout.contains("--backend auto uses: cpu on flex"),
        "{stdout}"
    );
}
