//! The registry watcher: `run`'s own event source when no Kargo is around.
//!
//! Each watched image is checked at its Warehouse `interval` with exactly the
//! subscription `analyze` writes into its Warehouse ([`crate::kargo::ImageSubscription`]),
//! through the [`RegistryClient`] — so the per-registry request budget and concurrency
//! are shared by every image on a registry, tag answers are fresh each poll
//! ([`RegistryClient::new_scan`]) and manifests are read once per digest (the client's
//! digest-keyed content cache, persisted with [`RegistryClient::with_content_dir`]).
//! In the steady state (nothing changed) a `Digest`-strategy image costs one manifest
//! `HEAD` per interval and nothing else.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use jiff::{SignedDuration, Timestamp};
use tracing::{debug, warn};

use super::{EventSource, Observation, PollFuture, Polled};
use crate::reference::Reference;
use crate::registry::{CompiledSelection, RegistryClient, TagSelection};
use crate::runtime::{Digest, UpdateSource};

/// Checks in flight at once in one pass, across all registries: 256.
pub const CHECKS_IN_FLIGHT: usize = 256;

/// One image the watcher checks.
#[derive(Debug, Clone)]
pub struct Target {
    /// Graph name.
    pub image: String,
    /// The repository (a reference whose tag, if any, is ignored by the selection).
    pub repository: Reference,
    /// What to select: the Warehouse subscription's settings.
    pub selection: TagSelection,
    /// Time between checks (the Warehouse `interval`).
    pub interval: Duration,
    /// Check once, then stop (a managed image without a recorded digest: its baseline;
    /// its later digests come from our own rebuilds).
    pub once: bool,
}

struct Watched {
    target: Target,
    compiled: CompiledSelection,
    next: Timestamp,
}

/// Checks every [`Target`] at its interval.
pub struct RegistryWatcher {
    client: RegistryClient,
    watched: Vec<Watched>,
    /// Targets whose selection does not compile: reported on every poll.
    invalid: Vec<String>,
    /// Advanced once per check of the next pass, then finished and dropped.
    progress: Option<indicatif::ProgressBar>,
}

impl RegistryWatcher {
    /// A watcher over `targets`; every target is due at once.
    pub fn new(client: RegistryClient, targets: Vec<Target>) -> Self {
        let mut watched = Vec::with_capacity(targets.len());
        let mut invalid = Vec::new();
        for target in targets {
            match target.selection.compile() {
                Ok(compiled) => watched.push(Watched {
                    target,
                    compiled,
                    next: Timestamp::MIN,
                }),
                Err(e) => invalid.push(format!("{}: {e}", target.image)),
            }
        }
        Self {
            client,
            watched,
            invalid,
            progress: None,
        }
    }

    /// Shows the next pass (the first: every target due) on `bar`, one step per
    /// image checked; the bar's length is set to the number of images due.
    #[must_use]
    pub fn with_first_pass_progress(mut self, bar: indicatif::ProgressBar) -> Self {
        self.progress = Some(bar);
        self
    }

    /// Images watched now.
    pub fn len(&self) -> usize {
        self.watched.len()
    }

    /// Whether nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    async fn check(
        client: &RegistryClient,
        target: &Target,
        compiled: &CompiledSelection,
    ) -> Result<Option<Observation>, String> {
        let found = client
            .select(&target.repository, compiled)
            .await
            .map_err(|e| format!("{}: {e}", target.image))?;
        let Some(selected) = found.into_iter().next() else {
            return Err(format!(
                "{}: no tag of {} matches the selection",
                target.image,
                target.repository.repo_url()
            ));
        };
        // Answered from the scan's tag cache and the content cache: no request.
        let tagged = target.repository.without_digest().with_tag(&selected.tag);
        let resolved = client
            .resolve(&tagged)
            .await
            .map_err(|e| format!("{}: {e}", target.image))?;
        let digest = Digest::parse(&resolved.digest).map_err(|e| format!("{tagged}: {e}"))?;
        let platforms = resolved
            .platforms
            .iter()
            .filter(|p| !crate::registry::inspect::is_attestation_platform(&p.platform))
            .filter_map(|p| Some((p.platform.clone(), Digest::parse(&p.digest).ok()?)))
            .collect::<BTreeMap<_, _>>();
        Ok(Some(Observation {
            image: target.image.clone(),
            tag: selected.tag,
            digest,
            platforms,
            discovered_at: None,
            source: UpdateSource::Watcher,
        }))
    }
}

fn after(now: Timestamp, interval: Duration) -> Timestamp {
    let step = SignedDuration::try_from(interval.max(Duration::from_secs(1)))
        .unwrap_or(SignedDuration::from_secs(300));
    now.checked_add(step).unwrap_or(Timestamp::MAX)
}

impl EventSource for RegistryWatcher {
    fn name(&self) -> &str {
        "registry"
    }

    fn poll(&mut self, now: Timestamp) -> PollFuture<'_> {
        Box::pin(async move {
            let mut polled = Polled {
                problems: self.invalid.clone(),
                ..Polled::default()
            };
            self.client.new_scan();
            let client = &self.client;
            let due: Vec<usize> = (0..self.watched.len())
                .filter(|&i| self.watched[i].next <= now)
                .collect();
            // The client bounds concurrency per registry (`maxConcurrency`) and spends
            // the registry's request budget; across registries at most
            // `CHECKS_IN_FLIGHT` checks are in flight, so a pass's memory does not grow
            // with the fleet (a future per image at once cost ~10 KB each).
            let bar = self.progress.take();
            if let Some(bar) = &bar {
                bar.set_length(due.len() as u64);
            }
            let watched = &self.watched;
            // Futures are made as slots free up: an unstarted future costs its whole
            // state machine too.
            let mut next = due.iter().copied();
            let mut running = futures::stream::FuturesUnordered::new();
            let mut results: Vec<(usize, Result<Option<Observation>, String>)> =
                Vec::with_capacity(due.len());
            loop {
                while running.len() < CHECKS_IN_FLIGHT {
                    let Some(i) = next.next() else { break };
                    let w = &watched[i];
                    running.push(Self::check(client, &w.target, &w.compiled).map(move |r| (i, r)));
                }
                let Some(done) = running.next().await else {
                    break;
                };
                if let Some(bar) = &bar {
                    bar.inc(1);
                }
                results.push(done);
            }
            drop(running);
            results.sort_by_key(|(i, _)| *i);
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            let mut done = Vec::new();
            for (i, result) in results {
                let w = &mut self.watched[i];
                w.next = after(now, w.target.interval);
                match result {
                    Ok(Some(o)) => {
                        debug!(image = %o.image, tag = %o.tag, digest = %o.digest, "checked");
                        if w.target.once {
                            done.push(i);
                        }
                        polled.observations.push(o);
                    }
                    Ok(None) => {}
                    Err(problem) => {
                        warn!(%problem, "registry check failed; retried next interval");
                        polled.problems.push(problem);
                    }
                }
            }
            let baselined = !done.is_empty();
            for i in done.into_iter().rev() {
                self.watched.swap_remove(i);
            }
            if baselined {
                // The one-time baseline checks of managed images are gone for good.
                self.watched.shrink_to_fit();
            }
            polled
        })
    }

    fn next_due(&self) -> Option<Timestamp> {
        self.watched.iter().map(|w| w.next).min()
    }
}
