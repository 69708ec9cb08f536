//! `status --workloads`: running workloads mapped onto the state, from rendered
//! manifests (a kustomize folder) and from a real API server (the test plays the
//! controllers and the kubelet by writing `ownerReferences` and `status`).

use std::path::Path;

use image_factory::reference::Reference;
use image_factory::runtime::{
    Attempt, Cause, Digest, ImageRuntime, Phase, Rebuild, RebuildId, Update, UpdateSource,
};
use serde_json::{json, Value};

use crate::support::{example, image_factory, k8s};

const OLD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const NOW: &str = "2026-12-07T00:00:00Z";
const FRONTEND: &str = "registry.example.com/web/frontend:3.1";

fn at(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

fn write_record(state: &Path, rt: &ImageRuntime) {
    let reference = Reference::parse(&rt.reference).unwrap();
    let path = state.join(image_factory::state::runtime_path(&reference));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, rt.render().unwrap()).unwrap();
}

fn succeeded(reference: &str, digest: &str, finished: &str) -> Rebuild {
    Rebuild {
        id: RebuildId::derive("frontend", reference, &[digest.to_string()]),
        cause: Cause::default(),
        bases: Vec::new(),
        phase: Phase::Succeeded,
        reason: None,
        created_at: at("2026-11-01T00:00:00Z"),
        due_at: at("2026-11-01T00:00:00Z"),
        needs_approval: false,
        approved: None,
        retried: Vec::new(),
        attempts: vec![Attempt {
            number: 1,
            triggered_at: at("2026-11-01T00:00:00Z"),
            finished_at: Some(at(finished)),
            outcome: None,
            reason: None,
            log: None,
        }],
        trigger: None,
        digest: Some(Digest::parse(digest).unwrap()),
    }
}

fn update(digest: &str, discovered: &str) -> Update {
    Update {
        digest: Digest::parse(digest).unwrap(),
        tag: "x".into(),
        platforms: Default::default(),
        discovered_at: at(discovered),
        source: UpdateSource::Watcher,
        superseded_by: None,
        expedited: None,
        signature: None,
    }
}

/// frontend (managed) was rebuilt to OLD, then to NEW on 2026-12-02; python:3.12-slim
/// (external, 3 days) and debian:bookworm-slim (external, 7 days) saw OLD then NEW on
/// 2026-12-01: matured for python by 2026-12-07, not for debian.
fn record_state(state: &Path) {
    let mut frontend = ImageRuntime::new(FRONTEND);
    frontend.rebuilds = vec![
        succeeded(FRONTEND, OLD, "2026-11-01T01:00:00Z"),
        succeeded(FRONTEND, NEW, "2026-12-02T10:00:00Z"),
    ];
    write_record(state, &frontend);
    for reference in [
        "docker.io/library/python:3.12-slim",
        "docker.io/library/debian:bookworm-slim",
    ] {
        let mut rt = ImageRuntime::new(reference);
        rt.updates = vec![
            update(OLD, "2026-11-01T00:00:00Z"),
            update(NEW, "2026-12-01T00:00:00Z"),
        ];
        write_record(state, &rt);
    }
}

/// Runs `status --workloads` with `args` at [`NOW`]; (exit code, rows by "workload/container").
fn status(dir: &Path, args: &[&str]) -> (i32, std::collections::BTreeMap<String, Value>) {
    let mut all = vec!["status", "--workloads", "--output", "json", "--now", NOW];
    all.extend_from_slice(args);
    let out = image_factory(dir, &all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Value> = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let rows = rows
        .into_iter()
        .map(|r| {
            let key = format!(
                "{}/{}@{}",
                r["workload"].as_str().unwrap(),
                r["container"].as_str().unwrap(),
                r["running"].as_str().unwrap_or("-")
            );
            (key, r)
        })
        .collect();
    (out.status.code().unwrap_or(-1), rows)
}

fn pin_frontend(dir: &Path, digest: &str) {
    let file = dir.join("examples/workloads/kustomization.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let text = format!("{text}  - name: registry.example.com/web/frontend\n    digest: {digest}\n");
    std::fs::write(file, text).unwrap();
}

#[test]
fn a_kustomize_folder_shows_a_deployment_on_the_previous_rebuild_as_stale() {
    let dir = example();
    record_state(&dir.path().join("state"));
    pin_frontend(dir.path(), OLD);
    let args = ["--manifests", "examples/workloads", "--fail-on-stale"];
    let (code, rows) = status(dir.path(), &args);
    let web = &rows[&format!("Deployment/frontend/web@{OLD}")];
    assert_eq!(web["namespace"], "shop");
    assert_eq!(web["enrolled"], "frontend");
    assert_eq!(web["verdict"], "stale");
    assert_eq!(web["latest"], NEW);
    assert_eq!(web["staleSince"], "2026-12-02T10:00:00Z");
    assert_eq!(code, 1, "--fail-on-stale exits 1 on a stale container");
    // Not pinned: nothing says what runs.
    let init = &rows["Deployment/billing-api/wait-for-db@-"];
    assert_eq!(init["verdict"], "unknown");
    assert_eq!(
        rows["StatefulSet/billing-cache/redis@-"]["verdict"],
        "untracked"
    );

    let dir = example();
    record_state(&dir.path().join("state"));
    pin_frontend(dir.path(), NEW);
    let (code, rows) = status(dir.path(), &args);
    assert_eq!(
        rows[&format!("Deployment/frontend/web@{NEW}")]["verdict"],
        "current"
    );
    assert_eq!(code, 0);
}

fn owned_by(kind: &str, api: &str, name: &str, uid: &str) -> Value {
    json!([{"apiVersion": api, "kind": kind, "name": name, "uid": uid, "controller": true}])
}

fn pod_spec(container: &str, image: &str) -> Value {
    json!({"containers": [{"name": container, "image": image}]})
}

fn run_pod(ns: &str, name: &str, owner: Value, container: &str, image: &str, digest: &str) {
    k8s::create(
        ns,
        &json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "ownerReferences": owner},
            "spec": pod_spec(container, image)}),
    );
    k8s::set_running(ns, name, container, image, digest);
}

