//! State files: the machine-owned YAML records under `state/`, each file with one writer.
//!
//! ```text
//! state/analysis.yaml               enrollment hash   — written only by `analyze`
//! state/images/<name>.yaml          analysis record   — written only by `analyze`
//! state/warehouses/<name>.yaml      Kargo Warehouses  — written only by `analyze`
//! state/warehouses/kustomization.yaml
//! state/stages/<name>.yaml          Kargo Stages      — written only by `analyze`
//! state/stages/kustomization.yaml     (`kargo.stages: true`)
//! state/runtime/<registry>/<repository>/<tag>.yaml
//!                                   runtime record    — written only by the engine
//!                                   (`run`, the controller, expedite/block/retry)
//! ```
//!
//! `analyze` often runs in CI on merge while `run` or the controller records updates,
//! holds and rebuilds: the two never write the same file, so neither can lose the
//! other's change and git never sees both edit one file. The analysis record is named by
//! the image's enrollment (or discovered) name; the runtime record is named by the
//! image's **normalized reference** ([`runtime_path`]), so renaming an enrollment, or a
//! derived name changing, never hands one image's digests to another.
//!
//! Every state file carries `version:` ([`IMAGES_VERSION`]; the runtime record has its
//! own). Files of the first, unversioned shape (analysis and runtime sections in one
//! file) are migrated on read: [`legacy`]. Warehouses, Stages and the kustomizations are
//! Kubernetes manifests and carry no `version:` (Kubernetes would reject the key).
//!
//! Rendering is deterministic (sorted keys and lists, nothing from the clock but a stale
//! record's `staleSince`), so the same input gives byte-identical files. What is atomic, exactly: see [`journal`] — a
//! multi-file change is journaled, so after a crash or an I/O failure part-way, the next
//! [`journal::commit`] or [`journal::recover`] completes it; no file is ever half-written.

pub mod journal;
pub mod legacy;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::graph::NodeKind;
use crate::reference::Reference;

pub use journal::{Changes, WriteReport};
pub use store::{FileStore, MemoryStore, StateStore};

/// The header written at the top of every state file.
pub const HEADER: &str =
    "# Written by image-factory. Do not edit: images.yaml is the source of truth.\n";
/// Folder of analysis records inside the state directory.
pub const IMAGES_DIR: &str = "images";
/// Folder of generated Warehouses inside the state directory.
pub const WAREHOUSES_DIR: &str = "warehouses";
/// Folder of generated Kargo Stages inside the state directory (`kargo.stages: true`).
pub const STAGES_DIR: &str = "stages";
/// Folder of runtime records inside the state directory.
pub const RUNTIME_DIR: &str = "runtime";
/// The file, directly in the state directory, recording which `images.yaml` the
/// analysis records were written for ([`AnalysisRecord`]); written only by `analyze`.
pub const ANALYSIS_FILE: &str = "analysis.yaml";
/// The `version:` of [`ANALYSIS_FILE`] this release writes.
pub const ANALYSIS_VERSION: u32 = 1;
/// The `version:` of analysis records this release writes. Version 1 was the
/// unversioned shape that also held the runtime sections.
pub const IMAGES_VERSION: u32 = 2;

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
    /// A state file was written by a newer release of image-factory.
    #[error("{path}: version {found} is newer than this image-factory understands (up to {supported}); upgrade image-factory")]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// The file's `version:`.
        found: u32,
        /// The newest version this release reads.
        supported: u32,
    },
    /// A file could not be written, renamed into place or removed. Nothing of the
    /// change was applied (the journal was not committed yet).
    #[error("cannot write {path}: {source}; nothing was changed")]
    Write {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A target path is a folder, so no file can be renamed over it.
    #[error("cannot write {path}: a folder is in the way; remove it and run again (nothing was changed)")]
    FolderInTheWay {
        /// The path.
        path: PathBuf,
    },
    /// The journal was committed, but applying it failed part-way. The files listed in
    /// `applied` have their new content; the next run (or [`journal::recover`]) applies
    /// the rest from the journal.
    #[error("cannot write {path}: {source}; {} of {} file(s) were written ({}), the rest is kept in {journal} and is completed by the next run", .applied.len(), .applied.len() + .pending.len(), .applied.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    Interrupted {
        /// The file that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
        /// Files already changed, relative to the state directory.
        applied: Vec<PathBuf>,
        /// Files still to change, relative to the state directory.
        pending: Vec<PathBuf>,
        /// The journal folder.
        journal: PathBuf,
    },
    /// A value could not be rendered as YAML.
    #[error("cannot render {path}: {message}")]
    Render {
        /// The file being rendered.
        path: PathBuf,
        /// The serializer's message.
        message: String,
    },
    /// A runtime record's `reference:` is not the reference its path stands for.
    #[error(
        "{path}: holds the runtime record of {found}, expected {expected}; restore it from git"
    )]
    WrongRecord {
        /// The file.
        path: PathBuf,
        /// The reference asked for.
        expected: String,
        /// The reference in the file.
        found: String,
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
    /// What the analysis was computed from, `sha256:<64 hex>`: a hash of the analyzer's
    /// release, the Dockerfile path, the build args and — for a path source — the
    /// Dockerfile's bytes, for a git source the URL and commit. An unchanged fingerprint
    /// lets `analyze` reuse this record's analysis instead of reading and parsing the
    /// Dockerfile again (incremental analysis). Absent in records of older releases.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fingerprint: Option<String>,
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
    /// The references (normalized, without digest) the Dockerfile names this base by,
    /// when one differs from `reference` (another published tag of an enrolled image);
    /// empty otherwise. Lets a reused analysis link the same way when the enrollment
    /// changes.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub written: Vec<String>,
}

