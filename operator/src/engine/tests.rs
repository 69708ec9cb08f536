//! Every rule of the engine as a named case, with a fake clock (`now` passed in).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::graph::{Graph, Use};
use crate::reference::Reference;
use crate::runtime::Phase;

const HOUR: i64 = 3600;
const DAY: i64 = 86400;

/// Test graphs: external images and managed images with their `FROM`s.
#[derive(Default)]
pub(super) struct World {
    yaml: String,
    refs: BTreeMap<String, String>,
    uses: BTreeMap<String, Vec<Use>>,
}

impl World {
    pub(super) fn new() -> Self {
        Self {
            yaml: "version: 1\nimages:\n".to_string(),
            ..Self::default()
        }
    }

    /// An external image `name` (`image` reference) with `rebuild` settings (`""` or a
    /// flow mapping such as `{delay: 3d}`).
    pub(super) fn external(mut self, name: &str, image: &str, rebuild: &str) -> Self {
        let rebuild = if rebuild.is_empty() {
            String::new()
        } else {
            format!(", rebuild: {rebuild}")
        };
        self.yaml.push_str(&format!(
            "  - {{name: {name}, image: '{image}'{rebuild}}}\n"
        ));
        self.refs.insert(name.to_string(), image.to_string());
        self
    }

    /// A managed image built `from` other images of the world (by name; `name@digest`
    /// pins one).
    pub(super) fn managed(mut self, name: &str, rebuild: &str, from: &[&str]) -> Self {
        let image = format!("registry.example.com/team/{name}:1");
        let rebuild = if rebuild.is_empty() {
            String::new()
        } else {
            format!(", rebuild: {rebuild}")
        };
        self.yaml.push_str(&format!(
            "  - {{name: {name}, image: '{image}', source: {{path: .}}{rebuild}}}\n"
        ));
        self.refs.insert(name.to_string(), image);
        let list = from
            .iter()
            .map(|f| {
                let (base, pin) = match f.split_once('@') {
                    Some((b, p)) => (b, Some(p)),
                    None => (*f, None),
                };
                let mut text = self.refs[base].clone();
                if let Some(p) = pin {
                    text = format!("{text}@{p}");
                }
                Use {
                    reference: Reference::parse(&text).unwrap(),
                    via: "from".to_string(),
                }
            })
            .collect();
        self.uses.insert(name.to_string(), list);
        self
    }

    pub(super) fn graph(&self) -> Graph {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/graph/testdata");
        let enrollment = crate::enrollment::parse("images.yaml", &self.yaml, &dir).unwrap();
        Graph::build(&enrollment, &self.uses)
    }

    pub(super) fn engine(&self) -> Engine {
        Engine::new(&self.graph(), BTreeMap::new(), EngineConfig::default()).unwrap()
    }
}

pub(super) fn t0() -> Timestamp {
    Timestamp::from_second(1_790_000_000).unwrap()
}

/// `t0 + seconds`.
pub(super) fn at(seconds: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(seconds)
}

/// A digest named by a number.
pub(super) fn digest(n: u64) -> Digest {
    Digest::sha256_of(n.to_string().as_bytes())
}

pub(super) fn update(image: &str, n: u64, discovered: Timestamp) -> Event {
    Event::Update {
        image: image.to_string(),
        tag: "tag".to_string(),
        digest: digest(n),
        platforms: BTreeMap::new(),
        discovered_at: discovered,
        source: UpdateSource::Watcher,
        signature: None,
    }
}

