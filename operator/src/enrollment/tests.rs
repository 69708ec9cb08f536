use std::time::Duration;

use super::*;

fn dir_with_dockerfile() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::write(dir.path().join("app/Dockerfile"), "FROM python:3.12-slim\n").unwrap();
    dir
}

/// Both passes, as [`load`] runs them, on text named `images.yaml`.
fn checked(text: &str, dir: &Path) -> Result<Enrollment, EnrollmentError> {
    let (enrollment, mut findings) = check_text("images.yaml", text, dir)?;
    findings.extend(check_sources(&enrollment));
    finish(enrollment, findings)
}

fn errors(text: &str, dir: &Path) -> Vec<String> {
    match checked(text, dir) {
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

fn findings(text: &str, dir: &Path) -> Vec<Diagnostic> {
    match checked(text, dir) {
        Ok(e) => e.warnings,
        Err(EnrollmentError::Invalid { diagnostics, .. }) => diagnostics,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn parse_is_pure_and_check_sources_looks_at_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let text = "version: 1\nimages:\n  - name: app\n    image: ghcr.io/acme/app:1\n    source: {path: missing}\n    trigger: {command: {args: [make]}}\n  - name: b\n    image: ghcr.io/acme/b:1\n    source: {path: there, dockerfile: docker/Containerfile}\n    trigger: {command: {args: [make]}}\n";
    std::fs::create_dir(dir.path().join("there")).unwrap();
    let enrollment = parse("images.yaml", text, dir.path()).expect("parse never reads the disk");
    assert_eq!(enrollment.images.len(), 2);
    let found: Vec<String> = check_sources(&enrollment)
        .iter()
        .map(|d| format!("{}: {}", d.location(), d.message))
        .collect();
    assert_eq!(
        found,
        [
            "images.yaml:5:20: source path \"missing\" is not a directory",
            "images.yaml:9:39: image \"b\": Dockerfile there/docker/Containerfile does not exist",
        ]
    );
    std::fs::create_dir_all(dir.path().join("missing")).unwrap();
    std::fs::write(dir.path().join("missing/Dockerfile"), "FROM alpine\n").unwrap();
    std::fs::create_dir_all(dir.path().join("there/docker")).unwrap();
    std::fs::write(
        dir.path().join("there/docker/Containerfile"),
        "FROM alpine\n",
    )
    .unwrap();
    assert!(check_sources(&enrollment).is_empty());
}

#[test]
fn load_reports_disk_findings_with_the_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("images.yaml"),
        "version: 1\nimages:\n  - name: Bad\n    image: alpine\n  - name: app\n    image: ghcr.io/acme/app:1\n    source: {path: missing}\n",
    )
    .unwrap();
    let Err(EnrollmentError::Invalid { diagnostics, .. }) = load(&dir.path().join("images.yaml"))
    else {
        panic!("expected errors")
    };
    let messages: Vec<&str> = diagnostics.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "invalid name \"Bad\"",
            "image \"app\" has no trigger: rebuilds are recorded but never started",
            "source path \"missing\" is not a directory"
        ]
    );
}

#[test]
fn a_managed_image_without_trigger_is_a_warning() {
    let dir = dir_with_dockerfile();
    let text = "version: 1\nimages:\n  - name: app\n    image: ghcr.io/acme/app:1\n    source: {path: app}\n";
    let e = checked(text, dir.path()).unwrap();
    assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
    let w = &e.warnings[0];
    assert_eq!(w.severity, Severity::Warning);
    assert_eq!(w.location(), "images.yaml:3:11");
    assert_eq!(
        w.message,
        "image \"app\" has no trigger: rebuilds are recorded but never started"
    );
    assert!(w.hint.as_deref().unwrap().contains("githubWorkflow"));
    let with_trigger = format!("{text}    trigger: {{command: {{args: [make]}}}}\n");
    assert!(checked(&with_trigger, dir.path())
        .unwrap()
        .warnings
        .is_empty());
}

