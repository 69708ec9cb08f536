//! Property tests: random DAGs, random interleavings of updates, blocks and outcomes.
//!
//! Invariants checked on every trigger: never before the delay of any update it picks
//! up, never on an unmatured or blocked digest, never while a managed ancestor still
//! has an open rebuild, never the same (id, attempt) twice; one update with every build
//! succeeding rebuilds every affected image exactly once; replay is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use super::tests::{at, digest, t0, triggers, World};
use super::*;
use crate::runtime::Phase;

/// A random DAG: `externals` external images, then managed images each built on one
/// to three earlier images (so the graph is acyclic by construction).
#[derive(Debug, Clone)]
struct Dag {
    externals: Vec<u32>,
    managed: Vec<(Vec<usize>, u32)>,
}

fn dag(max_managed: usize) -> impl Strategy<Value = Dag> {
    (1usize..5, 1usize..max_managed).prop_flat_map(|(e, m)| {
        let delays = proptest::collection::vec(0u32..10, e);
        let managed = (0..m)
            .map(|k| {
                let parents = proptest::collection::vec(0..(e + k), 1..4);
                (parents, 0u32..4)
            })
            .collect::<Vec<_>>();
        (delays, managed).prop_map(|(externals, managed)| Dag { externals, managed })
    })
}

impl Dag {
    fn name(&self, i: usize) -> String {
        if i < self.externals.len() {
            format!("ext{i}")
        } else {
            format!("img{}", i - self.externals.len())
        }
    }

    fn world(&self) -> World {
        let mut w = World::new();
        for (i, days) in self.externals.iter().enumerate() {
            w = w.external(
                &self.name(i),
                &format!("docker.io/library/ext{i}:1"),
                &format!("{{delay: {days}d}}"),
            );
        }
        for (k, (parents, hours)) in self.managed.iter().enumerate() {
            let mut from: Vec<String> = parents.iter().map(|&p| self.name(p)).collect();
            from.sort();
            from.dedup();
            let from: Vec<&str> = from.iter().map(String::as_str).collect();
            w = w.managed(
                &self.name(self.externals.len() + k),
                &format!("{{cascadeDelay: {hours}h}}"),
                &from,
            );
        }
        w
    }
}

/// One step of a random run.
#[derive(Debug, Clone)]
enum Step {
    /// An update of external `n % externals` after `gap` hours.
    Update { n: usize, gap: u32 },
    /// Block the newest update of external `n % externals`.
    Block { n: usize },
    /// Finish in-flight build `n % in_flight`; fails when `fail`.
    Finish { n: usize, fail: bool },
    /// Sleep until the next wake-up.
    Wake,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        3 => (0usize..8, 0u32..72).prop_map(|(n, gap)| Step::Update { n, gap }),
        1 => (0usize..8).prop_map(|n| Step::Block { n }),
        4 => (0usize..64, proptest::bool::weighted(0.2)).prop_map(|(n, fail)| Step::Finish { n, fail }),
        3 => Just(Step::Wake),
    ];
    proptest::collection::vec(step, 1..60)
}

/// What a run did: every call and its decisions, for replay.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // test-only; boxing would only add noise
enum Call {
    Apply(Event, Timestamp),
    Tick(Timestamp),
}

fn replay(graph: &crate::graph::Graph, log: &[Call]) -> (Vec<Vec<Decision>>, Engine) {
    let mut e = Engine::new(graph, BTreeMap::new(), EngineConfig::default()).unwrap();
    let out = log
        .iter()
        .map(|c| match c {
            Call::Apply(ev, now) => e.apply(ev.clone(), *now),
            Call::Tick(now) => e.tick(*now),
        })
        .collect();
    (out, e)
}

/// Checks one trigger against the records the engine holds at `now`.
fn check_trigger(e: &Engine, t: &Trigger, now: Timestamp) -> Result<(), TestCaseError> {
    let x = e.index[&t.image];
    for u in &t.cause.updates {
        let b = e.index[&u.image];
        let update = e.runtime[b]
            .update(&u.digest)
            .ok_or_else(|| TestCaseError::fail("cause not in history"))?;
        let ripe = e.mature_at(x, b, update);
        prop_assert!(
            ripe <= now,
            "{} built on {} before its delay ({ripe} > {now})",
            t.image,
            u.image
        );
    }
    for p in &t.bases {
        let Some(d) = p.digest() else { continue };
        let b = e.index[&p.image];
        let rt = &e.runtime[b];
        let d = Digest::parse(d).unwrap();
        prop_assert!(!rt.is_blocked(&d), "{} built on blocked {d}", t.image);
        if let Some(update) = rt.update(&d) {
            prop_assert!(
                e.mature_at(x, b, update) <= now,
                "{} pinned on unmatured {}@{d}",
                t.image,
                p.image
            );
        }
    }
    // No managed ancestor has a rebuild in flight that would cascade into it.
    let mut stack = vec![x];
    let mut seen = BTreeSet::new();
    while let Some(n) = stack.pop() {
        for link in &e.nodes[n].bases {
            if seen.insert(link.node) {
                stack.push(link.node);
                let rt = &e.runtime[link.node];
                prop_assert!(
                    rt.open_rebuild().is_none_or(|r| !r.phase.is_in_flight()),
                    "{} triggered while ancestor {} has a rebuild in flight",
                    t.image,
                    e.nodes[link.node].name
                );
            }
        }
    }
    Ok(())
}

