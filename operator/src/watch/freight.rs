//! The Freight replay source: Kargo `Freight` objects (`kargo.akuity.io/v1alpha1`)
//! read from files in a folder, so users and tests can feed recorded Freight to
//! `image-factory run --freight-dir DIR` without a cluster.
//!
//! Files named `*.yaml`, `*.yml` or `*.json` are read (JSON through the YAML parser:
//! YAML 1.2 is a superset); each may hold several documents (`---`) and `kind: List`
//! documents (`kubectl get freight -o yaml`). Objects of another kind are skipped.
//! The shape is Kargo's (see `../shared/kargo/crds/kargo.akuity.io_freights.yaml`):
//! Freight has no `spec`; `origin` (a Warehouse), `images[]` (`repoURL`, `tag`,
//! `digest`) and `discoveredAt` sit next to `metadata`.
//!
//! Each image of a Freight maps to an enrolled image by `repoURL` (Kargo's spelling of
//! the repository); when several enrolled images share a repository, the one whose
//! tag equals the Freight's tag wins, then the one named like the origin Warehouse.
//! Discovered-at is `discoveredAt`, else `metadata.creationTimestamp`, else the time
//! the file was first read. A file is re-read only when its size or modification time
//! changes; a replayed Freight yields the same observation, which the factory drops
//! (the update is already recorded), so replays are idempotent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use jiff::Timestamp;
use serde::Deserialize;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{EventSource, Observation, PollFuture, Polled};
use crate::kargo::{Freight, FreightImage, FreightOrigin};
use crate::runtime::{Digest, UpdateSource};

/// How often the folder is listed again, in seconds.
const RESCAN_SECS: i64 = 2;

/// An enrolled image as Freight names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageKey {
    /// Graph name of the image (also the name of the Warehouse `analyze` generates).
    pub name: String,
    /// Repository without tag, as Kargo writes `repoURL` (`ghcr.io/org/app`).
    pub repo_url: String,
    /// The tag enrolled, when the reference has one.
    pub tag: Option<String>,
}

/// The enrolled images indexed for Freight: by `repoURL`, and by name (the Warehouse
/// names `analyze` generates).
#[derive(Debug, Clone, Default)]
pub struct Keys {
    by_repo: BTreeMap<String, Vec<ImageKey>>,
    names: std::collections::BTreeSet<String>,
}

impl Keys {
    /// Indexes `keys` (in graph order: the first of a repository wins a tie).
    pub fn new(keys: Vec<ImageKey>) -> Self {
        let mut index = Self::default();
        for k in keys {
            index.names.insert(k.name.clone());
            index.by_repo.entry(k.repo_url.clone()).or_default().push(k);
        }
        index
    }

