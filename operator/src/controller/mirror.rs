//! The mirror: every rebuild the engine records becomes an `ImageFactoryRebuild` in the
//! cluster, its spec and status written with server-side apply under one field manager
//! ([`FIELD_MANAGER`]), and every phase change an Event on it.
//!
//! The runtime records (in `state/`, committed to git) stay the record: a rebuild object
//! is derived from them ([`desired`]), never the other way round, so a restart, a deleted
//! object or a failed write is repaired by applying again. Writes are level-triggered: the
//! mirror keeps what the server last returned for each object and applies only what
//! differs; a failed write stays pending and is retried with backoff (1 s, doubled up to
//! 1 min) without holding back the other objects.
//!
//! Names: a rebuild object is named by the engine's [`RebuildId`] (a DNS-1123 label of
//! at most 63 characters, deterministic in the image and its pinned bases), so
//! `kubectl get ifr ID`, `image-factory status` and `image-factory retry ID` agree.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference, Time};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::{Api, Resource as _, ResourceExt as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::crd::{
    self, Expedite, FreightRef, ImageFactoryRebuild, ImageFactoryRebuildSpec,
    ImageFactoryRebuildStatus, RebuildPhase, TriggeringUpdate,
};
use crate::runtime::{ImageRuntime, Phase, Rebuild, RebuildId, UpdateSource};

/// The field manager of every write: one owner of every field we set.
pub const FIELD_MANAGER: &str = "image-factory";

/// Objects written at once, at most.
pub const CONCURRENCY: usize = 32;

