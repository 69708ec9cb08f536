//! `image-factory controller`: the factory in a cluster with Kargo (issue 12).
//!
//! The same [`crate::factory`] loop as `run` — one task owns the engine, records are
//! persisted to `state/` and committed through the git writer before anything is acted
//! on, triggers start builds, completion is verified in the registry — with three
//! cluster parts plugged in through [`crate::factory::Hooks`]:
//!
//! - [`freight::FreightWatch`]: the event source. Kargo Freight of the Warehouses
//!   `analyze` generated becomes updates (discovered at `discoveredAt`, else the
//!   Freight's creation). Registry watching is off unless asked for: Kargo watches the
//!   registries.
//! - [`mirror::Mirror`]: every rebuild the engine records is written as an
//!   `ImageFactoryRebuild` (spec and status, server-side apply, one field manager) with
//!   an Event per phase change, so `kubectl get ifr` shows holds and cascades.
//! - [`annotations`]: a kube-runtime controller over the rebuild objects that turns the
//!   `imagefactory.dev/expedite` annotation into the engine's expedite decision.
//!
//! - [`workloads`] (with `--workloads`): a watch-fed index of the cluster's workloads,
//!   evaluated against the state: stale-workload gauges per image and the count on
//!   each image's latest succeeded rebuild object (`status.staleWorkloads`).
//!
//! Where holds live: in the runtime records (`state/`, in git), which survive restarts
//! and Kargo's garbage collection of Freight; the rebuild objects are derived from them
//! and rewritten from them at every start (only what differs).

pub mod annotations;
pub mod freight;
pub mod lease;
pub mod mirror;
pub mod workloads;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::crd::ImageFactoryRebuild;
use crate::factory::{self, FactoryError, Hooks, Metrics, Summary};
use crate::kargo::Freight;

/// Where the controller works in the cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Namespace of the rebuild objects; `None`: the client's default namespace (the
    /// pod's own in a cluster, the kubeconfig context's outside).
    pub namespace: Option<String>,
    /// Namespace of the Freight (the Kargo Project); `None`: the rebuild namespace;
    /// `Some("*")`: every namespace.
    pub freight_namespace: Option<String>,
    /// The controller instance in Events (`reportingInstance`) and the Lease holder
    /// identity: the pod name (`None`: host name and process id).
    pub instance: Option<String>,
    /// The Lease of the leader election (`image-factory`), in the rebuild namespace.
    pub lease: String,
    /// Workload tracking (`--workloads`); `None`: off.
    pub workloads: Option<workloads::WorkloadOptions>,
}

impl ClusterOptions {
    /// Defaults: the client's namespace for everything, Lease `image-factory`.
    pub fn new() -> Self {
        Self {
            lease: "image-factory".to_string(),
            ..Self::default()
        }
    }
}

/// Errors that stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot reach the Kubernetes API: {0}; set KUBECONFIG or run in a pod with a service account")]
    Client(#[source] kube::Error),
    /// A CRD is not installed (or the service account may not read it).
    #[error("{what} cannot be read in namespace {namespace}: {source}; {hint}")]
    Crd {
        /// Which resource.
        what: &'static str,
        /// Where.
        namespace: String,
        /// What to do.
        hint: &'static str,
        /// The API server's answer.
        source: kube::Error,
    },
    /// The factory stopped.
    #[error(transparent)]
    Factory(#[from] FactoryError),
    /// Another replica took the Lease, or it could not be renewed: this one stopped
    /// acting (restart it to stand by again).
    #[error("lost the leader Lease {0}; stopped acting")]
    LostLease(String),
}

/// Runs the controller until `shutdown`: checks the CRDs, starts the mirror and the
/// annotation controller, then the factory with the Freight watch.
///
/// # Errors
///
/// [`ControllerError`] when the API server cannot be reached, a CRD is missing, or the
/// factory cannot start (see [`factory::run`]).
pub async fn run(
    options: factory::Options,
    cluster: ClusterOptions,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> Result<Summary, ControllerError> {
    let client = Client::try_default()
        .await
        .map_err(ControllerError::Client)?;
    let namespace = cluster
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let freight_ns = cluster
        .freight_namespace
        .clone()
        .unwrap_or_else(|| namespace.clone());
    let freights: Api<Freight> = if freight_ns == "*" {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), &freight_ns)
    };
    if let Err(source) = freights
        .list(&kube::api::ListParams::default().limit(1))
        .await
    {
        return Err(ControllerError::Crd {
            what: "Kargo Freight (kargo.akuity.io/v1alpha1)",
            namespace: freight_ns,
            hint:
                "install Kargo (its CRDs) and grant the service account get/list/watch on freights",
            source,
        });
    }
    let identity = cluster.instance.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "image-factory".to_string()),
            std::process::id()
        )
    });
    let elector = Arc::new(lease::Elector::new(
        Api::namespaced(client.clone(), &namespace),
        lease::LeaseConfig::new(&cluster.lease, &identity),
    ));
    if !elector.acquire(&shutdown).await {
        return Ok(Summary::default());
    }
    metrics.leader(true);
    // Acting from here: the factory stops when asked to or when the Lease is lost; the
    // Lease is released only after the factory has stopped (its git writes flushed).
    let lost = CancellationToken::new();
    let release = CancellationToken::new();
    let hold_task = {
        let (elector, lost, release) = (elector.clone(), lost.clone(), release.clone());
        tokio::spawn(async move { elector.hold(&lost, &release).await })
    };
    let acting = CancellationToken::new();
    {
        let (acting, lost, shutdown) = (acting.clone(), lost.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = lost.cancelled() => {}
            }
            acting.cancel();
        });
    }
    let leader = Leader {
        client,
        namespace,
        freights,
        freight_ns,
        identity,
        workloads: cluster.workloads.clone(),
    };
    let result = leader.act(options, acting, metrics.clone()).await;
    release.cancel();
    let _ = hold_task.await;
    metrics.leader(false);
    if lost.is_cancelled() {
        return Err(ControllerError::LostLease(cluster.lease));
    }
    result
}

