//! Workloads from the Kubernetes API: a paged `list` of Pods and of each workload
//! controller kind, in the configured namespaces (default: all).
//!
//! Least privilege: only `list` on `pods`, `deployments`, `replicasets`, `statefulsets`,
//! `daemonsets`, `jobs` and `cronjobs` — nothing is read that [`super::collapse`] does
//! not use.

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ListParams};
use kube::Client;
use serde::de::DeserializeOwned;

use super::{Objects, Source, WorkloadError};

/// Page size of each list request: the API server's usual chunk, small enough that a
/// 5,000-Pod namespace streams in ten requests.
pub const PAGE: u32 = 500;

/// The Kubernetes API as a workload source.
#[derive(Clone)]
pub struct KubeSource {
    client: Client,
    namespaces: Vec<String>,
}

impl KubeSource {
    /// A source over `namespaces` (empty: every namespace).
    pub fn new(client: Client, namespaces: Vec<String>) -> Self {
        Self { client, namespaces }
    }

    /// A client from a kubeconfig file (else `$KUBECONFIG`, `~/.kube/config`, in-cluster)
    /// and context (else the current one).
    ///
    /// # Errors
    ///
    /// [`WorkloadError::Kubeconfig`] when the file cannot be read or the context is
    /// unusable.
    pub async fn client(
        kubeconfig: Option<&std::path::Path>,
        context: Option<&str>,
    ) -> Result<Client, WorkloadError> {
        let options = kube::config::KubeConfigOptions {
            context: context.map(str::to_string),
            ..Default::default()
        };
        let config = match kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| WorkloadError::Kubeconfig(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| WorkloadError::Kubeconfig(e.to_string()))?
            }
            None if context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| WorkloadError::Kubeconfig(e.to_string()))?,
            None => kube::Config::infer()
                .await
                .map_err(|e| WorkloadError::Kubeconfig(e.to_string()))?,
        };
        Client::try_from(config).map_err(|e| WorkloadError::Kubeconfig(e.to_string()))
    }

    async fn list<K>(&self, kind: &'static str) -> Result<Vec<K>, WorkloadError>
    where
        K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let apis: Vec<Api<K>> = if self.namespaces.is_empty() {
            vec![Api::all(self.client.clone())]
        } else {
            self.namespaces
                .iter()
                .map(|ns| Api::namespaced(self.client.clone(), ns))
                .collect()
        };
        let mut out = Vec::new();
        for api in apis {
            let mut params = ListParams::default().limit(PAGE);
            loop {
                let page = api
                    .list(&params)
                    .await
                    .map_err(|source| WorkloadError::Api { kind, source })?;
                out.extend(page.items);
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => params = params.continue_token(&token),
                    None => break,
                }
            }
        }
        Ok(out)
    }
}

impl Source for KubeSource {
    async fn objects(&self) -> Result<Objects, WorkloadError> {
        let (pods, deployments, replica_sets, stateful_sets, daemon_sets, jobs, cron_jobs) = futures::try_join!(
            self.list("Pod"),
            self.list("Deployment"),
            self.list("ReplicaSet"),
            self.list("StatefulSet"),
            self.list("DaemonSet"),
            self.list("Job"),
            self.list("CronJob"),
        )?;
        Ok(Objects {
            pods,
            deployments,
            replica_sets,
            stateful_sets,
            daemon_sets,
            jobs,
            cron_jobs,
        })
    }
}
