//! Writing outputs so that a failed stage leaves nothing half-written behind: everything goes
//! to a temporary file in the destination directory and is renamed into place when complete.

use std::fs::{self, Permissions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::NamedTempFile;

/// Prints `text` to standard output. A reader that has gone away (`mnist stats | head`) ends
/// the output quietly: it has read what it wanted.
pub fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("writing to standard output"),
    }
}

/// A file being written; it appears under its final name only on [`AtomicFile::commit`].
pub struct AtomicFile {
    path: PathBuf,
    writer: BufWriter<NamedTempFile>,
}

impl AtomicFile {
    pub fn create(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
        // Readable by others, as a plain `File::create` would leave it under the usual umask.
        let temp = tempfile::Builder::new()
            .permissions(Permissions::from_mode(0o644))
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        Ok(Self {
            path,
            writer: BufWriter::with_capacity(1 << 20, temp),
        })
    }

    /// Flushes, syncs and renames the file to its final name.
    pub fn commit(self) -> Result<()> {
        let temp = self
            .writer
            .into_inner()
            .map_err(|err| err.into_error())
            .with_context(|| format!("writing {}", self.path.display()))?;
        temp.as_file()
            .sync_all()
            .with_context(|| format!("writing {}", self.path.display()))?;
        temp.persist(&self.path)
            .map_err(|err| err.error)
            .with_context(|| format!("renaming into {}", self.path.display()))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    file.commit()
}

/// Writes `value` as pretty JSON (with a final newline) to `path` atomically.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(value)?;
    json.push(b'\n');
    write_file(path, &json)
}

/// Writes each `(path, bytes)` atomically, all or none: every file is complete under a
/// temporary name before the first takes its own, and those renamed are removed again if a
/// later rename fails.
pub fn write_files(files: &[(PathBuf, Vec<u8>)]) -> Result<()> {
    let mut staged = Vec::with_capacity(files.len());
    for (path, bytes) in files {
        let mut file = AtomicFile::create(path)?;
        file.write_all(bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        staged.push(file);
    }
    let mut renamed: Vec<&Path> = Vec::with_capacity(files.len());
    for (file, (path, _)) in staged.into_iter().zip(files) {
        if let Err(err) = file.commit() {
            for done in renamed {
                let _ = fs::remove_file(done);
            }
            return Err(err);
        }
        renamed.push(path);
    }
    Ok(())
}

/// Removes `path` if it is there.
pub fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}
