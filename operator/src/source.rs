//! Managed images' sources: local folders, or git repositories fetched with git2.
//!
//! A git source is read from a bare cache repository per URL
//! (`cache_dir/git/<name>-<hash>.git`, see [`cache_path`]), straight from one commit's tree:
//! no checkout, so analysis never touches a working tree. [`fetch`] does three things:
//!
//! 1. **Asks the remote where `ref` is** (one `git ls-remote`, before anything is
//!    downloaded). No `ref` means the remote's `HEAD`; a name is the branch
//!    `refs/heads/<ref>`, else the tag `refs/tags/<ref>` (an annotated tag is peeled to its
//!    commit); a full name `refs/…` is taken as it is. The cache's own refs never say where
//!    a branch or tag is: one that is gone from the remote is
//!    [`SourceError::DeletedRef`] (and its cached copy is pruned), never the commit it had
//!    when last fetched.
//! 2. **Fetches exactly that ref**, force-updating its cached copy, so a moved tag or a
//!    force-pushed branch is followed. Nothing is downloaded when the remote's commit is
//!    already cached. Otherwise, on libgit2's smart transports (`git://`, `ssh://`,
//!    `http(s)://`) the fetch is shallow (depth 1), and falls back to the ref's whole history
//!    when the server refuses a shallow fetch or the shallow fetch did not update the ref;
//!    libgit2's local transport (`file://` URLs and plain paths) cannot fetch shallow, so
//!    there the ref's whole history is fetched at once. A fetch that leaves the ref where it
//!    was is [`SourceError::NotFetched`]. If the branch moved between the listing and the
//!    fetch, the fetched (newer) commit is used.
//! 3. **A commit id** (7 to 40 hex digits, when no branch or tag has that name) is looked up
//!    in the cache first, since a commit never changes; otherwise every branch and tag is
//!    fetched in full (deepening a shallow cache), since servers need not serve a commit
//!    that no ref points at.
//!
//! [`Fetched::Git`] reports what was fetched: the remote ref, the commit (recorded in
//! state) and how it got there ([`Transfer`]). Credentials in a URL
//! (`https://user:token@host/…`) are used to connect and never shown or stored: errors,
//! messages and traces carry [`redact_url`]'s form, libgit2's own messages are scrubbed of
//! them, and no `FETCH_HEAD` (which would hold the URL) is written. Each fetch runs in a
//! `git_fetch` tracing span with the redacted `url` and the `reference` as fields.

use std::path::{Path, PathBuf};

use git2::{AutotagOption, Direction, ErrorCode, FetchOptions, Oid, RemoteCallbacks, Repository};

use crate::enrollment::Source;

/// Source errors.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A local file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The cache folder could not be created.
    #[error("cannot create git cache {path}: {source}")]
    CreateCache {
        /// The cache folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The cache repository could not be created, opened or updated.
    #[error("cannot prepare git cache {path}: {source}")]
    Cache {
        /// The cache folder.
        path: PathBuf,
        /// libgit2's error.
        source: git2::Error,
    },
    /// Listing the remote's refs or fetching from it failed.
    #[error("cannot fetch {url}: {source}")]
    Fetch {
        /// The clone URL, credentials redacted ([`redact_url`]).
        url: String,
        /// libgit2's error, with any credentials of the URL scrubbed from its message.
        source: git2::Error,
    },
    /// The requested ref does not exist on the remote, and was never fetched.
    #[error("{url} has no branch, tag or commit {reference:?}")]
    UnknownRef {
        /// The clone URL, credentials redacted.
        url: String,
        /// The ref asked for.
        reference: String,
    },
    /// The branch or tag was fetched before but is gone from the remote now.
    #[error(
        "{url} has no branch, tag or commit {reference:?} any more (it was at commit {last} \
         when last fetched): it was deleted or renamed; point the source's `ref` at one that exists"
    )]
    DeletedRef {
        /// The clone URL, credentials redacted.
        url: String,
        /// The ref asked for.
        reference: String,
        /// The commit (40 hex digits) the cache had for it; never used for analysis.
        last: String,
    },
    /// A short commit id matches several commits.
    #[error("{reference:?} matches more than one commit of {url}; give more hex digits")]
    AmbiguousCommit {
        /// The clone URL, credentials redacted.
        url: String,
        /// The commit id prefix asked for.
        reference: String,
    },
    /// The fetch finished without error but did not update the wanted ref.
    #[error(
        "fetching {remote_ref} from {url} did not update it (the remote advertised commit \
         {advertised}); check that the server serves that ref"
    )]
    NotFetched {
        /// The clone URL, credentials redacted.
        url: String,
        /// The remote ref, e.g. `refs/heads/main`.
        remote_ref: String,
        /// The commit the remote advertised for it.
        advertised: String,
    },
    /// The file is not in the resolved commit.
    #[error("{url}@{commit}: {path} not found")]
    MissingFile {
        /// The clone URL, credentials redacted.
        url: String,
        /// The commit.
        commit: String,
        /// Path inside the repository.
        path: String,
    },
    /// Reading an object from the repository failed.
    #[error("{url}@{commit}: cannot read {path}: {source}")]
    Object {
        /// The clone URL, credentials redacted.
        url: String,
        /// The commit.
        commit: String,
        /// Path inside the repository.
        path: String,
        /// libgit2's error.
        source: git2::Error,
    },
}