    /// Whether `name` is an enrolled image, so a Warehouse of that name is one
    /// `analyze` generated.
    pub fn has_warehouse(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The enrolled image a Freight image stands for: the only one of its `repoURL`;
    /// of several, the one enrolled with this tag, then the one named like the origin
    /// Warehouse, then the first.
    pub fn key_for(
        &self,
        repo_url: &str,
        tag: Option<&str>,
        warehouse: Option<&str>,
    ) -> Option<&ImageKey> {
        let candidates = self.by_repo.get(repo_url)?;
        if candidates.len() <= 1 {
            return candidates.first();
        }
        candidates
            .iter()
            .find(|k| tag.is_some() && k.tag.as_deref() == tag)
            .or_else(|| {
                candidates
                    .iter()
                    .find(|k| Some(k.name.as_str()) == warehouse)
            })
            .or_else(|| candidates.first())
    }
}

/// The observations one Freight stands for: each of its `images[]` mapped onto an
/// enrolled image through [`Keys::key_for`]; images of repositories nobody enrolled are
/// skipped. Discovered-at is [`Freight::discovered_at`], else `fallback` (when the
/// Freight was first seen). The source of each is `UpdateSource::Freight` with the
/// Freight's name (the idempotency key), alias and origin Warehouse.
///
/// Problems (an image without a digest, a digest that does not parse) are pushed to
/// `problems`, each starting with `at` (where the Freight came from) and its name.
pub fn observations(
    freight: &Freight,
    keys: &Keys,
    fallback: Timestamp,
    at: &str,
    problems: &mut Vec<String>,
) -> Vec<Observation> {
    let mut found = Vec::new();
    let Some(name) = freight.metadata.name.clone() else {
        problems.push(format!(
            "{at}: a Freight without metadata.name (its idempotency key)"
        ));
        return found;
    };
    let discovered_at = freight.discovered_at().unwrap_or(fallback);
    let warehouse = Some(&freight.origin)
        .filter(|o| o.kind.is_empty() || o.kind == "Warehouse")
        .map(|o| o.name.as_str())
        .filter(|n| !n.is_empty());
    for image in &freight.images {
        let Some(repo_url) = image.repo_url.as_deref() else {
            continue;
        };
        let Some(key) = keys.key_for(repo_url, image.tag.as_deref(), warehouse) else {
            continue;
        };
        let digest = match image.digest.as_deref().map(Digest::parse) {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                problems.push(format!("{at}: Freight {name}: {repo_url}: {e}"));
                continue;
            }
            None => {
                problems.push(format!(
                    "{at}: Freight {name}: {repo_url} has no digest; the factory tracks digests (use imageSelectionStrategy Digest or a Warehouse that records digests)"
                ));
                continue;
            }
        };
        found.push(Observation {
            image: key.name.clone(),
            tag: image
                .tag
                .clone()
                .or_else(|| key.tag.clone())
                .unwrap_or_default(),
            digest,
            platforms: BTreeMap::new(),
            discovered_at: Some(discovered_at),
            source: UpdateSource::Freight {
                name: name.clone(),
                alias: freight.alias.clone(),
                warehouse: warehouse.map(str::to_string),
            },
        });
    }
    found
}

/// One Kargo document as read from a file: a Freight, or a `List` of them. Read
/// loosely (every field optional) so one bad Freight is a problem, not a bad file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Document {
    kind: Option<String>,
    metadata: Metadata,
    alias: Option<String>,
    origin: Option<Origin>,
    images: Vec<FreightImage>,
    discovered_at: Option<String>,
    items: Vec<Document>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
    creation_timestamp: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Origin {
    kind: Option<String>,
    name: Option<String>,
}

impl Document {
    /// The typed Freight, or why its times do not parse.
    fn into_freight(self) -> Result<Freight, String> {
        let time = |what: &str, t: Option<String>| -> Result<Option<Time>, String> {
            t.map(|t| {
                t.parse::<Timestamp>()
                    .map(Time)
                    .map_err(|e| format!("{what}: {e}"))
            })
            .transpose()
        };
        let mut freight = Freight::new(self.metadata.namespace.as_deref().unwrap_or_default(), "");
        freight.metadata.name = self.metadata.name;
        if freight.metadata.namespace.as_deref() == Some("") {
            freight.metadata.namespace = None;
        }
        freight.metadata.creation_timestamp = time(
            "metadata.creationTimestamp",
            self.metadata.creation_timestamp,
        )?;
        freight.discovered_at = time("discoveredAt", self.discovered_at)?;
        freight.alias = self.alias;
        if let Some(o) = self.origin {
            freight.origin = FreightOrigin {
                kind: o.kind.unwrap_or_default(),
                name: o.name.unwrap_or_default(),
            };
        }
        freight.images = self.images;
        Ok(freight)
    }
}

/// What a file held when it was last read.
struct Seen {
    len: u64,
    modified: Option<SystemTime>,
    read_at: Timestamp,
}

/// The Freight replay: see the module docs.
pub struct FreightReplay {
    dir: PathBuf,
    keys: Keys,
    seen: BTreeMap<PathBuf, Seen>,
    last_poll: Option<Timestamp>,
}

