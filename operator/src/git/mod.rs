//! Commits state changes to the configuration repository and pushes them: the audit
//! trail (NFR3) and the GitOps record (FR7).
//!
//! ```text
//! callers ──submit(Change)──▶ bounded channel ──▶ one writer task (owns the working copy)
//!     batch window (2 s) / max batch ──▶ one commit (subject, body, Image-Factory-* trailers)
//!     ──▶ push ──non-fast-forward──▶ fetch, re-apply our commits on the new head, push again
//! ```
//!
//! - [`Writer`] is the long-running form (`run`, the controller): a single task that owns the
//!   working copy, batches what arrives within [`Config::batch_window`] into one commit and
//!   pushes it. [`commit_paths`] and [`push`] are the one-shot form (`analyze --commit`).
//! - **Never lost**: a batch is committed locally before any push, so it is durable; a push
//!   that fails stays queued as local commits ahead of the remote, and every later round
//!   (and the next start, after a crash) pushes those first.
//! - **Never twice**: every commit carries an `Image-Factory-Batch` trailer; when the remote
//!   already has a commit with that batch id (a push that landed although its answer was
//!   lost), the local copy is dropped instead of re-applied.
//! - **Rebase by re-rendering**: state files are machine-owned (DESIGN.md "One owner per
//!   file"), so on a non-fast-forward the writer re-applies each of its commits' file
//!   contents on top of the fetched head. Other files changed upstream (a person's
//!   `images.yaml` edit) are kept and reported ([`Event::UpstreamChanged`],
//!   [`SyncReport::upstream_changed`]) so the caller can re-analyze.
//! - A commit that changes nothing is not made.
//! - Credentials ([`Credentials`]) are never logged and never part of an error message: every
//!   libgit2 message is scrubbed of the URL's user info and of every loaded secret.

mod credentials;
mod message;
mod repo;
mod sign;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use credentials::{
    display_url, Credentials, HostKeyChecking, HttpsCredentials, Secret, SecretSource, SshKey,
};
pub use message::{
    compose_message, parse_trailers, ChangeSource, Reason, Trailers, TRAILER_PREFIX,
};
pub use repo::SyncReport;
pub use sign::SigningKey;
pub use writer::{Change, Event, Outcome, Writer, WriterHandle};

pub use git2::Oid;

/// Git writer errors. Remote URLs in them are shown without user info, and libgit2's
/// messages are scrubbed of every secret the writer knows.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The working copy could not be opened, created or cloned.
    #[error("cannot open the working copy {path}: {message}")]
    Open {
        /// The working copy folder.
        path: PathBuf,
        /// libgit2's message (scrubbed).
        message: String,
    },
    /// A change names a path outside the state directory (absolute, or with `..`).
    #[error(
        "state change path {path} is outside the state directory: use a relative path without `..`"
    )]
    OutsideState {
        /// The offending path.
        path: PathBuf,
    },
    /// A state file could not be written into the working copy.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Staging or committing failed inside the local repository.
    #[error("cannot commit in {path}: {message}")]
    Commit {
        /// The working copy.
        path: PathBuf,
        /// libgit2's message (scrubbed).
        message: String,
    },
    /// No remote is configured, so there is nothing to push to.
    #[error("no git remote configured: set the remote URL to push")]
    NoRemote,
    /// Fetching the branch from the remote failed.
    #[error("cannot fetch {branch} from {remote}: {message}")]
    Fetch {
        /// The remote URL, without user info.
        remote: String,
        /// The branch.
        branch: String,
        /// libgit2's message (scrubbed).
        message: String,
    },
    /// The remote refused our credentials (or we had none it accepts). Not retried: the
    /// commits stay queued locally until the credentials are fixed.
    #[error("authentication to {remote} failed: {message}; check the configured SSH key, token or credential helper")]
    Auth {
        /// The remote URL, without user info.
        remote: String,
        /// What failed (scrubbed).
        message: String,
    },
    /// The SSH host key of the remote is unknown or does not match `known_hosts`.
    #[error("host key of {host} rejected: {reason}")]
    HostKey {
        /// The SSH host.
        host: String,
        /// Why (unknown host, mismatch) and what to do.
        reason: String,
    },
    /// A credential (token file, environment variable, key passphrase) could not be read.
    /// Names where it was looked for, never its content.
    #[error("cannot read the git credential from {location}: {reason}")]
    Credential {
        /// The file path or environment variable name.
        location: String,
        /// Why.
        reason: String,
    },
    /// The push kept failing for `attempts` rounds (unreachable remote, or the branch kept
    /// moving); the commits stay queued locally and are pushed on the next round.
    #[error("push of {commits} commit(s) to {remote} {branch} failed after {attempts} attempts: {message}; the changes stay queued")]
    PushFailed {
        /// The remote URL, without user info.
        remote: String,
        /// The branch.
        branch: String,
        /// Push attempts made.
        attempts: u32,
        /// Local commits still ahead of the remote.
        commits: usize,
        /// The last failure (scrubbed).
        message: String,
    },
    /// Signing a commit failed.
    #[error("cannot sign the commit with {key}: {message}")]
    Sign {
        /// The signing key file.
        key: PathBuf,
        /// What `ssh-keygen -Y sign` said.
        message: String,
    },
    /// The writer task has stopped; the change was not accepted.
    #[error("the git writer has stopped")]
    Closed,
}

