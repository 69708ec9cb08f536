//! Journaled multi-file writes into the state directory.
//!
//! A [`commit`] of many files (one `analyze` run rewrites hundreds) is made recoverable
//! with a journal, as a database does:
//!
//! 1. **Recover** what an earlier, interrupted commit left (below).
//! 2. **Check** every target: a folder where a file should go fails the commit with
//!    [`StateError::FolderInTheWay`] before anything is written.
//! 3. **Stage**: write every new file, fsynced, into a fresh `.journal-<random>/` folder
//!    with a manifest (`journal.yaml`: target paths, staged names, removals) written
//!    last, and fsync the folder.
//! 4. **Commit point**: rename that folder to `.journal/` (atomic on POSIX) and fsync
//!    the state directory. A failure before this point changes nothing; after it, the
//!    change is durable and will be completed.
//! 5. **Apply**: rename each staged file over its target (each rename is atomic, so no
//!    file is ever half-written), remove the files to remove, fsync their folders.
//! 6. **Done**: delete `.journal/`.
//!
//! Recovery, on the next commit or an explicit [`recover`]: a `.journal/` folder is
//! applied again (a staged file already renamed is skipped: idempotent); a
//! `.journal-<random>/` folder never reached its commit point and is deleted (rolled
//! back). So after any crash the directory ends with either all of a commit or none of
//! it, once recovered.
//!
//! What is **not** atomic: a reader that looks at the directory *during* step 5 sees
//! some files new and some old. Readers in this crate take the state through one
//! process (the writer task), and git commits are made after a commit returns.
//! Journal folders start with `.`, are never part of `state/`'s content and are never
//! committed to git.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StateError;

/// The committed journal's folder name inside the state directory.
pub const JOURNAL_DIR: &str = ".journal";
const STAGING_PREFIX: &str = ".journal-";
const MANIFEST: &str = "journal.yaml";

/// A set of changes to the state directory: relative path → new content, or `None` to
/// remove the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Relative path → content (`None`: remove).
    pub files: BTreeMap<PathBuf, Option<String>>,
}

impl Changes {
    /// Writes `content` at `rel`.
    pub fn write(&mut self, rel: impl Into<PathBuf>, content: String) {
        self.files.insert(rel.into(), Some(content));
    }

    /// Removes the file at `rel` (a missing file is fine).
    pub fn remove(&mut self, rel: impl Into<PathBuf>) {
        self.files.insert(rel.into(), None);
    }

    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Adds every change of `other`, which wins on the same path.
    pub fn extend(&mut self, other: Changes) {
        self.files.extend(other.files);
    }
}

/// What a [`commit`] changed, as paths relative to the state directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Files created or changed.
    pub written: Vec<PathBuf>,
    /// Files whose content was already right.
    pub unchanged: usize,
    /// Files removed.
    pub removed: Vec<PathBuf>,
    /// Files an interrupted earlier commit left, completed first.
    pub recovered: Vec<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    entries: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    target: PathBuf,
    /// Staged file name inside the journal; `None` removes the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    staged: Option<String>,
}

