//! The factory's metrics (OpenMetrics text through `prometheus-client`) and the
//! `--listen` endpoint: `/metrics`, `/healthz` (the process serves), `/readyz` (start-up
//! done: configuration analyzed, state loaded).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::engine::Decision;

type Labels = Vec<(String, String)>;

/// Counters and gauges of one running factory. Names (`image_factory_…`) and help
/// texts are in [`Metrics::new`]; counters get OpenMetrics' `_total` suffix.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    observations: Family<Labels, Counter>,
    source_problems: Family<Labels, Counter>,
    decisions: Family<Labels, Counter>,
    builds_started: Counter,
    builds_finished: Family<Labels, Counter>,
    in_flight: Gauge,
    config_ok: Gauge,
    object_writes: Family<Labels, Counter>,
    rebuild_objects: Family<Labels, Gauge>,
    reconcile_errors: Family<Labels, Counter>,
    leader: Gauge,
    workloads: Family<Labels, Gauge>,
    stale_workloads: Family<Labels, Gauge>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics, all zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("image_factory");
        let observations = Family::<Labels, Counter>::default();
        registry.register(
            "observations",
            "Digests reported by event sources, by source",
            observations.clone(),
        );
        let source_problems = Family::<Labels, Counter>::default();
        registry.register(
            "source_problems",
            "Problems of event sources (registry unreachable, bad Freight file), by source",
            source_problems.clone(),
        );
        let decisions = Family::<Labels, Counter>::default();
        registry.register("decisions", "Engine decisions, by kind", decisions.clone());
        let builds_started = Counter::default();
        registry.register(
            "builds_started",
            "Build tasks started (new attempts and resumed ones)",
            builds_started.clone(),
        );
        let builds_finished = Family::<Labels, Counter>::default();
        registry.register(
            "builds_finished",
            "Build attempts finished, by result (success, failure)",
            builds_finished.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("builds_in_flight", "Builds running now", in_flight.clone());
        let config_ok = Gauge::default();
        config_ok.set(1);
        registry.register(
            "config_ok",
            "1 when the last read of images.yaml was usable, 0 when the last good one is kept",
            config_ok.clone(),
        );
        let object_writes = Family::<Labels, Counter>::default();
        registry.register(
            "rebuild_object_writes",
            "controller: ImageFactoryRebuild writes (spec and status), by result (ok, error)",
            object_writes.clone(),
        );
        let rebuild_objects = Family::<Labels, Gauge>::default();
        registry.register(
            "rebuild_objects",
            "controller: ImageFactoryRebuild objects as last written, by phase",
            rebuild_objects.clone(),
        );
        let reconcile_errors = Family::<Labels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "controller: failed reconciles and object writes, by reason",
            reconcile_errors.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "controller: 1 while this replica holds the Lease",
            leader.clone(),
        );
        let workloads = Family::<Labels, Gauge>::default();
        registry.register(
            "workloads",
            "controller --workloads: workloads running the image (each counted once), by image",
            workloads.clone(),
        );
        let stale_workloads = Family::<Labels, Gauge>::default();
        registry.register(
            "stale_workloads",
            "controller --workloads: workloads running an older digest than the image's latest rebuild or matured update, by image",
            stale_workloads.clone(),
        );
        Self {
            registry,
            workloads,
            stale_workloads,
            object_writes,
            rebuild_objects,
            reconcile_errors,
            leader,
            observations,
            source_problems,
            decisions,
            builds_started,
            builds_finished,
            in_flight,
            config_ok,
            ready: AtomicBool::new(false),
        }
    }

    fn label(key: &str, value: &str) -> Labels {
        vec![(key.to_string(), value.to_string())]
    }

    pub(crate) fn polled(&self, source: &str, observations: usize, problems: usize) {
        let l = Self::label("source", source);
        self.observations
            .get_or_create(&l)
            .inc_by(observations as u64);
        self.source_problems
            .get_or_create(&l)
            .inc_by(problems as u64);
    }

    pub(crate) fn decided(&self, d: &Decision) {
        let kind = match d {
            Decision::Recorded { .. } => "recorded",
            Decision::Hold { .. } => "hold",
            Decision::Trigger(_) => "trigger",
            Decision::Supersede { .. } => "supersede",
            Decision::AwaitApproval { .. } => "await_approval",
            Decision::RetryScheduled { .. } => "retry_scheduled",
            Decision::GiveUp { .. } => "give_up",
            Decision::Succeeded { .. } => "succeeded",
            Decision::HeldBack { .. } => "held_back",
            Decision::PinnedDependent { .. } => "pinned_dependent",
            Decision::Marked { .. } => "marked",
            Decision::Running { .. } => "running",
            Decision::Unverified { .. } => "unverified",
            Decision::Verified { .. } => "verified",
            Decision::Ignored { .. } => "ignored",
        };
        self.decisions
            .get_or_create(&Self::label("kind", kind))
            .inc();
    }

    pub(crate) fn build_started(&self) {
        self.builds_started.inc();
    }

    pub(crate) fn build_finished(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.builds_finished
            .get_or_create(&Self::label("result", result))
            .inc();
    }

    pub(crate) fn in_flight(&self, n: usize) {
        self.in_flight.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn config(&self, ok: bool) {
        self.config_ok.set(i64::from(ok));
    }

    pub(crate) fn object_written(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.object_writes
            .get_or_create(&Self::label("result", result))
            .inc();
    }

    pub(crate) fn rebuild_objects(&self, by_phase: &std::collections::BTreeMap<String, i64>) {
        for (phase, n) in by_phase {
            self.rebuild_objects
                .get_or_create(&Self::label("phase", phase))
                .set(*n);
        }
    }

    pub(crate) fn reconcile_error(&self, reason: &str) {
        self.reconcile_errors
            .get_or_create(&Self::label("reason", reason))
            .inc();
    }

    /// Sets the workload gauges to `counts` (by image); images no longer counted are
    /// dropped from both families.
    pub(crate) fn workloads(
        &self,
        counts: &std::collections::BTreeMap<String, crate::controller::workloads::ImageCount>,
    ) {
        self.workloads.clear();
        self.stale_workloads.clear();
        for (image, c) in counts {
            let l = Self::label("image", image);
            self.workloads.get_or_create(&l).set(i64::from(c.workloads));
            self.stale_workloads
                .get_or_create(&l)
                .set(i64::from(c.stale));
        }
    }

    pub(crate) fn leader(&self, holds: bool) {
        self.leader.set(i64::from(holds));
    }

    pub(crate) fn ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Whether start-up is done.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

async fn metrics_text(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(m): State<Arc<Metrics>>) -> (StatusCode, &'static str) {
    if m.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` until `stop` is
/// cancelled. Returns the bound address (port 0 picks a free one) and the server task.
///
/// # Errors
///
/// The bind error.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_prefix() {
        let m = Metrics::new();
        m.polled("registry", 3, 1);
        m.build_started();
        m.build_finished(true);
        let text = m.render();
        assert!(
            text.contains("image_factory_observations_total{source=\"registry\"} 3"),
            "{text}"
        );
        assert!(text.contains("image_factory_source_problems_total{source=\"registry\"} 1"));
        assert!(text.contains("image_factory_builds_finished_total{result=\"success\"} 1"));
        assert!(text.contains("image_factory_config_ok 1"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn serves_health_and_metrics() {
        let m = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), m.clone(), stop.clone())
            .await
            .unwrap();
        let get = |path: &str| {
            let url = format!("http://{addr}{path}");
            async move {
                let r = reqwest::get(url).await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        assert_eq!(get("/healthz").await.0, 200);
        assert_eq!(get("/readyz").await.0, 503);
        m.ready();
        assert_eq!(get("/readyz").await.0, 200);
        let (status, body) = get("/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("image_factory_builds_in_flight 0"), "{body}");
        stop.cancel();
        task.await.unwrap();
    }
}
