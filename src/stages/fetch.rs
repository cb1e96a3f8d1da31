//! `mnist fetch`: download a dataset's four gzipped IDX files from known mirrors, trying the
//! next mirror when one fails, and verify each against the published SHA-256 of its
//! decompressed content, so that a mirror which recompressed the files still verifies.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use flate2::read::MultiGzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::files::output::AtomicFile;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dataset {
    Mnist,
    Fashion,
}

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    #[arg(long, value_enum, default_value = "mnist")]
    pub dataset: Dataset,
    /// Directory to write the four .gz files to.
    #[arg(long)]
    pub output: PathBuf,
    /// Base URL to try before the known mirrors (repeatable), e.g. an internal cache.
    #[arg(long = "mirror", value_name = "URL")]
    pub mirrors: Vec<String>,
    /// Try only the --mirror URLs, not the dataset's known public mirrors.
    #[arg(long)]
    pub no_default_mirrors: bool,
}

/// File name, and SHA-256 of the decompressed IDX file.
type Checksums = [(&'static str, &'static str); 4];

const MNIST_FILES: Checksums = [
    (
        "train-images-idx3-ubyte.gz",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

const FASHION_FILES: Checksums = [
    (
        "train-images-idx3-ubyte.gz",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
];

const MNIST_MIRRORS: [&str; 3] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist",
    "https://storage.googleapis.com/cvdf-datasets/mnist",
    "http://yann.lecun.com/exdb/mnist",
];

const FASHION_MIRRORS: [&str; 2] = [
    "https://fashion-mnist.s3.eu-central-1.amazonaws.com",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion",
];

pub fn run(args: &FetchArgs) -> Result<()> {
    let (files, known): (Checksums, &[&str]) = match args.dataset {
        Dataset::Mnist => (MNIST_FILES, &MNIST_MIRRORS),
        Dataset::Fashion => (FASHION_FILES, &FASHION_MIRRORS),
    };
    let mirrors: Vec<&str> = args
        .mirrors
        .iter()
        .map(String::as_str)
        .chain(known.iter().copied().filter(|_| !args.no_default_mirrors))
        .collect();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .into();
    for (name, sha256) in files {
        let path = args.output.join(name);
        if sha256_of(&path).ok().as_deref() == Some(sha256) {
            eprintln!("{}: present, checksum verified", path.display());
            continue;
        }
        let mut failures = Vec::new();
        let fetched = mirrors.iter().find_map(|mirror| {
            let url = format!("{}/{name}", mirror.trim_end_matches('/'));
            match download(&agent, &url, &path, sha256) {
                Ok(()) => Some(url),
                Err(err) => {
                    eprintln!("{url}: {err:#}; trying the next mirror");
                    failures.push(format!("{url}: {err:#}"));
                    None
                }
            }
        });
        match fetched {
            Some(url) => eprintln!(
                "{}: downloaded from {url}, checksum verified",
                path.display()
            ),
            None => bail!("could not download {name}:\n  {}", failures.join("\n  ")),
        }
    }
    Ok(())
}

/// Streams `url` into `path`, committing the file only if its content checks out.
fn download(agent: &ureq::Agent, url: &str, path: &Path, expected: &str) -> Result<()> {
    let mut response = agent.get(url).call()?;
    let length = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let progress = progress_bar(url, length);
    let mut file = AtomicFile::create(path)?;
    // The compressed bytes go to the file as they are decompressed for the checksum.
    let tee = Tee {
        inner: response.body_mut().as_reader(),
        copy: &mut file,
        progress: &progress,
    };
    let actual = content_sha256(tee)?;
    progress.finish_and_clear();
    if actual != expected {
        bail!("checksum mismatch: content SHA-256 {actual}, expected {expected}");
    }
    file.commit()
}

/// Reads through to `inner`, copying every byte to `copy`.
struct Tee<'a, R> {
    inner: R,
    copy: &'a mut AtomicFile,
    progress: &'a ProgressBar,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

/// SHA-256 of the decompressed content of a gzip stream.
fn content_sha256(gzipped: impl Read) -> Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut MultiGzDecoder::new(gzipped), &mut hasher).context("reading gzip data")?;
    Ok(hex(&hasher.finalize()))
}

fn progress_bar(url: &str, length: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        eprintln!("downloading {url}");
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length.unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(url.to_owned());
    bar
}

fn sha256_of(path: &Path) -> Result<String> {
    content_sha256(std::fs::File::open(path)?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
