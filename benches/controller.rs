//! `image-factory controller` — the real binary — against the real API server
//! (`shared/k8s`, started here on 127.0.0.1): a burst of 1,000 Kargo Freight over a
//! 10,000-image graph.
//!
//! The fleet: 1,000 external bases (`registry.bench.invalid/ext/base-NNNN:1`, never
//! contacted: nothing is built during the default 7-day hold) and 9,000 managed images
//! in 3 levels of 3,000 (level 0 `FROM` a base, three per base; each further level
//! `FROM` an image of the level above), each with a path source, a real Dockerfile and a
//! `command` trigger. The controller runs on a fresh git repository (`--commit`).
//!
//! 1. Baselines: one Freight per base (Kargo's Freight ID as name, origin the
//!    generated Warehouse) exists before the controller starts; start-up lists them and
//!    records every base's first digest. Measured: spawn → all 1,000 baselines in state.
//! 2. The burst: 1,000 new Freight (a new digest of every base), 32 creates in flight.
//!    A watch on `ImageFactoryRebuild` in this process notes when the first rebuild of
//!    each Freight appears (label `imagefactory.dev/freight`). Measured: per Freight,
//!    create returned → its first rebuild object seen (p50, p99, max); the whole burst,
//!    first create → the last expected rebuild object (as many as the state records);
//!    the controller's peak RSS (`VmHWM`) and CPU seconds.
//!
//! Targets (issue 12): p99 < 1 s, the burst < 30 s, RSS < 100 MB.
//!
//! Run: `cargo bench --bench controller` (release build; about 2 minutes). `BASES=N`
//! for another number of bases (the graph is 10 × N images); `COMMIT=0` runs without
//! `--commit`. Needs `kubectl` and
//! `git` on `PATH` and `shared/` next to the repository (or `IMAGE_FACTORY_SHARED`).

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use std::time::{Duration, Instant};
use tokio::sync::Mutex;

use anyhow::{bail, Context, Result};
use futures::{StreamExt as _, TryStreamExt as _};
use image_factory::crd::ImageFactoryRebuild;
use image_factory::kargo::{Freight, FreightImage, FreightOrigin};
use image_factory::reference::Reference;
use image_factory::state::{self, FileStore};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use support::{cpu_seconds_of, run, status_kb};

const BIN: &str = env!("CARGO_BIN_EXE_image-factory");
const HOST: &str = "registry.bench.invalid";
const NS: &str = "bench";
/// Managed levels of `3 × bases` images each.
const LEVELS: usize = 3;
/// Freight creates in flight.
const IN_FLIGHT: usize = 32;

