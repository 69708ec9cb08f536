//! Git sources against real remotes, over libgit2's local transport (`file://`) and over the
//! network (`git daemon`, the smart `git://` protocol, where fetches are shallow): moving
//! branches and tags, force pushes, deletions, and `analyze` following a branch.

use std::path::Path;
use std::process::Command;

use image_factory::enrollment::Source;
use image_factory::source::{self, cache_path, Fetched, SourceError, Transfer};
use rstest::rstest;

use crate::support::git::{GitDaemon, Upstream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// `file://`: libgit2's local transport, which cannot fetch shallow.
    File,
    /// `git://` to a `git daemon` on 127.0.0.1.
    Daemon,
}

/// An upstream repository reachable over one transport.
struct Remote {
    upstream: Upstream,
    url: String,
    transport: Transport,
    cache: tempfile::TempDir,
    _daemon: Option<GitDaemon>,
    _dir: Option<tempfile::TempDir>,
}

impl Remote {
    fn new(transport: Transport) -> Self {
        let cache = tempfile::tempdir().unwrap();
        match transport {
            Transport::File => {
                let dir = tempfile::tempdir().unwrap();
                let upstream = Upstream::new(dir.path().join("repo.git"));
                Self {
                    url: format!("file://{}", upstream.bare.display()),
                    upstream,
                    transport,
                    cache,
                    _daemon: None,
                    _dir: Some(dir),
                }
            }
            Transport::Daemon => {
                let daemon = GitDaemon::start();
                let upstream = Upstream::new(daemon.base().join("repo.git"));
                Self {
                    url: daemon.url("repo.git"),
                    upstream,
                    transport,
                    cache,
                    _daemon: Some(daemon),
                    _dir: None,
                }
            }
        }
    }

    fn fetch(&self, reference: Option<&str>) -> Result<Fetched, SourceError> {
        source::fetch(
            &Source::Git {
                url: self.url.clone(),
                reference: reference.map(str::to_string),
            },
            self.cache.path(),
        )
    }

    /// The transfer a first fetch of a ref uses on this transport.
    fn first_transfer(&self) -> Transfer {
        match self.transport {
            Transport::File => Transfer::Full,
            Transport::Daemon => Transfer::Shallow,
        }
    }

    fn cache_is_shallow(&self) -> bool {
        git2::Repository::open_bare(cache_path(self.cache.path(), &self.url))
            .unwrap()
            .is_shallow()
    }
}

#[rstest]
#[case::file(Transport::File)]
#[case::git_daemon(Transport::Daemon)]
fn a_moving_branch_is_fetched_again(#[case] transport: Transport) {
    let remote = Remote::new(transport);
    let one = remote
        .upstream
        .commit("app/Dockerfile", "FROM alpine:3.19\n");
    remote.upstream.push(&["main"]);
    let first = remote.fetch(Some("main")).unwrap();
    assert_eq!(first.commit().unwrap(), one);
    assert_eq!(first.remote_ref(), Some("refs/heads/main"));
    assert_eq!(first.transfer(), Some(remote.first_transfer()));
    assert_eq!(
        remote.cache_is_shallow(),
        transport == Transport::Daemon,
        "shallow over git://, full over file://"
    );

    let two = remote
        .upstream
        .commit("app/Dockerfile", "FROM alpine:3.20\n");
    remote.upstream.push(&["main"]);
    let second = remote.fetch(Some("main")).unwrap();
    assert_eq!(second.commit().unwrap(), two, "the remote's current commit");
    assert_eq!(second.read("app/Dockerfile").unwrap(), "FROM alpine:3.20\n");
    assert_eq!(second.transfer(), Some(remote.first_transfer()));
    // The remote's HEAD is the same branch, and is followed the same way.
    let head = remote.fetch(None).unwrap();
    assert_eq!(head.commit().unwrap(), two);
    assert_eq!(head.remote_ref(), Some("refs/heads/main"));
    assert_eq!(head.transfer(), Some(Transfer::Cached));
}