/// How a git source's commit reached the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// The commit was cached already: nothing was downloaded, at most the cached ref moved.
    Cached,
    /// A shallow fetch (depth 1) of the wanted ref.
    Shallow,
    /// A fetch of the wanted ref's whole history (of every branch and tag, for a commit id).
    Full,
}

/// A source made readable: a folder, or one commit of a cached git repository.
pub enum Fetched {
    /// A local folder.
    Dir(PathBuf),
    /// A commit in a bare cache repository.
    Git {
        /// The cache repository.
        repo: Repository,
        /// The clone URL with credentials redacted ([`redact_url`]), for messages.
        url: String,
        /// The resolved commit.
        commit: Oid,
        /// The remote ref it was fetched from (`refs/heads/main`, `refs/tags/v1`, or the
        /// branch the remote's `HEAD` names, else `HEAD`); `None` for a commit id.
        remote_ref: Option<String>,
        /// How the commit reached the cache.
        transfer: Transfer,
    },
}

impl Fetched {
    /// The resolved commit as 40 hex digits, for git sources.
    pub fn commit(&self) -> Option<String> {
        match self {
            Self::Dir(_) => None,
            Self::Git { commit, .. } => Some(commit.to_string()),
        }
    }

    /// The remote ref a git source was fetched from (see [`Fetched::Git`]).
    pub fn remote_ref(&self) -> Option<&str> {
        match self {
            Self::Dir(_) => None,
            Self::Git { remote_ref, .. } => remote_ref.as_deref(),
        }
    }

    /// How a git source's commit reached the cache; `None` for a folder.
    pub fn transfer(&self) -> Option<Transfer> {
        match self {
            Self::Dir(_) => None,
            Self::Git { transfer, .. } => Some(*transfer),
        }
    }

    /// Reads a UTF-8 file (lossily) at `path` relative to the source root.
    ///
    /// # Errors
    ///
    /// [`SourceError::Read`] for a local file, [`SourceError::MissingFile`] /
    /// [`SourceError::Object`] for a git source.
    pub fn read(&self, path: &str) -> Result<String, SourceError> {
        match self {
            Self::Dir(dir) => {
                let file = dir.join(path);
                std::fs::read(&file)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .map_err(|source| SourceError::Read { path: file, source })
            }
            Self::Git {
                repo, url, commit, ..
            } => {
                let object_err = |source| SourceError::Object {
                    url: url.clone(),
                    commit: commit.to_string(),
                    path: path.to_string(),
                    source,
                };
                let tree = repo
                    .find_commit(*commit)
                    .and_then(|c| c.tree())
                    .map_err(object_err)?;
                let entry = tree
                    .get_path(Path::new(path.trim_start_matches("./")))
                    .map_err(|_| SourceError::MissingFile {
                        url: url.clone(),
                        commit: commit.to_string(),
                        path: path.to_string(),
                    })?;
                let blob = repo.find_blob(entry.id()).map_err(object_err)?;
                Ok(String::from_utf8_lossy(blob.content()).into_owned())
            }
        }
    }
}

