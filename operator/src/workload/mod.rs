//! Workloads: which running containers use which image, and whether they are stale.
//!
//! ```text
//! Kubernetes API (list Pods + controllers) ─┐
//!                                            ├→ Objects → collapse → Workload → rows (+ state/) → status --workloads
//! rendered manifests (files, a folder) ─────┘
//! ```
//!
//! A [`Source`] yields [`Objects`]: Pods and the workload controllers (Deployments,
//! ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs) as `k8s-openapi` types.
//! [`collapse`] turns them into [`Workload`]s — Pods folded into their top controller
//! through `metadata.ownerReferences` (Pod → ReplicaSet → Deployment, Pod → Job →
//! CronJob), each container with its declared image and the digest it runs
//! (`status.containerStatuses[].imageID`, init and ephemeral containers included).
//! [`stale::rows`] then maps each container's image onto the state (analysis and
//! runtime records) and says whether it runs an out-of-date digest. Everything after
//! the source is pure.

pub mod index;
pub mod kubernetes;
pub mod manifests;
pub mod radius;
pub mod stale;

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Serialize;

pub use index::WorkloadIndex;
pub use kubernetes::KubeSource;
pub use manifests::ManifestSource;
pub use radius::{blast_radius, Touched};
pub use stale::{rows, Catalog, Row, Verdict};

/// Errors of the workload sources.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// A manifest file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A manifest document is not YAML, or not the shape of its `kind`.
    #[error(
        "{path}: {message}; give rendered manifests (e.g. `kubectl kustomize DIR > all.yaml`)"
    )]
    Manifest {
        /// The file.
        path: std::path::PathBuf,
        /// The parser's message, with line and column where known.
        message: String,
    },
    /// `kubectl kustomize` could not render a kustomization folder.
    #[error("kubectl kustomize {path}: {message}")]
    Kustomize {
        /// The folder.
        path: std::path::PathBuf,
        /// kubectl's error output, or why it could not run.
        message: String,
    },
    /// A Kubernetes API request failed (list or watch of one kind).
    #[error("cannot list {kind}: {source}")]
    Api {
        /// The kind being listed (`Pod`, `Deployment`…).
        kind: &'static str,
        /// kube's error.
        source: kube::Error,
    },
    /// A watch task of [`WorkloadIndex`] stopped before its first full list (its
    /// runtime is shutting down).
    #[error("the {kind} watch stopped before its first list")]
    WatchStopped {
        /// The kind watched.
        kind: &'static str,
    },
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
}

/// Where workloads come from: the Kubernetes API or rendered manifests.
pub trait Source {
    /// Every object of the workload kinds the source sees now.
    ///
    /// # Errors
    ///
    /// [`WorkloadError`] when the source cannot be read (I/O, parse, API).
    fn objects(&self) -> impl std::future::Future<Output = Result<Objects, WorkloadError>> + Send;
}

/// The objects a workload is made of, as the API (or a manifest) gives them.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// `v1` Pods.
    pub pods: Vec<Pod>,
    /// `apps/v1` Deployments.
    pub deployments: Vec<Deployment>,
    /// `apps/v1` ReplicaSets.
    pub replica_sets: Vec<ReplicaSet>,
    /// `apps/v1` StatefulSets.
    pub stateful_sets: Vec<StatefulSet>,
    /// `apps/v1` DaemonSets.
    pub daemon_sets: Vec<DaemonSet>,
    /// `batch/v1` Jobs.
    pub jobs: Vec<Job>,
    /// `batch/v1` CronJobs.
    pub cron_jobs: Vec<CronJob>,
}