fn run(dag: &Dag, steps: &[Step]) -> Result<(), TestCaseError> {
    let graph = dag.world().graph();
    let mut e = Engine::new(&graph, BTreeMap::new(), EngineConfig::default()).unwrap();
    let mut now = t0();
    let mut log = Vec::new();
    let mut outputs = Vec::new();
    let mut in_flight: Vec<RebuildId> = Vec::new();
    let mut started: BTreeSet<(RebuildId, u32)> = BTreeSet::new();
    let mut serial = 0u64;
    let externals = dag.externals.len();
    for step in steps {
        let call = match step {
            Step::Update { n, gap } => {
                now += SignedDuration::from_hours(i64::from(*gap));
                serial += 1;
                Call::Apply(
                    Event::Update {
                        image: dag.name(n % externals),
                        tag: "1".into(),
                        digest: digest(serial),
                        platforms: BTreeMap::new(),
                        discovered_at: now,
                        source: UpdateSource::Watcher,
                        signature: None,
                    },
                    now,
                )
            }
            Step::Block { n } => {
                let image = dag.name(n % externals);
                let Some(newest) = e.runtime(&image).and_then(|r| r.updates.last()) else {
                    continue;
                };
                Call::Apply(
                    Event::Block {
                        image,
                        digest: newest.digest.clone(),
                        by: "prop".into(),
                        reason: "random".into(),
                    },
                    now,
                )
            }
            Step::Finish { n, fail } => {
                if in_flight.is_empty() {
                    continue;
                }
                let id = in_flight.remove(n % in_flight.len());
                serial += 1;
                let outcome = if *fail {
                    Outcome::Failure {
                        reason: "random".into(),
                        log: None,
                    }
                } else {
                    Outcome::Success {
                        digest: digest(1_000_000 + serial),
                        base_digests: vec![],
                    }
                };
                Call::Apply(Event::Outcome { id, outcome }, now)
            }
            Step::Wake => match e.next_wakeup() {
                Some(t) => {
                    now = now.max(t);
                    Call::Tick(now)
                }
                None => continue,
            },
        };
        let out = match &call {
            Call::Apply(ev, at) => e.apply(ev.clone(), *at),
            Call::Tick(at) => e.tick(*at),
        };
        for t in triggers(&out) {
            check_trigger(&e, &t, now)?;
            prop_assert!(
                started.insert((t.id.clone(), t.attempt)),
                "{} attempt {} triggered twice",
                t.id,
                t.attempt
            );
            in_flight.push(t.id.clone());
        }
        log.push(call);
        outputs.push(out);
    }
    // Replay: the same calls decide the same, and leave the same records.
    let (again, replayed) = replay(&graph, &log);
    prop_assert_eq!(&again, &outputs);
    prop_assert_eq!(replayed.runtime.clone(), e.runtime.clone());
    // Applying the whole log once more triggers nothing new.
    for call in &log {
        if let Call::Apply(ev, _) = call {
            let out = e.apply(ev.clone(), now);
            for t in triggers(&out) {
                prop_assert!(
                    started.insert((t.id.clone(), t.attempt)),
                    "replay re-triggered {}",
                    t.id
                );
            }
        }
    }
    Ok(())
}

/// One update, every build succeeds: every managed image downstream is rebuilt exactly
/// once, after all of its updated parents.
fn one_wave(dag: &Dag, root: usize) -> Result<(), TestCaseError> {
    let graph = dag.world().graph();
    let mut e = Engine::new(&graph, BTreeMap::new(), EngineConfig::default()).unwrap();
    let root = dag.name(root % dag.externals.len());
    let mut queue = e.apply(super::tests::update(&root, 1, t0()), t0());
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    let mut finished_at: BTreeMap<String, Timestamp> = BTreeMap::new();
    let mut now = t0();
    let mut serial = 0;
    for _ in 0..10_000 {
        let mut next = Vec::new();
        for t in triggers(&queue) {
            check_trigger(&e, &t, now)?;
            *count.entry(t.image.clone()).or_default() += 1;
            for parent in graph.bases(&t.image) {
                if let Some(done) = finished_at.get(&parent) {
                    prop_assert!(*done <= now);
                }
            }
            serial += 1;
            now += SignedDuration::from_mins(5);
            finished_at.insert(t.image.clone(), now);
            next.extend(e.apply(
                Event::Outcome {
                    id: t.id,
                    outcome: Outcome::Success {
                        digest: digest(100 + serial),
                        base_digests: vec![],
                    },
                },
                now,
            ));
        }
        if next.is_empty() {
            match e.next_wakeup() {
                Some(t) => {
                    now = now.max(t);
                    next = e.tick(now);
                }
                None => break,
            }
        }
        queue = next;
    }
    let mut affected = BTreeSet::new();
    let mut stack = vec![root.clone()];
    while let Some(n) = stack.pop() {
        for d in graph.dependents(&n) {
            if affected.insert(d.clone()) {
                stack.push(d);
            }
        }
    }
    let rebuilt: BTreeSet<String> = count.keys().cloned().collect();
    prop_assert_eq!(&rebuilt, &affected);
    prop_assert!(count.values().all(|&c| c == 1), "{count:?}");
    for name in &affected {
        let rt = e.runtime(name).unwrap();
        prop_assert!(rt
            .rebuilds
            .iter()
            .all(|r| r.phase == Phase::Succeeded || r.phase == Phase::Superseded));
    }
    let _ = at(0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_keep_every_rule(dag in dag(40), steps in steps()) {
        run(&dag, &steps)?;
    }

    #[test]
    fn one_update_rebuilds_every_affected_image_exactly_once(dag in dag(200), root in 0usize..8) {
        one_wave(&dag, root)?;
    }
}
