//! The single writer task: owns the working copy, batches submitted changes into commits,
//! pushes them, and keeps what it could not push queued.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::credentials::display_url;
use super::repo::{check_state_path, SyncReport, WorkingCopy};
use super::{Config, GitError, Oid, Reason};

/// One state change: files relative to the state directory (content to write, `None` to
/// remove) and why. `state::Changes::files` converts directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Relative path → content (`None`: remove).
    pub files: BTreeMap<PathBuf, Option<String>>,
    /// Why, for the commit message and trailers.
    pub reason: Reason,
}

impl Change {
    /// A change of `files` for `reason`.
    pub fn new(files: BTreeMap<PathBuf, Option<String>>, reason: Reason) -> Self {
        Self { files, reason }
    }
}

/// What the writer tells subscribers ([`WriterHandle::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A batch was committed locally.
    Committed {
        /// The commit.
        commit: Oid,
        /// Changes in it.
        changes: usize,
    },
    /// The remote branch now has every local commit.
    Pushed {
        /// The remote branch's commit.
        head: Oid,
        /// Commits of ours pushed in this round.
        commits: usize,
    },
    /// Others changed these files on the remote (relative to the repository root);
    /// `enrollment` is true when `images.yaml` is among them — re-analyze.
    UpstreamChanged {
        /// The files.
        paths: Vec<PathBuf>,
        /// Whether `images.yaml` changed.
        enrollment: bool,
    },
    /// A round failed; the changes stay queued and are retried.
    Failed {
        /// The error's message (no secrets in it).
        error: String,
    },
}

/// What a [`WriterHandle::flush`] achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Commits made in this round (a batch that changed nothing makes none).
    pub commits: Vec<Oid>,
    /// The push round, `None` without a remote.
    pub sync: Option<SyncReport>,
}

enum Command {
    Submit(Change),
    Flush(oneshot::Sender<Result<Outcome, GitError>>),
    Shutdown(oneshot::Sender<Result<Outcome, GitError>>),
}

/// The caller's side of a [`Writer`]; cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
}

impl WriterHandle {
    /// Queues `change`; waits while the queue ([`Config::queue_capacity`]) is full.
    ///
    /// # Errors
    ///
    /// [`GitError::OutsideState`] for a path that is absolute or climbs out with `..`
    /// (the change is not queued: it could never be committed);
    /// [`GitError::Closed`] when the writer has stopped.
    pub async fn submit(&self, change: Change) -> Result<(), GitError> {
        for path in change.files.keys() {
            check_state_path(path)?;
        }
        self.tx
            .send(Command::Submit(change))
            .await
            .map_err(|_| GitError::Closed)
    }

    /// Commits everything submitted so far now (not waiting for the window) and pushes.
    ///
    /// # Errors
    ///
    /// The round's error ([`GitError::PushFailed`], [`GitError::Auth`], …); the changes
    /// stay queued. [`GitError::Closed`] when the writer has stopped.
    pub async fn flush(&self) -> Result<Outcome, GitError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Flush(reply))
            .await
            .map_err(|_| GitError::Closed)?;
        answer.await.map_err(|_| GitError::Closed)?
    }

    /// Flushes, then stops the writer.
    ///
    /// # Errors
    ///
    /// As [`WriterHandle::flush`]; what could not be pushed stays as local commits in the
    /// working copy (pushed on the next start), what could not be committed is lost with
    /// the process, so callers keep their state files as the source to re-submit from.
    pub async fn shutdown(&self) -> Result<Outcome, GitError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Shutdown(reply))
            .await
            .map_err(|_| GitError::Closed)?;
        answer.await.map_err(|_| GitError::Closed)?
    }

    /// Receives the writer's [`Event`]s from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// The single git writer task.
pub struct Writer {
    config: Config,
    copy: Option<WorkingCopy>,
    pending: Vec<Change>,
    events: broadcast::Sender<Event>,
}

