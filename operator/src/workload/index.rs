//! A watch-fed index of the workload kinds (kube's `reflector` stores, one per kind and
//! namespace): one full list at start, then watch events only. [`WorkloadIndex`] is a
//! [`Source`] whose `objects()` reads the stores, never the API.
//!
//! Least privilege: `list` and `watch` on the seven kinds, nothing else.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
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
                    watcher(api, watcher::Config::default()).default_backoff(),
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