/// Where the leader works.
struct Leader {
    client: Client,
    namespace: String,
    freights: Api<Freight>,
    freight_ns: String,
    identity: String,
    workloads: Option<workloads::WorkloadOptions>,
}

impl Leader {
    /// The leader's work: see [`run`].
    async fn act(
        self,
        options: factory::Options,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Result<Summary, ControllerError> {
        let Self {
            client,
            namespace,
            freights,
            freight_ns,
            identity,
            workloads,
        } = self;
        let rebuilds: Api<ImageFactoryRebuild> = Api::namespaced(client.clone(), &namespace);
        let reporter = Reporter {
            controller: "image-factory".to_string(),
            instance: Some(identity),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let mut mirror = mirror::Mirror::new(rebuilds.clone(), &namespace, Some(recorder.clone()))
            .with_metrics(metrics.clone());
        match mirror.load().await {
            Ok(n) => info!(%namespace, existing = n, "rebuild objects read"),
            Err(source) => {
                return Err(ControllerError::Crd {
                    what: "ImageFactoryRebuild (imagefactory.dev/v1alpha1)",
                    namespace,
                    hint: "apply the CRD first: kubectl apply -f crds/ (or `image-factory crds`)",
                    source,
                })
            }
        }

        let tasks = CancellationToken::new();
        let (records_tx, records_rx) = mpsc::unbounded_channel();
        let (decisions_tx, decisions_rx) = mpsc::unbounded_channel();
        let (stale_rx, workloads_task) = match workloads {
            Some(w) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let task = tokio::spawn(workloads::run(
                    client.clone(),
                    w,
                    options.state_dir.clone(),
                    metrics.clone(),
                    tx,
                    tasks.clone(),
                ));
                (Some(rx), Some(task))
            }
            None => (None, None),
        };
        let mirror_task =
            tokio::spawn(mirror.run(records_rx, stale_rx, tasks.clone(), Duration::from_secs(5)));
        let ctx = Arc::new(
            annotations::Context::new(decisions_tx, Some(recorder)).with_metrics(metrics.clone()),
        );
        let annotations_task = tokio::spawn(annotations::run(rebuilds, ctx, tasks.clone()));

        let wake = Arc::new(Notify::new());
        let source_wake = wake.clone();
        let hooks = Hooks {
            source: Some(Box::new(move |keys| {
                Box::new(freight::FreightWatch::start(
                    freights.clone(),
                    keys,
                    source_wake.clone(),
                ))
            })),
            records: Some(records_tx),
            decisions: Some(decisions_rx),
            wake,
            cluster: Some(client.clone()),
            namespace: Some(namespace.clone()),
        };
        info!(%namespace, freight_namespace = %freight_ns, "controller starting");
        let result = factory::run_with(options, hooks, shutdown, metrics).await;
        // The factory has dropped its record sender: the mirror writes what is left.
        let _ = mirror_task.await;
        tasks.cancel();
        let _ = annotations_task.await;
        if let Some(task) = workloads_task {
            let _ = task.await;
        }
        Ok(result?)
    }
}
