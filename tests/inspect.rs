//! `image-factory inspect` as a user runs it against a real registry: what reaches
//! stdout (JSON entries, platforms) and stderr (which reference failed, log lines).

use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::support::registry::{Fault, FaultProxy, Layout, Mode, TestRegistry};

struct Fixture {
    registry: TestRegistry,
}

/// `multi/app:amd64` (one image) and `multi/app:1`, an index of that image plus a
/// BuildKit-style attestation manifest (`unknown/unknown`).
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let registry = TestRegistry::start(Mode::Open);
        let work = registry.scratch("images");
        let image = Layout::build(
            &work,
            "amd64",
            &[("arch", "amd64")],
            "amd64",
            "2024-03-01T00:00:00Z",
            &[],
        );
        registry.push_layout(&image.path, "amd64", "multi/app:amd64");
        let (amd, amd_type) = registry.manifest("multi/app", "amd64");
        let digest = image_factory::registry::digest::sha256_digest(&amd);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": amd_type, "digest": digest, "size": amd.len(),
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": amd_type, "digest": digest, "size": amd.len(),
                 "platform": {"os": "unknown", "architecture": "unknown"},
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                 "vnd.docker.reference.digest": digest}},
            ]
        });
        registry.put_manifest(
            "multi/app",
            "1",
            &serde_json::to_vec(&index).unwrap(),
            "application/vnd.oci.image.index.v1+json",
        );
        Fixture { registry }
    })
}

/// Runs `image-factory inspect ARGS` with stderr a pipe (not a terminal), as in CI.
fn inspect(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_image-factory"))
        .arg("inspect")
        .args(args)
        .current_dir(dir.path())
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn attestation_manifests_are_not_listed_as_platforms() {
    let host = &fixture().registry.host;
    let out = inspect(&[&format!("{host}/multi/app:1"), "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let platforms: Vec<&str> = v[0]["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/amd64"]);
    let out = inspect(&[&format!("{host}/multi/app:1")]);
    assert!(
        !text(&out.stdout).contains("unknown/unknown"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn every_failed_reference_has_an_entry_in_json() {
    let host = &fixture().registry.host;
    let good = format!("{host}/multi/app:amd64");
    let missing = format!("{host}/multi/app:does-not-exist");
    let out = inspect(&[&good, &missing, "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = v.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{v:#}");
    assert_eq!(entries[0]["reference"], good);
    assert!(entries[0]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(entries[1]["reference"], missing);
    assert_eq!(entries[1]["role"], "image");
    assert!(
        entries[1]["error"].as_str().unwrap().contains("not found"),
        "{v:#}"
    );
    assert!(text(&out.stderr).contains(&format!("error: {missing}: ")));
}

#[test]
fn a_missing_base_is_reported_as_the_base_not_as_the_image() {
    let host = &fixture().registry.host;
    let image = format!("{host}/multi/app:amd64");
    let base = format!("{host}/library/base:missing");
    let out = inspect(&[&image, "--base", &base, "--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("error: base {base}: ")),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&format!("error: {image}")),
        "the image itself was read: {stderr}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["reference"], base);
    assert_eq!(v[0]["role"], "base");
    assert_eq!(v[1]["reference"], image);
    assert_eq!(
        v[1]["stale"],
        serde_json::Value::Null,
        "unknown without a base"
    );
    // With a base that exists, staleness is decided (the image is the index's content).
    let out = inspect(&[
        &image,
        "--base",
        &format!("{host}/multi/app:1"),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["stale"], false);
}

#[test]
fn log_lines_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let f = fixture();
    let proxy = FaultProxy::start(&f.registry.host);
    proxy.inject("/manifests/amd64", Fault::Status(503, None));
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("registries.yaml");
    std::fs::write(
        &settings,
        format!(
            "registries:\n  '{}': {{maxAttempts: 3, backoffBaseMs: 10}}\n",
            proxy.host
        ),
    )
    .unwrap();
    let out = inspect(&[
        &format!("{}/multi/app:amd64", proxy.host),
        "--registry-settings",
        settings.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("retrying registry request"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "ANSI escapes in {stderr:?}");
}
