//! The GPU's on-disk cache: what the wgpu backend would otherwise redo in every process. On a
//! fresh process Burn compiles every kernel and autotunes the matrix and convolution kernels
//! again, which on an H200 cost ~55 s before the first epoch could run at speed; a Pachyderm
//! datum is always a fresh process. One directory holds:
//!
//! - `cubecl/`: CubeCL's database of autotune results (the fastest kernel variant for each
//!   operation and shape);
//! - `driver/`: the GPU driver's own cache of the compute pipelines it compiled from the
//!   kernels' shaders (NVIDIA's and Mesa's, pointed here through their environment variables).
//!
//! A cache that cannot be used never fails a run: a corrupt database is removed and rebuilt, a
//! read-only one is read, and a directory that cannot be created is skipped; each with a
//! warning.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::cubecl::config::cache::CacheConfig;
use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
use burn::cubecl::environment;
use burn::cubecl::records::RecordLevel;

/// The environment variable that names the cache directory (as `--cache-dir` does).
pub const DIR_ENV: &str = "MNIST_CACHE_DIR";

/// The first bytes of every SQLite-format database file, which CubeCL's store writes.
const DATABASE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// How many processes' build records CubeCL keeps in the database.
const KEEP_SESSIONS: u32 = 4;

/// The directory `main` chose, before any thread started.
static DIR: OnceLock<PathBuf> = OnceLock::new();
/// The cache as it was when the device opened it.
static OPENED: OnceLock<Opened> = OnceLock::new();

/// Chooses the cache directory: `dir` (from `--cache-dir` or `MNIST_CACHE_DIR`), else
/// `$XDG_CACHE_HOME/mnist`, else `~/.cache/mnist`. Returns the environment variables that point
/// the GPU drivers' own shader caches into it, for `main` to set before any thread starts (the
/// Vulkan driver reads them when it loads).
pub fn init(dir: Option<PathBuf>) -> Vec<(&'static str, OsString)> {
    let dir = dir.unwrap_or_else(default_dir);
    let driver = dir.join("driver");
    let variables = vec![
        // NVIDIA's driver (its Vulkan pipelines included), then Mesa's (RADV, ANV, lavapipe).
        ("__GL_SHADER_DISK_CACHE", "1".into()),
        ("__GL_SHADER_DISK_CACHE_PATH", driver.join("nvidia").into()),
        ("__GL_SHADER_DISK_CACHE_SKIP_CLEANUP", "1".into()),
        ("MESA_SHADER_CACHE_DIR", driver.join("mesa").into()),
    ];
    let _ = DIR.set(dir);
    variables
}

fn default_dir() -> PathBuf {
    let cache_home = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| std::env::home_dir().map(|home| home.join(".cache")));
    match cache_home {
        Some(dir) => dir.join("mnist"),
        None => std::env::temp_dir().join("mnist-cache"),
    }
}

/// What the cache held when the device opened it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Contents {
    /// Autotune results: the fastest kernel variant per operation and shape.
    pub tuned: u64,
    /// Bytes of the drivers' compiled pipelines.
    pub pipeline_bytes: u64,
}

impl Contents {
    fn read(dir: &Path) -> Self {
        Self {
            tuned: environment::namespaces()
                .iter()
                .filter(|namespace| namespace.namespace.starts_with("autotune/"))
                .map(|namespace| namespace.entries)
                .sum(),
            pipeline_bytes: bytes_under(&dir.join("driver")),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tuned == 0 && self.pipeline_bytes == 0
    }
}

/// Bytes of the files under `dir`, symbolic links not followed.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => bytes_under(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// How the cache is used in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usage {
    /// Read, and new entries written.
    ReadWrite,
    /// Read only: the directory is not writable (a cache baked into an image, say).
    ReadOnly,
    /// Not used; the reason.
    Skipped(String),
}

#[derive(Debug, Clone)]
pub struct Opened {
    pub dir: PathBuf,
    pub usage: Usage,
    pub before: Contents,
}

impl Opened {
    pub fn is_warm(&self) -> bool {
        !self.before.is_empty()
    }
}

/// Points CubeCL at the cache directory (or turns its persistent caches off when the directory
/// cannot be used) and logs whether the cache is warm. Call before the wgpu device initialises;
/// later calls return the first one's answer.
pub fn open() -> &'static Opened {
    OPENED.get_or_init(|| {
        let dir = DIR.get().cloned().unwrap_or_else(default_dir);
        let usage = prepare(&dir);
        configure(&dir, &usage);
        let before = match usage {
            Usage::Skipped(_) => Contents::default(),
            _ => Contents::read(&dir),
        };
        let opened = Opened { dir, usage, before };
        eprintln!("{}", describe(&opened));
        opened
    })
}

/// The closing line: what this process added to the cache. `None` when the cache was not
/// opened or not written.
pub fn summary() -> Option<String> {
    let opened = OPENED.get()?;
    if opened.usage != Usage::ReadWrite {
        return None;
    }
    let now = Contents::read(&opened.dir);
    Some(format!(
        "gpu cache: {} new autotune results and {:.1} MB of new pipelines this run; {} in {}",
        now.tuned.saturating_sub(opened.before.tuned),
        megabytes(
            now.pipeline_bytes
                .saturating_sub(opened.before.pipeline_bytes)
        ),
        held(&now),
        opened.dir.display()
    ))
}