#[rstest]
#[case::file(Transport::File)]
#[case::git_daemon(Transport::Daemon)]
fn a_moved_tag_is_fetched_again(#[case] transport: Transport) {
    let remote = Remote::new(transport);
    let one = remote.upstream.commit("Dockerfile", "FROM alpine:3.19\n");
    remote
        .upstream
        .git(&["tag", "-a", "-m", "release", "release"]);
    remote.upstream.push(&["main", "refs/tags/release"]);
    let first = remote.fetch(Some("release")).unwrap();
    assert_eq!(first.commit().unwrap(), one, "the annotated tag, peeled");
    assert_eq!(first.remote_ref(), Some("refs/tags/release"));

    let two = remote.upstream.commit("Dockerfile", "FROM alpine:3.20\n");
    remote
        .upstream
        .git(&["tag", "-f", "-a", "-m", "release again", "release"]);
    remote.upstream.push(&["refs/tags/release"]);
    let second = remote.fetch(Some("release")).unwrap();
    assert_eq!(second.commit().unwrap(), two);
    assert_eq!(second.read("Dockerfile").unwrap(), "FROM alpine:3.20\n");
}

#[rstest]
#[case::file(Transport::File)]
#[case::git_daemon(Transport::Daemon)]
fn a_force_pushed_branch_is_followed(#[case] transport: Transport) {
    let remote = Remote::new(transport);
    let one = remote.upstream.commit("Dockerfile", "FROM alpine:3.19\n");
    let two = remote.upstream.commit("Dockerfile", "FROM alpine:3.20\n");
    remote.upstream.push(&["main"]);
    assert_eq!(remote.fetch(Some("main")).unwrap().commit().unwrap(), two);

    // History rewritten: `main` now has a commit that does not descend from the cached one.
    remote.upstream.git(&["reset", "-q", "--hard", &one]);
    let rewritten = remote.upstream.commit("Dockerfile", "FROM alpine:3.21\n");
    remote.upstream.push(&["main"]);
    let fetched = remote.fetch(Some("main")).unwrap();
    assert_eq!(fetched.commit().unwrap(), rewritten);
    assert_eq!(fetched.read("Dockerfile").unwrap(), "FROM alpine:3.21\n");

    // And back to a commit the cache already has: nothing to download, the ref still moves.
    remote.upstream.git(&["reset", "-q", "--hard", &two]);
    remote.upstream.push(&["main"]);
    let back = remote.fetch(Some("main")).unwrap();
    assert_eq!(back.commit().unwrap(), two);
    assert_eq!(back.transfer(), Some(Transfer::Cached));
    assert_eq!(back.read("Dockerfile").unwrap(), "FROM alpine:3.20\n");
}

#[rstest]
#[case::file(Transport::File)]
#[case::git_daemon(Transport::Daemon)]
fn a_deleted_branch_or_tag_is_a_clear_error_not_the_cached_commit(#[case] transport: Transport) {
    let remote = Remote::new(transport);
    remote.upstream.commit("Dockerfile", "FROM alpine:3.19\n");
    remote.upstream.git(&["tag", "v1"]);
    remote.upstream.git(&["checkout", "-q", "-b", "feature"]);
    let feature = remote.upstream.commit("Dockerfile", "FROM alpine:3.20\n");
    remote.upstream.push(&["main", "feature", "refs/tags/v1"]);
    assert_eq!(
        remote.fetch(Some("feature")).unwrap().commit().unwrap(),
        feature
    );
    remote.fetch(Some("v1")).unwrap();

    remote.upstream.push(&[":feature", ":refs/tags/v1"]);
    for gone in ["feature", "v1"] {
        let err = remote.fetch(Some(gone)).err().unwrap();
        assert!(matches!(err, SourceError::DeletedRef { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "{} has no branch, tag or commit {gone:?} any more",
                remote.url
            )),
            "{text}"
        );
        assert!(text.contains("deleted or renamed"), "{text}");
        // The cached copy is pruned: the next run says the same without the history.
        let err = remote.fetch(Some(gone)).err().unwrap();
        assert!(matches!(err, SourceError::UnknownRef { .. }), "{err:?}");
    }
}

#[rstest]
#[case::file(Transport::File)]
#[case::git_daemon(Transport::Daemon)]
fn an_older_commit_is_found_after_a_shallow_fetch(#[case] transport: Transport) {
    let remote = Remote::new(transport);
    let one = remote.upstream.commit("Dockerfile", "FROM alpine:3.19\n");
    remote.upstream.commit("Dockerfile", "FROM alpine:3.20\n");
    remote.upstream.push(&["main"]);
    remote.fetch(Some("main")).unwrap();
    let pinned = remote.fetch(Some(&one[..12])).unwrap();
    assert_eq!(pinned.commit().unwrap(), one);
    assert_eq!(pinned.remote_ref(), None);
    assert_eq!(pinned.read("Dockerfile").unwrap(), "FROM alpine:3.19\n");
}