/// The rebuild policy as written in the analysis record (human durations, e.g.
/// `7days`), copied from `images.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyState {
    /// Hold after a base update (`7days`).
    pub delay: String,
    /// Hold for a cascade.
    pub cascade_delay: String,
    /// Whether rebuilds start on their own.
    pub auto_rebuild: bool,
}

/// The analysis record of one image: everything `analyze` derives from `images.yaml`
/// and the Dockerfiles. Runtime data lives in the runtime record ([`runtime_path`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageState {
    /// Shape version, [`IMAGES_VERSION`]; absent (read as 1) in the first shape.
    #[serde(default = "legacy_version")]
    pub version: u32,
    /// Enrollment name or discovered-base name; also the file name. Once given, a
    /// discovered name stays with its reference.
    pub name: String,
    /// Managed, external or discovered.
    pub kind: NodeKind,
    /// Normalized reference.
    pub reference: String,
    /// True when nothing enrolls or references the image any more; `--prune` removes it.
    #[serde(skip_serializing_if = "is_false", default)]
    pub orphaned: bool,
    /// True when the image's source could not be fetched or its Dockerfile not parsed
    /// (`analyze --keep-going`, `run`, the controller): the record keeps its last good
    /// analysis (its `baseImages`, `source.commit`, `source.fingerprint`), or none when
    /// there was none. Cleared by the next analysis that reads the source.
    #[serde(skip_serializing_if = "is_false", default)]
    pub stale: bool,
    /// Why the record is stale: the fetch or parse error, credentials redacted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stale_reason: Option<String>,
    /// When the source first failed (RFC 3339, UTC), kept while it keeps failing: the
    /// one clock value in an analysis record.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stale_since: Option<String>,
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
    /// Rebuild policy; for external and discovered images, `delay` is the hold of their
    /// updates.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rebuild: Option<PolicyState>,
    /// Name of the generated Warehouse (external and discovered images that are not
    /// orphaned).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub warehouse: Option<String>,
}

/// `state/analysis.yaml`: which enrollment the analysis records are current for, so
/// `graph` and `plan` can answer from state without fetching a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRecord {
    /// Shape version, [`ANALYSIS_VERSION`].
    pub version: u32,
    /// `sha256:<64 hex>` of the bytes of `images.yaml` analyzed.
    pub enrollment: String,
    /// When `analyze` last changed the analysis records (RFC 3339, UTC).
    pub analyzed_at: String,
}

