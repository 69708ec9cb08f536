//! `image-factory dockerfile` and `validate` on Dockerfiles with problems: exit codes,
//! located errors, and a hint per kind of problem.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::image_factory;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, content).unwrap();
}

#[test]
fn dockerfile_exits_1_on_a_real_error_and_0_on_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "self/Dockerfile",
        "FROM alpine:3.20 AS a\nCOPY --from=a /x /x\n",
    );
    let out = image_factory(dir.path(), &["dockerfile", "self/Dockerfile"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("self/Dockerfile:2: COPY --from=a: a stage cannot use itself"),
        "{}",
        text(&out.stdout)
    );

    write(
        dir.path(),
        "warn/Dockerfile",
        "ARG V=1.2.3\nARG MAJOR=${V/./-}\nFROM alpine:3.20\n",
    );
    let out = image_factory(dir.path(), &["dockerfile", "warn/Dockerfile"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("  warnings:\n"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn dockerfile_rejects_a_stage_name_buildkit_rejects() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "Dockerfile", "FROM alpine:3.20 AS 1bad\n");
    let out = image_factory(
        dir.path(),
        &["dockerfile", "Dockerfile", "--output", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = v[0]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .starts_with("Dockerfile:1: invalid stage name \"1bad\""),
        "{errors:?}"
    );
}

#[test]
fn dockerfile_arg_bomb_finishes_fast_with_a_located_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut content = "ARG A1=x\n".to_owned();
    for n in 2..=40 {
        content.push_str(&format!("ARG A{n}=${{A{p}}}${{A{p}}}\n", p = n - 1));
    }
    content.push_str("FROM alpine:${A40}\n");
    write(dir.path(), "Dockerfile", &content);
    let started = Instant::now();
    let out = image_factory(dir.path(), &["dockerfile", "Dockerfile"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    // Before the limit the process aborted (`memory allocation failed`, signal 6).
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Dockerfile:14: ARG A14 expands past 4096 bytes"),
        "{stdout}"
    );
    assert!(stdout.len() < 2_000, "{} bytes of output", stdout.len());
}

/// A managed image whose Dockerfile uses `${BASE}` without `ARG BASE`.
fn enrollment_with(dir: &Path, dockerfile: &str) {
    write(
        dir,
        "images.yaml",
        "version: 1\nimages:\n  - name: app\n    image: registry.example.com/app:1\n    source:\n      path: app\n    trigger:\n      githubWorkflow:\n        repository: example-corp/app\n        workflow: build.yml\n",
    );
    write(dir, "app/Dockerfile", dockerfile);
}

#[test]
fn validate_hints_follow_the_kind_of_problem() {
    let dir = tempfile::tempdir().unwrap();
    enrollment_with(dir.path(), "FROM ${BASE}\n");
    let out = image_factory(dir.path(), &["validate"]);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("app/Dockerfile:1:1"), "{all}");
    assert!(
        all.contains("BASE is not declared; add `ARG BASE=<image>` before the first FROM"),
        "{all}"
    );
    assert!(!all.contains("buildArgs"), "{all}");

    enrollment_with(dir.path(), "RUN make\nFROM alpine:3.20\n");
    let out = image_factory(dir.path(), &["validate"]);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("app/Dockerfile:1:1"), "{all}");
    assert!(all.contains("move RUN after the first FROM"), "{all}");
    // The old keyword-picked hint for anything mentioning ARG.
    assert!(!all.contains("give the ARG a default"), "{all}");
}