impl Writer {
    /// Starts the writer on the current tokio runtime. It first opens (or creates) the
    /// working copy and pushes local commits left ahead of the remote by an earlier run
    /// (a crash between commit and push), then serves submissions.
    pub fn spawn(config: Config) -> (WriterHandle, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let (events, _) = broadcast::channel(256);
        let remote = config
            .remote
            .as_ref()
            .map(|r| display_url(&r.url))
            .unwrap_or_default();
        let span = tracing::info_span!("git_writer", workdir = %config.workdir.display(), remote = %remote);
        let writer = Self {
            config,
            copy: None,
            pending: Vec::new(),
            events: events.clone(),
        };
        let task = tokio::spawn(writer.run(rx).instrument(span));
        (WriterHandle { tx, events }, task)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut retry_at = match self.round().await {
            Ok(_) => None,
            Err(_) => Some(Instant::now() + self.config.retry_interval),
        };
        let mut deadline: Option<Instant> = None;
        // Only with a remote: a local-only copy has nothing to take in.
        let sync_every = self
            .config
            .sync_interval
            .filter(|_| self.config.remote.is_some());
        let mut sync_at = sync_every.map(|d| Instant::now() + d);
        loop {
            let wake = [deadline, retry_at, sync_at].into_iter().flatten().min();
            let command = tokio::select! {
                command = rx.recv() => command,
                () = sleep_until(wake) => {
                    deadline = None;
                    retry_at = self.round_retrying().await;
                    sync_at = sync_every.map(|d| Instant::now() + d);
                    continue;
                }
            };
            match command {
                Some(Command::Submit(change)) => {
                    self.pending.push(change);
                    if self.pending.len() >= self.config.max_batch.max(1) {
                        deadline = None;
                        retry_at = self.round_retrying().await;
                        sync_at = sync_every.map(|d| Instant::now() + d);
                    } else if deadline.is_none() {
                        deadline = Some(Instant::now() + self.config.batch_window);
                    }
                }
                Some(Command::Flush(reply)) => {
                    deadline = None;
                    let result = self.round().await;
                    retry_at = result
                        .is_err()
                        .then(|| Instant::now() + self.config.retry_interval);
                    sync_at = sync_every.map(|d| Instant::now() + d);
                    let _ = reply.send(result);
                }
                Some(Command::Shutdown(reply)) => {
                    let _ = reply.send(self.round().await);
                    return;
                }
                None => {
                    let _ = self.round().await;
                    return;
                }
            }
        }
    }

    async fn round_retrying(&mut self) -> Option<Instant> {
        self.round()
            .await
            .err()
            .map(|_| Instant::now() + self.config.retry_interval)
    }

    /// Commits the pending changes (in batches of at most `max_batch`) and pushes.
    async fn round(&mut self) -> Result<Outcome, GitError> {
        let copy = self.copy.take();
        let pending = std::mem::take(&mut self.pending);
        let config = self.config.clone();
        let events = self.events.clone();
        let joined =
            tokio::task::spawn_blocking(move || blocking_round(copy, pending, &config, &events))
                .await;
        let (copy, left, result) = match joined {
            Ok(parts) => parts,
            // The blocking round panicked: the working copy is reopened next time.
            Err(_) => (None, Vec::new(), Err(GitError::Closed)),
        };
        self.copy = copy;
        // Changes not committed go back to the front, ahead of what arrived meanwhile.
        let mut left = left;
        left.append(&mut self.pending);
        self.pending = left;
        if let Err(e) = &result {
            tracing::warn!(error = %e, queued = self.pending.len(), "git round failed; changes stay queued");
            let _ = self.events.send(Event::Failed {
                error: e.to_string(),
            });
        }
        result
    }
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

type RoundParts = (Option<WorkingCopy>, Vec<Change>, Result<Outcome, GitError>);

fn blocking_round(
    copy: Option<WorkingCopy>,
    mut pending: Vec<Change>,
    config: &Config,
    events: &broadcast::Sender<Event>,
) -> RoundParts {
    let mut copy = match copy {
        Some(copy) => copy,
        None => match WorkingCopy::open(config) {
            Ok(copy) => copy,
            Err(e) => return (None, pending, Err(e)),
        },
    };
    let mut outcome = Outcome::default();
    let size = config.max_batch.max(1);
    while !pending.is_empty() {
        let rest = pending.split_off(size.min(pending.len()));
        match copy.commit_changes(&pending) {
            Ok(Some(commit)) => {
                tracing::debug!(%commit, changes = pending.len(), "committed state");
                let _ = events.send(Event::Committed {
                    commit,
                    changes: pending.len(),
                });
                outcome.commits.push(commit);
                crate::crash::point("git-committed");
            }
            Ok(None) => {}
            Err(e) => {
                let mut left = pending;
                left.extend(rest);
                return (Some(copy), left, Err(e));
            }
        }
        pending = rest;
    }
    if config.remote.is_some() {
        match copy.sync() {
            Ok(report) => {
                if !report.kept_local.is_empty() {
                    tracing::warn!(
                        files = ?report.kept_local,
                        "the remote changed files that have uncommitted local changes; left them as they are (commit or discard them to take the remote's)"
                    );
                }
                if !report.upstream_changed.is_empty() {
                    let enrollment = report
                        .upstream_changed
                        .iter()
                        .any(|p| p.file_name().is_some_and(|n| n == "images.yaml"));
                    let _ = events.send(Event::UpstreamChanged {
                        paths: report.upstream_changed.clone(),
                        enrollment,
                    });
                }
                if let (Some(head), true) = (report.head, report.pushed > 0) {
                    let _ = events.send(Event::Pushed {
                        head,
                        commits: report.pushed,
                    });
                }
                outcome.sync = Some(report);
                crate::crash::point("git-pushed");
            }
            Err(e) => return (Some(copy), Vec::new(), Err(e)),
        }
    }
    (Some(copy), Vec::new(), Ok(outcome))
}
