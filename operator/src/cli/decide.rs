//! `expedite`, `block`, `unblock`, `retry`, `approve`: a person's decisions.
//!
//! Each loads the graph and the runtime records, feeds the decision to the engine as an
//! event (so a CLI decision and one made in the cluster follow the same rules), and
//! commits the changed runtime records. Nothing is built here: a rebuild the decision
//! makes due is recorded `Triggered`, and the running factory (`run`, the controller)
//! starts it — the engine's write-ahead rule, so a decision survives any restart.

use std::path::PathBuf;

use jiff::Timestamp;

use super::{EXIT_ERROR, EXIT_FINDINGS, EXIT_OK};
use crate::analyze::{self, NoProgress};
use crate::engine::{Decision, Engine, EngineConfig, Event};
use crate::graph::Graph;
use crate::reference::Reference;
use crate::runtime::{Digest, RebuildId};
use crate::state::{self, Changes, FileStore};

/// A decision, as given on the command line (and, serialized, as sent to a running
/// factory through [`crate::inbox`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Action {
    /// Skip the remaining delay of an update: `IMAGE` (its newest update, or for a
    /// managed image the updates its waiting rebuild is held for) or `REF@DIGEST`.
    Expedite {
        /// Image name or reference.
        target: String,
        /// Why (a CVE id).
        reason: String,
    },
    /// Never use `REF@DIGEST` as a base.
    Block {
        /// `REF@DIGEST`.
        target: String,
        /// Why.
        reason: String,
    },
    /// Lift a block of `REF@DIGEST`.
    Unblock {
        /// `REF@DIGEST`.
        target: String,
    },
    /// Try a Failed rebuild again with a fresh attempt budget.
    Retry {
        /// The rebuild id.
        id: String,
        /// Why.
        reason: String,
    },
    /// Let a rebuild of an `autoRebuild: false` image start.
    Approve {
        /// The rebuild id.
        id: String,
    },
}

/// Where the decision is recorded.
#[derive(Debug, Clone)]
pub struct Place {
    /// `images.yaml`.
    pub file: PathBuf,
    /// The git source cache.
    pub cache_dir: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
}

/// Why a decision could not be recorded (exit 2), or was not accepted (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// Loading the graph failed.
    #[error(transparent)]
    Analyze(#[from] analyze::AnalyzeError),
    /// Reading or writing state failed.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// The engine refused the graph.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// The target names no image of the graph.
    #[error("{target} is not an image of images.yaml or its Dockerfiles; `image-factory graph` lists them")]
    UnknownImage {
        /// As given.
        target: String,
    },
    /// The target is not `REF@DIGEST` where a digest is needed, or the digest is bad.
    #[error("{target}: {why}; write it as REF@sha256:<64 hex>")]
    BadTarget {
        /// As given.
        target: String,
        /// What is wrong.
        why: String,
    },
    /// The engine ignored the decision (an unknown rebuild id, nothing to expedite…).
    #[error("nothing recorded: {reason}")]
    Ignored {
        /// The engine's reason.
        reason: String,
    },
    /// The state folder's lock or the running factory's inbox failed.
    #[error(transparent)]
    Inbox(#[from] crate::inbox::InboxError),
}

impl DecideError {
    /// The CLI's exit code for this error: 1 refused, 2 cannot be done.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::UnknownImage { .. } | Self::BadTarget { .. } | Self::Ignored { .. } => {
                EXIT_FINDINGS
            }
            Self::Analyze(e) if e.is_finding() => EXIT_FINDINGS,
            _ => EXIT_ERROR,
        }
    }
}

