//! Mapping containers onto the state: which enrolled (or discovered) image each runs,
//! the image's latest digest, and whether the container is stale. Pure: workloads,
//! analysis and runtime records and `now` in, rows out.
//!
//! A container is **stale** when
//! - it runs a managed image at a digest other than the one its latest successful
//!   rebuild produced (unless it runs the tag's current digest, seen after that
//!   rebuild) — stale since that rebuild finished; or
//! - it runs an external (or discovered base) image for which a newer update has
//!   matured — discovered more than the image's `delay` ago (or expedited), not
//!   blocked — stale since the first such update matured.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::Workload;
use crate::graph::NodeKind;
use crate::reference::Reference;
use crate::runtime::{ImageRuntime, Phase, Rebuild};
use crate::state::ImageState;

/// The hold when an analysis record gives none: DESIGN.md's default delay, 7 days.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// One image the state knows, with the tags it is published under.
#[derive(Debug, Clone)]
struct Known {
    name: String,
    kind: NodeKind,
    reference: Reference,
    tags: Vec<String>,
    delay: Duration,
    runtime: Option<ImageRuntime>,
}

/// The images of the state (analysis records) with their runtime records, indexed by
/// `registry/repository`.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    by_repository: BTreeMap<String, Vec<Known>>,
}

impl Catalog {
    /// Builds the catalog from the analysis records (by name) and the runtime records
    /// (by normalized reference, as `status` reads them). Orphaned images and records
    /// whose reference does not parse are left out.
    pub fn new(
        images: &BTreeMap<String, ImageState>,
        records: &BTreeMap<String, ImageRuntime>,
    ) -> Self {
        let mut by_repository: BTreeMap<String, Vec<Known>> = BTreeMap::new();
        for state in images.values().filter(|s| !s.orphaned) {
            let Ok(reference) = Reference::parse(&state.reference) else {
                continue;
            };
            let delay = state
                .rebuild
                .as_ref()
                .and_then(|p| humantime::parse_duration(&p.delay).ok())
                .unwrap_or(DEFAULT_DELAY);
            let runtime = records
                .get(&reference.without_digest().to_string())
                .cloned();
            by_repository
                .entry(reference.repo_url())
                .or_default()
                .push(Known {
                    name: state.name.clone(),
                    kind: state.kind,
                    tags: state.tags.clone(),
                    reference,
                    delay,
                    runtime,
                });
        }
        Self { by_repository }
    }

    /// The images of `graph`, without runtime records (for `plan` and `graph`, which
    /// need the image a container uses, not a verdict); each node's own tag plus the
    /// tags `enrollment` publishes an enrolled image under (`images[].tags`).
    pub fn from_graph(
        graph: &crate::graph::Graph,
        enrollment: &crate::enrollment::Enrollment,
    ) -> Self {
        let mut by_repository: BTreeMap<String, Vec<Known>> = BTreeMap::new();
        for node in graph.nodes() {
            by_repository
                .entry(node.reference.repo_url())
                .or_default()
                .push(Known {
                    name: node.name.clone(),
                    kind: node.kind,
                    reference: node.reference.clone(),
                    tags: enrollment
                        .images
                        .iter()
                        .find(|i| i.name == node.name)
                        .map(|i| i.tags.iter().cloned().collect())
                        .unwrap_or_default(),
                    delay: DEFAULT_DELAY,
                    runtime: None,
                });
        }
        Self { by_repository }
    }

    /// The name of the image a container's `image` reference names (as [`Catalog::find`]
    /// matches it); `None` when the reference does not parse or names no known image.
    pub fn image_of(&self, image: &str) -> Option<&str> {
        let reference = Reference::parse(image).ok()?;
        self.find(&reference).map(|k| k.name.as_str())
    }

