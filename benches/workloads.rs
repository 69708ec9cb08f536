//! Workloads in use (issue 16) against the real API server (`shared/k8s`, started here on
//! 127.0.0.1): 5,000 Pods of 50 ReplicaSets, each running the example's `frontend`
//! image at the digest of its previous rebuild.
//!
//! 1. The first full list: `status --workloads`' cluster source (`KubeSource`, the seven
//!    kinds paged), then the owner collapse and the mapping onto the state.
//! 2. The watch index (`WorkloadIndex`, what `controller --workloads` runs): start until
//!    every store holds its first list; one evaluation from the stores (snapshot,
//!    collapse, rows, counts per image) — no API request.
//! 3. The steady state: 500 Pods roll to the rebuilt digest (status writes, 32 in
//!    flight); measured until every change is in the index through watch events only,
//!    and the evaluation counts 500 fewer stale Pods.
//!
//! The state is the repository's own `state/` with `frontend`'s two rebuilds in memory.
//!
//! Run: `cargo bench --bench workloads` (release build; about a minute). `PODS=N` for
//! another number of Pods. Needs `kubectl` on `PATH` and `shared/` next to the
//! repository (or `IMAGE_FACTORY_SHARED`).

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt as _;
use image_factory::controller::workloads::counts;
use image_factory::runtime::{Attempt, Cause, Digest, ImageRuntime, Phase, Rebuild, RebuildId};
use image_factory::workload::{self, Catalog, KubeSource, Source as _, Verdict, WorkloadIndex};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const NS: &str = "bench-workloads";
const FRONTEND: &str = "registry.example.com/web/frontend:3.1";
const OLD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const REPLICA_SETS: usize = 50;
const ROLLED: usize = 500;
const IN_FLIGHT: usize = 32;

