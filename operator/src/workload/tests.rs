use std::collections::BTreeMap;
use std::path::Path;

use jiff::Timestamp;
use rstest::rstest;
use serde_json::json;

use super::stale::{rows, Catalog, Verdict};
use super::*;
use crate::graph::NodeKind;
use crate::runtime::{
    Attempt, Cause, Digest, ImageRuntime, Mark, Observed, Phase, Rebuild, RebuildId, Update,
    UpdateSource,
};
use crate::state::{ImageState, PolicyState};

const OLD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const NEWER: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn owner(kind: &str, name: &str) -> serde_json::Value {
    json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": name, "controller": true}])
}

fn pod(name: &str, owner_ref: Option<(&str, &str)>, image: &str, image_id: &str) -> Pod {
    let mut meta = json!({"name": name, "namespace": "shop"});
    if let Some((k, n)) = owner_ref {
        meta["ownerReferences"] = owner(k, n);
    }
    serde_json::from_value(json!({
        "metadata": meta,
        "spec": {
            "initContainers": [{"name": "migrate", "image": image}],
            "containers": [{"name": "app", "image": image}]
        },
        "status": {
            "initContainerStatuses": [{"name": "migrate", "image": image, "imageID": image_id, "ready": false, "restartCount": 0}],
            "containerStatuses": [{"name": "app", "image": image, "imageID": image_id, "ready": true, "restartCount": 0}]
        }
    }))
    .unwrap()
}

fn template(image: &str) -> serde_json::Value {
    json!({"spec": {"containers": [{"name": "app", "image": image}]}})
}

#[rstest]
#[case("docker-pullable://nginx@sha256:1111111111111111111111111111111111111111111111111111111111111111", Some(OLD))]
#[case(
    "ghcr.io/acme/app@sha256:1111111111111111111111111111111111111111111111111111111111111111",
    Some(OLD)
)]
#[case(
    "sha256:1111111111111111111111111111111111111111111111111111111111111111",
    None
)]
#[case("", None)]
#[case("repo@sha256:short", None)]
fn image_id_digest(#[case] id: &str, #[case] expected: Option<&str>) {
    assert_eq!(digest_of_image_id(id).as_deref(), expected);
}

fn chain() -> Objects {
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web-abc", "namespace": "shop", "ownerReferences": owner("Deployment", "web")},
        "spec": {"selector": {}, "template": template("ghcr.io/acme/web:1")}
    }))
    .unwrap();
    let old_rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web-old", "namespace": "shop", "ownerReferences": owner("Deployment", "web")},
        "spec": {"selector": {}, "template": template("ghcr.io/acme/web:0")}
    }))
    .unwrap();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {}, "template": template("ghcr.io/acme/web:1")}
    }))
    .unwrap();
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "nightly-1", "namespace": "shop", "ownerReferences": owner("CronJob", "nightly")},
        "spec": {"template": template("python:3.12")}
    }))
    .unwrap();
    let cron: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "nightly", "namespace": "shop"},
        "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": template("python:3.12")}}}
    }))
    .unwrap();
    let idle: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"selector": {}, "serviceName": "db", "template": template(&format!("postgres:16@{NEW}"))}
    }))
    .unwrap();
    Objects {
        pods: vec![
            pod(
                "web-abc-1",
                Some(("ReplicaSet", "web-abc")),
                "ghcr.io/acme/web:1",
                &format!("ghcr.io/acme/web@{OLD}"),
            ),
            pod(
                "web-abc-2",
                Some(("ReplicaSet", "web-abc")),
                "ghcr.io/acme/web:1",
                &format!("ghcr.io/acme/web@{OLD}"),
            ),
            pod(
                "web-abc-3",
                Some(("ReplicaSet", "web-abc")),
                "ghcr.io/acme/web:1",
                &format!("ghcr.io/acme/web@{NEW}"),
            ),
            pod("nightly-1-x", Some(("Job", "nightly-1")), "python:3.12", ""),
            pod(
                "debug",
                None,
                "busybox",
                "sha256:1111111111111111111111111111111111111111111111111111111111111111",
            ),
        ],
        deployments: vec![deployment],
        replica_sets: vec![rs, old_rs],
        stateful_sets: vec![idle],
        daemon_sets: Vec::new(),
        jobs: vec![job],
        cron_jobs: vec![cron],
    }
}