#[rstest::rstest]
#[case::empty_workflow(
    "githubWorkflow: {repository: acme/x, workflow: ''}",
    "7:54: empty trigger.githubWorkflow.workflow"
)]
#[case::blank_workflow(
    "githubWorkflow: {repository: acme/x, workflow: '  '}",
    "7:54: empty trigger.githubWorkflow.workflow"
)]
#[case::workflow_path(
    "githubWorkflow: {repository: acme/x, workflow: .github/workflows/b.yml}",
    "7:54: workflow \".github/workflows/b.yml\" is a path"
)]
#[case::workflow_not_a_file(
    "githubWorkflow: {repository: acme/x, workflow: build}",
    "7:54: workflow \"build\" is neither"
)]
#[case::empty_ref(
    "githubWorkflow: {repository: acme/x, workflow: b.yml, ref: ''}",
    "7:66: empty trigger.githubWorkflow.ref"
)]
fn github_workflow_triggers_name_a_workflow(#[case] trigger: &str, #[case] want: &str) {
    let dir = dir_with_dockerfile();
    let text = format!("version: 1\nimages:\n  - name: app\n    image: ghcr.io/acme/app:1\n    source: {{path: app}}\n    trigger:\n      {trigger}\n");
    let errs = errors(&text, dir.path());
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(&format!("images.yaml:{want}")),
        "{errs:?}"
    );
}

#[rstest::rstest]
#[case::numeric_id("1234567")]
#[case::yml("build.yml")]
#[case::yaml("build-image.yaml")]
fn github_workflow_file_names_and_ids_are_accepted(#[case] workflow: &str) {
    let dir = dir_with_dockerfile();
    let text = format!("version: 1\nimages:\n  - name: app\n    image: ghcr.io/acme/app:1\n    source: {{path: app}}\n    trigger: {{githubWorkflow: {{repository: acme/x, workflow: '{workflow}'}}}}\n");
    assert_eq!(errors(&text, dir.path()), Vec::<String>::new());
}

#[rstest::rstest]
#[case::context_up_three(
    "context: ../../..",
    "5:34: source.context \"../../..\" leaves the source"
)]
#[case::context_up_after_down(
    "context: a/../../b",
    "5:34: source.context \"a/../../b\" leaves the source"
)]
#[case::context_absolute("context: /etc", "5:34: source.context \"/etc\" is an absolute path")]
#[case::context_empty("context: ''", "5:34: empty source.context")]
#[case::dockerfile_up(
    "dockerfile: ../x",
    "5:37: source.dockerfile \"../x\" leaves the source"
)]
#[case::dockerfile_absolute(
    "dockerfile: /app/Dockerfile",
    "5:37: source.dockerfile \"/app/Dockerfile\" is an absolute path"
)]
#[case::dockerfile_empty("dockerfile: ''", "5:37: empty source.dockerfile")]
fn dockerfile_and_context_stay_inside_the_source(#[case] field: &str, #[case] want: &str) {
    let dir = dir_with_dockerfile();
    let text = format!("version: 1\nimages:\n  - name: app\n    image: ghcr.io/acme/app:1\n    source: {{path: app, {field}}}\n    trigger: {{command: {{args: [make]}}}}\n");
    let errs = errors(&text, dir.path());
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(&format!("images.yaml:{want}")),
        "{errs:?}"
    );
}

#[rstest::rstest]
#[case::current_dir("context: .")]
#[case::down_and_back("context: sub/..")]
#[case::dot_slash("dockerfile: ./Dockerfile")]
fn paths_inside_the_source_are_accepted(#[case] field: &str) {
    let dir = dir_with_dockerfile();
    let text = format!("version: 1\nimages:\n  - name: app\n    image: ghcr.io/acme/app:1\n    source: {{path: app, {field}}}\n    trigger: {{command: {{args: [make]}}}}\n");
    assert_eq!(errors(&text, dir.path()), Vec::<String>::new());
}

