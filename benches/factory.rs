//! `image-factory run` — the real binary — on a fleet of 10,000 enrolled images: 100
//! external bases and 9,900 managed images in 7 levels (each managed image `FROM` an
//! image of the level above and, from level 2 down, `COPY --from=` an external base as
//! well, the shape of `benches/engine.rs`). Every managed image has a path source with a
//! real Dockerfile (`src/img-00042/Dockerfile`) and a `command` trigger (`true`); every
//! image is in a local `docker-registry` on 127.0.0.1 (filled through blob mounts of one
//! seed image), so the watcher finds them all. `run` works on a fresh git repository
//! (`--commit`, state in `state/`), with `--listen` for `/metrics` and
//! `--log-format json`.
//!
//! Measures:
//!
//! 1. start-up: spawn → `/readyz` answers 200 (configuration analyzed, state loaded),
//!    → first watcher pass done (every image observed and its baseline written: the
//!    loop has come round to poll the 1-second base again), → everything committed
//!    (`git status --no-optional-locks` of `state/` clean: a plain `git status`
//!    takes the index lock and fails the factory's next commit); then, after 10 s idle, the child's `VmRSS`,
//!    `VmHWM` and CPU seconds (utime + stime) in that window;
//! 2. push → recorded → committed: one base (`base-000`, `warehouse: {interval: 1s}`,
//!    the default 7-day hold, about 100 dependents) gets a new digest of its tag
//!    (the seed manifest with another annotation) 5 times; from the moment the `PUT`
//!    returns, polled every 10 ms, until (a) its runtime state file records the digest
//!    as an update (the holds of its dependents are written in the same state commit)
//!    and (b) `HEAD` moved and its tree has that file with the digest. The watcher's
//!    interval (1 s) bounds (a); the git writer's batch window (2 s) adds to (b).
//!
//! The local registry has no request budget (`requestsPerSecond: null`, 16 at once), as
//! in `benches/registry.rs`; `PACED=1` keeps the product default (100 requests/s), which
//! then bounds the first pass (≥ 1 request per image).
//!
//! Run: `cargo bench --bench factory` (release build; about 4 minutes, half of it
//! filling the registry). `IMAGES=N` for another fleet size (e.g. 1000 to see how
//! memory scales); `FACTORY_ENV="K=V …"` adds environment to the `run` child only
//! (diagnosis: `MALLOC_ARENA_MAX=1`, heaptrack's `LD_PRELOAD`). Needs docker-registry,
//! umoci, skopeo, curl and git on `PATH`.

#[path = "support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use image_factory::reference::Reference;
use image_factory::registry::digest::sha256_digest;
use image_factory::runtime::Digest;
use image_factory::state::{self, FileStore};
use support::{cpu_seconds_of, in_parallel, run, start_registry, status_kb, Registry, Seed};

const BIN: &str = env!("CARGO_BIN_EXE_image-factory");

/// External bases.
const BASES: usize = 100;
/// Levels of managed images.
const LEVELS: usize = 7;
/// The base watched every second, whose tag the latency part moves.
const HOT: &str = "base-000";
/// New digests pushed for the latency part.
const PUSHES: usize = 5;
/// The idle window.
const IDLE: Duration = Duration::from_secs(10);
/// Connections filling the registry.
const FILL_WORKERS: usize = 8;