#[test]
fn pods_collapse_into_their_top_controller() {
    let workloads = collapse(&chain());
    let names: Vec<String> = workloads
        .iter()
        .map(|w| format!("{}/{}/{}", w.namespace, w.kind, w.name))
        .collect();
    assert_eq!(
        names,
        [
            "shop/CronJob/nightly",
            "shop/Deployment/web",
            "shop/Pod/debug",
            "shop/StatefulSet/db"
        ]
    );
    let web = &workloads[1];
    // init + app containers, each split by the digest the Pods run (2 old, 1 new).
    let summary: Vec<(String, Role, Option<String>, usize)> = web
        .containers
        .iter()
        .map(|c| (c.name.clone(), c.role, c.running.clone(), c.pods))
        .collect();
    assert_eq!(
        summary,
        [
            ("app".into(), Role::App, Some(OLD.into()), 2),
            ("app".into(), Role::App, Some(NEW.into()), 1),
            ("migrate".into(), Role::Init, Some(OLD.into()), 2),
            ("migrate".into(), Role::Init, Some(NEW.into()), 1),
        ]
    );
    // Not started: no digest; a bare local image id is not a registry digest.
    assert_eq!(workloads[0].containers[0].running, None);
    assert_eq!(workloads[2].containers[0].running, None);
    // A template with no Pods: the pinned digest, 0 Pods.
    assert_eq!(workloads[3].containers[0].running.as_deref(), Some(NEW));
    assert_eq!(workloads[3].containers[0].pods, 0);
}

#[test]
fn an_ephemeral_container_is_reported() {
    let mut p = pod("p", None, "nginx", "");
    let spec = p.spec.as_mut().unwrap();
    spec.ephemeral_containers = Some(vec![serde_json::from_value(
        json!({"name": "debugger", "image": "busybox:1.36"}),
    )
    .unwrap()]);
    p.status.as_mut().unwrap().ephemeral_container_statuses = Some(vec![serde_json::from_value(
        json!({"name": "debugger", "image": "busybox:1.36", "imageID": format!("docker.io/library/busybox@{NEWER}"), "ready": false, "restartCount": 0}),
    )
    .unwrap()]);
    let w = collapse(&Objects {
        pods: vec![p],
        ..Objects::default()
    });
    let debugger = w[0]
        .containers
        .iter()
        .find(|c| c.role == Role::Ephemeral)
        .unwrap();
    assert_eq!(debugger.running.as_deref(), Some(NEWER));
}

