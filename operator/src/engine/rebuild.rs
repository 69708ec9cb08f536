//! Rebuilds: moving each managed image's open rebuild towards the one it wants, in
//! topological order (cascade), and the outcomes of builds (retries, give-up).

use jiff::Timestamp;

use super::hold::{later, Desired};
use super::{Decision, Engine, Outcome, Shadow, Signal, Trigger};
use crate::runtime::{
    Attempt, AttemptOutcome, Digest, ImageRuntime, Mark, Observed, Phase, Rebuild, RebuildId,
    Update, UpdateSource,
};

/// The rebuild that says what state the image is in: the last one that was not
/// replaced (Superseded, or Skipped because a base digest was blocked).
fn latest(rt: &ImageRuntime) -> Option<&Rebuild> {
    rt.rebuilds
        .iter()
        .rev()
        .find(|r| r.is_open() || !matches!(r.phase, Phase::Superseded | Phase::Skipped))
}

impl Engine {
    /// Recomputes every dirty image, in topological order; an image whose state, as
    /// its dependents see it, changed makes them dirty too.
    pub(super) fn reconcile(&mut self, now: Timestamp, out: &mut Vec<Decision>) {
        while let Some(i) = self.dirty.pop_first() {
            self.shadow[i] = self.compute_shadow(i);
            if self.nodes[i].managed {
                self.plan_image(i, now, out);
            }
            self.refresh_due(i);
            let signal = self.compute_signal(i);
            if signal != self.signal[i] {
                self.signal[i] = signal;
                self.dirty.extend(self.nodes[i].dependents.iter().copied());
            }
        }
    }

    fn compute_signal(&self, i: usize) -> Signal {
        let last = latest(&self.runtime[i]);
        Signal {
            open: last.is_some_and(Rebuild::is_open),
            in_flight: last.is_some_and(|r| r.phase.is_in_flight()),
            updates: self.runtime[i].updates.len(),
            failed: last
                .filter(|r| r.phase == Phase::Failed)
                .map(|r| r.id.clone()),
            shadow_failed: match &self.shadow[i] {
                Some(Shadow::Failed { id, .. }) => Some(id.clone()),
                _ => None,
            },
            shadow_pending: match self.shadow[i] {
                Some(Shadow::Pending { in_flight, .. }) => Some(in_flight),
                _ => None,
            },
        }
    }

    /// Whether an ancestor keeps image `i` from being planned: a failed rebuild holds
    /// its subtree back; an open one will cascade into it, so it waits for the last —
    /// unless `i` already has a new digest of that parent to pick up and the parent's
    /// rebuild is only Waiting (held for a newer base): then `i` goes ahead on the
    /// parent's new digest, or a base that changes more often than its hold would keep
    /// every grandchild waiting forever. A rebuild in flight is always waited for.
    fn compute_shadow(&self, i: usize) -> Option<Shadow> {
        let mut pending = None;
        let success = self.runtime[i].last_success();
        for link in self.nodes[i].bases.iter().filter(|l| l.pins.is_empty()) {
            let p = link.node;
            if !self.nodes[p].managed {
                continue;
            }
            let fresh = self.pending_start(i, p, success) < self.runtime[p].updates.len();
            match &self.shadow[p] {
                Some(failed @ Shadow::Failed { .. }) => return Some(failed.clone()),
                Some(Shadow::Pending {
                    ancestor,
                    in_flight,
                }) if *in_flight || !fresh => {
                    let shadow = Shadow::Pending {
                        ancestor: *ancestor,
                        in_flight: *in_flight,
                    };
                    merge(&mut pending, shadow);
                }
                _ => {}
            }
            if let Some(r) = latest(&self.runtime[p]) {
                if r.phase == Phase::Failed {
                    return Some(Shadow::Failed {
                        ancestor: p,
                        id: r.id.clone(),
                    });
                }
                let in_flight = r.phase.is_in_flight();
                if in_flight || (r.is_open() && !fresh) {
                    merge(
                        &mut pending,
                        Shadow::Pending {
                            ancestor: p,
                            in_flight,
                        },
                    );
                }
            }
        }
        pending
    }

