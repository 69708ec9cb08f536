//! Trigger backends: start the build of one rebuild and wait for its end.
//!
//! ```text
//! engine::Trigger ──Request::new──▶ Backend::run(request, ctx) ──▶ Report | Failure
//!                                    command  (local program)
//!                                    webhook  (signed JSON POST, optional status polling)
//!                                    github   (workflow_dispatch, then the run's status)
//!                                    kubernetes (a Job from a template, then its conditions)
//!                                    kargo    (a Kargo Promotion of the base's Freight, then its phase)
//! ```
//!
//! Every backend hands the build the rebuild's **pinned bases** (`repo:tag@sha256:…`),
//! so a base pushed during the hold is never picked up by a `FROM repo:tag` at build
//! time: as environment variables ([`Request::env`]), in the webhook payload
//! ([`Payload`]), or as workflow inputs. A backend's success is not the rebuild's
//! success: [`crate::rebuild`] then checks the registry for a new digest built on the
//! pinned base.
//!
//! Secrets (tokens, signing keys) are read through [`Secret::read`] when a call is made,
//! held in [`Secret`] (whose `Debug` prints `***`), and never put into a [`Failure`],
//! a log line or state.

pub mod command;
pub mod github;
pub mod kargo;
pub mod kubernetes;
pub mod webhook;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::enrollment::{Image, SecretRef};
use crate::runtime::{Cause, PinnedBase, RebuildId};

/// Most bytes of a build's output kept for the rebuild record (the tail).
pub const LOG_TAIL_BYTES: usize = 16 * 1024;

/// Everything a backend needs to start one build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The rebuild.
    pub id: RebuildId,
    /// 1 for the first attempt; with `id`, the idempotency key.
    pub attempt: u32,
    /// Graph name of the managed image.
    pub image: String,
    /// The reference the build must push (`registry/repository:tag`).
    pub reference: String,
    /// Every reference the build pushes: `reference` first, then one per extra tag.
    pub tags: Vec<String>,
    /// Every base the Dockerfile uses, pinned (`repo:tag@sha256:…`), sorted by image.
    pub bases: Vec<PinnedBase>,
    /// Build arguments from `images.yaml`.
    pub build_args: BTreeMap<String, String>,
    /// Where the source is (for remote builders).
    pub source: SourceInfo,
    /// Local paths, when the factory checked the source out (command trigger).
    pub local: Option<LocalSource>,
    /// The updates and parent rebuilds it picks up.
    pub cause: Cause,
}

/// Where a managed image's source is, as remote builders need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceInfo {
    /// Git clone URL (credentials removed), or `None` for a local path source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git: Option<String>,
    /// Branch, tag or commit; `None` for the default branch.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The exact commit analyzed, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Dockerfile path relative to the source root.
    pub dockerfile: String,
    /// Build context relative to the source root.
    pub context: String,
}

/// A checked-out source on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSource {
    /// The source root.
    pub root: PathBuf,
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile with every external base pinned (see `dockerfile --pin`).
    pub pinned_dockerfile: PathBuf,
}

impl LocalSource {
    /// Prepares a checked-out source for a build: reads `build.dockerfile` under `root`,
    /// pins every external base of it to `bases` ([`crate::dockerfile::pin`]) and writes
    /// the pinned copy to `workdir/Dockerfile` (created; outside the source tree, which
    /// stays untouched). Bases the Dockerfile names through an `ARG` the build args do
    /// not set are left to `IMAGE_FACTORY_BASE_<NAME>` — the pin refuses such a file, so
    /// it is copied unchanged then.
    ///
    /// # Errors
    ///
    /// A permanent [`Failure`] when the Dockerfile cannot be read or written, or a pin
    /// is malformed.
    pub fn prepare(
        root: &Path,
        build: &crate::enrollment::Build,
        bases: &[PinnedBase],
        workdir: &Path,
    ) -> Result<Self, Failure> {
        let dockerfile = root.join(&build.dockerfile);
        let content = std::fs::read_to_string(&dockerfile).map_err(|e| {
            Failure::permanent(format!("cannot read {}: {e}", dockerfile.display()))
        })?;
        let pins = bases
            .iter()
            .filter(|b| b.digest().is_some())
            .map(|b| crate::dockerfile::parse_pin(&b.pinned))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Failure::permanent(e.to_string()))?;
        let text = match crate::dockerfile::pin(
            &build.dockerfile,
            &content,
            &build.build_args,
            &pins,
        ) {
            Ok(pinned) => {
                for line in pinned.messages() {
                    tracing::debug!(%line, "pinned");
                }
                pinned.content
            }
            Err(crate::dockerfile::PinError::InvalidDockerfile { problems, .. }) => {
                tracing::warn!(dockerfile = %dockerfile.display(), ?problems, "not pinned; the build gets the pins as IMAGE_FACTORY_BASE_* only");
                content
            }
            Err(e) => return Err(Failure::permanent(e.to_string())),
        };
        std::fs::create_dir_all(workdir)
            .map_err(|e| Failure::permanent(format!("cannot create {}: {e}", workdir.display())))?;
        let pinned_dockerfile = workdir.join("Dockerfile");
        std::fs::write(&pinned_dockerfile, text).map_err(|e| {
            Failure::permanent(format!("cannot write {}: {e}", pinned_dockerfile.display()))
        })?;
        Ok(Self {
            root: root.to_path_buf(),
            context: root.join(&build.context),
            pinned_dockerfile,
        })
    }
}