/// Makes `source` readable; git sources are fetched into `cache_dir/git/` as the module
/// docs describe.
///
/// # Errors
///
/// [`SourceError::CreateCache`] / [`SourceError::Cache`] when the cache cannot be used;
/// [`SourceError::Fetch`] when the remote cannot be listed or fetched;
/// [`SourceError::UnknownRef`], [`SourceError::DeletedRef`] or
/// [`SourceError::AmbiguousCommit`] when `ref` names nothing (any more) or several commits;
/// [`SourceError::NotFetched`] when a fetch did not deliver the ref.
pub fn fetch(source: &Source, cache_dir: &Path) -> Result<Fetched, SourceError> {
    match source {
        Source::Path { dir, .. } => Ok(Fetched::Dir(dir.clone())),
        Source::Git { url, reference } => fetch_git(url, reference.as_deref(), cache_dir),
    }
}

/// Where a build of `source` reads its files: a path source's own folder, or — for a
/// git source — the tree of `commit` (the commit `analyze` read; the ref's tip when
/// `None`) written from the cache into `dest` (created; replaced when it exists), so
/// the build sees exactly what was analyzed even if the branch moved since.
///
/// # Errors
///
/// Those of [`fetch`] (only when the commit is not cached yet), and
/// [`SourceError::Cache`] when the tree cannot be written to `dest`.
pub fn checkout(
    source: &Source,
    commit: Option<&str>,
    cache_dir: &Path,
    dest: &Path,
) -> Result<PathBuf, SourceError> {
    let (url, reference) = match source {
        Source::Path { dir, .. } => return Ok(dir.clone()),
        Source::Git { url, reference } => (url, reference),
    };
    let cache = cache_path(cache_dir, url);
    let cached = commit.and_then(|c| {
        let repo = Repository::open_bare(&cache).ok()?;
        let oid = git2::Oid::from_str(c).ok()?;
        repo.find_commit(oid).ok()?;
        Some((repo, oid))
    });
    let (repo, oid) = match cached {
        Some(found) => found,
        None => match fetch_git(url, commit.or(reference.as_deref()), cache_dir)? {
            Fetched::Git { repo, commit, .. } => (repo, commit),
            Fetched::Dir(dir) => return Ok(dir),
        },
    };
    let io = |source: std::io::Error| SourceError::CreateCache {
        path: dest.to_path_buf(),
        source,
    };
    let git = |source: git2::Error| SourceError::Cache {
        path: dest.to_path_buf(),
        source,
    };
    if dest.exists() {
        std::fs::remove_dir_all(dest).map_err(io)?;
    }
    std::fs::create_dir_all(dest).map_err(io)?;
    let tree = repo.find_commit(oid).and_then(|c| c.tree()).map_err(git)?;
    let mut options = git2::build::CheckoutBuilder::new();
    options.target_dir(dest).force().recreate_missing(true);
    repo.checkout_tree(tree.as_object(), Some(&mut options))
        .map_err(git)?;
    Ok(dest.to_path_buf())
}

/// The cache folder of a URL: readable, and unique through a hash of the whole URL (so the
/// folder name never shows the URL's credentials).
pub fn cache_path(cache_dir: &Path, url: &str) -> PathBuf {
    let last = url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("repo")
        .trim_end_matches(".git");
    let slug: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = url.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    cache_dir
        .join("git")
        .join(format!("{slug}-{hash:016x}.git"))
}

