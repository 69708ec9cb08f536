//! The rebuild engine: holds, newest-matured selection, supersede, expedite, block,
//! cascade waves and retries (DESIGN.md, "Hold semantics"; issue 8).
//!
//! Pure: events and `now` in, [`Decision`]s out, no I/O and no clock reads. The engine
//! owns the [`ImageRuntime`] records of every image of the graph and changes them
//! *before* it returns a decision, so the caller persists [`Engine::take_changed`] and
//! then acts: a crash after persisting a `Triggered` phase re-triggers the same
//! [`RebuildId`] on restart, which a trigger backend treats as the same build.
//!
//! ```text
//! Update ──► history ──► hold (discoveredAt + delay) ──► Waiting ──► Triggered ──► Outcome
//!                                                          ▲                        │
//!            cascade: the new digest is an update of the image ◄── Succeeded ◄──────┘
//! ```
//!
//! Level-triggered: for every managed image the engine recomputes, from the records
//! alone, which rebuild it wants now ([`hold`]) and moves the image's open rebuild
//! towards it ([`rebuild`]); only images whose inputs changed are recomputed, in
//! topological order, so a cascade is decided in one pass.

mod hold;
mod plan;
mod rebuild;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;

use crate::enrollment::RebuildPolicy;
use crate::graph::{Graph, GraphError, NodeKind};
use crate::runtime::{
    to_second, Block, Cause, Digest, ImageRuntime, Mark, PinnedBase, RebuildId, SignatureCheck,
    Update, UpdateSource,
};

pub use plan::{plan, PinnedDependent, Plan, PlanUpdate, PlannedRebuild};

/// Engine errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The graph has a cycle: no cascade order exists.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// `plan` was asked about an image the graph does not have.
    #[error(
        "{image} is not in the dependency graph; run `image-factory graph` to list its images"
    )]
    UnknownImage {
        /// The name or reference asked about.
        image: String,
    },
    /// The dry run did not settle (a bug: every wave strictly advances).
    #[error("the plan of {image} did not settle after {steps} steps")]
    Unsettled {
        /// The updated image.
        image: String,
        /// Steps simulated.
        steps: usize,
    },
}

/// Limits of retries and history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Attempts of one rebuild before it is Failed (`rebuild.maxAttempts`); default 3.
    pub max_attempts: u32,
    /// Per-image override of `max_attempts`, by image name.
    pub max_attempts_by_image: BTreeMap<String, u32>,
    /// Wait after the first failure; doubled after each further one. Default 1 minute.
    pub retry_backoff: Duration,
    /// Longest wait between attempts. Default 1 hour.
    pub retry_backoff_max: Duration,
    /// Updates (and finished rebuilds) kept per image; default 50.
    pub history_limit: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            max_attempts_by_image: BTreeMap::new(),
            retry_backoff: Duration::from_secs(60),
            retry_backoff_max: Duration::from_secs(3600),
            history_limit: crate::runtime::DEFAULT_HISTORY_LIMIT,
        }
    }
}

impl EngineConfig {
    fn max_attempts_of(&self, image: &str) -> u32 {
        self.max_attempts_by_image
            .get(image)
            .copied()
            .unwrap_or(self.max_attempts)
            .max(1)
    }

    /// The wait before attempt `failed + 1`: `retry_backoff × 2^(failed-1)`, capped.
    fn backoff(&self, failed: u32) -> Duration {
        let factor = 2u32.saturating_pow(failed.saturating_sub(1));
        self.retry_backoff
            .saturating_mul(factor)
            .min(self.retry_backoff_max)
    }
}

/// How a build ended, as the trigger and the registry report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The trigger reported success and the registry shows the new image.
    Success {
        /// The image's new digest.
        digest: Digest,
        /// Base digests observed in the result (`org.opencontainers.image.base.digest`,
        /// else layer ancestry); empty when unknown. A digest that is neither a pinned
        /// base nor one of its platform manifests fails the attempt.
        base_digests: Vec<Digest>,
    },
    /// The trigger reported failure (or the registry check or the test failed).
    Failure {
        /// Why, for the record and the person reading `status`.
        reason: String,
        /// The end of the build's (or test's) output, at most [`RECORD_LOG_BYTES`];
        /// kept in the attempt's record.
        log: Option<String>,
    },
}

