//! `image-factory diff` on a scripted two-commit history in a real git repository: the
//! second commit adds an image, removes one, moves one from managed to external, adds
//! a base to a Dockerfile, lengthens a soak and changes a Warehouse. The outputs are
//! compared with goldens in `tests/testdata/diff/` (`UPDATE_GOLDEN=1` rewrites them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::repo_root;

const BASE_YAML: &str = "\
version: 1
images:
  - name: python
    image: python:3.12-slim
    rebuild: {delay: 3d}

  - name: node
    image: node:22-bookworm-slim
    warehouse:
      imageSelectionStrategy: SemVer
      constraint: ^22.0.0

  - name: app
    image: registry.example.com/team/app:1
    source: {path: app}
    trigger: {command: {args: [make, app]}}

  - name: worker
    image: registry.example.com/team/worker:1
    source: {path: worker}
    trigger: {command: {args: [make, worker]}}

  - name: legacy
    image: registry.example.com/team/legacy:1
    source: {path: legacy}
    trigger: {command: {args: [make, legacy]}}
";

const HEAD_YAML: &str = "\
version: 1
images:
  - name: python
    image: python:3.12-slim
    rebuild: {delay: 5d}

  - name: node
    image: node:22-bookworm-slim
    warehouse:
      imageSelectionStrategy: SemVer
      constraint: ^23.0.0

  - name: app
    image: registry.example.com/team/app:1
    source: {path: app}
    trigger: {command: {args: [make, app]}}

  # Built elsewhere from now on: only watched.
  - name: worker
    image: registry.example.com/team/worker:1

  - name: web
    image: registry.example.com/team/web:1
    source: {path: web}
    trigger: {command: {args: [make, web]}}
";

/// Runs git in `dir` with a fixed identity and fixed dates, so commit ids (and the
/// outputs that show them) are the same on every run.
fn git(dir: &Path, args: &[&str]) -> String {
    crate::support::git::git_with(
        dir,
        args,
        &[
            ("GIT_AUTHOR_DATE", "2026-12-01T10:00:00Z"),
            ("GIT_COMMITTER_DATE", "2026-12-01T10:00:00Z"),
        ],
    )
}

fn write(dir: &Path, path: &str, content: &str) {
    let file = dir.join(path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, content).unwrap();
}

/// The repository after the two commits: the base, then the change under review.
fn history() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    git(dir, &["init", "-q"]);
    write(dir, "images.yaml", BASE_YAML);
    write(dir, "app/Dockerfile", "FROM python:3.12-slim\n");
    write(
        dir,
        "worker/Dockerfile",
        "FROM golang:1.23-bookworm AS build\nFROM gcr.io/distroless/static-debian12\nCOPY --from=build /out /\n",
    );
    write(dir, "legacy/Dockerfile", "FROM python:3.12-slim\n");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "base"]);
    write(dir, "images.yaml", HEAD_YAML);
    write(
        dir,
        "app/Dockerfile",
        "FROM python:3.12-slim\nCOPY --from=ghcr.io/astral-sh/uv:0.5 /uv /bin/uv\n",
    );
    write(dir, "web/Dockerfile", "FROM node:22-bookworm-slim\n");
    std::fs::remove_dir_all(dir.join("legacy")).unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "the change"]);
    repo
}

