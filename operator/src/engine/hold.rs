//! Holds: when an update may be used by a dependent, and which rebuild a managed image
//! wants now — newest matured, unblocked update of every base (DESIGN.md, "Hold
//! semantics"; Renovate's minimum-release-age idea).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::Engine;
use crate::runtime::{
    Cause, Digest, PinnedBase, Rebuild, RebuildId, Update, UpdateRef, UpdateSource,
};

/// `t + d`, saturating at the end of time instead of overflowing.
pub(super) fn later(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// The rebuild a managed image wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Desired {
    pub id: RebuildId,
    pub bases: Vec<PinnedBase>,
    pub cause: Cause,
    /// When every base with a pending update has at least one matured: the rebuild is
    /// once, after the last of them.
    pub due: Timestamp,
    /// The hold that set `due` (for the plan).
    pub hold: Duration,
}

impl Engine {
    /// The hold an update of base `b` gets before dependent `x` uses it: the parent's
    /// rebuild gives `x`'s `cascadeDelay`, anything else `x`'s `hold_for(b)`.
    pub(super) fn hold_of(&self, x: usize, b: usize, update: &Update) -> Duration {
        let policy = &self.nodes[x].policy;
        match update.source {
            UpdateSource::Rebuild { .. } => policy.cascade_delay,
            _ => policy.hold_for(&self.nodes[b].policy),
        }
    }

    /// When `x` may use `update` of base `b`: discovered-at + hold, or when a person
    /// expedited it.
    pub(super) fn mature_at(&self, x: usize, b: usize, update: &Update) -> Timestamp {
        let ripe = later(update.discovered_at, self.hold_of(x, b, update));
        match &update.expedited {
            Some(mark) => ripe.min(mark.at),
            None => ripe,
        }
    }

    /// The first update of base `b` that `x` is not built on yet: after the digest its
    /// last successful rebuild pinned, else after the time `x` was last built or seen.
    pub(super) fn pending_start(&self, x: usize, b: usize, success: Option<&Rebuild>) -> usize {
        let base = &self.runtime[b];
        let name = &self.nodes[b].name;
        let built_on = success
            .and_then(|r| r.bases.iter().find(|p| &p.image == name))
            .and_then(PinnedBase::digest);
        if let Some(digest) = built_on {
            if let Some(pos) = base
                .updates
                .iter()
                .position(|u| u.digest.as_str() == digest)
            {
                return pos + 1;
            }
        }
        let rt = &self.runtime[x];
        let since = success
            .and_then(|r| r.attempts.last())
            .and_then(|a| a.finished_at)
            .or_else(|| rt.current.as_ref().map(|c| c.first_seen));
        // Strictly before: an update discovered in the same second as the dependent's
        // baseline may be newer than it (records have whole seconds), and a spare
        // rebuild is cheaper than a missed one.
        match since {
            Some(t) => base.updates.partition_point(|u| u.discovered_at < t),
            None => 0,
        }
    }

    /// The rebuild managed image `x` wants at `now`, or `None` when no base has an
    /// update it is not built on. Never pins an unmatured, blocked or rejected (signature
    /// not verified under `verify.mode: enforce`) update.
    pub(super) fn desired(&self, x: usize, now: Timestamp) -> Option<Desired> {
        let node = &self.nodes[x];
        let success = self.runtime[x].last_success();
        let mut due: Option<(Timestamp, Duration)> = None;
        let mut starts = Vec::with_capacity(node.bases.len());
        for link in &node.bases {
            let base = &self.runtime[link.node];
            let start = if link.pins.is_empty() {
                self.pending_start(x, link.node, success)
            } else {
                base.updates.len()
            };
            starts.push(start);
            let earliest = base.updates[start..]
                .iter()
                .filter(|u| !base.is_blocked(&u.digest) && !u.is_rejected())
                .map(|u| {
                    (
                        self.mature_at(x, link.node, u),
                        self.hold_of(x, link.node, u),
                    )
                })
                .min_by_key(|(t, _)| *t);
            if let Some(e) = earliest {
                if due.is_none_or(|d| e.0 >= d.0) {
                    due = Some(e);
                }
            }
        }
        let (due, hold) = due?;
        let at = due.max(now);
        let mut bases = Vec::with_capacity(node.bases.len());
        let mut cause = Cause::default();
        for (link, &start) in node.bases.iter().zip(&starts) {
            let b = &self.nodes[link.node];
            let base = &self.runtime[link.node];
            if !link.pins.is_empty() {
                for pin in &link.pins {
                    bases.push(PinnedBase {
                        image: b.name.clone(),
                        pinned: format!("{}@{pin}", b.reference),
                    });
                }
                continue;
            }
            let chosen = base.updates.iter().enumerate().rev().find(|(_, u)| {
                !base.is_blocked(&u.digest)
                    && !u.is_rejected()
                    && self.mature_at(x, link.node, u) <= at
            });
            let digest: Option<Digest> = match chosen {
                Some((pos, u)) => {
                    if pos >= start {
                        cause.updates.push(UpdateRef {
                            image: b.name.clone(),
                            reference: b.reference.clone(),
                            digest: u.digest.clone(),
                        });
                        if let UpdateSource::Rebuild { id } = &u.source {
                            cause.parents.push(id.clone());
                        }
                    }
                    Some(u.digest.clone())
                }
                None => self.baseline(link.node, success),
            };
            bases.push(PinnedBase::new(&b.name, &b.reference, digest.as_ref()));
        }
        if cause.updates.is_empty() {
            return None;
        }
        cause.parents.sort();
        cause.parents.dedup();
        let pinned: Vec<String> = bases.iter().map(|b| b.pinned.clone()).collect();
        Some(Desired {
            id: RebuildId::derive(&node.name, &node.reference, &pinned),
            bases,
            cause,
            due,
            hold,
        })
    }

    /// The digest of base `b` to pin when none of its updates has matured: the one the
    /// last successful rebuild used, else the observed one that predates the history;
    /// never a blocked one.
    fn baseline(&self, b: usize, success: Option<&Rebuild>) -> Option<Digest> {
        let base = &self.runtime[b];
        let name = &self.nodes[b].name;
        let built_on = success
            .and_then(|r| r.bases.iter().find(|p| &p.image == name))
            .and_then(PinnedBase::digest)
            .and_then(|d| Digest::parse(d).ok());
        let observed = base
            .current
            .as_ref()
            .map(|c| &c.digest)
            .filter(|d| base.update(d).is_none())
            .cloned();
        built_on.or(observed).filter(|d| !base.is_blocked(d))
    }
}