/// Most bytes of output an attempt's record keeps (the runtime records are committed
/// to git: the full tail stays with the trigger backend's logs).
pub const RECORD_LOG_BYTES: usize = 2048;

/// Something that happened, fed to [`Engine::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new digest of an image's tag (Freight, registry watcher, or a managed image
    /// seen in the registry).
    Update {
        /// Graph name of the image.
        image: String,
        /// The tag.
        tag: String,
        /// The new digest (index digest for multi-platform images).
        digest: Digest,
        /// Per-platform digests, where known.
        platforms: BTreeMap<String, Digest>,
        /// Freight `discoveredAt` or the watcher's first sighting.
        discovered_at: Timestamp,
        /// Where it came from.
        source: UpdateSource,
        /// The digest's signature check under the image's `verify:` policy (checked by
        /// the caller before the event; `None` without a policy). Under `enforce`, a
        /// digest that is not verified is recorded but never used as a base.
        signature: Option<SignatureCheck>,
    },
    /// The digest an image has now, without it being an update (first sighting after
    /// enrollment): the baseline later updates are compared with.
    Observe {
        /// Graph name of the image.
        image: String,
        /// The tag.
        tag: String,
        /// Its digest.
        digest: Digest,
        /// Per-platform digests, where known.
        platforms: BTreeMap<String, Digest>,
    },
    /// The trigger started the build.
    Running {
        /// The rebuild.
        id: RebuildId,
        /// What the backend started (Job name, workflow run URL…).
        trigger: String,
    },
    /// The build ended.
    Outcome {
        /// The rebuild.
        id: RebuildId,
        /// How.
        outcome: Outcome,
    },
    /// Skip the remaining delay of one update (a critical CVE).
    Expedite {
        /// Graph name of the image whose update it is; for a managed image without
        /// `digest`, the updates its waiting rebuild is held for.
        image: String,
        /// The update; default the image's newest.
        digest: Option<Digest>,
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// Mark a digest of an image as bad: never used as a base.
    Block {
        /// Graph name of the image.
        image: String,
        /// The digest.
        digest: Digest,
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// Lift a block.
    Unblock {
        /// Graph name of the image.
        image: String,
        /// The digest.
        digest: Digest,
    },
    /// Try a Failed rebuild again, with a fresh attempt budget.
    Retry {
        /// The rebuild.
        id: RebuildId,
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// A recorded update's digest was checked again under its image's `verify:` policy
    /// (an `unsigned` digest is re-checked for a while: publishers often sign after
    /// pushing). A digest that becomes verified may be used from now on, as if it had
    /// been verified when recorded: it supersedes older updates still held and its hold
    /// counts from its discovery, as before.
    Signature {
        /// Graph name of the image.
        image: String,
        /// The recorded update's digest.
        digest: Digest,
        /// The new check.
        check: SignatureCheck,
    },
    /// Let a rebuild of an `autoRebuild: false` image start.
    Approve {
        /// The rebuild.
        id: RebuildId,
        /// Who.
        by: String,
    },
}

/// A rebuild to start now. Its phase is already `Triggered` in the runtime records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Stable id; with `attempt`, the key of an idempotent trigger call.
    pub id: RebuildId,
    /// Graph name of the managed image.
    pub image: String,
    /// Its reference.
    pub reference: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Every base the Dockerfile uses, pinned (`repo:tag@sha256:…`), sorted by image.
    pub bases: Vec<PinnedBase>,
    /// The updates and parent rebuilds it picks up.
    pub cause: Cause,
}

/// What the engine decided; the runtime records already reflect it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// An update was added to an image's history.
    Recorded {
        /// The image.
        image: String,
        /// The update's digest.
        digest: Digest,
        /// Older, still held updates now marked superseded by it.
        superseded: Vec<Digest>,
    },
    /// A rebuild is held (new, or its due time moved).
    Hold {
        /// The image.
        image: String,
        /// The rebuild.
        id: RebuildId,
        /// When it may start.
        due_at: Timestamp,
    },
    /// Start a rebuild.
    Trigger(Trigger),
    /// A rebuild that had not started was replaced or dropped (phase Superseded, or
    /// Skipped when a base digest it was planned on is now blocked).
    Supersede {
        /// The image.
        image: String,
        /// The dropped rebuild.
        id: RebuildId,
        /// The rebuild replacing it, if any.
        by: Option<RebuildId>,
        /// Why.
        reason: String,
    },
    /// `autoRebuild: false`: an update is available; the rebuild waits for approval.
    AwaitApproval {
        /// The image.
        image: String,
        /// The rebuild to approve.
        id: RebuildId,
    },
    /// An attempt failed; the next one is due at `due_at`.
    RetryScheduled {
        /// The image.
        image: String,
        /// The rebuild.
        id: RebuildId,
        /// The attempt that failed.
        failed_attempt: u32,
        /// When the next attempt starts.
        due_at: Timestamp,
        /// The failure.
        reason: String,
    },
    /// The last attempt failed: the rebuild is Failed and its subtree held back.
    GiveUp {
        /// The image.
        image: String,
        /// The rebuild.
        id: RebuildId,
        /// The failure.
        reason: String,
        /// Managed images below it that are not rebuilt until it succeeds, sorted.
        held_back: Vec<String>,
    },
    /// A rebuild succeeded; its digest is now an update of the image for its dependents.
    Succeeded {
        /// The image.
        image: String,
        /// The rebuild.
        id: RebuildId,
        /// The new digest.
        digest: Digest,
        /// Managed dependents that will pick it up (after their `cascadeDelay`).
        cascade: Vec<String>,
    },
    /// An image with pending work is not rebuilt because an ancestor's rebuild failed.
    HeldBack {
        /// The image.
        image: String,
        /// Its waiting rebuild.
        id: RebuildId,
        /// Which ancestor failed, and how.
        reason: String,
    },
    /// A dependent pins the updated base by digest (`FROM x@sha256:…`): rebuilding it
    /// would not pick up the update, so it is not rebuilt; change its Dockerfile.
    PinnedDependent {
        /// The dependent.
        image: String,
        /// The updated base.
        base: String,
        /// The digests its Dockerfile pins.
        pins: Vec<String>,
    },
    /// A person's action was recorded (expedite, block, unblock, retry, approve).
    Marked {
        /// The image it applies to.
        image: String,
        /// `expedite`, `block`, `unblock`, `retry`, `approve`.
        action: &'static str,
        /// The digest or rebuild id acted on.
        target: String,
    },
    /// The trigger reported the build running.
    Running {
        /// The image.
        image: String,
        /// The rebuild.
        id: RebuildId,
    },
    /// An update's digest is not verified by the image's `verify:` policy. Under
    /// `enforce` (`skipped`) it is recorded but never used as a base (older verified
    /// updates still are); under `warn` it is used and this is the warning.
    Unverified {
        /// The image.
        image: String,
        /// The update's digest.
        digest: Digest,
        /// The check: verdict, mode, detail.
        check: SignatureCheck,
    },
    /// A recorded update that was not verified now is ([`Event::Signature`]): it may be
    /// used as a base from now on.
    Verified {
        /// The image.
        image: String,
        /// The update's digest.
        digest: Digest,
        /// Where the signature was found.
        detail: String,
        /// Older, still held updates now marked superseded by it.
        superseded: Vec<Digest>,
    },
    /// The event changed nothing (a replay, an unknown id, an unknown image).
    Ignored {
        /// Why.
        reason: String,
    },
}

