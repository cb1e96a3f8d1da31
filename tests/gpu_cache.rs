//! The GPU cache across processes, on whatever wgpu adapter the machine has (Mesa's software
//! Vulkan in CI): a second process reuses what the first compiled and tuned, and a cache
//! directory that cannot be used never fails a run.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::*;

/// A scratch directory with a small data set (64 training and 64 test images of the sample),
/// an MLP trained on it on the CPU, and 16 digits to classify. The GPU runs are kept small
/// because each cold one compiles and tunes every kernel, which on lavapipe takes a while.
struct Scene {
    work: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        let work = tempfile::tempdir().unwrap();
        let (_, rows) = sample_attributes(work.path(), "digits.csv", 16);
        assert_eq!(rows.len(), 16);
        let tiny = work.path().join("tiny");
        fs::create_dir_all(&tiny).unwrap();
        for name in ["train.csv", "test.csv"] {
            let text = fs::read_to_string(work.path().join("csv").join(name)).unwrap();
            let head: String = text.lines().take(64).map(|l| format!("{l}\n")).collect();
            fs::write(tiny.join(name), head).unwrap();
        }
        let scene = Self { work };
        let mut cpu = scene.train(&scene.path("unused"), "model");
        succeeds(cpu.args(["--backend", "cpu"]));
        scene
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// `mnist train` of the MLP config on the small data for one epoch, into `out`.
    fn train(&self, cache: &Path, out: &str) -> Command {
        let mut cmd = mnist();
        cmd.args(["train", "--epochs", "1", "--config"])
            .arg(config("mlp.toml"))
            .arg("--data")
            .arg(self.path("tiny"))
            .arg("--cache-dir")
            .arg(cache)
            .arg("--output")
            .arg(self.path(out));
        cmd
    }

    /// `mnist infer --backend wgpu` of the 16 digits with the CPU-trained model, into `out`.
    fn infer(&self, cache: &Path, out: &str) -> Command {
        let mut cmd = mnist();
        cmd.args(["infer", "--backend", "wgpu", "--model"])
            .arg(self.path("model"))
            .arg("--input")
            .arg(self.path("digits"))
            .arg("--cache-dir")
            .arg(cache)
            .arg("--output")
            .arg(self.path(out));
        cmd
    }

    fn inferred(&self, out: &str) -> bool {
        self.path(out).join("digits.csv").is_file()
    }
}

/// The seconds of the start-up line: from choosing the device to the first step's results.
fn startup_seconds(log: &str) -> f64 {
    let line = log
        .lines()
        .find(|l| l.starts_with("start-up: "))
        .unwrap_or_else(|| panic!("no start-up line in:\n{log}"));
    line.split_whitespace()
        .find_map(|word| word.strip_suffix('s')?.parse().ok())
        .unwrap_or_else(|| panic!("no seconds in {line}"))
}

fn cache_line(log: &str) -> &str {
    log.lines()
        .find(|l| l.contains("gpu cache: ") && !l.contains(" this run; "))
        .unwrap_or_else(|| panic!("no gpu cache line in:\n{log}"))
}

fn database(cache: &Path) -> PathBuf {
    cache.join("cubecl").join("default.db")
}

#[test]
fn a_second_process_starts_warm_and_faster() {
    let scene = Scene::new();
    let cache = scene.path("cache");
    let wgpu = |out| {
        let mut cmd = scene.train(&cache, out);
        cmd.args(["--backend", "wgpu"]);
        cmd
    };

    let started = Instant::now();
    let cold = stderr(&succeeds(&mut wgpu("cold")));
    let cold_seconds = started.elapsed().as_secs_f64();
    assert!(cache_line(&cold).starts_with("gpu cache: cold:"), "{cold}");
    assert!(cold.contains("new autotune results and"), "{cold}");
    assert_eq!(
        &fs::read(database(&cache)).unwrap()[..16],
        b"SQLite format 3\0"
    );

    let started = Instant::now();
    let warm = stderr(&succeeds(&mut wgpu("warm")));
    let warm_seconds = started.elapsed().as_secs_f64();
    assert!(cache_line(&warm).starts_with("gpu cache: warm: "), "{warm}");
    assert!(
        warm.contains("gpu cache: 0 new autotune results and 0.0 MB of new pipelines"),
        "{warm}"
    );

    let (cold_startup, warm_startup) = (startup_seconds(&cold), startup_seconds(&warm));
    eprintln!(
        "start-up: cold {cold_startup:.2}s, warm {warm_startup:.2}s; \
         whole process: cold {cold_seconds:.1}s, warm {warm_seconds:.1}s"
    );
    assert!(
        warm_startup * 3.0 < cold_startup,
        "a warm start-up ({warm_startup:.2}s) should be several times faster than a cold one \
         ({cold_startup:.2}s)"
    );
    assert!(
        warm_seconds * 2.0 < cold_seconds,
        "{warm_seconds} vs {cold_seconds}"
    );
}