fn images() -> usize {
    std::env::var("IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
        .max(BASES + LEVELS)
}

/// Managed images per level for `n` managed images: the first level a tenth, the rest
/// shared evenly (the last takes the remainder).
fn level_sizes(n: usize) -> [usize; LEVELS] {
    let first = n / 10;
    let rest = (n - first) / (LEVELS - 1);
    let mut sizes = [rest; LEVELS];
    sizes[0] = first;
    sizes[LEVELS - 1] = n - first - rest * (LEVELS - 2);
    sizes
}

fn base_repo(i: usize) -> String {
    format!("ext/base-{i:03}")
}

/// The configuration repository: `images.yaml`, `src/<name>/Dockerfile`, committed.
struct Fleet {
    dir: tempfile::TempDir,
    work: PathBuf,
    /// Every repository to put into the registry (tag `1`).
    repos: Vec<String>,
}

impl Fleet {
    fn write(host: &str, total: usize) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("src"))?;
        let mut yaml = String::from(
            "version: 1\ndefaults:\n  rebuild: {delay: 7d}\n  warehouse: {interval: 5m}\nimages:\n",
        );
        let mut repos = Vec::with_capacity(total);
        for i in 0..BASES {
            let repo = base_repo(i);
            let name = format!("base-{i:03}");
            let warehouse = if name == HOT {
                ", warehouse: {interval: 1s}"
            } else {
                ""
            };
            writeln!(
                yaml,
                "  - {{name: {name}, image: '{host}/{repo}:1'{warehouse}}}"
            )?;
            repos.push(repo);
        }
        let mut previous: Vec<String> = (0..BASES).map(base_repo).collect();
        let mut index = 0usize;
        for (level, &size) in level_sizes(total - BASES).iter().enumerate() {
            let mut current = Vec::with_capacity(size);
            for k in 0..size {
                let name = format!("img-{index:05}");
                let repo = format!("team-{level}/{name}");
                let parent = &previous[(k * 7 + level) % previous.len()];
                let mut dockerfile = format!("FROM {host}/{parent}:1\n");
                if level > 0 {
                    let base = base_repo((k * 13 + 5) % BASES);
                    writeln!(dockerfile, "COPY --from={host}/{base}:1 /hello /base-hello")?;
                }
                writeln!(dockerfile, "RUN echo {name} > /name")?;
                let src = work.join("src").join(&name);
                std::fs::create_dir_all(&src)?;
                std::fs::write(src.join("Dockerfile"), dockerfile)?;
                writeln!(
                    yaml,
                    "  - {{name: {name}, image: '{host}/{repo}:1', source: {{path: src/{name}}}, trigger: {{command: {{args: ['true']}}}}}}"
                )?;
                current.push(repo.clone());
                repos.push(repo);
                index += 1;
            }
            previous = current;
        }
        std::fs::write(work.join("images.yaml"), yaml)?;
        std::fs::write(work.join(".gitignore"), ".cache/\n")?;
        run(Command::new("git")
            .args(["init", "-q", "-b", "main"])
            .arg(&work))?;
        git(&work, &["config", "user.name", "factory"])?;
        git(&work, &["config", "user.email", "factory@example.com"])?;
        git(&work, &["add", "-A"])?;
        git(&work, &["commit", "-q", "-m", "enroll the fleet"])?;
        Ok(Self { dir, work, repos })
    }
}

fn git(work: &Path, args: &[&str]) -> Result<String> {
    let out = run(Command::new("git").arg("-C").arg(work).args(args))?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// Puts the seed image at `repo:1` for every repository.
fn fill(registry: &Registry, seed: &Seed, repos: &[String]) -> Result<()> {
    in_parallel(&registry.host, FILL_WORKERS, |conn, w, workers| {
        for repo in repos.iter().skip(w).step_by(workers) {
            seed.mount(conn, repo)?;
            seed.put(conn, repo, "1")?;
        }
        Ok(())
    })
}

/// `FACTORY_ENV="K=V K2=V2"`: extra environment of the `run` child only, for
/// diagnosis (`MALLOC_ARENA_MAX=1`, heaptrack's `LD_PRELOAD=… DUMP_HEAPTRACK_OUTPUT=…`).
fn child_env() -> Vec<(String, String)> {
    std::env::var("FACTORY_ENV")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The running `image-factory run`; killed on drop (a failed bench leaves nothing).
struct Factory {
    child: Child,
    pid: String,
    listen: SocketAddr,
    log: PathBuf,
}

impl Drop for Factory {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Factory {
    fn spawn(fleet: &Fleet, host: &str) -> Result<Self> {
        let listen = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let settings = fleet.dir.path().join("registries.yaml");
        let budget = if std::env::var_os("PACED").is_some() {
            String::new()
        } else {
            format!("registries:\n  '{host}': {{requestsPerSecond: null, maxConcurrency: 16}}\n")
        };
        std::fs::write(&settings, budget)?;
        let log = fleet.dir.path().join("run.log");
        let stderr = std::fs::File::create(&log)?;
        let child = Command::new(BIN)
            .arg("run")
            .args(["--commit", "--state-dir", "state", "--log-format", "json"])
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--registry-settings")
            .arg(&settings)
            .current_dir(&fleet.work)
            .env("IMAGE_FACTORY_CACHE", fleet.work.join(".cache"))
            .env_remove("RUST_LOG")
            .envs(child_env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context(BIN)?;
        Ok(Self {
            pid: child.id().to_string(),
            child,
            listen,
            log,
        })
    }

    /// An error when the process has exited.
    fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "image-factory run exited ({status}); log tail:\n{}",
                tail(
                    &std::fs::read_to_string(&self.log).unwrap_or_default(),
                    4000
                )
            );
        }
        Ok(())
    }

    fn get(&self, path: &str) -> Result<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.listen, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.listen
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        Ok((status, body))
    }

    /// The value of the sample `name` (with its labels, as rendered) in `/metrics`; 0
    /// when absent.
    fn metric(&self, name: &str) -> Result<f64> {
        let (status, body) = self.get("/metrics")?;
        if status != 200 {
            bail!("/metrics: HTTP {status}");
        }
        Ok(body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0))
    }

    /// SIGTERM, then up to 30 s for a clean exit.
    fn stop(&mut self) -> Result<String> {
        run(Command::new("kill").args(["-TERM", &self.pid]))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.to_string());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok("still running 30 s after SIGTERM (killed)".to_string())
    }
}