/// Marks the updates of `rt` other than `digest` that are still held at `now` (for
/// `held_for`), not expedited, not superseded and discovered no later than
/// `discovered_at` as superseded by `digest`; returns their digests.
fn supersede_held(
    rt: &mut ImageRuntime,
    digest: &Digest,
    discovered_at: Timestamp,
    held_for: std::time::Duration,
    now: Timestamp,
) -> Vec<Digest> {
    let mut superseded = Vec::new();
    for older in &mut rt.updates {
        let still_held = hold::later(older.discovered_at, held_for) > now;
        if &older.digest != digest
            && older.superseded_by.is_none()
            && older.expedited.is_none()
            && still_held
            && older.discovered_at <= discovered_at
        {
            older.superseded_by = Some(digest.clone());
            superseded.push(older.digest.clone());
        }
    }
    superseded
}

/// An image of the graph, in the engine's topological order.
#[derive(Debug, Clone)]
struct NodeInfo {
    name: String,
    /// `registry/repository:tag`, no digest.
    reference: String,
    tag: String,
    managed: bool,
    policy: RebuildPolicy,
    /// Bases, sorted by name.
    bases: Vec<BaseLink>,
    /// Dependents (indices), sorted.
    dependents: Vec<usize>,
}

#[derive(Debug, Clone)]
struct BaseLink {
    node: usize,
    /// Digests the Dockerfile pins this base to; non-empty means updates do not apply.
    pins: Vec<String>,
}