#[test]
fn rebuild_max_attempts_defaults_to_3_and_accepts_1_to_20() {
    let dir = tempfile::tempdir().unwrap();
    let text = "version: 1\ndefaults:\n  rebuild: {maxAttempts: 5}\nimages:\n  - {name: a, image: alpine:3.19}\n  - {name: b, image: alpine:3.20, rebuild: {maxAttempts: 1}}\n";
    let e = parse("images.yaml", text, dir.path()).unwrap();
    assert_eq!(e.defaults_rebuild.max_attempts, 5);
    assert_eq!(e.images[0].rebuild.max_attempts, 5);
    assert_eq!(e.images[1].rebuild.max_attempts, 1);
    let plain = parse(
        "images.yaml",
        "version: 1\nimages:\n  - {name: a, image: alpine}\n",
        dir.path(),
    )
    .unwrap();
    assert_eq!(plain.images[0].rebuild.max_attempts, DEFAULT_MAX_ATTEMPTS);
    assert_eq!(DEFAULT_MAX_ATTEMPTS, 3);
    for (value, column) in [("0", 53), ("21", 53)] {
        let text = format!("version: 1\nimages:\n  - {{name: a, image: alpine, rebuild: {{maxAttempts: {value}}}}}\n");
        let errs = errors(&text, dir.path());
        assert_eq!(
            errs,
            [format!(
                "images.yaml:3:{column}: maxAttempts {value} out of range"
            )]
        );
    }
}

/// Library words that mean nothing to someone editing images.yaml.
const LIBRARY_WORDS: [&str; 9] = [
    "Option<",
    "Options",
    "DuplicateKeyPolicy",
    "u32",
    "budget",
    "Budget",
    "error:",
    "line ",
    "struct ",
];

#[rstest::rstest]
#[case::duplicate_key(
    "version: 1\nversion: 1\nimages: []\n",
    "images.yaml:2:1: error: key \"version\" is written twice in the same mapping"
)]
#[case::missing_value(
    "version: 1\nimages:\n  - name:\n    image: alpine\n",
    "images.yaml:3:9: error: a value is missing here"
)]
#[case::not_a_number(
    "version: one\nimages: []\n",
    "images.yaml:1:10: error: expected a whole number of 0 or more, found \"one\""
)]
#[case::negative_number(
    "version: 1\nimages:\n  - {name: a, image: alpine, warehouse: {discoveryLimit: -1}}\n",
    "images.yaml:3:58: error: expected a whole number of 0 or more, found \"-1\""
)]
#[case::not_a_list(
    "version: 1\nimages: alpine\n",
    "images.yaml:2:9: error: expected a list, found \"alpine\""
)]
#[case::missing_key(
    "version: 1\nimages:\n  - name: a\n",
    "images.yaml:3:5: error: missing required key \"image\""
)]
#[case::bad_indentation(
    "version: 1\nimages:\n  - name: a\n    image: alpine\n   tags: [x]\n",
    "images.yaml:5:"
)]
#[case::tab_indentation("version: 1\nimages:\n\t- name: a\n", "images.yaml:3:")]
#[case::unclosed_bracket("version: 1\nimages: [\n", "images.yaml:")]
fn yaml_errors_are_plain_words_at_file_line_col(#[case] text: &str, #[case] want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let found = findings(text, dir.path());
    assert_eq!(found.len(), 1, "{found:#?}");
    let shown = found[0].to_string();
    assert!(shown.starts_with(want), "got {shown:?}, want {want:?}");
    assert!(shown.contains(": error: "), "{shown}");
    let message = &found[0].message;
    for word in LIBRARY_WORDS {
        assert!(!message.contains(word), "{word:?} in {shown:?}");
    }
    assert!(found[0].hint.is_some(), "{shown}");
}

/// One image entry as teams write them: managed, with a source, build arguments, a
/// trigger with inputs and a rebuild policy — 37 YAML values.
fn configured_image(i: usize) -> String {
    format!(
        "  - name: app-{i}\n    image: registry.example.com/team-{t}/app-{i}:1.0\n    tags: [latest, stable]\n    source:\n      git: {{url: 'https://git.example.com/team-{t}/app-{i}.git', ref: main}}\n      dockerfile: Dockerfile\n    buildArgs: {{BASE: '3.12'}}\n    trigger:\n      githubWorkflow: {{repository: team-{t}/app-{i}, workflow: build.yml, inputs: {{image: app-{i}}}}}\n    rebuild: {{delay: 3d, cascadeDelay: 1h}}\n",
        t = i % 97
    )
}