/// Applies `changes` to `state_dir` all-or-nothing (see the module docs): files whose
/// content is already right are not touched, removals of missing files are no-ops.
///
/// # Errors
///
/// [`StateError::FolderInTheWay`] / [`StateError::Write`] before the commit point
/// (nothing changed); [`StateError::Interrupted`] after it (the journal completes the
/// change on the next call); [`StateError::Read`] when an earlier journal cannot be read.
pub fn commit(state_dir: &Path, changes: &Changes) -> Result<WriteReport, StateError> {
    let _span = tracing::debug_span!("state_commit", dir = %state_dir.display(), files = changes.files.len()).entered();
    let mut report = WriteReport {
        recovered: recover(state_dir)?,
        ..WriteReport::default()
    };
    use rayon::prelude::*;
    let needed: Vec<(&PathBuf, &Option<String>)> = changes
        .files
        .par_iter()
        .filter(|(rel, content)| {
            let path = state_dir.join(rel);
            match content {
                Some(content) => std::fs::read(&path).ok().as_deref() != Some(content.as_bytes()),
                None => path.is_file(),
            }
        })
        .collect();
    report.unchanged = changes.files.len() - needed.len();
    if needed.is_empty() {
        return Ok(report);
    }
    for (rel, _) in &needed {
        let path = state_dir.join(rel);
        if path.is_dir() {
            return Err(StateError::FolderInTheWay { path });
        }
    }
    std::fs::create_dir_all(state_dir).map_err(|source| StateError::Write {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let staging = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(state_dir)
        .map_err(|source| StateError::Write {
            path: state_dir.to_path_buf(),
            source,
        })?;
    let entries: Vec<Entry> = needed
        .par_iter()
        .enumerate()
        .map(|(i, (rel, content))| {
            let staged = match content {
                Some(content) => {
                    let name = format!("{i}.stage");
                    write_synced(&staging.path().join(&name), content.as_bytes())?;
                    Some(name)
                }
                None => None,
            };
            Ok(Entry {
                target: (*rel).clone(),
                staged,
            })
        })
        .collect::<Result<_, StateError>>()?;
    let manifest = Manifest {
        version: 1,
        entries,
    };
    let text = serde_saphyr::to_string(&manifest).map_err(|e| StateError::Render {
        path: staging.path().join(MANIFEST),
        message: e.to_string(),
    })?;
    write_synced(&staging.path().join(MANIFEST), text.as_bytes())?;
    sync_dir(staging.path());
    let journal = state_dir.join(JOURNAL_DIR);
    // The commit point.
    let staging = staging.keep();
    std::fs::rename(&staging, &journal).map_err(|source| {
        let _ = std::fs::remove_dir_all(&staging);
        StateError::Write {
            path: journal.clone(),
            source,
        }
    })?;
    sync_dir(state_dir);
    let applied = apply(state_dir, &manifest)?;
    report.written = applied.written;
    report.removed = applied.removed;
    Ok(report)
}

/// Completes a committed journal left by an interrupted [`commit`] and deletes staging
/// folders that never reached their commit point. Returns the files it wrote or removed.
///
/// # Errors
///
/// [`StateError::Read`] / [`StateError::Corrupt`] when the journal cannot be read,
/// [`StateError::Interrupted`] when applying it fails again.
pub fn recover(state_dir: &Path) -> Result<Vec<PathBuf>, StateError> {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return Ok(Vec::new());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(STAGING_PREFIX) {
            tracing::warn!(folder = %entry.path().display(), "rolling back an uncommitted state write");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let journal = state_dir.join(JOURNAL_DIR);
    let manifest_path = journal.join(MANIFEST);
    if !journal.exists() {
        return Ok(Vec::new());
    }
    if !manifest_path.exists() {
        // Cannot happen with commit's ordering (the manifest is written before the
        // rename); a folder without one holds nothing committed.
        let _ = std::fs::remove_dir_all(&journal);
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&manifest_path).map_err(|source| StateError::Read {
        path: manifest_path.clone(),
        source,
    })?;
    let manifest: Manifest = super::parse(&manifest_path, &text)?;
    tracing::warn!(
        files = manifest.entries.len(),
        "completing an interrupted state write"
    );
    let applied = apply(state_dir, &manifest)?;
    let mut out = applied.written;
    out.extend(applied.removed);
    Ok(out)
}

struct Applied {
    written: Vec<PathBuf>,
    removed: Vec<PathBuf>,
}

/// Step 5 and 6: renames and removals from the committed journal, then the journal's
/// deletion. Idempotent: a staged file that is gone was renamed already.
fn apply(state_dir: &Path, manifest: &Manifest) -> Result<Applied, StateError> {
    let journal = state_dir.join(JOURNAL_DIR);
    let mut applied = Applied {
        written: Vec::new(),
        removed: Vec::new(),
    };
    let mut dirs = BTreeSet::new();
    for (i, entry) in manifest.entries.iter().enumerate() {
        let target = state_dir.join(&entry.target);
        let result = match &entry.staged {
            Some(staged) => {
                let from = journal.join(staged);
                if from.exists() {
                    if let Some(dir) = target.parent() {
                        dirs.insert(dir.to_path_buf());
                    }
                    ensure_parent(&target)
                        .and_then(|()| std::fs::rename(&from, &target))
                        .map(|()| applied.written.push(entry.target.clone()))
                } else {
                    Ok(())
                }
            }
            None => match std::fs::remove_file(&target) {
                Ok(()) => {
                    if let Some(dir) = target.parent() {
                        dirs.insert(dir.to_path_buf());
                    }
                    applied.removed.push(entry.target.clone());
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
        };
        if let Err(source) = result {
            let mut done = applied.written;
            done.extend(applied.removed);
            return Err(StateError::Interrupted {
                path: target,
                source,
                applied: done,
                pending: manifest.entries[i..]
                    .iter()
                    .map(|e| e.target.clone())
                    .collect(),
                journal,
            });
        }
    }
    for dir in &dirs {
        sync_dir(dir);
        remove_empty_dirs(state_dir, dir);
    }
    std::fs::remove_dir_all(&journal).map_err(|source| StateError::Write {
        path: journal.clone(),
        source,
    })?;
    sync_dir(state_dir);
    Ok(applied)
}

fn ensure_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::create_dir_all(dir),
        None => Ok(()),
    }
}

/// Removes `dir` and its parents up to (not including) `root` while they are empty, so
/// removing the last runtime record of a repository leaves no empty folders behind.
fn remove_empty_dirs(root: &Path, dir: &Path) {
    let mut current = dir;
    while current != root && current.starts_with(root) {
        if std::fs::remove_dir(current).is_err() {
            break;
        }
        match current.parent() {
            Some(parent) => current = parent,
            None => break,
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::create(path).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)
}

/// Makes renames inside `dir` durable. Best effort: some file systems refuse to open
/// folders for syncing, and the rename itself already happened.
fn sync_dir(dir: &Path) {
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}
