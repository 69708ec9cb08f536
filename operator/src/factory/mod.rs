//! The running factory (`image-factory run`, issue 11): event sources → engine →
//! triggers → completion checks → state → git, on one machine.
//!
//! One task owns the [`Engine`]; everything else talks to it through channels. The
//! order of every step is the crash-safety argument:
//!
//! 1. a source's [`Observation`] becomes an engine event (`Observe` for an image's first
//!    digest, `Update` for a digest its record does not know; a known one is dropped);
//! 2. after every engine call, the runtime records it changed are written to the state
//!    directory all-or-nothing ([`journal::commit`]) **before** anything is acted on,
//!    then handed to the git writer;
//! 3. only then are the decisions acted on: a `Trigger` starts a build task.
//!
//! So a crash anywhere leaves either the old records (the event is seen again: the
//! registry still has the digest, the Freight file is still there) or the new ones. A
//! rebuild recorded `Triggered`/`Running` whose process died is resumed at start-up:
//! the registry is checked first ([`completion::verify`]) — a build that pushed before
//! the crash is recorded as succeeded without a second build — and only otherwise is
//! the same attempt triggered again (same idempotency key). At start-up every runtime
//! record is also handed to the git writer, so a change written to the state directory
//! but not committed before a crash reaches git once (the writer makes no commit for an
//! unchanged tree).
//!
//! The loop sleeps until the earliest of: the engine's next wake-up, a source's next
//! check, a build's progress, the next look at `images.yaml` (every
//! [`Options::config_check`], by content hash), or a signal. It never polls the
//! engine on a fixed tick.

pub mod metrics;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use metrics::Metrics;

use crate::analyze::{self, AnalyzeError, Model, NoProgress};
use crate::cli::decide;
use crate::cli::decide::{describe, engine_config};
use crate::clock::Clock;
use crate::completion::{self, Completed, Wait};
use crate::engine::{Decision, Engine, EngineError, Event, Outcome, Trigger};
use crate::enrollment::{Image, Trigger as TriggerConfig};
use crate::git::{self, Change, ChangeSource, GitError, Reason, WriterHandle};
use crate::graph::NodeKind;
use crate::inbox::{self, OwnerLock, Reply, Request as InboxRequest};
use crate::registry::{ClientSettings, CredentialStore, RegistryClient, TagSelection};
use crate::runtime::{Digest, ImageRuntime, RebuildId, SignatureVerdict, VerifyMode};
use crate::state::{self, journal, Changes, FileStore, StateError};
use crate::trigger::{self, Context, LocalSource, Request, SourceInfo};
use crate::verify::{KeyReader, Verifier};
use crate::watch::freight::{FreightReplay, ImageKey, Keys};
use crate::watch::registry::{RegistryWatcher, Target};
use crate::watch::{EventSource, Observation};

/// How often a running factory looks into its inbox for people's decisions: 500 ms.
const INBOX_POLL: Duration = Duration::from_millis(500);

/// Fewest images in a first registry pass that gets a progress bar.
const PROGRESS_FROM: usize = 50;