#[test]
fn the_size_limit_leaves_room_for_100000_configured_images() {
    let count_nodes = |text: &str| {
        let raw: serde_json::Value =
            serde_saphyr::from_str_with_options(text, yaml_options()).unwrap();
        fn nodes(v: &serde_json::Value) -> usize {
            match v {
                serde_json::Value::Object(m) => 1 + m.values().map(|v| 1 + nodes(v)).sum::<usize>(),
                serde_json::Value::Array(a) => 1 + a.iter().map(nodes).sum::<usize>(),
                _ => 1,
            }
        }
        nodes(&raw)
    };
    let one =
        count_nodes(&format!("images:\n{}", configured_image(1))) - count_nodes("images: []\n");
    assert!(one >= 30, "a configured image is {one} values");
    assert!(
        MAX_YAML_NODES >= 100_000 * one * 2,
        "{MAX_YAML_NODES} values leave room for fewer than 100,000 images of {one} values with margin"
    );
}

fn parse_or_show(text: &str) -> Enrollment {
    let dir = tempfile::tempdir().unwrap();
    parse("images.yaml", text, dir.path()).unwrap_or_else(|e| match e {
        EnrollmentError::Invalid { diagnostics, .. } => panic!("{}", diagnostics[0]),
        other => panic!("{other}"),
    })
}

#[test]
fn a_valid_file_of_60000_images_loads() {
    // ~50,000 images broke serde-saphyr's default budget of 250,000 values; these are
    // 300,000 (a debug build reads ~40,000 values a second, so 100,000 configured
    // images are left to the ignored test below and the limit test above).
    let mut text = String::from("version: 1\nimages:\n");
    for i in 0..60_000 {
        text.push_str(&format!(
            "  - {{name: img-{i}, image: registry.example.com/team/img-{i}:1}}\n"
        ));
    }
    let e = parse_or_show(&text);
    assert_eq!(e.images.len(), 60_000);
    assert_eq!(e.images[59_999].name, "img-59999");
}

#[test]
#[ignore = "about two minutes in a debug build: cargo test --release -- --ignored"]
fn a_valid_file_of_100000_configured_images_loads() {
    let mut text = String::from("version: 1\nimages:\n");
    for i in 0..100_000 {
        text.push_str(&configured_image(i));
    }
    let e = parse_or_show(&text);
    assert_eq!(e.images.len(), 100_000);
    assert_eq!(e.images[99_999].name, "app-99999");
}

#[test]
fn a_breached_size_limit_is_explained_with_the_limit() {
    // Building a file past the limit takes seconds; the words are what matters here.
    let e = serde_saphyr::Error::Budget {
        breach: serde_saphyr::budget::BudgetBreach::Nodes {
            nodes: MAX_YAML_NODES + 1,
        },
        location: serde_saphyr::Location::UNKNOWN,
    };
    let d = syntax_diagnostic("images.yaml", "", &e);
    assert_eq!(
        d.message,
        "the file is too large to read: more than 10000000 YAML values"
    );
    assert!(d.hint.as_deref().unwrap().contains("100,000"), "{d}");
}

fn managed_with(extra: &str) -> String {
    format!("version: 1\nimages:\n  - name: app\n    image: ghcr.io/acme/app:1\n    source: {{path: app}}\n{extra}")
}

fn build_of(text: &str, dir: &Path) -> Build {
    let e = checked(text, dir).unwrap();
    e.images[0].build.clone().unwrap()
}

#[test]
fn command_triggers_and_tests_take_args_or_shell_with_timeouts() {
    let dir = dir_with_dockerfile();
    let b = build_of(
        &managed_with("    trigger: {command: {shell: 'make image', timeout: 20m}}\n    test: {args: [./smoke.sh]}\n"),
        dir.path(),
    );
    assert_eq!(
        b.trigger,
        Some(Trigger::Command(Command {
            program: Program::Shell("make image".into()),
            timeout: Duration::from_secs(1200),
        }))
    );
    let test = b.test.unwrap();
    assert_eq!(test.program, Program::Args(vec!["./smoke.sh".into()]));
    assert_eq!(
        test.timeout,
        Duration::from_secs(600),
        "default test timeout"
    );
}