    fn refresh_due(&mut self, i: usize) {
        let want = if self.shadow[i].is_none() {
            self.runtime[i]
                .open_rebuild()
                .filter(|r| r.phase == Phase::Waiting)
                .map(|r| r.due_at)
        } else {
            None
        };
        if self.due_of[i] != want {
            if let Some(old) = self.due_of[i] {
                self.dues.remove(&(old, i));
            }
            if let Some(new) = want {
                self.dues.insert((new, i));
            }
            self.due_of[i] = want;
        }
    }

    /// Moves managed image `i` towards the rebuild it wants now.
    fn plan_image(&mut self, i: usize, now: Timestamp, out: &mut Vec<Decision>) {
        let open = self.runtime[i].rebuilds.iter().rposition(Rebuild::is_open);
        if open.is_some_and(|k| self.runtime[i].rebuilds[k].phase.is_in_flight()) {
            return;
        }
        if let Some(shadow) = self.shadow[i].clone() {
            if let (Shadow::Failed { ancestor, id }, Some(k)) = (shadow, open) {
                let reason = format!(
                    "held back: rebuild {id} of {} failed",
                    self.nodes[ancestor].name
                );
                let rec = &mut self.runtime[i].rebuilds[k];
                if rec.reason.as_deref() != Some(reason.as_str()) {
                    rec.reason = Some(reason.clone());
                    out.push(Decision::HeldBack {
                        image: self.nodes[i].name.clone(),
                        id: rec.id.clone(),
                        reason,
                    });
                    self.changed.insert(i);
                }
            }
            return;
        }
        let Some(desired) = self.desired(i, now) else {
            if let Some(k) = open {
                self.close(i, k, None, out);
            }
            return;
        };
        let existing = self.runtime[i]
            .rebuilds
            .iter()
            .position(|r| r.id == desired.id);
        let k = match existing {
            Some(k)
                if matches!(
                    self.runtime[i].rebuilds[k].phase,
                    Phase::Succeeded | Phase::Failed
                ) =>
            {
                // Built (or given up) on exactly these bases already: never twice.
                if let Some(o) = open.filter(|&o| o != k) {
                    self.close(i, o, None, out);
                }
                return;
            }
            Some(k) if self.runtime[i].rebuilds[k].is_open() => {
                self.move_due(i, k, &desired, now, out);
                k
            }
            _ => {
                if let Some(o) = open {
                    self.close(i, o, Some(&desired.id), out);
                }
                self.open_rebuild(i, existing, desired, now, out)
            }
        };
        if self.runtime[i].rebuilds[k].due_at <= now {
            self.start(i, k, now, out);
        }
    }

    /// Keeps an open rebuild's due time in step with its hold; a retry keeps its backoff.
    fn move_due(
        &mut self,
        i: usize,
        k: usize,
        desired: &Desired,
        now: Timestamp,
        out: &mut Vec<Decision>,
    ) {
        let rec = &mut self.runtime[i].rebuilds[k];
        let due = if rec.attempts.is_empty() {
            desired.due
        } else {
            desired.due.max(rec.due_at)
        };
        if due != rec.due_at {
            rec.due_at = due;
            rec.reason = Some(format!("held until {due:.0}"));
            self.changed.insert(i);
            if due > now {
                out.push(Decision::Hold {
                    image: self.nodes[i].name.clone(),
                    id: rec.id.clone(),
                    due_at: due,
                });
            }
        }
    }

    /// Records a Waiting rebuild for `desired` (reusing a replaced record of the same
    /// id, so ids stay unique in the file); returns its index.
    fn open_rebuild(
        &mut self,
        i: usize,
        existing: Option<usize>,
        desired: Desired,
        now: Timestamp,
        out: &mut Vec<Decision>,
    ) -> usize {
        let needs_approval = !self.nodes[i].policy.auto_rebuild;
        let reason = Some(format!("held until {:.0}", desired.due));
        let rec = match existing {
            Some(k) => {
                let mut rec = self.runtime[i].rebuilds.remove(k);
                rec.phase = Phase::Waiting;
                rec.reason = reason;
                rec.due_at = desired.due;
                rec.cause = desired.cause;
                rec.bases = desired.bases;
                rec.needs_approval = needs_approval;
                rec
            }
            None => Rebuild {
                id: desired.id,
                cause: desired.cause,
                bases: desired.bases,
                phase: Phase::Waiting,
                reason,
                created_at: now,
                due_at: desired.due,
                needs_approval,
                approved: None,
                retried: Vec::new(),
                attempts: Vec::new(),
                trigger: None,
                digest: None,
            },
        };
        if rec.due_at > now {
            out.push(Decision::Hold {
                image: self.nodes[i].name.clone(),
                id: rec.id.clone(),
                due_at: rec.due_at,
            });
        }
        self.owner.insert(rec.id.clone(), i);
        self.runtime[i].rebuilds.push(rec);
        self.changed.insert(i);
        self.trim(i);
        self.runtime[i].rebuilds.len() - 1
    }