#[test]
fn manifests_parse_multi_document_yaml_and_lists() {
    let text = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {}
  template:
    spec:
      containers: [{name: app, image: "ghcr.io/acme/web:1"}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
---
apiVersion: v1
kind: List
items:
- apiVersion: batch/v1
  kind: CronJob
  metadata: {name: nightly}
  spec:
    schedule: "@daily"
    jobTemplate: {spec: {template: {spec: {containers: [{name: job, image: python}]}}}}
"#;
    let mut objects = Objects::default();
    manifests::parse_into(Path::new("all.yaml"), text, &mut objects).unwrap();
    assert_eq!((objects.deployments.len(), objects.cron_jobs.len()), (1, 1));
    let w = collapse(&objects);
    assert_eq!(w.len(), 2);
    assert_eq!(w[0].namespace, "default");
    assert_eq!(w[0].containers[0].image, "python");
}

#[test]
fn a_bad_manifest_names_file_and_line() {
    let mut objects = Objects::default();
    let e = manifests::parse_into(
        Path::new("bad.yaml"),
        "kind: Deployment\n  x: [\n",
        &mut objects,
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("bad.yaml: "), "{e}");
    assert!(e.contains("line"), "{e}");
    let e = manifests::parse_into(
        Path::new("shape.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: many}\n",
        &mut objects,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("Deployment web"), "{e}");
}

fn analysis(name: &str, kind: NodeKind, reference: &str, delay: &str) -> ImageState {
    ImageState {
        version: 2,
        name: name.into(),
        kind,
        reference: reference.into(),
        orphaned: false,
        stale: false,
        stale_reason: None,
        stale_since: None,
        tags: vec!["latest".into()],
        source: None,
        build_args: BTreeMap::new(),
        base_images: Vec::new(),
        unresolved: Vec::new(),
        dependents: Vec::new(),
        rebuild: Some(PolicyState {
            delay: delay.into(),
            cascade_delay: "0s".into(),
            auto_rebuild: true,
        }),
        warehouse: None,
    }
}

fn update(digest: &str, at: &str) -> Update {
    Update {
        digest: Digest::parse(digest).unwrap(),
        tag: "3.12".into(),
        platforms: BTreeMap::new(),
        discovered_at: t(at),
        source: UpdateSource::Watcher,
        superseded_by: None,
        expedited: None,
        signature: None,
    }
}

fn succeeded(digest: &str, finished: &str) -> Rebuild {
    Rebuild {
        id: RebuildId::derive("web", "ghcr.io/acme/web:1", &[digest.to_string()]),
        cause: Cause::default(),
        bases: Vec::new(),
        phase: Phase::Succeeded,
        reason: None,
        created_at: t("2026-11-01T00:00:00Z"),
        due_at: t("2026-11-01T00:00:00Z"),
        needs_approval: false,
        approved: None,
        retried: Vec::new(),
        attempts: vec![Attempt {
            number: 1,
            triggered_at: t("2026-11-01T00:00:00Z"),
            finished_at: Some(t(finished)),
            outcome: None,
            reason: None,
            log: None,
        }],
        trigger: None,
        digest: Some(Digest::parse(digest).unwrap()),
    }
}

/// web (managed) rebuilt OLD then NEW; python (external, 3 days) has OLD, then NEW
/// discovered 2026-12-01 and NEWER discovered 2026-12-06.
fn catalog() -> Catalog {
    let images = BTreeMap::from([
        (
            "web".to_string(),
            analysis("web", NodeKind::Managed, "ghcr.io/acme/web:1", "7days"),
        ),
        (
            "python".to_string(),
            analysis(
                "python",
                NodeKind::External,
                "docker.io/library/python:3.12",
                "3days",
            ),
        ),
    ]);
    let mut web = ImageRuntime::new("ghcr.io/acme/web:1");
    web.rebuilds = vec![
        succeeded(OLD, "2026-11-01T01:00:00Z"),
        succeeded(NEW, "2026-12-02T10:00:00Z"),
    ];
    let mut python = ImageRuntime::new("docker.io/library/python:3.12");
    python.updates = vec![
        update(OLD, "2026-11-01T00:00:00Z"),
        update(NEW, "2026-12-01T00:00:00Z"),
        update(NEWER, "2026-12-06T00:00:00Z"),
    ];
    python.current = Some(Observed {
        tag: "3.12".into(),
        digest: Digest::parse(NEWER).unwrap(),
        platforms: BTreeMap::new(),
        first_seen: t("2026-12-06T00:00:00Z"),
    });
    let records = BTreeMap::from([
        (web.reference.clone(), web),
        (python.reference.clone(), python),
    ]);
    Catalog::new(&images, &records)
}

fn one(image: &str, running: Option<&str>) -> Vec<Workload> {
    vec![Workload {
        kind: "Deployment".into(),
        namespace: "shop".into(),
        name: "w".into(),
        containers: vec![Container {
            name: "app".into(),
            role: Role::App,
            image: image.into(),
            running: running.map(str::to_string),
            pods: 1,
        }],
    }]
}

#[rstest]
// Managed: the previous rebuild's digest is stale since the latest rebuild finished.
#[case(
    "ghcr.io/acme/web:1",
    Some(OLD),
    Verdict::Stale,
    Some(NEW),
    Some("2026-12-02T10:00:00Z")
)]
#[case("ghcr.io/acme/web:1", Some(NEW), Verdict::Current, Some(NEW), None)]
// Another tag the image is published under, and digest-only references, map too.
#[case(
    "ghcr.io/acme/web:latest",
    Some(OLD),
    Verdict::Stale,
    Some(NEW),
    Some("2026-12-02T10:00:00Z")
)]
#[case(&format!("ghcr.io/acme/web@{OLD}"), Some(OLD), Verdict::Stale, Some(NEW), Some("2026-12-02T10:00:00Z"))]
#[case("ghcr.io/acme/web:1", None, Verdict::Unknown, Some(NEW), None)]
// External: at 2026-12-07, NEW matured on 12-04 (3 days), NEWER has not yet (12-09).
#[case(
    "python:3.12",
    Some(OLD),
    Verdict::Stale,
    Some(NEW),
    Some("2026-12-04T00:00:00Z")
)]
#[case(
    "docker.io/library/python:3.12",
    Some(NEW),
    Verdict::Current,
    Some(NEW),
    None
)]
#[case("python:3.12", Some(NEWER), Verdict::Current, Some(NEW), None)]
#[case("python:3.11", Some(OLD), Verdict::Untracked, None, None)]
#[case("nginx", Some(OLD), Verdict::Untracked, None, None)]
fn rows_say_what_is_stale(
    #[case] image: &str,
    #[case] running: Option<&str>,
    #[case] verdict: Verdict,
    #[case] latest: Option<&str>,
    #[case] since: Option<&str>,
) {
    let r = rows(&one(image, running), &catalog(), t("2026-12-07T00:00:00Z"));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].verdict, verdict, "{:?}", r[0]);
    assert_eq!(r[0].latest.as_deref(), latest, "{:?}", r[0]);
    assert_eq!(r[0].stale_since.as_deref(), since, "{:?}", r[0]);
}