#[rstest::rstest]
#[case::both(
    "    trigger: {command: {args: [make], shell: make}}\n",
    "trigger.command sets both args and shell"
)]
#[case::neither(
    "    trigger: {command: {timeout: 1h}}\n",
    "trigger.command has neither args nor shell"
)]
#[case::zero_timeout(
    "    trigger: {command: {args: [make], timeout: 0s}}\n",
    "trigger.command.timeout is zero"
)]
#[case::bad_secret(
    "    trigger: {webhook: {url: 'https://ci.example.com/h', signingSecret: 'not a name!'}}\n",
    "invalid secret reference"
)]
#[case::token_and_app(
    "    trigger: {githubWorkflow: {repository: acme/x, workflow: b.yml, tokenSecret: GH, app: {appId: 1, installationId: 2, privateKeySecret: 'file:key.pem'}}}\n",
    "sets both tokenSecret and app"
)]
#[case::reserved_input(
    "    trigger: {githubWorkflow: {repository: acme/x, workflow: b.yml, inputs: {rebuild_id: x}}}\n",
    "workflow input \"rebuild_id\" is set by the factory"
)]
#[case::plain_http_api("    trigger: {githubWorkflow: {repository: acme/x, workflow: b.yml, apiUrl: 'http://github.example.com'}}\n", "apiUrl")]
#[case::empty_test_shell(
    "    trigger: {command: {args: [make]}}\n    test: {shell: ''}\n",
    "test.shell is empty"
)]
fn bad_trigger_settings_are_errors(#[case] extra: &str, #[case] wanted: &str) {
    let dir = dir_with_dockerfile();
    let errs = errors(&managed_with(extra), dir.path());
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains(wanted), "{errs:?}");
}

#[test]
fn secrets_are_references_resolved_against_the_file() {
    let dir = dir_with_dockerfile();
    let b = build_of(
        &managed_with("    trigger: {githubWorkflow: {repository: acme/x, workflow: b.yml, app: {appId: 7, installationId: 9, privateKeySecret: 'file:keys/app.pem'}}}\n"),
        dir.path(),
    );
    let Some(Trigger::GithubWorkflow {
        auth,
        api_url,
        timeout,
        ..
    }) = b.trigger
    else {
        panic!("{:?}", b.trigger)
    };
    assert_eq!(
        auth,
        GithubAuth::App {
            app_id: 7,
            installation_id: 9,
            private_key: SecretRef::File(dir.path().join("keys/app.pem")),
        }
    );
    assert_eq!(api_url, "https://api.github.com");
    assert_eq!(timeout, Duration::from_secs(7200));
    let b = build_of(
        &managed_with("    trigger: {webhook: {url: 'https://ci.example.com/h', tokenSecret: CI_TOKEN, signingSecret: 'env:CI_HMAC'}}\n"),
        dir.path(),
    );
    let Some(Trigger::Webhook {
        token_secret,
        signing_secret,
        ..
    }) = b.trigger
    else {
        panic!()
    };
    assert_eq!(token_secret, Some(SecretRef::Env("CI_TOKEN".into())));
    assert_eq!(signing_secret, Some(SecretRef::Env("CI_HMAC".into())));
}

#[test]
fn a_test_on_an_external_image_is_an_error() {
    let dir = dir_with_dockerfile();
    let text =
        "version: 1\nimages:\n  - name: python\n    image: python:3.12\n    test: {args: [true]}\n";
    let errs = errors(text, dir.path());
    assert_eq!(
        errs,
        ["images.yaml:5:19: test only applies to managed images"]
    );
}