impl Objects {
    /// How many objects of all kinds.
    pub fn len(&self) -> usize {
        self.pods.len()
            + self.deployments.len()
            + self.replica_sets.len()
            + self.stateful_sets.len()
            + self.daemon_sets.len()
            + self.jobs.len()
            + self.cron_jobs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which list of the pod spec a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `spec.initContainers`.
    Init,
    /// `spec.containers`.
    App,
    /// `spec.ephemeralContainers` (`kubectl debug`).
    Ephemeral,
}

/// One container of a workload running (or declaring) one image at one digest. Pods of
/// a workload in the middle of a rollout give one entry per digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// The container's name.
    pub name: String,
    /// Its list in the pod spec.
    pub role: Role,
    /// The image reference as declared (`spec.containers[].image`).
    pub image: String,
    /// The digest it runs (`sha256:…`): from `imageID`, else the digest the declared
    /// reference pins; `None` when neither is known.
    pub running: Option<String>,
    /// How many Pods run it (0 for a template with no Pods seen).
    pub pods: usize,
}

/// A workload: the top controller of a set of Pods (or a bare Pod), with its containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `CronJob`, `Job`, `ReplicaSet` or `Pod`.
    pub kind: String,
    /// Namespace (`default` when a manifest gives none).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Its containers, sorted by name, role, image, digest.
    pub containers: Vec<Container>,
}

/// The digest in a container status's `imageID`: the part after the last `@` of
/// `docker-pullable://repo@sha256:…` (Docker) or `repo@sha256:…` (containerd, CRI-O).
/// A bare `sha256:…` is a runtime's local image id (the config digest), not a registry
/// digest, and gives `None`, as does an empty id (container not started).
pub fn digest_of_image_id(image_id: &str) -> Option<String> {
    let (_, digest) = image_id.rsplit_once('@')?;
    crate::reference::check_digest(digest).ok()?;
    Some(digest.to_string())
}

fn pinned_digest(image: &str) -> Option<String> {
    crate::reference::Reference::parse(image)
        .ok()
        .and_then(|r| r.digest().map(str::to_string))
}

fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

fn namespace_of(meta: &ObjectMeta) -> String {
    meta.namespace
        .clone()
        .unwrap_or_else(|| "default".to_string())
}

type Key = (String, String, String); // (namespace, kind, name)

/// Folds Pods into their top controller and adds controllers without Pods from their
/// pod templates. Pure; objects without a name are skipped.
///
/// The top controller follows `ownerReferences` with `controller: true`: a Pod's
/// ReplicaSet is replaced by the ReplicaSet's Deployment and a Pod's Job by the Job's
/// CronJob, when the ReplicaSet (Job) is among `objects` and names one. A ReplicaSet or
/// Job owned by a controller contributes no template of its own (an old ReplicaSet
/// scaled to zero is history, not a workload).
pub fn collapse(objects: &Objects) -> Vec<Workload> {
    let mut owner_of: HashMap<(String, &str, String), (String, String)> = HashMap::new();
    for rs in &objects.replica_sets {
        if let (Some(name), Some(owner)) = (&rs.metadata.name, controller_of(&rs.metadata)) {
            owner_of.insert(
                (namespace_of(&rs.metadata), "ReplicaSet", name.clone()),
                (owner.kind.clone(), owner.name.clone()),
            );
        }
    }
    for job in &objects.jobs {
        if let (Some(name), Some(owner)) = (&job.metadata.name, controller_of(&job.metadata)) {
            owner_of.insert(
                (namespace_of(&job.metadata), "Job", name.clone()),
                (owner.kind.clone(), owner.name.clone()),
            );
        }
    }
    let mut found: BTreeMap<Key, BTreeMap<Container, usize>> = BTreeMap::new();
    for pod in &objects.pods {
        let Some(name) = &pod.metadata.name else {
            continue;
        };
        let namespace = namespace_of(&pod.metadata);
        let (kind, name) = match controller_of(&pod.metadata) {
            Some(owner) => {
                let up =
                    owner_of.get(&(namespace.clone(), owner.kind.as_str(), owner.name.clone()));
                match up {
                    Some((k, n)) => (k.clone(), n.clone()),
                    None => (owner.kind.clone(), owner.name.clone()),
                }
            }
            None => ("Pod".to_string(), name.clone()),
        };
        let containers = found.entry((namespace, kind, name)).or_default();
        for c in pod_containers(pod) {
            *containers.entry(c).or_insert(0) += 1;
        }
    }
    let mut templates: Vec<(Key, Option<&PodTemplateSpec>)> = Vec::new();
    for d in &objects.deployments {
        templates.extend(top(
            &d.metadata,
            "Deployment",
            d.spec.as_ref().map(|s| &s.template),
        ));
    }
    for rs in &objects.replica_sets {
        let template = rs.spec.as_ref().and_then(|s| s.template.as_ref());
        templates.extend(top(&rs.metadata, "ReplicaSet", template));
    }
    for s in &objects.stateful_sets {
        templates.extend(top(
            &s.metadata,
            "StatefulSet",
            s.spec.as_ref().map(|s| &s.template),
        ));
    }
    for d in &objects.daemon_sets {
        templates.extend(top(
            &d.metadata,
            "DaemonSet",
            d.spec.as_ref().map(|s| &s.template),
        ));
    }
    for j in &objects.jobs {
        templates.extend(top(
            &j.metadata,
            "Job",
            j.spec.as_ref().map(|s| &s.template),
        ));
    }
    for c in &objects.cron_jobs {
        let template = c.spec.job_template.spec.as_ref().map(|s| &s.template);
        templates.extend(top(&c.metadata, "CronJob", template));
    }
    for (key, template) in templates {
        let containers = found.entry(key).or_default();
        if !containers.is_empty() {
            continue; // its Pods say what runs
        }
        if let Some(spec) = template.and_then(|t| t.spec.as_ref()) {
            for c in spec_containers(spec, &[]) {
                containers.insert(c, 0);
            }
        }
    }
    found
        .into_iter()
        .map(|((namespace, kind, name), containers)| Workload {
            kind,
            namespace,
            name,
            containers: containers
                .into_iter()
                .map(|(c, pods)| Container { pods, ..c })
                .collect(),
        })
        .collect()
}

