use std::time::Duration;

use super::*;

fn dir_with_dockerfile() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::write(dir.path().join("app/Dockerfile"), "FROM python:3.12-slim\n").unwrap();
    dir
}

fn errors(text: &str, dir: &Path) -> Vec<String> {
    match parse("images.yaml", text, dir) {
        Err(EnrollmentError::Invalid { diagnostics, .. }) => diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("{}: {}", d.location(), d.message))
            .collect(),
        Ok(_) => vec![],
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn loads_managed_and_external_images_with_defaults_applied() {
    let dir = dir_with_dockerfile();
    let text = "\
version: 1
defaults:
  rebuild: {delay: 3d}
  warehouse: {platform: linux/amd64}
images:
  - name: python
    image: python:3.12-slim
  - name: app
    image: ghcr.io/acme/app:1
    tags: [latest]
    source: {path: app}
    buildArgs: {PY: '3.12'}
    rebuild: {cascadeDelay: 1h, autoRebuild: false}
";
    let e = parse("images.yaml", text, dir.path()).unwrap();
    assert_eq!(e.project, DEFAULT_PROJECT);
    let python = &e.images[0];
    assert!(!python.is_managed());
    assert_eq!(
        python.reference.to_string(),
        "docker.io/library/python:3.12-slim"
    );
    assert_eq!(python.rebuild.delay, Duration::from_secs(3 * 86400));
    assert_eq!(python.warehouse.repo_url, "docker.io/library/python");
    assert_eq!(python.warehouse.constraint.as_deref(), Some("3.12-slim"));
    assert_eq!(python.warehouse.platform.as_deref(), Some("linux/amd64"));
    let app = &e.images[1];
    assert!(app.is_managed());
    assert_eq!(app.tags.iter().collect::<Vec<_>>(), ["1", "latest"]);
    assert_eq!(app.rebuild.cascade_delay, Duration::from_secs(3600));
    assert!(!app.rebuild.auto_rebuild);
    assert_eq!(app.rebuild.delay, Duration::from_secs(3 * 86400));
    assert_eq!(app.build.as_ref().unwrap().build_args["PY"], "3.12");
}

#[test]
fn reports_every_error_with_its_line_and_column() {
    let dir = dir_with_dockerfile();
    let text = "\
version: 1
images:
  - name: python
    image: python:3.12-slim
    rebuild: {delay: 7x}
    warehouse:
      imageSelectionStrategy: SemVer
      constraint: '>>1'
      allowTagsRegexes: ['^3\\.12(']
      platform: linux/arm64/v8
      discoveryLimit: 500
  - name: python
    image: Python
  - name: app
    image: ghcr.io/acme/app
    source: {path: app, dockerfile: Missing.Dockerfile}
  - name: other
    image: docker.io/library/python:3.12-slim
";
    let errs = errors(text, dir.path());
    let expected = [
        "images.yaml:5:22: invalid delay",
        "images.yaml:8:19: invalid SemVer constraint",
        "images.yaml:9:26: invalid regular expression",
        "images.yaml:10:17: invalid platform",
        "images.yaml:11:23: discoveryLimit 500 out of range",
        "images.yaml:13:12: invalid image reference \"Python\"",
        "images.yaml:16:37: image \"app\": Dockerfile app/Missing.Dockerfile does not exist",
        "images.yaml:17:11: duplicate image reference docker.io/library/python:3.12-slim",
    ];
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");
    for (got, want) in errs.iter().zip(expected) {
        assert!(got.starts_with(want), "got {got:?}, want {want:?}");
    }
}

#[test]
fn duplicate_names_point_at_the_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let text = "version: 1\nimages:\n  - {name: a, image: alpine:3.19}\n  - {name: a, image: alpine:3.20}\n";
    let Err(EnrollmentError::Invalid { diagnostics, .. }) = parse("images.yaml", text, dir.path())
    else {
        panic!("expected errors")
    };
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].location(), "images.yaml:4:12");
    assert!(diagnostics[0]
        .hint
        .as_deref()
        .unwrap()
        .contains("images.yaml:3:12"));
}

#[test]
fn unknown_keys_are_located_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let text = "version: 1\nimages:\n  - name: a\n    image: alpine\n    warehouse:\n      allowTags: ^3\n";
    let Err(EnrollmentError::Invalid { diagnostics, .. }) = parse("images.yaml", text, dir.path())
    else {
        panic!("expected errors")
    };
    let d = &diagnostics[0];
    assert!(d.message.contains("allowTags"), "{d}");
    assert_eq!(d.at.line, 6, "{d}");
    assert!(d.hint.as_deref().unwrap().contains("allowTagsRegexes"));
}