/// Calls `probe` every `every` until it gives a value, at most `timeout` (a probe's
/// error, e.g. a dead child, ends the wait at once).
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and max.
fn median_max(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let median = v.get(v.len() / 2).copied().unwrap_or_default();
    let max = v.last().copied().unwrap_or_default();
    (median, max)
}

/// Runtime records under `state/runtime/`: how many, how many with a `current` digest.
fn baselines(state_dir: &Path) -> Result<(usize, usize)> {
    let mut files = 0;
    let mut current = 0;
    let mut stack = vec![state_dir.join(state::RUNTIME_DIR)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files += 1;
                if std::fs::read_to_string(&path)?.contains("\ncurrent:") {
                    current += 1;
                }
            }
        }
    }
    Ok((files, current))
}

/// Warnings and errors of the JSON run log: count, and the distinct messages (first 8).
fn log_problems(log: &Path) -> Result<(usize, Vec<String>)> {
    let text = std::fs::read_to_string(log)?;
    let mut count = 0;
    let mut distinct: Vec<String> = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            // Not a log record: print it as it is.
            count += 1;
            if distinct.len() < 8 && !distinct.iter().any(|d| d == line) {
                distinct.push(line.to_string());
            }
            continue;
        };
        let level = v["level"].as_str().unwrap_or_default();
        if level != "WARN" && level != "ERROR" {
            continue;
        }
        count += 1;
        let message = format!("{level} {}", v["fields"]);
        if distinct.len() < 8 && !distinct.contains(&message) {
            distinct.push(message);
        }
    }
    Ok((count, distinct))
}

