//! The working copy: staging and committing state files, fetching, pushing, and the
//! rebase-by-re-applying of local commits when the remote moved.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use git2::{build::CheckoutBuilder, ErrorCode, Oid, Repository};

use super::credentials::{display_url, Session};
use super::message::{compose_message, new_batch_id, parse_trailers};
use super::writer::Change;
use super::{Config, GitError, Identity, Reason, Remote, SigningKey};

/// What a push round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The remote branch's commit after the round (`None`: nothing on it yet).
    pub head: Option<Oid>,
    /// Commits of ours that reached the remote in this round.
    pub pushed: usize,
    /// Push attempts made (0: nothing to push).
    pub attempts: u32,
    /// Local commits re-applied on a newer remote head.
    pub rebased: usize,
    /// Local commits dropped because the remote already had their batch.
    pub duplicates_skipped: usize,
    /// Files (relative to the repository root) that others changed on the remote since
    /// the last fetch, sorted — `images.yaml` among them calls for a re-analysis.
    pub upstream_changed: Vec<PathBuf>,
    /// Files the remote changed that were left as they are in the working tree because
    /// they had local changes not committed (a person's edit, or a state file written
    /// after the commit being pushed): never overwritten, sorted.
    pub kept_local: Vec<PathBuf>,
}

/// Why one push attempt failed.
enum PushFailure {
    /// The remote branch moved (non-fast-forward, or the ref changed under us).
    Rejected(String),
    /// The remote refused our credentials.
    Auth(String),
    /// The SSH host key check failed: `(host, reason)`.
    HostKey(String, String),
    /// Anything else (unreachable, timeout): retried with backoff.
    Transient(String),
}

/// A repository with a working tree, opened for committing state.
pub(crate) struct WorkingCopy {
    repo: Repository,
    root: PathBuf,
    state_dir: PathBuf,
    remote: Option<Remote>,
    author: Identity,
    committer: Identity,
    signing: Option<SigningKey>,
    push_attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
}

fn open_err(path: &Path) -> impl Fn(git2::Error) -> GitError + '_ {
    move |e| GitError::Open {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    }
}

impl WorkingCopy {
    /// Opens the writer-owned working copy at `config.workdir`, creating it (an empty
    /// repository on the remote's branch, filled by the first fetch) when missing.
    ///
    /// # Errors
    ///
    /// [`GitError::Open`].
    pub fn open(config: &Config) -> Result<Self, GitError> {
        let root = &config.workdir;
        let repo = if root.join(".git").exists() {
            Repository::open(root).map_err(open_err(root))?
        } else {
            std::fs::create_dir_all(root).map_err(|source| GitError::Write {
                path: root.clone(),
                source,
            })?;
            let repo = Repository::init(root).map_err(open_err(root))?;
            if let Some(remote) = &config.remote {
                // For people looking at the copy; the writer itself uses the URL directly.
                repo.remote(&remote.name, &remote.url)
                    .map_err(open_err(root))?;
                repo.set_head(&format!("refs/heads/{}", remote.branch))
                    .map_err(open_err(root))?;
            }
            repo
        };
        Self::from_repo(repo, root, config)
    }

    /// Opens an existing repository with a working tree (a CI checkout).
    ///
    /// # Errors
    ///
    /// [`GitError::Open`].
    pub fn open_existing(dir: &Path, config: &Config) -> Result<Self, GitError> {
        let repo = Repository::open(dir).map_err(open_err(dir))?;
        Self::from_repo(repo, dir, config)
    }

    fn from_repo(repo: Repository, root: &Path, config: &Config) -> Result<Self, GitError> {
        let root = repo
            .workdir()
            .map(Path::to_path_buf)
            .ok_or_else(|| GitError::Open {
                path: root.to_path_buf(),
                message: "a bare repository has no working tree; give a clone".into(),
            })?;
        Ok(Self {
            repo,
            root,
            state_dir: config.state_dir.clone(),
            remote: config.remote.clone(),
            author: config.author.clone(),
            committer: config
                .committer
                .clone()
                .unwrap_or_else(|| config.author.clone()),
            signing: config.signing.clone(),
            push_attempts: config.push_attempts.max(1),
            backoff: config.backoff,
            max_backoff: config.max_backoff,
        })
    }