/// Runs `image-factory diff ARGS` in `dir`; `summary` becomes `$GITHUB_STEP_SUMMARY`.
fn diff(dir: &Path, args: &[&str], summary: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_image-factory"));
    command
        .arg("diff")
        .args(args)
        .current_dir(dir)
        .env("IMAGE_FACTORY_CACHE", dir.join(".cache"))
        .env_remove("GITHUB_STEP_SUMMARY");
    if let Some(path) = summary {
        command.env("GITHUB_STEP_SUMMARY", path);
    }
    command.output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn golden_path(name: &str) -> PathBuf {
    repo_root().join("tests/testdata/diff").join(name)
}

/// Compares `actual` with the golden `name`; `UPDATE_GOLDEN=1` writes it instead.
fn assert_golden(name: &str, actual: &str, scratch: &Path) {
    let path = golden_path(name);
    assert!(
        !actual.contains(&scratch.display().to_string()),
        "{name} shows the temporary folder:\n{actual}"
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(
        actual,
        want,
        "{name} differs from {}; rerun with UPDATE_GOLDEN=1 to accept a deliberate change",
        path.display()
    );
}

#[test]
fn text_output_matches_the_golden() {
    let repo = history();
    let out = diff(repo.path(), &["--base", "HEAD^1"], None);
    assert_golden("text.txt", &stdout(&out), repo.path());
}

#[test]
fn json_output_matches_the_golden_and_names_what_changed() {
    let repo = history();
    let out = stdout(&diff(
        repo.path(),
        &["--base", "HEAD^1", "--output", "json"],
        None,
    ));
    assert_golden("diff.json", &out, repo.path());
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        doc["base"]["commit"].as_str().unwrap(),
        git(repo.path(), &["rev-parse", "HEAD^1"])
    );
    assert_eq!(names(&doc["images"]["added"]), ["web"]);
    assert_eq!(names(&doc["images"]["removed"]), ["legacy"]);
    assert_eq!(doc["images"]["moved"][0]["name"], "worker");
    assert_eq!(doc["images"]["moved"][0]["from"], "managed");
    assert_eq!(doc["images"]["moved"][0]["to"], "external");
    assert_eq!(names(&doc["bases"]["added"]), ["ghcr-io-astral-sh-uv-0-5"]);
    assert_eq!(names(&doc["warehouses"]["changed"]), ["node"]);
    assert_eq!(names(&doc["policies"]), ["python", "worker"]);
}

#[test]
fn github_output_writes_the_summary_and_annotates_the_changed_lines() {
    let repo = history();
    let scratch = tempfile::tempdir().unwrap();
    let summary = scratch.path().join("summary.md");
    // GitHub gives each step a file that may already hold other steps' summaries.
    std::fs::write(&summary, "earlier step\n").unwrap();
    let out = diff(
        repo.path(),
        &["--base", "HEAD^1", "--output", "github"],
        Some(&summary),
    );
    let annotations = stdout(&out);
    assert_golden("annotations.txt", &annotations, repo.path());
    let written = std::fs::read_to_string(&summary).unwrap();
    let added = written
        .strip_prefix("earlier step\n")
        .expect("the summary is appended");
    assert_golden("summary.md", added, repo.path());
    // Each annotation points at the entry's line in the file.
    let lines: Vec<&str> = HEAD_YAML.lines().collect();
    for a in annotations.lines().filter(|l| l.contains(",line=")) {
        let line: usize = a
            .split(",line=")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        let name = a
            .split("diff%3A ")
            .nth(1)
            .unwrap()
            .split("::")
            .next()
            .unwrap();
        assert_eq!(lines[line - 1], format!("  - name: {name}"), "{a}");
    }
}

#[test]
fn an_unchanged_working_tree_has_no_changes_against_head() {
    let repo = history();
    let out = stdout(&diff(repo.path(), &[], None));
    assert!(out.ends_with("\nno changes\n"), "{out}");
    assert!(out.starts_with("images.yaml compared with HEAD ("), "{out}");
}

#[test]
fn an_invalid_working_tree_gives_located_errors_and_exit_1() {
    let repo = history();
    let broken = HEAD_YAML.replace("rebuild: {delay: 5d}", "rebuild: {delay: 5x}");
    write(repo.path(), "images.yaml", &broken);
    let out = diff(repo.path(), &["--output", "github"], None);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("::error file=images.yaml,line=5,col=")),
        "{text}"
    );
    let out = diff(repo.path(), &[], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("images.yaml:5:"), "{err}");
}

#[test]
fn an_unknown_ref_is_a_usage_error() {
    let repo = history();
    let out = diff(repo.path(), &["--base", "no-such-branch"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--base \"no-such-branch\" names no commit"),
        "{err}"
    );
}

#[test]
fn a_new_images_yaml_is_all_added() {
    let repo = history();
    let dir = repo.path();
    // The file moves into a folder the base commit does not have.
    write(
        dir,
        "team/images.yaml",
        &HEAD_YAML.replace("path: ", "path: ../"),
    );
    let out = stdout(&diff(
        dir,
        &["-f", "team/images.yaml", "--output", "json"],
        None,
    ));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["base"]["file"], "team/images.yaml");
    assert_eq!(doc["base"]["found"], false);
    assert_eq!(doc["images"]["added"].as_array().unwrap().len(), 5);
    assert!(doc["images"]["removed"].as_array().unwrap().is_empty());
}