fn main() -> Result<()> {
    let total = images();
    let registry = start_registry()?;
    let seed = Seed::push(&registry)?;
    let started = Instant::now();
    let fleet = Fleet::write(&registry.host, total)?;
    let wrote = started.elapsed();
    let started = Instant::now();
    fill(&registry, &seed, &fleet.repos)?;
    println!(
        "fleet of {total} images ({BASES} external, {} managed with a path source) written and committed in {:.1} s; {} filled in {:.1} s",
        total - BASES,
        secs(wrote),
        registry.host,
        secs(started.elapsed())
    );

    let spawned = Instant::now();
    let mut factory = Factory::spawn(&fleet, &registry.host)?;
    let ready = wait_for(
        "/readyz",
        Duration::from_secs(600),
        Duration::from_millis(20),
        || {
            factory.alive()?;
            Ok(matches!(factory.get("/readyz"), Ok((200, _))).then(|| spawned.elapsed()))
        },
    )?;
    let rss_ready = status_kb(&factory.pid, "VmRSS:").unwrap_or(0);
    let cpu_ready = cpu_seconds_of(&factory.pid);
    // The 1-second base is polled again only once the loop has handled every
    // observation of the first pass: one more than the fleet.
    let expected = (total + 1) as f64;
    let first_pass = wait_for(
        "the first watcher pass",
        Duration::from_secs(900),
        Duration::from_millis(100),
        || {
            factory.alive()?;
            let seen = factory.metric("image_factory_observations_total{source=\"registry\"}")?
                + factory.metric("image_factory_source_problems_total{source=\"registry\"}")?;
            Ok((seen >= expected).then(|| spawned.elapsed()))
        },
    )?;
    let rss_pass = status_kb(&factory.pid, "VmRSS:").unwrap_or(0);
    let cpu_pass = cpu_seconds_of(&factory.pid);
    let problems = factory.metric("image_factory_source_problems_total{source=\"registry\"}")?;
    let committed = wait_for(
        "the start-up state committed",
        Duration::from_secs(600),
        Duration::from_millis(250),
        || {
            factory.alive()?;
            let dirty = git(
                &fleet.work,
                // No index refresh: a lock on the index fails the factory's commit.
                &[
                    "--no-optional-locks",
                    "status",
                    "--porcelain",
                    "--untracked-files=all",
                    "--",
                    "state",
                ],
            )?;
            Ok(dirty.is_empty().then(|| spawned.elapsed()))
        },
    )?;
    let cpu_committed = cpu_seconds_of(&factory.pid);
    let state_dir = fleet.work.join("state");
    let (records, current) = baselines(&state_dir)?;
    let commits = git(&fleet.work, &["rev-list", "--count", "HEAD"])?;
    let rss_busy = status_kb(&factory.pid, "VmHWM:").unwrap_or(0);

    // Idle: nothing changes; one HEAD a second for the 1-second base.
    std::thread::sleep(Duration::from_secs(2));
    factory.alive()?;
    let cpu0 = cpu_seconds_of(&factory.pid);
    let idle_started = Instant::now();
    std::thread::sleep(IDLE);
    let cpu = cpu_seconds_of(&factory.pid) - cpu0;
    let idle_window = idle_started.elapsed();
    factory.alive()?;
    let rss = status_kb(&factory.pid, "VmRSS:").unwrap_or(0);
    let hwm = status_kb(&factory.pid, "VmHWM:").unwrap_or(0);
    let anon = status_kb(&factory.pid, "RssAnon:").unwrap_or(0);
    let file = status_kb(&factory.pid, "RssFile:").unwrap_or(0);
    let threads = std::fs::read_to_string(format!("/proc/{}/status", factory.pid))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|t| t.trim().to_string()))
        })
        .unwrap_or_default();

    println!();
    println!(
        "{:<58} {:>14} {:>10}",
        format!("image-factory run, {total} images"),
        "wall",
        "CPU"
    );
    println!(
        "{:<58} {:>12.1} s {:>8.1} s",
        "spawn → /readyz 200 (analyzed, state loaded)",
        secs(ready),
        cpu_ready
    );
    println!(
        "{:<58} {:>12.1} s {:>8.1} s",
        format!("spawn → first watcher pass handled ({problems} problems)"),
        secs(first_pass),
        cpu_pass
    );
    println!(
        "{:<58} {:>12.1} s {:>8.1} s",
        format!("spawn → state committed ({commits} commits)"),
        secs(committed),
        cpu_committed
    );
    println!(
        "{:<58} {:>12}",
        "runtime records with a baseline",
        format!("{current} / {records}")
    );
    println!(
        "{:<58} {:>11.1} MB",
        "RSS at /readyz 200 (VmRSS)",
        rss_ready as f64 / 1024.0
    );
    println!(
        "{:<58} {:>11.1} MB",
        "RSS at first watcher pass handled (VmRSS)",
        rss_pass as f64 / 1024.0
    );
    println!(
        "{:<58} {:>11.1} MB",
        format!("RSS idle (VmRSS, {threads} threads)"),
        rss as f64 / 1024.0
    );
    println!(
        "{:<58} {:>11.1} MB",
        "  of which anonymous (heap, stacks; RssAnon)",
        anon as f64 / 1024.0
    );
    println!(
        "{:<58} {:>11.1} MB",
        "  of which file-backed (the binary, libraries; RssFile)",
        file as f64 / 1024.0
    );
    println!(
        "{:<58} {:>11.1} MB",
        "peak RSS (VmHWM) at start-up done",
        rss_busy as f64 / 1024.0
    );
    println!(
        "{:<58} {:>11.1} MB",
        "peak RSS (VmHWM) after idle",
        hwm as f64 / 1024.0
    );
    println!(
        "{:<58} {:>12.3} s",
        format!("idle CPU per minute ({:.0} s window)", secs(idle_window)),
        cpu / secs(idle_window) * 60.0
    );
    println!(
        "idle RSS below 100 MB: {}",
        if rss < 100 * 1024 { "yes" } else { "NO" }
    );

    let latencies = latency(&mut factory, &registry, &seed, &fleet)?;
    let holds = factory.metric("image_factory_decisions_total{kind=\"hold\"}")?;
    let exit = factory.stop()?;
    let (recorded, git_latency): (Vec<_>, Vec<_>) = latencies.into_iter().unzip();
    let (rec_median, rec_max) = median_max(recorded);
    let (git_median, git_max) = median_max(git_latency);
    println!();
    println!(
        "{:<58} {:>10} {:>10}",
        format!("{HOT} (interval 1s): {PUSHES} pushes, from the PUT"),
        "median ms",
        "max ms"
    );
    println!(
        "{:<58} {:>10.0} {:>10.0}",
        "→ update recorded in its runtime state file",
        ms(rec_median),
        ms(rec_max)
    );
    println!(
        "{:<58} {:>10.0} {:>10.0}",
        "→ committed (HEAD moved, its tree has the digest)",
        ms(git_median),
        ms(git_max)
    );
    println!(
        "recorded is bounded by the watcher interval (1 s) plus handling; committed adds the git writer's batch window (2 s); {holds} hold decisions in all"
    );
    println!("run stopped: {exit}");
    let (count, distinct) = log_problems(&factory.log)?;
    println!("run log: {count} warning/error line(s)");
    for d in distinct {
        println!("  {}", tail(&d, 300));
    }
    Ok(())
}