pub(super) fn triggers(decisions: &[Decision]) -> Vec<Trigger> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Trigger(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

fn only_trigger(decisions: &[Decision]) -> Trigger {
    let t = triggers(decisions);
    assert_eq!(t.len(), 1, "{decisions:#?}");
    t[0].clone()
}

fn success(id: &RebuildId, n: u64) -> Event {
    Event::Outcome {
        id: id.clone(),
        outcome: Outcome::Success {
            digest: digest(n),
            base_digests: vec![],
        },
    }
}

fn failure(id: &RebuildId) -> Event {
    Event::Outcome {
        id: id.clone(),
        outcome: Outcome::Failure {
            reason: "exit status 1".to_string(),
            log: None,
        },
    }
}

fn pinned_digest(t: &Trigger, base: &str) -> Option<String> {
    t.bases
        .iter()
        .find(|b| b.image == base)
        .and_then(|b| b.digest().map(str::to_string))
}

fn phase_of(engine: &Engine, image: &str, id: &RebuildId) -> Phase {
    engine.runtime(image).unwrap().rebuild(id).unwrap().phase
}

fn python_app() -> World {
    World::new()
        .external("python", "python:3.12", "{delay: 7d}")
        .managed("app", "", &["python"])
}

#[test]
fn an_update_is_held_until_discovered_at_plus_delay() {
    let mut e = python_app().engine();
    let out = e.apply(update("python", 1, t0()), t0());
    assert!(triggers(&out).is_empty(), "{out:#?}");
    assert!(matches!(&out[..], [.., Decision::Hold { due_at, .. }] if *due_at == at(7 * DAY)));
    assert_eq!(e.next_wakeup(), Some(at(7 * DAY)));
    assert!(triggers(&e.tick(at(7 * DAY - 1))).is_empty());
    let t = only_trigger(&e.tick(at(7 * DAY)));
    assert_eq!(t.image, "app");
    assert_eq!(t.attempt, 1);
    assert_eq!(
        t.bases[0].pinned,
        format!("docker.io/library/python:3.12@{}", digest(1))
    );
    assert_eq!(phase_of(&e, "app", &t.id), Phase::Triggered);
    assert_eq!(
        e.take_changed(),
        BTreeSet::from(["app".to_string(), "python".to_string()])
    );
}

#[test]
fn a_daily_base_does_not_starve_its_dependents() {
    let mut e = python_app().engine();
    let mut built_on = Vec::new();
    for day in 0..14 {
        let now = at(day * DAY);
        let mut out = e.apply(update("python", day as u64, now), now);
        out.extend(e.tick(now));
        for t in triggers(&out) {
            built_on.push((day, pinned_digest(&t, "python").unwrap()));
            e.apply(success(&t.id, 1000 + day as u64), now);
        }
    }
    // Day 7 builds on day 0's update, day 8 on day 1's…: never on a younger one.
    let expected: Vec<(i64, String)> = (7..14)
        .map(|d| (d, digest((d - 7) as u64).to_string()))
        .collect();
    assert_eq!(built_on, expected);
}

#[test]
fn an_engine_that_slept_builds_on_the_newest_matured_update_only() {
    let mut e = python_app().engine();
    for day in 0..5 {
        e.apply(
            update("python", day, at(day as i64 * DAY)),
            at(day as i64 * DAY),
        );
    }
    // Woken at day 9.5: updates of days 0–2 have matured, days 3–4 have not.
    let t = only_trigger(&e.tick(at(9 * DAY + 12 * HOUR)));
    assert_eq!(pinned_digest(&t, "python").unwrap(), digest(2).to_string());
    assert_eq!(t.cause.updates.len(), 1);
}

#[test]
fn a_newer_update_supersedes_a_held_older_one_and_history_keeps_both() {
    let mut e = python_app().engine();
    e.apply(update("python", 1, t0()), t0());
    let out = e.apply(update("python", 2, at(DAY)), at(DAY));
    assert!(
        out.iter().any(
            |d| matches!(d, Decision::Recorded { superseded, .. } if superseded == &[digest(1)])
        ),
        "{out:#?}"
    );
    let history = &e.runtime("python").unwrap().updates;
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].superseded_by, Some(digest(2)));
    assert_eq!(history[1].superseded_by, None);
    assert_eq!(
        e.runtime("python")
            .unwrap()
            .current
            .as_ref()
            .unwrap()
            .digest,
        digest(2)
    );
}

#[test]
fn a_waiting_rebuild_is_superseded_when_a_newer_update_is_expedited() {
    let mut e = python_app().engine();
    e.apply(update("python", 1, t0()), t0());
    let first = e.runtime("app").unwrap().open_rebuild().unwrap().id.clone();
    e.apply(update("python", 2, at(DAY)), at(DAY));
    let out = e.apply(
        Event::Expedite {
            image: "python".into(),
            digest: Some(digest(2)),
            by: "alice".into(),
            reason: "CVE-2026-0001".into(),
        },
        at(2 * DAY),
    );
    let t = only_trigger(&out);
    assert_eq!(pinned_digest(&t, "python").unwrap(), digest(2).to_string());
    assert_eq!(phase_of(&e, "app", &first), Phase::Superseded);
    let old = e.runtime("app").unwrap().rebuild(&first).unwrap();
    assert_eq!(
        old.reason.as_deref(),
        Some(format!("superseded by {}", t.id).as_str())
    );
}

#[test]
fn expedite_skips_the_remaining_delay_and_records_who_why_when() {
    let mut e = python_app().engine();
    e.apply(update("python", 1, t0()), t0());
    let out = e.apply(
        Event::Expedite {
            image: "python".into(),
            digest: None,
            by: "alice".into(),
            reason: "CVE-2026-0001".into(),
        },
        at(HOUR),
    );
    let t = only_trigger(&out);
    assert_eq!(pinned_digest(&t, "python").unwrap(), digest(1).to_string());
    let mark = e.runtime("python").unwrap().updates[0]
        .expedited
        .clone()
        .unwrap();
    assert_eq!(
        (mark.by.as_str(), mark.reason.as_str(), mark.at),
        ("alice", "CVE-2026-0001", at(HOUR))
    );
}

#[test]
fn expediting_a_managed_image_expedites_the_updates_it_waits_for() {
    let mut e = python_app().engine();
    e.apply(update("python", 1, t0()), t0());
    let out = e.apply(
        Event::Expedite {
            image: "app".into(),
            digest: None,
            by: "alice".into(),
            reason: "CVE".into(),
        },
        at(HOUR),
    );
    assert_eq!(only_trigger(&out).image, "app");
}

#[test]
fn expediting_a_superseded_update_builds_on_it_now_and_on_the_newer_one_later() {
    let mut e = python_app().engine();
    e.apply(update("python", 1, t0()), t0());
    e.apply(update("python", 2, at(DAY)), at(DAY));
    assert_eq!(
        e.runtime("python").unwrap().updates[0].superseded_by,
        Some(digest(2))
    );
    let out = e.apply(
        Event::Expedite {
            image: "python".into(),
            digest: Some(digest(1)),
            by: "alice".into(),
            reason: "CVE fixed in the first".into(),
        },
        at(2 * DAY),
    );
    let first = only_trigger(&out);
    assert_eq!(
        pinned_digest(&first, "python").unwrap(),
        digest(1).to_string()
    );
    e.apply(success(&first.id, 100), at(2 * DAY));
    assert_eq!(e.next_wakeup(), Some(at(8 * DAY)));
    let second = only_trigger(&e.tick(at(8 * DAY)));
    assert_eq!(
        pinned_digest(&second, "python").unwrap(),
        digest(2).to_string()
    );
}

