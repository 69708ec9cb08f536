use std::collections::BTreeMap;
use std::path::Path;

use super::render::{self, Compared};
use super::*;
use crate::analyze::{self, Analyzed};
use crate::dockerfile;

/// The model `analyze` builds for `yaml`, with `dockerfiles[name]` the Dockerfile of
/// managed image `name` (no disk, no git).
fn model(yaml: &str, dockerfiles: &[(&str, &str)]) -> Model {
    let enrollment = enrollment::parse("images.yaml", yaml, Path::new(".")).unwrap();
    let analyzed: BTreeMap<String, Analyzed> = dockerfiles
        .iter()
        .map(|(name, text)| {
            let build = enrollment
                .images
                .iter()
                .find(|i| i.name == *name)
                .and_then(|i| i.build.as_ref())
                .unwrap_or_else(|| panic!("{name} is not managed"));
            let analysis = dockerfile::analyze(name, text, &build.build_args);
            let a = Analyzed {
                analysis,
                commit: None,
                display: format!("{name}/Dockerfile"),
                fingerprint: None,
                origin: analyze::Origin::Parsed,
            };
            (name.to_string(), a)
        })
        .collect();
    let graph = analyze::build_graph(&enrollment, &analyzed, &BTreeMap::new());
    Model {
        enrollment,
        analyzed,
        graph,
    }
}

fn snapshot(yaml: &str, dockerfiles: &[(&str, &str)]) -> Snapshot {
    Snapshot::of(&model(yaml, dockerfiles))
}

const BASE: &str = "\
version: 1
images:
  - name: python
    image: python:3.12-slim
    rebuild: {delay: 3d}
  - name: node
    image: node:22
    warehouse: {imageSelectionStrategy: SemVer, constraint: ^22.0.0}
  - name: app
    image: ghcr.io/acme/app:1
    source: {path: app}
    trigger: {command: {args: [make, app]}}
  - name: worker
    image: ghcr.io/acme/worker:1
    source: {path: worker}
    trigger: {command: {args: [make, worker]}}
";

const APP: &str = "FROM python:3.12-slim\n";
const WORKER: &str = "FROM golang:1.23 AS build\nFROM gcr.io/distroless/static\n";

fn base() -> Snapshot {
    snapshot(BASE, &[("app", APP), ("worker", WORKER)])
}

#[test]
fn the_same_input_gives_an_empty_diff() {
    let diff = compare(&base(), &base());
    assert!(diff.is_empty(), "{diff:#?}");
    assert_eq!(render::counts(&diff), "no changes");
}

#[test]
fn an_added_image_is_listed_with_its_line_and_a_removed_one_without() {
    let head_yaml = BASE.replace(
        "  - name: worker\n    image: ghcr.io/acme/worker:1\n    source: {path: worker}\n    trigger: {command: {args: [make, worker]}}\n",
        "  - name: redis\n    image: redis:7\n",
    );
    let head = snapshot(&head_yaml, &[("app", APP)]);
    let diff = compare(&base(), &head);
    assert_eq!(
        diff.images.added,
        vec![ImageEntry {
            name: "redis".into(),
            reference: "docker.io/library/redis:7".into(),
            kind: NodeKind::External,
            line: Some(13),
        }]
    );
    assert_eq!(diff.images.removed.len(), 1);
    assert_eq!(diff.images.removed[0].name, "worker");
    assert_eq!(diff.images.removed[0].line, None);
    // The worker's bases go with it, and their Warehouses; redis gets one.
    let gone: Vec<&str> = diff.bases.removed.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        gone,
        ["gcr-io-distroless-static-latest", "golang-1-23"],
        "{diff:#?}"
    );
    assert_eq!(diff.edges.removed.len(), 2);
    let added: Vec<&str> = diff
        .warehouses
        .added
        .iter()
        .map(|w| w.name.as_str())
        .collect();
    assert_eq!(added, ["redis"]);
    assert_eq!(diff.warehouses.removed.len(), 2);
}

#[test]
fn removing_the_source_moves_a_managed_image_to_external() {
    let head_yaml = BASE.replace(
        "    source: {path: worker}\n    trigger: {command: {args: [make, worker]}}\n",
        "",
    );
    let head = snapshot(&head_yaml, &[("app", APP)]);
    let diff = compare(&base(), &head);
    assert_eq!(
        diff.images.moved,
        vec![Move {
            name: "worker".into(),
            reference: "ghcr.io/acme/worker:1".into(),
            from: NodeKind::Managed,
            to: NodeKind::External,
            line: Some(13),
        }]
    );
    // Not "changed": the move says it; the policy keeps only what applies to both.
    assert!(diff.images.changed.is_empty());
    assert_eq!(
        diff.policies[0].changes,
        vec![FieldChange {
            field: "delay".into(),
            before: Some("the updated base's".into()),
            after: Some("7days".into()),
        }]
    );
    assert!(diff.warehouses.added.iter().any(|w| w.name == "worker"));
}