#[test]
fn managed_only_fields_on_external_images_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let text = "version: 1\nimages:\n  - name: a\n    image: alpine\n    buildArgs: {X: '1'}\n    trigger: {webhook: {url: 'https://ci.example.com/hook'}}\n";
    let errs = errors(text, dir.path());
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("buildArgs only apply to managed images"));
    assert!(errs[1].contains("trigger only applies to managed images"));
}

#[test]
fn triggers_need_exactly_one_backend() {
    let dir = dir_with_dockerfile();
    let text = "version: 1\nimages:\n  - name: a\n    image: ghcr.io/acme/a\n    source: {path: app}\n    trigger:\n      webhook: {url: 'http://ci.example.com'}\n      githubWorkflow: {repository: acme/x, workflow: build.yml}\n";
    let errs = errors(text, dir.path());
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("trigger sets 2 backends"), "{errs:?}");
}

#[test]
fn semver_constraints_in_kargo_syntax_parse() {
    for ok in [
        "^1.26.0",
        "~3.12",
        ">=1.2 <2.0",
        ">= 1.2, < 2",
        "1.x",
        "1.2.* || ^2",
        "*",
    ] {
        assert!(crate::registry::check_semver_constraint(ok).is_ok(), "{ok}");
    }
    for bad in [">>1", "abc", "1.2.3.4"] {
        assert!(
            crate::registry::check_semver_constraint(bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn the_schema_reads_what_the_parser_accepts() {
    let schema = serde_json::to_value(schemars::schema_for!(schema::EnrollmentFile)).unwrap();
    let text = serde_json::to_string(&schema).unwrap();
    for field in [
        "repoURL",
        "imageSelectionStrategy",
        "allowTagsRegexes",
        "cascadeDelay",
        "buildArgs",
        "\"ref\"",
    ] {
        assert!(text.contains(field), "{field} missing from schema");
    }
    assert!(!text.contains("repoUrl"));
}

#[test]
fn every_unknown_key_is_reported_with_the_closest_known_one() {
    let dir = tempfile::tempdir().unwrap();
    let text = "version: 1\nimages:\n  - name: a\n    image: alpine\n    warehouse:\n      allowTags: ^3\n      repoUrl: x\n  - name: b\n    imgae: alpine\n    rebuild: {delay: 1d, cascade_delay: 1h}\nextra: 1\n";
    let Err(EnrollmentError::Invalid { diagnostics, .. }) = parse("images.yaml", text, dir.path())
    else {
        panic!("expected errors")
    };
    let got: Vec<String> = diagnostics
        .iter()
        .map(|d| {
            format!(
                "{}: {} ({})",
                d.location(),
                d.message,
                d.hint.as_deref().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(got.len(), 5, "{got:#?}");
    assert!(
        got[0].starts_with(
            "images.yaml:6:7: unknown key \"allowTags\" in images.warehouse (Kargo ≥ 1.11 rejects"
        ),
        "{got:#?}"
    );
    assert!(got[1].starts_with("images.yaml:7:7: unknown key \"repoUrl\" in images.warehouse (did you mean \"repoURL\"?)"), "{got:#?}");
    assert!(
        got[2].starts_with(
            "images.yaml:9:5: unknown key \"imgae\" in images (did you mean \"image\"?)"
        ),
        "{got:#?}"
    );
    assert!(got[3].starts_with("images.yaml:10:26: unknown key \"cascade_delay\" in images.rebuild (did you mean \"cascadeDelay\"?)"), "{got:#?}");
    assert!(
        got[4].starts_with("images.yaml:11:1: unknown key \"extra\" at the top level"),
        "{got:#?}"
    );
}

#[test]
fn truncated_and_mangled_enrollments_never_panic() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../images.yaml"))
            .unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cuts: Vec<usize> = (0..text.len())
        .filter(|i| text.is_char_boundary(*i))
        .step_by(7)
        .collect();
    for cut in cuts {
        let _ = parse("images.yaml", &text[..cut], &dir);
        let mangled: String = text[..cut]
            .replace(':', "")
            .chars()
            .chain(text[cut..].chars())
            .collect();
        let _ = parse("images.yaml", &mangled, &dir);
    }
    assert!(parse("images.yaml", &text, &dir).is_ok());
}
