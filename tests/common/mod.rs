//! Helpers shared by the end-to-end tests: the binary, the sample data, scratch directories.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use std::process::Command;

pub fn mnist() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mnist"));
    // No test reaches the real W&B, whatever key the environment holds; the W&B tests turn it
    // on against their fake server.
    cmd.env("CI", "true")
        .env_remove("MNIST_BACKEND")
        // GPU kernels are cached for the whole test run, never in the user's own cache.
        .env(
            "MNIST_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("gpu-cache"),
        )
        .env("WANDB_MODE", "disabled");
    cmd
}

/// Makes the Vulkan loader see Mesa's software driver (lavapipe) only, so that a test of the
/// software path means the same on a machine with a GPU.
pub fn software_vulkan(cmd: &mut Command) -> &mut Command {
    let icd = std::fs::read_dir("/usr/share/vulkan/icd.d")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("lvp_icd."))
        })
        .expect("Mesa's software Vulkan driver (apt-get install mesa-vulkan-drivers)");
    // The loader's current name for the variable, and the older one.
    cmd.env("VK_DRIVER_FILES", &icd)
        .env("VK_ICD_FILENAMES", &icd)
}

pub fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist-sample")
}

pub fn config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(name)
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `cmd`, expecting failure, and returns its stderr.
pub fn fails(cmd: &mut Command) -> String {
    let output = cmd.output().expect("runs");
    assert!(
        !output.status.success(),
        "expected failure, got success; stderr:\n{}",
        stderr(&output)
    );
    stderr(&output)
}

/// Runs `cmd`, expecting success, and returns its stderr.
pub fn succeeds(cmd: &mut Command) -> Output {
    let output = cmd.output().expect("runs");
    assert!(
        output.status.success(),
        "expected success; stderr:\n{}",
        stderr(&output)
    );
    output
}

/// Files directly in `dir`, by name.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Trains the smoke config on the built-in sample into `dir` (once per test that needs it).
pub fn train_smoke(dir: &Path) {
    succeeds(
        mnist()
            .args(["train", "--config"])
            .arg(config("smoke.toml"))
            .arg("--output")
            .arg(dir),
    );
}

/// Decompresses a gzipped sample file.
pub fn gunzip(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("sample file"))
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

/// Parses the sample into `work/csv` and writes its first `count` test images, without their
/// labels, to `work/digits/<name>`. Returns the digits directory and each row's label and
/// pixels, as text.
pub fn sample_attributes(
    work: &Path,
    name: &str,
    count: usize,
) -> (PathBuf, Vec<(String, String)>) {
    let csv = work.join("csv");
    succeeds(
        mnist()
            .args(["parse", "--input"])
            .arg(sample_dir())
            .arg("--output")
            .arg(&csv),
    );
    let rows: Vec<(String, String)> = std::fs::read_to_string(csv.join("test.csv"))
        .unwrap()
        .lines()
        .take(count)
        .map(|l| {
            let (label, pixels) = l.split_once(',').unwrap();
            (label.to_string(), pixels.to_string())
        })
        .collect();
    let digits = work.join("digits");
    std::fs::create_dir_all(&digits).unwrap();
    let attributes: String = rows.iter().map(|(_, px)| format!("{px}\n")).collect();
    std::fs::write(digits.join(name), attributes).unwrap();
    (digits, rows)
}

/// Runs `mnist infer` on `backend`, writing to `out`.
pub fn infer(model: &Path, input: &Path, out: &Path, backend: &str) {
    succeeds(
        mnist()
            .args(["infer", "--backend", backend, "--model"])
            .arg(model)
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(out),
    );
}

/// Uploads offline runs with the official `wandb sync` (`pip install wandb==0.31.0`) to the
/// server at `url`, with `key`.
pub fn wandb_sync(run_dirs: &[&Path], url: &str, home: &Path, key: &str) {
    let sync = Command::new("python3")
        .args(["-m", "wandb", "sync"])
        .args(run_dirs)
        .env("WANDB_BASE_URL", url)
        .env("WANDB_API_KEY", key)
        .env("HOME", home)
        // wandb sync writes its logs under ./wandb: keep them out of the project.
        .current_dir(home)
        .output()
        .expect("python3 -m wandb sync runs (pip install wandb==0.31.0)");
    assert!(
        sync.status.success(),
        "wandb sync failed:\n{}{}",
        String::from_utf8_lossy(&sync.stdout),
        stderr(&sync)
    );
}

pub mod fake_wandb;

/// Width and height of an RGB PNG, and its pixels.
pub fn png_pixels(path: &Path) -> ((u32, u32), Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let pixels = buf[..info.buffer_size()]
        .chunks_exact(3)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    ((info.width, info.height), pixels)
}
