//! The state store seam: per-file reads and journaled commits, on disk or in memory.
//!
//! The long-running modes read and write one image's runtime record at a time; they
//! never rewrite the whole tree to change one rebuild. [`FileStore`] is the state
//! directory on disk ([`super::journal`] makes its commits all-or-nothing);
//! [`MemoryStore`] is the in-crate fake for tests of the callers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::journal::{self, Changes, WriteReport};
use super::StateError;

/// Per-file access to a state directory. Paths are relative to it
/// (`runtime/docker.io/library/python/3.12-slim.yaml`).
pub trait StateStore: Send + Sync {
    /// The text of one state file; `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// [`StateError::Read`] on I/O failure.
    fn read(&self, rel: &Path) -> Result<Option<String>, StateError>;

    /// Applies `changes` all-or-nothing.
    ///
    /// # Errors
    ///
    /// As [`journal::commit`].
    fn commit(&self, changes: &Changes) -> Result<WriteReport, StateError>;

    /// Relative paths of the `*.yaml` files under the folder `rel`, recursively, sorted.
    ///
    /// # Errors
    ///
    /// [`StateError::Read`] on I/O failure.
    fn list(&self, rel: &Path) -> Result<Vec<PathBuf>, StateError>;
}

/// Reads and parses one state file through `store`; `None` when it does not exist.
///
/// # Errors
///
/// As [`StateStore::read`], and [`StateError::Corrupt`] when it does not parse.
pub fn read_typed<T: DeserializeOwned>(
    store: &dyn StateStore,
    rel: &Path,
) -> Result<Option<T>, StateError> {
    match store.read(rel)? {
        Some(text) => super::parse(rel, &text).map(Some),
        None => Ok(None),
    }
}

/// Renders `value` with the state header and adds it to `changes` at `rel`.
///
/// # Errors
///
/// [`StateError::Render`].
pub fn stage_typed<T: Serialize>(
    changes: &mut Changes,
    rel: &Path,
    value: &T,
) -> Result<(), StateError> {
    changes.write(rel, super::render(rel, value)?);
    Ok(())
}

/// The state directory on disk.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// Opens `dir`, first completing or rolling back what an interrupted commit left
    /// ([`journal::recover`]).
    ///
    /// # Errors
    ///
    /// As [`journal::recover`].
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StateError> {
        let dir = dir.into();
        journal::recover(&dir)?;
        Ok(Self { dir })
    }

    /// Opens `dir` for reading only: no recovery (a pending journal is left for the
    /// next writer). For commands that only report (`plan`, `status`).
    pub fn read_only(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl StateStore for FileStore {
    fn read(&self, rel: &Path) -> Result<Option<String>, StateError> {
        let path = self.dir.join(rel);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Read { path, source }),
        }
    }

    fn commit(&self, changes: &Changes) -> Result<WriteReport, StateError> {
        journal::commit(&self.dir, changes)
    }

    fn list(&self, rel: &Path) -> Result<Vec<PathBuf>, StateError> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.join(rel)];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(StateError::Read { path: dir, source }),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if hidden {
                    continue;
                }
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
                    if let Ok(rel) = path.strip_prefix(&self.dir) {
                        out.push(rel.to_path_buf());
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// An in-memory state store for tests: a map of relative path → content, with a count
/// of commits.
#[derive(Debug, Default)]
pub struct MemoryStore {
    files: Mutex<BTreeMap<PathBuf, String>>,
    commits: Mutex<usize>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every file (relative path → content).
    pub fn files(&self) -> BTreeMap<PathBuf, String> {
        self.files.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// How many commits changed something.
    pub fn commits(&self) -> usize {
        self.commits.lock().map(|c| *c).unwrap_or_default()
    }
}

impl StateStore for MemoryStore {
    fn read(&self, rel: &Path) -> Result<Option<String>, StateError> {
        Ok(self.files.lock().ok().and_then(|f| f.get(rel).cloned()))
    }

    fn commit(&self, changes: &Changes) -> Result<WriteReport, StateError> {
        let mut report = WriteReport::default();
        let Ok(mut files) = self.files.lock() else {
            return Ok(report);
        };
        for (rel, content) in &changes.files {
            match content {
                Some(content) if files.get(rel) == Some(content) => report.unchanged += 1,
                Some(content) => {
                    files.insert(rel.clone(), content.clone());
                    report.written.push(rel.clone());
                }
                None => {
                    if files.remove(rel).is_some() {
                        report.removed.push(rel.clone());
                    } else {
                        report.unchanged += 1;
                    }
                }
            }
        }
        if !(report.written.is_empty() && report.removed.is_empty()) {
            if let Ok(mut commits) = self.commits.lock() {
                *commits += 1;
            }
        }
        Ok(report)
    }

    fn list(&self, rel: &Path) -> Result<Vec<PathBuf>, StateError> {
        Ok(self
            .files
            .lock()
            .map(|f| f.keys().filter(|p| p.starts_with(rel)).cloned().collect())
            .unwrap_or_default())
    }
}