#[test]
fn a_digest_blocked_mid_hold_is_never_used_and_the_waiting_rebuild_is_replanned() {
    let mut e = python_app().engine();
    e.apply(update("python", 1, t0()), t0());
    e.apply(update("python", 2, at(DAY)), at(DAY));
    let waiting = e.runtime("app").unwrap().open_rebuild().unwrap().id.clone();
    let out = e.apply(
        Event::Block {
            image: "python".into(),
            digest: digest(1),
            by: "bob".into(),
            reason: "breaks TLS".into(),
        },
        at(3 * DAY),
    );
    assert!(
        out.iter()
            .any(|d| matches!(d, Decision::Supersede { id, .. } if id == &waiting)),
        "{out:#?}"
    );
    assert_eq!(phase_of(&e, "app", &waiting), Phase::Skipped);
    assert!(e
        .runtime("app")
        .unwrap()
        .rebuild(&waiting)
        .unwrap()
        .reason
        .as_deref()
        .unwrap()
        .contains("blocked"));
    assert_eq!(e.next_wakeup(), Some(at(8 * DAY)));
    assert!(triggers(&e.tick(at(7 * DAY))).is_empty());
    let t = only_trigger(&e.tick(at(8 * DAY)));
    assert_eq!(pinned_digest(&t, "python").unwrap(), digest(2).to_string());
}

#[test]
fn the_newest_matured_unblocked_update_is_used_when_the_newest_is_blocked() {
    let mut e = python_app().engine();
    e.apply(update("python", 1, t0()), t0());
    e.apply(update("python", 2, at(DAY)), at(DAY));
    e.apply(
        Event::Block {
            image: "python".into(),
            digest: digest(2),
            by: "bob".into(),
            reason: "bad".into(),
        },
        at(DAY),
    );
    // Asleep until both matured: the blocked newer one is skipped over.
    let t = only_trigger(&e.tick(at(10 * DAY)));
    assert_eq!(pinned_digest(&t, "python").unwrap(), digest(1).to_string());
}

#[test]
fn unblock_makes_the_digest_usable_again() {
    let mut e = python_app().engine();
    e.apply(
        Event::Block {
            image: "python".into(),
            digest: digest(1),
            by: "bob".into(),
            reason: "bad".into(),
        },
        t0(),
    );
    e.apply(update("python", 1, t0()), t0());
    assert!(e.runtime("app").unwrap().open_rebuild().is_none());
    assert_eq!(e.next_wakeup(), None);
    let out = e.apply(
        Event::Unblock {
            image: "python".into(),
            digest: digest(1),
        },
        at(DAY),
    );
    assert!(
        out.iter()
            .any(|d| matches!(d, Decision::Hold { due_at, .. } if *due_at == at(7 * DAY))),
        "{out:#?}"
    );
    assert_eq!(only_trigger(&e.tick(at(7 * DAY))).image, "app");
}

#[test]
fn auto_rebuild_off_records_update_available_until_approved() {
    let w = World::new()
        .external("python", "python:3.12", "{delay: 1d}")
        .managed("app", "{autoRebuild: false}", &["python"]);
    let mut e = w.engine();
    e.apply(update("python", 1, t0()), t0());
    let out = e.tick(at(DAY));
    assert!(triggers(&out).is_empty());
    let Some(Decision::AwaitApproval { id, .. }) = out.last() else {
        panic!("{out:#?}")
    };
    let rec = e.runtime("app").unwrap().rebuild(id).unwrap();
    assert_eq!(rec.phase, Phase::Skipped);
    assert!(rec
        .reason
        .as_deref()
        .unwrap()
        .contains("image-factory approve"));
    assert_eq!(
        e.next_wakeup(),
        None,
        "an approval waits for a person, not a clock"
    );
    assert!(triggers(&e.tick(at(30 * DAY))).is_empty());
    let id = id.clone();
    let t = only_trigger(&e.apply(
        Event::Approve {
            id: id.clone(),
            by: "carol".into(),
        },
        at(31 * DAY),
    ));
    assert_eq!(t.id, id);
    let approved = e
        .runtime("app")
        .unwrap()
        .rebuild(&id)
        .unwrap()
        .approved
        .clone()
        .unwrap();
    assert_eq!(approved.by, "carol");
}

#[test]
fn pinned_bases_name_every_base_the_dockerfile_uses() {
    let w = World::new()
        .external("python", "python:3.12", "{delay: 1d}")
        .external("golang", "golang:1.23", "")
        .external("busybox", "busybox:1.36", "")
        .managed("app", "", &["python", "golang", "busybox"]);
    let mut e = w.engine();
    e.apply(
        Event::Observe {
            image: "golang".into(),
            tag: "1.23".into(),
            digest: digest(50),
            platforms: BTreeMap::new(),
        },
        t0(),
    );
    e.apply(update("python", 1, t0()), t0());
    let t = only_trigger(&e.tick(at(DAY)));
    let pinned: Vec<&str> = t.bases.iter().map(|b| b.pinned.as_str()).collect();
    assert_eq!(
        pinned,
        [
            "docker.io/library/busybox:1.36".to_string(),
            format!("docker.io/library/golang:1.23@{}", digest(50)),
            format!("docker.io/library/python:3.12@{}", digest(1)),
        ]
    );
    assert_eq!(t.cause.updates.len(), 1, "only python changed");
}