/// Why an image is not planned now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shadow {
    /// An ancestor has an open rebuild that will cascade into it (`in_flight`: it is
    /// Triggered or Running, or waits for one that is).
    Pending { ancestor: usize, in_flight: bool },
    /// An ancestor's rebuild failed.
    Failed { ancestor: usize, id: RebuildId },
}

/// What dependents see of an image: when it changes they are recomputed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Signal {
    open: bool,
    in_flight: bool,
    updates: usize,
    failed: Option<RebuildId>,
    shadow_failed: Option<RebuildId>,
    shadow_pending: Option<bool>,
}

/// The engine: the graph, every image's runtime records, and what is due when.
#[derive(Debug, Clone)]
pub struct Engine {
    nodes: Vec<NodeInfo>,
    index: BTreeMap<String, usize>,
    runtime: Vec<ImageRuntime>,
    /// Runtime records of images no longer in the graph: kept, never changed.
    detached: BTreeMap<String, ImageRuntime>,
    owner: BTreeMap<RebuildId, usize>,
    config: EngineConfig,
    shadow: Vec<Option<Shadow>>,
    signal: Vec<Signal>,
    due_of: Vec<Option<Timestamp>>,
    dues: BTreeSet<(Timestamp, usize)>,
    dirty: BTreeSet<usize>,
    changed: BTreeSet<usize>,
}

impl Engine {
    /// An engine over `graph` with the runtime records `runtime` (by image name; images
    /// without one start empty). Nothing is decided until the first
    /// [`apply`](Self::apply) or [`tick`](Self::tick), which recomputes every image.
    ///
    /// # Errors
    ///
    /// [`EngineError::Graph`] when the graph has a cycle.
    pub fn new(
        graph: &Graph,
        mut runtime: BTreeMap<String, ImageRuntime>,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        let levels = graph.levels()?;
        let mut order: Vec<(usize, &str)> = levels.iter().map(|(n, l)| (*l, n.as_str())).collect();
        order.sort_unstable();
        let index: BTreeMap<String, usize> = order
            .iter()
            .enumerate()
            .map(|(i, (_, n))| ((*n).to_string(), i))
            .collect();
        let mut nodes = Vec::with_capacity(order.len());
        let mut records = Vec::with_capacity(order.len());
        for (_, name) in &order {
            let Some(node) = graph.node(name) else {
                continue;
            };
            let reference = node.reference.without_digest();
            let bases = graph
                .bases(name)
                .iter()
                .filter_map(|b| {
                    let pins = graph
                        .edge(b, name)
                        .map(|e| e.pinned.iter().cloned().collect())
                        .unwrap_or_default();
                    index.get(b).map(|&node| BaseLink { node, pins })
                })
                .collect();
            let dependents = graph
                .dependents(name)
                .iter()
                .filter_map(|d| index.get(d).copied())
                .collect();
            let reference_text = reference.to_string();
            records.push(
                runtime
                    .remove(*name)
                    .unwrap_or_else(|| ImageRuntime::new(reference_text.clone())),
            );
            nodes.push(NodeInfo {
                name: (*name).to_string(),
                tag: reference
                    .tag()
                    .unwrap_or(crate::reference::DEFAULT_TAG)
                    .to_string(),
                reference: reference_text,
                managed: node.kind == NodeKind::Managed,
                policy: node.rebuild,
                bases,
                dependents,
            });
        }
        let mut owner = BTreeMap::new();
        for (i, rt) in records.iter().enumerate() {
            for r in &rt.rebuilds {
                owner.insert(r.id.clone(), i);
            }
        }
        let n = nodes.len();
        Ok(Self {
            nodes,
            index,
            runtime: records,
            detached: runtime,
            owner,
            config,
            shadow: vec![None; n],
            signal: vec![Signal::default(); n],
            due_of: vec![None; n],
            dues: BTreeSet::new(),
            dirty: (0..n).collect(),
            changed: BTreeSet::new(),
        })
    }

