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
        .map(|r| (r["wave"].as_u64().unwrap(), r["image"].as_str().unwrap()))
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

/// Every `image-factory plan …` example in `text` (written between backticks).
fn plan_examples(text: &str) -> Vec<Vec<String>> {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| quoted.starts_with("image-factory plan "))
        .map(|quoted| quoted.split(' ').skip(1).map(str::to_string).collect())
        .collect()
}

#[test]
fn the_plan_examples_in_help_work_on_the_bundled_example() {
    let mut examples = Vec::new();
    for help in [&["--help"][..], &["plan", "--help"][..]] {
        let out = image_factory(&repo_root(), help);
        assert_eq!(out.status.code(), Some(0));
        let found = plan_examples(&text(&out.stdout));
        assert!(!found.is_empty(), "no plan example in {help:?}");
        examples.extend(found);
    }
    for example in examples {
        let args: Vec<&str> = example.iter().map(String::as_str).collect();
        let out = image_factory(&repo_root(), &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains("rebuild(s) in"), "{args:?}");
    }
}

/// A small enrollment under another name than images.yaml, one managed image.
fn custom_enrollment(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(dir.join("app/Dockerfile"), "FROM alpine:3.19\n").unwrap();
    std::fs::write(
        dir.join("custom.yaml"),
        "version: 1\nimages:\n  - name: app\n    image: ghcr.io/acme/app:1\n    source: {path: app}\n    trigger: {command: {args: [make]}}\n",
    )
    .unwrap();
}

#[test]
fn every_command_takes_the_file_as_f_or_positionally() {
    let dir = tempfile::tempdir().unwrap();
    custom_enrollment(dir.path());
    let commands: [&[&str]; 4] = [
        &["validate"],
        &["graph"],
        &["plan", "--update", "alpine:3.19"],
        &["analyze", "--dry-run"],
    ];
    for command in commands {
        for file in [
            &["-f", "custom.yaml"][..],
            &["--file", "custom.yaml"],
            &["custom.yaml"],
        ] {
            let args: Vec<&str> = command.iter().chain(file).copied().collect();
            let out = image_factory(dir.path(), &args);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{args:?}: {}",
                text(&out.stderr)
            );
        }
        let both: Vec<&str> = command
            .iter()
            .copied()
            .chain(["-f", "custom.yaml", "other.yaml"])
            .collect();
        let out = image_factory(dir.path(), &both);
        assert_eq!(out.status.code(), Some(2), "{both:?} names two files");
        assert!(
            text(&out.stderr).contains("cannot be used with"),
            "{both:?}"
        );
    }
}

#[test]
fn only_analyze_says_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "version: 1\nimages:\n  - name: Bad\n    image: alpine\n",
    )
    .unwrap();
    for (args, writes) in [
        (&["graph", "missing.yaml"][..], false),
        (&["plan", "missing.yaml", "--update", "alpine"], false),
        (&["graph", "bad.yaml"], false),
        (&["analyze", "missing.yaml"], true),
        (&["analyze", "bad.yaml"], true),
    ] {
        let out = image_factory(dir.path(), args);
        let stderr = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert_eq!(
            stderr.contains("nothing written"),
            writes,
            "{args:?}: {stderr}"
        );
    }
    let out = image_factory(dir.path(), &["graph", "missing.yaml"]);
    assert!(text(&out.stderr).contains("cannot read missing.yaml"));
    let out = image_factory(dir.path(), &["graph", "bad.yaml"]);
    assert!(
        text(&out.stderr).contains("fix bad.yaml (`image-factory validate bad.yaml`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn command_line_paths_are_relative_to_the_working_directory_and_sources_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    custom_enrollment(&dir.path().join("team"));
    let out = image_factory(
        dir.path(),
        &["analyze", "-f", "team/custom.yaml", "--state-dir", "out"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(dir.path().join("out/images/app.yaml").is_file());
    assert!(!dir.path().join("team/out").exists());
    for command in ["analyze", "validate", "graph", "plan"] {
        let out = image_factory(dir.path(), &[command, "--help"]);
        let help = text(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            help.contains("relative to the working directory")
                && help.contains("relative to the directory of images.yaml"),
            "{command} --help does not state the path rule: {help}"
        );
    }
}

#[test]
fn validate_warns_about_a_managed_image_without_trigger() {
    let dir = tempfile::tempdir().unwrap();
    custom_enrollment(dir.path());
    std::fs::write(
        dir.path().join("images.yaml"),
        "version: 1\nimages:\n  - name: app\n    image: ghcr.io/acme/app:1\n    source: {path: app}\n",
    )
    .unwrap();
    let out = image_factory(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("images.yaml:3:11: warning: image \"app\" has no trigger: rebuilds are recorded but never started"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn yaml_errors_are_printed_once_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    for text_in in [
        "version: 1\nversion: 1\nimages: []\n",
        "version: 1\nimages:\n  - name:\n    image: alpine\n",
        "version: 1\nimages:\n  - name: a\n image: alpine\n",
    ] {
        std::fs::write(dir.path().join("images.yaml"), text_in).unwrap();
        let out = image_factory(dir.path(), &["validate"]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        let first = stderr.lines().next().unwrap();
        assert!(first.starts_with("images.yaml:"), "{stderr}");
        assert_eq!(first.matches("error").count(), 1, "{stderr}");
        for word in ["Option<", "DuplicateKeyPolicy", " line ", "column"] {
            assert!(!first.contains(word), "{word:?} in {stderr}");
        }
    }
}

#[test]
fn rebuild_max_attempts_is_in_the_schema() {
    let out = image_factory(&repo_root(), &["schema"]);
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let max_attempts = &schema["$defs"]["RebuildSpec"]["properties"]["maxAttempts"];
    assert_eq!(max_attempts["minimum"], 1, "{max_attempts}");
    assert_eq!(max_attempts["maximum"], 20, "{max_attempts}");
}