impl Request {
    /// A request for `trigger` of `image` (its enrollment), with `source` as the
    /// builder sees it and `local` when the source is checked out here.
    pub fn new(
        trigger: &crate::engine::Trigger,
        image: &Image,
        source: SourceInfo,
        local: Option<LocalSource>,
    ) -> Self {
        let reference = image.reference.to_string();
        let mut tags = vec![reference.clone()];
        for tag in &image.tags {
            let full = image.reference.with_tag(tag.as_str()).to_string();
            if full != reference {
                tags.push(full);
            }
        }
        Self {
            id: trigger.id.clone(),
            attempt: trigger.attempt,
            image: trigger.image.clone(),
            reference,
            tags,
            bases: trigger.bases.clone(),
            build_args: image
                .build
                .as_ref()
                .map(|b| b.build_args.clone())
                .unwrap_or_default(),
            source,
            local,
            cause: trigger.cause.clone(),
        }
    }

    /// The key a receiver deduplicates on: `ID.ATTEMPT` (a retry of the same attempt —
    /// a webhook re-sent after a 5xx — carries the same key; a new attempt a new one).
    pub fn idempotency_key(&self) -> String {
        format!("{}.{}", self.id, self.attempt)
    }

    /// The pins as build arguments / environment: `IMAGE_FACTORY_BASE_<NAME>` for each
    /// base (`NAME` is the graph name upper-cased, `-` and `.` as `_`), sorted.
    pub fn base_variables(&self) -> Vec<(String, String)> {
        self.bases
            .iter()
            .map(|b| (base_variable(&b.image), b.pinned.clone()))
            .collect()
    }

    /// The environment a `command` trigger (and a `test`) runs with, sorted by name:
    /// `IMAGE_FACTORY_IMAGE`, `_REFERENCE`, `_TAGS` (space-separated references),
    /// `_REBUILD_ID`, `_ATTEMPT`, `_IDEMPOTENCY_KEY`, `_BASES` (the pins as JSON:
    /// `[{"image":…,"pinned":…}]`), one `_BASE_<NAME>` per base, and, for a local source,
    /// `_SOURCE_DIR`, `_CONTEXT` and `_DOCKERFILE` (the pinned copy).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("IMAGE_FACTORY_IMAGE".to_string(), self.image.clone()),
            (
                "IMAGE_FACTORY_REFERENCE".to_string(),
                self.reference.clone(),
            ),
            ("IMAGE_FACTORY_TAGS".to_string(), self.tags.join(" ")),
            ("IMAGE_FACTORY_REBUILD_ID".to_string(), self.id.to_string()),
            (
                "IMAGE_FACTORY_ATTEMPT".to_string(),
                self.attempt.to_string(),
            ),
            (
                "IMAGE_FACTORY_IDEMPOTENCY_KEY".to_string(),
                self.idempotency_key(),
            ),
            ("IMAGE_FACTORY_BASES".to_string(), self.bases_json()),
        ];
        env.extend(self.base_variables());
        if let Some(local) = &self.local {
            let path = |p: &PathBuf| p.to_string_lossy().into_owned();
            env.push(("IMAGE_FACTORY_SOURCE_DIR".into(), path(&local.root)));
            env.push(("IMAGE_FACTORY_CONTEXT".into(), path(&local.context)));
            env.push((
                "IMAGE_FACTORY_DOCKERFILE".into(),
                path(&local.pinned_dockerfile),
            ));
        }
        env.sort();
        env
    }

    /// The pins as a JSON array `[{"image": NAME, "pinned": "repo:tag@sha256:…"}]`.
    pub fn bases_json(&self) -> String {
        serde_json::to_string(&self.bases).unwrap_or_else(|_| "[]".to_string())
    }

    /// The JSON document a webhook receives.
    pub fn payload(&self) -> Payload<'_> {
        Payload {
            version: 1,
            event: "rebuild",
            rebuild_id: &self.id,
            attempt: self.attempt,
            idempotency_key: self.idempotency_key(),
            image: &self.image,
            reference: &self.reference,
            tags: &self.tags,
            bases: &self.bases,
            build_args: &self.build_args,
            source: &self.source,
            cause: &self.cause,
        }
    }
}

