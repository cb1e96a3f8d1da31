//! The files a stage reads from a `--input` that is either a file or a directory.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::files::walk;

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
    let files: Vec<PathBuf> = walk::files_under(input)?
        .into_iter()
        .filter(|path| extensions.iter().any(|ext| has_extension(path, ext)))
        .collect();
    if files.is_empty() {
        let wanted: Vec<String> = extensions.iter().map(|e| format!(".{e}")).collect();
        bail!("{}: no {} files", input.display(), wanted.join(" or "));
    }
    Ok(files)
}
