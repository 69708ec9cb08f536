//! A watch-fed index of the workload kinds (kube's `reflector` stores, one per kind and
//! namespace): one full list at start, then watch events only. [`WorkloadIndex`] is a
//! [`Source`] whose `objects()` reads the stores, never the API.
//!
//! Least privilege: `list` and `watch` on the seven kinds, nothing else.
//!
//! Memory: each object is [trimmed](Trim) before it is stored, to what
//! [`super::collapse`] reads — name, namespace, owner references, the containers' names
//! and images, the container statuses' names, images and `imageID`s. `managedFields`,
//! annotations (`last-applied-configuration`), env, volumes, probes and the rest of a
//! pod spec are dropped, so a store costs a fraction of the objects the API serves.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, EphemeralContainer, Pod, PodSpec, PodStatus, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::{Objects, Source, WorkloadError};

/// The stores of one kind, one per watched namespace (or one for all).
struct Stores<K: kube::Resource<DynamicType = ()> + 'static> {
    kind: &'static str,
    stores: Vec<Store<K>>,
}

impl<K> Stores<K>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Trim
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    /// Starts one reflector per namespace on the current tokio runtime; each task runs
    /// until the runtime stops, relisting with kube's default backoff after errors.
    fn start(client: &Client, namespaces: &[String], kind: &'static str) -> Self {
        let apis: Vec<Api<K>> = if namespaces.is_empty() {
            vec![Api::all(client.clone())]
        } else {
            namespaces
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect()
        };
        let stores = apis
            .into_iter()
            .map(|api| {
                let (reader, writer) = reflector::store();
                let stream = reflector::reflector(
                    writer,
                    watcher(api, watcher::Config::default())
                        .default_backoff()
                        .modify(Trim::trim),
                );
                tokio::spawn(
                    stream
                        .for_each(move |event| async move {
                            if let Err(e) = event {
                                tracing::warn!(kind, error = %e, "workload watch failed; retrying");
                            }
                        })
                        .instrument(tracing::info_span!("workload_watch", kind)),
                );
                reader
            })
            .collect();
        Self { kind, stores }
    }

    async fn ready(&self) -> Result<(), WorkloadError> {
        for s in &self.stores {
            s.wait_until_ready()
                .await
                .map_err(|_| WorkloadError::WatchStopped { kind: self.kind })?;
        }
        Ok(())
    }

    fn items(&self) -> Vec<K> {
        self.stores
            .iter()
            .flat_map(|s| s.state())
            .map(|k| Arc::unwrap_or_clone(k))
            .collect()
    }
}

/// Cuts an object down to what [`super::collapse`] reads (see the module docs).
pub trait Trim {
    /// Drops every field `collapse` does not read.
    fn trim(&mut self);
}

fn trim_meta(meta: &mut ObjectMeta) {
    *meta = ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        uid: meta.uid.take(),
        resource_version: meta.resource_version.take(),
        owner_references: meta.owner_references.take(),
        ..ObjectMeta::default()
    };
}

fn trim_container(c: &mut Container) {
    *c = Container {
        name: std::mem::take(&mut c.name),
        image: c.image.take(),
        ..Container::default()
    };
}

fn trim_spec(spec: &mut PodSpec) {
    let mut containers = std::mem::take(&mut spec.containers);
    containers.iter_mut().for_each(trim_container);
    let mut init = spec.init_containers.take();
    init.iter_mut().flatten().for_each(trim_container);
    let mut ephemeral = spec.ephemeral_containers.take();
    for c in ephemeral.iter_mut().flatten() {
        *c = EphemeralContainer {
            name: std::mem::take(&mut c.name),
            image: c.image.take(),
            ..EphemeralContainer::default()
        };
    }
    *spec = PodSpec {
        containers,
        init_containers: init,
        ephemeral_containers: ephemeral,
        ..PodSpec::default()
    };
}

fn trim_template(template: &mut PodTemplateSpec) {
    template.metadata = None;
    if let Some(spec) = template.spec.as_mut() {
        trim_spec(spec);
    }
}

fn trim_statuses(statuses: &mut Option<Vec<ContainerStatus>>) {
    for s in statuses.iter_mut().flatten() {
        *s = ContainerStatus {
            name: std::mem::take(&mut s.name),
            image: std::mem::take(&mut s.image),
            image_id: std::mem::take(&mut s.image_id),
            ..ContainerStatus::default()
        };
    }
}

impl Trim for Pod {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        if let Some(spec) = self.spec.as_mut() {
            trim_spec(spec);
        }
        if let Some(status) = self.status.as_mut() {
            let mut kept = PodStatus {
                container_statuses: status.container_statuses.take(),
                init_container_statuses: status.init_container_statuses.take(),
                ephemeral_container_statuses: status.ephemeral_container_statuses.take(),
                ..PodStatus::default()
            };
            trim_statuses(&mut kept.container_statuses);
            trim_statuses(&mut kept.init_container_statuses);
            trim_statuses(&mut kept.ephemeral_container_statuses);
            *status = kept;
        }
    }
}

impl Trim for Deployment {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.status = None;
        if let Some(spec) = self.spec.as_mut() {
            trim_template(&mut spec.template);
        }
    }
}