/// The desired object of `rebuild` of `image` in `namespace`: metadata (name, labels,
/// owner reference to the parent rebuild when its uid is known), spec and status.
///
/// `records` are all runtime records by image name, to look up the triggering update
/// (its tag, discovery time and Freight). The status's conditions carry `now` as their
/// transition time; [`keep_transitions`] puts back the times of unchanged conditions.
pub fn desired(
    rebuild: &Rebuild,
    image: &str,
    records: &BTreeMap<String, ImageRuntime>,
    namespace: &str,
    parent_uid: Option<&str>,
    now: Timestamp,
) -> Option<ImageFactoryRebuild> {
    let parent = rebuild.cause.parents.first().map(RebuildId::to_string);
    let update = triggering_update(rebuild, records)?;
    let freight = update.freight.as_ref().map(|f| f.name.clone());
    let mut labels = BTreeMap::from([(crd::LABEL_IMAGE.to_string(), crd::label_value(image))]);
    if let Some(f) = &freight {
        labels.insert(crd::LABEL_FREIGHT.to_string(), crd::label_value(f));
    }
    if let Some(p) = &parent {
        labels.insert(crd::LABEL_PARENT.to_string(), p.clone());
    }
    let owner_references = match (&parent, parent_uid) {
        (Some(name), Some(uid)) => Some(vec![OwnerReference {
            api_version: "imagefactory.dev/v1alpha1".to_string(),
            kind: "ImageFactoryRebuild".to_string(),
            name: name.clone(),
            uid: uid.to_string(),
            block_owner_deletion: None,
            controller: Some(false),
        }]),
        _ => None,
    };
    let expedite = expedite_of(rebuild, records);
    let spec = ImageFactoryRebuildSpec {
        image: image.to_string(),
        update,
        pinned_bases: rebuild
            .bases
            .iter()
            .filter_map(|b| {
                let (reference, digest) = b.pinned.rsplit_once('@')?;
                Some(crd::PinnedBase {
                    reference: reference.to_string(),
                    digest: digest.to_string(),
                })
            })
            .take(64)
            .collect(),
        parent,
        expedite,
    };
    let mut object = ImageFactoryRebuild::new(rebuild.id.as_str(), spec);
    object.metadata = ObjectMeta {
        name: Some(rebuild.id.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        owner_references,
        ..ObjectMeta::default()
    };
    object.status = Some(status_of(rebuild, now));
    Some(object)
}

/// The update a rebuild stands for: its first base update (for a cascade, the parent's
/// new digest), looked up in the base's record for the tag, discovery time and Freight;
/// `None` for a rebuild recorded without a cause (nothing to show as BASE).
fn triggering_update(
    rebuild: &Rebuild,
    records: &BTreeMap<String, ImageRuntime>,
) -> Option<TriggeringUpdate> {
    let created = Time(rebuild.created_at);
    let u = rebuild.cause.updates.first()?;
    let recorded = records
        .get(&u.image)
        .and_then(|rt| rt.updates.iter().find(|x| x.digest == u.digest));
    let freight = recorded.and_then(|x| match &x.source {
        UpdateSource::Freight {
            name,
            alias,
            warehouse,
        } => Some(FreightRef {
            name: name.clone(),
            alias: alias.clone(),
            warehouse: warehouse.clone(),
        }),
        _ => None,
    });
    let tag = recorded
        .map(|x| x.tag.clone())
        .filter(|t| !t.is_empty())
        .or_else(|| {
            crate::reference::Reference::parse(&u.reference)
                .ok()
                .and_then(|r| r.tag().map(str::to_string))
        });
    Some(TriggeringUpdate {
        base: u.image.clone(),
        reference: u.reference.clone(),
        tag,
        digest: u.digest.to_string(),
        freight,
        discovered_at: recorded.map_or(created, |x| Time(x.discovered_at)),
    })
}

/// The expedite recorded on one of the rebuild's updates, if any.
fn expedite_of(rebuild: &Rebuild, records: &BTreeMap<String, ImageRuntime>) -> Option<Expedite> {
    rebuild.cause.updates.iter().find_map(|u| {
        let mark = records
            .get(&u.image)?
            .updates
            .iter()
            .find(|x| x.digest == u.digest)?
            .expedited
            .as_ref()?;
        Some(Expedite {
            reason: mark.reason.clone(),
            by: Some(mark.by.clone()),
        })
    })
}

/// The id of `record`'s latest succeeded rebuild with a result digest (the last one
/// recorded, as [`crate::workload::stale`] judges containers against it); `None` when
/// none succeeded.
pub fn latest_succeeded(record: &ImageRuntime) -> Option<&RebuildId> {
    record
        .rebuilds
        .iter()
        .rev()
        .find(|r| r.phase == Phase::Succeeded && r.digest.is_some())
        .map(|r| &r.id)
}

/// The engine's phase as the resource spells it.
pub fn phase_of(phase: Phase) -> RebuildPhase {
    match phase {
        Phase::Waiting => RebuildPhase::Waiting,
        Phase::Triggered => RebuildPhase::Triggered,
        Phase::Running => RebuildPhase::Running,
        Phase::Succeeded => RebuildPhase::Succeeded,
        Phase::Failed => RebuildPhase::Failed,
        Phase::Superseded => RebuildPhase::Superseded,
        Phase::Skipped => RebuildPhase::Skipped,
    }
}

fn status_of(rebuild: &Rebuild, now: Timestamp) -> ImageFactoryRebuildStatus {
    let phase = phase_of(rebuild.phase);
    let message = rebuild
        .reason
        .clone()
        .unwrap_or_else(|| match rebuild.phase {
            Phase::Waiting => format!("held until {}", rebuild.due_at),
            Phase::Triggered => "trigger fired".to_string(),
            Phase::Running => "building".to_string(),
            Phase::Succeeded => "built and verified".to_string(),
            Phase::Failed => "every attempt failed".to_string(),
            Phase::Superseded => "replaced by a rebuild on newer bases".to_string(),
            Phase::Skipped => "not built".to_string(),
        });
    let ready = match rebuild.phase {
        Phase::Succeeded => ("True", "Succeeded"),
        Phase::Failed => ("False", "Failed"),
        Phase::Superseded => ("False", "Superseded"),
        Phase::Skipped => ("False", "Skipped"),
        Phase::Waiting => ("False", "Waiting"),
        Phase::Triggered | Phase::Running => ("False", "Building"),
    };
    let held = rebuild.phase == Phase::Waiting;
    let condition = |type_: &str, status: &str, reason: &str| Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.clone(),
        last_transition_time: Time(now),
        observed_generation: None,
    };
    ImageFactoryRebuildStatus {
        phase: Some(phase),
        due_at: Some(Time(rebuild.due_at)),
        attempts: u32::try_from(rebuild.attempts.len()).unwrap_or(u32::MAX),
        trigger_ref: rebuild.trigger.clone(),
        result_digest: rebuild.digest.as_ref().map(ToString::to_string),
        message: Some(message.clone()),
        observed_generation: None,
        stale_workloads: None,
        conditions: vec![
            condition("Ready", ready.0, ready.1),
            condition(
                "Held",
                if held { "True" } else { "False" },
                if held { "Holding" } else { "Released" },
            ),
        ],
    }
}