/// `IMAGE_FACTORY_BASE_<NAME>` for base `image` (upper-cased, every other character
/// than `A-Z0-9` as `_`).
pub fn base_variable(image: &str) -> String {
    let name: String = image
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("IMAGE_FACTORY_BASE_{name}")
}

/// The webhook body (`Content-Type: application/json`), version 1. Documented in the
/// README ("Webhook payload"); fields are only ever added.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload<'a> {
    /// Payload format version: 1.
    pub version: u32,
    /// Always `rebuild`.
    pub event: &'static str,
    /// The rebuild id.
    pub rebuild_id: &'a RebuildId,
    /// The attempt, from 1.
    pub attempt: u32,
    /// `rebuildId.attempt`; also sent as the `Idempotency-Key` header.
    pub idempotency_key: String,
    /// Graph name of the image.
    pub image: &'a str,
    /// The reference to push.
    pub reference: &'a str,
    /// Every reference to push.
    pub tags: &'a [String],
    /// The pinned bases.
    pub bases: &'a [PinnedBase],
    /// Build arguments.
    pub build_args: &'a BTreeMap<String, String>,
    /// Where the source is.
    pub source: &'a SourceInfo,
    /// Why it is rebuilt.
    pub cause: &'a Cause,
}

/// What a backend reports when the build ended well (by its own account: the
/// registry check follows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// What was started (`pid 4242`, a workflow run URL, a status URL).
    pub handle: Option<String>,
    /// The last [`LOG_TAIL_BYTES`] of the build's output, when the backend has it.
    pub log_tail: Option<String>,
}

/// Why a build did not succeed, in words fit for the rebuild record (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Failure {
    /// What went wrong and, where it helps, what to do.
    pub reason: String,
    /// Whether trying again may help (timeouts, 5xx, rate limits) — a retry is
    /// the engine's call; this only informs the record.
    pub transient: bool,
    /// The last [`LOG_TAIL_BYTES`] of the build's output, when the backend has it.
    pub log_tail: Option<String>,
}

impl Failure {
    /// A failure that another attempt will not fix (bad configuration, build error).
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            transient: false,
            log_tail: None,
        }
    }

    /// A failure another attempt may fix (timeout, 5xx, rate limit).
    pub fn transient(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            transient: true,
            log_tail: None,
        }
    }

    /// With the output tail.
    pub fn with_log(mut self, tail: Option<String>) -> Self {
        self.log_tail = tail;
        self
    }
}

/// What a running backend may tell its caller before it ends, and how it is stopped.
#[derive(Debug, Clone)]
pub struct Context {
    /// Cancelled when the rebuild is abandoned (shutdown, superseded): the backend stops
    /// (kills the child, stops polling) and returns a [`Failure`] saying so.
    pub cancel: CancellationToken,
    started: Option<mpsc::UnboundedSender<String>>,
}

impl Context {
    /// A context cancelled through `cancel`; handles sent to `started` as they are known.
    pub fn new(cancel: CancellationToken, started: Option<mpsc::UnboundedSender<String>>) -> Self {
        Self { cancel, started }
    }

    /// A context nobody listens to and nothing cancels (tests, one-shot runs).
    pub fn detached() -> Self {
        Self::new(CancellationToken::new(), None)
    }