    /// Drops open rebuild `k` of image `i` before it started: Skipped when a base
    /// digest it pins is now blocked, else Superseded (by `by`, when replaced).
    fn close(&mut self, i: usize, k: usize, by: Option<&RebuildId>, out: &mut Vec<Decision>) {
        let blocked: Vec<String> = self.runtime[i].rebuilds[k]
            .bases
            .iter()
            .filter(|b| {
                let digest = b.digest().and_then(|d| Digest::parse(d).ok());
                let base = self.index.get(&b.image).map(|&n| &self.runtime[n]);
                matches!((digest, base), (Some(d), Some(rt)) if rt.is_blocked(&d))
            })
            .map(|b| b.pinned.clone())
            .collect();
        let rec = &mut self.runtime[i].rebuilds[k];
        let reason = if blocked.is_empty() {
            rec.phase = Phase::Superseded;
            match by {
                Some(id) => format!("superseded by {id}"),
                None => "no longer needed".to_string(),
            }
        } else {
            rec.phase = Phase::Skipped;
            rec.needs_approval = false;
            format!("base digest blocked: {}", blocked.join(", "))
        };
        rec.reason = Some(reason.clone());
        out.push(Decision::Supersede {
            image: self.nodes[i].name.clone(),
            id: rec.id.clone(),
            by: by.cloned(),
            reason,
        });
        self.changed.insert(i);
    }

    /// Starts rebuild `k` of image `i`: records the attempt as Triggered, then asks
    /// the caller to call the trigger; or, without approval, records "update available".
    fn start(&mut self, i: usize, k: usize, now: Timestamp, out: &mut Vec<Decision>) {
        let node = &self.nodes[i];
        let rec = &mut self.runtime[i].rebuilds[k];
        if rec.needs_approval && rec.approved.is_none() {
            if rec.phase != Phase::Skipped {
                rec.phase = Phase::Skipped;
                rec.reason = Some(format!(
                    "update available; autoRebuild is off: approve with `image-factory approve {}`",
                    rec.id
                ));
                out.push(Decision::AwaitApproval {
                    image: node.name.clone(),
                    id: rec.id.clone(),
                });
                self.changed.insert(i);
            }
            return;
        }
        let attempt = u32::try_from(rec.attempts.len() + 1).unwrap_or(u32::MAX);
        rec.phase = Phase::Triggered;
        rec.reason = Some(format!("attempt {attempt} triggered"));
        rec.attempts.push(Attempt {
            number: attempt,
            triggered_at: now,
            finished_at: None,
            outcome: None,
            reason: None,
            log: None,
        });
        out.push(Decision::Trigger(Trigger {
            id: rec.id.clone(),
            image: node.name.clone(),
            reference: node.reference.clone(),
            attempt,
            bases: rec.bases.clone(),
            cause: rec.cause.clone(),
        }));
        self.changed.insert(i);
    }

    pub(super) fn running(&mut self, id: &RebuildId, trigger: String, out: &mut Vec<Decision>) {
        let Some(i) = self.find_rebuild(id, out) else {
            return;
        };
        let image = self.nodes[i].name.clone();
        let Some(rec) = self.runtime[i].rebuild_mut(id) else {
            return;
        };
        if rec.phase != Phase::Triggered {
            out.push(Decision::Ignored {
                reason: format!("rebuild {id} is {}, not Triggered", rec.phase),
            });
            return;
        }
        rec.phase = Phase::Running;
        rec.trigger = Some(trigger);
        rec.reason = Some("running".to_string());
        out.push(Decision::Running {
            image,
            id: id.clone(),
        });
        self.changed.insert(i);
    }