/// An enrollment of images `a` and `b` (managed, sources in `dir`) with the given
/// `kargo:` block and `kargoPromotion` trigger bodies.
fn promoted(kargo: &str, a: &str, b: &str) -> String {
    format!(
        "\
version: 1
kargo: {kargo}
images:
  - name: a
    image: ghcr.io/acme/a:1
    source: {{path: app}}
    trigger:
      kargoPromotion: {a}
  - name: b
    image: ghcr.io/acme/b:1
    source: {{path: app}}
    trigger:
      kargoPromotion: {b}
"
    )
}

#[test]
fn stages_are_off_by_default_and_a_task_is_read_with_its_kind() {
    let dir = dir_with_dockerfile();
    let text = promoted(
        "{project: images}",
        "{stage: a-build}",
        "{stage: b-build, project: other, task: build, taskKind: ClusterPromotionTask}",
    );
    let e = checked(&text, dir.path()).unwrap();
    assert!(!e.stages);
    let trigger = |i: usize| e.images[i].build.as_ref().unwrap().trigger.clone().unwrap();
    assert_eq!(
        trigger(0),
        Trigger::KargoPromotion {
            stage: "a-build".into(),
            project: "images".into(),
            task: None,
        }
    );
    assert_eq!(
        trigger(1),
        Trigger::KargoPromotion {
            stage: "b-build".into(),
            project: "other".into(),
            task: Some(crate::kargo::PromotionTaskReference {
                kind: crate::kargo::TaskKind::ClusterPromotionTask,
                name: "build".into(),
            }),
        }
    );
    // A task without generated Stages does nothing: said, not refused.
    let warning = e
        .warnings
        .iter()
        .find(|w| w.message.contains("task is used only for generated Stages"))
        .expect("a warning about the unused task");
    assert_eq!(warning.at.line, 13);

    let text = promoted(
        "{stages: true}",
        "{stage: a-build, task: build}",
        "{stage: b-build, task: build}",
    );
    let e = checked(&text, dir.path()).unwrap();
    assert!(e.stages);
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
}

#[test]
fn generated_stages_need_a_task_and_a_name_of_their_own() {
    let dir = dir_with_dockerfile();
    // No task: Kargo cannot promote with no steps.
    let text = promoted(
        "{stages: true}",
        "{stage: a-build}",
        "{stage: b-build, task: build}",
    );
    assert_eq!(
        errors(&text, dir.path()),
        ["images.yaml:8:31: kargo.stages is on but the kargoPromotion into stage \"a-build\" names no task"]
    );
    // The same Stage twice, in one project or across projects (one file per name).
    let text = promoted(
        "{stages: true}",
        "{stage: one, task: t}",
        "{stage: one, task: t}",
    );
    assert_eq!(
        errors(&text, dir.path()),
        ["images.yaml:13:31: stage \"one\" in project \"image-factory\" is already promoted into by another image"]
    );
    let text = promoted(
        "{stages: true}",
        "{stage: one, task: t}",
        "{stage: one, project: p2, task: t}",
    );
    assert_eq!(
        errors(&text, dir.path()),
        ["images.yaml:13:31: stage name \"one\" is already generated for project \"image-factory\""]
    );
    // Without generated Stages, two images may share a Stage written by hand.
    let text = promoted("{}", "{stage: one}", "{stage: one}");
    assert!(errors(&text, dir.path()).is_empty());
    // Bad task kind, a kind without a task, a bad task name, a bad project.
    let text = promoted(
        "{stages: true}",
        "{stage: a-build, task: t, taskKind: clusterpromotiontask}",
        "{stage: b-build, taskKind: PromotionTask}",
    );
    assert_eq!(
        errors(&text, dir.path()),
        [
            "images.yaml:8:59: unknown trigger.kargoPromotion.taskKind \"clusterpromotiontask\"",
            "images.yaml:13:50: trigger.kargoPromotion.taskKind without task",
        ]
    );
    let text = promoted(
        "{stages: true}",
        "{stage: a-build, task: Build_Image}",
        "{stage: b-build, task: t, project: Not_A_Namespace}",
    );
    assert_eq!(
        errors(&text, dir.path()),
        [
            "images.yaml:8:46: invalid trigger.kargoPromotion.task \"Build_Image\"",
            "images.yaml:13:58: invalid trigger.kargoPromotion.project \"Not_A_Namespace\"",
        ]
    );
}

