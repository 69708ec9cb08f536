//! Test harness pieces: paths, the binary, and real components started on 127.0.0.1.

pub mod git;
pub mod git_daemon;
pub mod k8s;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ has a parent")
        .to_path_buf()
}

/// `shared/` (corpus, Kargo CRDs, k8s): `$IMAGE_FACTORY_SHARED`, else `../shared` next to
/// the repository, as CI lays it out.
pub fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IMAGE_FACTORY_SHARED") {
        return PathBuf::from(dir);
    }
    let dir = repo_root().join("../shared");
    assert!(
        dir.is_dir(),
        "{} not found: put shared/ next to the repository or set IMAGE_FACTORY_SHARED",
        dir.display()
    );
    dir
}

/// Runs the `image-factory` binary in `dir` with `args`.
pub fn image_factory(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_image-factory"))
        .args(args)
        .current_dir(dir)
        .env("IMAGE_FACTORY_CACHE", dir.join(".cache"))
        .output()
        .expect("run image-factory")
}

/// Copies a folder tree (regular files and folders only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Every file under `dir` (relative path → bytes), for byte-for-byte comparisons.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // The owner's lock and inbox (`image_factory::inbox`) are process
            // bookkeeping, never committed: not state.
            if entry.file_name() == image_factory::inbox::DIR {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    out
}

/// A copy of the repository's example (images.yaml, examples/, state/) in a temp dir.
pub fn example() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root();
    std::fs::copy(root.join("images.yaml"), dir.path().join("images.yaml")).unwrap();
    copy_tree(&root.join("examples"), &dir.path().join("examples"));
    copy_tree(&root.join("state"), &dir.path().join("state"));
    dir
}
