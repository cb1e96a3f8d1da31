//! Every file under a directory, at any depth. Symbolic links are followed, but each real
//! directory is visited once, so that a link back up the tree does not walk forever.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A directory that could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot list the directory: {source}")]
pub struct WalkError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// The files under `dir`, sorted by path.
pub fn files_under(dir: &Path) -> Result<Vec<PathBuf>, WalkError> {
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let error = |source| WalkError {
            path: current.clone(),
            source,
        };
        if !seen.insert(fs::canonicalize(&current).map_err(error)?) {
            continue;
        }
        for entry in fs::read_dir(&current).map_err(error)? {
            let path = entry.map_err(error)?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_back_up_the_tree_are_walked_once() {
        let root = tempfile::tempdir().unwrap();
        let sub = root.path().join("a/b");
        fs::create_dir_all(&sub).unwrap();
        fs::write(root.path().join("a/one.csv"), "").unwrap();
        fs::write(sub.join("two.csv"), "").unwrap();
        std::os::unix::fs::symlink(root.path(), sub.join("loop")).unwrap();
        std::os::unix::fs::symlink(sub.join("missing"), sub.join("dangling")).unwrap();

        let files = files_under(root.path()).unwrap();
        assert_eq!(
            files,
            [
                root.path().join("a/b/two.csv"),
                root.path().join("a/one.csv")
            ]
        );
    }
}