#[test]
fn a_missing_task_is_explained_with_what_to_do() {
    let dir = dir_with_dockerfile();
    let text = promoted(
        "{stages: true}",
        "{stage: a-build}",
        "{stage: b-build, task: build}",
    );
    let Err(EnrollmentError::Invalid { diagnostics, .. }) = checked(&text, dir.path()) else {
        panic!("accepted");
    };
    let hint = diagnostics[0].hint.as_deref().unwrap_or_default();
    assert!(
        hint.contains("trigger.kargoPromotion.task") && hint.contains("no steps"),
        "{hint}"
    );
}

/// A fresh P-256 public key (PEM), as `cosign generate-key-pair` writes to `cosign.pub`.
fn cosign_pub() -> String {
    sigstore::crypto::SigningScheme::ECDSA_P256_SHA256_ASN1
        .create_signer()
        .unwrap()
        .to_sigstore_keypair()
        .unwrap()
        .public_key_to_pem()
        .unwrap()
}

fn indented(pem: &str, spaces: usize) -> String {
    pem.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(spaces)))
        .collect()
}

#[test]
fn verify_policies_apply_defaults_and_image_overrides() {
    let dir = dir_with_dockerfile();
    let text = format!(
        "\
version: 1
defaults:
  verify:
    cosign:
      keyFile: keys/cosign.pub
images:
  - name: python
    image: python:3.12-slim
  - name: alpine
    image: alpine:3.20
    verify: {{mode: warn}}
  - name: distroless
    image: gcr.io/distroless/static:nonroot
    verify:
      mode: enforce
      cosign:
        key: |
{}  - name: vendor
    image: registry.example.com/vendor/tool:2
    verify:
      cosign:
        secret: {{name: cosign-keys, key: vendor.pub}}
",
        indented(&cosign_pub(), 10)
    );
    let e = parse("images.yaml", &text, dir.path()).unwrap();
    let file_key = Requirement::Key(KeySource::File(dir.path().join("keys/cosign.pub")));
    assert_eq!(
        e.verify_policy("python"),
        Some(&VerifyPolicy {
            requirement: file_key.clone(),
            mode: VerifyMode::Enforce
        })
    );
    assert_eq!(
        e.verify_policy("alpine"),
        Some(&VerifyPolicy {
            requirement: file_key.clone(),
            mode: VerifyMode::Warn
        })
    );
    assert!(matches!(
        &e.verify_policy("distroless").unwrap().requirement,
        Requirement::Key(KeySource::Pem(p)) if p.starts_with("-----BEGIN PUBLIC KEY-----")
    ));
    assert_eq!(
        e.verify_policy("vendor").unwrap().requirement,
        Requirement::Key(KeySource::Secret {
            namespace: None,
            name: "cosign-keys".into(),
            key: "vendor.pub".into()
        })
    );
    // A discovered base image (not enrolled) gets defaults.verify.
    assert_eq!(
        e.verify_policy("gcr-io-distroless-base").map(|p| p.mode),
        Some(VerifyMode::Enforce)
    );
}