#[test]
fn pods_on_the_api_server_are_stale_until_rolled_to_the_rebuilt_digest() {
    let ns = k8s::namespace("workloads");
    let template = json!({"spec": pod_spec("web", FRONTEND)});
    let deploy = k8s::create(
        &ns,
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "frontend"},
            "spec": {"selector": {"matchLabels": {"app": "frontend"}}, "template": template}}),
    );
    let rs = k8s::create(
        &ns,
        &json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "frontend-7d9f", "ownerReferences": owned_by("Deployment", "apps/v1", "frontend", &deploy)},
            "spec": {"selector": {"matchLabels": {"app": "frontend"}}, "template": template}}),
    );
    let rs_owner = owned_by("ReplicaSet", "apps/v1", "frontend-7d9f", &rs);
    for pod in ["frontend-7d9f-a", "frontend-7d9f-b"] {
        run_pod(&ns, pod, rs_owner.clone(), "web", FRONTEND, OLD);
    }
    // A CronJob and a StatefulSet using external images directly.
    let python = "python:3.12-slim";
    let job_template = json!({"spec": {"template": {"spec": pod_spec("report", python)}}});
    let cron = k8s::create(
        &ns,
        &json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
            "spec": {"schedule": "@daily", "jobTemplate": job_template}}),
    );
    let job = k8s::create(
        &ns,
        &json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "nightly-29000000", "ownerReferences": owned_by("CronJob", "batch/v1", "nightly", &cron)},
            "spec": {"template": {"spec": pod_spec("report", python)}}}),
    );
    run_pod(
        &ns,
        "nightly-29000000-x",
        owned_by("Job", "batch/v1", "nightly-29000000", &job),
        "report",
        python,
        OLD,
    );
    let debian = "debian:bookworm-slim";
    let sts = k8s::create(
        &ns,
        &json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "cache"},
            "spec": {"serviceName": "cache", "selector": {"matchLabels": {"app": "cache"}},
                "template": {"spec": pod_spec("cache", debian)}}}),
    );
    run_pod(
        &ns,
        "cache-0",
        owned_by("StatefulSet", "apps/v1", "cache", &sts),
        "cache",
        debian,
        OLD,
    );

    let dir = example();
    record_state(&dir.path().join("state"));
    let kubeconfig = k8s::kubeconfig().display().to_string();
    let args = ["--kubeconfig", &kubeconfig, "--namespace", &ns];
    let (code, rows) = status(dir.path(), &args);
    assert_eq!(code, 0, "{rows:?}");
    assert_eq!(
        rows.len(),
        3,
        "Pods fold into Deployment, CronJob, StatefulSet: {rows:?}"
    );
    let web = &rows[&format!("Deployment/frontend/web@{OLD}")];
    assert_eq!(
        (web["verdict"].as_str(), web["pods"].as_u64()),
        (Some("stale"), Some(2))
    );
    assert_eq!(web["latest"], NEW);
    // python's NEW matured on 2026-12-04 (3 days); debian's (7 days) only on 12-08.
    let report = &rows[&format!("CronJob/nightly/report@{OLD}")];
    assert_eq!(report["verdict"], "stale");
    assert_eq!(report["staleSince"], "2026-12-04T00:00:00Z");
    assert_eq!(
        rows[&format!("StatefulSet/cache/cache@{OLD}")]["verdict"],
        "current"
    );

    // Roll one Pod, then the other.
    k8s::set_running(&ns, "frontend-7d9f-a", "web", FRONTEND, NEW);
    let (_, rows) = status(dir.path(), &args);
    assert_eq!(rows[&format!("Deployment/frontend/web@{OLD}")]["pods"], 1);
    assert_eq!(
        rows[&format!("Deployment/frontend/web@{NEW}")]["verdict"],
        "current"
    );
    k8s::set_running(&ns, "frontend-7d9f-b", "web", FRONTEND, NEW);
    let (_, rows) = status(dir.path(), &args);
    let web = &rows[&format!("Deployment/frontend/web@{NEW}")];
    assert_eq!(
        (web["verdict"].as_str(), web["pods"].as_u64()),
        (Some("current"), Some(2))
    );
    assert!(!rows.contains_key(&format!("Deployment/frontend/web@{OLD}")));
}

