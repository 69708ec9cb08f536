//! The Freight watch: Kargo `Freight` (`kargo.akuity.io/v1alpha1`) from the API server
//! as an [`EventSource`] of the factory.
//!
//! A kube-runtime watcher (list, then watch, re-listing after a lost watch, with the
//! default backoff on errors) runs in its own task and hands each Freight it sees to the
//! source, which wakes the factory loop. Kargo labels no Freight with its Warehouse, so
//! the filter is client-side: only Freight whose `origin` is a Warehouse `analyze`
//! generated (named like an enrolled image) is mapped, through
//! [`crate::watch::freight::observations`], onto the enrolled images by `repoURL`.
//!
//! Nothing here decides what is new: every listed Freight is reported, and the factory
//! drops a digest its record already knows. So a restart that lists Freight Kargo has
//! kept re-triggers nothing; Freight Kargo garbage-collected is not needed (the git
//! state is the record). Deletions are ignored for the same reason.

use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use jiff::Timestamp;
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt as _;
use kube::Api;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

use crate::kargo::Freight;
use crate::watch::freight::{observations, Keys};
use crate::watch::{EventSource, PollFuture, Polled};

/// What the watcher task hands over.
enum Seen {
    Freight(Box<Freight>),
    Problem(String),
}

/// Counts of what the watch saw, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchCounts {
    /// Freight objects received (listed or watched).
    pub received: u64,
    /// Of those, from a Warehouse `analyze` did not generate (skipped).
    pub foreign: u64,
}

/// The Freight watch: see the module docs.
pub struct FreightWatch {
    keys: Keys,
    rx: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
    counts: Arc<Mutex<WatchCounts>>,
}

impl FreightWatch {
    /// Starts watching Freight through `api` (one namespace, a Kargo Project, or all),
    /// mapping onto `keys`; `wake` is notified whenever a Freight arrives.
    pub fn start(api: Api<Freight>, keys: Keys, wake: Arc<Notify>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut stream = watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(item) = stream.next().await {
                let seen = match item {
                    Ok(watcher::Event::Apply(f) | watcher::Event::InitApply(f)) => {
                        Seen::Freight(Box::new(f))
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        warn!(error = %e, "Freight watch failed; retrying with backoff");
                        Seen::Problem(format!("freight watch: {e}"))
                    }
                };
                if tx.send(seen).is_err() {
                    return;
                }
                wake.notify_one();
            }
        });
        Self {
            keys,
            rx,
            task,
            counts: Arc::default(),
        }
    }

    /// What it saw so far.
    pub fn counts(&self) -> WatchCounts {
        self.counts.lock().map(|c| *c).unwrap_or_default()
    }
}

impl Drop for FreightWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventSource for FreightWatch {
    fn name(&self) -> &str {
        "freight"
    }

    fn poll(&mut self, now: Timestamp) -> PollFuture<'_> {
        let mut polled = Polled::default();
        let mut received = 0;
        let mut foreign = 0;
        while let Ok(seen) = self.rx.try_recv() {
            match seen {
                Seen::Problem(p) => polled.problems.push(p),
                Seen::Freight(f) => {
                    received += 1;
                    if !self.keys.has_warehouse(&f.origin.name) {
                        foreign += 1;
                        debug!(freight = ?f.metadata.name, warehouse = %f.origin.name, "Freight of a Warehouse image-factory did not generate; skipped");
                        continue;
                    }
                    let at = format!(
                        "freight {}/{}",
                        f.metadata.namespace.as_deref().unwrap_or_default(),
                        f.metadata.name.as_deref().unwrap_or_default()
                    );
                    polled.observations.extend(observations(
                        &f,
                        &self.keys,
                        now,
                        &at,
                        &mut polled.problems,
                    ));
                }
            }
        }
        if let Ok(mut c) = self.counts.lock() {
            c.received += received;
            c.foreign += foreign;
        }
        Box::pin(async move { polled })
    }

    fn next_due(&self) -> Option<Timestamp> {
        // Something buffered is due at once; otherwise only the watch can wake us.
        (!self.rx.is_empty()).then_some(Timestamp::UNIX_EPOCH)
    }
}