#[test]
fn a_new_from_gives_a_new_discovered_base_edges_and_a_warehouse() {
    let worker = WORKER.replace("golang:1.23", "golang:1.24");
    let head = snapshot(BASE, &[("app", APP), ("worker", &worker)]);
    let diff = compare(&base(), &head);
    assert_eq!(
        diff.bases.added,
        vec![BaseEntry {
            name: "golang-1-24".into(),
            reference: "docker.io/library/golang:1.24".into(),
            dependents: vec!["worker".into()],
        }]
    );
    assert_eq!(diff.bases.removed[0].name, "golang-1-23");
    assert_eq!(diff.edges.added[0].base, "golang-1-24");
    assert_eq!(diff.edges.added[0].usage.via, ["from"]);
    assert_eq!(diff.edges.removed[0].base, "golang-1-23");
    assert_eq!(
        diff.warehouses.added,
        vec![WarehouseEntry {
            name: "golang-1-24".into(),
            repo_url: "docker.io/library/golang".into(),
            image_selection_strategy: "Digest".into(),
            constraint: Some("1.24".into()),
        }]
    );
    assert_eq!(diff.warehouses.removed[0].name, "golang-1-23");
    assert!(diff.images.added.is_empty() && diff.policies.is_empty());
}

#[test]
fn a_changed_soak_and_autorebuild_are_policy_changes() {
    let head_yaml = BASE
        .replace("rebuild: {delay: 3d}", "rebuild: {delay: 5d}")
        .replace(
            "    source: {path: app}\n",
            "    source: {path: app}\n    rebuild: {delay: 1d, autoRebuild: false}\n",
        );
    let head = snapshot(&head_yaml, &[("app", APP), ("worker", WORKER)]);
    let diff = compare(&base(), &head);
    let policies: Vec<(&str, Vec<String>)> = diff
        .policies
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.changes
                    .iter()
                    .map(|f| format!("{}: {:?} → {:?}", f.field, f.before, f.after))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        policies,
        vec![
            (
                "app",
                vec![
                    r#"autoRebuild: Some("true") → Some("false")"#.to_string(),
                    r#"delay: Some("the updated base's") → Some("1day")"#.to_string(),
                ]
            ),
            (
                "python",
                vec![r#"delay: Some("3days") → Some("5days")"#.to_string()]
            ),
        ]
    );
    assert!(
        diff.warehouses.changed.is_empty(),
        "the soak is not in a Warehouse"
    );
}

#[test]
fn a_changed_trigger_is_a_policy_change_without_secrets() {
    let head_yaml = BASE.replace(
        "trigger: {command: {args: [make, app]}}",
        "trigger: {webhook: {url: 'https://user:hunter2@ci.example.com/hook', tokenSecret: env:CI_TOKEN}}",
    );
    let head = snapshot(&head_yaml, &[("app", APP), ("worker", WORKER)]);
    let diff = compare(&base(), &head);
    let change = &diff.policies[0].changes[0];
    assert_eq!(change.field, "trigger");
    let after = change.after.as_deref().unwrap();
    assert!(
        after.starts_with("webhook https://user:***@ci.example.com/hook"),
        "{after}"
    );
    assert!(!after.contains("hunter2"));
}

#[test]
fn a_changed_warehouse_lists_the_fields_by_path() {
    let head_yaml = BASE.replace("constraint: ^22.0.0", "constraint: ^23.0.0");
    let head = snapshot(&head_yaml, &[("app", APP), ("worker", WORKER)]);
    let diff = compare(&base(), &head);
    assert_eq!(
        diff.warehouses.changed,
        vec![WarehouseChange {
            name: "node".into(),
            changes: vec![FieldChange {
                field: "spec.subscriptions[0].image.constraint".into(),
                before: Some("\"^22.0.0\"".into()),
                after: Some("\"^23.0.0\"".into()),
            }],
        }]
    );
}