impl FreightReplay {
    /// A replay of the Freight files in `dir`, mapped onto `images`.
    pub fn new(dir: PathBuf, images: Vec<ImageKey>) -> Self {
        Self {
            dir,
            keys: Keys::new(images),
            seen: BTreeMap::new(),
            last_poll: None,
        }
    }

    fn scan(&mut self, now: Timestamp) -> Polled {
        let mut polled = Polled::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                polled.problems.push(format!(
                    "freight: cannot list {}: {e}; create it or fix --freight-dir",
                    self.dir.display()
                ));
                return polled;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|x| x.to_str())
                        .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
            })
            .collect();
        files.sort();
        for path in files {
            let meta = std::fs::metadata(&path).ok();
            let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = meta.and_then(|m| m.modified().ok());
            if self
                .seen
                .get(&path)
                .is_some_and(|s| s.len == len && s.modified == modified)
            {
                continue;
            }
            let read_at = self.seen.get(&path).map_or(now, |s| s.read_at);
            self.seen.insert(
                path.clone(),
                Seen {
                    len,
                    modified,
                    read_at,
                },
            );
            match std::fs::read_to_string(&path) {
                Ok(text) => self.read_file(&path, &text, read_at, &mut polled),
                Err(e) => polled
                    .problems
                    .push(format!("freight: cannot read {}: {e}", path.display())),
            }
        }
        polled
    }

    fn read_file(&self, path: &Path, text: &str, read_at: Timestamp, polled: &mut Polled) {
        let docs: Vec<Document> = match serde_saphyr::from_multiple(text) {
            Ok(d) => d,
            Err(e) => {
                polled.problems.push(format!(
                    "freight: {}: {e}; expected Kargo Freight objects (kind: Freight) or a List of them",
                    path.display()
                ));
                return;
            }
        };
        for doc in docs {
            if doc.kind.as_deref() == Some("List") {
                for item in doc.items {
                    self.read_freight(path, item, read_at, polled);
                }
            } else {
                self.read_freight(path, doc, read_at, polled);
            }
        }
    }

    fn read_freight(&self, path: &Path, doc: Document, read_at: Timestamp, polled: &mut Polled) {
        if doc.kind.as_deref().is_some_and(|k| k != "Freight") {
            return;
        }
        let at = format!("freight: {}", path.display());
        let name = doc.metadata.name.clone().unwrap_or_default();
        match doc.into_freight() {
            Ok(freight) => polled.observations.extend(observations(
                &freight,
                &self.keys,
                read_at,
                &at,
                &mut polled.problems,
            )),
            Err(e) => polled.problems.push(format!("{at}: Freight {name}: {e}")),
        }
    }
}

impl EventSource for FreightReplay {
    fn name(&self) -> &str {
        "freight"
    }