#[test]
fn an_expedited_update_is_matured_at_once_and_a_blocked_one_never() {
    let now = t("2026-12-07T00:00:00Z");
    // NEWER expedited, NEW blocked.
    let images = BTreeMap::from([(
        "python".to_string(),
        analysis(
            "python",
            NodeKind::External,
            "docker.io/library/python:3.12",
            "3days",
        ),
    )]);
    let mut python = ImageRuntime::new("docker.io/library/python:3.12");
    python.updates = vec![
        update(OLD, "2026-11-01T00:00:00Z"),
        update(NEW, "2026-12-01T00:00:00Z"),
        update(NEWER, "2026-12-06T00:00:00Z"),
    ];
    python.updates[2].expedited = Some(Mark {
        by: "alice".into(),
        reason: "CVE".into(),
        at: t("2026-12-06T12:00:00Z"),
    });
    python.blocks.push(crate::runtime::Block {
        digest: Digest::parse(NEW).unwrap(),
        by: "bob".into(),
        reason: "broken".into(),
        at: t("2026-12-02T00:00:00Z"),
    });
    let c = Catalog::new(
        &images,
        &BTreeMap::from([(python.reference.clone(), python)]),
    );
    let r = rows(&one("python:3.12", Some(OLD)), &c, now);
    assert_eq!(r[0].verdict, Verdict::Stale);
    assert_eq!(r[0].latest.as_deref(), Some(NEWER));
    assert_eq!(r[0].stale_since.as_deref(), Some("2026-12-06T12:00:00Z"));
}

#[test]
fn a_managed_image_pushed_after_its_rebuild_is_current() {
    let images = BTreeMap::from([(
        "web".to_string(),
        analysis("web", NodeKind::Managed, "ghcr.io/acme/web:1", "7days"),
    )]);
    let mut web = ImageRuntime::new("ghcr.io/acme/web:1");
    web.rebuilds = vec![succeeded(NEW, "2026-12-02T10:00:00Z")];
    web.current = Some(Observed {
        tag: "1".into(),
        digest: Digest::parse(NEWER).unwrap(),
        platforms: BTreeMap::new(),
        first_seen: t("2026-12-03T00:00:00Z"),
    });
    let c = Catalog::new(&images, &BTreeMap::from([(web.reference.clone(), web)]));
    let now = t("2026-12-07T00:00:00Z");
    let r = rows(&one("ghcr.io/acme/web:1", Some(NEWER)), &c, now);
    assert_eq!(
        (r[0].verdict, r[0].latest.as_deref()),
        (Verdict::Current, Some(NEWER))
    );
    let r = rows(&one("ghcr.io/acme/web:1", Some(NEW)), &c, now);
    assert_eq!(r[0].verdict, Verdict::Current);
    let r = rows(&one("ghcr.io/acme/web:1", Some(OLD)), &c, now);
    assert_eq!(r[0].verdict, Verdict::Stale);
}

#[test]
fn blast_radius_puts_each_workload_at_the_wave_that_rebuilds_its_image() {
    use crate::engine::{Plan, PlannedRebuild};
    let plan = Plan {
        update: "docker.io/library/python:3.12".into(),
        digest: Digest::parse(NEW).unwrap(),
        discovered_at: t("2026-12-01T00:00:00Z"),
        rebuilds: vec![PlannedRebuild {
            wave: 2,
            image: "web".into(),
            reference: "ghcr.io/acme/web:1".into(),
            after: Vec::new(),
            hold: std::time::Duration::ZERO,
            due: t("2026-12-08T00:00:00Z"),
            auto_rebuild: true,
            id: RebuildId::derive("web", "ghcr.io/acme/web:1", &[]),
            bases: Vec::new(),
            updates: Vec::new(),
        }],
        pinned: Vec::new(),
    };
    let workloads = vec![
        one("ghcr.io/acme/web:1", None).remove(0),
        Workload {
            name: "job".into(),
            ..one("python:3.12", None).remove(0)
        },
        Workload {
            name: "other".into(),
            ..one("nginx", None).remove(0)
        },
    ];
    let touched = radius::blast_radius(&plan, "python", &workloads, &catalog());
    let summary: Vec<(usize, &str, &str)> = touched
        .iter()
        .map(|t| (t.wave, t.image.as_str(), t.workload.as_str()))
        .collect();
    assert_eq!(
        summary,
        [(0, "python", "Deployment/job"), (2, "web", "Deployment/w")]
    );
}

#[test]
fn plan_and_graph_map_a_container_by_any_tag_the_image_is_published_under() {
    let text = "version: 1\nimages:\n  - name: web\n    image: registry.example.com/web:3.1\n    tags: [\"3\", latest]\n    source: {path: web}\n";
    let enrollment =
        crate::enrollment::parse("images.yaml", text, std::path::Path::new(".")).unwrap();
    let graph = crate::graph::Graph::build(&enrollment, &std::collections::BTreeMap::new());
    let catalog = Catalog::from_graph(&graph, &enrollment);
    for image in [
        "registry.example.com/web:3.1",
        "registry.example.com/web:3",
        "registry.example.com/web:latest",
    ] {
        assert_eq!(catalog.image_of(image), Some("web"), "{image}");
    }
    assert_eq!(catalog.image_of("registry.example.com/web:4"), None);
}