/// A commit identity (author or committer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            name: "Image Factory".into(),
            email: "image-factory@localhost".into(),
        }
    }
}

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct Remote {
    /// Clone URL: a path, `file://`, `git://`, `ssh://` / `user@host:path`, `https://`.
    /// User info in it (`https://user:token@…`) works but is never shown.
    pub url: String,
    /// Remote name in the working copy (default `origin`).
    pub name: String,
    /// Branch to commit on and push to (default `main`).
    pub branch: String,
    /// How to authenticate.
    pub credentials: Credentials,
}

impl Remote {
    /// A remote at `url`, branch `main`, name `origin`, no credentials.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            name: "origin".into(),
            branch: "main".into(),
            credentials: Credentials::default(),
        }
    }
}

/// The writer's configuration. Durations are wall-clock.
#[derive(Debug, Clone)]
pub struct Config {
    /// The working copy the writer owns; cloned from [`Remote::url`] (or initialised) when
    /// missing. Changes outside the state directory made there are overwritten on a rebase.
    pub workdir: PathBuf,
    /// The state directory, relative to the working copy (default `state`).
    pub state_dir: PathBuf,
    /// Where to push; `None`: commit locally only.
    pub remote: Option<Remote>,
    /// Commit author.
    pub author: Identity,
    /// Commit committer; `None`: the author.
    pub committer: Option<Identity>,
    /// How long the writer gathers changes into one batch after the first arrives
    /// (default 2 s).
    pub batch_window: Duration,
    /// At most this many changes per commit (default 500); a full batch commits at once.
    pub max_batch: usize,
    /// Capacity of the submission channel (default 1024); `submit` waits when it is full.
    pub queue_capacity: usize,
    /// Push attempts per round before giving up with [`GitError::PushFailed`] (default 5).
    pub push_attempts: u32,
    /// Wait before the second attempt, doubled each time up to [`Config::max_backoff`]
    /// (default 100 ms), with jitter.
    pub backoff: Duration,
    /// Longest wait between two attempts (default 5 s).
    pub max_backoff: Duration,
    /// After a round gave up, the writer tries again after this long even with no new
    /// change (default 30 s).
    pub retry_interval: Duration,
    /// With a remote: after this long without a round, the writer runs one with nothing
    /// to commit, so commits others pushed (an `images.yaml` change merged by a pull
    /// request) reach the working copy; `None` (the default): only rounds with changes
    /// take in the remote's commits.
    pub sync_interval: Option<Duration>,
    /// Sign commits with this key; `None`: unsigned.
    pub signing: Option<SigningKey>,
}

impl Config {
    /// A configuration with the defaults above for a working copy at `workdir`.
    pub fn new(workdir: impl Into<PathBuf>) -> Self {
        Self {
            workdir: workdir.into(),
            state_dir: PathBuf::from("state"),
            remote: None,
            author: Identity::default(),
            committer: None,
            batch_window: Duration::from_secs(2),
            max_batch: 500,
            queue_capacity: 1024,
            push_attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            retry_interval: Duration::from_secs(30),
            sync_interval: None,
            signing: None,
        }
    }

    /// Sets the remote.
    #[must_use]
    pub fn with_remote(mut self, remote: Remote) -> Self {
        self.remote = Some(remote);
        self
    }
}

/// The repository a state directory lives in, for `analyze --commit [--push]`.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// The working tree's root.
    pub root: PathBuf,
    /// The state directory relative to `root`.
    pub state_dir: PathBuf,
    /// Identity from git's `user.name` / `user.email` (else the default), the current
    /// branch's upstream remote (else `origin`) as the remote, with user info in its URL
    /// or git's credential helper (`credential.helper`) as credentials.
    pub config: Config,
}

