//! State files: the machine-owned YAML record of every image under `state/`.
//!
//! Layout: `state/images/<name>.yaml` for every enrolled image and discovered base
//! image, `state/warehouses/<name>.yaml` for the generated Kargo Warehouses, plus a
//! `kustomization.yaml` listing them so Argo CD can sync the folder.
//!
//! `images.yaml` is the source of truth for configuration; the runtime sections
//! (`current`, `history`, `rebuilds`) are preserved across runs. Rendering is
//! deterministic (sorted keys and lists, no timestamps from the run), so the same input
//! gives byte-identical files. Writes are atomic per file (temp file + rename) and happen
//! only after every file has been rendered, so a failed run leaves the old state alone.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::graph::NodeKind;

/// The header written at the top of every state file.
pub const HEADER: &str =
    "# Written by image-factory. Do not edit: images.yaml is the source of truth.\n";
/// Folder of image state files inside the state directory.
pub const IMAGES_DIR: &str = "images";
/// Folder of generated Warehouses inside the state directory.
pub const WAREHOUSES_DIR: &str = "warehouses";

/// State I/O errors.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A state file is not valid YAML of the expected shape (hand-edited or corrupt).
    #[error("{path}: {message}; state files are machine-written — restore it from git or delete it to start its history afresh")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A file could not be written or renamed into place.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A value could not be rendered as YAML.
    #[error("cannot render {path}: {message}")]
    Render {
        /// The file being rendered.
        path: PathBuf,
        /// The serializer's message.
        message: String,
    },
}

/// Where a managed image's source was read from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceState {
    /// Local path relative to `images.yaml`, for path sources.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<String>,
    /// Clone URL, for git sources.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub git: Option<String>,
    /// Requested ref, for git sources.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none", default)]
    pub reference: Option<String>,
    /// The commit analyzed (40 hex), for git sources.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub commit: Option<String>,
    /// Dockerfile path inside the source.
    pub dockerfile: String,
    /// Build context inside the source.
    pub context: String,
}

/// One image this image is built from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseState {
    /// Name of the base's node (enrollment or discovered name).
    pub name: String,
    /// The base's reference.
    pub reference: String,
    /// Instructions that use it: `from`, `copy`, `mount`.
    pub via: Vec<String>,
    /// Digests the Dockerfile pins it to.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub pinned: Vec<String>,
}

/// Rebuild policy as written in state (human durations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RebuildState {
    /// Hold after a base update (`7days`).
    pub delay: String,
    /// Hold for a cascade.
    pub cascade_delay: String,
    /// Whether rebuilds start on their own.
    pub auto_rebuild: bool,
}

/// The digest last observed for the image's tag (runtime).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// Tag.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tag: Option<String>,
    /// Digest (`sha256:…`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub digest: Option<String>,
    /// RFC 3339 time it was observed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub observed_at: Option<String>,
}

/// One discovered update of the image (runtime; written by the watch/hold engine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRecord {
    /// The new digest.
    pub digest: String,
    /// The tag it was seen under.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tag: Option<String>,
    /// RFC 3339 discovery time (Freight `discoveredAt`, or the watcher's first sighting).
    pub discovered_at: String,
    /// Where it came from: `freight/<name>` or `watcher`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub origin: Option<String>,
}

/// One rebuild attempt (runtime; written by the rebuild engine).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RebuildRecord {
    /// The base update that caused it (`reference@digest`).
    pub cause: String,
    /// Phase: Waiting, Triggered, Running, Succeeded, Failed, Superseded, Skipped.
    pub phase: String,
    /// Attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// RFC 3339 time the rebuild became or becomes due.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub due: Option<String>,
    /// Resulting digest, once built.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub digest: Option<String>,
}