fn pods() -> usize {
    std::env::var("PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

fn shared_dir() -> PathBuf {
    std::env::var_os("IMAGE_FACTORY_SHARED").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
        PathBuf::from,
    )
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `frontend` rebuilt to OLD, then to NEW: a Pod on OLD is stale.
fn catalog() -> Result<Catalog> {
    let images = image_factory::state::load_images(&repo_root().join("state"))?.images;
    let at = |s: &str| -> Timestamp { s.parse().unwrap_or(Timestamp::UNIX_EPOCH) };
    let succeeded = |digest: &str, finished: &str| -> Result<Rebuild> {
        Ok(Rebuild {
            id: RebuildId::derive("frontend", FRONTEND, &[digest.to_string()]),
            cause: Cause::default(),
            bases: Vec::new(),
            phase: Phase::Succeeded,
            reason: None,
            created_at: at(finished),
            due_at: at(finished),
            needs_approval: false,
            approved: None,
            retried: Vec::new(),
            attempts: vec![Attempt {
                number: 1,
                triggered_at: at(finished),
                finished_at: Some(at(finished)),
                outcome: None,
                reason: None,
                log: None,
            }],
            trigger: None,
            digest: Some(Digest::parse(digest)?),
        })
    };
    let mut frontend = ImageRuntime::new(FRONTEND);
    frontend.rebuilds = vec![
        succeeded(OLD, "2026-11-01T01:00:00Z")?,
        succeeded(NEW, "2026-12-02T10:00:00Z")?,
    ];
    let records = BTreeMap::from([(FRONTEND.to_string(), frontend)]);
    Ok(Catalog::new(&images, &records))
}

fn status(digest: &str) -> serde_json::Value {
    json!({"status": {"phase": "Running", "containerStatuses": [{"name": "web", "image": FRONTEND,
        "imageID": format!("registry.example.com/web/frontend@{digest}"), "ready": true, "restartCount": 0}]}})
}

fn pod_spec() -> serde_json::Value {
    json!({"containers": [{"name": "web", "image": FRONTEND}]})
}

/// Pods of `rows` (by verdict): (stale, current).
fn stale_and_current(rows: &[workload::Row]) -> (usize, usize) {
    let sum = |v: Verdict| rows.iter().filter(|r| r.verdict == v).map(|r| r.pods).sum();
    (sum(Verdict::Stale), sum(Verdict::Current))
}

async fn bench(client: kube::Client, n: usize) -> Result<()> {
    let now: Timestamp = "2026-12-07T00:00:00Z".parse()?;
    let catalog = catalog()?;
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut owners = Vec::new();
    for d in 0..REPLICA_SETS {
        let name = format!("app-{d}");
        let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"selector": {}, "template": {"spec": pod_spec()}}}))?;
        let created = replica_sets.create(&PostParams::default(), &rs).await?;
        let uid = created.metadata.uid.unwrap_or_default();
        owners.push(
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name,
            "uid": uid, "controller": true}]),
        );
    }
    let started = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let pods = pods.clone();
            let pod = json!({"metadata": {"name": format!("p-{i}"),
                "ownerReferences": owners[i % REPLICA_SETS]}, "spec": pod_spec()});
            async move {
                let pod: Pod = serde_json::from_value(pod)?;
                pods.create(&PostParams::default(), &pod).await?;
                pods.patch_status(
                    &format!("p-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&status(OLD)),
                )
                .await?;
                Ok(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    println!(
        "setup: {n} Pods of {REPLICA_SETS} ReplicaSets created with status in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    // 1. The first full list.
    let t = Instant::now();
    let objects = KubeSource::new(client.clone(), vec![NS.to_string()])
        .objects()
        .await?;
    let listed = t.elapsed();
    let rows = workload::rows(&workload::collapse(&objects), &catalog, now);
    let mapped = t.elapsed();
    if objects.pods.len() != n || stale_and_current(&rows) != (n, 0) {
        bail!(
            "listed {} Pods, (stale, current) {:?}",
            objects.pods.len(),
            stale_and_current(&rows)
        );
    }
    println!(
        "first full list of the seven kinds ({} per page): {:.3} s; with owner collapse + mapping onto state: {:.3} s ({} rows)",
        workload::kubernetes::PAGE,
        listed.as_secs_f64(),
        mapped.as_secs_f64(),
        rows.len()
    );

    // 2. The watch index.
    let t = Instant::now();
    let index = WorkloadIndex::start(&client, &[NS.to_string()]);
    index.ready().await?;
    println!(
        "watch index: start until every store holds its first list: {:.3} s",
        t.elapsed().as_secs_f64()
    );
    let json_mb = |pods: &[Pod]| -> f64 {
        pods.iter()
            .map(|p| serde_json::to_vec(p).map_or(0, |v| v.len()))
            .sum::<usize>() as f64
            / 1e6
    };
    println!(
        "the Pods as the API serves them: {:.2} MB of JSON; as the index stores them (trimmed): {:.2} MB",
        json_mb(&objects.pods),
        json_mb(&index.snapshot().pods)
    );
    drop(objects);
    let evaluate = |index: &WorkloadIndex| {
        let rows = workload::rows(&workload::collapse(&index.snapshot()), &catalog, now);
        let c = counts(&rows);
        (rows, c)
    };
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let (rows, c) = evaluate(&index);
        times.push(t.elapsed());
        if c.get("frontend").map(|c| c.stale) != Some(u32::try_from(REPLICA_SETS)?) {
            bail!("counts {c:?} ({} rows)", rows.len());
        }
    }
    times.sort();
    println!(
        "one evaluation from the index (snapshot + collapse + rows + counts per image), 5 runs: median {:.3} s, min {:.3} s",
        times[2].as_secs_f64(),
        times[0].as_secs_f64()
    );

    // 3. The steady state.
    let rolled = ROLLED.min(n);
    let t = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(0..rolled)
        .map(|i| {
            let pods = pods.clone();
            async move {
                pods.patch_status(
                    &format!("p-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&status(NEW)),
                )
                .await?;
                Ok(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    let written = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let on_new = index
            .snapshot()
            .pods
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first())
                    .is_some_and(|c| c.image_id.ends_with(NEW))
            })
            .count();
        if on_new == rolled {
            break;
        }
        if Instant::now() > deadline {
            bail!("{on_new} of {rolled} changes seen in the index");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = t.elapsed();
    let (rows, _) = evaluate(&index);
    if stale_and_current(&rows) != (n - rolled, rolled) {
        bail!("after the roll: {:?}", stale_and_current(&rows));
    }
    println!(
        "steady state: {rolled} Pod status changes written in {:.2} s ({IN_FLIGHT} in flight); all in the index by watch events only {:.2} s after the first write; the evaluation then counts {} stale and {} current Pods",
        written.as_secs_f64(),
        seen.as_secs_f64(),
        n - rolled,
        rolled
    );
    println!(
        "peak RSS of this process (API client, 7 reflector stores of {n} Pods and 50 ReplicaSets): {} MB",
        support::peak_rss_mb()
    );
    Ok(())
}

fn main() -> Result<()> {
    let n = pods();
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let out = Command::new(shared_dir().join("k8s/run.sh"))
        .arg("start")
        .arg(&kubeconfig)
        .env("K8S_RUN_DIR", dir.path().join("k8s"))
        .env("K8S_OWNER_PID", std::process::id().to_string())
        .output()
        .context("shared/k8s/run.sh")?;
    if !out.status.success() {
        bail!("run.sh start: {}", String::from_utf8_lossy(&out.stderr));
    }
    support::run(
        Command::new("kubectl")
            .args(["create", "namespace", NS])
            .env("KUBECONFIG", &kubeconfig),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        bench(kube::Client::try_from(config)?, n).await
    })
}
