//! A person's decisions (`block`, `unblock`, `expedite`, `retry`, `approve`) recorded
//! through the engine in runtime records, and `plan` answering from them.

use std::path::Path;

use crate::support::{example, image_factory, repo_root, snapshot};

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = image_factory(dir, args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const RUNTIME: &str = "state/runtime/docker.io/library/python/3.12-slim.yaml";

#[test]
fn block_and_unblock_are_recorded_with_who_and_why_in_the_runtime_record() {
    let dir = example();
    let target = format!("python:3.12-slim@{A}");
    let (code, out, err) = run(
        dir.path(),
        &[
            "block",
            &target,
            "--reason",
            "breaks locale",
            "--by",
            "alice",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("block") && out.contains("python-3-12-slim"),
        "{out}"
    );
    let text = std::fs::read_to_string(dir.path().join(RUNTIME)).unwrap();
    assert!(
        text.contains(A) && text.contains("by: alice") && text.contains("reason: breaks locale"),
        "{text}"
    );
    // The analysis records are not touched: one writer per file.
    let analysis = dir.path().join("state/images/python-3-12-slim.yaml");
    assert_eq!(
        std::fs::read(&analysis).unwrap(),
        std::fs::read(repo_root().join("state/images/python-3-12-slim.yaml")).unwrap()
    );
    let (code, out, err) = run(dir.path(), &["unblock", &target, "--by", "alice"]);
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(dir.path().join(RUNTIME)).unwrap();
    assert!(!text.contains(A), "{text}");
}

#[test]
fn refused_decisions_say_why_and_write_nothing() {
    let dir = example();
    let before = snapshot(&dir.path().join("state"));
    for (args, needle) in [
        (
            vec!["block", "python:3.12-slim", "--reason", "x"],
            "a digest is needed",
        ),
        (
            vec!["block", &*format!("alpine:9@{A}"), "--reason", "x"],
            "is not an image",
        ),
        (
            vec!["expedite", "python-3-12-slim", "--reason", "CVE-1"],
            "no update to expedite",
        ),
        (vec!["retry", "app-0123456789"], "no rebuild app-0123456789"),
        (vec!["approve", "app-0123456789"], "app-0123456789"),
    ] {
        let (code, out, err) = run(dir.path(), &args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert_eq!(before, snapshot(&dir.path().join("state")));
}

#[test]
fn plan_is_the_engines_dry_run_and_flags_dependents_that_pin_the_base() {
    let dir = example();
    // payments-worker pins its golang base by digest in a copy of its Dockerfile.
    let dockerfile = dir.path().join("examples/payments-worker/Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    assert!(text.contains("golang:${GO_VERSION}-bookworm"), "{text}");
    std::fs::write(
        &dockerfile,
        text.replace(
            "golang:${GO_VERSION}-bookworm",
            &format!("golang:${{GO_VERSION}}-bookworm@{A}"),
        ),
    )
    .unwrap();
    let (code, out, err) = run(
        dir.path(),
        &[
            "plan",
            "--update",
            "golang:1.23-bookworm",
            "--discovered-at",
            "2026-11-22T00:00:00Z",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("not rebuilt: payments-worker pins the base"),
        "{out}"
    );
    let (code, out, _) = run(
        dir.path(),
        &[
            "plan",
            "--update",
            "debian:bookworm-slim",
            "--discovered-at",
            "2026-11-22T00:00:00Z",
            "--output",
            "json",
        ],
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let first = &v["rebuilds"][0];
    assert_eq!(first["image"], "platform-base");
    assert!(
        first["bases"][0]
            .as_str()
            .unwrap()
            .starts_with("docker.io/library/debian:bookworm-slim@sha256:"),
        "each rebuild names the pinned base it is built on: {first}"
    );
}
