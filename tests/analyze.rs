//! `image-factory analyze` end to end on real files and real git repositories.

use std::path::Path;

use crate::support::git::git;
use crate::support::{example, image_factory, snapshot};

fn analyze(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["analyze"];
    args.extend_from_slice(extra);
    let out = image_factory(dir, &args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn committed_state_is_what_analyze_writes_and_a_rerun_changes_nothing() {
    let dir = example();
    let before = snapshot(&dir.path().join("state"));
    let (code, out, err) = analyze(dir.path(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("state: 0 written"),
        "state/ is stale: run `image-factory analyze` and commit state/\n{out}"
    );
    assert_eq!(before, snapshot(&dir.path().join("state")));
    assert!(
        out.contains("7 managed, 3 external, 3 discovered base(s)"),
        "{out}"
    );
    assert!(out.contains("depth 4"), "{out}");
}

/// A runtime record as the engine would leave it; analyze must never touch it.
const RUNTIME: &str = "version: 1\nreference: REF\nupdates:\n- digest: sha256:1111111111111111111111111111111111111111111111111111111111111111\n";

fn put_runtime(dir: &Path, rel: &str, reference: &str) -> std::path::PathBuf {
    let path = dir.join("state").join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, RUNTIME.replace("REF", reference)).unwrap();
    path
}

#[test]
fn analysis_never_touches_runtime_records_whatever_the_config_change() {
    let dir = example();
    let runtime = put_runtime(
        dir.path(),
        "runtime/registry.example.com/platform/python/3.12.yaml",
        "registry.example.com/platform/python:3.12",
    );
    let before = std::fs::read(&runtime).unwrap();
    edit(
        &dir.path().join("images.yaml"),
        "PYTHON_VERSION: \"3.12\"",
        "PYTHON_VERSION: \"3.13\"",
    );
    let (code, out, err) = analyze(dir.path(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read(&runtime).unwrap(),
        before,
        "runtime record changed"
    );
    let text =
        std::fs::read_to_string(dir.path().join("state/images/platform-python.yaml")).unwrap();
    assert!(
        text.contains("PYTHON_VERSION: '3.13'") || text.contains("PYTHON_VERSION: \"3.13\""),
        "config not updated:\n{text}"
    );
    assert!(
        !text.contains("history"),
        "analysis records hold no runtime data:\n{text}"
    );
    // The ARG now resolves to python:3.13-slim: a new discovered base, the old external kept.
    assert!(dir
        .path()
        .join("state/images/python-3-13-slim.yaml")
        .exists());
}

#[test]
fn version_1_state_files_are_migrated_once_into_runtime_records() {
    let dir = example();
    let file = dir.path().join("state/images/python-3-12-slim.yaml");
    // Turn the committed record back into the unversioned shape release 0.1 wrote.
    let v2 = std::fs::read_to_string(&file).unwrap();
    let v1 = v2.replacen("version: 2\n", "", 1)
        + "current:\n  tag: 3.12-slim\n  digest: sha256:2222222222222222222222222222222222222222222222222222222222222222\n  observedAt: 2026-11-02T00:00:00Z\nhistory:\n- digest: sha256:2222222222222222222222222222222222222222222222222222222222222222\n  tag: 3.12-slim\n  discoveredAt: 2026-11-02T00:00:00Z\n  origin: watcher\nrebuilds: []\n";
    std::fs::write(&file, v1).unwrap();
    let (code, out, err) = analyze(dir.path(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("migrated: 1 runtime record(s)"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        v2,
        "the record is rewritten as version 2"
    );
    let runtime = dir
        .path()
        .join("state/runtime/docker.io/library/python/3.12-slim.yaml");
    let text = std::fs::read_to_string(&runtime).unwrap();
    assert!(
        text.contains("reference: docker.io/library/python:3.12-slim")
            && text.contains("sha256:2222")
            && text.contains("2026-11-02T00:00:00Z"),
        "{text}"
    );
    // Once: the second run has nothing to migrate and changes nothing.
    let (code, out, _) = analyze(dir.path(), &[]);
    assert_eq!(code, 0);
    assert!(!out.contains("migrated"), "{out}");
    assert!(out.contains("0 written"), "{out}");
}

#[test]
fn a_discovered_name_stays_with_its_reference_when_a_lookalike_appears() {
    let dir = example();
    let runtime = put_runtime(
        dir.path(),
        "runtime/docker.io/nginxinc/nginx-unprivileged/1.27-alpine.yaml",
        "docker.io/nginxinc/nginx-unprivileged:1.27-alpine",
    );
    let before = std::fs::read(&runtime).unwrap();
    // `1-27-alpine` derives the same name as the `1.27-alpine` frontend already uses, and
    // `aaa-web` sorts before `frontend`, so a first-come naming would hand it the name.
    std::fs::create_dir_all(dir.path().join("examples/aaa-web")).unwrap();
    std::fs::write(
        dir.path().join("examples/aaa-web/Dockerfile"),
        "FROM nginxinc/nginx-unprivileged:1-27-alpine\n",
    )
    .unwrap();
    edit(
        &dir.path().join("images.yaml"),
        "images:\n",
        "images:\n  - name: aaa-web\n    image: registry.example.com/web/aaa:1\n    source: {path: examples/aaa-web}\n    trigger: {command: {args: [\"true\"]}}\n",
    );
    let (code, out, err) = analyze(dir.path(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    let kept = std::fs::read_to_string(
        dir.path()
            .join("state/images/nginxinc-nginx-unprivileged-1-27-alpine.yaml"),
    )
    .unwrap();
    assert!(
        kept.contains("reference: docker.io/nginxinc/nginx-unprivileged:1.27-alpine"),
        "{kept}"
    );
    let warehouse = std::fs::read_to_string(
        dir.path()
            .join("state/warehouses/nginxinc-nginx-unprivileged-1-27-alpine.yaml"),
    )
    .unwrap();
    assert!(warehouse.contains("constraint: 1.27-alpine"), "{warehouse}");
    assert_eq!(std::fs::read(&runtime).unwrap(), before);
    let names: Vec<String> = std::fs::read_dir(dir.path().join("state/images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("nginxinc-nginx-unprivileged-1-27-alpine-"))
        .collect();
    assert_eq!(
        names.len(),
        1,
        "the lookalike gets its own, suffixed name: {names:?}"
    );
}

#[test]
fn a_folder_in_the_way_of_a_warehouse_fails_before_anything_is_written() {
    let dir = example();
    // A change that rewrites many files…
    edit(&dir.path().join("images.yaml"), "delay: 3d ", "delay: 4d ");
    edit(
        &dir.path().join("images.yaml"),
        "images:\n",
        "images:\n  - name: alpine\n    image: alpine:3.20\n",
    );
    // …and one target that cannot be replaced.
    std::fs::create_dir_all(dir.path().join("state/warehouses/alpine.yaml")).unwrap();
    let before = snapshot(&dir.path().join("state"));
    let (code, _, err) = analyze(dir.path(), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("a folder is in the way") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(
        before,
        snapshot(&dir.path().join("state")),
        "files were rewritten"
    );
}

#[test]
fn a_managed_image_without_from_fails_analyze_as_it_fails_validate() {
    let dir = example();
    std::fs::write(
        dir.path().join("examples/reports/Dockerfile"),
        "# no FROM at all\nLABEL a=b\n",
    )
    .unwrap();
    let before = snapshot(&dir.path().join("state"));
    let (code, _, err) = analyze(dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("reports") && err.contains("nothing written"),
        "{err}"
    );
    assert_eq!(before, snapshot(&dir.path().join("state")));
    assert_eq!(
        image_factory(dir.path(), &["validate"]).status.code(),
        Some(1)
    );
}

#[test]
fn unreferenced_bases_are_orphaned_then_pruned() {
    let dir = example();
    // Drop payments-worker: golang and distroless are referenced by nothing else.
    edit(&dir.path().join("images.yaml"), "  - name: payments-worker\n    image: registry.example.com/payments/worker:0.9\n    source:\n      path: examples/payments-worker\n    trigger:\n      command:\n        args: [make, -C, /srv/payments, image]\n", "");
    let (code, out, _) = analyze(dir.path(), &[]);
    assert_eq!(code, 0);
    assert!(out.contains("orphaned: 3 (gcr-io-distroless-static-debian12-nonroot, golang-1-23-bookworm, payments-worker; remove with --prune)"), "{out}");
    let golang =
        std::fs::read_to_string(dir.path().join("state/images/golang-1-23-bookworm.yaml")).unwrap();
    assert!(golang.contains("orphaned: true"), "{golang}");
    assert!(
        !golang.contains("warehouse:"),
        "an orphan's Warehouse is deleted, so its record names none:\n{golang}"
    );
    assert!(
        !dir.path()
            .join("state/warehouses/golang-1-23-bookworm.yaml")
            .exists(),
        "orphans get no Warehouse"
    );
    let (code, out, _) = analyze(dir.path(), &["--prune"]);
    assert_eq!(code, 0);
    assert!(out.contains("pruned: gcr-io-distroless-static-debian12-nonroot, golang-1-23-bookworm, payments-worker"), "{out}");
    assert!(!dir
        .path()
        .join("state/images/golang-1-23-bookworm.yaml")
        .exists());
}

#[test]
fn promotion_from_discovered_base_to_enrolled_image_keeps_history() {
    let dir = example();
    let old = dir.path().join("state/images/golang-1-23-bookworm.yaml");
    let runtime = put_runtime(
        dir.path(),
        "runtime/docker.io/library/golang/1.23-bookworm.yaml",
        "docker.io/library/golang:1.23-bookworm",
    );
    let history = std::fs::read(&runtime).unwrap();
    // Enroll golang under a name of our choosing, then make it managed.
    edit(
        &dir.path().join("images.yaml"),
        "images:\n",
        "images:\n  - name: golang\n    image: golang:1.23-bookworm\n",
    );
    let (code, out, err) = analyze(dir.path(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !old.exists(),
        "the discovered-base file moves to the enrolled name"
    );
    let new = dir.path().join("state/images/golang.yaml");
    let text = std::fs::read_to_string(&new).unwrap();
    assert!(text.contains("kind: external"), "{text}");
    assert_eq!(
        std::fs::read(&runtime).unwrap(),
        history,
        "the runtime record stays by reference"
    );

    std::fs::create_dir_all(dir.path().join("examples/golang")).unwrap();
    std::fs::write(
        dir.path().join("examples/golang/Dockerfile"),
        "FROM debian:bookworm-slim\n",
    )
    .unwrap();
    edit(
        &dir.path().join("images.yaml"),
        "    image: golang:1.23-bookworm\n",
        "    image: golang:1.23-bookworm\n    source: {path: examples/golang}\n",
    );
    let (code, out, err) = analyze(dir.path(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(&new).unwrap();
    assert!(text.contains("kind: managed"), "{text}");
    assert_eq!(
        std::fs::read(&runtime).unwrap(),
        history,
        "the runtime record stays by reference"
    );
    assert!(
        !dir.path().join("state/warehouses/golang.yaml").exists(),
        "managed images get no Warehouse"
    );
}

#[test]
fn a_bad_enrollment_is_located_and_leaves_state_untouched() {
    let dir = example();
    let before = snapshot(&dir.path().join("state"));
    edit(
        &dir.path().join("images.yaml"),
        "delay: 3d ",
        "delay: 3 fortnights ",
    );
    edit(
        &dir.path().join("images.yaml"),
        "constraint: ^22.0.0",
        "constraint: ^22.0.0.0",
    );
    let (code, _, err) = analyze(dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("images.yaml:28:14: error: invalid delay \"3 fortnights\""),
        "{err}"
    );
    assert!(
        err.contains("images.yaml:34:19: error: invalid SemVer constraint"),
        "{err}"
    );
    assert!(err.contains("nothing written"), "{err}");
    assert_eq!(before, snapshot(&dir.path().join("state")));
}

#[test]
fn a_cycle_is_named_and_nothing_is_written() {
    let dir = example();
    let before = snapshot(&dir.path().join("state"));
    std::fs::write(
        dir.path().join("examples/platform-base/Dockerfile"),
        "FROM registry.example.com/platform/python-web:3.12\n",
    )
    .unwrap();
    let (code, _, err) = analyze(dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "dependency cycle(s): platform-base → platform-python → python-web → platform-base"
        ),
        "{err}"
    );
    assert_eq!(before, snapshot(&dir.path().join("state")));
    let out = image_factory(dir.path(), &["validate"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("images.yaml:41:11: error: dependency cycle: platform-base → platform-python → python-web → platform-base"), "{err}");
}

#[test]
fn git_sources_are_fetched_and_the_commit_is_recorded() {
    let upstream = tempfile::tempdir().unwrap();
    git(upstream.path(), &["init", "-q"]);
    std::fs::create_dir_all(upstream.path().join("svc")).unwrap();
    std::fs::write(
        upstream.path().join("svc/Containerfile"),
        "ARG BASE=python:3.12-slim\nFROM $BASE\n",
    )
    .unwrap();
    git(upstream.path(), &["add", "."]);
    git(upstream.path(), &["commit", "-qm", "svc"]);
    let commit = git(upstream.path(), &["rev-parse", "HEAD"]);
    // Serve it over the bare-repository path a platform team would clone from.
    let bare = tempfile::tempdir().unwrap();
    git(
        bare.path(),
        &[
            "clone",
            "-q",
            "--bare",
            &upstream.path().display().to_string(),
            "repo.git",
        ],
    );

    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/repo.git", bare.path().display());
    std::fs::write(
        dir.path().join("images.yaml"),
        format!("version: 1\nimages:\n  - name: svc\n    image: ghcr.io/acme/svc:1\n    source:\n      git: {{url: '{url}', ref: main}}\n      dockerfile: svc/Containerfile\n"),
    )
    .unwrap();
    let (code, out, err) = analyze(dir.path(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(dir.path().join("state/images/svc.yaml")).unwrap();
    assert!(text.contains(&format!("commit: {commit}")), "{text}");
    assert!(
        text.contains("reference: docker.io/library/python:3.12-slim"),
        "{text}"
    );
}
