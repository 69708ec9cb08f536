//! Workload tracking in the controller (`controller --workloads`, issue 16): which
//! running workloads still use an older digest of each image.
//!
//! ```text
//! WorkloadIndex (list once, then watch: Pods, Deployments, ReplicaSets, StatefulSets,
//!   DaemonSets, Jobs, CronJobs)
//!   └─ every interval: collapse → stale::rows against state/ → counts by image
//!        ├─ Prometheus: image_factory_workloads{image}, image_factory_stale_workloads{image}
//!        └─ the mirror: status.staleWorkloads of each image's latest succeeded rebuild
//! ```
//!
//! The verdicts are [`crate::workload::stale`]'s, the same as `status --workloads`.
//! Reading the stores costs no API request; the state is read from `state/` (the
//! records the factory wrote) at each evaluation. Counts are sent on only when they
//! change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::Client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::factory::Metrics;
use crate::workload::{self, Catalog, Row, Verdict, WorkloadIndex};

/// How the controller tracks workloads.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// Namespaces to watch; empty: every namespace (a ClusterRole with `list`/`watch`
    /// on the seven kinds; `deploy/components/workloads`).
    pub namespaces: Vec<String>,
    /// Time between evaluations of the stores against the state (default 30 s).
    pub interval: Duration,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            interval: Duration::from_secs(30),
        }
    }
}

/// The workloads of one image: how many run it, how many of those are stale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageCount {
    /// Workloads (namespace + `Kind/name`, counted once) running the image.
    pub workloads: u32,
    /// Of those, the ones with a container running it at a stale digest.
    pub stale: u32,
}

/// Counts by enrolled (or discovered) image name of `rows`: a workload counts once per
/// image however many containers and Pods run it, and is stale when any of them is.
/// Rows of untracked images are left out. Pure.
pub fn counts(rows: &[Row]) -> BTreeMap<String, ImageCount> {
    let mut seen: BTreeMap<&str, BTreeMap<(&str, &str), bool>> = BTreeMap::new();
    for r in rows {
        let Some(image) = r.enrolled.as_deref() else {
            continue;
        };
        let stale = seen
            .entry(image)
            .or_default()
            .entry((r.namespace.as_str(), r.workload.as_str()))
            .or_default();
        *stale |= r.verdict == Verdict::Stale;
    }
    seen.into_iter()
        .map(|(image, workloads)| {
            let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
            let stale = workloads.values().filter(|s| **s).count();
            (
                image.to_string(),
                ImageCount {
                    workloads: count(workloads.len()),
                    stale: count(stale),
                },
            )
        })
        .collect()
}

/// Evaluates the index's stores against the state in `state_dir` at `now`.
///
/// # Errors
///
/// The state's analysis records cannot be read (a runtime record that does not parse is
/// left out and logged, as `status` does).
fn evaluate(
    index: &WorkloadIndex,
    state_dir: &std::path::Path,
    now: Timestamp,
) -> Result<BTreeMap<String, ImageCount>, crate::state::StateError> {
    let loaded = crate::state::load_images(state_dir)?;
    let (records, problems) = crate::state::read_all_runtime(state_dir);
    for p in problems {
        warn!(problem = %p, "runtime record left out of the workload evaluation");
    }
    let catalog = Catalog::new(&loaded.images, &records);
    let workloads = workload::collapse(&index.snapshot());
    Ok(counts(&workload::rows(&workloads, &catalog, now)))
}

/// Runs workload tracking until `shutdown`: starts the watches, waits for their first
/// lists, then evaluates every `options.interval`, setting the gauges in `metrics` and
/// sending stale counts by image to `mirror` when they change.
pub async fn run(
    client: Client,
    options: WorkloadOptions,
    state_dir: PathBuf,
    metrics: Arc<Metrics>,
    mirror: mpsc::UnboundedSender<BTreeMap<String, u32>>,
    shutdown: CancellationToken,
) {
    let index = WorkloadIndex::start(&client, &options.namespaces);
    tokio::select! {
        () = shutdown.cancelled() => return,
        ready = index.ready() => if let Err(e) = ready {
            warn!(error = %e, "workload tracking stopped");
            return;
        },
    }
    info!(
        namespaces = ?options.namespaces,
        interval = ?options.interval,
        "workload tracking started"
    );
    let mut last: Option<BTreeMap<String, ImageCount>> = None;
    let mut tick = tokio::time::interval(options.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let counts = match evaluate(&index, &state_dir, Timestamp::now()) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot read the state for the workload evaluation; retrying");
                continue;
            }
        };
        if last.as_ref() == Some(&counts) {
            continue;
        }
        metrics.workloads(&counts);
        let stale: BTreeMap<String, u32> = counts
            .iter()
            .map(|(image, c)| (image.clone(), c.stale))
            .collect();
        let changed: BTreeSet<&String> = counts
            .iter()
            .filter(|(image, c)| last.as_ref().and_then(|l| l.get(*image)) != Some(*c))
            .map(|(image, _)| image)
            .collect();
        info!(images = ?changed, "workload counts changed");
        if mirror.send(stale).is_err() {
            return;
        }
        last = Some(counts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(namespace: &str, workload: &str, image: Option<&str>, verdict: Verdict) -> Row {
        Row {
            workload: workload.into(),
            namespace: namespace.into(),
            container: "c".into(),
            image: "x".into(),
            enrolled: image.map(Into::into),
            running: None,
            latest: None,
            stale_since: None,
            verdict,
            pods: 1,
        }
    }

    #[test]
    fn a_workload_counts_once_per_image_and_is_stale_when_any_container_is() {
        let rows = [
            row("a", "Deployment/web", Some("platform"), Verdict::Current),
            row("a", "Deployment/web", Some("platform"), Verdict::Stale),
            row("b", "Deployment/web", Some("platform"), Verdict::Current),
            row("a", "CronJob/report", Some("python"), Verdict::Unknown),
            row("a", "CronJob/report", None, Verdict::Untracked),
        ];
        let c = counts(&rows);
        assert_eq!(
            c["platform"],
            ImageCount {
                workloads: 2,
                stale: 1
            }
        );
        assert_eq!(
            c["python"],
            ImageCount {
                workloads: 1,
                stale: 0
            }
        );
        assert_eq!(c.len(), 2);
    }
}