    /// Reports that the build started, as `handle` (becomes the engine's `Running`).
    pub fn started(&self, handle: impl Into<String>) {
        if let Some(tx) = &self.started {
            let _ = tx.send(handle.into());
        }
    }
}

/// The future a [`Backend`] returns.
pub type RunFuture<'a> = Pin<Box<dyn Future<Output = Result<Report, Failure>> + Send + 'a>>;

/// A way to start builds. One implementation per `trigger:` backend.
pub trait Backend: Send + Sync {
    /// Backend name as written in `images.yaml` (`command`, `webhook`, `githubWorkflow`).
    fn kind(&self) -> &'static str;

    /// Starts the build for `request` and waits until it ends, is cancelled through
    /// `ctx`, or runs out of its configured time.
    ///
    /// # Errors
    ///
    /// A [`Failure`] when the build could not be started, failed, timed out or was
    /// cancelled.
    fn run<'a>(&'a self, request: &'a Request, ctx: &'a Context) -> RunFuture<'a>;
}

/// The backend for an enrolled trigger, or `None` for one this process cannot start:
/// `kubernetesJob` and `kargoPromotion` without a `cluster` client (only the controller
/// has one).
///
/// # Errors
///
/// [`Failure`] (permanent) when the backend cannot be set up (an HTTP client).
pub fn backend(
    trigger: &crate::enrollment::Trigger,
    cluster: Option<&kube::Client>,
) -> Result<Option<Box<dyn Backend>>, Failure> {
    use crate::enrollment::Trigger as T;
    Ok(match trigger {
        T::Command(c) => Some(Box::new(command::CommandBackend::new(c.clone()))),
        T::Webhook {
            url,
            token_secret,
            signing_secret,
            timeout,
        } => Some(Box::new(webhook::WebhookBackend::new(
            url.clone(),
            token_secret.clone(),
            signing_secret.clone(),
            *timeout,
        )?)),
        T::GithubWorkflow { .. } => Some(Box::new(github::GithubBackend::new(trigger)?)),
        T::KubernetesJob {
            namespace,
            template_config_map,
        } => cluster.map(|client| {
            Box::new(kubernetes::JobBackend::new(
                client.clone(),
                namespace,
                template_config_map,
            )) as Box<dyn Backend>
        }),
        T::KargoPromotion { stage, project, .. } => cluster.map(|client| {
            Box::new(kargo::PromotionBackend::new(client.clone(), project, stage))
                as Box<dyn Backend>
        }),
    })
}

/// A secret's value, read when needed. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Reads the secret `reference` points to.
    ///
    /// # Errors
    ///
    /// A permanent [`Failure`] naming the reference (never the value) when the variable
    /// is unset or empty, or the file cannot be read or is empty.
    pub fn read(reference: &SecretRef) -> Result<Self, Failure> {
        let value = match reference {
            SecretRef::Env(name) => std::env::var(name).map_err(|_| {
                Failure::permanent(format!(
                    "secret {reference} is not set: export {name} in the factory's environment"
                ))
            })?,
            SecretRef::File(path) => std::fs::read_to_string(path).map_err(|e| {
                Failure::permanent(format!("secret {reference} cannot be read: {e}"))
            })?,
        };
        let value = value
            .strip_suffix("\r\n")
            .or_else(|| value.strip_suffix('\n'))
            .unwrap_or(&value)
            .to_string();
        if value.is_empty() {
            return Err(Failure::permanent(format!("secret {reference} is empty")));
        }
        Ok(Self(value))
    }

    /// A secret from a value (tests, tokens obtained at run time).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the secret replaced by `***` (for errors and
    /// output tails that might echo it).
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_string();
        }
        text.replace(&self.0, "***")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The last `max` bytes of `bytes` as text (cut at a character boundary, invalid UTF-8
/// replaced), with a `…` marker when something was dropped.
pub fn tail(bytes: &[u8], max: usize) -> String {
    if bytes.len() <= max {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut start = bytes.len() - max;
    while start < bytes.len() && (bytes[start] & 0xC0) == 0x80 {
        start += 1;
    }
    format!("…{}", String::from_utf8_lossy(&bytes[start..]))
}

#[cfg(test)]
mod tests;
