//! `image-factory dockerfile --pin`: the pinned copy, the report on stderr, exit codes.

use std::path::Path;

use crate::support::image_factory;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A multi-stage Dockerfile with CRLF line ends, a continuation, an ARG-built base, a
/// stage reference and a cache mount from an image.
const DOCKERFILE: &str = "# syntax=docker/dockerfile:1\r\n\
ARG PY=3.12-slim\r\n\
FROM --platform=$BUILDPLATFORM python:${PY} AS build\r\n\
RUN --mount=type=cache,from=busybox:1.36,target=/b \\\r\n    make\r\n\
FROM build\r\n\
COPY --from=build /out /app\r\n";

fn write(dir: &Path) {
    std::fs::write(dir.join("Dockerfile"), DOCKERFILE).unwrap();
}

#[test]
fn dockerfile_pin_writes_the_pinned_copy_and_reports_each_replacement() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path());
    let python = format!("docker.io/library/python:3.12-slim@{DIGEST}");
    let busybox = format!("busybox:1.36@{DIGEST}");
    let out = image_factory(
        dir.path(),
        &[
            "dockerfile",
            "--pin",
            "Dockerfile",
            "--base",
            &python,
            "--base",
            &busybox,
            "-o",
            "Dockerfile.pinned",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pinned = std::fs::read_to_string(dir.path().join("Dockerfile.pinned")).unwrap();
    let want = DOCKERFILE.replace("python:${PY}", &python).replace(
        "from=busybox:1.36",
        &format!("from=docker.io/library/{busybox}"),
    );
    assert_eq!(pinned, want);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "Dockerfile:3: FROM python:${{PY}} → {python} (replaces an ARG expression"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "Dockerfile:4: RUN --mount from busybox:1.36 → docker.io/library/{busybox}"
        )),
        "{stderr}"
    );

    // To stdout without -o; the result needs no more pinning.
    let out = image_factory(
        dir.path(),
        &[
            "dockerfile",
            "--pin",
            "Dockerfile.pinned",
            "--base",
            &python,
            "--base",
            &busybox,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), want);
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn dockerfile_pin_exits_1_when_a_base_matches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path());
    let base = format!("debian:bookworm@{DIGEST}");
    let out = image_factory(
        dir.path(),
        &["dockerfile", "--pin", "Dockerfile", "--base", &base],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), DOCKERFILE, "the copy is still written");
    assert!(
        text(&out.stderr).contains(&format!(
            "warning: --base docker.io/library/debian:bookworm@{DIGEST} matched no FROM"
        )),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn dockerfile_pin_rejects_a_base_without_digest_and_a_broken_dockerfile() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path());
    let out = image_factory(
        dir.path(),
        &[
            "dockerfile",
            "--pin",
            "Dockerfile",
            "--base",
            "python:3.12-slim",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("a base must be pinned to a digest"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(dir.path().join("Broken"), "ARG BASE\nFROM ${BASE}\n").unwrap();
    let base = format!("python:3.12@{DIGEST}");
    let out = image_factory(
        dir.path(),
        &["dockerfile", "--pin", "Broken", "--base", &base],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Broken:2: "),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "");
}