#[test]
fn verify_mistakes_are_located() {
    let dir = dir_with_dockerfile();
    let text = "\
version: 1
images:
  - name: a
    image: alpine:3.20
    verify: {mode: strict, cosign: {keyFile: k.pub}}
  - name: b
    image: alpine:3.21
    verify: {mode: warn}
  - name: c
    image: alpine:3.22
    verify: {cosign: {keyFile: k.pub, key: nope}}
  - name: d
    image: alpine:3.23
    verify: {cosign: {key: not a key}}
  - name: e
    image: alpine:3.24
    verify: {cosign: {keyless: {identity: '(', issuer: '^https://x$'}}}
  - name: f
    image: alpine:3.25
    verify: {cosign: {}}
";
    let found = errors(text, dir.path());
    let expected = [
        "images.yaml:5:20: invalid verify.mode \"strict\"",
        "images.yaml:8:20: verify needs cosign",
        "images.yaml:11:32: cosign sets both key and keyFile",
        "images.yaml:14:28: cosign.key is not a usable public key",
        "images.yaml:17:43: invalid keyless.identity regular expression",
        "images.yaml:18:11: cosign needs a key",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (f, e) in found.iter().zip(expected) {
        assert!(f.starts_with(e), "{f} does not start with {e}");
    }
}

#[test]
fn keyless_policies_parse_with_their_trusted_root_relative_to_images_yaml() {
    let dir = dir_with_dockerfile();
    let text = "\
version: 1
images:
  - name: a
    image: ghcr.io/kubewarden/kubewarden-controller:v1.34.0
    verify:
      cosign:
        keyless:
          identity: ^https://github.com/kubewarden/
          issuer: ^https://token.actions.githubusercontent.com$
  - name: b
    image: alpine:3.20
    verify:
      cosign:
        keyless: {identity: x, issuer: y, rekor: false, trustedRoot: sigstore/root.json}
";
    let e = parse("images.yaml", text, dir.path()).unwrap();
    assert!(
        e.warnings.is_empty(),
        "keyless is supported: {:?}",
        e.warnings
    );
    assert_eq!(
        e.verify_policy("a").unwrap().requirement,
        Requirement::Keyless(Keyless {
            identity: "^https://github.com/kubewarden/".into(),
            issuer: "^https://token.actions.githubusercontent.com$".into(),
            rekor: true,
            trusted_root: None,
        })
    );
    assert!(matches!(
        &e.verify_policy("b").unwrap().requirement,
        Requirement::Keyless(Keyless { rekor: false, trusted_root: Some(p), .. })
            if *p == dir.path().join("sigstore/root.json")
    ));
}

#[test]
fn missing_or_unusable_key_files_and_trusted_roots_are_located_on_load() {
    let dir = dir_with_dockerfile();
    std::fs::write(dir.path().join("not-a-key.pub"), "hello\n").unwrap();
    std::fs::write(dir.path().join("cosign.pub"), cosign_pub()).unwrap();
    std::fs::write(
        dir.path().join("root.json"),
        crate::verify::PUBLIC_GOOD_TRUSTED_ROOT,
    )
    .unwrap();
    let text = "\
version: 1
defaults:
  verify: {cosign: {keyFile: keys/missing.pub}}
images:
  - name: a
    image: alpine:3.20
    verify: {cosign: {keyFile: not-a-key.pub}}
  - name: b
    image: alpine:3.21
    verify: {cosign: {keyless: {identity: x, issuer: y, trustedRoot: nowhere.json}}}
  - name: c
    image: alpine:3.22
    verify: {cosign: {keyless: {identity: x, issuer: y, trustedRoot: cosign.pub}}}
  - name: d
    image: alpine:3.23
    verify: {cosign: {keyless: {identity: x, issuer: y, trustedRoot: root.json}}}
  - name: e
    image: alpine:3.24
    verify: {cosign: {keyFile: cosign.pub}}
";
    // Pure parsing does not look at the disk.
    assert!(parse("images.yaml", text, dir.path()).is_ok());
    let found = errors(text, dir.path());
    let expected = [
        "images.yaml:3:30: cosign.keyFile \"keys/missing.pub\" does not exist",
        "images.yaml:7:32: cosign.keyFile \"not-a-key.pub\" is not usable",
        "images.yaml:10:70: keyless.trustedRoot \"nowhere.json\" does not exist",
        "images.yaml:13:70: keyless.trustedRoot \"cosign.pub\" is not usable: not a Sigstore trusted root",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (f, e) in found.iter().zip(expected) {
        assert!(f.starts_with(e), "{f} does not start with {e}");
    }
    // The hint says what to name and relative to what.
    let Err(EnrollmentError::Invalid { diagnostics, .. }) = checked(text, dir.path()) else {
        panic!("invalid expected");
    };
    assert!(diagnostics[0]
        .hint
        .as_deref()
        .is_some_and(|h| h.contains("relative to the directory of images.yaml")));
}
