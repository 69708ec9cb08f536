//! Workloads from rendered manifests: YAML files, a folder of them, or a kustomization
//! folder (rendered with `kubectl kustomize`), for users without cluster access and for
//! pull-request checks of a GitOps repository.
//!
//! Documents of other kinds are ignored; `kind: List` is opened. There are no Pods in a
//! manifest, so every workload comes from its pod template and "runs" the digest its
//! image reference pins, if any.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::de::DeserializeOwned;

use super::{Objects, Source, WorkloadError};

/// Manifest files or folders. A folder holding a `kustomization.yaml` (`.yml`,
/// `Kustomization`) is rendered with `kubectl kustomize`; any other folder is read
/// recursively (`*.yaml`, `*.yml`, `*.json`, sorted).
#[derive(Debug, Clone)]
pub struct ManifestSource {
    paths: Vec<PathBuf>,
}

const KUSTOMIZATIONS: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

impl ManifestSource {
    /// A source over `paths` (files or folders).
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self { paths }
    }

    /// Reads and parses every manifest now (blocking I/O; `kubectl` for kustomizations).
    ///
    /// # Errors
    ///
    /// [`WorkloadError::Read`], [`WorkloadError::Manifest`] (with line and column),
    /// [`WorkloadError::Kustomize`].
    pub fn read(&self) -> Result<Objects, WorkloadError> {
        let mut objects = Objects::default();
        for path in &self.paths {
            for (file, text) in texts(path)? {
                parse_into(&file, &text, &mut objects)?;
            }
        }
        Ok(objects)
    }
}

impl Source for ManifestSource {
    async fn objects(&self) -> Result<Objects, WorkloadError> {
        self.read()
    }
}

fn texts(path: &Path) -> Result<Vec<(PathBuf, String)>, WorkloadError> {
    let read_err = |source| WorkloadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_dir() {
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        return Ok(vec![(path.to_path_buf(), text)]);
    }
    if KUSTOMIZATIONS.iter().any(|k| path.join(k).is_file()) {
        return Ok(vec![(path.to_path_buf(), kustomize(path)?)]);
    }
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| WorkloadError::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| WorkloadError::Read {
                path: dir.clone(),
                source,
            })?;
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                files.push(p);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|f| {
            std::fs::read_to_string(&f)
                .map(|t| (f.clone(), t))
                .map_err(|source| WorkloadError::Read { path: f, source })
        })
        .collect()
}

fn kustomize(dir: &Path) -> Result<String, WorkloadError> {
    let err = |message: String| WorkloadError::Kustomize {
        path: dir.to_path_buf(),
        message,
    };
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| err(format!("{e} (is kubectl installed?)")))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    String::from_utf8(out.stdout).map_err(|e| err(e.to_string()))
}

/// Parses one file's documents (multi-document YAML; JSON is YAML) into `objects`.
///
/// # Errors
///
/// [`WorkloadError::Manifest`] naming `file`, with line and column for YAML errors and
/// the document's kind and name for shape errors.
pub fn parse_into(file: &Path, text: &str, objects: &mut Objects) -> Result<(), WorkloadError> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| WorkloadError::Manifest {
            path: file.to_path_buf(),
            message: e.to_string().lines().next().unwrap_or_default().to_string(),
        })?;
    let mut queue = docs;
    while let Some(doc) = queue.pop() {
        let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
        let api = doc
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        match (api, kind) {
            (_, "List") => {
                if let Some(items) = doc.get("items").and_then(|i| i.as_array()) {
                    queue.extend(items.iter().cloned());
                }
            }
            ("v1", "Pod") => objects.pods.push(shape(file, doc)?),
            ("apps/v1", "Deployment") => objects.deployments.push(shape(file, doc)?),
            ("apps/v1", "ReplicaSet") => objects.replica_sets.push(shape(file, doc)?),
            ("apps/v1", "StatefulSet") => objects.stateful_sets.push(shape(file, doc)?),
            ("apps/v1", "DaemonSet") => objects.daemon_sets.push(shape(file, doc)?),
            ("batch/v1", "Job") => objects.jobs.push(shape(file, doc)?),
            ("batch/v1", "CronJob") => objects.cron_jobs.push(shape(file, doc)?),
            _ => {}
        }
    }
    Ok(())
}

fn shape<T: DeserializeOwned>(file: &Path, doc: serde_json::Value) -> Result<T, WorkloadError> {
    let what = format!(
        "{} {}",
        doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default(),
        doc.pointer("/metadata/name")
            .and_then(|k| k.as_str())
            .unwrap_or("(no name)")
    );
    serde_json::from_value(doc).map_err(|e| WorkloadError::Manifest {
        path: file.to_path_buf(),
        message: format!("{what}: {e}"),
    })
}
