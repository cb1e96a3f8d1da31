//! The files a stage reads from a `--input` that is either a file or a directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Whether `path` ends in `.extension`, in any case.
pub fn has_extension(path: &Path, extension: &str) -> bool {
    path.extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case(extension))
}

/// `input` itself if it is a file; else the files under it, at any depth, with one of
/// `extensions`, sorted. None found is an error.
pub fn find(input: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    if input.is_file() {
        return Ok(vec![input.to_owned()]);
    }
    if !input.is_dir() {
        bail!("{}: no such file or directory", input.display());
    }
    let mut files = Vec::new();
    let mut pending = vec![input.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .with_context(|| format!("{}: cannot list the directory", dir.display()))?;
        for entry in entries {
            let path = entry
                .with_context(|| format!("{}: cannot list the directory", dir.display()))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if extensions.iter().any(|ext| has_extension(&path, ext)) {
                files.push(path);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        let wanted: Vec<String> = extensions.iter().map(|e| format!(".{e}")).collect();
        bail!("{}: no {} files", input.display(), wanted.join(" or "));
    }
    Ok(files)
}