/// Errors that stop the factory (everything else is logged, counted and retried).
#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    /// `images.yaml` or a source could not be read at start-up (later, the last good
    /// configuration is kept).
    #[error(transparent)]
    Analyze(#[from] AnalyzeError),
    /// The state directory could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The graph has a cycle.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The git repository holding the state directory cannot be used.
    #[error("{0}")]
    Git(#[from] GitError),
    /// Registry credentials or settings are unusable.
    #[error("{0}")]
    Registry(String),
    /// Another process owns the state folder (see [`crate::inbox`]).
    #[error(transparent)]
    Owned(#[from] crate::inbox::InboxError),
    /// `--listen` could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Whether and where state changes are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitMode {
    /// Write the state directory only.
    Off,
    /// Commit to the repository holding the state directory.
    Commit,
    /// Commit and push the current branch to its remote.
    Push,
}

/// What `run` does.
#[derive(Debug, Clone)]
pub struct Options {
    /// `images.yaml`.
    pub enrollment: PathBuf,
    /// Where git sources are cached; build checkouts go to `cache_dir/work/`.
    pub cache_dir: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Watch registries (each base/external image at its Warehouse `interval`).
    pub watch_registry: bool,
    /// Replay Kargo Freight files from this folder.
    pub freight_dir: Option<PathBuf>,
    /// Registry settings (mirrors, timeouts, budgets).
    pub registry: ClientSettings,
    /// One pass, then exit (see [`run`]).
    pub once: bool,
    /// Decide and print, write and start nothing (implies `once`).
    pub dry_run: bool,
    /// With `once`: longest wait for builds in flight; then they are cancelled and the
    /// run fails.
    pub timeout: Duration,
    /// Git.
    pub git: GitMode,
    /// How often `images.yaml` is looked at for changes (default 5 s).
    pub config_check: Duration,
    /// Builds run at once, at most (default 4); further due rebuilds queue.
    pub max_parallel: usize,
    /// How long a shutdown waits for cancelled builds to stop (default 10 s).
    pub grace: Duration,
    /// Wait after a failed attempt before the next (doubled each time, at most 1 h);
    /// default 1 minute.
    pub retry_backoff: Duration,
    /// Shift the factory's clock by the duration in this file (see [`Clock`]); `None`:
    /// the system clock.
    pub clock_offset_file: Option<PathBuf>,
    /// Draw progress bars on stderr for the start-up analysis and the first registry
    /// pass (set by `run` when it runs in a terminal).
    pub progress: bool,
    /// The configuration repository to work in (`--repo`): its working copy
    /// (`workdir`) is cloned when missing and brought up to the remote's branch before
    /// anything is read; `enrollment` and `state_dir` lie inside it; the writer commits
    /// and pushes there whatever [`Options::git`] says, and takes in the remote's commits
    /// every `sync_interval`, so a merged `images.yaml` change is picked up by the
    /// config check. `None`: work in the repository holding `state_dir` (if any).
    pub repository: Option<git::Config>,
    /// With [`GitMode::Push`] on a discovered repository: how often the writer takes in
    /// the remote's commits when it has nothing to commit (`None`: only with changes).
    pub git_sync: Option<Duration>,
}

impl Options {
    /// Defaults for `images.yaml` in `enrollment`, state in `state_dir`.
    pub fn new(enrollment: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            enrollment: enrollment.into(),
            cache_dir: PathBuf::from(".cache/image-factory"),
            state_dir: state_dir.into(),
            watch_registry: true,
            freight_dir: None,
            registry: ClientSettings::default(),
            once: false,
            dry_run: false,
            timeout: Duration::from_secs(3600),
            git: GitMode::Off,
            config_check: Duration::from_secs(5),
            max_parallel: 4,
            grace: Duration::from_secs(10),
            retry_backoff: Duration::from_secs(60),
            clock_offset_file: None,
            progress: false,
            repository: None,
            git_sync: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Decisions, one line each (for `--dry-run` and `--once` output).
    pub decisions: Vec<String>,
    /// Builds started.
    pub triggered: usize,
    /// Rebuilds that succeeded.
    pub succeeded: usize,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: usize,
    /// Rebuilds given up (Failed).
    pub failed: usize,
    /// Problems of sources and configuration, one line each.
    pub problems: Vec<String>,
    /// Builds still in flight when the run stopped (signal, `--once` timeout).
    pub interrupted: usize,
}

impl Summary {
    /// The exit status of `run --once`: 0 when nothing failed, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        u8::from(
            self.failed > 0
                || self.failed_attempts > 0
                || self.interrupted > 0
                || !self.problems.is_empty(),
        )
    }
}

/// A decision made in the cluster (an `imagefactory.dev/expedite` annotation), applied
/// by the factory like one from its inbox; the answer goes back on `reply`.
#[derive(Debug)]
pub struct ClusterDecision {
    /// What to do.
    pub action: decide::Action,
    /// Who, as recorded in state and git.
    pub by: String,
    /// The decisions it led to, one line each, or why it was refused.
    pub reply: tokio::sync::oneshot::Sender<Result<Vec<String>, String>>,
}

/// Makes an event source for the enrolled images (at start-up and after each reload).
pub type SourceFactory = Box<dyn Fn(Keys) -> Box<dyn EventSource> + Send>;

/// What the in-cluster controller ([`crate::controller`]) plugs into the loop; the
/// default plugs in nothing (`run`).
#[derive(Default)]
pub struct Hooks {
    /// The cluster's event source (the Freight watch).
    pub source: Option<SourceFactory>,
    /// Every runtime record, by image name, after it is persisted: all of them at
    /// start-up, then the ones each step changed.
    pub records: Option<mpsc::UnboundedSender<Vec<(String, ImageRuntime)>>>,
    /// Decisions from the cluster.
    pub decisions: Option<mpsc::UnboundedReceiver<ClusterDecision>>,
    /// Notified when a source has something new: the loop wakes and polls the sources
    /// that are due.
    pub wake: Arc<tokio::sync::Notify>,
    /// The Kubernetes client `kubernetesJob` triggers create their Jobs with (and
    /// `verify.cosign.secret` keys are read with).
    pub cluster: Option<kube::Client>,
    /// The controller's namespace: where a `verify.cosign.secret` without a namespace
    /// is looked up.
    pub namespace: Option<String>,
}

/// A build task's messages to the loop.
enum BuildEvent {
    Started { id: RebuildId, handle: String },
}

/// Runs the factory until `shutdown` is cancelled (or, with [`Options::once`], until
/// one pass is done). `metrics` is updated as it goes (serve it with
/// [`metrics::serve`]).
///
/// # Errors
///
/// [`FactoryError`] when start-up fails (a bad `images.yaml`, unreadable state, no git
/// repository with [`GitMode::Commit`]); after start-up only a state directory that
/// cannot be written stops the loop.
pub async fn run(
    options: Options,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> Result<Summary, FactoryError> {
    run_with(options, Hooks::default(), shutdown, metrics).await
}

/// [`run`] with the controller's [`Hooks`].
///
/// # Errors
///
/// As [`run`].
pub async fn run_with(
    options: Options,
    hooks: Hooks,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> Result<Summary, FactoryError> {
    let mut factory = Factory::start(options, hooks, metrics).await?;
    let result = factory.serve(&shutdown).await;
    factory.stop().await;
    result.map(|()| factory.summary)
}

struct Factory {
    options: Options,
    model: Model,
    config_hash: Option<u64>,
    engine: Engine,
    client: RegistryClient,
    /// Signature checks of updates (`verify:`), through `client`.
    verifier: Verifier,
    sources: Vec<Box<dyn EventSource>>,
    writer: Option<(WriterHandle, tokio::task::JoinHandle<()>)>,
    builds: JoinSet<(RebuildId, Completed)>,
    build_events: (
        mpsc::UnboundedSender<BuildEvent>,
        mpsc::UnboundedReceiver<BuildEvent>,
    ),
    cancel_builds: CancellationToken,
    in_flight: BTreeSet<RebuildId>,
    queued: VecDeque<(Trigger, bool)>,
    summary: Summary,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// The state folder's lock, held for the factory's life (not in a dry run).
    _owner: Option<OwnerLock>,
    /// Who made the decision being persisted, when it came through the inbox.
    person: Option<String>,
    hooks: Hooks,
    /// When the `unsigned` updates are checked again ([`SIGNATURE_RECHECK`]).
    next_signature_recheck: tokio::time::Instant,
    /// Whether any update may still be re-checked (known after each re-check round and
    /// set by every new `unsigned` verdict): the loop wakes for re-checks only then.
    signature_recheck_pending: bool,
}

/// How often recorded `unsigned` updates (under `verify.mode: enforce`) are checked
/// again: publishers often sign a digest after pushing it.
pub const SIGNATURE_RECHECK: Duration = Duration::from_secs(60);

/// For how long after its discovery an `unsigned` update is checked again (24 h); a
/// signature that appears later is not seen (the update stays skipped).
pub const SIGNATURE_RECHECK_WINDOW: Duration = Duration::from_secs(24 * 3600);

impl Factory {
    async fn start(
        options: Options,
        hooks: Hooks,
        metrics: Arc<Metrics>,
    ) -> Result<Self, FactoryError> {
        if let Some(config) = &options.repository {
            check_out(config.clone()).await?;
        }
        let owner = if options.dry_run {
            None
        } else {
            Some(OwnerLock::acquire(&options.state_dir)?)
        };
        if !options.dry_run {
            let recovered = journal::recover(&options.state_dir)?;
            if !recovered.is_empty() {
                info!(
                    files = recovered.len(),
                    "completed an interrupted state write"
                );
            }
            crate::crash::point("recovered");
        }
        let clock = options
            .clock_offset_file
            .as_ref()
            .map_or_else(Clock::system, Clock::offset_file);
        let (model, config_hash, stale) = load_config(&options, options.progress)?;
        let store = if options.dry_run {
            FileStore::read_only(&options.state_dir)
        } else {
            FileStore::open(&options.state_dir)?
        };
        let runtime = state::load_runtime(&store, &model.graph)?;
        let engine = Engine::new(&model.graph, runtime, config_for(&options, &model))?;
        let credentials = CredentialStore::from_environment()
            .map_err(|e| FactoryError::Registry(e.to_string()))?;
        let client = RegistryClient::with_content_dir(
            options.registry.clone(),
            credentials,
            options.cache_dir.join("registry"),
        );
        let mut verifier =
            Verifier::new(client.clone()).persisted(options.cache_dir.join("signatures"));
        if let (Some(cluster), Some(ns)) = (&hooks.cluster, &hooks.namespace) {
            verifier = verifier.with_keys(KeyReader::with_cluster(cluster.clone(), ns.clone()));
        }
        let writer = match (&options.repository, options.git, options.dry_run) {
            (_, GitMode::Off, _) | (_, _, true) => None,
            (Some(config), mode, false) => {
                let mut config = config.clone();
                if mode == GitMode::Commit {
                    config.remote = None;
                }
                Some(git::Writer::spawn(config))
            }
            (None, mode, false) => Some(start_writer(&options.state_dir, mode, options.git_sync)?),
        };
        let mut factory = Self {
            options,
            model,
            config_hash: Some(config_hash),
            engine,
            client,
            verifier,
            sources: Vec::new(),
            writer,
            builds: JoinSet::new(),
            build_events: mpsc::unbounded_channel(),
            cancel_builds: CancellationToken::new(),
            in_flight: BTreeSet::new(),
            queued: VecDeque::new(),
            summary: Summary::default(),
            metrics,
            clock,
            _owner: owner,
            person: None,
            hooks,
            next_signature_recheck: tokio::time::Instant::now(),
            signature_recheck_pending: true,
        };
        if factory.options.once {
            // `run --once` exits 1 when a source failed (its image kept its analysis).
            factory.summary.problems.extend(stale);
        }
        factory.sources = factory.make_sources(factory.options.progress);
        factory.resubmit_all().await;
        factory.resume();
        factory.metrics.ready();
        Ok(factory)
    }

    /// The event sources for the current configuration; with `progress`, the
    /// registry watcher's first pass draws a bar (when it checks many images).
    fn make_sources(&self, progress: bool) -> Vec<Box<dyn EventSource>> {
        let mut sources: Vec<Box<dyn EventSource>> = Vec::new();
        if self.options.watch_registry {
            let targets = watch_targets(&self.model, &self.engine);
            info!(images = targets.len(), "watching registries");
            let total = targets.len();
            let mut watcher = RegistryWatcher::new(self.client.clone(), targets);
            if progress && total >= PROGRESS_FROM {
                watcher = watcher.with_first_pass_progress(crate::progress::registry_pass(total));
            }
            sources.push(Box::new(watcher));
        }
        if let Some(dir) = &self.options.freight_dir {
            sources.push(Box::new(FreightReplay::new(
                dir.clone(),
                image_keys(&self.model),
            )));
        }
        if let Some(make) = &self.hooks.source {
            sources.push(make(Keys::new(image_keys(&self.model))));
        }
        sources
    }

    /// Hands every runtime record to the git writer: what an earlier run wrote but did
    /// not commit before it stopped is committed now (an unchanged tree makes no commit).
    async fn resubmit_all(&mut self) {
        if let Some(records) = &self.hooks.records {
            let all = self
                .engine
                .runtimes()
                .into_iter()
                .map(|(n, r)| (n.to_string(), r.clone()))
                .collect();
            let _ = records.send(all);
        }
        let Some((writer, _)) = &self.writer else {
            return;
        };
        let mut changes = Changes::default();
        for record in self.engine.runtimes().values() {
            if let Err(e) = state::stage_runtime(&mut changes, record) {
                warn!(error = %e, "cannot render a runtime record for git");
            }
        }
        for rel in analysis_files(&self.options.state_dir) {
            if let Ok(text) = std::fs::read_to_string(self.options.state_dir.join(&rel)) {
                changes.write(rel, text);
            }
        }
        if changes.is_empty() {
            return;
        }
        let reason = Reason {
            source: Some(ChangeSource::Watcher),
            ..Reason::new("state as of start-up")
        };
        if let Err(e) = writer.submit(Change::new(changes.files, reason)).await {
            warn!(error = %e, "git writer refused the start-up state");
        }
    }

    /// Starts a task for every rebuild recorded in flight: a crash or a stop left it.
    fn resume(&mut self) {
        if self.options.dry_run {
            return;
        }
        let mut resumed = Vec::new();
        for (name, rt) in self.engine.runtimes() {
            for r in rt.rebuilds.iter().filter(|r| r.phase.is_in_flight()) {
                resumed.push(Trigger {
                    id: r.id.clone(),
                    image: name.to_string(),
                    reference: rt.reference.clone(),
                    attempt: u32::try_from(r.attempts.len()).unwrap_or(u32::MAX).max(1),
                    bases: r.bases.clone(),
                    cause: r.cause.clone(),
                });
            }
        }
        for t in resumed {
            info!(id = %t.id, image = %t.image, attempt = t.attempt, "resuming a rebuild left in flight");
            self.queued.push_back((t, true));
        }
        self.start_queued();
    }

    async fn serve(&mut self, shutdown: &CancellationToken) -> Result<(), FactoryError> {
        let mut first = true;
        let once_deadline = tokio::time::Instant::now() + self.options.timeout;
        let mut next_config_check = tokio::time::Instant::now() + self.options.config_check;
        loop {
            if shutdown.is_cancelled() {
                info!("stopping: no new work; builds in flight stay recorded and resume on the next start");
                return Ok(());
            }
            let now = self.clock.now();
            // Sources: all at the first pass, then the ones due.
            if first || !self.options.once {
                for i in 0..self.sources.len() {
                    let due = first || self.sources[i].next_due().is_some_and(|t| t <= now);
                    if due {
                        self.poll_source(i, now).await?;
                    }
                }
            }
            first = false;
            if self.signature_recheck_pending
                && tokio::time::Instant::now() >= self.next_signature_recheck
            {
                self.recheck_signatures(now).await?;
                self.next_signature_recheck = tokio::time::Instant::now() + SIGNATURE_RECHECK;
            }
            self.serve_inbox().await?;
            let decisions = self.engine.tick(now);
            self.handle(decisions, "due").await?;

            if self.options.once
                && self.in_flight.is_empty()
                && self.queued.is_empty()
                && !self.retry_pending()
            {
                return Ok(());
            }
            // Sleep until something is due.
            let wake = self.next_wake(now, next_config_check);
            let wait_until = if self.options.once {
                wake.min(once_deadline)
            } else {
                wake
            };
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep_until(wait_until) => {}
                () = self.hooks.wake.notified() => {}
                Some(d) = next_decision(&mut self.hooks.decisions) => self.cluster_decision(d).await?,
                Some(done) = self.builds.join_next(), if !self.builds.is_empty() => {
                    match done {
                        Ok((id, completed)) => self.finished(id, completed).await?,
                        Err(e) => error!(error = %e, "a build task panicked or was cancelled"),
                    }
                }
                Some(event) = self.build_events.1.recv() => {
                    match event {
                        BuildEvent::Started { id, handle } => {
                            let d = self.engine.apply(Event::Running { id, trigger: handle }, self.clock.now());
                            self.handle(d, "running").await?;
                            crate::crash::point("started");
                        }
                    }
                }
            }
            if self.options.once && tokio::time::Instant::now() >= once_deadline {
                warn!(timeout = ?self.options.timeout, "--once: builds still in flight at the timeout; cancelled");
                self.summary.problems.push(format!(
                    "{} build(s) still in flight after {}",
                    self.in_flight.len(),
                    humantime::format_duration(self.options.timeout)
                ));
                return Ok(());
            }
            if !self.options.once && tokio::time::Instant::now() >= next_config_check {
                next_config_check = tokio::time::Instant::now() + self.options.config_check;
                self.reload_if_changed().await?;
            }
        }
    }

    /// Applies the decisions people sent while the factory runs ([`crate::inbox`]):
    /// each through the engine like any event, persisted, then answered.
    async fn serve_inbox(&mut self) -> Result<(), FactoryError> {
        if self.options.dry_run {
            return Ok(());
        }
        for (id, request) in inbox::pending(&self.options.state_dir) {
            let reply = match request {
                Err(why) => Reply {
                    lines: Vec::new(),
                    error: Some(format!("the request cannot be read: {why}")),
                    exit: 2,
                },
                Ok(InboxRequest::Decide { action, by }) => {
                    info!(%by, ?action, "a decision from the inbox");
                    let now = self.clock.now();
                    match decide::apply(&mut self.engine, &self.model.graph, action, &by, now) {
                        Ok(decisions) => {
                            let mut lines: Vec<String> = decisions.iter().map(describe).collect();
                            self.person = Some(by);
                            let handled = self.handle(decisions, "decision").await;
                            self.person = None;
                            handled?;
                            lines.push(format!(
                                "recorded by the running factory (pid {}) in {}",
                                std::process::id(),
                                self.options.state_dir.display()
                            ));
                            Reply {
                                lines,
                                error: None,
                                exit: 0,
                            }
                        }
                        Err(e) => Reply {
                            lines: Vec::new(),
                            error: Some(e.to_string()),
                            exit: e.exit_code(),
                        },
                    }
                }
                Ok(InboxRequest::Rollback {
                    image,
                    tag,
                    from,
                    to,
                    platforms,
                    by,
                    reason,
                }) => {
                    let mark = crate::runtime::Mark {
                        by,
                        reason,
                        at: crate::runtime::to_second(self.clock.now()),
                    };
                    self.rolled_back(&image, &tag, (&from, &to), platforms, mark)
                        .await?
                }
            };
            crate::crash::point("answered");
            if let Err(e) = inbox::answer(&self.options.state_dir, &id, &reply) {
                warn!(error = %e, "cannot answer a request");
            }
        }
        Ok(())
    }

    /// Applies a decision made in the cluster, persists it under the person's name and
    /// answers it.
    async fn cluster_decision(&mut self, d: ClusterDecision) -> Result<(), FactoryError> {
        info!(by = %d.by, action = ?d.action, "a decision from the cluster");
        let now = self.clock.now();
        match decide::apply(&mut self.engine, &self.model.graph, d.action, &d.by, now) {
            Ok(decisions) => {
                let lines = decisions.iter().map(describe).collect();
                self.person = Some(d.by);
                let handled = self.handle(decisions, "decision").await;
                self.person = None;
                handled?;
                let _ = d.reply.send(Ok(lines));
            }
            Err(e) => {
                let _ = d.reply.send(Err(e.to_string()));
            }
        }
        Ok(())
    }

    /// Records a rollback someone made in the registry: `image`'s record gets the new
    /// `current` digest and the rollback entry, the engine is rebuilt on the records.
    async fn rolled_back(
        &mut self,
        image: &str,
        tag: &str,
        from_to: (&Digest, &Digest),
        platforms: BTreeMap<String, Digest>,
        mark: crate::runtime::Mark,
    ) -> Result<Reply, FactoryError> {
        let refused = |why: String| Reply {
            lines: Vec::new(),
            error: Some(why),
            exit: 1,
        };
        let Some(mut record) = self.engine.runtime(image).cloned() else {
            return Ok(refused(format!("{image} has no runtime record")));
        };
        let by = mark.by.clone();
        crate::cli::rollback::record_rollback(&mut record, tag, from_to, platforms, mark);
        let mut runtime: BTreeMap<String, ImageRuntime> = self
            .engine
            .runtimes()
            .into_iter()
            .map(|(n, r)| (n.to_string(), r.clone()))
            .collect();
        runtime.insert(image.to_string(), record.clone());
        let engine = match Engine::new(
            &self.model.graph,
            runtime,
            config_for(&self.options, &self.model),
        ) {
            Ok(engine) => engine,
            Err(e) => return Ok(refused(e.to_string())),
        };
        self.engine = engine;
        let mut changes = Changes::default();
        state::stage_runtime(&mut changes, &record)?;
        journal::commit(&self.options.state_dir, &changes)?;
        let summary = format!("rollback {image}: {} → {}", from_to.0, from_to.1);
        info!(%by, "{summary}");
        if let Some((writer, _)) = &self.writer {
            let reason = Reason {
                source: Some(ChangeSource::Person(by)),
                images: vec![image.to_string()],
                digests: vec![from_to.1.to_string()],
                ..Reason::new(summary.clone())
            };
            if let Err(e) = writer.submit(Change::new(changes.files, reason)).await {
                error!(error = %e, "git writer refused a change");
            }
        }
        Ok(Reply {
            lines: vec![format!("recorded {summary}")],
            error: None,
            exit: 0,
        })
    }

    /// Whether a rebuild waits for its next attempt after a failure (`--once` waits
    /// for it; a hold it does not).
    fn retry_pending(&self) -> bool {
        self.engine.runtimes().values().any(|rt| {
            rt.rebuilds
                .iter()
                .any(|r| r.phase == crate::runtime::Phase::Waiting && !r.attempts.is_empty())
        })
    }

    fn next_wake(
        &self,
        now: Timestamp,
        config_check: tokio::time::Instant,
    ) -> tokio::time::Instant {
        let mut at: Option<Timestamp> = self.engine.next_wakeup();
        if !self.options.once {
            for s in &self.sources {
                if let Some(t) = s.next_due() {
                    at = Some(at.map_or(t, |a| a.min(t)));
                }
            }
        }
        let base = tokio::time::Instant::now();
        let mut wake = if self.options.once {
            base + Duration::from_secs(3600)
        } else {
            config_check
        };
        if let Some(t) = at {
            let secs = t.duration_since(now).as_secs_f64().max(0.0);
            // The engine works in whole seconds: wake just after the second turns.
            let d = Duration::from_secs_f64(secs.min(86_400.0)) + Duration::from_millis(5);
            wake = wake.min(base + d);
        }
        if self.clock.can_jump() {
            wake = wake.min(base + Clock::POLL);
        }
        if self.signature_recheck_pending && !self.options.once {
            wake = wake.min(self.next_signature_recheck.max(base));
        }
        if !self.options.once {
            wake = wake.min(base + INBOX_POLL);
        }
        wake
    }

    async fn poll_source(&mut self, i: usize, now: Timestamp) -> Result<(), FactoryError> {
        let source = &mut self.sources[i];
        let name = source.name().to_string();
        let polled = source.poll(now).await;
        self.metrics
            .polled(&name, polled.observations.len(), polled.problems.len());
        for p in &polled.problems {
            warn!(source = %name, problem = %p, "source problem");
            if self.options.once && !self.summary.problems.contains(p) {
                self.summary.problems.push(p.clone());
            }
        }
        // One pass's observations are applied together and persisted once (one
        // journal commit, one git change) before any decision is acted on: the same
        // write-ahead rule as one event at a time, without a commit per image.
        let mut decisions = Vec::new();
        let mut applied = false;
        for o in polled.observations {
            let Some(event) = self.event_for(o, now) else {
                continue;
            };
            let Some(event) = self.with_signature(event).await else {
                continue;
            };
            crate::crash::point("observed");
            decisions.extend(self.engine.apply(event, self.clock.now()));
            applied = true;
        }
        if applied {
            self.handle(decisions, &name).await?;
        }
        Ok(())
    }

    /// The engine event an observation stands for, `None` when it changes nothing.
    fn event_for(&self, o: Observation, now: Timestamp) -> Option<Event> {
        let rt = self.engine.runtime(&o.image)?;
        if rt.current.as_ref().is_some_and(|c| c.digest == o.digest)
            || rt.updates.iter().any(|u| u.digest == o.digest)
        {
            return None;
        }
        let managed = self
            .model
            .graph
            .node(&o.image)
            .is_some_and(|n| n.kind == NodeKind::Managed);
        if rt.current.is_none() && rt.updates.is_empty() {
            return Some(Event::Observe {
                image: o.image,
                tag: o.tag,
                digest: o.digest,
                platforms: o.platforms,
            });
        }
        if managed {
            // A managed image's digests come from our own rebuilds; another digest on
            // its tag is someone else's push: logged, not an update to cascade.
            debug!(image = %o.image, digest = %o.digest, "managed image moved outside the factory; ignored");
            return None;
        }
        Some(Event::Update {
            image: o.image,
            tag: o.tag,
            digest: o.digest,
            platforms: o.platforms,
            discovered_at: o.discovered_at.unwrap_or(now),
            source: o.source,
            signature: None,
        })
    }

    /// Checks again the recorded updates whose signature was `unsigned` under
    /// `enforce`, discovered less than [`SIGNATURE_RECHECK_WINDOW`] before `now`; a
    /// changed verdict becomes an [`Event::Signature`] (a verified one makes the update
    /// usable). A registry error leaves the update for the next round.
    async fn recheck_signatures(&mut self, now: Timestamp) -> Result<(), FactoryError> {
        let window = jiff::SignedDuration::try_from(SIGNATURE_RECHECK_WINDOW)
            .unwrap_or(jiff::SignedDuration::MAX);
        let mut candidates = Vec::new();
        for (image, rt) in self.engine.runtimes() {
            for u in &rt.updates {
                let unsigned = u.signature.as_ref().is_some_and(|c| {
                    c.verdict == SignatureVerdict::Unsigned && c.mode == VerifyMode::Enforce
                });
                let recent = u
                    .discovered_at
                    .checked_add(window)
                    .is_ok_and(|end| end > now);
                if unsigned && recent && u.superseded_by.is_none() {
                    candidates.push((image.to_string(), u.digest.clone()));
                }
            }
        }
        self.signature_recheck_pending = !candidates.is_empty();
        let mut decisions = Vec::new();
        for (image, digest) in candidates {
            let policy = self.model.enrollment.verify_policy(&image).cloned();
            let reference = self.model.graph.node(&image).map(|n| n.reference.clone());
            let (Some(policy), Some(reference)) = (policy, reference) else {
                continue;
            };
            match self
                .verifier
                .verify(&reference, digest.as_str(), &policy)
                .await
            {
                Ok(judged) if judged.check.verdict != SignatureVerdict::Unsigned => {
                    info!(%image, %digest, verdict = %judged.check.verdict, detail = %judged.check.detail, "signature checked again");
                    let event = Event::Signature {
                        image,
                        digest,
                        check: judged.check,
                    };
                    decisions.extend(self.engine.apply(event, self.clock.now()));
                }
                Ok(_) => debug!(%image, %digest, "still unsigned"),
                Err(e) => {
                    warn!(%image, %digest, error = %e, "signature not checked again; retried next round")
                }
            }
        }
        if !decisions.is_empty() {
            self.handle(decisions, "signature").await?;
        }
        Ok(())
    }

    /// `event` with its signature check when it is an update of an image with a
    /// `verify:` policy; `None` when the check could not be made (a registry or key
    /// error): the update is not recorded, so the next poll sees it again and retries.
    async fn with_signature(&mut self, event: Event) -> Option<Event> {
        let Event::Update {
            image,
            tag,
            digest,
            platforms,
            discovered_at,
            source,
            signature: None,
        } = event
        else {
            return Some(event);
        };
        let policy = self.model.enrollment.verify_policy(&image).cloned();
        let reference = self.model.graph.node(&image).map(|n| n.reference.clone());
        let signature = match (policy, reference) {
            (Some(policy), Some(reference)) => {
                match self
                    .verifier
                    .verify(&reference, digest.as_str(), &policy)
                    .await
                {
                    Ok(judged) => {
                        info!(%image, %digest, verdict = %judged.check.verdict, mode = %judged.check.mode, detail = %judged.check.detail, "signature checked");
                        if judged.check.rejects()
                            && judged.check.verdict == SignatureVerdict::Unsigned
                        {
                            self.signature_recheck_pending = true;
                        }
                        Some(judged.check)
                    }
                    Err(e) => {
                        let problem = format!(
                            "{image}@{digest}: signature not checked, retried next poll: {e}"
                        );
                        warn!("{problem}");
                        if self.options.once && !self.summary.problems.contains(&problem) {
                            self.summary.problems.push(problem);
                        }
                        return None;
                    }
                }
            }
            _ => None,
        };
        Some(Event::Update {
            image,
            tag,
            digest,
            platforms,
            discovered_at,
            source,
            signature,
        })
    }

    /// Persists what `decisions` changed, then acts on them.
    async fn handle(&mut self, decisions: Vec<Decision>, cause: &str) -> Result<(), FactoryError> {
        if decisions.is_empty() && !self.options.dry_run {
            // Nothing decided can still change a record (an Observe baseline).
            self.persist(&decisions, cause).await?;
            return Ok(());
        }
        for d in &decisions {
            self.metrics.decided(d);
            match d {
                Decision::Ignored { reason } => debug!(%reason, "ignored"),
                Decision::GiveUp { .. } => {
                    self.summary.failed += 1;
                    warn!("{}", describe(d));
                }
                Decision::RetryScheduled { .. } | Decision::Unverified { .. } => {
                    warn!("{}", describe(d));
                }
                _ => info!("{}", describe(d)),
            }
            if !matches!(d, Decision::Ignored { .. }) {
                self.summary.decisions.push(describe(d));
            }
        }
        crate::crash::point("decided");
        self.persist(&decisions, cause).await?;
        if self.options.dry_run {
            return Ok(());
        }
        for d in decisions {
            if let Decision::Trigger(t) = d {
                self.queued.push_back((t, false));
            }
        }
        self.start_queued();
        Ok(())
    }

    async fn persist(&mut self, decisions: &[Decision], cause: &str) -> Result<(), FactoryError> {
        let changed = self.engine.take_changed();
        if changed.is_empty() || self.options.dry_run {
            return Ok(());
        }
        let mut changes = Changes::default();
        for name in &changed {
            if let Some(record) = self.engine.runtime(name) {
                state::stage_runtime(&mut changes, record)?;
            }
        }
        journal::commit(&self.options.state_dir, &changes)?;
        crate::crash::point("journaled");
        if let Some(records) = &self.hooks.records {
            let batch = changed
                .iter()
                .filter_map(|n| self.engine.runtime(n).map(|r| (n.clone(), r.clone())))
                .collect();
            let _ = records.send(batch);
        }
        if let Some((writer, _)) = &self.writer {
            let mut reason = reason_for(decisions, &changed, cause);
            if let Some(by) = &self.person {
                reason.source = Some(ChangeSource::Person(by.clone()));
            }
            if let Err(e) = writer.submit(Change::new(changes.files, reason)).await {
                // The state directory has the change; the next start resubmits it.
                error!(error = %e, "git writer refused a change");
            }
            crate::crash::point("submitted");
        }
        Ok(())
    }

    fn start_queued(&mut self) {
        while self.in_flight.len() < self.options.max_parallel.max(1) {
            let Some((t, resume)) = self.queued.pop_front() else {
                break;
            };
            if !self.in_flight.insert(t.id.clone()) {
                continue;
            }
            self.spawn_build(t, resume);
        }
        self.metrics.in_flight(self.in_flight.len());
    }

    fn spawn_build(&mut self, t: Trigger, resume: bool) {
        crate::crash::point("triggering");
        self.summary.triggered += usize::from(!resume);
        let image = self
            .model
            .enrollment
            .images
            .iter()
            .find(|i| i.name == t.image)
            .cloned();
        let previous = self
            .engine
            .runtime(&t.image)
            .and_then(|rt| rt.current.as_ref().map(|c| c.digest.clone()));
        let commit = self
            .model
            .analyzed
            .get(&t.image)
            .and_then(|a| a.commit.clone());
        let job = BuildJob {
            trigger: t,
            image,
            previous,
            commit,
            resume,
            client: self.client.clone(),
            cache_dir: self.options.cache_dir.clone(),
            cancel: self.cancel_builds.child_token(),
            events: self.build_events.0.clone(),
            cluster: self.hooks.cluster.clone(),
        };
        self.metrics.build_started();
        self.builds.spawn(async move {
            let id = job.trigger.id.clone();
            (id, job.run().await)
        });
    }

    async fn finished(&mut self, id: RebuildId, completed: Completed) -> Result<(), FactoryError> {
        self.in_flight.remove(&id);
        crate::crash::point("built");
        match &completed.outcome {
            Outcome::Success { digest, .. } => {
                self.summary.succeeded += 1;
                self.metrics.build_finished(true);
                info!(%id, %digest, "build verified");
            }
            Outcome::Failure { reason, log } => {
                self.summary.failed_attempts += 1;
                self.metrics.build_finished(false);
                let tail = log
                    .as_deref()
                    .map(|l| crate::trigger::tail(l.as_bytes(), 1024));
                warn!(%id, %reason, output = tail.as_deref().unwrap_or(""), "build failed");
            }
        }
        let d = self.engine.apply(
            Event::Outcome {
                id,
                outcome: completed.outcome,
            },
            self.clock.now(),
        );
        self.handle(d, "build").await?;
        crate::crash::point("outcome");
        self.start_queued();
        Ok(())
    }

    /// Re-reads `images.yaml` when its content changed; a bad one keeps the last good
    /// configuration (logged, counted, and in `status` through the metrics).
    async fn reload_if_changed(&mut self) -> Result<(), FactoryError> {
        let Ok(text) = std::fs::read(&self.options.enrollment) else {
            return Ok(());
        };
        let hash = content_hash(&text);
        if self.config_hash == Some(hash) {
            return Ok(());
        }
        match load_config(&self.options, false) {
            Ok((model, hash, _)) => {
                let runtime: BTreeMap<String, ImageRuntime> = self
                    .engine
                    .runtimes()
                    .into_iter()
                    .map(|(n, r)| (n.to_string(), r.clone()))
                    .collect();
                match Engine::new(&model.graph, runtime, config_for(&self.options, &model)) {
                    Ok(engine) => {
                        info!(
                            images = model.enrollment.images.len(),
                            "images.yaml changed: configuration reloaded"
                        );
                        self.engine = engine;
                        self.model = model;
                        self.config_hash = Some(hash);
                        self.sources = self.make_sources(false);
                        self.metrics.config(true);
                        self.submit_analysis("analyze: images.yaml changed").await;
                        let d = self.engine.tick(self.clock.now());
                        self.handle(d, "config").await?;
                    }
                    Err(e) => self.bad_config(hash, &e.to_string()),
                }
            }
            Err(e) => self.bad_config(hash, &e.to_string()),
        }
        Ok(())
    }

    fn bad_config(&mut self, hash: u64, why: &str) {
        // Remember the bad content so it is reported once, not every few seconds.
        self.config_hash = Some(hash);
        self.metrics.config(false);
        error!(file = %self.options.enrollment.display(), error = %why, "images.yaml is not usable; keeping the last good configuration");
    }

    async fn submit_analysis(&mut self, summary: &str) {
        let Some((writer, _)) = &self.writer else {
            return;
        };
        let mut changes = Changes::default();
        for rel in analysis_files(&self.options.state_dir) {
            if let Ok(text) = std::fs::read_to_string(self.options.state_dir.join(&rel)) {
                changes.write(rel, text);
            }
        }
        let reason = Reason {
            source: Some(ChangeSource::Analyze),
            ..Reason::new(summary)
        };
        if let Err(e) = writer.submit(Change::new(changes.files, reason)).await {
            warn!(error = %e, "git writer refused the analysis");
        }
    }

    /// Stops: cancels builds (their records stay Triggered/Running and resume on the
    /// next start), flushes git.
    async fn stop(&mut self) {
        self.summary.interrupted = self.in_flight.len();
        if !self.in_flight.is_empty() {
            info!(builds = self.in_flight.len(), "cancelling builds in flight");
        }
        self.cancel_builds.cancel();
        let grace = tokio::time::sleep(self.options.grace);
        tokio::pin!(grace);
        while !self.builds.is_empty() {
            tokio::select! {
                () = &mut grace => { self.builds.abort_all(); break; }
                _ = self.builds.join_next() => {}
            }
        }
        if let Some((writer, task)) = self.writer.take() {
            match writer.shutdown().await {
                Ok(outcome) => debug!(commits = outcome.commits.len(), "git writer flushed"),
                Err(e) => {
                    error!(error = %e, "git: not everything reached the remote; it is pushed on the next start")
                }
            }
            crate::crash::point("flushed");
            let _ = task.await;
        }
    }
}

/// The next cluster decision; pending forever without a channel.
async fn next_decision(
    rx: &mut Option<mpsc::UnboundedReceiver<ClusterDecision>>,
) -> Option<ClusterDecision> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Every node of the graph as Freight names it.
fn image_keys(model: &Model) -> Vec<ImageKey> {
    model
        .graph
        .nodes()
        .into_iter()
        .map(|n| ImageKey {
            name: n.name.clone(),
            repo_url: n.reference.repo_url(),
            tag: n.reference.tag().map(str::to_string),
        })
        .collect()
}

fn config_for(options: &Options, model: &Model) -> crate::engine::EngineConfig {
    crate::engine::EngineConfig {
        retry_backoff: options.retry_backoff,
        ..engine_config(&model.enrollment)
    }
}

/// Files of the analysis (`images/`, `warehouses/`, `stages/`) under the state
/// directory, relative.
fn analysis_files(state_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for folder in [state::IMAGES_DIR, state::WAREHOUSES_DIR, state::STAGES_DIR] {
        let Ok(entries) = std::fs::read_dir(state_dir.join(folder)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".yaml") {
                out.push(Path::new(folder).join(name));
            }
        }
    }
    if state_dir.join(state::ANALYSIS_FILE).is_file() {
        out.push(PathBuf::from(state::ANALYSIS_FILE));
    }
    out.sort();
    out
}

fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Analyzes `images.yaml` (writing the analysis state unless `dry_run`) and builds the
/// model with the names the state gives; `progress` draws a bar while sources are read.
/// A failed source keeps its image's last analysis (`analyze --keep-going`); one line
/// per such image is returned.
fn load_config(
    options: &Options,
    progress: bool,
) -> Result<(Model, u64, Vec<String>), FactoryError> {
    let text = std::fs::read(&options.enrollment).map_err(|source| {
        AnalyzeError::from(crate::enrollment::EnrollmentError::Read {
            path: options.enrollment.clone(),
            source,
        })
    })?;
    let hash = content_hash(&text);
    let bar = crate::progress::SourcesBar::default();
    // A source that fails keeps its image's last analysis (marked stale in state): one
    // unreachable repository must not stop the factory.
    let (report, model) = analyze::run_with_model(
        &analyze::Options {
            enrollment: options.enrollment.clone(),
            state_dir: options.state_dir.clone(),
            cache_dir: options.cache_dir.clone(),
            prune: false,
            dry_run: options.dry_run,
            keep_going: true,
        },
        if progress { &bar } else { &NoProgress },
    )?;
    for w in &report.warnings {
        warn!("{w}");
    }
    let mut stale = Vec::new();
    for s in &report.stale {
        stale.push(format!("image {:?}: stale: {}", s.image, s.reason));
        warn!(
            image = %s.image,
            reason = %s.reason,
            kept = s.kept,
            "source failed: the image keeps its last analysis (stale)"
        );
    }
    Ok((model, hash, stale))
}

/// Clones or updates the configuration repository's working copy (see
/// [`Options::repository`]) before the factory reads anything from it.
async fn check_out(config: git::Config) -> Result<(), FactoryError> {
    let workdir = config.workdir.clone();
    let remote = config
        .remote
        .as_ref()
        .map(|r| format!("{} ({})", git::display_url(&r.url), r.branch))
        .unwrap_or_default();
    let report = tokio::task::spawn_blocking(move || git::check_out(&config))
        .await
        .map_err(|_| GitError::Closed)??;
    info!(
        checkout = %workdir.display(),
        %remote,
        head = ?report.head,
        taken_in = report.upstream_changed.len(),
        "configuration repository checked out"
    );
    Ok(())
}

fn start_writer(
    state_dir: &Path,
    mode: GitMode,
    sync_interval: Option<Duration>,
) -> Result<(WriterHandle, tokio::task::JoinHandle<()>), FactoryError> {
    std::fs::create_dir_all(state_dir).map_err(|e| GitError::Open {
        path: state_dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let found = git::discover(state_dir)?;
    let mut config = found.config;
    config.sync_interval = sync_interval;
    if mode == GitMode::Commit {
        config.remote = None;
    } else if config.remote.is_none() {
        return Err(FactoryError::Git(GitError::NoRemote));
    }
    info!(repository = %found.root.display(), push = mode == GitMode::Push, "committing state changes");
    Ok(git::Writer::spawn(config))
}

/// What the registry watcher checks: every base and external image at its Warehouse
/// settings; a managed image without a recorded digest once (its baseline). Images
/// used by digest only (`FROM x@sha256:…`, no tag) have nothing to watch.
pub fn watch_targets(model: &Model, engine: &Engine) -> Vec<Target> {
    let mut out = Vec::new();
    for node in model.graph.nodes() {
        if node.reference.tag().is_none() {
            continue;
        }
        let enrolled = model.enrollment.images.iter().find(|i| i.name == node.name);
        let discovered = || model.enrollment.discovered_warehouse(&node.reference);
        if node.kind == NodeKind::Managed {
            if engine
                .runtime(&node.name)
                .is_some_and(|rt| rt.current.is_some())
            {
                continue;
            }
            let config = discovered();
            out.push(Target {
                image: node.name.clone(),
                repository: node.reference.clone(),
                selection: TagSelection::from(&config),
                interval: config.interval,
                once: true,
            });
            continue;
        }
        let config = enrolled.map_or_else(discovered, |i| i.warehouse.clone());
        out.push(Target {
            image: node.name.clone(),
            repository: node.reference.clone(),
            selection: TagSelection::from(&config),
            interval: config.interval,
            once: false,
        });
    }
    out
}

fn reason_for(decisions: &[Decision], changed: &BTreeSet<String>, cause: &str) -> Reason {
    let mut rebuilds = Vec::new();
    let mut bases = Vec::new();
    let mut digests = Vec::new();
    let mut source = None;
    for d in decisions {
        match d {
            Decision::Trigger(t) => {
                rebuilds.push(t.id.to_string());
                bases.extend(t.bases.iter().map(|b| b.pinned.clone()));
            }
            Decision::Hold { id, .. }
            | Decision::AwaitApproval { id, .. }
            | Decision::RetryScheduled { id, .. }
            | Decision::GiveUp { id, .. }
            | Decision::Running { id, .. } => rebuilds.push(id.to_string()),
            Decision::Succeeded { id, digest, .. } => {
                rebuilds.push(id.to_string());
                digests.push(digest.to_string());
            }
            Decision::Recorded { digest, .. } => {
                digests.push(digest.to_string());
                source = Some(ChangeSource::Watcher);
            }
            _ => {}
        }
    }
    rebuilds.dedup();
    bases.sort();
    bases.dedup();
    let summary = decisions
        .iter()
        .find(|d| !matches!(d, Decision::Ignored { .. }))
        .map_or_else(
            || {
                format!(
                    "{cause}: record {}",
                    changed.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            },
            describe,
        );
    Reason {
        summary,
        images: changed.iter().cloned().collect(),
        bases,
        digests,
        source,
        rebuilds,
    }
}

/// One build, run on its own task.
struct BuildJob {
    trigger: Trigger,
    image: Option<Image>,
    previous: Option<Digest>,
    commit: Option<String>,
    resume: bool,
    client: RegistryClient,
    cache_dir: PathBuf,
    cancel: CancellationToken,
    events: mpsc::UnboundedSender<BuildEvent>,
    /// The controller's Kubernetes client (for `kubernetesJob` triggers).
    cluster: Option<kube::Client>,
}

impl BuildJob {
    async fn run(self) -> Completed {
        let failed = |reason: String| Completed {
            outcome: Outcome::Failure { reason, log: None },
            log_tail: None,
            verified: None,
        };
        let t = &self.trigger;
        let Some(image) = self.image.as_ref() else {
            return failed(format!("{} is no longer enrolled", t.image));
        };
        let Some(build) = image.build.as_ref() else {
            return failed(format!("{} has no source to build", t.image));
        };
        let Ok(reference) = crate::reference::Reference::parse(&t.reference) else {
            return failed(format!("{}: bad reference {}", t.image, t.reference));
        };
        if self.resume {
            // The build may have pushed before the process died: look once.
            let expected = completion::Expected {
                reference: &reference,
                previous: self.previous.as_ref(),
                bases: &t.bases,
            };
            crate::crash::point("resuming");
            if let Ok(v) = completion::verify(&self.client, &expected, Wait::ONCE).await {
                info!(id = %t.id, digest = %v.digest, "a build left in flight had pushed: recorded without building again");
                return Completed {
                    outcome: Outcome::Success {
                        digest: v.digest.clone(),
                        base_digests: v.base_digests.clone(),
                    },
                    log_tail: None,
                    verified: Some(v),
                };
            }
        }
        let Some(trigger_config) = build.trigger.as_ref() else {
            return failed(format!(
                "{} has no trigger: enroll one (command, webhook, githubWorkflow, kubernetesJob, kargoPromotion)",
                t.image
            ));
        };
        let backend = match trigger::backend(trigger_config, self.cluster.as_ref()) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return failed(format!(
                    "{}: this trigger is not available here: `run` starts command, webhook and githubWorkflow triggers; kubernetesJob and kargoPromotion need a cluster (`controller`)",
                    t.image
                ))
            }
            Err(f) => return failed(f.reason),
        };
        let work = self.cache_dir.join("work").join(t.id.as_str());
        let local = match self.local_source(image, build, &work) {
            Ok(l) => l,
            Err(f) => return failed(f),
        };
        let (source_url, source_ref) = match &build.source {
            crate::enrollment::Source::Git { url, reference } => {
                (Some(crate::source::redact_url(url)), reference.clone())
            }
            crate::enrollment::Source::Path { .. } => (None, None),
        };
        let request = Request::new(
            t,
            image,
            SourceInfo {
                git: source_url,
                reference: source_ref,
                commit: self.commit.clone(),
                dockerfile: build.dockerfile.clone(),
                context: build.context.clone(),
            },
            local,
        );
        let (started_tx, mut started_rx) = mpsc::unbounded_channel::<String>();
        let forward = {
            let events = self.events.clone();
            let id = t.id.clone();
            tokio::spawn(async move {
                while let Some(handle) = started_rx.recv().await {
                    let _ = events.send(BuildEvent::Started {
                        id: id.clone(),
                        handle,
                    });
                }
            })
        };
        let ctx = Context::new(self.cancel.clone(), Some(started_tx));
        let wait = match trigger_config {
            TriggerConfig::Webhook { timeout, .. } => Wait {
                up_to: *timeout,
                every: Duration::from_secs(5),
            },
            TriggerConfig::GithubWorkflow { .. } => Wait {
                up_to: Duration::from_secs(30),
                every: Duration::from_secs(2),
            },
            _ => Wait::ONCE,
        };
        let completed = completion::attempt(
            backend.as_ref(),
            &request,
            &self.client,
            self.previous.as_ref(),
            build.test.as_ref(),
            wait,
            &ctx,
        )
        .await;
        drop(ctx);
        let _ = forward.await;
        let _ = std::fs::remove_dir_all(&work);
        completed
    }

    fn local_source(
        &self,
        image: &Image,
        build: &crate::enrollment::Build,
        work: &Path,
    ) -> Result<Option<LocalSource>, String> {
        let wants_local = matches!(build.trigger, Some(TriggerConfig::Command(_)));
        if !wants_local {
            return Ok(None);
        }
        let root = crate::source::checkout(
            &build.source,
            self.commit.as_deref(),
            &self.cache_dir,
            &work.join("source"),
        )
        .map_err(|e| format!("{}: {e}", image.name))?;
        // The builder runs in its own working directory: a path source written
        // relative to the current directory must not be resolved again there.
        let root = std::path::absolute(&root)
            .map_err(|e| format!("{}: {}: {e}", image.name, root.display()))?;
        LocalSource::prepare(&root, build, &self.trigger.bases, work)
            .map(Some)
            .map_err(|f| f.reason)
    }
}