/// Puts back into `status` the `lastTransitionTime` of every condition whose status is
/// unchanged from `previous` (Kubernetes API conventions: the time the status last
/// changed), and sets `observedGeneration` on the status and each condition.
pub fn keep_transitions(
    status: &mut ImageFactoryRebuildStatus,
    previous: Option<&ImageFactoryRebuildStatus>,
    generation: Option<i64>,
) {
    status.observed_generation = generation;
    for c in &mut status.conditions {
        c.observed_generation = generation;
        if let Some(old) = previous
            .and_then(|p| p.conditions.iter().find(|o| o.type_ == c.type_))
            .filter(|o| o.status == c.status)
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
}

/// The Event a phase change stands for: (type, reason, note); `None` when nothing is
/// worth an Event (an unchanged phase, a build seen running).
pub fn event_for(
    previous: Option<&ImageFactoryRebuild>,
    now: &ImageFactoryRebuild,
) -> Vec<(EventType, &'static str, String)> {
    let mut out = Vec::new();
    let old_phase = previous
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.phase);
    let status = now.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let image = &now.spec.image;
    let base = format!("{}@{}", now.spec.update.reference, now.spec.update.digest);
    if previous.is_none_or(|p| p.spec.expedite.is_none()) {
        if let Some(e) = &now.spec.expedite {
            let by = e.by.as_deref().unwrap_or("someone");
            out.push((
                EventType::Normal,
                "RebuildExpedited",
                format!("{by} expedited {image} on {base}: {}", e.reason),
            ));
        }
    }
    if old_phase == Some(phase) {
        return out;
    }
    let due = status
        .due_at
        .as_ref()
        .map_or_else(String::new, |t| t.0.to_string());
    let event = match phase {
        RebuildPhase::Waiting if status.attempts > 0 => (
            EventType::Warning,
            "RebuildRetryScheduled",
            format!(
                "attempt {} of {image} failed; next at {due}",
                status.attempts
            ),
        ),
        RebuildPhase::Waiting if now.spec.parent.is_some() => (
            EventType::Normal,
            "CascadeQueued",
            format!(
                "{image} queued after {} built {base}",
                now.spec.parent.as_deref().unwrap_or_default()
            ),
        ),
        RebuildPhase::Waiting => (
            EventType::Normal,
            "RebuildHeld",
            format!("{image} on {base} held until {due}"),
        ),
        RebuildPhase::Triggered => (
            EventType::Normal,
            "RebuildTriggered",
            format!("{image}: trigger fired (attempt {})", status.attempts),
        ),
        RebuildPhase::Running => return out,
        RebuildPhase::Succeeded => (
            EventType::Normal,
            "RebuildSucceeded",
            format!(
                "{image} rebuilt as {}",
                status.result_digest.as_deref().unwrap_or("?")
            ),
        ),
        RebuildPhase::Failed => (
            EventType::Warning,
            "RebuildFailed",
            format!(
                "{image}: {}",
                status.message.as_deref().unwrap_or("every attempt failed")
            ),
        ),
        RebuildPhase::Superseded => (
            EventType::Normal,
            "RebuildSuperseded",
            format!("{image}: {}", status.message.as_deref().unwrap_or_default()),
        ),
        RebuildPhase::Skipped => (
            EventType::Normal,
            "RebuildSkipped",
            format!("{image}: {}", status.message.as_deref().unwrap_or_default()),
        ),
    };
    out.push(event);
    out
}