/// Runs `image-factory analyze` in `dir` with info-level traces; returns (code, stdout+stderr).
fn analyze(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_image-factory"))
        .arg("analyze")
        .current_dir(dir)
        .env("IMAGE_FACTORY_CACHE", dir.join(".cache"))
        .env("RUST_LOG", "image_factory=info")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn enroll(dir: &Path, url: &str, dockerfile: &str) {
    std::fs::write(
        dir.join("images.yaml"),
        format!(
            "version: 1\nimages:\n  - name: svc\n    image: ghcr.io/acme/svc:1\n    source:\n      git: {{url: '{url}', ref: main}}\n      dockerfile: {dockerfile}\n"
        ),
    )
    .unwrap();
}

/// Issue 6's reproduction, end to end: the second `analyze` reads the new commit.
#[rstest]
#[case::file(Transport::File)]
#[case::git_daemon(Transport::Daemon)]
fn analyze_follows_a_branch_from_run_to_run(#[case] transport: Transport) {
    let remote = Remote::new(transport);
    remote
        .upstream
        .commit("svc/Dockerfile", "FROM python:3.12-slim\n");
    remote.upstream.push(&["main"]);
    let dir = tempfile::tempdir().unwrap();
    enroll(dir.path(), &remote.url, "svc/Dockerfile");
    let (code, out) = analyze(dir.path());
    assert_eq!(code, 0, "{out}");

    let two = remote
        .upstream
        .commit("svc/Dockerfile", "FROM python:3.13-slim\n");
    remote.upstream.push(&["main"]);
    let (code, out) = analyze(dir.path());
    assert_eq!(code, 0, "{out}");
    let state = std::fs::read_to_string(dir.path().join("state/images/svc.yaml")).unwrap();
    assert!(state.contains(&format!("commit: {two}")), "{state}");
    assert!(
        state.contains("reference: docker.io/library/python:3.13-slim"),
        "{state}"
    );
    assert!(!state.contains("3.12"), "{state}");
    // The fetch is traced, in a span that names the remote and the ref.
    assert!(out.contains("git_fetch{url="), "{out}");
    assert!(out.contains("reference=main"), "{out}");
    assert!(out.contains(&format!("commit={two}")), "{out}");
}

/// Every file under `dir`, as text, with its path.
fn every_file(dir: &Path) -> Vec<(String, String)> {
    crate::support::snapshot(dir)
        .into_iter()
        .map(|(path, bytes)| {
            (
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
        .collect()
}

/// A URL's credentials are sent to the server only: not printed, traced, or stored in the
/// state or the git cache.
#[test]
fn credentials_in_a_url_reach_no_message_trace_or_file() {
    const CANARY: &str = "CANARY-9f3b1c";
    let remote = Remote::new(Transport::Daemon);
    remote
        .upstream
        .commit("svc/Dockerfile", "FROM python:3.12-slim\n");
    remote.upstream.push(&["main"]);
    let url = remote
        .url
        .replace("git://", &format!("git://deploy:{CANARY}@"));
    let dir = tempfile::tempdir().unwrap();

    enroll(dir.path(), &url, "svc/Dockerfile");
    let (code, out) = analyze(dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("git://deploy:***@127.0.0.1:"), "{out}");
    assert!(dir.path().join("state/images/svc.yaml").is_file());
    assert!(dir.path().join(".cache/git").is_dir());
    // A failure that names the source: a Dockerfile missing from the commit.
    enroll(dir.path(), &url, "missing/Dockerfile");
    let (code, out_missing) = analyze(dir.path());
    assert_ne!(code, 0, "{out_missing}");
    assert!(
        out_missing.contains("missing/Dockerfile not found"),
        "{out_missing}"
    );

    for text in [&out, &out_missing] {
        assert!(!text.contains(CANARY), "{text}");
    }
    // Everything but the enrollment file itself: the state and the git cache.
    for (path, text) in every_file(dir.path())
        .into_iter()
        .filter(|(path, _)| path != "images.yaml")
    {
        assert!(
            !text.contains(CANARY),
            "{path} holds the credentials:\n{text}"
        );
        assert!(!path.contains(CANARY), "{path}");
    }
}