#[test]
fn a_succeeded_rebuild_cascades_after_the_dependents_cascade_delay() {
    let w = World::new()
        .external("python", "python:3.12", "{delay: 7d}")
        .managed("base", "", &["python"])
        .managed("app", "{cascadeDelay: 2h}", &["base"]);
    let mut e = w.engine();
    e.apply(update("python", 1, t0()), t0());
    assert!(
        e.runtime("app").unwrap().rebuilds.is_empty(),
        "app waits for base"
    );
    let base = only_trigger(&e.tick(at(7 * DAY)));
    let out = e.apply(success(&base.id, 10), at(7 * DAY + HOUR));
    assert!(
        out.iter().any(
            |d| matches!(d, Decision::Succeeded { cascade, .. } if cascade == &["app".to_string()])
        ),
        "{out:#?}"
    );
    assert!(triggers(&out).is_empty());
    assert_eq!(e.next_wakeup(), Some(at(7 * DAY + 3 * HOUR)));
    let app = only_trigger(&e.tick(at(7 * DAY + 3 * HOUR)));
    assert_eq!(pinned_digest(&app, "base").unwrap(), digest(10).to_string());
    assert_eq!(app.cause.parents, std::slice::from_ref(&base.id));
    let history = &e.runtime("base").unwrap().updates;
    assert_eq!(history[0].source, UpdateSource::Rebuild { id: base.id });
}

#[test]
fn a_diamond_rebuilds_once_after_the_last_parent_on_all_new_parents() {
    // python → base → mid → app, and app is also FROM base and python.
    let w = World::new()
        .external("python", "python:3.12", "{delay: 7d}")
        .managed("base", "", &["python"])
        .managed("mid", "", &["base"])
        .managed("app", "", &["base", "mid", "python"]);
    let mut e = w.engine();
    let mut all = e.apply(update("python", 1, t0()), t0());
    let base = only_trigger(&e.tick(at(7 * DAY)));
    let out = e.apply(success(&base.id, 10), at(7 * DAY + HOUR));
    let mid = only_trigger(&out);
    assert_eq!(mid.image, "mid", "app waits for mid: {out:#?}");
    all.extend(out);
    let out = e.apply(success(&mid.id, 20), at(7 * DAY + 2 * HOUR));
    let app = only_trigger(&out);
    assert_eq!(app.image, "app");
    assert_eq!(pinned_digest(&app, "base").unwrap(), digest(10).to_string());
    assert_eq!(pinned_digest(&app, "mid").unwrap(), digest(20).to_string());
    assert_eq!(
        pinned_digest(&app, "python").unwrap(),
        digest(1).to_string()
    );
    assert_eq!(app.cause.parents.len(), 2);
    all.extend(out);
    all.extend(e.apply(success(&app.id, 30), at(7 * DAY + 3 * HOUR)));
    all.extend(e.tick(at(30 * DAY)));
    assert_eq!(
        triggers(&all).iter().filter(|t| t.image == "app").count(),
        1
    );
}

#[test]
fn failures_retry_with_exponential_backoff_then_give_up() {
    let mut e = python_app().engine();
    e.apply(update("python", 1, t0()), t0());
    let t = only_trigger(&e.tick(at(7 * DAY)));
    let start = at(7 * DAY);
    let out = e.apply(failure(&t.id), start);
    assert!(
        matches!(&out[..], [Decision::RetryScheduled { failed_attempt: 1, due_at, .. }] if *due_at == start + SignedDuration::from_secs(60)),
        "{out:#?}"
    );
    assert_eq!(phase_of(&e, "app", &t.id), Phase::Waiting);
    let second = only_trigger(&e.tick(start + SignedDuration::from_secs(60)));
    assert_eq!((second.id.clone(), second.attempt), (t.id.clone(), 2));
    let out = e.apply(failure(&t.id), start + SignedDuration::from_secs(60));
    assert!(
        matches!(&out[..], [Decision::RetryScheduled { due_at, .. }] if *due_at == start + SignedDuration::from_secs(180)),
        "{out:#?}"
    );
    let third = only_trigger(&e.tick(start + SignedDuration::from_secs(180)));
    assert_eq!(third.attempt, 3);
    let out = e.apply(failure(&t.id), start + SignedDuration::from_secs(200));
    assert!(matches!(&out[..], [Decision::GiveUp { .. }]), "{out:#?}");
    let rec = e.runtime("app").unwrap().rebuild(&t.id).unwrap();
    assert_eq!(rec.phase, Phase::Failed);
    assert!(rec
        .reason
        .as_deref()
        .unwrap()
        .contains("failed after 3 attempts: exit status 1"));
    assert_eq!(rec.attempts.len(), 3);
    assert_eq!(e.next_wakeup(), None);
}

#[test]
fn the_backoff_is_capped_and_max_attempts_is_per_image() {
    let config = EngineConfig {
        max_attempts_by_image: BTreeMap::from([("app".to_string(), 1)]),
        ..EngineConfig::default()
    };
    assert_eq!(config.backoff(1), Duration::from_secs(60));
    assert_eq!(config.backoff(3), Duration::from_secs(240));
    assert_eq!(config.backoff(30), Duration::from_secs(3600));
    let mut e = Engine::new(&python_app().graph(), BTreeMap::new(), config).unwrap();
    e.apply(update("python", 1, t0()), t0());
    let t = only_trigger(&e.tick(at(7 * DAY)));
    assert!(matches!(
        &e.apply(failure(&t.id), at(7 * DAY))[..],
        [Decision::GiveUp { .. }]
    ));
}