/// Whether `server` already shows what `want` asks for (spec, labels, owner references,
/// status apart from transition times).
fn up_to_date(server: &ImageFactoryRebuild, want: &ImageFactoryRebuild) -> bool {
    let strip = |s: Option<&ImageFactoryRebuildStatus>| {
        s.cloned().map(|mut s| {
            s.observed_generation = None;
            for c in &mut s.conditions {
                c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
                c.observed_generation = None;
            }
            s
        })
    };
    let labels_ok = want
        .labels()
        .iter()
        .all(|(k, v)| server.labels().get(k) == Some(v));
    let owners_ok = want.metadata.owner_references.as_ref().is_none_or(|w| {
        server
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|s| w.iter().all(|o| s.iter().any(|x| x.uid == o.uid)))
    });
    server.spec == want.spec
        && labels_ok
        && owners_ok
        && strip(server.status.as_ref()) == strip(want.status.as_ref())
}

/// The mirror's task: see the module docs. Runs until `shutdown`, then makes one last
/// attempt at what is pending (bounded by `grace`).
pub struct Mirror {
    api: Api<ImageFactoryRebuild>,
    recorder: Option<Recorder>,
    namespace: String,
    records: BTreeMap<String, ImageRuntime>,
    /// What the server last returned, by object name.
    server: BTreeMap<String, ImageFactoryRebuild>,
    /// Object names whose write is due → (arrival number, image): written oldest first.
    pending: BTreeMap<String, (u64, String)>,
    arrivals: u64,
    failures: u32,
    metrics: Option<std::sync::Arc<crate::factory::Metrics>>,
    /// In [`Mirror::run`]: the Event publisher task's queue, so publishing Events never
    /// holds back the next objects (an Event is commentary, the object is the record).
    publisher: Option<mpsc::UnboundedSender<PendingEvent>>,
    /// Stale workloads by image name, once workload tracking has reported
    /// ([`Mirror::stale_workloads`]); `None`: not tracked, no count is written.
    stale: Option<BTreeMap<String, u32>>,
}

impl Mirror {
    /// A mirror writing into `api`'s namespace `namespace`; Events through `recorder`
    /// (none in tests that count requests).
    pub fn new(api: Api<ImageFactoryRebuild>, namespace: &str, recorder: Option<Recorder>) -> Self {
        Self {
            api,
            recorder,
            namespace: namespace.to_string(),
            records: BTreeMap::new(),
            server: BTreeMap::new(),
            pending: BTreeMap::new(),
            arrivals: 0,
            failures: 0,
            metrics: None,
            publisher: None,
            stale: None,
        }
    }