/// `examples/github-actions/image-factory-diff.yml`, run as GitHub runs it on a pull
/// request: the checkout is the merge commit of the pull request into a target branch
/// that moved on, and the workflow's own `diff` command line gives the annotations of
/// the change under review (the same golden as above).
#[test]
fn the_example_workflow_annotates_a_pull_requests_merge_commit() {
    let text =
        std::fs::read_to_string(repo_root().join("examples/github-actions/image-factory-diff.yml"))
            .unwrap();
    let workflow: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert!(workflow["on"]["pull_request"].is_object(), "{workflow}");
    let steps = workflow["jobs"]["diff"]["steps"].as_array().unwrap();
    let checkout = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/checkout"))
        })
        .unwrap();
    assert!(
        checkout["with"]["fetch-depth"].as_u64().unwrap() >= 2,
        "HEAD^1 must be fetched"
    );
    let command = steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .find(|r| r.starts_with("image-factory diff "))
        .unwrap();
    let args: Vec<&str> = command.split_whitespace().skip(2).collect();
    assert!(args.contains(&"github"), "{command}");

    // Target branch: the base commit, then an unrelated commit after the PR branched.
    let repo = history();
    let dir = repo.path();
    git(dir, &["branch", "pr"]);
    git(dir, &["reset", "-q", "--hard", "HEAD^1"]);
    write(dir, "README.md", "unrelated\n");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "meanwhile on main"]);
    // refs/pull/N/merge: main merged with the pull request, checked out detached.
    git(
        dir,
        &["merge", "-q", "--no-ff", "-m", "Merge pr into main", "pr"],
    );
    git(dir, &["checkout", "-q", "--detach"]);
    let scratch = tempfile::tempdir().unwrap();
    let summary = scratch.path().join("summary.md");
    let out = diff(dir, &args, Some(&summary));
    assert_golden("annotations.txt", &stdout(&out), dir);
    let written = std::fs::read_to_string(&summary).unwrap();
    assert!(written.contains("compared with `HEAD^1`"), "{written}");
}

/// A git source's Dockerfile is read at the ref each side names: moving `ref` from
/// `v1` to `v2` (uncommitted, against the default `--base HEAD`) shows the new base.
/// A local source at the repository root (`path: .`) is read at the base too.
#[test]
fn a_git_sources_new_ref_brings_the_bases_of_its_dockerfile() {
    let scratch = tempfile::tempdir().unwrap();
    let upstream = crate::support::git::Upstream::new(scratch.path().join("svc.git"));
    upstream.commit("Dockerfile", "FROM alpine:3.19\n");
    upstream.git(&["tag", "v1"]);
    upstream.commit("Dockerfile", "FROM alpine:3.20\n");
    upstream.git(&["tag", "v2"]);
    upstream.push(&["main", "v1", "v2"]);
    let url = format!("file://{}", upstream.bare.display());
    let enrollment = |tag: &str| {
        format!(
            "version: 1\nimages:\n  - name: svc\n    image: ghcr.io/acme/svc:1\n    source: {{git: {{url: '{url}', ref: {tag}}}}}\n    trigger: {{command: {{args: [make]}}}}\n  - name: root\n    image: ghcr.io/acme/root:1\n    source: {{path: .}}\n    trigger: {{command: {{args: [make]}}}}\n"
        )
    };
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    git(dir, &["init", "-q"]);
    write(dir, "images.yaml", &enrollment("v1"));
    write(dir, "Dockerfile", "FROM debian:bookworm\n");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "v1"]);
    write(dir, "images.yaml", &enrollment("v2"));
    let out = stdout(&diff(dir, &["--output", "json"], None));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let changed = &doc["images"]["changed"];
    assert_eq!(changed[0]["name"], "svc", "{out}");
    assert_eq!(changed[0]["changes"][0]["field"], "source");
    assert!(changed[0]["changes"][0]["after"]
        .as_str()
        .unwrap()
        .ends_with(" ref v2"));
    assert_eq!(doc["bases"]["added"][0]["name"], "alpine-3-20", "{out}");
    assert_eq!(doc["bases"]["removed"][0]["name"], "alpine-3-19", "{out}");
    // The root source is the same on both sides: no edge of it changes.
    let edges: Vec<&str> = doc["edges"]["added"]
        .as_array()
        .unwrap()
        .iter()
        .chain(doc["edges"]["removed"].as_array().unwrap())
        .map(|e| e["dependent"].as_str().unwrap())
        .collect();
    assert_eq!(edges, ["svc", "svc"], "{out}");
}