impl Trim for ReplicaSet {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.status = None;
        if let Some(t) = self.spec.as_mut().and_then(|s| s.template.as_mut()) {
            trim_template(t);
        }
    }
}

impl Trim for StatefulSet {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.status = None;
        if let Some(spec) = self.spec.as_mut() {
            trim_template(&mut spec.template);
        }
    }
}

impl Trim for DaemonSet {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.status = None;
        if let Some(spec) = self.spec.as_mut() {
            trim_template(&mut spec.template);
        }
    }
}

impl Trim for Job {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.status = None;
        if let Some(spec) = self.spec.as_mut() {
            trim_template(&mut spec.template);
        }
    }
}

impl Trim for CronJob {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.status = None;
        if let Some(job) = self.spec.job_template.spec.as_mut() {
            trim_template(&mut job.template);
        }
    }
}

/// The watch-fed index of Pods, Deployments, ReplicaSets, StatefulSets, DaemonSets,
/// Jobs and CronJobs.
pub struct WorkloadIndex {
    pods: Stores<Pod>,
    deployments: Stores<Deployment>,
    replica_sets: Stores<ReplicaSet>,
    stateful_sets: Stores<StatefulSet>,
    daemon_sets: Stores<DaemonSet>,
    jobs: Stores<Job>,
    cron_jobs: Stores<CronJob>,
}

impl WorkloadIndex {
    /// Starts the watches on the current tokio runtime, in `namespaces` (empty: all).
    /// Must be called inside a tokio runtime.
    pub fn start(client: &Client, namespaces: &[String]) -> Self {
        Self {
            pods: Stores::start(client, namespaces, "Pod"),
            deployments: Stores::start(client, namespaces, "Deployment"),
            replica_sets: Stores::start(client, namespaces, "ReplicaSet"),
            stateful_sets: Stores::start(client, namespaces, "StatefulSet"),
            daemon_sets: Stores::start(client, namespaces, "DaemonSet"),
            jobs: Stores::start(client, namespaces, "Job"),
            cron_jobs: Stores::start(client, namespaces, "CronJob"),
        }
    }

    /// Waits until every store holds its first full list.
    ///
    /// # Errors
    ///
    /// [`WorkloadError::WatchStopped`] when a watch task stopped before its first list.
    pub async fn ready(&self) -> Result<(), WorkloadError> {
        self.pods.ready().await?;
        self.deployments.ready().await?;
        self.replica_sets.ready().await?;
        self.stateful_sets.ready().await?;
        self.daemon_sets.ready().await?;
        self.jobs.ready().await?;
        self.cron_jobs.ready().await
    }

    /// What the stores hold now (no API request).
    pub fn snapshot(&self) -> Objects {
        Objects {
            pods: self.pods.items(),
            deployments: self.deployments.items(),
            replica_sets: self.replica_sets.items(),
            stateful_sets: self.stateful_sets.items(),
            daemon_sets: self.daemon_sets.items(),
            jobs: self.jobs.items(),
            cron_jobs: self.cron_jobs.items(),
        }
    }
}

impl Source for WorkloadIndex {
    async fn objects(&self) -> Result<Objects, WorkloadError> {
        self.ready().await?;
        Ok(self.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{collapse, Objects};
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x".repeat(2000)},
                "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u2", "controller": true}]},
            "spec": {
                "initContainers": [{"name": "wait", "image": "busybox:1.36", "command": ["sh", "-c", "sleep 1"]}],
                "containers": [{"name": "app", "image": "registry.example.com/web/frontend:3.1",
                    "env": [{"name": "A", "value": "b"}], "resources": {"limits": {"cpu": "1"}},
                    "readinessProbe": {"httpGet": {"path": "/", "port": 80}}}],
                "volumes": [{"name": "data", "emptyDir": {}}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                "initContainerStatuses": [{"name": "wait", "image": "busybox:1.36", "imageID": "docker.io/library/busybox@sha256:1111111111111111111111111111111111111111111111111111111111111111", "ready": true, "restartCount": 0}],
                "containerStatuses": [{"name": "app", "image": "registry.example.com/web/frontend:3.1", "imageID": "registry.example.com/web/frontend@sha256:2222222222222222222222222222222222222222222222222222222222222222", "ready": true, "restartCount": 3}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_trimmed_pod_collapses_the_same_and_is_much_smaller() {
        let full = pod();
        let mut trimmed = full.clone();
        trimmed.trim();
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "managedFields": [{"manager": "m"}],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u3", "controller": true}]},
            "spec": {"selector": {}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "app", "image": "x:1", "env": [{"name": "A"}]}]}}},
            "status": {"replicas": 1}
        }))
        .unwrap();
        let mut rs_trimmed = rs.clone();
        rs_trimmed.trim();
        let objects = |pod: Pod, rs: ReplicaSet| Objects {
            pods: vec![pod],
            replica_sets: vec![rs],
            ..Objects::default()
        };
        assert_eq!(
            collapse(&objects(trimmed.clone(), rs_trimmed)),
            collapse(&objects(full.clone(), rs))
        );
        let size = |p: &Pod| serde_json::to_vec(p).unwrap().len();
        assert!(
            size(&trimmed) * 4 < size(&full),
            "{} of {}",
            size(&trimmed),
            size(&full)
        );
        assert_eq!(trimmed.metadata.uid.as_deref(), Some("u1"));
    }
}