/// The state file of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageState {
    /// Enrollment name or discovered-base name; also the file name.
    pub name: String,
    /// Managed, external or base.
    pub kind: NodeKind,
    /// Normalized reference.
    pub reference: String,
    /// True when nothing enrolls or references the image any more; `--prune` removes it.
    #[serde(skip_serializing_if = "is_false", default)]
    pub orphaned: bool,
    /// Every tag the image is published under (managed images).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub tags: Vec<String>,
    /// Source (managed images).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source: Option<SourceState>,
    /// Build arguments (managed images).
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub build_args: BTreeMap<String, String>,
    /// Images it is built from (managed images).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub base_images: Vec<BaseState>,
    /// `FROM` / `--from` text that could not be resolved, raw.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub unresolved: Vec<String>,
    /// Images built directly on it.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub dependents: Vec<String>,
    /// Rebuild policy; for external and base images, `delay` is the hold of their updates.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rebuild: Option<RebuildState>,
    /// Name of the generated Warehouse (external and base images).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub warehouse: Option<String>,
    /// Last observed digest (runtime).
    #[serde(default)]
    pub current: Observed,
    /// Discovered updates, oldest first (runtime).
    #[serde(default)]
    pub history: Vec<UpdateRecord>,
    /// Rebuild attempts, oldest first (runtime).
    #[serde(default)]
    pub rebuilds: Vec<RebuildRecord>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl ImageState {
    /// Copies the runtime sections (`current`, `history`, `rebuilds`) from `old`.
    pub fn keep_runtime_of(&mut self, old: &ImageState) {
        self.current = old.current.clone();
        self.history = old.history.clone();
        self.rebuilds = old.rebuilds.clone();
    }
}

/// Reads every `state/images/*.yaml`, keyed by file stem. A missing folder is empty.
///
/// # Errors
///
/// [`StateError::Read`] on I/O failure, [`StateError::Corrupt`] for a file that does not
/// parse (with its line and column).
pub fn load_images(state_dir: &Path) -> Result<BTreeMap<String, ImageState>, StateError> {
    let dir = state_dir.join(IMAGES_DIR);
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => return Err(StateError::Read { path: dir, source }),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| StateError::Read {
            path: dir.clone(),
            source,
        })?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            paths.push(path);
        }
    }
    use rayon::prelude::*;
    let loaded = paths
        .par_iter()
        .map(|path| read_state(path))
        .collect::<Result<Vec<_>, _>>()?;
    for (path, state) in paths.iter().zip(loaded) {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        out.insert(stem, state);
    }
    Ok(out)
}

fn read_state(path: &Path) -> Result<ImageState, StateError> {
    let text = std::fs::read_to_string(path).map_err(|source| StateError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_saphyr::from_str(&text).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string().lines().next().unwrap_or_default().to_string(),
    })
}

