//! `analyze --commit` and `--push`: the state folder's changes become one commit in the
//! repository holding it (a real git repository), and reach its remote.

use crate::support::git::git;
use crate::support::{example, image_factory};

#[test]
fn analyze_commits_the_changed_state_and_pushes_it() {
    let dir = example();
    let d = dir.path();
    let remote = tempfile::tempdir().unwrap();
    git(remote.path(), &["init", "-q", "--bare"]);
    git(d, &["init", "-q"]);
    git(d, &["config", "user.name", "Platform Bot"]);
    git(d, &["config", "user.email", "bot@example.com"]);
    git(d, &["add", "-A"]);
    git(d, &["commit", "-q", "-m", "initial"]);
    git(
        d,
        &["remote", "add", "origin", remote.path().to_str().unwrap()],
    );
    git(d, &["push", "-q", "-u", "origin", "main"]);

    // Nothing changed: no commit.
    let out = image_factory(d, &["analyze", "--commit"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("git: nothing to commit"), "{stdout}");
    assert_eq!(git(d, &["rev-list", "--count", "HEAD"]), "1");

    // A Dockerfile moves to another base: the analysis record changes and is committed,
    // nothing else (images.yaml edits stay uncommitted).
    let dockerfile = d.join("examples/reports/Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let moved = text.replace(
        "FROM registry.example.com/platform/python-web:3.12",
        "FROM registry.example.com/platform/python:3.12",
    );
    assert_ne!(moved, text);
    std::fs::write(&dockerfile, moved).unwrap();
    std::fs::write(
        d.join("images.yaml"),
        std::fs::read_to_string(d.join("images.yaml")).unwrap() + "\n",
    )
    .unwrap();
    let out = image_factory(d, &["analyze", "--push"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("committed ") && stdout.contains("pushed 1 commit(s)"),
        "{stdout}"
    );
    let files = git(d, &["show", "--name-only", "--format=", "HEAD"]);
    assert!(files.lines().all(|f| f.starts_with("state/")), "{files}");
    assert!(files.contains("state/images/reports.yaml"), "{files}");
    let message = git(d, &["log", "-1", "--format=%B"]);
    assert!(message.starts_with("analyze: "), "{message}");
    assert!(
        message.contains("Image-Factory-Images: reports"),
        "{message}"
    );
    assert_eq!(
        git(d, &["log", "-1", "--format=%an <%ae>"]),
        "Platform Bot <bot@example.com>"
    );
    assert_eq!(
        git(remote.path(), &["rev-parse", "main"]),
        git(d, &["rev-parse", "HEAD"])
    );
    assert!(git(d, &["status", "--porcelain"]).contains("images.yaml"));
}

#[test]
fn analyze_commit_outside_a_repository_says_what_to_do() {
    let dir = example();
    let out = image_factory(dir.path(), &["analyze", "--commit"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("git init"), "{stderr}");
}