/// The key and template of a controller that is a workload of its own: named, and not a
/// ReplicaSet or Job that another controller owns.
fn top<'a>(
    meta: &ObjectMeta,
    kind: &str,
    template: Option<&'a PodTemplateSpec>,
) -> Option<(Key, Option<&'a PodTemplateSpec>)> {
    let name = meta.name.as_ref()?;
    let owned = matches!(kind, "ReplicaSet" | "Job") && controller_of(meta).is_some();
    (!owned).then(|| {
        (
            (namespace_of(meta), kind.to_string(), name.clone()),
            template,
        )
    })
}

fn pod_containers(pod: &Pod) -> Vec<Container> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let statuses: Vec<&ContainerStatus> = pod
        .status
        .iter()
        .flat_map(|s| {
            [
                s.init_container_statuses.as_deref(),
                s.container_statuses.as_deref(),
                s.ephemeral_container_statuses.as_deref(),
            ]
        })
        .flatten()
        .flatten()
        .collect();
    spec_containers(spec, &statuses)
}

/// The containers of `spec` (all three lists), each with the digest its status reports.
fn spec_containers(spec: &PodSpec, statuses: &[&ContainerStatus]) -> Vec<Container> {
    let running = |name: &str, image: &str| {
        statuses
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| digest_of_image_id(&s.image_id))
            .or_else(|| pinned_digest(image))
    };
    let mut out = Vec::new();
    let lists = [
        (
            Role::Init,
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        (Role::App, spec.containers.as_slice()),
    ];
    for (role, list) in lists {
        for c in list {
            let image = c.image.clone().unwrap_or_default();
            out.push(Container {
                running: running(&c.name, &image),
                name: c.name.clone(),
                role,
                image,
                pods: 1,
            });
        }
    }
    for c in spec.ephemeral_containers.as_deref().unwrap_or_default() {
        let image = c.image.clone().unwrap_or_default();
        out.push(Container {
            running: running(&c.name, &image),
            name: c.name.clone(),
            role: Role::Ephemeral,
            image,
            pods: 1,
        });
    }
    out.retain(|c| !c.image.is_empty());
    out
}

#[cfg(test)]
mod tests;