#[test]
fn changed_defaults_reach_every_discovered_base() {
    let head_yaml = BASE.replace(
        "version: 1\n",
        "version: 1\ndefaults:\n  rebuild: {delay: 2d}\n  warehouse: {interval: 1h}\n",
    );
    let head = snapshot(&head_yaml, &[("app", APP), ("worker", WORKER)]);
    let diff = compare(&base(), &head);
    let names: Vec<&str> = diff.policies.iter().map(|c| c.name.as_str()).collect();
    // python sets its own delay; the discovered bases and node follow the defaults.
    assert_eq!(
        names,
        ["gcr-io-distroless-static-latest", "golang-1-23", "node"]
    );
    assert_eq!(diff.warehouses.changed.len(), 4, "{diff:#?}");
    assert!(diff.warehouses.changed.iter().all(|w| w
        .changes
        .iter()
        .any(|c| c.field == "spec.interval" && c.after.as_deref() == Some("\"1h0m0s\""))));
}

#[test]
fn a_new_pin_changes_the_edge() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let app = format!("FROM python:3.12-slim@{digest}\n");
    let head = snapshot(BASE, &[("app", &app), ("worker", WORKER)]);
    let diff = compare(&base(), &head);
    assert_eq!(
        diff.edges.changed,
        vec![EdgeChange {
            base: "python".into(),
            dependent: "app".into(),
            before: EdgeUse {
                via: vec!["from".into()],
                pinned: vec![],
            },
            after: EdgeUse {
                via: vec!["from".into()],
                pinned: vec![digest],
            },
        }]
    );
}

#[test]
fn enrolling_a_discovered_base_is_a_move_and_keeps_its_edges() {
    let head_yaml = format!("{BASE}  - name: golang-1-23\n    image: golang:1.23\n");
    let head = snapshot(&head_yaml, &[("app", APP), ("worker", WORKER)]);
    let diff = compare(&base(), &head);
    assert_eq!(diff.images.moved.len(), 1);
    assert_eq!(diff.images.moved[0].from, NodeKind::Base);
    assert_eq!(diff.images.moved[0].to, NodeKind::External);
    assert!(diff.edges.added.is_empty() && diff.edges.removed.is_empty());
    assert!(diff.bases.added.is_empty() && diff.bases.removed.is_empty());
}

#[test]
fn a_from_that_becomes_unresolved_is_listed() {
    let app = "ARG BASE\nFROM ${BASE}\n";
    let head = snapshot(BASE, &[("app", app), ("worker", WORKER)]);
    let diff = compare(&base(), &head);
    assert_eq!(
        diff.unresolved.added,
        vec![UnresolvedEntry {
            image: "app".into(),
            raw: "${BASE}".into(),
        }]
    );
    let compared = compared();
    let out = render::annotations(&compared, &diff, &head.lines());
    assert!(
        out.lines()
            .any(|l| l.starts_with("::warning file=team/images.yaml,line=9,")
                && l.contains("${BASE}")),
        "{out}"
    );
}

#[test]
fn everything_is_added_against_an_empty_base() {
    let diff = compare(&Snapshot::default(), &base());
    assert_eq!(diff.images.added.len(), 4);
    assert_eq!(diff.bases.added.len(), 2);
    assert_eq!(diff.edges.added.len(), 3);
    assert_eq!(diff.warehouses.added.len(), 4);
    assert!(diff.policies.is_empty());
}

fn compared() -> Compared {
    Compared {
        file: "team/images.yaml".into(),
        reference: "origin/main".into(),
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        found: true,
    }
}

#[test]
fn annotations_group_by_entry_and_escape_workflow_command_text() {
    let worker = WORKER.replace("golang:1.23", "golang:1.24");
    let head_yaml = BASE.replace("rebuild: {delay: 3d}", "rebuild: {delay: 5d}");
    let head = snapshot(&head_yaml, &[("app", APP), ("worker", &worker)]);
    let diff = compare(&base(), &head);
    let out = render::annotations(&compared(), &diff, &head.lines());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "::notice file=team/images.yaml,line=3,title=image-factory diff%3A python::delay: 3days → 5days",
            "::notice file=team/images.yaml,line=13,title=image-factory diff%3A worker::now built on golang-1-24 (from)%0Ano longer built on golang-1-23%0Anew discovered base golang-1-24 (docker.io/library/golang:1.24): a Warehouse golang-1-24 is generated for it",
        ]
    );
}

#[test]
fn the_summary_escapes_table_cells() {
    let head_yaml = BASE.replace(
        "trigger: {command: {args: [make, app]}}",
        "trigger: {command: {shell: 'make app | tee `date`.log'}}",
    );
    let head = snapshot(&head_yaml, &[("app", APP), ("worker", WORKER)]);
    let diff = compare(&base(), &head);
    let md = render::summary(&compared(), &diff);
    assert!(
        md.contains("``command `sh -c make app \\| tee `date`.log` (timeout 1h)``"),
        "{md}"
    );
    assert!(md.contains("**1 rebuild policy changed**"), "{md}");
}