#[test]
fn plan_lists_the_workloads_each_wave_touches_and_graph_draws_them() {
    let dir = example();
    let out = image_factory(
        dir.path(),
        &[
            "plan",
            "--update",
            "debian:bookworm-slim",
            "--discovered-at",
            NOW,
            "--output",
            "json",
            "--workloads",
            "--manifests",
            "examples/workloads",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(plan["rebuilds"].as_array().unwrap().len() >= 3, "{plan}");
    let touched: Vec<(u64, &str, &str)> = plan["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["wave"].as_u64().unwrap(),
                t["image"].as_str().unwrap(),
                t["workload"].as_str().unwrap(),
            )
        })
        .collect();
    // Wave 0: the init container runs debian itself; then the rebuilt applications.
    assert_eq!(
        touched,
        [
            (0, "debian-bookworm-slim", "Deployment/billing-api"),
            (4, "billing-api", "Deployment/billing-api"),
            (4, "reports", "CronJob/monthly-reports"),
        ]
    );
    // frontend is not built on debian: untouched.
    let out = image_factory(
        dir.path(),
        &[
            "graph",
            "--format",
            "dot",
            "--workloads",
            "--manifests",
            "examples/workloads",
        ],
    );
    let dot = String::from_utf8_lossy(&out.stdout);
    assert!(
        dot.contains(r#""frontend" -> "shop/Deployment/frontend" [style=dotted];"#),
        "{dot}"
    );
    assert!(
        !dot.contains("billing-cache"),
        "an untracked image draws no workload: {dot}"
    );
}

fn catalog(state: &Path) -> image_factory::workload::Catalog {
    let images = image_factory::state::load_images(state).unwrap().images;
    let (records, problems) = image_factory::cli::status::read_records(state);
    assert!(problems.is_empty(), "{problems:?}");
    image_factory::workload::Catalog::new(&images, &records)
}

fn verdicts(
    index: &image_factory::workload::WorkloadIndex,
    catalog: &image_factory::workload::Catalog,
) -> Vec<(
    String,
    Option<String>,
    image_factory::workload::Verdict,
    usize,
)> {
    let workloads = image_factory::workload::collapse(&index.snapshot());
    image_factory::workload::rows(&workloads, catalog, at(NOW))
        .into_iter()
        .map(|r| (r.workload, r.running, r.verdict, r.pods))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_index_follows_a_rollout_without_relisting() {
    use image_factory::workload::{Verdict, WorkloadIndex};
    let ns = k8s::namespace("workload-index");
    let rs = k8s::create(
        &ns,
        &json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "frontend-1"},
            "spec": {"selector": {"matchLabels": {"app": "frontend"}}, "template": {"spec": pod_spec("web", FRONTEND)}}}),
    );
    run_pod(
        &ns,
        "frontend-1-a",
        owned_by("ReplicaSet", "apps/v1", "frontend-1", &rs),
        "web",
        FRONTEND,
        OLD,
    );
    let dir = example();
    record_state(&dir.path().join("state"));
    let catalog = catalog(&dir.path().join("state"));
    let index = WorkloadIndex::start(&k8s::client().await, std::slice::from_ref(&ns));
    tokio::time::timeout(std::time::Duration::from_secs(10), index.ready())
        .await
        .unwrap()
        .unwrap();
    let stale = (
        "ReplicaSet/frontend-1".to_string(),
        Some(OLD.to_string()),
        Verdict::Stale,
        1,
    );
    assert_eq!(verdicts(&index, &catalog), [stale]);
    k8s::set_running(&ns, "frontend-1-a", "web", FRONTEND, NEW);
    let current = (
        "ReplicaSet/frontend-1".to_string(),
        Some(NEW.to_string()),
        Verdict::Current,
        1,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while verdicts(&index, &catalog) != [current.clone()] {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            verdicts(&index, &catalog)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