fn bases() -> usize {
    std::env::var("BASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .max(1)
}

/// `--commit`, unless `COMMIT=0` (to see what the git writer costs).
fn git_flag() -> Vec<&'static str> {
    if std::env::var("COMMIT").is_ok_and(|v| v == "0") {
        Vec::new()
    } else {
        vec!["--commit"]
    }
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

fn base_name(i: usize) -> String {
    format!("base-{i:04}")
}

fn base_reference(i: usize) -> String {
    format!("{HOST}/ext/{}:1", base_name(i))
}

/// `images.yaml` and the sources, committed in a fresh repository.
fn write_fleet(work: &Path, bases: usize) -> Result<usize> {
    std::fs::create_dir_all(work.join("src"))?;
    let mut yaml = String::from("version: 1\ndefaults:\n  rebuild: {delay: 7d}\nimages:\n");
    for i in 0..bases {
        writeln!(
            yaml,
            "  - {{name: {}, image: '{}'}}",
            base_name(i),
            base_reference(i)
        )?;
    }
    let mut previous: Vec<String> = (0..bases).map(base_reference).collect();
    let mut managed = 0;
    for level in 0..LEVELS {
        let mut current = Vec::new();
        for k in 0..3 * bases {
            let name = format!("img-{level}-{k:05}");
            let reference = format!("{HOST}/team-{level}/{name}:1");
            let parent = &previous[k % previous.len()];
            let src = work.join("src").join(&name);
            std::fs::create_dir_all(&src)?;
            std::fs::write(
                src.join("Dockerfile"),
                format!("FROM {parent}\nRUN echo {name} > /name\n"),
            )?;
            writeln!(
                yaml,
                "  - {{name: {name}, image: '{reference}', source: {{path: src/{name}}}, trigger: {{command: {{args: ['true']}}}}}}"
            )?;
            current.push(reference);
            managed += 1;
        }
        previous = current;
    }
    std::fs::write(work.join("images.yaml"), yaml)?;
    std::fs::write(work.join(".gitignore"), ".cache/\n")?;
    let git = |args: &[&str]| run(Command::new("git").arg("-C").arg(work).args(args));
    run(Command::new("git")
        .args(["init", "-q", "-b", "main"])
        .arg(work))?;
    git(&["config", "user.name", "factory"])?;
    git(&["config", "user.email", "factory@example.com"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-q", "-m", "enroll the fleet"])?;
    Ok(bases + managed)
}

/// The Freight Kargo would create for base `i` at release `n`.
fn freight(i: usize, n: usize) -> Freight {
    let mut f = Freight::new(NS, "");
    f.origin = FreightOrigin {
        kind: "Warehouse".to_string(),
        name: base_name(i),
    };
    let digest = image_factory::runtime::Digest::sha256_of(format!("{i} {n}").as_bytes());
    f.images = vec![FreightImage {
        repo_url: Some(format!("{HOST}/ext/{}", base_name(i))),
        tag: Some("1".to_string()),
        digest: Some(digest.to_string()),
    }];
    f.alias = Some(format!("base-{i}-release-{n}"));
    f.metadata.name = Some(f.generate_id());
    f
}

async fn create_all(api: &Api<Freight>, items: Vec<Freight>) -> Result<BTreeMap<String, Instant>> {
    let done: Vec<(String, Instant)> = futures::stream::iter(items)
        .map(|f| {
            let api = api.clone();
            async move {
                let name = f.metadata.name.clone().unwrap_or_default();
                api.create(&PostParams::default(), &f)
                    .await
                    .with_context(|| format!("create Freight {name}"))?;
                Ok::<_, anyhow::Error>((name, Instant::now()))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    Ok(done.into_iter().collect())
}

/// The controller child; killed on drop.
struct Controller {
    child: Child,
    pid: String,
    log: PathBuf,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Controller {
    fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail = &log[log.len().saturating_sub(3000)..];
            bail!("the controller exited ({status}):\n{tail}");
        }
        Ok(())
    }
}

fn baselines(store: &FileStore, bases: usize) -> Result<usize> {
    let mut n = 0;
    for i in 0..bases {
        let r = Reference::parse(&base_reference(i))?;
        if state::read_runtime(store, &r)?.is_some_and(|rt| rt.current.is_some()) {
            n += 1;
        }
    }
    Ok(n)
}

fn recorded_rebuilds(store: &FileStore, work: &Path) -> Result<usize> {
    let yaml = std::fs::read_to_string(work.join("images.yaml"))?;
    let mut n = 0;
    for line in yaml.lines().filter(|l| l.contains("source:")) {
        let Some(reference) = line.split('\'').nth(1) else {
            continue;
        };
        if let Some(rt) = state::read_runtime(store, &Reference::parse(reference)?)? {
            n += rt.rebuilds.len();
        }
    }
    Ok(n)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Every rebuild object in `ns`.
async fn rebuilds_in(client: &kube::Client, ns: &str) -> Result<Vec<ImageFactoryRebuild>> {
    let api: Api<ImageFactoryRebuild> = Api::namespaced(client.clone(), ns);
    Ok(api.list(&kube::api::ListParams::default()).await?.items)
}

/// Writes copies of `objects` into a fresh namespace with the mirror's own requests,
/// [`image_factory::controller::mirror::CONCURRENCY`] in flight, then one Event per
/// object, and prints how long each part took: the floor under the controller's burst
/// figures on this machine.
async fn ceiling(client: &kube::Client, objects: &[ImageFactoryRebuild]) -> Result<()> {
    use image_factory::controller::mirror;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    use kube::Resource as _;
    let ns = "bench-ceiling";
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let mut namespace = k8s_openapi::api::core::v1::Namespace::default();
    namespace.metadata.name = Some(ns.to_string());
    namespaces
        .create(&PostParams::default(), &namespace)
        .await?;
    let api: Api<ImageFactoryRebuild> = Api::namespaced(client.clone(), ns);
    let copies: Vec<ImageFactoryRebuild> = objects
        .iter()
        .map(|o| {
            let mut c = ImageFactoryRebuild::new(
                &o.metadata.name.clone().unwrap_or_default(),
                o.spec.clone(),
            );
            c.metadata.namespace = Some(ns.to_string());
            c.metadata.labels.clone_from(&o.metadata.labels);
            c.status.clone_from(&o.status);
            c
        })
        .collect();
    let n = copies.len();
    let started = Instant::now();
    let written: Vec<ImageFactoryRebuild> = futures::stream::iter(copies)
        .map(|want| {
            let api = api.clone();
            async move { mirror::write(&api, want, None).await }
        })
        .buffer_unordered(mirror::CONCURRENCY)
        .try_collect()
        .await?;
    let objects_took = started.elapsed();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "image-factory-bench".to_string(),
            instance: None,
        },
    );
    let started = Instant::now();
    futures::stream::iter(written)
        .for_each_concurrent(mirror::CONCURRENCY, |o| {
            let recorder = recorder.clone();
            async move {
                let event = Event {
                    type_: EventType::Normal,
                    reason: "RebuildHeld".to_string(),
                    note: Some("bench".to_string()),
                    action: "Reconcile".to_string(),
                    secondary: None,
                };
                let _ = recorder.publish(&event, &o.object_ref(&())).await;
            }
        })
        .await;
    let events_took = started.elapsed();
    println!(
        "API server ceiling (this process, controller stopped, {} in flight): {n} objects × (spec apply + status apply) in {:.2} s ({:.0} objects/s); then {n} Events in {:.2} s ({:.0}/s)",
        mirror::CONCURRENCY,
        objects_took.as_secs_f64(),
        n as f64 / objects_took.as_secs_f64().max(1e-9),
        events_took.as_secs_f64(),
        n as f64 / events_took.as_secs_f64().max(1e-9),
    );
    let _ = namespaces.delete(ns, &Default::default()).await;
    Ok(())
}

fn main() -> Result<()> {
    let bases = bases();
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
    let kubectl = |args: &[&str]| -> Result<()> {
        run(Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &kubeconfig))
        .map(|_| ())
    };
    for (file, crd) in [
        (
            repo_root().join("crds/imagefactory.dev_imagefactoryrebuilds.yaml"),
            "crd/imagefactoryrebuilds.imagefactory.dev",
        ),
        (
            shared_dir().join("kargo/crds/kargo.akuity.io_freights.yaml"),
            "crd/freights.kargo.akuity.io",
        ),
    ] {
        kubectl(&["apply", "--server-side", "-f", &file.display().to_string()])?;
        kubectl(&["wait", "--for=condition=Established", "--timeout=30s", crd])?;
    }
    kubectl(&["create", "namespace", NS])?;

    let work = dir.path().join("work");
    let images = write_fleet(&work, bases)?;
    println!(
        "fleet: {images} images ({bases} bases, {} managed in {LEVELS} levels)",
        images - bases
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        let client = kube::Client::try_from(config)?;
        let freights: Api<Freight> = Api::namespaced(client.clone(), NS);
        let rebuilds: Api<ImageFactoryRebuild> = Api::namespaced(client.clone(), NS);

        // 1. Baselines from Freight that exists before the start.
        create_all(&freights, (0..bases).map(|i| freight(i, 0)).collect()).await?;
        let log = dir.path().join("controller.log");
        let started = Instant::now();
        let child = Command::new(BIN)
            .arg("controller")
            .args(git_flag())
            .args(["--namespace", NS, "--log-format", "json"])
            .current_dir(&work)
            .env("KUBECONFIG", &kubeconfig)
            .env("IMAGE_FACTORY_CACHE", work.join(".cache"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut controller = Controller {
            pid: child.id().to_string(),
            child,
            log: log.clone(),
        };
        let store = FileStore::read_only(work.join("state"));
        loop {
            controller.alive()?;
            if baselines(&store, bases)? == bases {
                break;
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!("baselines not recorded in 5 minutes");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let startup = started.elapsed();
        println!("start-up: spawn → {bases} baselines recorded from Freight: {:.2} s", startup.as_secs_f64());
        let rss_idle = status_kb(&controller.pid, "VmRSS:").unwrap_or(0) / 1024;
        let cpu_before = cpu_seconds_of(&controller.pid);

        // 2. The burst, watched.
        let seen: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
        let objects = Arc::new(Mutex::new(std::collections::BTreeSet::<String>::new()));
        let watch = {
            let (seen, objects) = (seen.clone(), objects.clone());
            tokio::spawn(async move {
                let mut stream = watcher::watcher(rebuilds, watcher::Config::default()).boxed();
                while let Some(Ok(event)) = stream.next().await {
                    if let watcher::Event::Apply(o) | watcher::Event::InitApply(o) = event {
                        let now = Instant::now();
                        let labels = o.metadata.labels.clone().unwrap_or_default();
                        if let Some(f) = labels.get(image_factory::crd::LABEL_FREIGHT) {
                            seen.lock().await.entry(f.clone()).or_insert(now);
                        }
                        if let Some(name) = o.metadata.name {
                            objects.lock().await.insert(name);
                        }
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let burst_start = Instant::now();
        let created = create_all(&freights, (0..bases).map(|i| freight(i, 1)).collect()).await?;
        let created_in = burst_start.elapsed();
        let mut peak_rss = 0;
        let (burst, expected) = loop {
            controller.alive()?;
            peak_rss = peak_rss.max(status_kb(&controller.pid, "VmRSS:").unwrap_or(0));
            let all_seen = {
                let s = seen.lock().await;
                created.keys().all(|k| s.contains_key(k))
            };
            // Each base has three direct dependents, each held: 3 × bases objects.
            let expected = 3 * bases;
            if all_seen && objects.lock().await.len() >= expected {
                break (burst_start.elapsed(), expected);
            }
            if burst_start.elapsed() > Duration::from_secs(300) {
                bail!("not every rebuild object appeared in 5 minutes");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        watch.abort();
        let recorded = recorded_rebuilds(&store, &work)?;
        if recorded != expected {
            println!("warning: the state records {recorded} rebuilds, {expected} objects were expected");
        }
        let seen = seen.lock().await.clone();
        let mut latencies: Vec<Duration> = created
            .iter()
            .filter_map(|(name, at)| seen.get(name).map(|s| s.saturating_duration_since(*at)))
            .collect();
        latencies.sort();
        let cpu = cpu_seconds_of(&controller.pid) - cpu_before;
        let hwm = status_kb(&controller.pid, "VmHWM:").unwrap_or(0) / 1024;
        println!(
            "burst: {bases} Freight created in {:.2} s ({IN_FLIGHT} in flight); every resulting rebuild object ({expected}) exists {:.2} s after the first create",
            created_in.as_secs_f64(),
            burst.as_secs_f64()
        );
        println!(
            "Freight → first rebuild object: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} Freight)",
            percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
            latencies.len()
        );
        println!(
            "controller: RSS idle after start-up {rss_idle} MB, peak during the burst {} MB, VmHWM {hwm} MB; {cpu:.1} CPU s in the burst",
            peak_rss / 1024
        );
        let log_text = std::fs::read_to_string(&log)?;
        let problems = log_text
            .lines()
            .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
            .count();
        println!("controller log: {problems} warning/error line(s)");
        // 3. The API server's own ceiling on this machine: the same objects written by
        // this process with exactly the mirror's requests (spec apply, status apply; then
        // one Event each), as many in flight as the mirror, the controller stopped.
        drop(controller);
        ceiling(&client, &rebuilds_in(&client, NS).await?).await?;
        let kept = repo_root().join("target/controller-bench.log");
        std::fs::copy(&log, &kept)?;
        println!("controller log kept in {}", kept.display());
        let _ = kubectl(&["delete", "namespace", NS, "--wait=false"]);
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