/// Renders a value as a YAML document with the state header.
///
/// # Errors
///
/// [`StateError::Render`] when the serializer fails.
pub fn render<T: Serialize>(path: &Path, value: &T) -> Result<String, StateError> {
    let body = serde_saphyr::to_string(value).map_err(|e| StateError::Render {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(format!("{HEADER}{body}"))
}

/// What a [`write_tree`] call changed, as paths relative to the state directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Files created or changed.
    pub written: Vec<PathBuf>,
    /// Files whose content was already right.
    pub unchanged: usize,
    /// Files removed.
    pub removed: Vec<PathBuf>,
}

/// Makes the managed folders of `state_dir` hold exactly `files` (relative path →
/// content): stages every changed file as a temp file next to its target and syncs them
/// all (in parallel: fsync dominates the cost), then renames each into place, then
/// removes other `*.yaml` files under the folders named in `owned`.
///
/// # Errors
///
/// [`StateError::Write`] / [`StateError::Read`] on I/O failure. A failure while staging
/// changes nothing (the temp files are deleted); each rename is atomic, so no file is
/// ever half-written.
pub fn write_tree(
    state_dir: &Path,
    files: &BTreeMap<PathBuf, String>,
    owned: &[&str],
) -> Result<WriteReport, StateError> {
    use rayon::prelude::*;

    let mut report = WriteReport::default();
    let changed: Vec<(&PathBuf, &String)> = files
        .par_iter()
        .filter(|(rel, content)| {
            std::fs::read(state_dir.join(rel)).ok().as_deref() != Some(content.as_bytes())
        })
        .collect();
    report.unchanged = files.len() - changed.len();
    let staged = changed
        .par_iter()
        .map(|(rel, content)| stage(&state_dir.join(rel), content.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut dirs = BTreeSet::new();
    for ((rel, _), tmp) in changed.iter().zip(staged) {
        let path = state_dir.join(rel);
        tmp.persist(&path).map_err(|e| StateError::Write {
            path: path.clone(),
            source: e.error,
        })?;
        if let Some(dir) = path.parent() {
            dirs.insert(dir.to_path_buf());
        }
        report.written.push((*rel).clone());
    }
    // Make the renames durable too.
    for dir in dirs {
        if let Ok(handle) = std::fs::File::open(&dir) {
            let _ = handle.sync_all();
        }
    }
    let keep: BTreeSet<&PathBuf> = files.keys().collect();
    for folder in owned {
        let dir = state_dir.join(folder);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut stale = Vec::new();
        for entry in entries.flatten() {
            let rel = Path::new(folder).join(entry.file_name());
            if rel.extension().and_then(|e| e.to_str()) == Some("yaml") && !keep.contains(&rel) {
                stale.push(rel);
            }
        }
        stale.sort();
        for rel in stale {
            let path = state_dir.join(&rel);
            std::fs::remove_file(&path).map_err(|source| StateError::Write { path, source })?;
            report.removed.push(rel);
        }
    }
    Ok(report)
}

/// Writes and syncs `bytes` to a temp file in `path`'s folder, ready to be renamed over
/// `path`. Dropping it deletes it.
fn stage(path: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile, StateError> {
    let err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ImageState {
        ImageState {
            name: "app".into(),
            kind: NodeKind::Managed,
            reference: "ghcr.io/acme/app:1".into(),
            orphaned: false,
            tags: vec!["1".into()],
            source: Some(SourceState {
                path: Some("examples/app".into()),
                dockerfile: "Dockerfile".into(),
                context: ".".into(),
                ..SourceState::default()
            }),
            build_args: BTreeMap::from([("A".into(), "1".into())]),
            base_images: vec![],
            unresolved: vec![],
            dependents: vec![],
            rebuild: None,
            warehouse: None,
            current: Observed::default(),
            history: vec![UpdateRecord {
                digest: "sha256:00".into(),
                tag: Some("1".into()),
                discovered_at: "2026-11-01T00:00:00Z".into(),
                origin: Some("watcher".into()),
            }],
            rebuilds: vec![],
        }
    }

    #[test]
    fn state_files_round_trip() {
        let text = render(Path::new("x"), &sample()).unwrap();
        assert!(text.starts_with(HEADER));
        let back: ImageState = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn write_tree_writes_only_changes_and_removes_stale_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = PathBuf::from("images/a.yaml");
        let b = PathBuf::from("images/b.yaml");
        let files = BTreeMap::from([
            (a.clone(), "a\n".to_string()),
            (b.clone(), "b\n".to_string()),
        ]);
        let first = write_tree(dir.path(), &files, &["images"]).unwrap();
        assert_eq!(first.written.len(), 2);
        let again = write_tree(dir.path(), &files, &["images"]).unwrap();
        assert_eq!((again.written.len(), again.unchanged), (0, 2));
        std::fs::write(dir.path().join("images/notes.txt"), "kept").unwrap();
        let only_a = BTreeMap::from([(a, "a2\n".to_string())]);
        let third = write_tree(dir.path(), &only_a, &["images"]).unwrap();
        assert_eq!(third.removed, [b]);
        assert!(dir.path().join("images/notes.txt").exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("images/a.yaml")).unwrap(),
            "a2\n"
        );
    }

    #[test]
    fn corrupt_state_says_which_file_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("images")).unwrap();
        std::fs::write(dir.path().join("images/x.yaml"), "name: [unclosed\n").unwrap();
        let err = load_images(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("images/x.yaml") && err.contains("restore it from git"),
            "{err}"
        );
    }
}