/// What the cache holds, in words.
fn held(contents: &Contents) -> String {
    format!(
        "{} autotune results and {:.1} MB of compiled pipelines",
        contents.tuned,
        megabytes(contents.pipeline_bytes)
    )
}

fn describe(opened: &Opened) -> String {
    let dir = opened.dir.display();
    let held = held(&opened.before);
    match (&opened.usage, opened.is_warm()) {
        (Usage::Skipped(reason), _) => format!(
            "warning: gpu cache: not used ({reason}): kernels are compiled and tuned anew in \
             this process, which makes the first steps slow"
        ),
        (Usage::ReadOnly, true) => {
            format!("gpu cache: warm, read-only: {held} in {dir}; new entries are not kept")
        }
        (Usage::ReadOnly, false) => format!(
            "warning: gpu cache: {dir} is read-only and holds nothing: kernels are compiled and \
             tuned anew in this process"
        ),
        (Usage::ReadWrite, true) => format!("gpu cache: warm: {held} in {dir}"),
        (Usage::ReadWrite, false) => format!(
            "gpu cache: cold: {dir} holds nothing yet; kernels are compiled and tuned on first \
             use and kept for later runs"
        ),
    }
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Where CubeCL keeps its database under `dir`.
fn cubecl_root(dir: &Path) -> PathBuf {
    dir.join("cubecl")
}

/// Makes the directory usable, or says why it is not: creates it, removes a database that is
/// not one, and tells a writable directory from a read-only one.
fn prepare(dir: &Path) -> Usage {
    let root = cubecl_root(dir);
    // A directory that cannot be written is still read, if it holds a database.
    let unwritable = |problem: String| match database_header(&database_path(&root)) {
        Header::Valid => Usage::ReadOnly,
        _ => Usage::Skipped(problem),
    };
    if let Err(err) = fs::create_dir_all(&root) {
        return unwritable(format!("cannot create {}: {err}", root.display()));
    }
    for subdir in ["nvidia", "mesa"] {
        // The drivers skip their own cache where its directory cannot be made; no harm.
        let _ = fs::create_dir_all(dir.join("driver").join(subdir));
    }
    if let Err(err) = tempfile::tempfile_in(&root) {
        return unwritable(format!("{} is not writable: {err}", root.display()));
    }
    let database = database_path(&root);
    match database_header(&database) {
        Header::Missing | Header::Valid => Usage::ReadWrite,
        Header::Unreadable(err) if database.is_dir() => Usage::Skipped(format!(
            "{} is a directory, not a database: {err}",
            database.display()
        )),
        Header::Unreadable(err) => rebuild(&database, &err.to_string()),
        Header::Foreign(what) => rebuild(&database, &what),
    }
}

/// Removes a broken database so that CubeCL writes a new one.
fn rebuild(database: &Path, what: &str) -> Usage {
    eprintln!(
        "warning: gpu cache: {} is not a usable database ({what}); removing it, the cache is \
         rebuilt",
        database.display()
    );
    match remove_database(database) {
        Ok(()) => Usage::ReadWrite,
        Err(err) => Usage::Skipped(format!(
            "cannot remove the broken {}: {err}",
            database.display()
        )),
    }
}

/// The database file of CubeCL's default environment under `root`.
fn database_path(root: &Path) -> PathBuf {
    root.join(environment::file_name(environment::DEFAULT))
}

enum Header {
    Missing,
    Valid,
    /// The file exists but cannot be read.
    Unreadable(std::io::Error),
    /// The file is not a database: what was found.
    Foreign(String),
}

fn database_header(path: &Path) -> Header {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Header::Missing,
        Err(err) => return Header::Unreadable(err),
    };
    let mut header = [0u8; DATABASE_MAGIC.len()];
    match file.read_exact(&mut header) {
        Ok(()) if &header == DATABASE_MAGIC => Header::Valid,
        Ok(()) => Header::Foreign("its first bytes are not a database header".into()),
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
            Header::Foreign("shorter than a database header".into())
        }
        Err(err) => Header::Unreadable(err),
    }
}

/// Removes a database file and the write-ahead log and index beside it.
fn remove_database(path: &Path) -> std::io::Result<()> {
    fs::remove_file(path)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        match fs::remove_file(PathBuf::from(side)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    }
    Ok(())
}

/// CubeCL's configuration as it would load it (`cubecl.toml`, `burn.toml`, `CUBECL_*`
/// variables), with the cache placed in `dir`, or its persistent caches off.
fn configure(dir: &Path, usage: &Usage) {
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    config.environment.path = CacheConfig::Directory(cubecl_root(dir));
    // CubeCL records every process's session unless told otherwise: a Pachyderm pipeline
    // would grow the database by one session per datum.
    config
        .environment
        .records
        .keep_sessions
        .get_or_insert(KEEP_SESSIONS);
    if let Usage::Skipped(_) = usage {
        config.autotune.disable_cache = true;
        config.throughput.disable_cache = true;
        config.environment.records.level = RecordLevel::Off;
    }
    if !CubeClRuntimeConfig::try_set(config) {
        eprintln!("warning: gpu cache: CubeCL was configured before the cache; it may not be used");
    }
}