/// Brings the working copy at `config.workdir` up to the remote's branch: clones it
/// (an empty repository filled by the first fetch) when missing, then takes in the
/// remote's commits and pushes local commits an earlier run left unpushed — the same
/// integration the writer does each round, so the checkout a factory starts from is the
/// one its writer then owns (`run --repo`, `controller --repo`).
///
/// # Errors
///
/// [`GitError::NoRemote`] without `config.remote`; [`GitError::Open`] when the folder
/// cannot hold a repository; the fetch and push errors of a round (unreachable remote,
/// refused credentials — named without the secret).
pub fn check_out(config: &Config) -> Result<SyncReport, GitError> {
    if config.remote.is_none() {
        return Err(GitError::NoRemote);
    }
    let mut copy = repo::WorkingCopy::open(config)?;
    copy.sync()
}

/// Finds the repository holding `state_dir` (which must exist) by walking up as `git`
/// does, and the settings to commit and push there.
///
/// # Errors
///
/// [`GitError::Open`] when `state_dir` is in no git working tree (or a bare one), or the
/// paths cannot be resolved.
pub fn discover(state_dir: &Path) -> Result<Discovered, GitError> {
    let open = |message: String| GitError::Open {
        path: state_dir.to_path_buf(),
        message,
    };
    let abs = std::fs::canonicalize(state_dir).map_err(|e| open(e.to_string()))?;
    let repo = git2::Repository::discover(&abs).map_err(|e| {
        open(format!(
            "{}; run `git init` there, or leave out --commit",
            e.message()
        ))
    })?;
    let root = repo
        .workdir()
        .ok_or_else(|| open("a bare repository has no working tree".into()))?;
    let root = std::fs::canonicalize(root).map_err(|e| open(e.to_string()))?;
    let rel = abs
        .strip_prefix(&root)
        .map_err(|_| open("the state directory is outside the working tree".into()))?
        .to_path_buf();
    let mut config = Config::new(root.clone());
    config.state_dir = if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel.clone()
    };
    if let Ok(git) = repo.config() {
        if let (Ok(name), Ok(email)) = (git.get_string("user.name"), git.get_string("user.email")) {
            config.author = Identity { name, email };
        }
    }
    let branch = repo
        .head()
        .ok()
        .and_then(|h| h.shorthand().ok().map(str::to_string))
        .unwrap_or_else(|| "main".to_string());
    let remote_name = repo
        .config()
        .ok()
        .and_then(|c| c.get_string(&format!("branch.{branch}.remote")).ok())
        .unwrap_or_else(|| "origin".to_string());
    if let Ok(remote) = repo.find_remote(&remote_name) {
        if let Ok(url) = remote.url() {
            config.remote = Some(Remote {
                url: url.to_string(),
                name: remote_name.clone(),
                branch,
                credentials: Credentials {
                    credential_helper: true,
                    ..Credentials::default()
                },
            });
        }
    }
    Ok(Discovered {
        root,
        state_dir: rel,
        config,
    })
}

/// Stages `paths` (relative to `repo_dir`, files or folders; a missing one stages its
/// removal) in the existing repository at `repo_dir` and commits them on its current
/// branch with a message composed from `reason` — the one-shot form for
/// `analyze --commit`. Identity and signing come from `config`.
///
/// Returns `None` when the staged tree equals `HEAD`'s (nothing changed: no commit).
///
/// # Errors
///
/// [`GitError::Open`] when `repo_dir` is no repository, [`GitError::Commit`] when staging
/// or committing fails, [`GitError::Sign`] when signing fails.
pub fn commit_paths(
    repo_dir: &Path,
    paths: &[PathBuf],
    reason: &Reason,
    config: &Config,
) -> Result<Option<Oid>, GitError> {
    let wc = repo::WorkingCopy::open_existing(repo_dir, config)?;
    wc.commit_paths(paths, reason)
}

/// Pushes the current branch of the repository at `repo_dir` to `config.remote`, with the
/// writer's conflict handling: on a non-fast-forward it fetches, re-applies the local
/// commits' files on the new head (dropping those whose batch already landed) and retries
/// with backoff, up to [`Config::push_attempts`]. Only the files those commits touch and
/// the files changed upstream are rewritten in the working tree.
///
/// # Errors
///
/// [`GitError::NoRemote`], [`GitError::Auth`], [`GitError::HostKey`],
/// [`GitError::Credential`], [`GitError::PushFailed`] (the commits stay local), and the
/// errors of [`commit_paths`] for the re-applied commits.
pub fn push(repo_dir: &Path, config: &Config) -> Result<SyncReport, GitError> {
    let mut wc = repo::WorkingCopy::open_existing(repo_dir, config)?;
    if config.remote.is_none() {
        return Err(GitError::NoRemote);
    }
    wc.sync()
}