    /// Counts writes, errors and objects by phase in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::factory::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count_phases(&self) {
        let Some(m) = &self.metrics else { return };
        let mut by_phase: BTreeMap<String, i64> = [
            "Waiting",
            "Triggered",
            "Running",
            "Succeeded",
            "Failed",
            "Superseded",
            "Skipped",
        ]
        .iter()
        .map(|p| ((*p).to_string(), 0))
        .collect();
        for o in self.server.values() {
            if let Some(p) = o.status.as_ref().and_then(|s| s.phase) {
                *by_phase.entry(format!("{p:?}")).or_default() += 1;
            }
        }
        m.rebuild_objects(&by_phase);
    }

    /// Reads the rebuild objects that exist (so a restart writes only what differs).
    ///
    /// # Errors
    ///
    /// The API server's error when the list fails (the CRD not installed: 404).
    pub async fn load(&mut self) -> Result<usize, kube::Error> {
        let mut params = ListParams::default().limit(500);
        loop {
            let page = self.api.list(&params).await?;
            for o in page.items {
                self.server.insert(o.name_any(), o);
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
        Ok(self.server.len())
    }

    /// Takes in changed records: every rebuild whose object differs becomes pending.
    pub fn absorb(&mut self, batch: Vec<(String, ImageRuntime)>, now: Timestamp) {
        let names: Vec<String> = batch.iter().map(|(n, _)| n.clone()).collect();
        for (name, record) in batch {
            self.records.insert(name, record);
        }
        for name in names {
            let Some(record) = self.records.get(&name) else {
                continue;
            };
            for r in &record.rebuilds {
                let Some(want) = self.desired_of(r, &name, now) else {
                    continue;
                };
                let id = r.id.to_string();
                if self.server.get(&id).is_none_or(|s| !up_to_date(s, &want)) {
                    self.arrivals += 1;
                    let n = self.arrivals;
                    self.pending.entry(id).or_insert((n, name.clone()));
                }
            }
        }
    }

    /// Takes in the stale-workload counts by image name (from
    /// [`super::workloads`]): each image's latest succeeded rebuild shows its count
    /// (`status.staleWorkloads`, 0 for an image no workload runs stale); every rebuild
    /// whose object differs becomes pending.
    pub fn stale_workloads(&mut self, counts: BTreeMap<String, u32>, now: Timestamp) {
        if self.stale.as_ref() == Some(&counts) {
            return;
        }
        self.stale = Some(counts);
        let mut due = Vec::new();
        for (name, record) in &self.records {
            for r in &record.rebuilds {
                let Some(want) = self.desired_of(r, name, now) else {
                    continue;
                };
                let id = r.id.to_string();
                if self.server.get(&id).is_none_or(|s| !up_to_date(s, &want)) {
                    due.push((id, name.clone()));
                }
            }
        }
        for (id, name) in due {
            self.arrivals += 1;
            let n = self.arrivals;
            self.pending.entry(id).or_insert((n, name));
        }
    }

    fn desired_of(&self, r: &Rebuild, image: &str, now: Timestamp) -> Option<ImageFactoryRebuild> {
        let parent_uid = r
            .cause
            .parents
            .first()
            .and_then(|p| self.server.get(p.as_str()))
            .and_then(|o| o.metadata.uid.as_deref());
        let mut object = desired(r, image, &self.records, &self.namespace, parent_uid, now)?;
        if let (Some(stale), Some(status)) = (&self.stale, object.status.as_mut()) {
            let latest = self.records.get(image).and_then(latest_succeeded);
            if latest == Some(&r.id) {
                status.stale_workloads = Some(stale.get(image).copied().unwrap_or(0));
            }
        }
        Some(object)
    }

    /// Number of writes pending.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Writes what is pending, oldest first, parents before children, [`CONCURRENCY`]
    /// at once; then publishes the round's Events (after the objects: an Event is
    /// commentary, the object is the record). Returns how many writes failed (they stay
    /// pending).
    pub async fn flush(&mut self, now: Timestamp) -> usize {
        let mut failed = 0;
        let mut events = Vec::new();
        while !self.pending.is_empty() {
            let (round_failed, round_events, more) = self.round(now).await;
            failed += round_failed;
            events.extend(round_events);
            if round_failed > 0 || !more {
                break;
            }
        }
        if let Some(publisher) = &self.publisher {
            for event in events {
                let _ = publisher.send(event);
            }
        } else if let Some(recorder) = &self.recorder {
            publish(recorder, futures::stream::iter(events)).await;
        }
        failed
    }

    /// One round of [`flush`](Self::flush): every pending object whose parent is not
    /// pending. Returns (failures, Events to publish, whether children wait).
    async fn round(&mut self, now: Timestamp) -> (usize, Vec<PendingEvent>, bool) {
        // A rebuild whose parent is pending waits for the next round, so its owner
        // reference can name the parent's uid.
        let pending = std::mem::take(&mut self.pending);
        let parent_pending = |id: &str, image: &str| {
            self.records
                .get(image)
                .and_then(|rt| rt.rebuilds.iter().find(|r| r.id.as_str() == id))
                .and_then(|r| r.cause.parents.first())
                .is_some_and(|p| p.as_str() != id && pending.contains_key(p.as_str()))
        };
        let (later, mut ready): (Vec<_>, Vec<_>) = pending
            .iter()
            .map(|(id, (n, image))| (id.clone(), (*n, image.clone())))
            .partition(|(id, (_, image))| parent_pending(id, image));
        ready.sort_by_key(|(_, (n, _))| *n);
        let more = !later.is_empty();
        self.pending.extend(later);
        let mut jobs = Vec::new();
        for (id, (n, image)) in ready {
            let Some(rebuild) = self
                .records
                .get(&image)
                .and_then(|rt| rt.rebuilds.iter().find(|r| r.id.as_str() == id))
            else {
                continue;
            };
            let Some(want) = self.desired_of(rebuild, &image, now) else {
                continue;
            };
            let previous = self.server.get(rebuild.id.as_str()).cloned();
            jobs.push((id, n, image, want, previous));
        }
        let api = self.api.clone();
        let results: Vec<_> = futures::stream::iter(jobs)
            .map(|(id, n, image, want, previous)| {
                let api = api.clone();
                async move {
                    let result = write(&api, want, previous.as_ref()).await;
                    (id, n, image, previous, result)
                }
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        let mut failed = 0;
        let mut events = Vec::new();
        for (id, n, image, previous, result) in results {
            if let Some(m) = &self.metrics {
                m.object_written(result.is_ok());
                if let Err(e) = &result {
                    m.reconcile_error(&error_reason(e));
                }
            }
            match result {
                Ok(object) => {
                    let reference = object.object_ref(&());
                    for (type_, reason, note) in event_for(previous.as_ref(), &object) {
                        let event = KubeEvent {
                            type_,
                            reason: reason.to_string(),
                            note: Some(note),
                            action: "Reconcile".to_string(),
                            secondary: None,
                        };
                        events.push((event, reference.clone(), id.clone()));
                    }
                    self.server.insert(id, object);
                }
                Err(e) => {
                    failed += 1;
                    warn!(rebuild = %id, error = %e, "cannot write the rebuild object; retrying");
                    self.pending.insert(id, (n, image));
                }
            }
        }
        self.count_phases();
        (failed, events, more)
    }

    /// The task: absorb batches from the factory (and, with `stale`, the stale-workload
    /// counts of [`super::workloads`]), flush, retry failures with backoff.
    pub async fn run(
        mut self,
        mut batches: mpsc::UnboundedReceiver<Vec<(String, ImageRuntime)>>,
        mut stale: Option<mpsc::UnboundedReceiver<BTreeMap<String, u32>>>,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        let publisher = self.recorder.take().map(|recorder| {
            let (tx, rx) = mpsc::unbounded_channel();
            self.publisher = Some(tx);
            let events = futures::stream::unfold(
                rx,
                |mut rx: mpsc::UnboundedReceiver<PendingEvent>| async move {
                    rx.recv().await.map(|event| (event, rx))
                },
            );
            tokio::spawn(async move { publish(&recorder, events).await })
        });
        let mut backoff = Duration::from_secs(1);
        loop {
            let retry = !self.pending.is_empty();
            tokio::select! {
                () = shutdown.cancelled() => break,
                batch = batches.recv() => match batch {
                    Some(batch) => {
                        self.absorb(batch, Timestamp::now());
                        // Take in whatever else is queued before writing.
                        while let Ok(more) = batches.try_recv() {
                            self.absorb(more, Timestamp::now());
                        }
                    }
                    None => break,
                },
                counts = recv_or_pending(stale.as_mut()) => match counts {
                    Some(counts) => self.stale_workloads(counts, Timestamp::now()),
                    // Workload tracking stopped: the counts stay as last reported.
                    None => stale = None,
                },
                () = tokio::time::sleep(backoff), if retry => {}
            }
            let failed = self.flush(Timestamp::now()).await;
            if failed == 0 {
                self.failures = 0;
                backoff = Duration::from_secs(1);
            } else {
                self.failures += 1;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
        if !self.pending.is_empty() {
            let _ = tokio::time::timeout(grace, self.flush(Timestamp::now())).await;
        }
        if !self.pending.is_empty() {
            info!(
                pending = self.pending.len(),
                "rebuild objects not written at shutdown; the next start writes them from state"
            );
        }
        // The queue closes with the sender; what is queued is published within `grace`.
        self.publisher = None;
        if let Some(task) = publisher {
            let abort = task.abort_handle();
            if tokio::time::timeout(grace, task).await.is_err() {
                abort.abort();
                info!("Events not published at shutdown were dropped");
            }
        }
    }
}

/// The next message of `rx`; pending forever without one.
async fn recv_or_pending<T>(rx: Option<&mut mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Publishes `events` through `recorder`, [`CONCURRENCY`] at once. An Event is a
/// courtesy: a failed one is logged at debug level, never retried.
async fn publish(recorder: &Recorder, events: impl futures::Stream<Item = PendingEvent>) {
    events
        .for_each_concurrent(CONCURRENCY, |(event, reference, name)| async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                debug!(rebuild = %name, error = %e, "cannot publish an Event");
            }
        })
        .await;
}

/// A metrics label for a failed write: the API server's reason (`Conflict`,
/// `Invalid`, …), else `transport`.
fn error_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.reason.is_empty() => s.reason.clone(),
        kube::Error::Api(s) => format!("http_{}", s.code),
        _ => "transport".to_string(),
    }
}

/// An Event to publish: the Event, its object, the object's name (for logs).
type PendingEvent = (
    KubeEvent,
    k8s_openapi::api::core::v1::ObjectReference,
    String,
);

/// Applies one object: metadata + spec, then status (with the generation the spec
/// write returned) — the two requests every rebuild object costs. Returns the object as
/// the server has it. Public for the controller benchmark, which measures the API
/// server's own ceiling with exactly these requests.
///
/// # Errors
///
/// The API server's refusal or a transport error of either request.
pub async fn write(
    api: &Api<ImageFactoryRebuild>,
    mut want: ImageFactoryRebuild,
    previous: Option<&ImageFactoryRebuild>,
) -> Result<ImageFactoryRebuild, kube::Error> {
    let name = want.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut status = want.status.take().unwrap_or_default();
    // Only the fields we own: an absent owner reference is left out, not nulled.
    let mut metadata = serde_json::json!({ "name": name, "labels": want.metadata.labels });
    if let Some(owners) = &want.metadata.owner_references {
        metadata["ownerReferences"] = serde_json::json!(owners);
    }
    let body = serde_json::json!({
        "apiVersion": "imagefactory.dev/v1alpha1",
        "kind": "ImageFactoryRebuild",
        "metadata": metadata,
        "spec": want.spec,
    });
    let applied = api.patch(&name, &params, &Patch::Apply(&body)).await?;
    keep_transitions(
        &mut status,
        previous.and_then(|p| p.status.as_ref()),
        applied.metadata.generation,
    );
    let body = serde_json::json!({
        "apiVersion": "imagefactory.dev/v1alpha1",
        "kind": "ImageFactoryRebuild",
        "status": status,
    });
    api.patch_status(&name, &params, &Patch::Apply(&body)).await
}

#[cfg(test)]
mod tests;
