//! Managed images' sources: local folders, or git repositories fetched with git2.
//!
//! Git sources are fetched into a bare cache repository per URL (shallow, depth 1, where
//! the transport allows; libgit2's local transport does not, so it falls back to a full
//! fetch), resolved to one commit, and read straight from that commit's tree — no
//! checkout, so analysis never touches a working tree. The commit is recorded in state.

use std::path::{Path, PathBuf};

use git2::{FetchOptions, Oid, Repository};

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
    /// The cache repository could not be created or opened.
    #[error("cannot prepare git cache {path}: {source}")]
    Cache {
        /// The cache folder.
        path: PathBuf,
        /// libgit2's error.
        source: git2::Error,
    },
    /// Fetching from the remote failed.
    #[error("cannot fetch {url}: {message}")]
    Fetch {
        /// The clone URL (credentials are never part of it in messages).
        url: String,
        /// libgit2's message.
        message: String,
    },
    /// The requested ref does not exist on the remote.
    #[error("{url} has no branch, tag or commit {reference:?}")]
    UnknownRef {
        /// The clone URL.
        url: String,
        /// The ref asked for.
        reference: String,
    },
    /// The file is not in the resolved commit.
    #[error("{url}@{commit}: {path} not found")]
    MissingFile {
        /// The clone URL.
        url: String,
        /// The commit.
        commit: String,
        /// Path inside the repository.
        path: String,
    },
    /// Reading an object from the repository failed.
    #[error("{url}@{commit}: cannot read {path}: {source}")]
    Object {
        /// The clone URL.
        url: String,
        /// The commit.
        commit: String,
        /// Path inside the repository.
        path: String,
        /// libgit2's error.
        source: git2::Error,
    },
}

/// A source made readable: a folder, or one commit of a cached git repository.
pub enum Fetched {
    /// A local folder.
    Dir(PathBuf),
    /// A commit in a bare cache repository.
    Git {
        /// The cache repository.
        repo: Repository,
        /// The clone URL, for messages.
        url: String,
        /// The resolved commit.
        commit: Oid,
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
            Self::Git { repo, url, commit } => {
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

/// Makes `source` readable; git sources are fetched into `cache_dir/git/`.
///
/// # Errors
///
/// [`SourceError::Cache`], [`SourceError::Fetch`] or [`SourceError::UnknownRef`].
pub fn fetch(source: &Source, cache_dir: &Path) -> Result<Fetched, SourceError> {
    match source {
        Source::Path { dir, .. } => Ok(Fetched::Dir(dir.clone())),
        Source::Git { url, reference } => fetch_git(url, reference.as_deref(), cache_dir),
    }
}

/// The cache folder of a URL: readable, and unique through a hash of the whole URL.
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

fn fetch_git(url: &str, reference: Option<&str>, cache_dir: &Path) -> Result<Fetched, SourceError> {
    let path = cache_path(cache_dir, url);
    let cache_err = |source| SourceError::Cache {
        path: path.clone(),
        source,
    };
    let repo = match Repository::open_bare(&path) {
        Ok(repo) => repo,
        Err(_) => {
            std::fs::create_dir_all(&path).map_err(|e| SourceError::Cache {
                path: path.clone(),
                source: git2::Error::from_str(&e.to_string()),
            })?;
            Repository::init_bare(&path).map_err(cache_err)?
        }
    };
    let wanted = reference.unwrap_or("HEAD");
    let refspecs = refspecs(wanted);
    // Shallow first; libgit2's local and dumb transports cannot, so retry in full.
    let shallow = run_fetch(&repo, url, &refspecs, 1);
    if shallow.is_err() || resolve(&repo, wanted).is_none() {
        run_fetch(&repo, url, &refspecs, 0)?;
    }
    let commit = resolve(&repo, wanted).ok_or_else(|| SourceError::UnknownRef {
        url: url.to_string(),
        reference: wanted.to_string(),
    })?;
    Ok(Fetched::Git {
        repo,
        url: url.to_string(),
        commit,
    })
}

/// What to fetch for `wanted`: the remote's HEAD, a branch or tag of that name, or
/// (for a commit id) every branch, since servers may refuse to serve a bare commit.
fn refspecs(wanted: &str) -> Vec<String> {
    if wanted == "HEAD" {
        return vec!["+HEAD:refs/remotes/origin/HEAD".to_string()];
    }
    if looks_like_commit(wanted) {
        return vec!["+refs/heads/*:refs/remotes/origin/*".to_string()];
    }
    vec![
        format!("+refs/heads/{wanted}:refs/remotes/origin/{wanted}"),
        format!("+refs/tags/{wanted}:refs/tags/{wanted}"),
    ]
}

fn looks_like_commit(s: &str) -> bool {
    (7..=40).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn run_fetch(
    repo: &Repository,
    url: &str,
    refspecs: &[String],
    depth: i32,
) -> Result<(), SourceError> {
    let fetch_err = |e: git2::Error| SourceError::Fetch {
        url: url.to_string(),
        message: e.message().to_string(),
    };
    let mut remote = repo.remote_anonymous(url).map_err(fetch_err)?;
    let mut callbacks = git2::RemoteCallbacks::new();
    let config = repo.config().ok();
    callbacks.credentials(move |remote_url, username, allowed| {
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
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks);
    options.download_tags(git2::AutotagOption::None);
    if depth > 0 {
        options.depth(depth);
    }
    // A tag-or-branch name fetches two refspecs; a missing one of them is not an error.
    let mut last_err = None;
    let mut fetched_any = false;
    for spec in refspecs {
        match remote.fetch(&[spec.as_str()], Some(&mut options), None) {
            Ok(()) => fetched_any = true,
            Err(e) => last_err = Some(e),
        }
    }
    match (fetched_any, last_err) {
        (false, Some(e)) => Err(fetch_err(e)),
        _ => Ok(()),
    }
}

fn resolve(repo: &Repository, wanted: &str) -> Option<Oid> {
    let candidates = if wanted == "HEAD" {
        vec!["refs/remotes/origin/HEAD".to_string()]
    } else {
        vec![
            format!("refs/remotes/origin/{wanted}"),
            format!("refs/tags/{wanted}"),
            wanted.to_string(),
        ]
    };
    candidates.iter().find_map(|spec| {
        repo.revparse_single(spec)
            .ok()
            .and_then(|o| o.peel_to_commit().ok())
            .map(|c| c.id())
    })
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
}