/// Who decides: `--by`, else git's `user.name <user.email>`, else `$USER`.
pub fn who(by: Option<String>) -> String {
    if let Some(by) = by.filter(|b| !b.trim().is_empty()) {
        return by;
    }
    if let Ok(config) = git2::Config::open_default() {
        if let Ok(name) = config.get_string("user.name") {
            return match config.get_string("user.email") {
                Ok(email) => format!("{name} <{email}>"),
                Err(_) => name,
            };
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "unknown".to_string())
}

/// How long a decision waits for a running factory's answer: 60 s.
pub const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs one decision and prints what was recorded; returns the exit code (0 recorded,
/// 1 refused, 2 I/O). When a factory runs on the state folder, the decision is sent to
/// it ([`crate::inbox`]) and its answer printed.
pub fn run(place: &Place, action: Action, by: String, now: Timestamp) -> u8 {
    let result = match crate::inbox::OwnerLock::acquire(&place.state_dir) {
        // No factory runs: decide here, holding the lock so none starts meanwhile.
        Ok(_lock) => decide(place, action, &by, now),
        Err(crate::inbox::InboxError::Held { .. }) => {
            return send(
                &place.state_dir,
                &crate::inbox::Request::Decide { action, by },
            );
        }
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Sends `request` to the factory running on `state_dir`, prints its answer; returns
/// the exit code it gave (2 when it did not answer within [`REPLY_TIMEOUT`]).
pub fn send(state_dir: &std::path::Path, request: &crate::inbox::Request) -> u8 {
    let answer = crate::inbox::submit(state_dir, request)
        .and_then(|id| crate::inbox::wait_reply(state_dir, &id, REPLY_TIMEOUT));
    match answer {
        Ok(reply) => {
            for line in &reply.lines {
                println!("{line}");
            }
            if let Some(e) = &reply.error {
                eprintln!("error: {e}");
            }
            reply.exit
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_ERROR
        }
    }
}

/// Applies `action` through the engine and commits the runtime records it changed;
/// returns one line per decision. The caller holds the state folder's lock.
///
/// # Errors
///
/// Any [`DecideError`]; nothing is written on error.
pub fn decide(
    place: &Place,
    action: Action,
    by: &str,
    now: Timestamp,
) -> Result<Vec<String>, DecideError> {
    let model = analyze::model_named(&place.file, &place.cache_dir, &place.state_dir, &NoProgress)?;
    let store = FileStore::open(&place.state_dir)?;
    let runtime = state::load_runtime(&store, &model.graph)?;
    let config = engine_config(&model.enrollment);
    let mut engine = Engine::new(&model.graph, runtime, config)?;
    let decisions = apply(&mut engine, &model.graph, action, by, now)?;
    let mut lines: Vec<String> = decisions.iter().map(describe).collect();
    let mut changes = Changes::default();
    for name in engine.take_changed() {
        if let Some(record) = engine.runtime(&name) {
            state::stage_runtime(&mut changes, record)?;
        }
    }
    let report = state::journal::commit(&place.state_dir, &changes)?;
    lines.push(format!(
        "{}: {} runtime record(s) written",
        place.state_dir.display(),
        report.written.len()
    ));
    Ok(lines)
}

/// Feeds `action` to `engine` as its event; the decisions it made. Pure: the caller
/// persists what the engine changed (`take_changed`).
///
/// # Errors
///
/// [`DecideError::UnknownImage`], [`DecideError::BadTarget`] for a target that names
/// nothing, [`DecideError::Ignored`] when the engine ignored it (then the engine
/// changed nothing).
pub fn apply(
    engine: &mut Engine,
    graph: &Graph,
    action: Action,
    by: &str,
    now: Timestamp,
) -> Result<Vec<Decision>, DecideError> {
    let event = event(graph, action, by)?;
    let decisions = engine.apply(event, now);
    for d in &decisions {
        if let Decision::Ignored { reason } = d {
            return Err(DecideError::Ignored {
                reason: reason.clone(),
            });
        }
    }
    Ok(decisions)
}

fn event(graph: &Graph, action: Action, by: &str) -> Result<Event, DecideError> {
    let by = by.to_string();
    Ok(match action {
        Action::Expedite { target, reason } => {
            let (image, digest) = image_and_digest(graph, &target, false)?;
            Event::Expedite {
                image,
                digest,
                by,
                reason,
            }
        }
        Action::Block { target, reason } => {
            let (image, digest) = image_and_digest(graph, &target, true)?;
            Event::Block {
                image,
                digest: required(digest, &target)?,
                by,
                reason,
            }
        }
        Action::Unblock { target } => {
            let (image, digest) = image_and_digest(graph, &target, true)?;
            Event::Unblock {
                image,
                digest: required(digest, &target)?,
            }
        }
        Action::Retry { id, reason } => Event::Retry {
            id: rebuild_id(&id)?,
            by,
            reason,
        },
        Action::Approve { id } => Event::Approve {
            id: rebuild_id(&id)?,
            by,
        },
    })
}

fn required(digest: Option<Digest>, target: &str) -> Result<Digest, DecideError> {
    digest.ok_or_else(|| DecideError::BadTarget {
        target: target.to_string(),
        why: "a digest is needed".to_string(),
    })
}

fn rebuild_id(id: &str) -> Result<RebuildId, DecideError> {
    RebuildId::parse(id).map_err(|e| DecideError::Ignored {
        reason: e.to_string(),
    })
}

/// The graph name and optional digest `target` stands for: an image name, or a
/// reference (`python:3.12-slim@sha256:…`) of an image in the graph.
fn image_and_digest(
    graph: &Graph,
    target: &str,
    need_digest: bool,
) -> Result<(String, Option<Digest>), DecideError> {
    if !need_digest && graph.node(target).is_some() {
        return Ok((target.to_string(), None));
    }
    let reference = Reference::parse(target).map_err(|e| DecideError::BadTarget {
        target: target.to_string(),
        why: e.to_string(),
    })?;
    let node = graph
        .find(&reference)
        .ok_or_else(|| DecideError::UnknownImage {
            target: target.to_string(),
        })?;
    let digest = reference
        .digest()
        .map(Digest::parse)
        .transpose()
        .map_err(|e| DecideError::BadTarget {
            target: target.to_string(),
            why: e.to_string(),
        })?;
    Ok((node.name.clone(), digest))
}

/// One line for a person.
pub fn describe(d: &Decision) -> String {
    match d {
        Decision::Recorded { image, digest, .. } => format!("recorded update {digest} of {image}"),
        Decision::Hold { image, id, due_at } => format!("held {id} of {image} until {due_at}"),
        Decision::Trigger(t) => format!(
            "due now: {} of {} on {} (the running factory starts it)",
            t.id,
            t.image,
            t.bases
                .iter()
                .map(|b| b.pinned.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Decision::Supersede { image, id, reason, .. } => {
            format!("dropped {id} of {image}: {reason}")
        }
        Decision::AwaitApproval { image, id } => {
            format!("{image}: {id} waits for `image-factory approve {id}`")
        }
        Decision::RetryScheduled { image, id, due_at, .. } => {
            format!("{image}: {id} retries at {due_at}")
        }
        Decision::GiveUp { image, id, reason, held_back } => format!(
            "{image}: {id} failed ({reason}); held back: {}",
            held_back.join(", ")
        ),
        Decision::Succeeded { image, id, digest, .. } => {
            format!("{image}: {id} succeeded as {digest}")
        }
        Decision::HeldBack { image, id, reason } => format!("{image}: {id} held back: {reason}"),
        Decision::PinnedDependent { image, base, pins } => format!(
            "{image} pins {base} to {} and is not rebuilt; update its Dockerfile (or build it with `image-factory dockerfile --pin`)",
            pins.join(", ")
        ),
        Decision::Marked { image, action, target } => format!("{action} {target} of {image}: recorded"),
        Decision::Running { image, id } => format!("{image}: {id} running"),
        Decision::Unverified { image, digest, check } => match check.mode {
            crate::runtime::VerifyMode::Enforce => format!(
                "skipped update {digest} of {image}: signature {} ({}); never used as a base",
                check.verdict, check.detail
            ),
            crate::runtime::VerifyMode::Warn => format!(
                "warning: update {digest} of {image}: signature {} ({}); used anyway (verify.mode: warn)",
                check.verdict, check.detail
            ),
        },
        Decision::Verified {
            image,
            digest,
            detail,
            superseded,
        } => {
            let supersedes = if superseded.is_empty() {
                String::new()
            } else {
                format!("; supersedes {} older update(s) still held", superseded.len())
            };
            format!(
                "update {digest} of {image} verified after it was recorded ({detail}); usable as a base now{supersedes}"
            )
        }
        Decision::Ignored { reason } => format!("ignored: {reason}"),
    }
}

/// The engine's limits for `enrollment`: each image's `rebuild.maxAttempts`.
pub fn engine_config(enrollment: &crate::enrollment::Enrollment) -> EngineConfig {
    EngineConfig {
        max_attempts: enrollment.defaults_rebuild.max_attempts,
        max_attempts_by_image: enrollment
            .images
            .iter()
            .map(|i| (i.name.clone(), i.rebuild.max_attempts))
            .collect(),
        ..EngineConfig::default()
    }
}