    fn commit_err(&self) -> impl Fn(git2::Error) -> GitError + '_ {
        move |e| GitError::Commit {
            path: self.root.clone(),
            message: e.message().to_string(),
        }
    }

    /// The commit `HEAD` points at (`None` on an unborn branch).
    pub fn head(&self) -> Option<Oid> {
        self.repo.refname_to_id("HEAD").ok()
    }

    fn tracking_ref(&self) -> Option<String> {
        self.remote
            .as_ref()
            .map(|r| format!("refs/remotes/{}/{}", r.name, r.branch))
    }

    fn tracking(&self) -> Option<Oid> {
        self.tracking_ref()
            .and_then(|r| self.repo.refname_to_id(&r).ok())
    }

    /// Local commits not on the remote branch (as last fetched).
    pub fn ahead(&self) -> usize {
        let Some(head) = self.head() else { return 0 };
        self.commits_between(head, self.tracking())
            .map(|c| c.len())
            .unwrap_or(0)
    }

    /// Commits reachable from `tip` and not from `hide`, oldest first.
    fn commits_between(&self, tip: Oid, hide: Option<Oid>) -> Result<Vec<Oid>, git2::Error> {
        let mut walk = self.repo.revwalk()?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)?;
        walk.push(tip)?;
        if let Some(hide) = hide {
            walk.hide(hide)?;
        }
        walk.collect()
    }

    /// Writes and stages the files of `changes` (a later change wins on the same path) and
    /// commits them as one batch. `None`: nothing changed, no commit.
    ///
    /// # Errors
    ///
    /// [`GitError::OutsideState`], [`GitError::Write`], [`GitError::Commit`],
    /// [`GitError::Sign`].
    pub fn commit_changes(&self, changes: &[Change]) -> Result<Option<Oid>, GitError> {
        let mut files: BTreeMap<PathBuf, Option<&str>> = BTreeMap::new();
        for change in changes {
            for (rel, content) in &change.files {
                let rel = self.state_path(rel)?;
                files.insert(rel, content.as_deref());
            }
        }
        let mut index = self.repo.index().map_err(self.commit_err())?;
        for (rel, content) in &files {
            let path = self.root.join(rel);
            match content {
                Some(content) => {
                    if std::fs::read(&path).ok().as_deref() != Some(content.as_bytes()) {
                        write_file(&path, content.as_bytes())?;
                    }
                    self.stage_content(&mut index, rel, &path, content.as_bytes())?;
                }
                None => {
                    remove_file(&path)?;
                    if index.get_path(rel, 0).is_some() {
                        index.remove_path(rel).map_err(self.commit_err())?;
                    }
                }
            }
        }
        index.write().map_err(self.commit_err())?;
        let reasons: Vec<&Reason> = changes.iter().map(|c| &c.reason).collect();
        self.commit_index(&mut index, &compose_message(&reasons, &new_batch_id()))
    }

    /// Stages `content` — what the file at `path` holds — as `rel`, from memory: no second
    /// read of the file and no gitattributes filter lookup (state files are committed
    /// exactly as the factory writes them), the file's stat data recorded so `git status`
    /// sees it clean, and nothing written when the index already has this blob. In a
    /// burst of thousands of records, `add_path`'s per-file attribute lookups were a
    /// fifth of the controller's CPU (`perf`, `cargo bench --bench controller`).
    fn stage_content(
        &self,
        index: &mut git2::Index,
        rel: &Path,
        path: &Path,
        content: &[u8],
    ) -> Result<(), GitError> {
        use std::os::unix::ffi::OsStrExt as _;
        use std::os::unix::fs::MetadataExt as _;
        let id = Oid::hash_object(git2::ObjectType::Blob, content).map_err(self.commit_err())?;
        if index.get_path(rel, 0).is_some_and(|e| e.id == id) {
            return Ok(());
        }
        let meta = std::fs::metadata(path).map_err(|source| GitError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        let time = |secs: i64, nanos: i64| {
            git2::IndexTime::new(
                i32::try_from(secs).unwrap_or(i32::MAX),
                u32::try_from(nanos).unwrap_or(0),
            )
        };
        // Index stat fields are 32 bits wide; git itself truncates them the same way.
        let low32 = |v: u64| u32::try_from(v & u64::from(u32::MAX)).unwrap_or(0);
        let entry = git2::IndexEntry {
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            dev: low32(meta.dev()),
            ino: low32(meta.ino()),
            mode: 0o100_644,
            uid: meta.uid(),
            gid: meta.gid(),
            file_size: u32::try_from(content.len()).unwrap_or(u32::MAX),
            id,
            flags: 0,
            flags_extended: 0,
            path: rel.as_os_str().as_bytes().to_vec(),
        };
        index
            .add_frombuffer(&entry, content)
            .map_err(self.commit_err())
    }

    /// Stages `paths` (relative to the root; files or folders, missing ones removed) and
    /// commits them with a message for `reason`.
    ///
    /// # Errors
    ///
    /// [`GitError::Commit`], [`GitError::Sign`].
    pub fn commit_paths(
        &self,
        paths: &[PathBuf],
        reason: &Reason,
    ) -> Result<Option<Oid>, GitError> {
        let mut index = self.repo.index().map_err(self.commit_err())?;
        let specs: Vec<String> = paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        index
            .add_all(specs.iter(), git2::IndexAddOption::DEFAULT, None)
            .map_err(self.commit_err())?;
        index
            .update_all(specs.iter(), None)
            .map_err(self.commit_err())?;
        index.write().map_err(self.commit_err())?;
        self.commit_index(&mut index, &compose_message(&[reason], &new_batch_id()))
    }

    /// `rel` inside the state directory, relative to the root.
    fn state_path(&self, rel: &Path) -> Result<PathBuf, GitError> {
        check_state_path(rel)?;
        Ok(self.state_dir.join(rel))
    }

    fn signature(identity: &Identity) -> Result<git2::Signature<'static>, git2::Error> {
        git2::Signature::now(&identity.name, &identity.email)
    }

    fn commit_index(
        &self,
        index: &mut git2::Index,
        message: &str,
    ) -> Result<Option<Oid>, GitError> {
        let tree_id = index.write_tree().map_err(self.commit_err())?;
        let parent = match self.head() {
            Some(oid) => Some(self.repo.find_commit(oid).map_err(self.commit_err())?),
            None => None,
        };
        if parent.as_ref().map(|p| p.tree_id()) == Some(tree_id) {
            return Ok(None);
        }
        if parent.is_none() && index.is_empty() {
            return Ok(None);
        }
        let tree = self.repo.find_tree(tree_id).map_err(self.commit_err())?;
        let author = Self::signature(&self.author).map_err(self.commit_err())?;
        let committer = Self::signature(&self.committer).map_err(self.commit_err())?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let oid = self.create_commit(&author, &committer, message, &tree, &parents)?;
        self.move_head(oid)?;
        Ok(Some(oid))
    }

    /// Writes a commit object (signed when configured) without moving any ref.
    fn create_commit(
        &self,
        author: &git2::Signature<'_>,
        committer: &git2::Signature<'_>,
        message: &str,
        tree: &git2::Tree<'_>,
        parents: &[&git2::Commit<'_>],
    ) -> Result<Oid, GitError> {
        let buffer = self
            .repo
            .commit_create_buffer(author, committer, message, tree, parents)
            .map_err(self.commit_err())?;
        let Some(key) = &self.signing else {
            let odb = self.repo.odb().map_err(self.commit_err())?;
            return odb
                .write(git2::ObjectType::Commit, &buffer)
                .map_err(self.commit_err());
        };
        let signature = key.sign(&buffer)?;
        let content = String::from_utf8_lossy(&buffer);
        self.repo
            .commit_signed(&content, &signature, None)
            .map_err(self.commit_err())
    }

    /// Points `HEAD` (its branch, or `HEAD` itself when detached) at `oid`.
    fn move_head(&self, oid: Oid) -> Result<(), GitError> {
        let head = self
            .repo
            .find_reference("HEAD")
            .map_err(self.commit_err())?;
        match head.symbolic_target().map_err(self.commit_err())? {
            Some(branch) => {
                self.repo
                    .reference(branch, oid, true, "image-factory: commit state")
                    .map_err(self.commit_err())?;
            }
            None => self
                .repo
                .set_head_detached(oid)
                .map_err(self.commit_err())?,
        }
        Ok(())
    }

    /// The ref to push from: `HEAD`'s branch, or `HEAD` when detached.
    fn push_source(&self) -> String {
        self.repo
            .find_reference("HEAD")
            .ok()
            .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_string))
            .unwrap_or_else(|| "HEAD".into())
    }

    /// Fetches, integrates, pushes; retries rejected and failed pushes with backoff.
    ///
    /// # Errors
    ///
    /// [`GitError::NoRemote`], [`GitError::Credential`], [`GitError::Auth`],
    /// [`GitError::HostKey`] (not retried), [`GitError::PushFailed`] after
    /// [`Config::push_attempts`] rounds, [`GitError::Commit`] while re-applying.
    pub fn sync(&mut self) -> Result<SyncReport, GitError> {
        let remote = self.remote.clone().ok_or(GitError::NoRemote)?;
        let session = RefCell::new(Session::new(&remote.url, &remote.credentials)?);
        let mut report = SyncReport::default();
        let mut delay = self.backoff;
        let mut last = String::new();
        for attempt in 1..=self.push_attempts {
            if attempt > 1 {
                // Jitter so two writers that collided do not collide again in lockstep.
                let jitter = fastrand::u64(0..=delay.as_millis() as u64 / 2 + 1);
                std::thread::sleep(delay + Duration::from_millis(jitter));
                delay = (delay * 2).min(self.max_backoff);
            }
            let before = self.tracking();
            if let Err(failure) = self.fetch(&remote, &session) {
                match failure {
                    PushFailure::Transient(m) | PushFailure::Rejected(m) => {
                        last = m;
                        continue;
                    }
                    failure => return Err(self.fatal(&remote, &session, failure)),
                }
            }
            self.note_upstream(before, &mut report)?;
            self.integrate(&mut report)?;
            let Some(head) = self.head() else {
                report.head = self.tracking();
                return Ok(report);
            };
            let ahead = self.ahead();
            if ahead == 0 {
                report.head = self.tracking();
                return Ok(report);
            }
            report.attempts = attempt;
            match self.push_once(&remote, &session) {
                Ok(()) => {
                    if let Some(tracking) = self.tracking_ref() {
                        self.repo
                            .reference(&tracking, head, true, "image-factory: pushed")
                            .map_err(self.commit_err())?;
                    }
                    report.pushed += ahead;
                    report.head = Some(head);
                    tracing::info!(remote = %display_url(&remote.url), branch = %remote.branch, commits = ahead, "pushed state");
                    return Ok(report);
                }
                Err(PushFailure::Rejected(m) | PushFailure::Transient(m)) => {
                    tracing::debug!(remote = %display_url(&remote.url), attempt, reason = %m, "push failed, retrying");
                    last = m;
                }
                Err(failure) => return Err(self.fatal(&remote, &session, failure)),
            }
        }
        let message = session.borrow().scrub(&last);
        Err(GitError::PushFailed {
            remote: display_url(&remote.url),
            branch: remote.branch.clone(),
            attempts: self.push_attempts,
            commits: self.ahead(),
            message,
        })
    }

    fn fatal(&self, remote: &Remote, session: &RefCell<Session>, failure: PushFailure) -> GitError {
        let session = session.borrow();
        match failure {
            PushFailure::HostKey(host, reason) => GitError::HostKey { host, reason },
            PushFailure::Auth(m) | PushFailure::Rejected(m) | PushFailure::Transient(m) => {
                GitError::Auth {
                    remote: display_url(&remote.url),
                    message: session.scrub(&m),
                }
            }
        }
    }

    fn callbacks<'a>(session: &'a RefCell<Session>) -> git2::RemoteCallbacks<'a> {
        let mut callbacks = git2::RemoteCallbacks::new();
        callbacks.credentials(move |url, user, allowed| {
            session.borrow_mut().credential(url, user, allowed)
        });
        callbacks.certificate_check(move |cert, host| session.borrow_mut().certificate(cert, host));
        callbacks
    }

    fn classify(session: &RefCell<Session>, e: &git2::Error) -> PushFailure {
        let s = session.borrow();
        let message = s.scrub(e.message());
        if let Some((host, reason)) = &s.host_key_error {
            return PushFailure::HostKey(host.clone(), reason.clone());
        }
        let lower = message.to_ascii_lowercase();
        match e.code() {
            ErrorCode::NotFastForward | ErrorCode::Modified => PushFailure::Rejected(message),
            ErrorCode::Auth => PushFailure::Auth(message),
            _ if lower.contains("401")
                || lower.contains("403")
                || lower.contains("authentication") =>
            {
                PushFailure::Auth(message)
            }
            _ => PushFailure::Transient(message),
        }
    }

    fn fetch(&self, remote: &Remote, session: &RefCell<Session>) -> Result<(), PushFailure> {
        let Some(tracking) = self.tracking_ref() else {
            return Ok(());
        };
        session.borrow_mut().reset_attempts();
        let mut anonymous = self
            .repo
            .remote_anonymous(&remote.url)
            .map_err(|e| Self::classify(session, &e))?;
        let mut options = git2::FetchOptions::new();
        options.remote_callbacks(Self::callbacks(session));
        options.download_tags(git2::AutotagOption::None);
        let spec = format!("+refs/heads/{}:{tracking}", remote.branch);
        anonymous
            .fetch(&[spec.as_str()], Some(&mut options), None)
            .map_err(|e| Self::classify(session, &e))
    }

    fn push_once(&self, remote: &Remote, session: &RefCell<Session>) -> Result<(), PushFailure> {
        session.borrow_mut().reset_attempts();
        let source = self.push_source();
        let target = format!("refs/heads/{}", remote.branch);
        let local_path = local_remote_path(&remote.url);
        // libgit2's local transport force-writes the remote ref without comparing it to
        // what we fetched, so a concurrent pusher's commit could be lost. For a local
        // remote, send the objects to a private ref, then move the branch with a
        // compare-and-swap under the ref lock, as receive-pack does.
        let incoming = format!("refs/image-factory/incoming/{:016x}", fastrand::u64(..));
        let spec = match &local_path {
            Some(_) => format!("+{source}:{incoming}"),
            None => format!("{source}:{target}"),
        };
        let rejected: RefCell<Option<String>> = RefCell::new(None);
        {
            let mut anonymous = self
                .repo
                .remote_anonymous(&remote.url)
                .map_err(|e| Self::classify(session, &e))?;
            let mut callbacks = Self::callbacks(session);
            callbacks.push_update_reference(|name, status| {
                if let Some(status) = status {
                    *rejected.borrow_mut() = Some(format!("{name}: {status}"));
                }
                Ok(())
            });
            let mut options = git2::PushOptions::new();
            options.remote_callbacks(callbacks);
            anonymous
                .push(&[spec.as_str()], Some(&mut options))
                .map_err(|e| Self::classify(session, &e))?;
        }
        if let Some(status) = rejected.into_inner() {
            return Err(PushFailure::Rejected(session.borrow().scrub(&status)));
        }
        let Some(path) = local_path else {
            return Ok(());
        };
        let head = self
            .head()
            .ok_or_else(|| PushFailure::Transient("nothing to push".into()))?;
        let target_repo = Repository::open(&path).map_err(|e| Self::classify(session, &e))?;
        let expected = self.tracking();
        let swap = match expected {
            Some(old) => {
                target_repo.reference_matching(&target, head, true, old, "image-factory: push")
            }
            None => target_repo.reference(&target, head, false, "image-factory: push"),
        };
        if let Ok(mut r) = target_repo.find_reference(&incoming) {
            let _ = r.delete();
        }
        match swap {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    ErrorCode::Modified | ErrorCode::Exists | ErrorCode::Locked
                ) =>
            {
                Err(PushFailure::Rejected(format!(
                    "{target} moved on the remote"
                )))
            }
            Err(e) => Err(Self::classify(session, &e)),
        }
    }

    /// Records the files others changed on the remote between `before` and the fetched
    /// tracking ref.
    fn note_upstream(&self, before: Option<Oid>, report: &mut SyncReport) -> Result<(), GitError> {
        let (Some(before), Some(after)) = (before, self.tracking()) else {
            return Ok(());
        };
        if before == after {
            return Ok(());
        }
        let mut paths: BTreeSet<PathBuf> = report.upstream_changed.drain(..).collect();
        paths.extend(self.changed_paths(Some(before), after)?);
        report.upstream_changed = paths.into_iter().collect();
        Ok(())
    }

    fn changed_paths(&self, from: Option<Oid>, to: Oid) -> Result<Vec<PathBuf>, GitError> {
        let tree_of = |oid: Oid| self.repo.find_commit(oid).and_then(|c| c.tree());
        let old = from.map(tree_of).transpose().map_err(self.commit_err())?;
        let new = tree_of(to).map_err(self.commit_err())?;
        let diff = self
            .repo
            .diff_tree_to_tree(old.as_ref(), Some(&new), None)
            .map_err(self.commit_err())?;
        let mut out = Vec::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(p) = file.path() {
                    if !out.iter().any(|o: &PathBuf| o == p) {
                        out.push(p.to_path_buf());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Brings `HEAD` on top of the fetched remote branch: fast-forward when behind,
    /// re-apply our commits when diverged.
    fn integrate(&mut self, report: &mut SyncReport) -> Result<(), GitError> {
        let Some(tracking) = self.tracking() else {
            return Ok(());
        };
        let Some(head) = self.head() else {
            report.kept_local = self.checkout_and_move(None, tracking)?;
            return Ok(());
        };
        if head == tracking || self.is_ancestor(tracking, head)? {
            return Ok(());
        }
        if self.is_ancestor(head, tracking)? {
            report.kept_local = self.checkout_and_move(Some(head), tracking)?;
            return Ok(());
        }
        self.rebase_onto(head, tracking, report)
    }

    fn is_ancestor(&self, ancestor: Oid, of: Oid) -> Result<bool, GitError> {
        self.repo
            .graph_descendant_of(of, ancestor)
            .map_err(self.commit_err())
    }

    /// Checks out `to` (only the paths that differ from `from`) and moves `HEAD` there.
    /// A path with uncommitted changes (modified, deleted, staged, or untracked where
    /// `to` adds it) is left as it is in the working tree; those paths are returned.
    fn checkout_and_move(&self, from: Option<Oid>, to: Oid) -> Result<Vec<PathBuf>, GitError> {
        let paths = self.changed_paths(from, to)?;
        let object = self.repo.find_object(to, None).map_err(self.commit_err())?;
        let local = git2::Status::WT_MODIFIED
            | git2::Status::WT_DELETED
            | git2::Status::WT_NEW
            | git2::Status::WT_TYPECHANGE
            | git2::Status::WT_RENAMED
            | git2::Status::INDEX_MODIFIED
            | git2::Status::INDEX_NEW
            | git2::Status::INDEX_DELETED
            | git2::Status::INDEX_TYPECHANGE
            | git2::Status::INDEX_RENAMED;
        let (kept, overwrite): (Vec<PathBuf>, Vec<PathBuf>) = paths.into_iter().partition(|p| {
            self.repo
                .status_file(p)
                .is_ok_and(|status| status.intersects(local))
        });
        if !overwrite.is_empty() {
            let mut checkout = CheckoutBuilder::new();
            checkout.force();
            for p in &overwrite {
                checkout.path(p);
            }
            self.repo
                .checkout_tree(&object, Some(&mut checkout))
                .map_err(self.commit_err())?;
        }
        self.move_head(to)?;
        Ok(kept)
    }

    /// Re-applies each local commit of `head` not on `base` on top of `base`: its files'
    /// content (state files are machine-owned, so the newest rendering wins), skipping
    /// commits whose batch already landed and commits that would change nothing.
    fn rebase_onto(
        &mut self,
        head: Oid,
        base: Oid,
        report: &mut SyncReport,
    ) -> Result<(), GitError> {
        let ours = self
            .commits_between(head, Some(base))
            .map_err(self.commit_err())?;
        let theirs = self
            .commits_between(base, Some(head))
            .map_err(self.commit_err())?;
        let mut landed = HashSet::new();
        for oid in theirs {
            let commit = self.repo.find_commit(oid).map_err(self.commit_err())?;
            if let Some(batch) =
                parse_trailers(&String::from_utf8_lossy(commit.message_bytes())).batch
            {
                landed.insert(batch);
            }
        }
        let mut parent = self.repo.find_commit(base).map_err(self.commit_err())?;
        for oid in ours {
            let commit = self.repo.find_commit(oid).map_err(self.commit_err())?;
            let message = String::from_utf8_lossy(commit.message_bytes()).into_owned();
            if parse_trailers(&message)
                .batch
                .is_some_and(|b| landed.contains(&b))
            {
                report.duplicates_skipped += 1;
                continue;
            }
            let tree = self.reapply(&commit, &parent)?;
            if tree == parent.tree_id() {
                continue;
            }
            let tree = self.repo.find_tree(tree).map_err(self.commit_err())?;
            let committer = Self::signature(&self.committer).map_err(self.commit_err())?;
            let new =
                self.create_commit(&commit.author(), &committer, &message, &tree, &[&parent])?;
            parent = self.repo.find_commit(new).map_err(self.commit_err())?;
            report.rebased += 1;
        }
        report.kept_local = self.checkout_and_move(Some(head), parent.id())?;
        Ok(())
    }

    /// The tree of `parent` with the files `commit` changed set to their content in
    /// `commit` (or removed).
    fn reapply(
        &self,
        commit: &git2::Commit<'_>,
        parent: &git2::Commit<'_>,
    ) -> Result<Oid, GitError> {
        let err = self.commit_err();
        let tree = commit.tree().map_err(&err)?;
        let previous = match commit.parent(0) {
            Ok(p) => Some(p.tree().map_err(&err)?),
            Err(_) => None,
        };
        let diff = self
            .repo
            .diff_tree_to_tree(previous.as_ref(), Some(&tree), None)
            .map_err(&err)?;
        let mut index = git2::Index::new().map_err(&err)?;
        index
            .read_tree(&parent.tree().map_err(&err)?)
            .map_err(&err)?;
        for delta in diff.deltas() {
            if delta.status() == git2::Delta::Deleted {
                if let Some(path) = delta.old_file().path() {
                    if index.get_path(path, 0).is_some() {
                        index.remove_path(path).map_err(&err)?;
                    }
                }
                continue;
            }
            let Some(path) = delta.new_file().path() else {
                continue;
            };
            let entry = tree.get_path(path).map_err(&err)?;
            let bytes = path.to_string_lossy().into_owned().into_bytes();
            index
                .add(&git2::IndexEntry {
                    ctime: git2::IndexTime::new(0, 0),
                    mtime: git2::IndexTime::new(0, 0),
                    dev: 0,
                    ino: 0,
                    mode: entry.filemode() as u32,
                    uid: 0,
                    gid: 0,
                    file_size: 0,
                    id: entry.id(),
                    flags: bytes.len().min(0xfff) as u16,
                    flags_extended: 0,
                    path: bytes,
                })
                .map_err(&err)?;
        }
        index.write_tree_to(&self.repo).map_err(&err)
    }
}

/// Refuses a state path that is empty, absolute or climbs out with `..`.
pub(crate) fn check_state_path(rel: &Path) -> Result<(), GitError> {
    let clean = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !clean || rel.as_os_str().is_empty() {
        return Err(GitError::OutsideState {
            path: rel.to_path_buf(),
        });
    }
    Ok(())
}

/// The folder of a local remote (a path or `file://` URL), else `None`.
fn local_remote_path(url: &str) -> Option<PathBuf> {
    if let Some(path) = url.strip_prefix("file://") {
        return Some(PathBuf::from(path));
    }
    if url.contains("://") {
        return None;
    }
    // scp-like `host:path` has a colon before any slash.
    let colon = url.find(':');
    let slash = url.find('/');
    match (colon, slash) {
        (Some(c), Some(s)) if c < s => None,
        (Some(_), None) => None,
        _ => Some(PathBuf::from(url)),
    }
}

fn write_file(path: &Path, content: &[u8]) -> Result<(), GitError> {
    let err = |source| GitError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(path, content).map_err(err)
}

fn remove_file(path: &Path) -> Result<(), GitError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(GitError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}