    /// The image a container's reference names: same repository and the tag the image
    /// is enrolled or published under; for a digest-only reference, the image whose
    /// record knows the digest, else the repository's only image.
    fn find(&self, reference: &Reference) -> Option<&Known> {
        let candidates = self.by_repository.get(&reference.repo_url())?;
        match reference.tag() {
            Some(tag) => candidates
                .iter()
                .find(|k| k.reference.tag() == Some(tag) || k.tags.iter().any(|t| t == tag)),
            None => {
                let digest = reference.digest()?;
                candidates
                    .iter()
                    .find(|k| k.runtime.as_ref().is_some_and(|rt| knows(rt, digest)))
                    .or_else(|| (candidates.len() == 1).then(|| &candidates[0]))
            }
        }
    }
}

fn knows(rt: &ImageRuntime, digest: &str) -> bool {
    rt.current
        .as_ref()
        .is_some_and(|c| c.digest.as_str() == digest)
        || rt.updates.iter().any(|u| u.digest.as_str() == digest)
        || rt
            .rebuilds
            .iter()
            .any(|r| r.digest.as_ref().is_some_and(|d| d.as_str() == digest))
}

/// The verdict on one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// It runs the image's latest digest.
    Current,
    /// It runs an older digest than the latest rebuild or matured update.
    Stale,
    /// The image is known, but the running digest is not, or the state has nothing to
    /// compare it with.
    Unknown,
    /// The image is neither enrolled nor a discovered base.
    Untracked,
}

/// One row of `status --workloads`: a container of a workload at one running digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// `Kind/name` of the workload (`Deployment/web`).
    pub workload: String,
    /// Its namespace.
    pub namespace: String,
    /// The container's name.
    pub container: String,
    /// The image reference as declared.
    pub image: String,
    /// The enrolled (or discovered) image it maps to, by name.
    pub enrolled: Option<String>,
    /// The digest it runs.
    pub running: Option<String>,
    /// The image's latest digest: the last successful rebuild's (managed) or the newest
    /// matured update's (external), else the current one.
    pub latest: Option<String>,
    /// When it became stale (RFC 3339), for stale rows.
    pub stale_since: Option<String>,
    /// The verdict.
    pub verdict: Verdict,
    /// How many Pods run it (0: a template, no Pods seen).
    pub pods: usize,
}

/// The rows of `workloads` against `catalog` at `now`, sorted by namespace, workload,
/// container. Pure.
pub fn rows(workloads: &[Workload], catalog: &Catalog, now: Timestamp) -> Vec<Row> {
    let mut out = Vec::new();
    for w in workloads {
        for c in &w.containers {
            let reference = Reference::parse(&c.image).ok();
            let known = reference.as_ref().and_then(|r| catalog.find(r));
            let judged = match known {
                None => Judged::untracked(),
                Some(k) => judge(k, c.running.as_deref(), now),
            };
            out.push(Row {
                workload: format!("{}/{}", w.kind, w.name),
                namespace: w.namespace.clone(),
                container: c.name.clone(),
                image: reference.map_or_else(|| c.image.clone(), |r| r.to_string()),
                enrolled: known.map(|k| k.name.clone()),
                running: c.running.clone(),
                latest: judged.latest,
                stale_since: judged.since.map(|t| format!("{t:.0}")),
                verdict: judged.verdict,
                pods: c.pods,
            });
        }
    }
    out.sort_by(|a, b| {
        (&a.namespace, &a.workload, &a.container, &a.running).cmp(&(
            &b.namespace,
            &b.workload,
            &b.container,
            &b.running,
        ))
    });
    out
}

struct Judged {
    verdict: Verdict,
    latest: Option<String>,
    since: Option<Timestamp>,
}

impl Judged {
    fn untracked() -> Self {
        Self {
            verdict: Verdict::Untracked,
            latest: None,
            since: None,
        }
    }
}

fn judge(k: &Known, running: Option<&str>, now: Timestamp) -> Judged {
    let Some(rt) = &k.runtime else {
        return Judged {
            verdict: Verdict::Unknown,
            latest: None,
            since: None,
        };
    };
    match k.kind {
        NodeKind::Managed => judge_managed(rt, running),
        NodeKind::External | NodeKind::Base => judge_external(rt, k.delay, running, now),
    }
}