/// Reads `state/analysis.yaml`; `None` when there is none.
///
/// # Errors
///
/// [`StateError::Read`], [`StateError::Corrupt`], [`StateError::NewerVersion`].
pub fn read_analysis(state_dir: &Path) -> Result<Option<AnalysisRecord>, StateError> {
    let path = state_dir.join(ANALYSIS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    let record: AnalysisRecord = parse(&path, &text)?;
    if record.version > ANALYSIS_VERSION {
        return Err(StateError::NewerVersion {
            path,
            found: record.version,
            supported: ANALYSIS_VERSION,
        });
    }
    Ok(Some(record))
}

fn legacy_version() -> u32 {
    1
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The analysis records of a state directory, keyed by file stem, plus the runtime
/// sections found in files of the first (version 1) shape, to be migrated.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Analysis records by name.
    pub images: BTreeMap<String, ImageState>,
    /// Version-1 runtime sections by normalized reference (only non-empty ones).
    pub legacy: BTreeMap<String, legacy::LegacyRuntime>,
}

/// Reads every `state/images/*.yaml`, keyed by file stem. A missing folder is empty.
/// Files are read in parallel (rayon); version-1 files are accepted and their runtime
/// sections returned in [`Loaded::legacy`].
///
/// # Errors
///
/// [`StateError::Read`] on I/O failure, [`StateError::Corrupt`] for a file that does not
/// parse (with its line and column), [`StateError::NewerVersion`] for a file of a newer
/// release.
pub fn load_images(state_dir: &Path) -> Result<Loaded, StateError> {
    let _span = tracing::debug_span!("load_images", dir = %state_dir.display()).entered();
    let dir = state_dir.join(IMAGES_DIR);
    let mut out = Loaded::default();
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
        .map(|path| read_image_file(path))
        .collect::<Result<Vec<_>, _>>()?;
    for (path, (state, legacy)) in paths.iter().zip(loaded) {
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if let Some(legacy) = legacy {
            out.legacy.insert(state.reference.clone(), legacy);
        }
        out.images.insert(stem.to_string(), state);
    }
    Ok(out)
}

/// Reads one analysis record by image name; `None` when it does not exist.
///
/// # Errors
///
/// As [`load_images`].
pub fn read_image(state_dir: &Path, name: &str) -> Result<Option<ImageState>, StateError> {
    let path = state_dir.join(IMAGES_DIR).join(format!("{name}.yaml"));
    if !path.exists() {
        return Ok(None);
    }
    read_image_file(&path).map(|(state, _)| Some(state))
}

fn read_image_file(path: &Path) -> Result<(ImageState, Option<legacy::LegacyRuntime>), StateError> {
    let text = std::fs::read_to_string(path).map_err(|source| StateError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let state: ImageState = parse(path, &text)?;
    if state.version > IMAGES_VERSION {
        return Err(StateError::NewerVersion {
            path: path.to_path_buf(),
            found: state.version,
            supported: IMAGES_VERSION,
        });
    }
    let legacy = if state.version < 2 {
        let old: legacy::LegacyRuntime = parse(path, &text)?;
        (!old.is_empty()).then_some(old)
    } else {
        None
    };
    Ok((state, legacy))
}

/// Parses a state file's text, mapping errors to [`StateError::Corrupt`] with the
/// parser's first line (which carries line and column).
///
/// # Errors
///
/// [`StateError::Corrupt`].
pub fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, StateError> {
    serde_saphyr::from_str(text).map_err(|e| StateError::Corrupt {
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

/// The path of an analysis record relative to the state directory:
/// `images/<name>.yaml`.
pub fn image_path(name: &str) -> PathBuf {
    Path::new(IMAGES_DIR).join(format!("{name}.yaml"))
}

/// The path of an image's runtime record relative to the state directory, derived from
/// its normalized reference alone: `runtime/<registry>/<repository>/<tag>.yaml`, e.g.
/// `runtime/docker.io/library/python/3.12-slim.yaml`; for a digest-only reference the
/// file is `@<algorithm>-<hex>.yaml`. A digest next to a tag is a pin, not an identity,
/// and is left out. A registry port's `:` becomes `_`, which no registry host name can
/// contain (Docker reference grammar: domain components are `[a-zA-Z0-9-]`), so the
/// mapping is one-to-one; tags never contain `/` and never start with `.` (their grammar
/// is `[\w][\w.-]{0,127}`), so no path escapes `runtime/`.
pub fn runtime_path(reference: &Reference) -> PathBuf {
    let mut path = PathBuf::from(RUNTIME_DIR);
    path.push(reference.registry().replace(':', "_"));
    for part in reference.repository().split('/') {
        path.push(part);
    }
    let file = match (reference.tag(), reference.digest()) {
        (Some(tag), _) => format!("{tag}.yaml"),
        (None, Some(digest)) => format!("@{}.yaml", digest.replace(':', "-")),
        (None, None) => format!("{}.yaml", crate::reference::DEFAULT_TAG),
    };
    path.push(file);
    path
}

#[cfg(test)]
mod tests;

/// Reads the runtime record of every image of `graph` that has one, by image name;
/// images without one are left out (the engine starts them empty).
///
/// # Errors
///
/// [`StateError::Read`], [`StateError::Corrupt`] (a record that does not parse, with
/// line and column), [`StateError::WrongRecord`] when a file holds another reference's
/// record.
pub fn load_runtime(
    store: &dyn StateStore,
    graph: &crate::graph::Graph,
) -> Result<BTreeMap<String, crate::runtime::ImageRuntime>, StateError> {
    let mut out = BTreeMap::new();
    for node in graph.nodes() {
        let reference = node.reference.without_digest();
        if let Some(record) = read_runtime(store, &reference)? {
            out.insert(node.name.clone(), record);
        }
    }
    Ok(out)
}

/// Reads every runtime record under `state_dir/runtime/`, by reference; unreadable
/// files go to the returned problems (path: reason), never stop the others.
pub fn read_all_runtime(
    state_dir: &Path,
) -> (BTreeMap<String, crate::runtime::ImageRuntime>, Vec<String>) {
    let mut records = BTreeMap::new();
    let mut problems = Vec::new();
    let mut stack = vec![state_dir.join(RUNTIME_DIR)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|x| x.to_str()) != Some("yaml") {
                continue;
            }
            let shown = path.display().to_string();
            match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    crate::runtime::ImageRuntime::parse(&shown, &t).map_err(|e| e.to_string())
                }) {
                Ok(rt) => {
                    records.insert(rt.reference.clone(), rt);
                }
                Err(e) => problems.push(format!("{shown}: {e}")),
            }
        }
    }
    (records, problems)
}

/// Reads the runtime record of `reference`; `None` when it has none yet.
///
/// # Errors
///
/// As [`load_runtime`].
pub fn read_runtime(
    store: &dyn StateStore,
    reference: &Reference,
) -> Result<Option<crate::runtime::ImageRuntime>, StateError> {
    let rel = runtime_path(reference);
    let Some(text) = store.read(&rel)? else {
        return Ok(None);
    };
    let record =
        crate::runtime::ImageRuntime::parse(&rel.display().to_string(), &text).map_err(|e| {
            StateError::Corrupt {
                path: rel.clone(),
                message: e.to_string(),
            }
        })?;
    let expected = reference.to_string();
    if record.reference != expected {
        return Err(StateError::WrongRecord {
            path: rel,
            expected,
            found: record.reference,
        });
    }
    Ok(Some(record))
}

/// Renders `record` into `changes` at its path ([`runtime_path`] of its reference).
///
/// # Errors
///
/// [`StateError::Render`] when the record's reference does not parse or the record
/// cannot be rendered.
pub fn stage_runtime(
    changes: &mut Changes,
    record: &crate::runtime::ImageRuntime,
) -> Result<(), StateError> {
    let reference = Reference::parse(&record.reference).map_err(|e| StateError::Render {
        path: PathBuf::from(RUNTIME_DIR),
        message: format!("runtime record of {:?}: {e}", record.reference),
    })?;
    let rel = runtime_path(&reference);
    let text = record.render().map_err(|e| StateError::Render {
        path: rel.clone(),
        message: e.to_string(),
    })?;
    changes.write(rel, text);
    Ok(())
}