/// `url` with its secret replaced by `***`, for messages: the password of
/// `scheme://user:password@host/…` (the user stays, to tell accounts apart), or the whole
/// user of an `http(s)://token@host/…` URL, where a lone user is a token (GitHub's and
/// GitLab's token URLs). Other URLs (`ssh://git@host/…`, `git@host:path`, paths) are
/// returned unchanged. URL syntax: RFC 3986 §3.2.1.
pub fn redact_url(url: &str) -> String {
    match userinfo(url) {
        Some(info) => match secret(url) {
            Some(_) => {
                let redacted = match info.text.split_once(':') {
                    Some((user, _)) => format!("{user}:***"),
                    None => "***".to_string(),
                };
                format!("{}{redacted}{}", &url[..info.start], &url[info.end..])
            }
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Where the userinfo (`user[:password]`, before `@`) of a `scheme://` URL is.
struct UserInfo<'a> {
    text: &'a str,
    start: usize,
    end: usize,
}

fn userinfo(url: &str) -> Option<UserInfo<'_>> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    // The last `@` ends the userinfo: a password may itself hold an (unescaped) `@`.
    let at = authority.rfind('@')?;
    Some(UserInfo {
        text: &authority[..at],
        start,
        end: start + at,
    })
}

/// The secret part of `url`'s userinfo, as [`redact_url`] defines it.
fn secret(url: &str) -> Option<&str> {
    let info = userinfo(url)?;
    let secret = match info.text.split_once(':') {
        Some((_, password)) => password,
        None if url.starts_with("http://") || url.starts_with("https://") => info.text,
        None => return None,
    };
    (!secret.is_empty()).then_some(secret)
}

/// `text` with `url` shown redacted and its secret (also percent-decoded, as libgit2 may
/// print it) replaced by `***`.
fn scrub(text: &str, url: &str) -> String {
    let Some(secret) = secret(url) else {
        return text.to_string();
    };
    let mut out = text.replace(url, &redact_url(url)).replace(secret, "***");
    let decoded = percent_decode(secret);
    if decoded != secret && !decoded.is_empty() {
        out = out.replace(&decoded, "***");
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn fetch_git(url: &str, reference: Option<&str>, cache_dir: &Path) -> Result<Fetched, SourceError> {
    let shown = redact_url(url);
    let wanted = reference.unwrap_or("HEAD");
    let span = tracing::info_span!("git_fetch", url = %shown, reference = %wanted);
    let _entered = span.enter();
    let path = cache_path(cache_dir, url);
    let remote = Remote {
        url,
        shown: &shown,
        cache: &path,
    };
    let repo = open_cache(&path)?;
    let advertised = remote.list(&repo)?;
    let (commit, remote_ref, transfer) = match advertised.find(wanted) {
        Some(target) => {
            let (commit, transfer) = remote.fetch_ref(&repo, &target)?;
            (commit, Some(target.name), transfer)
        }
        None if looks_like_commit(wanted) => {
            let (commit, transfer) = remote.fetch_commit(&repo, wanted)?;
            (commit, None, transfer)
        }
        None => return Err(remote.gone(&repo, wanted)),
    };
    tracing::info!(
        remote_ref = remote_ref.as_deref().unwrap_or("(commit id)"),
        %commit,
        ?transfer,
        "fetched"
    );
    Ok(Fetched::Git {
        repo,
        url: shown,
        commit,
        remote_ref,
        transfer,
    })
}

fn open_cache(path: &Path) -> Result<Repository, SourceError> {
    if let Ok(repo) = Repository::open_bare(path) {
        return Ok(repo);
    }
    std::fs::create_dir_all(path).map_err(|source| SourceError::CreateCache {
        path: path.to_path_buf(),
        source,
    })?;
    Repository::init_bare(path).map_err(|source| SourceError::Cache {
        path: path.to_path_buf(),
        source,
    })
}

fn looks_like_commit(s: &str) -> bool {
    (7..=40).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// A ref the remote advertised that the source wants.
struct Target {
    /// What to fetch: `HEAD` or a full ref name.
    source: String,
    /// What to report: `source`, or the branch `HEAD` points at.
    name: String,
    /// Where the cache keeps it.
    local: String,
    /// The commit it points at (annotated tags peeled).
    commit: Oid,
}

/// The remote's refs as `git ls-remote` lists them.
struct Advertised {
    /// Ref name → commit; annotated tags are peeled (their `^{}` entry wins).
    refs: std::collections::BTreeMap<String, Oid>,
    /// The branch the remote's `HEAD` points at, when the server says.
    head_target: Option<String>,
}

impl Advertised {
    /// Where `wanted` (module docs, step 1) is on the remote, if anywhere.
    fn find(&self, wanted: &str) -> Option<Target> {
        let source = candidates(wanted)
            .into_iter()
            .find(|name| self.refs.contains_key(name))?;
        let commit = *self.refs.get(&source)?;
        let name = match (source.as_str(), &self.head_target) {
            ("HEAD", Some(target)) => target.clone(),
            _ => source.clone(),
        };
        Some(Target {
            local: local_ref(&source),
            source,
            name,
            commit,
        })
    }
}

/// The remote ref names `wanted` may mean, in order of preference.
fn candidates(wanted: &str) -> Vec<String> {
    if wanted == "HEAD" || wanted.starts_with("refs/") {
        return vec![wanted.to_string()];
    }
    vec![
        format!("refs/heads/{wanted}"),
        format!("refs/tags/{wanted}"),
    ]
}

/// Where the cache keeps a remote ref: branches (and `HEAD`) under `refs/remotes/origin/`,
/// everything else (tags, `refs/pull/…`) under its own name.
fn local_ref(remote_ref: &str) -> String {
    if remote_ref == "HEAD" {
        return "refs/remotes/origin/HEAD".to_string();
    }
    match remote_ref.strip_prefix("refs/heads/") {
        Some(branch) => format!("refs/remotes/origin/{branch}"),
        None => remote_ref.to_string(),
    }
}

fn cached_commit(repo: &Repository, local: &str) -> Option<Oid> {
    repo.find_reference(local)
        .and_then(|r| r.peel_to_commit())
        .map(|c| c.id())
        .ok()
}

/// libgit2's local transport: `file://` URLs and paths that exist.
fn uses_local_transport(url: &str) -> bool {
    url.starts_with("file://") || Path::new(url).exists()
}

/// The depth of a full fetch: everything, and a shallow cache deepened to everything
/// (libgit2's `GIT_FETCH_DEPTH_UNSHALLOW`), since its shallow boundary would otherwise
/// stop the history at the last shallow fetch.
fn full_depth(repo: &Repository) -> i32 {
    if repo.is_shallow() {
        i32::MAX
    } else {
        0
    }
}

/// One remote as this module talks to it.
struct Remote<'a> {
    /// The URL as enrolled, credentials included: only ever handed to libgit2.
    url: &'a str,
    /// The URL for messages.
    shown: &'a str,
    /// The cache folder, for messages.
    cache: &'a Path,
}

impl Remote<'_> {
    fn fetch_error(&self, e: git2::Error) -> SourceError {
        SourceError::Fetch {
            url: self.shown.to_string(),
            source: git2::Error::new(e.code(), e.class(), scrub(e.message(), self.url)),
        }
    }

    fn cache_error(&self, source: git2::Error) -> SourceError {
        SourceError::Cache {
            path: self.cache.to_path_buf(),
            source,
        }
    }

    /// `git ls-remote`: the remote's refs, over one connection.
    fn list(&self, repo: &Repository) -> Result<Advertised, SourceError> {
        let mut remote = repo
            .remote_anonymous(self.url)
            .map_err(|e| self.fetch_error(e))?;
        let connection = remote
            .connect_auth(Direction::Fetch, Some(callbacks(repo)), None)
            .map_err(|e| self.fetch_error(e))?;
        let mut refs = std::collections::BTreeMap::new();
        let mut head_target = None;
        for head in connection.list().map_err(|e| self.fetch_error(e))? {
            let name = head.name();
            match name.strip_suffix("^{}") {
                Some(tag) => {
                    refs.insert(tag.to_string(), head.oid());
                }
                None => {
                    refs.entry(name.to_string()).or_insert(head.oid());
                }
            }
            if name == "HEAD" {
                head_target = head.symref_target().map(str::to_string);
            }
        }
        tracing::debug!(refs = refs.len(), "listed the remote");
        Ok(Advertised { refs, head_target })
    }

    /// Brings `target` into the cache (module docs, step 2).
    fn fetch_ref(
        &self,
        repo: &Repository,
        target: &Target,
    ) -> Result<(Oid, Transfer), SourceError> {
        let before = cached_commit(repo, &target.local);
        if repo.find_commit(target.commit).is_ok() {
            if before != Some(target.commit) {
                repo.reference(&target.local, target.commit, true, "image-factory: cached")
                    .map_err(|e| self.cache_error(e))?;
            }
            return Ok((target.commit, Transfer::Cached));
        }
        let refspec = format!("+{}:{}", target.source, target.local);
        let mut attempts = vec![Transfer::Full];
        if !uses_local_transport(self.url) {
            attempts.insert(0, Transfer::Shallow);
        }
        let mut last_error = None;
        for transfer in attempts {
            let depth = match transfer {
                Transfer::Shallow => 1,
                Transfer::Cached | Transfer::Full => full_depth(repo),
            };
            if let Err(e) = self.download(repo, &[refspec.as_str()], depth) {
                tracing::debug!(error = %scrub(e.message(), self.url), ?transfer, "fetch failed");
                last_error = Some(e);
                continue;
            }
            last_error = None;
            match cached_commit(repo, &target.local) {
                Some(commit) if commit == target.commit => return Ok((commit, transfer)),
                Some(commit) if Some(commit) != before => {
                    tracing::info!(
                        advertised = %target.commit,
                        %commit,
                        "the ref moved while it was fetched; using the fetched commit"
                    );
                    return Ok((commit, transfer));
                }
                _ => tracing::debug!(?transfer, "the fetch did not update the ref"),
            }
        }
        Err(match last_error {
            Some(e) => self.fetch_error(e),
            None => SourceError::NotFetched {
                url: self.shown.to_string(),
                remote_ref: target.name.clone(),
                advertised: target.commit.to_string(),
            },
        })
    }

    /// Finds a commit id, fetching every branch and tag when the cache lacks it (module
    /// docs, step 3).
    fn fetch_commit(
        &self,
        repo: &Repository,
        wanted: &str,
    ) -> Result<(Oid, Transfer), SourceError> {
        if let Some(commit) = self.cached_commit_id(repo, wanted)? {
            return Ok((commit, Transfer::Cached));
        }
        self.download(
            repo,
            &[
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ],
            full_depth(repo),
        )
        .map_err(|e| self.fetch_error(e))?;
        match self.cached_commit_id(repo, wanted)? {
            Some(commit) => Ok((commit, Transfer::Full)),
            None => Err(SourceError::UnknownRef {
                url: self.shown.to_string(),
                reference: wanted.to_string(),
            }),
        }
    }

    fn cached_commit_id(
        &self,
        repo: &Repository,
        wanted: &str,
    ) -> Result<Option<Oid>, SourceError> {
        match repo.find_commit_by_prefix(wanted) {
            Ok(commit) => Ok(Some(commit.id())),
            Err(e) if e.code() == ErrorCode::Ambiguous => Err(SourceError::AmbiguousCommit {
                url: self.shown.to_string(),
                reference: wanted.to_string(),
            }),
            Err(_) => Ok(None),
        }
    }

    /// The error for a `wanted` the remote does not have; prunes its cached copies so no
    /// later run can mistake them for the remote's.
    fn gone(&self, repo: &Repository, wanted: &str) -> SourceError {
        let mut last = None;
        for local in candidates(wanted).iter().map(|r| local_ref(r)) {
            let Ok(mut reference) = repo.find_reference(&local) else {
                continue;
            };
            if last.is_none() {
                last = reference.peel_to_commit().ok().map(|c| c.id());
            }
            if let Err(e) = reference.delete() {
                tracing::warn!(reference = %local, error = %e, "cannot prune the cached ref");
            }
        }
        match last {
            Some(last) => SourceError::DeletedRef {
                url: self.shown.to_string(),
                reference: wanted.to_string(),
                last: last.to_string(),
            },
            None => SourceError::UnknownRef {
                url: self.shown.to_string(),
                reference: wanted.to_string(),
            },
        }
    }

    /// One `git fetch` of `refspecs`; `depth` 0 for everything.
    fn download(
        &self,
        repo: &Repository,
        refspecs: &[&str],
        depth: i32,
    ) -> Result<(), git2::Error> {
        let mut remote = repo.remote_anonymous(self.url)?;
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks(repo));
        options.download_tags(AutotagOption::None);
        // FETCH_HEAD records the URL, credentials and all.
        options.update_fetchhead(false);
        options.depth(depth);
        remote.fetch(refspecs, Some(&mut options), Some("image-factory fetch"))
    }
}

/// Credentials for private remotes: the SSH agent, `GIT_USERNAME`/`GIT_PASSWORD`, else git's
/// credential helper. libgit2 asks again after each rejection, so the third ask fails.
fn callbacks(repo: &Repository) -> RemoteCallbacks<'static> {
    let mut callbacks = RemoteCallbacks::new();
    let config = repo.config().ok();
    let mut asked = 0_u32;
    callbacks.credentials(move |remote_url, username, allowed| {
        asked += 1;
        if asked > 3 {
            return Err(git2::Error::from_str(
                "the remote rejected the credentials (tried the SSH agent, \
                 GIT_USERNAME/GIT_PASSWORD and git's credential helper)",
            ));
        }
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            return git2::Cred::ssh_key_from_agent(username.unwrap_or("git"));
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            if let (Ok(user), Ok(token)) =
                (std::env::var("GIT_USERNAME"), std::env::var("GIT_PASSWORD"))
            {
                return git2::Cred::userpass_plaintext(&user, &token);
            }
            if let Some(cfg) = &config {
                return git2::Cred::credential_helper(cfg, remote_url, username);
            }
        }
        git2::Cred::default()
    });
    callbacks
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    /// A real repository with two commits on `main` and a tag `v1` on the first.
    fn repo_with_history() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]);
        std::fs::create_dir_all(dir.path().join("img")).unwrap();
        std::fs::write(dir.path().join("img/Dockerfile"), "FROM alpine:3.19\n").unwrap();
        git(dir.path(), &["add", "."]);
        git(dir.path(), &["commit", "-qm", "one"]);
        git(dir.path(), &["tag", "v1"]);
        let first = String::from_utf8(
            Command::new("git")
                .args(["rev-parse", "HEAD"])
                .current_dir(dir.path())
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        std::fs::write(dir.path().join("img/Dockerfile"), "FROM alpine:3.20\n").unwrap();
        git(dir.path(), &["commit", "-qam", "two"]);
        let url = format!("file://{}", dir.path().display());
        (dir, url, first.trim().to_string())
    }

    #[test]
    fn fetches_branch_tag_commit_and_default_head() {
        let (_repo, url, first) = repo_with_history();
        let cache = tempfile::tempdir().unwrap();
        let head = fetch(
            &Source::Git {
                url: url.clone(),
                reference: None,
            },
            cache.path(),
        )
        .unwrap();
        assert_eq!(head.read("img/Dockerfile").unwrap(), "FROM alpine:3.20\n");
        let main = fetch(
            &Source::Git {
                url: url.clone(),
                reference: Some("main".into()),
            },
            cache.path(),
        )
        .unwrap();
        assert_eq!(main.commit(), head.commit());
        let tag = fetch(
            &Source::Git {
                url: url.clone(),
                reference: Some("v1".into()),
            },
            cache.path(),
        )
        .unwrap();
        assert_eq!(tag.commit().unwrap(), first);
        assert_eq!(tag.read("./img/Dockerfile").unwrap(), "FROM alpine:3.19\n");
        let pinned = fetch(
            &Source::Git {
                url: url.clone(),
                reference: Some(first[..12].to_string()),
            },
            cache.path(),
        )
        .unwrap();
        assert_eq!(pinned.commit().unwrap(), first);
    }

    #[test]
    fn missing_refs_and_files_are_named() {
        let (_repo, url, _) = repo_with_history();
        let cache = tempfile::tempdir().unwrap();
        let err = fetch(
            &Source::Git {
                url: url.clone(),
                reference: Some("nope".into()),
            },
            cache.path(),
        )
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .contains("no branch, tag or commit \"nope\""),
            "{err}"
        );
        let ok = fetch(
            &Source::Git {
                url,
                reference: None,
            },
            cache.path(),
        )
        .unwrap();
        let err = ok.read("Dockerfile").unwrap_err().to_string();
        assert!(err.contains("Dockerfile not found"), "{err}");
    }

    #[test]
    fn unreachable_remotes_fail_with_the_url() {
        let cache = tempfile::tempdir().unwrap();
        let err = fetch(
            &Source::Git {
                url: "file:///nonexistent/repo".into(),
                reference: None,
            },
            cache.path(),
        )
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .starts_with("cannot fetch file:///nonexistent/repo"),
            "{err}"
        );
    }

    fn git_source(url: &str, reference: Option<&str>) -> Source {
        Source::Git {
            url: url.to_string(),
            reference: reference.map(str::to_string),
        }
    }

    fn rev_parse(dir: &Path, rev: &str) -> String {
        let out = Command::new("git")
            .args(["rev-parse", rev])
            .current_dir(dir)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// The issue 6 reproduction: a branch fetched once kept resolving to its cached commit,
    /// because the branch's shallow fetch failed on the local transport and the tag refspec
    /// of the same name "succeeded" with nothing to fetch.
    #[test]
    fn a_branch_that_moves_is_fetched_again() {
        let (repo, url, _) = repo_with_history();
        let cache = tempfile::tempdir().unwrap();
        let first = fetch(&git_source(&url, Some("main")), cache.path()).unwrap();
        assert_eq!(first.read("img/Dockerfile").unwrap(), "FROM alpine:3.20\n");
        std::fs::write(repo.path().join("img/Dockerfile"), "FROM alpine:3.21\n").unwrap();
        git(repo.path(), &["commit", "-qam", "three"]);
        let second = fetch(&git_source(&url, Some("main")), cache.path()).unwrap();
        assert_eq!(second.commit().unwrap(), rev_parse(repo.path(), "HEAD"));
        assert_eq!(second.read("img/Dockerfile").unwrap(), "FROM alpine:3.21\n");
        assert_eq!(second.remote_ref(), Some("refs/heads/main"));
        assert_eq!(second.transfer(), Some(Transfer::Full));
        let again = fetch(&git_source(&url, Some("main")), cache.path()).unwrap();
        assert_eq!(again.commit(), second.commit());
        assert_eq!(again.transfer(), Some(Transfer::Cached));
    }

    #[test]
    fn the_default_head_names_its_branch() {
        let (_repo, url, _) = repo_with_history();
        let cache = tempfile::tempdir().unwrap();
        let head = fetch(&git_source(&url, None), cache.path()).unwrap();
        assert_eq!(head.remote_ref(), Some("refs/heads/main"));
    }

    #[rstest::rstest]
    #[case::password("https://user:tok3n@host/r.git", "https://user:***@host/r.git")]
    #[case::token_as_user("https://ghp_tok3n@github.com/a/b", "https://***@github.com/a/b")]
    #[case::at_in_password("https://u:p@ss@host:8443/r?x=1", "https://u:***@host:8443/r?x=1")]
    #[case::ssh_user_is_not_secret("ssh://git@host/r.git", "ssh://git@host/r.git")]
    #[case::ssh_password("ssh://git:pw@host/r.git", "ssh://git:***@host/r.git")]
    #[case::scp_like("git@github.com:a/b.git", "git@github.com:a/b.git")]
    #[case::at_in_path("https://host/a@b/r.git", "https://host/a@b/r.git")]
    #[case::no_userinfo("file:///tmp/r", "file:///tmp/r")]
    fn urls_are_shown_without_credentials(#[case] url: &str, #[case] shown: &str) {
        assert_eq!(redact_url(url), shown);
    }

    #[test]
    fn libgit2_messages_are_scrubbed_of_the_secret_in_every_spelling() {
        let url = "https://bot:CANARY%2Fx@host/r.git";
        let text = scrub(
            &format!("auth failed for {url} (bot:CANARY/x), CANARY%2Fx"),
            url,
        );
        assert!(!text.contains("CANARY"), "{text}");
        assert!(text.contains("https://bot:***@host/r.git"), "{text}");
    }

    #[test]
    fn fetch_errors_keep_their_cause_and_never_show_credentials() {
        use std::error::Error as _;
        // Bound then dropped: nothing listens there, so the connection is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://deploy:CANARY-t0ken@127.0.0.1:{port}/team/repo.git");
        let cache = tempfile::tempdir().unwrap();
        let err = fetch(&git_source(&url, Some("main")), cache.path())
            .err()
            .unwrap();
        let cause = err.source().expect("the libgit2 error is kept");
        assert!(cause.downcast_ref::<git2::Error>().is_some(), "{cause:?}");
        let mut shown = format!("{err} | {err:?}");
        let mut next = err.source();
        while let Some(e) = next {
            shown.push_str(&format!(" | {e} | {e:?}"));
            next = e.source();
        }
        assert!(!shown.contains("CANARY"), "{shown}");
        assert!(
            shown.starts_with(&format!(
                "cannot fetch http://deploy:***@127.0.0.1:{port}/team/repo.git: "
            )),
            "{shown}"
        );
    }
}