#[test]
fn a_corrupt_database_is_rebuilt() {
    let scene = Scene::new();
    let cache = scene.path("cache");
    fs::create_dir_all(cache.join("cubecl")).unwrap();
    fs::write(database(&cache), b"this is no database, just some bytes").unwrap();
    fs::write(cache.join("cubecl/default.db-wal"), b"stale log").unwrap();

    let log = stderr(&succeeds(&mut scene.infer(&cache, "out")));
    assert!(
        log.contains("is not a usable database") && log.contains("the cache is rebuilt"),
        "{log}"
    );
    assert!(scene.inferred("out"));
    assert_eq!(
        &fs::read(database(&cache)).unwrap()[..16],
        b"SQLite format 3\0"
    );
    let again = stderr(&succeeds(&mut scene.infer(&cache, "again")));
    assert!(
        cache_line(&again).starts_with("gpu cache: warm: "),
        "{again}"
    );
}

#[test]
fn a_cache_directory_that_cannot_exist_is_skipped_with_a_warning() {
    let scene = Scene::new();
    let file = scene.path("a-file");
    fs::write(&file, "not a directory").unwrap();

    let log = stderr(&succeeds(&mut scene.infer(&file.join("cache"), "out")));
    let line = cache_line(&log);
    assert!(
        line.starts_with("warning: gpu cache: not used (cannot create"),
        "{line}"
    );
    assert!(scene.inferred("out"));
    assert!(!log.contains(" this run; "), "{log}");
}

#[test]
fn a_database_path_taken_by_a_directory_is_skipped_with_a_warning() {
    let scene = Scene::new();
    let cache = scene.path("cache");
    fs::create_dir_all(database(&cache)).unwrap();

    let log = stderr(&succeeds(&mut scene.infer(&cache, "out")));
    assert!(
        cache_line(&log).starts_with("warning: gpu cache: not used")
            && log.contains("is a directory, not a database"),
        "{log}"
    );
    assert!(scene.inferred("out"));
}

#[test]
fn two_processes_fill_one_cold_cache_at_once() {
    let scene = Scene::new();
    let cache = scene.path("cache");
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|out| {
            scene
                .infer(&cache, out)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let log = stderr(&succeeds(&mut scene.infer(&cache, "c")));
    assert!(cache_line(&log).starts_with("gpu cache: warm: "), "{log}");
    assert_eq!(
        fs::read_to_string(scene.path("a/digits.csv")).unwrap(),
        fs::read_to_string(scene.path("c/digits.csv")).unwrap()
    );
}

#[test]
fn the_cpu_backend_leaves_the_cache_alone() {
    let scene = Scene::new();
    let cache = scene.path("cache");
    let log = stderr(&succeeds(
        scene.train(&cache, "cpu").args(["--backend", "cpu"]),
    ));
    assert!(!log.contains("gpu cache"), "{log}");
    assert!(!cache.exists());
}

/// `cmd` run with `dir` read-only: a read-only bind mount in a mount namespace of its own
/// (root ignores permission bits), else the directory's write bits removed. `None` where
/// neither is possible.
fn with_read_only(dir: &Path, cmd: &Command) -> Option<Command> {
    let root = fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if !root {
        set_read_only(dir, true);
        let mut same = Command::new(cmd.get_program());
        same.args(cmd.get_args());
        same.envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
        return Some(same);
    }
    let allowed = Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !allowed {
        return None;
    }
    let mut wrapped = Command::new("unshare");
    wrapped
        .args([
            "-m",
            "sh",
            "-c",
            r#"mount --bind -o ro "$0" "$0" && exec "$@""#,
        ])
        .arg(dir)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    wrapped.envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
    Some(wrapped)
}

fn set_read_only(dir: &Path, read_only: bool) {
    for entry in walk(dir) {
        let mut permissions = fs::metadata(&entry).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        permissions.set_readonly(read_only);
        fs::set_permissions(&entry, permissions).unwrap();
    }
}

/// `dir` and everything under it, deepest first.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(walk(&path));
        }
        all.push(path);
    }
    all.push(dir.to_path_buf());
    all
}

#[test]
fn a_read_only_cache_is_read_and_left_alone() {
    let scene = Scene::new();
    let cache = scene.path("cache");
    succeeds(&mut scene.infer(&cache, "a"));
    let sizes = || -> Vec<_> {
        walk(&cache)
            .into_iter()
            .map(|p| (fs::metadata(&p).unwrap().len(), p))
            .collect()
    };
    let before = sizes();

    let Some(mut cmd) = with_read_only(&cache, &scene.infer(&cache, "b")) else {
        eprintln!("skipped: no way to make a directory read-only for root here");
        return;
    };
    let output = cmd.output().unwrap();
    if fs::metadata(&cache).unwrap().permissions().readonly() {
        set_read_only(&cache, false);
    }
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert!(
        cache_line(&log).starts_with("gpu cache: warm, read-only: "),
        "{log}"
    );
    assert!(scene.inferred("b"));
    assert_eq!(before, sizes());
}