    pub(super) fn outcome(
        &mut self,
        id: &RebuildId,
        outcome: Outcome,
        now: Timestamp,
        out: &mut Vec<Decision>,
    ) {
        let Some(i) = self.find_rebuild(id, out) else {
            return;
        };
        let Some(k) = self.runtime[i].rebuilds.iter().position(|r| &r.id == id) else {
            return;
        };
        let phase = self.runtime[i].rebuilds[k].phase;
        if !phase.is_in_flight() {
            out.push(Decision::Ignored {
                reason: format!("rebuild {id} is {phase}, not in flight: outcome ignored"),
            });
            return;
        }
        match outcome {
            Outcome::Success {
                digest,
                base_digests,
            } => match self.foreign_base(i, k, &base_digests) {
                Some(bad) => {
                    let reason = format!("built on {bad}, not on the pinned bases");
                    self.fail(i, k, reason, None, now, out);
                }
                None => self.succeed(i, k, digest, now, out),
            },
            Outcome::Failure { reason, log } => self.fail(i, k, reason, log, now, out),
        }
        self.changed.insert(i);
        self.dirty.insert(i);
    }

    /// A base digest observed in the result that is neither pinned nor a platform
    /// manifest of a pinned base (DESIGN.md: "Completion is verified, not assumed").
    fn foreign_base(&self, i: usize, k: usize, observed: &[Digest]) -> Option<Digest> {
        let rec = &self.runtime[i].rebuilds[k];
        let mut allowed: Vec<&str> = Vec::new();
        for b in &rec.bases {
            let Some(d) = b.digest() else { continue };
            allowed.push(d);
            let Some(&n) = self.index.get(&b.image) else {
                continue;
            };
            let rt = &self.runtime[n];
            let platforms = rt
                .updates
                .iter()
                .find(|u| u.digest.as_str() == d)
                .map(|u| &u.platforms)
                .into_iter()
                .chain(
                    rt.current
                        .iter()
                        .filter(|c| c.digest.as_str() == d)
                        .map(|c| &c.platforms),
                );
            for p in platforms {
                allowed.extend(p.values().map(Digest::as_str));
            }
        }
        observed
            .iter()
            .find(|d| !allowed.contains(&d.as_str()))
            .cloned()
    }

    fn finish_attempt(
        rec: &mut Rebuild,
        outcome: AttemptOutcome,
        reason: Option<String>,
        now: Timestamp,
    ) {
        if let Some(a) = rec.attempts.last_mut() {
            a.finished_at = Some(now);
            a.outcome = Some(outcome);
            a.reason = reason;
        }
    }

    fn succeed(
        &mut self,
        i: usize,
        k: usize,
        digest: Digest,
        now: Timestamp,
        out: &mut Vec<Decision>,
    ) {
        let node = &self.nodes[i];
        let rt = &mut self.runtime[i];
        let rec = &mut rt.rebuilds[k];
        Self::finish_attempt(rec, AttemptOutcome::Succeeded, None, now);
        rec.phase = Phase::Succeeded;
        rec.reason = None;
        rec.digest = Some(digest.clone());
        let id = rec.id.clone();
        rt.current = Some(Observed {
            tag: node.tag.clone(),
            digest: digest.clone(),
            platforms: Default::default(),
            first_seen: now,
        });
        let cascade: Vec<String> = if rt.update(&digest).is_some() {
            // The same digest as before (a reproducible build): nothing to cascade.
            Vec::new()
        } else {
            rt.insert_update(Update {
                digest: digest.clone(),
                tag: node.tag.clone(),
                platforms: Default::default(),
                discovered_at: now,
                source: UpdateSource::Rebuild { id: id.clone() },
                superseded_by: None,
                expedited: None,
                signature: None,
            });
            node.dependents
                .iter()
                .filter(|&&d| {
                    self.nodes[d].managed
                        && self.nodes[d]
                            .bases
                            .iter()
                            .any(|l| l.node == i && l.pins.is_empty())
                })
                .map(|&d| self.nodes[d].name.clone())
                .collect()
        };
        out.push(Decision::Succeeded {
            image: node.name.clone(),
            id,
            digest,
            cascade,
        });
        self.trim(i);
        self.touch_dependents(i);
    }

