//! `plan`: a dry run of the engine. It applies one update to a copy of the runtime
//! records, advances the clock to each wake-up and assumes every triggered rebuild
//! succeeds at once with a synthetic digest, then reports the waves. One engine
//! decides both what happens and what the plan says will happen.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::{Decision, Engine, EngineConfig, EngineError, Event, Outcome};
use crate::graph::Graph;
use crate::runtime::{rfc3339, Digest, ImageRuntime, RebuildId, UpdateRef, UpdateSource};

/// The update a plan is made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanUpdate {
    /// Graph name of the updated image.
    pub image: String,
    /// Its tag.
    pub tag: String,
    /// The new digest; a placeholder one when the person gave none.
    pub digest: Digest,
    /// When it was (or would be) discovered.
    pub discovered_at: Timestamp,
}

/// One rebuild of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedRebuild {
    /// 1 for direct dependents of the update, 2 for theirs, …
    pub wave: usize,
    /// Managed image name.
    pub image: String,
    /// Its reference.
    pub reference: String,
    /// The updated image and rebuilt parents it waits for, sorted.
    pub after: Vec<String>,
    /// The hold that sets its due time: in wave 1 `hold_for` the updated image, later
    /// its `cascadeDelay` (the longest wins).
    #[serde(serialize_with = "humantime_text")]
    pub hold: Duration,
    /// When it starts (builds take no time in the plan).
    #[serde(with = "rfc3339")]
    pub due: Timestamp,
    /// `false`: it waits for a person's approval (the plan assumes it is given at `due`).
    pub auto_rebuild: bool,
    /// The rebuild's id.
    pub id: RebuildId,
    /// The pinned bases it would be built on (`repo:tag@digest`).
    pub bases: Vec<String>,
    /// The updates it picks up.
    pub updates: Vec<UpdateRef>,
}

/// A dependent that pins the updated image by digest and so is not rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PinnedDependent {
    /// The dependent.
    pub image: String,
    /// The digests its Dockerfile pins.
    pub pins: Vec<String>,
}

/// What one update would rebuild, wave by wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The updated image's reference.
    pub update: String,
    /// The update's digest.
    pub digest: Digest,
    /// When it was discovered.
    #[serde(with = "rfc3339")]
    pub discovered_at: Timestamp,
    /// Rebuilds by wave, then name.
    pub rebuilds: Vec<PlannedRebuild>,
    /// Dependents not rebuilt because their Dockerfile pins the base by digest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pinned: Vec<PinnedDependent>,
}

fn humantime_text<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// The dry run of `update` against `graph` and the current `runtime` records, from `now`.
///
/// # Errors
///
/// [`EngineError::UnknownImage`] for an image not in the graph, [`EngineError::Graph`]
/// for a cycle, [`EngineError::Unsettled`] if the simulation does not end (a bug).
pub fn plan(
    graph: &Graph,
    runtime: &BTreeMap<String, ImageRuntime>,
    config: &EngineConfig,
    update: &PlanUpdate,
    now: Timestamp,
) -> Result<Plan, EngineError> {
    let node = graph
        .node(&update.image)
        .ok_or_else(|| EngineError::UnknownImage {
            image: update.image.clone(),
        })?;
    let mut engine = Engine::new(graph, runtime.clone(), config.clone())?;
    // Whatever was already due is not this update's doing.
    engine.tick(now);
    let mut queue = engine.apply(
        Event::Update {
            image: update.image.clone(),
            tag: update.tag.clone(),
            digest: update.digest.clone(),
            platforms: BTreeMap::new(),
            discovered_at: update.discovered_at,
            source: UpdateSource::Manual,
            signature: None,
        },
        now,
    );
    let mut clock = now;
    let mut wave_of: BTreeMap<String, usize> = BTreeMap::from([(update.image.clone(), 0)]);
    let mut rebuilds = Vec::new();
    let mut pinned = Vec::new();
    let limit = 4 * (graph.nodes().len() + 2);
    let mut steps = 0;
    loop {
        steps += 1;
        if steps > limit {
            return Err(EngineError::Unsettled {
                image: update.image.clone(),
                steps,
            });
        }
        let mut next = Vec::new();
        for decision in queue {
            match decision {
                Decision::Trigger(t) => {
                    let planned = planned(&engine, &t, &wave_of);
                    wave_of.insert(t.image.clone(), planned.wave);
                    rebuilds.push(planned);
                    let digest = Digest::sha256_of(t.id.as_str().as_bytes());
                    next.extend(engine.apply(
                        Event::Outcome {
                            id: t.id,
                            outcome: Outcome::Success {
                                digest,
                                base_digests: Vec::new(),
                            },
                        },
                        clock,
                    ));
                }
                Decision::AwaitApproval { id, .. } => {
                    next.extend(engine.apply(
                        Event::Approve {
                            id,
                            by: "plan".to_string(),
                        },
                        clock,
                    ));
                }
                Decision::PinnedDependent { image, base, pins } if base == update.image => {
                    pinned.push(PinnedDependent { image, pins });
                }
                _ => {}
            }
        }
        if next.is_empty() {
            match engine.next_wakeup() {
                Some(t) => {
                    clock = clock.max(t);
                    next = engine.tick(clock);
                }
                None => break,
            }
        }
        queue = next;
    }
    rebuilds.sort_by(|a, b| (a.wave, &a.image).cmp(&(b.wave, &b.image)));
    Ok(Plan {
        update: node.reference.to_string(),
        digest: update.digest.clone(),
        discovered_at: update.discovered_at,
        rebuilds,
        pinned,
    })
}

fn planned(
    engine: &Engine,
    trigger: &super::Trigger,
    wave_of: &BTreeMap<String, usize>,
) -> PlannedRebuild {
    let x = engine
        .index
        .get(&trigger.image)
        .copied()
        .unwrap_or_default();
    let rec = engine.runtime[x].rebuild(&trigger.id);
    let due = rec.map_or(Timestamp::UNIX_EPOCH, |r| r.due_at);
    let mut after = Vec::new();
    let mut wave = 1;
    let mut hold = (Timestamp::MIN, Duration::ZERO);
    for u in &trigger.cause.updates {
        let Some(&b) = engine.index.get(&u.image) else {
            continue;
        };
        let Some(update) = engine.runtime[b].update(&u.digest) else {
            continue;
        };
        let ripe = engine.mature_at(x, b, update);
        if ripe >= hold.0 {
            hold = (ripe, engine.hold_of(x, b, update));
        }
        if let Some(w) = wave_of.get(&u.image) {
            after.push(u.image.clone());
            wave = wave.max(w + 1);
        }
    }
    after.sort();
    let node = &engine.nodes[x];
    PlannedRebuild {
        wave,
        image: trigger.image.clone(),
        reference: trigger.reference.clone(),
        after,
        hold: hold.1,
        due,
        auto_rebuild: node.policy.auto_rebuild,
        id: trigger.id.clone(),
        bases: trigger.bases.iter().map(|b| b.pinned.clone()).collect(),
        updates: trigger.cause.updates.clone(),
    }
}
