//! The command line as a user drives it: exit codes, output formats, generated files.

use crate::support::{image_factory, repo_root};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_committed_json_schema_is_current() {
    let out = image_factory(&repo_root(), &["schema"]);
    assert!(out.status.success());
    let committed = std::fs::read_to_string(repo_root().join("images.schema.json")).unwrap();
    assert_eq!(
        committed,
        text(&out.stdout),
        "images.schema.json is stale: run `image-factory schema > images.schema.json`"
    );
    let enrollment = std::fs::read_to_string(repo_root().join("images.yaml")).unwrap();
    assert!(enrollment.starts_with("# yaml-language-server: $schema=./images.schema.json"));
}

#[test]
fn the_example_enrollment_validates() {
    let out = image_factory(&repo_root(), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn validate_prints_github_annotations_for_every_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("images.yaml"),
        "version: 1\nimages:\n  - name: Bad_Name\n    image: alpine:3.19\n    warehouse:\n      ignoreTagsRegexes: ['(']\n",
    )
    .unwrap();
    let out = image_factory(dir.path(), &["validate", "--format", "github"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("::error file=images.yaml,line=3,col=11::invalid name \"Bad_Name\""),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("::error file=images.yaml,line=6,col=27::invalid regular expression"),
        "{stdout}"
    );
}

#[test]
fn usage_and_io_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = image_factory(dir.path(), &["validate", "missing.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read missing.yaml"));
    let out = image_factory(dir.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
    let out = image_factory(dir.path(), &["dockerfile", "nope/Dockerfile"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dockerfile_json_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "ARG GO=1.23\nFROM --platform=$BUILDPLATFORM golang:${GO} AS build\nFROM scratch\nCOPY --from=build /x /x\nCOPY --from=alpine:3.19 /etc/ssl /etc/ssl\n",
    )
    .unwrap();
    let out = image_factory(
        dir.path(),
        &[
            "dockerfile",
            "Dockerfile",
            "--build-arg",
            "GO=1.24",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{
            "file": "Dockerfile",
            "stages": [
                {"index": 0, "name": "build", "platform": "$BUILDPLATFORM",
                 "from": {"kind": "image", "raw": "golang:${GO}", "reference": "docker.io/library/golang:1.24"}},
                {"index": 1, "name": null, "platform": null, "from": {"kind": "scratch"}}
            ],
            "dependencies": [
                {"reference": "docker.io/library/golang:1.24", "via": "from", "stage": 0},
                {"reference": "docker.io/library/alpine:3.19", "via": "copy", "stage": 1}
            ],
            "errors": [],
            "warnings": []
        }])
    );
}

#[test]
fn plan_reports_waves_and_due_times_as_json() {
    let out = image_factory(
        &repo_root(),
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
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rebuilds = v["rebuilds"].as_array().unwrap();
    let names: Vec<(u64, &str)> = rebuilds
        .iter()
        .map(|r| (r["wave"].as_u64().unwrap(), r["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            (1, "platform-base"),
            (2, "platform-python"),
            (3, "python-web"),
            (4, "billing-api"),
            (4, "reports")
        ]
    );
    assert_eq!(rebuilds[0]["due"], "2026-11-29T00:00:00Z");
    assert_eq!(
        rebuilds[3]["due"], "2026-11-29T02:00:00Z",
        "billing-api's cascadeDelay is 2h"
    );
    let out = image_factory(&repo_root(), &["plan", "--update", "alpine:9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not in the dependency graph"));
}

#[test]
fn graph_formats() {
    for (format, needle) in [
        ("mermaid", "flowchart LR"),
        ("dot", "digraph images"),
        ("json", "\"edges\""),
    ] {
        let out = image_factory(&repo_root(), &["graph", "--format", format]);
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stdout).contains(needle), "{format}");
    }
}