/// When a successful rebuild finished: its last attempt's end, else its due time.
fn finished_at(r: &Rebuild) -> Timestamp {
    r.attempts
        .last()
        .and_then(|a| a.finished_at)
        .unwrap_or(r.due_at)
}

fn judge_managed(rt: &ImageRuntime, running: Option<&str>) -> Judged {
    let current = rt.current.as_ref();
    let success = rt
        .rebuilds
        .iter()
        .rev()
        .filter(|r| r.phase == Phase::Succeeded)
        .find_map(|r| r.digest.as_ref().map(|d| (r, d)));
    let Some((rebuild, built)) = success else {
        let latest = current.map(|c| c.digest.to_string());
        let verdict = match (running, &latest) {
            (Some(r), Some(l)) if r == l => Verdict::Current,
            _ => Verdict::Unknown,
        };
        return Judged {
            verdict,
            latest,
            since: None,
        };
    };
    let done = finished_at(rebuild);
    let newer_current = current.filter(|c| c.first_seen >= done && &c.digest != built);
    let latest = newer_current.map_or(built, |c| &c.digest).to_string();
    let Some(running) = running else {
        return Judged {
            verdict: Verdict::Unknown,
            latest: Some(latest),
            since: None,
        };
    };
    if running == built.as_str() || newer_current.is_some_and(|c| c.digest.as_str() == running) {
        return Judged {
            verdict: Verdict::Current,
            latest: Some(latest),
            since: None,
        };
    }
    Judged {
        verdict: Verdict::Stale,
        latest: Some(latest),
        since: Some(done),
    }
}

fn judge_external(
    rt: &ImageRuntime,
    delay: Duration,
    running: Option<&str>,
    now: Timestamp,
) -> Judged {
    let delay = SignedDuration::try_from(delay).unwrap_or(SignedDuration::MAX);
    let matured_at = |u: &crate::runtime::Update| {
        let ripe = u.discovered_at.checked_add(delay).unwrap_or(Timestamp::MAX);
        match &u.expedited {
            Some(mark) => ripe.min(mark.at),
            None => ripe,
        }
    };
    let current = rt.current.as_ref().map(|c| c.digest.as_str());
    let position = running.and_then(|r| rt.updates.iter().position(|u| u.digest.as_str() == r));
    let newer: Vec<_> = match (running, position) {
        (None, _) => rt.updates.iter().collect(),
        (Some(_), Some(p)) => rt.updates[p + 1..].iter().collect(),
        // Not in the history: the baseline when it is the current digest, else unknown
        // age, so any matured update is newer.
        (Some(r), None) if Some(r) == current => Vec::new(),
        (Some(_), None) => rt.updates.iter().collect(),
    };
    let matured: Vec<_> = newer
        .into_iter()
        .filter(|u| Some(u.digest.as_str()) != running)
        .filter(|u| !rt.is_blocked(&u.digest))
        .filter(|u| matured_at(u) <= now)
        .collect();
    let newest_matured = rt
        .updates
        .iter()
        .rev()
        .filter(|u| !rt.is_blocked(&u.digest) && matured_at(u) <= now)
        .map(|u| u.digest.to_string())
        .next();
    let latest = newest_matured.or_else(|| current.map(str::to_string));
    let Some(running) = running else {
        return Judged {
            verdict: Verdict::Unknown,
            latest,
            since: None,
        };
    };
    if let Some(since) = matured.iter().map(|u| matured_at(u)).min() {
        return Judged {
            verdict: Verdict::Stale,
            latest: matured.last().map(|u| u.digest.to_string()).or(latest),
            since: Some(since),
        };
    }
    let seen = position.is_some() || Some(running) == current;
    Judged {
        verdict: if seen {
            Verdict::Current
        } else {
            Verdict::Unknown
        },
        latest,
        since: None,
    }
}