/// Pushes `PUSHES` new digests of the hot base; per push, the time from the `PUT` to the
/// update in its runtime record and to the commit holding it.
fn latency(
    factory: &mut Factory,
    registry: &Registry,
    seed: &Seed,
    fleet: &Fleet,
) -> Result<Vec<(Duration, Duration)>> {
    let repo = base_repo(0);
    let reference = Reference::parse(&format!("{}/{repo}:1", registry.host))?;
    let store = FileStore::read_only(fleet.work.join("state"));
    let rel = state::runtime_path(&reference);
    let rel_str = format!("state/{}", rel.display());
    let mut manifest: serde_json::Value = serde_json::from_slice(&seed.manifest)?;
    let mut conn = support::Conn::new(&registry.host)?;
    let mut out = Vec::new();
    for n in 1..=PUSHES {
        manifest["annotations"] = serde_json::json!({ "bench.release": n.to_string() });
        let body = serde_json::to_vec(&manifest)?;
        let digest = Digest::parse(&sha256_digest(&body))?;
        let head_before = git(&fleet.work, &["rev-parse", "HEAD"])?;
        seed.put_manifest(&mut conn, &repo, "1", &body)?;
        let pushed = Instant::now();
        let mut recorded = None;
        let mut head = head_before.clone();
        let committed = wait_for(
            &format!("{repo}@{digest} recorded and committed"),
            Duration::from_secs(60),
            Duration::from_millis(10),
            || {
                factory.alive()?;
                if recorded.is_none()
                    && state::read_runtime(&store, &reference)?
                        .is_some_and(|rt| rt.update(&digest).is_some())
                {
                    recorded = Some(pushed.elapsed());
                }
                let now = git(&fleet.work, &["rev-parse", "HEAD"])?;
                if now == head {
                    return Ok(None);
                }
                head = now;
                let at = pushed.elapsed();
                let tree = git(&fleet.work, &["show", &format!("HEAD:{rel_str}")])?;
                Ok(tree.contains(digest.as_str()).then_some(at))
            },
        )?;
        let recorded = recorded.unwrap_or(committed);
        println!(
            "push {n}: {digest}  recorded {:>6.0} ms  committed {:>6.0} ms",
            ms(recorded),
            ms(committed)
        );
        out.push((recorded, committed));
        // Next push after the batch window, at a random phase of the watcher interval.
        std::thread::sleep(Duration::from_millis(300 + fastrand::u64(0..1000)));
    }
    Ok(out)
}