#[test]
fn a_failed_parent_holds_back_its_subtree_until_retried() {
    let w = World::new()
        .external("python", "python:3.12", "{delay: 1d}")
        .managed("base", "", &["python"])
        .managed("mid", "", &["base"])
        .managed("app", "", &["mid", "python"]);
    let config = EngineConfig {
        max_attempts: 1,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(&w.graph(), BTreeMap::new(), config).unwrap();
    e.apply(update("python", 1, t0()), t0());
    let base = only_trigger(&e.tick(at(DAY)));
    let out = e.apply(failure(&base.id), at(DAY));
    let Some(Decision::GiveUp {
        held_back, image, ..
    }) = out.first()
    else {
        panic!("{out:#?}")
    };
    assert_eq!(image, "base");
    assert_eq!(held_back, &["app".to_string(), "mid".to_string()]);
    assert!(
        triggers(&out).is_empty(),
        "app is also FROM python, but held back: {out:#?}"
    );
    assert!(triggers(&e.tick(at(30 * DAY))).is_empty());
    let out = e.apply(
        Event::Retry {
            id: base.id.clone(),
            by: "dave".into(),
            reason: "registry was down".into(),
        },
        at(31 * DAY),
    );
    let again = only_trigger(&out);
    assert_eq!((again.id.clone(), again.attempt), (base.id.clone(), 2));
    let mid = only_trigger(&e.apply(success(&base.id, 10), at(31 * DAY)));
    assert_eq!(mid.image, "mid");
    let app = only_trigger(&e.apply(success(&mid.id, 20), at(31 * DAY)));
    assert_eq!(app.image, "app");
}

#[test]
fn a_held_back_waiting_rebuild_names_the_failed_ancestor() {
    let w = World::new()
        .external("python", "python:3.12", "{delay: 1d}")
        .external("alpine", "alpine:3.20", "{delay: 1d}")
        .managed("base", "", &["python"])
        .managed("app", "", &["base", "alpine"]);
    let config = EngineConfig {
        max_attempts: 1,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(&w.graph(), BTreeMap::new(), config).unwrap();
    e.apply(update("alpine", 1, t0()), t0());
    e.apply(update("python", 2, at(HOUR)), at(HOUR));
    let base = only_trigger(&e.tick(at(DAY + HOUR)));
    let out = e.apply(failure(&base.id), at(DAY + HOUR));
    assert!(out.iter().any(|d| matches!(d, Decision::HeldBack { image, reason, .. } if image == "app" && reason.contains("base failed"))), "{out:#?}");
}

#[test]
fn replaying_the_same_events_never_triggers_twice() {
    let w = World::new()
        .external("python", "python:3.12", "{delay: 1d}")
        .managed("base", "", &["python"])
        .managed("app", "", &["base"]);
    let mut e = w.engine();
    let mut log = vec![(update("python", 1, t0()), t0())];
    e.apply(log[0].0.clone(), t0());
    let base = only_trigger(&e.tick(at(DAY)));
    log.push((success(&base.id, 10), at(DAY)));
    let app = only_trigger(&e.apply(log[1].0.clone(), at(DAY)));
    log.push((success(&app.id, 20), at(DAY)));
    e.apply(log[2].0.clone(), at(DAY));
    let snapshot = e
        .runtimes()
        .into_iter()
        .map(|(n, r)| (n.to_string(), r.clone()))
        .collect::<BTreeMap<_, _>>();
    for (event, now) in &log {
        let out = e.apply(event.clone(), *now);
        assert!(triggers(&out).is_empty(), "{out:#?}");
        assert!(
            out.iter().all(|d| matches!(d, Decision::Ignored { .. })),
            "{out:#?}"
        );
    }
    let after = e
        .runtimes()
        .into_iter()
        .map(|(n, r)| (n.to_string(), r.clone()))
        .collect::<BTreeMap<_, _>>();
    assert_eq!(snapshot, after);
}

#[test]
fn an_outcome_for_an_unknown_or_finished_rebuild_is_ignored() {
    let mut e = python_app().engine();
    let unknown = RebuildId::parse("app-0000000000").unwrap();
    let out = e.apply(success(&unknown, 1), t0());
    assert!(matches!(&out[..], [Decision::Ignored { reason }] if reason.contains("no rebuild")));
    e.apply(update("python", 1, t0()), t0());
    let waiting = e.runtime("app").unwrap().open_rebuild().unwrap().id.clone();
    let out = e.apply(success(&waiting, 1), at(HOUR));
    assert!(
        matches!(&out[..], [Decision::Ignored { reason }] if reason.contains("Waiting")),
        "{out:#?}"
    );
    let t = only_trigger(&e.tick(at(7 * DAY)));
    e.apply(success(&t.id, 5), at(7 * DAY));
    let out = e.apply(failure(&t.id), at(7 * DAY));
    assert!(matches!(&out[..], [Decision::Ignored { .. }]));
    assert_eq!(phase_of(&e, "app", &t.id), Phase::Succeeded);
}

#[test]
fn a_restart_after_triggered_was_persisted_retriggers_the_same_id() {
    let w = python_app();
    let mut e = w.engine();
    e.apply(update("python", 1, t0()), t0());
    let t = only_trigger(&e.tick(at(7 * DAY)));
    // Persist, "crash", reload from the rendered files.
    let files: BTreeMap<String, ImageRuntime> = e
        .runtimes()
        .into_iter()
        .map(|(n, r)| {
            (
                n.to_string(),
                ImageRuntime::parse("f", &r.render().unwrap()).unwrap(),
            )
        })
        .collect();
    let mut restarted = Engine::new(&w.graph(), files, EngineConfig::default()).unwrap();
    assert_eq!(restarted.pending_triggers(), vec![t.clone()]);
    assert!(triggers(&restarted.tick(at(7 * DAY + 60))).is_empty());
    let out = restarted.apply(success(&t.id, 9), at(7 * DAY + 120));
    assert!(
        matches!(out.first(), Some(Decision::Succeeded { .. })),
        "{out:#?}"
    );
}

#[test]
fn a_dependent_pinning_the_base_by_digest_is_flagged_not_rebuilt() {
    let pin = digest(77).to_string();
    let w = World::new()
        .external("python", "python:3.12", "{delay: 0s}")
        .managed("app", "", &[&format!("python@{pin}")]);
    let mut e = w.engine();
    let out = e.apply(update("python", 1, t0()), t0());
    assert!(out.iter().any(|d| matches!(d, Decision::PinnedDependent { image, pins, .. } if image == "app" && pins == std::slice::from_ref(&pin))), "{out:#?}");
    assert!(triggers(&out).is_empty());
    assert!(e.runtime("app").unwrap().rebuilds.is_empty());
}

#[test]
fn a_result_not_built_on_the_pinned_base_fails_the_attempt() {
    let mut e = python_app().engine();
    e.apply(update("python", 1, t0()), t0());
    let t = only_trigger(&e.tick(at(7 * DAY)));
    let out = e.apply(
        Event::Outcome {
            id: t.id.clone(),
            outcome: Outcome::Success {
                digest: digest(9),
                base_digests: vec![digest(2)],
            },
        },
        at(7 * DAY),
    );
    assert!(
        matches!(&out[..], [Decision::RetryScheduled { reason, .. }] if reason.contains("not on the pinned bases")),
        "{out:#?}"
    );
}

#[test]
fn a_platform_manifest_of_the_pinned_base_counts_as_built_on_it() {
    let mut e = python_app().engine();
    e.apply(
        Event::Update {
            image: "python".into(),
            tag: "3.12".into(),
            digest: digest(1),
            platforms: BTreeMap::from([("linux/amd64".to_string(), digest(11))]),
            discovered_at: t0(),
            source: UpdateSource::Freight {
                name: "f1".into(),
                alias: None,
                warehouse: None,
            },
            signature: None,
        },
        t0(),
    );
    let t = only_trigger(&e.tick(at(7 * DAY)));
    let out = e.apply(
        Event::Outcome {
            id: t.id.clone(),
            outcome: Outcome::Success {
                digest: digest(9),
                base_digests: vec![digest(11)],
            },
        },
        at(7 * DAY),
    );
    assert!(
        matches!(out.first(), Some(Decision::Succeeded { .. })),
        "{out:#?}"
    );
}

#[test]
fn history_is_bounded_but_keeps_digests_an_open_rebuild_uses() {
    let config = EngineConfig {
        history_limit: 5,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(&python_app().graph(), BTreeMap::new(), config).unwrap();
    e.apply(update("python", 0, t0()), t0());
    let t = only_trigger(&e.tick(at(7 * DAY)));
    assert_eq!(pinned_digest(&t, "python").unwrap(), digest(0).to_string());
    for n in 1..20 {
        e.apply(
            update("python", n, at(7 * DAY + n as i64)),
            at(7 * DAY + n as i64),
        );
    }
    let history = &e.runtime("python").unwrap().updates;
    assert_eq!(history.len(), 6);
    assert_eq!(
        history[0].digest,
        digest(0),
        "the triggered rebuild pins it"
    );
    let mut e = Engine::new(
        &python_app().graph(),
        BTreeMap::new(),
        EngineConfig {
            history_limit: 5,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    e.apply(update("python", 0, t0()), t0());
    for n in 1..20 {
        e.apply(update("python", n, at(n as i64)), at(n as i64));
    }
    let history = &e.runtime("python").unwrap().updates;
    assert_eq!(history.len(), 6);
    assert_eq!(history[0].digest, digest(0), "the waiting rebuild pins it");
}

#[test]
fn events_about_unknown_images_are_ignored() {
    let mut e = python_app().engine();
    let out = e.apply(update("ruby", 1, t0()), t0());
    assert!(matches!(&out[..], [Decision::Ignored { reason }] if reason.contains("ruby")));
}

#[test]
fn the_update_of_a_managed_image_seen_in_the_registry_rebuilds_its_dependents() {
    let w = World::new()
        .external("python", "python:3.12", "")
        .managed("base", "{delay: 2d}", &["python"])
        .managed("app", "", &["base"]);
    let mut e = w.engine();
    e.apply(update("base", 1, t0()), t0());
    assert_eq!(
        e.next_wakeup(),
        Some(at(2 * DAY)),
        "hold_for(base) = base's delay"
    );
    assert_eq!(only_trigger(&e.tick(at(2 * DAY))).image, "app");
}

// ---- plan: the dry run agrees with Graph::plan ----

fn compare_plans(w: &World, updated: &str, reference: &str) {
    let graph = w.graph();
    let old = graph
        .plan(
            &Reference::parse(reference).unwrap(),
            std::time::SystemTime::from(t0()),
        )
        .unwrap();
    let new = plan(
        &graph,
        &BTreeMap::new(),
        &EngineConfig::default(),
        &PlanUpdate {
            image: updated.to_string(),
            tag: "tag".into(),
            digest: digest(1),
            discovered_at: t0(),
        },
        t0(),
    )
    .unwrap();
    let old_rows: Vec<_> = old
        .rebuilds
        .iter()
        .map(|r| {
            (
                r.wave,
                r.name.clone(),
                r.after.clone(),
                r.hold,
                Timestamp::try_from(r.due).unwrap(),
                r.auto_rebuild,
            )
        })
        .collect();
    let new_rows: Vec<_> = new
        .rebuilds
        .iter()
        .map(|r| {
            (
                r.wave,
                r.image.clone(),
                r.after.clone(),
                r.hold,
                r.due,
                r.auto_rebuild,
            )
        })
        .collect();
    assert_eq!(new_rows, old_rows);
}

#[test]
fn plan_agrees_with_the_graph_plan_on_a_diamond() {
    let w = World::new()
        .external("python", "python:3.12", "")
        .managed("base", "", &["python"])
        .managed("mid", "", &["base"])
        .managed("app", "", &["base", "mid"])
        .external("alpine", "alpine:3.19", "")
        .managed("unrelated", "", &["alpine"]);
    compare_plans(&w, "python", "python:3.12");
}

#[test]
fn plan_agrees_with_the_graph_plan_on_delays_and_cascade_delays() {
    let w = World::new()
        .external("python", "python:3.12", "")
        .managed("base", "", &["python"])
        .managed(
            "fast",
            "{delay: 1d, cascadeDelay: 2h, autoRebuild: false}",
            &["python", "base"],
        );
    compare_plans(&w, "python", "python:3.12");
}

#[test]
fn plan_agrees_with_the_graph_plan_on_own_delays() {
    let w = World::new()
        .external("python", "python:3.12", "{delay: 3d}")
        .managed("relaxed", "", &["python"])
        .managed("strict", "{delay: 10d}", &["python"]);
    compare_plans(&w, "python", "python:3.12");
}

#[test]
fn plan_agrees_with_the_graph_plan_on_the_example_enrollment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cache = tempfile::tempdir().unwrap();
    let model = crate::analyze::model(
        &root.join("images.yaml"),
        cache.path(),
        false,
        &crate::analyze::NoProgress,
    )
    .unwrap();
    let graph = model.graph;
    let mut compared = 0;
    for node in graph.nodes() {
        if graph.dependents(&node.name).is_empty() {
            continue;
        }
        let old = graph
            .plan(&node.reference, std::time::SystemTime::from(t0()))
            .unwrap();
        let new = plan(
            &graph,
            &BTreeMap::new(),
            &EngineConfig::default(),
            &PlanUpdate {
                image: node.name.clone(),
                tag: "tag".into(),
                digest: digest(1),
                discovered_at: t0(),
            },
            t0(),
        )
        .unwrap();
        let old_rows: Vec<_> = old
            .rebuilds
            .iter()
            .map(|r| {
                (
                    r.wave,
                    r.name.clone(),
                    r.after.clone(),
                    Timestamp::try_from(r.due).unwrap(),
                )
            })
            .collect();
        let new_rows: Vec<_> = new
            .rebuilds
            .iter()
            .map(|r| (r.wave, r.image.clone(), r.after.clone(), r.due))
            .collect();
        assert_eq!(new_rows, old_rows, "update of {}", node.name);
        compared += 1;
    }
    assert!(
        compared >= 3,
        "the example has several bases with dependents"
    );
}

#[test]
fn plan_says_what_each_rebuild_is_built_on_and_flags_pinned_dependents() {
    let pin = digest(77).to_string();
    let w = World::new()
        .external("python", "python:3.12", "{delay: 1d}")
        .managed("app", "", &["python"])
        .managed("frozen", "", &[&format!("python@{pin}")]);
    let p = plan(
        &w.graph(),
        &BTreeMap::new(),
        &EngineConfig::default(),
        &PlanUpdate {
            image: "python".into(),
            tag: "3.12".into(),
            digest: digest(1),
            discovered_at: t0(),
        },
        t0(),
    )
    .unwrap();
    assert_eq!(p.rebuilds.len(), 1);
    assert_eq!(
        p.rebuilds[0].bases,
        [format!("docker.io/library/python:3.12@{}", digest(1))]
    );
    assert_eq!(
        p.pinned,
        [PinnedDependent {
            image: "frozen".into(),
            pins: vec![pin]
        }]
    );
    let err = plan(
        &w.graph(),
        &BTreeMap::new(),
        &EngineConfig::default(),
        &PlanUpdate {
            image: "ruby".into(),
            tag: "3".into(),
            digest: digest(1),
            discovered_at: t0(),
        },
        t0(),
    )
    .unwrap_err();
    assert!(err
        .to_string()
        .contains("ruby is not in the dependency graph"));
}

#[test]
fn a_grandchild_is_rebuilt_on_its_parents_new_digest_while_the_parent_waits_for_a_newer_base() {
    let mut e = World::new()
        .external("python", "python:3.12", "{delay: 7d}")
        .managed("app", "", &["python"])
        .managed("tool", "", &["app"])
        .engine();
    e.apply(update("python", 1, t0()), t0());
    e.apply(update("python", 2, at(6 * DAY)), at(6 * DAY));
    let t = only_trigger(&e.tick(at(7 * DAY)));
    assert_eq!(t.image, "app");
    assert_eq!(pinned_digest(&t, "python").unwrap(), digest(1).to_string());
    // app is done on update 1 and waits (until day 13) for update 2: tool must not wait
    // for that, or a base changing more often than its hold starves every grandchild.
    let out = e.apply(success(&t.id, 100), at(7 * DAY));
    let next = only_trigger(&out);
    assert_eq!(next.image, "tool");
    assert_eq!(
        pinned_digest(&next, "app").unwrap(),
        digest(100).to_string()
    );
    let app = e.runtime("app").unwrap();
    assert_eq!(app.open_rebuild().unwrap().phase, Phase::Waiting);
}

fn signed_update(
    n: u64,
    discovered: Timestamp,
    verdict: SignatureVerdict,
    mode: VerifyMode,
) -> Event {
    let Event::Update {
        image,
        tag,
        digest,
        platforms,
        discovered_at,
        source,
        ..
    } = update("python", n, discovered)
    else {
        unreachable!()
    };
    Event::Update {
        image,
        tag,
        digest,
        platforms,
        discovered_at,
        source,
        signature: Some(SignatureCheck {
            verdict,
            mode,
            detail: "no signature found".into(),
        }),
    }
}

use crate::runtime::{SignatureVerdict, VerifyMode};

#[test]
fn an_unsigned_update_under_enforce_is_skipped_and_the_older_verified_one_is_used() {
    let mut e = python_app().engine();
    e.apply(
        signed_update(1, t0(), SignatureVerdict::Verified, VerifyMode::Enforce),
        t0(),
    );
    let out = e.apply(
        signed_update(2, at(DAY), SignatureVerdict::Unsigned, VerifyMode::Enforce),
        at(DAY),
    );
    assert!(
        out.iter().any(
            |d| matches!(d, Decision::Unverified { digest: d, check, .. }
            if *d == digest(2) && check.rejects())
        ),
        "{out:#?}"
    );
    // The rejected update supersedes nothing: the verified one still matures on time.
    let python = e.runtime("python").unwrap();
    assert_eq!(python.update(&digest(1)).unwrap().superseded_by, None);
    assert!(python.update(&digest(2)).unwrap().is_rejected());
    assert_eq!(e.next_wakeup(), Some(at(7 * DAY)));
    let t = only_trigger(&e.tick(at(7 * DAY)));
    assert_eq!(pinned_digest(&t, "python").unwrap(), digest(1).to_string());
    // Even after it would have matured, the rejected digest is never pinned.
    e.apply(success(&t.id, 100), at(7 * DAY));
    assert!(triggers(&e.tick(at(30 * DAY))).is_empty());
    assert!(e.runtime("app").unwrap().open_rebuild().is_none());
}

#[test]
fn an_invalid_signature_under_warn_is_recorded_and_used() {
    let mut e = python_app().engine();
    let out = e.apply(
        signed_update(1, t0(), SignatureVerdict::Invalid, VerifyMode::Warn),
        t0(),
    );
    assert!(
        out.iter()
            .any(|d| matches!(d, Decision::Unverified { check, .. } if !check.rejects())),
        "{out:#?}"
    );
    let recorded = e.runtime("python").unwrap().update(&digest(1)).unwrap();
    assert_eq!(
        recorded.signature.as_ref().map(|c| c.verdict),
        Some(SignatureVerdict::Invalid)
    );
    let t = only_trigger(&e.tick(at(7 * DAY)));
    assert_eq!(pinned_digest(&t, "python").unwrap(), digest(1).to_string());
}

#[test]
fn an_unsigned_update_signed_later_supersedes_the_held_one_and_matures_from_its_discovery() {
    let mut e = python_app().engine();
    e.apply(
        signed_update(1, t0(), SignatureVerdict::Verified, VerifyMode::Enforce),
        t0(),
    );
    e.apply(
        signed_update(2, at(DAY), SignatureVerdict::Unsigned, VerifyMode::Enforce),
        at(DAY),
    );
    let verified = SignatureCheck {
        verdict: SignatureVerdict::Verified,
        mode: VerifyMode::Enforce,
        detail: "tag sha256-….sig".into(),
    };
    let signed = Event::Signature {
        image: "python".into(),
        digest: digest(2),
        check: verified.clone(),
    };
    let out = e.apply(signed.clone(), at(DAY + 60));
    assert!(
        out.iter().any(
            |d| matches!(d, Decision::Verified { digest: d, superseded, .. }
            if *d == digest(2) && superseded == &[digest(1)])
        ),
        "{out:#?}"
    );
    let python = e.runtime("python").unwrap();
    assert!(!python.update(&digest(2)).unwrap().is_rejected());
    assert_eq!(
        python.update(&digest(1)).unwrap().superseded_by,
        Some(digest(2))
    );
    // A replay changes nothing.
    assert!(matches!(
        e.apply(signed, at(DAY + 120)).as_slice(),
        [Decision::Ignored { .. }]
    ));
    // The hold counts from the update's discovery, not from its signature: at 8 days
    // it is the newest matured update (unsigned, digest 1 would be pinned forever).
    let t = only_trigger(&e.tick(at(8 * DAY)));
    assert_eq!(pinned_digest(&t, "python").unwrap(), digest(2).to_string());
    // Unknown digests are ignored.
    let unknown = Event::Signature {
        image: "python".into(),
        digest: digest(9),
        check: verified,
    };
    assert!(matches!(
        e.apply(unknown, at(8 * DAY)).as_slice(),
        [Decision::Ignored { .. }]
    ));
}