    /// Applies one event at `now`, then starts whatever is due at `now`.
    pub fn apply(&mut self, event: Event, now: Timestamp) -> Vec<Decision> {
        let now = to_second(now);
        let mut out = Vec::new();
        self.handle(event, now, &mut out);
        self.run(now, &mut out);
        out
    }

    /// Starts whatever is due at `now` (holds that ended, retry backoffs that passed).
    pub fn tick(&mut self, now: Timestamp) -> Vec<Decision> {
        let now = to_second(now);
        let mut out = Vec::new();
        self.run(now, &mut out);
        out
    }

    /// When the next hold or retry backoff ends: call [`tick`](Self::tick) then.
    /// `None` when nothing waits on time (approvals wait for a person).
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        self.dues.first().map(|(t, _)| *t)
    }

    /// The runtime record of image `name`.
    pub fn runtime(&self, name: &str) -> Option<&ImageRuntime> {
        match self.index.get(name) {
            Some(&i) => self.runtime.get(i),
            None => self.detached.get(name),
        }
    }

    /// Every runtime record, by image name (including images no longer in the graph).
    pub fn runtimes(&self) -> BTreeMap<&str, &ImageRuntime> {
        let mut all: BTreeMap<&str, &ImageRuntime> =
            self.detached.iter().map(|(n, r)| (n.as_str(), r)).collect();
        for (node, rt) in self.nodes.iter().zip(&self.runtime) {
            all.insert(node.name.as_str(), rt);
        }
        all
    }

    /// Names of the images whose runtime record changed since the last call: persist
    /// these before acting on the decisions.
    pub fn take_changed(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .map(|i| self.nodes[i].name.clone())
            .collect()
    }

    /// The image that owns rebuild `id`.
    pub fn owner_of(&self, id: &RebuildId) -> Option<&str> {
        self.owner.get(id).map(|&i| self.nodes[i].name.as_str())
    }

    /// Rebuilds recorded as Triggered whose trigger call may never have happened (the
    /// process stopped between persisting and calling): call their triggers again on
    /// start-up. The same id and attempt name the same build, so a trigger backend
    /// that already started it must treat the call as a no-op.
    pub fn pending_triggers(&self) -> Vec<Trigger> {
        let mut out = Vec::new();
        for (node, rt) in self.nodes.iter().zip(&self.runtime) {
            for r in rt
                .rebuilds
                .iter()
                .filter(|r| r.phase == crate::runtime::Phase::Triggered)
            {
                out.push(Trigger {
                    id: r.id.clone(),
                    image: node.name.clone(),
                    reference: node.reference.clone(),
                    attempt: u32::try_from(r.attempts.len()).unwrap_or(u32::MAX),
                    bases: r.bases.clone(),
                    cause: r.cause.clone(),
                });
            }
        }
        out
    }

    fn run(&mut self, now: Timestamp, out: &mut Vec<Decision>) {
        while let Some(&(t, i)) = self.dues.first() {
            if t > now {
                break;
            }
            self.dues.remove(&(t, i));
            self.due_of[i] = None;
            self.dirty.insert(i);
        }
        self.reconcile(now, out);
    }

    fn handle(&mut self, event: Event, now: Timestamp, out: &mut Vec<Decision>) {
        match event {
            Event::Update {
                image,
                tag,
                digest,
                platforms,
                discovered_at,
                source,
                signature,
            } => {
                let update = Update {
                    digest,
                    tag,
                    platforms,
                    discovered_at: to_second(discovered_at),
                    source,
                    superseded_by: None,
                    expedited: None,
                    signature,
                };
                self.record_update(&image, update, now, out);
            }
            Event::Observe {
                image,
                tag,
                digest,
                platforms,
            } => self.observe(&image, tag, digest, platforms, now, out),
            Event::Running { id, trigger } => self.running(&id, trigger, out),
            Event::Outcome { id, outcome } => self.outcome(&id, outcome, now, out),
            Event::Expedite {
                image,
                digest,
                by,
                reason,
            } => {
                let mark = Mark {
                    by,
                    reason,
                    at: now,
                };
                self.expedite(&image, digest, mark, out);
            }
            Event::Block {
                image,
                digest,
                by,
                reason,
            } => {
                let block = Block {
                    digest,
                    by,
                    reason,
                    at: now,
                };
                self.block(&image, block, out);
            }
            Event::Unblock { image, digest } => self.unblock(&image, &digest, out),
            Event::Retry { id, by, reason } => {
                self.retry(
                    &id,
                    Mark {
                        by,
                        reason,
                        at: now,
                    },
                    now,
                    out,
                );
            }
            Event::Signature {
                image,
                digest,
                check,
            } => self.signature(&image, &digest, check, now, out),
            Event::Approve { id, by } => {
                let mark = Mark {
                    by,
                    reason: "approved".to_string(),
                    at: now,
                };
                self.approve(&id, mark, out);
            }
        }
    }

    fn lookup(&self, image: &str, out: &mut Vec<Decision>) -> Option<usize> {
        let found = self.index.get(image).copied();
        if found.is_none() {
            out.push(Decision::Ignored {
                reason: format!("{image} is not in the dependency graph"),
            });
        }
        found
    }

    fn touch_dependents(&mut self, i: usize) {
        self.changed.insert(i);
        self.dirty.extend(self.nodes[i].dependents.iter().copied());
    }

    fn record_update(
        &mut self,
        image: &str,
        update: Update,
        now: Timestamp,
        out: &mut Vec<Decision>,
    ) {
        let Some(i) = self.lookup(image, out) else {
            return;
        };
        let held_for = self.nodes[i].policy.delay;
        let rt = &mut self.runtime[i];
        if let Some(known) = rt.updates.iter_mut().find(|u| u.digest == update.digest) {
            if known.platforms.is_empty() && !update.platforms.is_empty() {
                known.platforms = update.platforms;
                self.changed.insert(i);
            }
            out.push(Decision::Ignored {
                reason: format!("{image}@{} is already recorded", update.digest),
            });
            return;
        }
        // A rejected update (unsigned or invalid under `enforce`) is never used, so it
        // must not replace the older updates that may still be.
        let superseded = if update.is_rejected() {
            Vec::new()
        } else {
            supersede_held(rt, &update.digest, update.discovered_at, held_for, now)
        };
        let newest = rt
            .current
            .as_ref()
            .is_none_or(|c| c.first_seen <= update.discovered_at);
        if newest {
            rt.current = Some(crate::runtime::Observed {
                tag: update.tag.clone(),
                digest: update.digest.clone(),
                platforms: update.platforms.clone(),
                first_seen: update.discovered_at,
            });
        }
        let digest = update.digest.clone();
        let unverified = update
            .signature
            .clone()
            .filter(|c| c.verdict != crate::runtime::SignatureVerdict::Verified);
        rt.insert_update(update);
        self.trim(i);
        for &d in &self.nodes[i].dependents {
            let link = self.nodes[d].bases.iter().find(|l| l.node == i);
            if let Some(link) = link.filter(|l| !l.pins.is_empty()) {
                out.push(Decision::PinnedDependent {
                    image: self.nodes[d].name.clone(),
                    base: image.to_string(),
                    pins: link.pins.clone(),
                });
            }
        }
        if let Some(check) = unverified {
            out.push(Decision::Unverified {
                image: image.to_string(),
                digest: digest.clone(),
                check,
            });
        }
        out.push(Decision::Recorded {
            image: image.to_string(),
            digest,
            superseded,
        });
        self.touch_dependents(i);
    }

    fn signature(
        &mut self,
        image: &str,
        digest: &Digest,
        check: SignatureCheck,
        now: Timestamp,
        out: &mut Vec<Decision>,
    ) {
        let Some(i) = self.lookup(image, out) else {
            return;
        };
        let held_for = self.nodes[i].policy.delay;
        let rt = &mut self.runtime[i];
        let Some(update) = rt.updates.iter_mut().find(|u| &u.digest == digest) else {
            out.push(Decision::Ignored {
                reason: format!("{image}@{digest} is not a recorded update"),
            });
            return;
        };
        if update.signature.as_ref() == Some(&check) {
            out.push(Decision::Ignored {
                reason: format!("{image}@{digest}: signature check unchanged"),
            });
            return;
        }
        let was_rejected = update.is_rejected();
        update.signature = Some(check.clone());
        let usable = !update.is_rejected();
        let (discovered_at, superseded_by) = (update.discovered_at, update.superseded_by.clone());
        if was_rejected && usable {
            let superseded = if superseded_by.is_none() {
                supersede_held(rt, digest, discovered_at, held_for, now)
            } else {
                Vec::new()
            };
            out.push(Decision::Verified {
                image: image.to_string(),
                digest: digest.clone(),
                detail: check.detail,
                superseded,
            });
            self.touch_dependents(i);
        } else {
            if check.verdict != crate::runtime::SignatureVerdict::Verified {
                out.push(Decision::Unverified {
                    image: image.to_string(),
                    digest: digest.clone(),
                    check,
                });
            }
            self.changed.insert(i);
        }
    }

    fn observe(
        &mut self,
        image: &str,
        tag: String,
        digest: Digest,
        platforms: BTreeMap<String, Digest>,
        now: Timestamp,
        out: &mut Vec<Decision>,
    ) {
        let Some(i) = self.lookup(image, out) else {
            return;
        };
        let rt = &mut self.runtime[i];
        if rt.current.as_ref().is_some_and(|c| c.digest == digest) {
            out.push(Decision::Ignored {
                reason: format!("{image}@{digest} is already the current digest"),
            });
            return;
        }
        rt.current = Some(crate::runtime::Observed {
            tag,
            digest,
            platforms,
            first_seen: now,
        });
        self.touch_dependents(i);
    }

    /// Bounds the history of image `i`, keeping every digest an open rebuild of a
    /// dependent is pinned on.
    fn trim(&mut self, i: usize) {
        let limit = self.config.history_limit;
        let rt = &self.runtime[i];
        if rt.updates.len() <= limit && rt.rebuilds.len() <= limit {
            return;
        }
        let mut keep = BTreeSet::new();
        for &d in &self.nodes[i].dependents {
            for r in self.runtime[d].rebuilds.iter().filter(|r| r.is_open()) {
                for b in r.bases.iter().filter(|b| b.image == self.nodes[i].name) {
                    if let Some(Ok(digest)) = b.digest().map(Digest::parse) {
                        keep.insert(digest);
                    }
                }
            }
        }
        let before: Vec<RebuildId> = self.runtime[i]
            .rebuilds
            .iter()
            .map(|r| r.id.clone())
            .collect();
        if self.runtime[i].trim(limit, &keep) > 0 {
            self.changed.insert(i);
            let after: BTreeSet<&RebuildId> =
                self.runtime[i].rebuilds.iter().map(|r| &r.id).collect();
            for id in before.iter().filter(|id| !after.contains(id)) {
                self.owner.remove(id);
            }
        }
    }

    fn expedite(
        &mut self,
        image: &str,
        digest: Option<Digest>,
        mark: Mark,
        out: &mut Vec<Decision>,
    ) {
        let Some(i) = self.lookup(image, out) else {
            return;
        };
        let targets: Vec<(usize, Digest)> = match digest {
            Some(d) => vec![(i, d)],
            None => {
                let waiting = self.runtime[i]
                    .open_rebuild()
                    .filter(|_| self.nodes[i].managed);
                match waiting {
                    Some(r) if !r.cause.updates.is_empty() => r
                        .cause
                        .updates
                        .iter()
                        .filter_map(|u| self.index.get(&u.image).map(|&b| (b, u.digest.clone())))
                        .collect(),
                    _ => match self.runtime[i].updates.last() {
                        Some(u) => vec![(i, u.digest.clone())],
                        None => {
                            out.push(Decision::Ignored {
                                reason: format!("{image} has no update to expedite"),
                            });
                            return;
                        }
                    },
                }
            }
        };
        for (b, digest) in targets {
            let name = self.nodes[b].name.clone();
            let rt = &mut self.runtime[b];
            if rt.is_blocked(&digest) {
                out.push(Decision::Ignored {
                    reason: format!("{name}@{digest} is blocked; unblock it before expediting"),
                });
                continue;
            }
            let Some(update) = rt.updates.iter_mut().find(|u| u.digest == digest) else {
                out.push(Decision::Ignored {
                    reason: format!("{name} has no update {digest}"),
                });
                continue;
            };
            if update.expedited.is_some() {
                out.push(Decision::Ignored {
                    reason: format!("{name}@{digest} is already expedited"),
                });
                continue;
            }
            update.expedited = Some(mark.clone());
            out.push(Decision::Marked {
                image: name,
                action: "expedite",
                target: digest.to_string(),
            });
            self.touch_dependents(b);
        }
    }

    fn block(&mut self, image: &str, block: Block, out: &mut Vec<Decision>) {
        let Some(i) = self.lookup(image, out) else {
            return;
        };
        let rt = &mut self.runtime[i];
        if rt.is_blocked(&block.digest) {
            out.push(Decision::Ignored {
                reason: format!("{image}@{} is already blocked", block.digest),
            });
            return;
        }
        let target = block.digest.to_string();
        let at = rt.blocks.partition_point(|b| b.digest < block.digest);
        rt.blocks.insert(at, block);
        out.push(Decision::Marked {
            image: image.to_string(),
            action: "block",
            target,
        });
        self.touch_dependents(i);
    }

    fn unblock(&mut self, image: &str, digest: &Digest, out: &mut Vec<Decision>) {
        let Some(i) = self.lookup(image, out) else {
            return;
        };
        let rt = &mut self.runtime[i];
        let before = rt.blocks.len();
        rt.blocks.retain(|b| &b.digest != digest);
        if rt.blocks.len() == before {
            out.push(Decision::Ignored {
                reason: format!("{image}@{digest} is not blocked"),
            });
            return;
        }
        out.push(Decision::Marked {
            image: image.to_string(),
            action: "unblock",
            target: digest.to_string(),
        });
        self.touch_dependents(i);
    }

    fn find_rebuild(&self, id: &RebuildId, out: &mut Vec<Decision>) -> Option<usize> {
        let found = self
            .owner
            .get(id)
            .copied()
            .filter(|&i| self.runtime[i].rebuild(id).is_some());
        if found.is_none() {
            out.push(Decision::Ignored {
                reason: format!("no rebuild {id} is recorded"),
            });
        }
        found
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