    fn fail(
        &mut self,
        i: usize,
        k: usize,
        reason: String,
        log: Option<String>,
        now: Timestamp,
        out: &mut Vec<Decision>,
    ) {
        let name = self.nodes[i].name.clone();
        let max = self.config.max_attempts_of(&name);
        let rec = &mut self.runtime[i].rebuilds[k];
        Self::finish_attempt(rec, AttemptOutcome::Failed, Some(reason.clone()), now);
        if let Some(a) = rec.attempts.last_mut() {
            a.log = log.map(|l| crate::trigger::tail(l.as_bytes(), super::RECORD_LOG_BYTES));
        }
        let used = rec.attempts_in_budget();
        let id = rec.id.clone();
        if used < max {
            let due = later(now, self.config.backoff(used));
            rec.phase = Phase::Waiting;
            rec.due_at = due;
            rec.reason = Some(format!(
                "attempt {used} of {max} failed: {reason}; next attempt at {due:.0}"
            ));
            out.push(Decision::RetryScheduled {
                image: name,
                id,
                failed_attempt: used,
                due_at: due,
                reason,
            });
        } else {
            rec.phase = Phase::Failed;
            rec.reason = Some(format!("failed after {used} attempts: {reason}"));
            let held_back = self.descendants(i);
            out.push(Decision::GiveUp {
                image: name,
                id,
                reason,
                held_back,
            });
        }
    }

    /// Managed images below `i`, sorted by name.
    fn descendants(&self, i: usize) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut stack = vec![i];
        while let Some(n) = stack.pop() {
            for &d in &self.nodes[n].dependents {
                if seen.insert(d) {
                    stack.push(d);
                }
            }
        }
        let mut names: Vec<String> = seen
            .into_iter()
            .filter(|&d| self.nodes[d].managed)
            .map(|d| self.nodes[d].name.clone())
            .collect();
        names.sort();
        names
    }

    pub(super) fn retry(
        &mut self,
        id: &RebuildId,
        mark: Mark,
        now: Timestamp,
        out: &mut Vec<Decision>,
    ) {
        let Some(i) = self.find_rebuild(id, out) else {
            return;
        };
        let image = self.nodes[i].name.clone();
        let Some(rec) = self.runtime[i].rebuild_mut(id) else {
            return;
        };
        if rec.phase != Phase::Failed {
            out.push(Decision::Ignored {
                reason: format!(
                    "rebuild {id} is {}, not Failed: nothing to retry",
                    rec.phase
                ),
            });
            return;
        }
        rec.phase = Phase::Waiting;
        rec.due_at = now;
        rec.reason = Some(format!("retry requested by {}: {}", mark.by, mark.reason));
        rec.retried.push(mark);
        out.push(Decision::Marked {
            image,
            action: "retry",
            target: id.to_string(),
        });
        self.changed.insert(i);
        self.dirty.insert(i);
    }

    pub(super) fn approve(&mut self, id: &RebuildId, mark: Mark, out: &mut Vec<Decision>) {
        let Some(i) = self.find_rebuild(id, out) else {
            return;
        };
        let image = self.nodes[i].name.clone();
        let Some(rec) = self.runtime[i].rebuild_mut(id) else {
            return;
        };
        if !rec.is_open() || !rec.needs_approval || rec.approved.is_some() {
            out.push(Decision::Ignored {
                reason: format!(
                    "rebuild {id} is {} and does not wait for approval",
                    rec.phase
                ),
            });
            return;
        }
        rec.approved = Some(mark);
        if rec.phase == Phase::Skipped {
            rec.phase = Phase::Waiting;
            rec.reason = Some("approved".to_string());
        }
        out.push(Decision::Marked {
            image,
            action: "approve",
            target: id.to_string(),
        });
        self.changed.insert(i);
        self.dirty.insert(i);
    }
}

/// Keeps the first pending shadow, but one in flight wins over one that only waits (so
/// a descendant that has a fresh digest of the waiting one still waits for the build).
fn merge(pending: &mut Option<Shadow>, new: Shadow) {
    let replace = matches!(
        (&*pending, &new),
        (None, _)
            | (
                Some(Shadow::Pending {
                    in_flight: false,
                    ..
                }),
                Shadow::Pending {
                    in_flight: true,
                    ..
                },
            )
    );
    if replace {
        *pending = Some(new);
    }
}