    fn poll(&mut self, now: Timestamp) -> PollFuture<'_> {
        self.last_poll = Some(now);
        let polled = self.scan(now);
        Box::pin(async move { polled })
    }

    fn next_due(&self) -> Option<Timestamp> {
        let last = self.last_poll?;
        last.checked_add(jiff::SignedDuration::from_secs(RESCAN_SECS))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn keys() -> Vec<ImageKey> {
        vec![
            ImageKey {
                name: "python".into(),
                repo_url: "docker.io/library/python".into(),
                tag: Some("3.12-slim".into()),
            },
            ImageKey {
                name: "python-alpine".into(),
                repo_url: "docker.io/library/python".into(),
                tag: Some("3.12-alpine".into()),
            },
            ImageKey {
                name: "nginx".into(),
                repo_url: "docker.io/library/nginx".into(),
                tag: Some("1.27".into()),
            },
        ]
    }

    fn poll(replay: &mut FreightReplay, now: Timestamp) -> Polled {
        futures::executor::block_on(replay.poll(now))
    }

    fn now() -> Timestamp {
        "2026-12-03T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn reads_freight_lists_and_multi_document_files_by_repo_url_and_tag() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            format!(
                "apiVersion: kargo.akuity.io/v1alpha1\nkind: Freight\nmetadata:\n  name: f1\n  namespace: p\n  creationTimestamp: '2026-12-01T00:00:00Z'\nalias: wild-fox\norigin: {{kind: Warehouse, name: python-alpine}}\nimages:\n- repoURL: docker.io/library/python\n  tag: 3.12-slim\n  digest: {D1}\ndiscoveredAt: '2026-12-02T08:00:00Z'\n---\nkind: Warehouse\nmetadata: {{name: w}}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.json"),
            format!(
                r#"{{"apiVersion":"v1","kind":"List","items":[{{"kind":"Freight","metadata":{{"name":"f2","creationTimestamp":"2026-12-01T00:00:00Z"}},"origin":{{"kind":"Warehouse","name":"nginx"}},"images":[{{"repoURL":"docker.io/library/nginx","tag":"1.27","digest":"{D2}"}},{{"repoURL":"quay.io/other/thing","tag":"1","digest":"{D2}"}}]}}]}}"#
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not freight").unwrap();
        let mut replay = FreightReplay::new(dir.path().to_path_buf(), keys());
        let polled = poll(&mut replay, now());
        assert!(polled.problems.is_empty(), "{:?}", polled.problems);
        let seen: Vec<(&str, &str, String)> = polled
            .observations
            .iter()
            .map(|o| {
                (
                    o.image.as_str(),
                    o.digest.as_str(),
                    o.discovered_at.unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("python", D1, "2026-12-02T08:00:00Z".to_string()),
                ("nginx", D2, "2026-12-01T00:00:00Z".to_string()),
            ]
        );
        assert_eq!(
            polled.observations[0].source,
            UpdateSource::Freight {
                name: "f1".into(),
                alias: Some("wild-fox".into()),
                warehouse: Some("python-alpine".into()),
            }
        );
        // Unchanged files are not read again.
        assert_eq!(poll(&mut replay, now()), Polled::default());
        assert!(replay.next_due().unwrap() > now());
    }

    #[test]
    fn the_origin_warehouse_decides_between_images_of_one_repository() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("f.yml"),
            format!("kind: Freight\nmetadata: {{name: f}}\norigin: {{kind: Warehouse, name: python-alpine}}\nimages:\n- repoURL: docker.io/library/python\n  tag: 3.12.8-alpine\n  digest: {D1}\n"),
        )
        .unwrap();
        let mut replay = FreightReplay::new(dir.path().to_path_buf(), keys());
        let polled = poll(&mut replay, now());
        assert_eq!(polled.observations[0].image, "python-alpine");
        assert_eq!(polled.observations[0].discovered_at, Some(now()));
    }

    #[test]
    fn bad_files_are_problems_that_do_not_stop_the_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1.yaml"), "kind: Freight\nimages: [\n").unwrap();
        std::fs::write(
            dir.path().join("2.yaml"),
            "kind: Freight\nmetadata: {name: f}\nimages:\n- repoURL: docker.io/library/nginx\n  tag: '1.27'\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("3.yaml"),
            format!("kind: Freight\nmetadata: {{name: g}}\nimages:\n- repoURL: docker.io/library/nginx\n  digest: {D2}\n"),
        )
        .unwrap();
        let mut replay = FreightReplay::new(dir.path().to_path_buf(), keys());
        let polled = poll(&mut replay, now());
        assert_eq!(polled.problems.len(), 2, "{:?}", polled.problems);
        assert!(polled.problems[0].contains("1.yaml"));
        assert!(polled.problems[1].contains("has no digest"));
        assert_eq!(polled.observations.len(), 1);
        assert_eq!(polled.observations[0].tag, "1.27");
    }

    #[test]
    fn a_missing_folder_is_a_problem_not_a_panic() {
        let mut replay = FreightReplay::new(PathBuf::from("/nonexistent/freight"), keys());
        let polled = poll(&mut replay, now());
        assert_eq!(polled.problems.len(), 1);
        assert!(polled.observations.is_empty());
    }
}
