//! `image-factory run` end to end with real parts: the shared real registry, real
//! `buildah` builds started by `command` triggers, a real git remote (`git daemon`),
//! the binary itself (started under `setsid`, stopped with SIGTERM or killed).
//!
//! The fleet: external `base` → internal `platform` → `app1` (multi-stage) and `app2`
//! (`COPY --from` the external `helper`). Every build appends `start KEY` and, after
//! its push, `pushed KEY` (KEY = the idempotency key `ID.ATTEMPT`) to a log, so the
//! tests count exactly which builds ran and which reached the registry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use image_factory::reference::Reference;
use image_factory::runtime::{Digest, ImageRuntime, Phase};
use image_factory::state::{self, FileStore};

use crate::rebuilds::{client, digest_of, push_base, registry, run};
use crate::support::git_daemon::{config_repo, git, GitDaemon};
use crate::support::registry::{Fault, FaultProxy};

const BIN: &str = env!("CARGO_BIN_EXE_image-factory");

/// One configuration repository with its fleet, remote and build log.
pub(crate) struct Site {
    _dir: tempfile::TempDir,
    pub(crate) work: PathBuf,
    pub(crate) bare: PathBuf,
    _daemon: GitDaemon,
    pub(crate) ns: String,
    pub(crate) log: PathBuf,
    scratch: PathBuf,
    releases: usize,
    /// `127.0.0.1:PORT` the external images (`base`, `helper`) are enrolled under: the
    /// registry itself or a fault proxy in front of it.
    external_host: String,
    /// `git://` address of the remote.
    pub(crate) remote_url: String,
}

/// How the fleet is enrolled.
pub(crate) struct Fleet<'a> {
    /// `rebuild:` of `base` (a YAML flow mapping).
    pub(crate) base_rebuild: &'a str,
    /// Managed images whose build fails (`exit 1`).
    pub(crate) failing: &'a [&'a str],
    /// Whether `app2` is enrolled.
    pub(crate) app2: bool,
    /// Enroll (and build `FROM`) the external images under this host instead of the
    /// registry's (a [`FaultProxy`] in front of it).
    pub(crate) external_host: Option<&'a str>,
}

impl Site {
    pub(crate) fn new(ns: &str, fleet: &Fleet<'_>) -> Self {
        let r = registry();
        let dir = tempfile::tempdir().unwrap();
        let bare = config_repo(dir.path(), "cfg");
        let daemon = GitDaemon::start(dir.path());
        let work = dir.path().join("work");
        run(Command::new("git")
            .args(["clone", "-q", &daemon.url("cfg.git")])
            .arg(&work));
        git(&work, &["config", "user.name", "factory"]);
        git(&work, &["config", "user.email", "factory@example.com"]);
        let log = dir.path().join("builds.log");
        std::fs::write(&log, "").unwrap();
        let scratch = r.scratch(&format!("factory-{ns}"));
        let host = &r.host;
        let ext = fleet.external_host.unwrap_or(host);
        let files: &[(&str, &str, String)] = &[
            (
                "platform",
                "p.txt",
                format!("FROM {ext}/{ns}/base:1\nCOPY p.txt /p.txt\n"),
            ),
            (
                "app1",
                "a.txt",
                format!(
                    "FROM {host}/{ns}/platform:1 AS build\nCOPY a.txt /a.txt\n\nFROM {host}/{ns}/platform:1\nCOPY --from=build /a.txt /app1.txt\n"
                ),
            ),
            (
                "app2",
                "b.txt",
                format!(
                    "FROM {host}/{ns}/platform:1\nCOPY b.txt /b.txt\nCOPY --from={ext}/{ns}/helper:1 /release.txt /helper.txt\n"
                ),
            ),
        ];
        for (name, file, dockerfile) in files {
            let d = work.join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(file), format!("{name}\n")).unwrap();
            std::fs::write(d.join("Dockerfile"), dockerfile).unwrap();
        }
        let remote_url = daemon.url("cfg.git");
        let mut site = Self {
            _dir: dir,
            work,
            bare,
            _daemon: daemon,
            remote_url,
            external_host: ext.to_string(),
            ns: ns.to_string(),
            log,
            scratch,
            releases: 0,
        };
        let trigger = |name: &str| {
            let shell = if fleet.failing.contains(&name) {
                format!(
                    "echo \"start $IMAGE_FACTORY_IDEMPOTENCY_KEY\" >> {}; echo boom >&2; exit 1",
                    site.log.display()
                )
            } else {
                site.build_shell(name)
            };
            format!("{{command: {{shell: '{shell}', timeout: 5m}}}}")
        };
        let mut yaml = format!(
            "version: 1\ndefaults:\n  rebuild: {{cascadeDelay: 0s, maxAttempts: 2}}\n  warehouse: {{interval: 1s}}\nimages:\n  - name: base\n    image: {ext}/{ns}/base:1\n    rebuild: {}\n  - name: helper\n    image: {ext}/{ns}/helper:1\n  - name: platform\n    image: {host}/{ns}/platform:1\n    source: {{path: platform}}\n    trigger: {}\n  - name: app1\n    image: {host}/{ns}/app1:1\n    source: {{path: app1}}\n    trigger: {}\n",
            fleet.base_rebuild,
            trigger("platform"),
            trigger("app1"),
        );
        if fleet.app2 {
            yaml.push_str(&format!(
                "  - name: app2\n    image: {host}/{ns}/app2:1\n    source: {{path: app2}}\n    trigger: {}\n",
                trigger("app2")
            ));
        }
        std::fs::write(site.work.join("images.yaml"), yaml).unwrap();
        std::fs::write(site.work.join(".gitignore"), ".cache/\n").unwrap();
        git(&site.work, &["add", "-A"]);
        git(&site.work, &["commit", "-q", "-m", "enroll the fleet"]);
        git(&site.work, &["push", "-q", "origin", "main"]);

        // The state before the factory: releases of the externals, images built once.
        site.release("base");
        push_base(
            r,
            &site.scratch,
            &site.repo("helper"),
            &format!("{ns} helper"),
        );
        site.build_now("platform");
        site.build_now("app1");
        if fleet.app2 {
            site.build_now("app2");
        }
        site
    }

    pub(crate) fn repo(&self, name: &str) -> String {
        format!("{}/{name}", self.ns)
    }

    pub(crate) fn reference(&self, name: &str) -> Reference {
        let host = if matches!(name, "base" | "helper") {
            &self.external_host
        } else {
            &registry().host
        };
        Reference::parse(&format!("{host}/{}:1", self.repo(name))).unwrap()
    }

    /// A new release of the external `name`; its digest.
    pub(crate) fn release(&mut self, name: &str) -> Digest {
        self.releases += 1;
        let content = format!("{} {name} release {}", self.ns, self.releases);
        push_base(registry(), &self.scratch, &self.repo(name), &content)
    }

    /// The build command of `name`: logs start/pushed around a buildah build of the
    /// pinned Dockerfile, in its own storage (app builds may run at once). With
    /// `CRASH_MID_BUILD=name` in its environment, it kills its whole session (the
    /// factory and every build) once its image is built but before the push.
    pub(crate) fn build_shell(&self, name: &str) -> String {
        let r = registry();
        let b = format!(
            "buildah --root {} --runroot {} --storage-driver vfs",
            r.scratch(&format!("buildah-root-{}-{name}", self.ns))
                .display(),
            r.scratch(&format!("buildah-runroot-{}-{name}", self.ns))
                .display()
        );
        let log = self.log.display();
        format!(
            "set -e; echo \"start $IMAGE_FACTORY_IDEMPOTENCY_KEY\" >> {log}; {b} bud -q --isolation chroot --tls-verify=false -f \"$IMAGE_FACTORY_DOCKERFILE\" -t \"$IMAGE_FACTORY_REFERENCE\" \"$IMAGE_FACTORY_CONTEXT\" >/dev/null; if [ \"$CRASH_MID_BUILD\" = \"$IMAGE_FACTORY_IMAGE\" ] && [ ! -e {log}.crashed ]; then touch {log}.crashed; pkill -KILL -s \"$(ps -o sid= -p $$ | tr -d \" \")\"; sleep 5; fi; {b} push -q --tls-verify=false \"$IMAGE_FACTORY_REFERENCE\"; echo \"pushed $IMAGE_FACTORY_IDEMPOTENCY_KEY\" >> {log}"
        )
    }

    /// Gives managed image `name` another trigger (a YAML flow mapping, e.g.
    /// `{kubernetesJob: {…}}`), commits the change with `message`, then records the
    /// baselines with one `run --once`.
    pub(crate) fn switch_trigger(&self, name: &str, trigger: &str, message: &str) {
        let yaml = std::fs::read_to_string(self.work.join("images.yaml")).unwrap();
        let marker = format!("    source: {{path: {name}}}\n    trigger: ");
        let start = yaml.find(&marker).unwrap() + marker.len();
        let end = start + yaml[start..].find('\n').unwrap();
        let yaml = format!("{}{trigger}{}", &yaml[..start], &yaml[end..]);
        std::fs::write(self.work.join("images.yaml"), yaml).unwrap();
        git(&self.work, &["commit", "-qam", message]);
        let out = self.cli(&["run", "--once", "--timeout", "5m"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Builds `name` outside the factory (its state before enrollment).
    pub(crate) fn build_now(&self, name: &str) {
        let d = self.work.join(name);
        run(Command::new("sh")
            .arg("-c")
            .arg(self.build_shell(name))
            .env("IMAGE_FACTORY_IDEMPOTENCY_KEY", format!("initial-{name}"))
            .env("IMAGE_FACTORY_IMAGE", name)
            .env("IMAGE_FACTORY_DOCKERFILE", d.join("Dockerfile"))
            .env("IMAGE_FACTORY_CONTEXT", &d)
            .env("IMAGE_FACTORY_REFERENCE", self.reference(name).to_string()));
    }

    /// `image-factory run ARGS` in the working copy, leading its own session.
    pub(crate) fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        self.spawn_command("run", args, env)
    }

    /// `image-factory COMMAND ARGS` (`run` or `controller`) in the working copy,
    /// leading its own session, logging to `.cache-run.log`.
    pub(crate) fn spawn_command(
        &self,
        command: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Child {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join(".cache-run.log"))
            .unwrap();
        let mut cmd = Command::new("setsid");
        cmd.arg(BIN)
            .arg(command)
            .args(["--config-check", "300ms", "--retry-backoff", "1s"])
            .args(args)
            .current_dir(&self.work)
            .env("IMAGE_FACTORY_CACHE", self.work.join(".cache"))
            .env("RUST_LOG", "info")
            .env_remove(image_factory::crash::ENV)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    }

    /// `image-factory ARGS` in the working copy, to completion.
    pub(crate) fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .current_dir(&self.work)
            .env("IMAGE_FACTORY_CACHE", self.work.join(".cache"))
            .env_remove(image_factory::crash::ENV)
            .output()
            .unwrap()
    }

    pub(crate) fn run_log(&self) -> String {
        std::fs::read_to_string(self.work.join(".cache-run.log")).unwrap_or_default()
    }

    pub(crate) fn runtime(&self, name: &str) -> Option<ImageRuntime> {
        state::read_runtime(
            &FileStore::read_only(self.work.join("state")),
            &self.reference(name),
        )
        .ok()
        .flatten()
    }

    /// Build log lines of the factory's builds (not the initial ones).
    pub(crate) fn builds(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|l| !l.contains("initial-"))
            .map(str::to_string)
            .collect()
    }

    pub(crate) fn wait(&self, what: &str, timeout: Duration, mut done: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\nbuilds:\n{}\nrun log:\n{}",
                self.builds().join("\n"),
                tail(&self.run_log(), 6000)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The rebuild of `image` that pins base `base` at `digest`.
    pub(crate) fn rebuild_on(
        &self,
        image: &str,
        base: &str,
        digest: &Digest,
    ) -> Option<image_factory::runtime::Rebuild> {
        self.runtime(image)?.rebuilds.into_iter().rev().find(|r| {
            r.bases
                .iter()
                .any(|b| b.image == base && b.digest() == Some(digest.as_str()))
        })
    }

    pub(crate) fn succeeded_on(&self, image: &str, base: &str, digest: &Digest) -> Option<Digest> {
        self.rebuild_on(image, base, digest)
            .filter(|r| r.phase == Phase::Succeeded)
            .and_then(|r| r.digest)
    }

    pub(crate) fn baselines(&self, names: &[&str]) -> bool {
        names
            .iter()
            .all(|n| self.runtime(n).is_some_and(|rt| rt.current.is_some()))
    }

    /// The remote's `main` checked out fresh.
    pub(crate) fn remote_checkout(&self) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        run(Command::new("git")
            .args(["clone", "-q"])
            .arg(&self.bare)
            .arg(d.path().join("c")));
        d
    }
}

pub(crate) fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let mut i = start;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

pub(crate) fn stop(child: &mut Child) -> std::process::ExitStatus {
    run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "run did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Files under `dir/state` (runtime records and analysis), relative.
pub(crate) fn state_files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    crate::support::snapshot(&root.join("state"))
        .into_iter()
        .filter(|(p, _)| !p.to_string_lossy().contains(".journal"))
        .collect()
}

/// Each key's `pushed` lines: at most one per key (no build reached the registry twice).
pub(crate) fn pushed_once(lines: &[String]) -> BTreeMap<String, usize> {
    let mut pushed = BTreeMap::new();
    for l in lines {
        if let Some(key) = l.strip_prefix("pushed ") {
            *pushed.entry(key.to_string()).or_insert(0) += 1;
        }
    }
    for (key, n) in &pushed {
        assert_eq!(*n, 1, "{key} pushed {n} times:\n{}", lines.join("\n"));
    }
    pushed
}

#[test]
fn a_base_update_is_held_then_cascades_once_through_the_chain_and_lands_in_git() {
    let mut site = Site::new(
        "run-chain",
        &Fleet {
            base_rebuild: "{delay: 8s}",
            failing: &[],
            app2: true,
            external_host: None,
        },
    );
    let mut factory = site.spawn(&["--push", "--listen", "127.0.0.1:0"], &[]);
    site.wait("baselines", Duration::from_secs(60), |s| {
        s.baselines(&["base", "helper", "platform", "app1", "app2"])
    });

    // A new base release: recorded and held, nothing built before the delay.
    let pushed_at = Instant::now();
    let v2 = site.release("base");
    site.wait("the hold", Duration::from_secs(20), |s| {
        s.rebuild_on("platform", "base", &v2)
            .is_some_and(|r| r.phase == Phase::Waiting)
    });
    let base_rt = site.runtime("base").unwrap();
    assert!(base_rt.updates.iter().any(|u| u.digest == v2));
    if pushed_at.elapsed() < Duration::from_secs(7) {
        assert!(
            site.builds().is_empty(),
            "built during the hold: {:?}",
            site.builds()
        );
    }

    // After the delay: platform, then both applications, each once.
    site.wait("the cascade", Duration::from_secs(240), |s| {
        let Some(p) = s.succeeded_on("platform", "base", &v2) else {
            return false;
        };
        s.succeeded_on("app1", "platform", &p).is_some()
            && s.succeeded_on("app2", "platform", &p).is_some()
    });
    assert!(
        pushed_at.elapsed() >= Duration::from_secs(8),
        "built before the 8s delay"
    );
    let p2 = site.succeeded_on("platform", "base", &v2).unwrap();
    let builds = site.builds();
    let pushed = pushed_once(&builds);
    assert_eq!(builds.len(), 6, "three builds, each once: {builds:?}");
    assert_eq!(pushed.len(), 3);

    // Every new image names its new parent in its base annotation.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let inspect = |name: &str| {
        rt.block_on(client().inspect(&site.reference(name), None))
            .unwrap()
    };
    let platform = inspect("platform");
    assert_eq!(platform.digest, p2.as_str());
    assert_eq!(platform.base.digest.as_deref(), Some(v2.as_str()));
    for app in ["app1", "app2"] {
        let i = inspect(app);
        assert_eq!(i.base.digest.as_deref(), Some(p2.as_str()), "{app}");
        assert_eq!(
            site.runtime(app)
                .unwrap()
                .rebuilds
                .last()
                .unwrap()
                .digest
                .as_ref()
                .map(Digest::as_str),
            Some(i.digest.as_str())
        );
    }
    assert_eq!(digest_of(registry(), &site.repo("platform")), p2);

    // Two releases within one hold: the newer supersedes the older in the
    // update history, and each builds once when it has soaked its own delay (an
    // older matured update is not starved by a newer one, as Renovate's
    // minimumReleaseAge); the applications are built on the newest platform.
    let v3 = site.release("base");
    let v3_at = Instant::now();
    site.wait("v3 recorded", Duration::from_secs(20), |s| {
        s.rebuild_on("platform", "base", &v3).is_some()
    });
    let v4 = site.release("base");
    site.wait("v4 built through", Duration::from_secs(240), |s| {
        let Some(p) = s.succeeded_on("platform", "base", &v4) else {
            return false;
        };
        s.succeeded_on("app1", "platform", &p).is_some()
            && s.succeeded_on("app2", "platform", &p).is_some()
    });
    assert!(v3_at.elapsed() >= Duration::from_secs(8));
    let history = site.runtime("base").unwrap().updates;
    let v3_update = history.iter().find(|u| u.digest == v3).unwrap();
    assert_eq!(v3_update.superseded_by.as_ref(), Some(&v4), "{history:?}");
    let on_v3 = site.rebuild_on("platform", "base", &v3).unwrap();
    assert!(
        on_v3
            .attempts
            .first()
            .is_some_and(|a| a.triggered_at >= on_v3.due_at),
        "{on_v3:?}"
    );
    let pushed = pushed_once(&site.builds());
    assert!(
        (4..=6).contains(&(pushed.len() - 3)),
        "platform twice, the applications once or twice: {pushed:?}"
    );

    // SIGTERM: a clean stop, everything pushed.
    let status = stop(&mut factory);
    assert!(
        status.success(),
        "{status:?}\n{}",
        tail(&site.run_log(), 4000)
    );
    let remote = site.remote_checkout();
    assert_eq!(
        state_files(&remote.path().join("c")),
        state_files(&site.work),
        "the remote has every state change"
    );
    let commits = git(&remote.path().join("c"), &["rev-list", "--count", "HEAD"]);
    let commits: usize = commits.trim().parse().unwrap();
    assert!(commits >= 3, "state commits reached the remote: {commits}");
    assert!(site.run_log().contains("serving /metrics"));
}

#[test]
fn once_passes_hold_across_runs_never_use_a_blocked_digest_and_a_failing_build_holds_back_only_itself(
) {
    let mut site = Site::new(
        "run-once",
        &Fleet {
            base_rebuild: "{delay: 2s}",
            failing: &["app1"],
            app2: true,
            external_host: None,
        },
    );
    let once = |site: &Site| {
        let out = site.cli(&["run", "--once", "--retry-backoff", "1s", "--timeout", "5m"]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Pass 1: baselines only.
    let (code, stdout, stderr) = once(&site);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(site.baselines(&["base", "helper", "platform", "app1", "app2"]));

    // A dry run decides without writing.
    let v2 = site.release("base");
    let before = state_files(&site.work);
    let dry = site.cli(&["run", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(0));
    let dry_out = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry_out.contains(&format!("recorded update {v2}")),
        "{dry_out}"
    );
    assert!(dry_out.contains("dry run: nothing written"));
    assert_eq!(state_files(&site.work), before, "--dry-run wrote state");

    // The same update as recorded Kargo Freight, without the registry watcher.
    let freight = site.work.join(".cache-freight");
    std::fs::create_dir_all(&freight).unwrap();
    let repo_url = site.reference("base").repo_url();
    std::fs::write(
        freight.join("f.yaml"),
        format!("apiVersion: kargo.akuity.io/v1alpha1\nkind: Freight\nmetadata:\n  name: f-base-2\n  namespace: images\norigin: {{kind: Warehouse, name: base}}\nimages:\n- repoURL: {repo_url}\n  tag: '1'\n  digest: {v2}\ndiscoveredAt: '2026-01-01T00:00:00Z'\n"),
    )
    .unwrap();
    let replay = site.cli(&[
        "run",
        "--dry-run",
        "--no-watch",
        "--freight-dir",
        freight.to_str().unwrap(),
    ]);
    let replay_out = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(replay.status.code(), Some(0), "{replay_out}");
    assert!(
        replay_out.contains(&format!("recorded update {v2}")),
        "{replay_out}"
    );
    assert_eq!(state_files(&site.work), before, "--dry-run wrote state");

    // Pass 2: v2 recorded and held; v2 is then blocked.
    let (code, stdout, _) = once(&site);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("held "),
        "{stdout}\n{:#?}\n{:#?}",
        site.runtime("base"),
        site.runtime("platform")
    );
    let blocked = site.cli(&[
        "block",
        &format!("{}@{v2}", site.reference("base")),
        "--reason",
        "breaks TLS",
        "--by",
        "test",
    ]);
    assert!(
        blocked.status.success(),
        "{}",
        String::from_utf8_lossy(&blocked.stderr)
    );

    // Pass 3 after v3 matured: platform is built on v3, app2 follows, app1 fails twice.
    let v3 = site.release("base");
    let (code, _, _) = once(&site);
    assert_eq!(code, Some(0));
    std::thread::sleep(Duration::from_secs(3));
    let (code, stdout, stderr) = once(&site);
    assert_eq!(
        code,
        Some(1),
        "a failed build fails the pass\n{stdout}{stderr}"
    );
    let p3 = site
        .succeeded_on("platform", "base", &v3)
        .unwrap_or_else(|| panic!("{stdout}{stderr}"));
    assert!(site
        .rebuild_on("platform", "base", &v2)
        .is_none_or(|r| r.phase != Phase::Succeeded));
    assert!(
        site.succeeded_on("app2", "platform", &p3).is_some(),
        "{stdout}"
    );
    let failed = site.rebuild_on("app1", "platform", &p3).unwrap();
    assert_eq!(failed.phase, Phase::Failed, "{failed:?}");
    assert_eq!(failed.attempts.len(), 2, "retried once: {failed:?}");
    let app1_starts = site
        .builds()
        .iter()
        .filter(|l| l.contains(failed.id.as_str()))
        .count();
    assert_eq!(app1_starts, 2);
    // No build ever pinned the blocked v2.
    assert!(site
        .runtime("platform")
        .unwrap()
        .rebuilds
        .iter()
        .all(|r| r.phase != Phase::Succeeded
            || r.bases.iter().all(|b| b.digest() != Some(v2.as_str()))));

    // `status` names the failure and the block.
    let status = site.cli(&["status", "--output", "json"]);
    assert_eq!(status.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let failures = report["failures"].as_array().unwrap();
    assert!(
        failures.iter().any(|f| f["id"] == failed.id.as_str()),
        "{report:#}"
    );
    assert!(
        report["blocked"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["digest"] == v2.as_str()),
        "{report:#}"
    );
    let text = site.cli(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("FAILURES (1)"), "{text}");
}

#[test]
fn a_throttling_registry_and_a_concurrent_git_writer_delay_the_cascade_but_lose_nothing() {
    // The externals are enrolled behind a fault proxy: every watcher request for them,
    // and the builds' pulls of `base`, pass through it.
    let proxy = FaultProxy::start(&registry().host);
    let mut site = Site::new(
        "run-faults",
        &Fleet {
            base_rebuild: "{delay: 3s}",
            failing: &[],
            app2: false,
            external_host: Some(&proxy.host),
        },
    );
    let mut factory = site.spawn(&["--push"], &[]);
    site.wait("baselines", Duration::from_secs(60), |s| {
        s.baselines(&["base", "helper", "platform", "app1"])
    });

    // The registry answers the base's manifest requests with 503 and 429 (with
    // Retry-After) for a while: more failures in a row than one request's retries,
    // so whole watcher passes fail.
    let manifests = format!("/{}/manifests/", site.repo("base"));
    let faults = 24;
    for i in 0..faults {
        let fault = if i % 3 == 2 {
            Fault::Status(429, Some(1))
        } else {
            Fault::Status(503, None)
        };
        proxy.inject(&manifests, fault);
    }
    proxy.reset_seen();
    let v2 = site.release("base");

    // Meanwhile another writer pushes to the same branch every 700 ms until the
    // cascade is done (rebasing when the factory pushed first).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let url = site.remote_url.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let d = tempfile::tempdir().unwrap();
            let c = d.path().join("c");
            run(Command::new("git").args(["clone", "-q", &url]).arg(&c));
            std::fs::create_dir_all(c.join("notes")).unwrap();
            let mut n = 0;
            while n < 3 || !done.load(std::sync::atomic::Ordering::SeqCst) {
                std::fs::write(c.join(format!("notes/{n}.txt")), format!("note {n}\n")).unwrap();
                git(&c, &["add", "-A"]);
                git(&c, &["commit", "-q", "-m", &format!("note {n}")]);
                let pushed = (0..20).any(|_| {
                    let ok = Command::new("git")
                        .args(["push", "-q", "origin", "HEAD:main"])
                        .current_dir(&c)
                        .stderr(Stdio::null())
                        .status()
                        .unwrap()
                        .success();
                    if !ok {
                        git(&c, &["pull", "-q", "--rebase", "origin", "main"]);
                    }
                    ok
                });
                assert!(pushed, "the other writer could not push note {n}");
                n += 1;
                std::thread::sleep(Duration::from_millis(700));
            }
            n
        })
    };

    site.wait("the cascade", Duration::from_secs(240), |s| {
        let Some(p) = s.succeeded_on("platform", "base", &v2) else {
            return false;
        };
        s.succeeded_on("app1", "platform", &p).is_some()
    });
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let notes = writer.join().unwrap();
    assert!(
        factory.try_wait().unwrap().is_none(),
        "run exited under faults"
    );
    // Every fault was served, passes failed and were retried at the next interval.
    let requested = proxy.count("HEAD", &manifests) + proxy.count("GET", &manifests);
    assert!(requested > faults, "{requested} manifest requests");
    let log = site.run_log();
    assert!(log.contains("source problem"), "{}", tail(&log, 4000));
    // One update, one rebuild each, nothing failed.
    let base = site.runtime("base").unwrap();
    assert_eq!(
        base.updates.iter().filter(|u| u.digest == v2).count(),
        1,
        "{:?}",
        base.updates
    );
    let builds = site.builds();
    assert_eq!(pushed_once(&builds).len(), 2, "{builds:?}");
    for name in ["platform", "app1"] {
        let rt = site.runtime(name).unwrap();
        assert_eq!(rt.rebuilds.len(), 1, "{name}: {:?}", rt.rebuilds);
        assert_eq!(rt.rebuilds[0].phase, Phase::Succeeded);
    }

    // The other writer's commits and the factory's state are both on the remote, and
    // the factory's checkout has the other writer's files.
    let status = stop(&mut factory);
    assert!(
        status.success(),
        "{status:?}\n{}",
        tail(&site.run_log(), 4000)
    );
    let remote = site.remote_checkout();
    let c = remote.path().join("c");
    assert_eq!(state_files(&c), state_files(&site.work), "remote state");
    for n in 0..notes {
        assert!(c.join(format!("notes/{n}.txt")).exists(), "note {n} lost");
    }
    assert!(
        site.work.join("notes/0.txt").exists(),
        "the factory never integrated the other writer's commits"
    );
    let subjects = git(&c, &["log", "--format=%s"]);
    assert_eq!(
        subjects.lines().filter(|l| l.starts_with("note ")).count(),
        notes
    );
    eprintln!("faults: {requested} manifest requests for {faults} faults, {notes} commits by the other writer");
}

#[test]
fn with_the_fake_clock_the_default_seven_day_hold_passes_in_seconds() {
    let mut site = Site::new(
        "run-clock",
        &Fleet {
            // No delay: the default hold of 7 days.
            base_rebuild: "{}",
            failing: &[],
            app2: false,
            external_host: None,
        },
    );
    let clock = site.work.join(".cache-clock");
    std::fs::write(&clock, "").unwrap();
    let mut factory = site.spawn(
        &["--push", "--clock-offset-file", clock.to_str().unwrap()],
        &[],
    );
    site.wait("baselines", Duration::from_secs(60), |s| {
        s.baselines(&["base", "helper", "platform", "app1"])
    });
    let v2 = site.release("base");
    site.wait("the hold", Duration::from_secs(20), |s| {
        s.rebuild_on("platform", "base", &v2)
            .is_some_and(|r| r.phase == Phase::Waiting)
    });
    let held = site.rebuild_on("platform", "base", &v2).unwrap();
    let update = site
        .runtime("base")
        .unwrap()
        .updates
        .into_iter()
        .find(|u| u.digest == v2)
        .unwrap();
    let hold = held.due_at.duration_since(update.discovered_at).as_secs();
    assert!(
        (7 * 86_400..=7 * 86_400 + 60).contains(&hold),
        "held {hold} s: {held:?}"
    );

    // Six days and 23 hours later: still held.
    std::fs::write(&clock, "6d 23h").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(site.builds().is_empty(), "built early: {:?}", site.builds());
    assert_eq!(
        site.rebuild_on("platform", "base", &v2).unwrap().phase,
        Phase::Waiting
    );

    // Past the seventh day: the cascade runs, each image once.
    std::fs::write(&clock, "7d 1m").unwrap();
    site.wait("the cascade", Duration::from_secs(240), |s| {
        let Some(p) = s.succeeded_on("platform", "base", &v2) else {
            return false;
        };
        s.succeeded_on("app1", "platform", &p).is_some()
    });
    let built = site.rebuild_on("platform", "base", &v2).unwrap();
    assert!(built.attempts[0].triggered_at >= built.due_at, "{built:?}");
    assert_eq!(pushed_once(&site.builds()).len(), 2);
    let status = stop(&mut factory);
    assert!(status.success(), "{status:?}");
    let remote = site.remote_checkout();
    assert_eq!(
        state_files(&remote.path().join("c")),
        state_files(&site.work)
    );
    assert!(site.run_log().contains("clock offset changed"));
}

#[test]
fn decisions_made_while_run_runs_are_applied_by_it_and_never_overwritten() {
    let mut site = Site::new(
        "run-inbox",
        &Fleet {
            base_rebuild: "{delay: 1h}",
            failing: &[],
            app2: false,
            external_host: None,
        },
    );
    let mut factory = site.spawn(&["--push"], &[]);
    site.wait("baselines", Duration::from_secs(60), |s| {
        s.baselines(&["base", "helper", "platform", "app1"])
    });
    let initial_app1 = site.runtime("app1").unwrap().current.unwrap().digest;

    // One owner per state folder: a second factory refuses to start.
    let second = site.cli(&["run", "--once"]);
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&format!(
            "owned by a running image-factory (pid {})",
            factory.id()
        )),
        "{err}"
    );

    // An update held for an hour, expedited by a person: the factory applies it.
    let v2 = site.release("base");
    site.wait("the hold", Duration::from_secs(20), |s| {
        s.rebuild_on("platform", "base", &v2)
            .is_some_and(|r| r.phase == Phase::Waiting)
    });
    let out = site.cli(&[
        "expedite",
        "base",
        "--reason",
        "CVE-2026-0001",
        "--by",
        "sec",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("recorded by the running factory"),
        "{stdout}"
    );
    site.wait("the expedited cascade", Duration::from_secs(180), |s| {
        let Some(p) = s.succeeded_on("platform", "base", &v2) else {
            return false;
        };
        s.succeeded_on("app1", "platform", &p).is_some()
    });

    // A refused decision is answered with the engine's reason and exit 1.
    let out = site.cli(&["retry", "no-such-rebuild", "--reason", "x", "--by", "sec"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // A block of the next release, then a later release: the factory writes the base
    // record again, and both decisions are still in it.
    let v3 = site.release("base");
    site.wait("v3 recorded", Duration::from_secs(20), |s| {
        s.runtime("base")
            .is_some_and(|rt| rt.updates.iter().any(|u| u.digest == v3))
    });
    let target = format!("{}@{v3}", site.reference("base"));
    let out = site.cli(&["block", &target, "--reason", "breaks TLS", "--by", "sec"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v4 = site.release("base");
    site.wait("v4 recorded", Duration::from_secs(20), |s| {
        s.runtime("base")
            .is_some_and(|rt| rt.updates.iter().any(|u| u.digest == v4))
    });
    let base = site.runtime("base").unwrap();
    let expedited = base.updates.iter().find(|u| u.digest == v2).unwrap();
    assert_eq!(
        expedited.expedited.as_ref().map(|m| m.by.as_str()),
        Some("sec"),
        "{base:?}"
    );
    assert!(
        base.blocks.iter().any(|b| b.digest == v3),
        "the block was lost: {base:?}"
    );

    // A rollback: the CLI moves the tag, the factory records it.
    let out = site.cli(&[
        "rollback",
        "app1",
        "--to",
        initial_app1.as_str(),
        "--reason",
        "regression",
        "--by",
        "sec",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{out:?}");
    assert!(
        stdout.contains("recorded by the running factory"),
        "{stdout}"
    );
    let app1 = site.runtime("app1").unwrap();
    assert_eq!(
        app1.current.as_ref().map(|c| &c.digest),
        Some(&initial_app1)
    );
    assert_eq!(app1.rollbacks.len(), 1);
    assert_eq!(digest_of(registry(), &site.repo("app1")), initial_app1);

    let status = stop(&mut factory);
    assert!(status.success(), "{status:?}");
    let remote = site.remote_checkout();
    let c = remote.path().join("c");
    assert_eq!(state_files(&c), state_files(&site.work));
    let log = git(&c, &["log", "--format=%B"]);
    assert!(log.contains("Image-Factory-Source: person/sec"), "{log}");
    // Not running any more: a decision is written by the CLI itself.
    let out = site.cli(&["unblock", &target, "--by", "sec"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains("running factory"), "{stdout}");
}

#[test]
fn recorded_kargo_freight_drives_a_built_cascade_once_and_never_again() {
    let mut site = Site::new(
        "run-freight",
        &Fleet {
            base_rebuild: "{delay: 1h}",
            failing: &[],
            app2: false,
            external_host: None,
        },
    );
    let once = |site: &Site, args: &[&str]| {
        let mut all = vec!["run", "--once", "--timeout", "5m"];
        all.extend_from_slice(args);
        let out = site.cli(&all);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = once(&site, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(site.baselines(&["base", "helper", "platform", "app1"]));

    // Kargo finds a new base digest; the factory hears of it only from the Freight,
    // without watching the registry, and passes the 1h hold two hours later (on the
    // shifted clock).
    let v2 = site.release("base");
    let freight = site.work.join(".cache-freight");
    std::fs::create_dir_all(&freight).unwrap();
    let discovered = jiff::Timestamp::now();
    let clock = site.work.join(".cache-clock");
    std::fs::write(&clock, "2h").unwrap();
    std::fs::write(
        freight.join("freight.json"),
        serde_json::json!({
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "List",
            "items": [{
                "apiVersion": "kargo.akuity.io/v1alpha1",
                "kind": "Freight",
                "metadata": {"name": "0f1e2d3c4b5a69788796a5b4c3d2e1f001122334", "namespace": "images"},
                "alias": "brave-otter",
                "origin": {"kind": "Warehouse", "name": "base"},
                "images": [{"repoURL": site.reference("base").repo_url(), "tag": "1", "digest": v2.as_str()}],
                "discoveredAt": discovered.to_string(),
            }],
        })
        .to_string(),
    )
    .unwrap();
    let replay = [
        "--no-watch",
        "--freight-dir",
        freight.to_str().unwrap(),
        "--clock-offset-file",
        clock.to_str().unwrap(),
    ];
    let (code, text) = once(&site, &replay);
    assert_eq!(code, Some(0), "{text}");
    let p2 = site
        .succeeded_on("platform", "base", &v2)
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        site.succeeded_on("app1", "platform", &p2).is_some(),
        "{text}"
    );
    let update = site
        .runtime("base")
        .unwrap()
        .updates
        .into_iter()
        .find(|u| u.digest == v2)
        .unwrap();
    assert_eq!(
        update.source,
        image_factory::runtime::UpdateSource::Freight {
            name: "0f1e2d3c4b5a69788796a5b4c3d2e1f001122334".to_string(),
            alias: Some("brave-otter".to_string()),
            warehouse: Some("base".to_string()),
        }
    );
    assert_eq!(update.discovered_at.as_second(), discovered.as_second());

    // The Freight is still there on the next pass (Kargo keeps it): nothing again.
    let builds = site.builds().len();
    let (code, text) = once(&site, &replay);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        site.builds().len(),
        builds,
        "rebuilt from surviving Freight"
    );
    assert_eq!(pushed_once(&site.builds()).len(), 2);
}

/// Crash points of the factory (see `image_factory::crash`) and their passage counts,
/// in the order a cascade passes them; `mid-build:IMAGE` kills the session from inside
/// a build, after the image is built and before it is pushed.
const CRASH_POINTS: &[&str] = &[
    "recovered:1",
    "observed:1",
    "decided:1",
    "journaled:1",
    "submitted:1",
    "git-committed:1",
    "git-pushed:1",
    "triggering:1",
    "started:1",
    "mid-build:platform",
    "built:1",
    "decided:3",
    "journaled:3",
    "outcome:1",
    "triggering:2",
    "started:2",
    "journaled:5",
    "mid-build:app1",
    "built:2",
    "outcome:2",
    "git-committed:3",
    "submitted:6",
    "decided:7",
];

#[test]
fn killed_at_any_point_of_a_cascade_nothing_is_lost_or_built_twice() {
    let mut site = Site::new(
        "run-crash",
        &Fleet {
            base_rebuild: "{delay: 0s}",
            failing: &[],
            app2: false,
            external_host: None,
        },
    );
    let mut factory = site.spawn(&["--push"], &[]);
    site.wait("baselines", Duration::from_secs(60), |s| {
        s.baselines(&["base", "helper", "platform", "app1"])
    });
    stop(&mut factory);

    let started = Instant::now();
    let mut reached = Vec::new();
    for point in CRASH_POINTS {
        let release = site.release("base");
        let env: Vec<(&str, &str)> = match point.strip_prefix("mid-build:") {
            Some(image) => vec![("CRASH_MID_BUILD", image)],
            None => vec![(image_factory::crash::ENV, point)],
        };
        let _ = std::fs::remove_file(format!("{}.crashed", site.log.display()));
        let mut doomed = site.spawn(&["--push"], &env);
        match wait_exit(&mut doomed, Duration::from_secs(90)) {
            Some(status) if !status.success() => reached.push(*point),
            Some(status) => panic!("{point}: exited {status:?} without crashing"),
            None => {
                // The cascade finished without passing the point: not a crash.
                stop(&mut doomed);
            }
        }
        // Restart: the cascade completes exactly once.
        let ready = site.run_log().matches("watching registries").count();
        let mut again = site.spawn(&["--push"], &[]);
        site.wait("the restart", Duration::from_secs(60), |s| {
            s.run_log().matches("watching registries").count() > ready
        });
        site.wait(
            &format!("the cascade after a crash at {point}"),
            Duration::from_secs(180),
            |s| {
                let Some(p) = s.succeeded_on("platform", "base", &release) else {
                    return false;
                };
                s.succeeded_on("app1", "platform", &p).is_some()
            },
        );
        let status = stop(&mut again);
        assert!(status.success(), "{point}: {status:?}");
        for name in ["platform", "app1"] {
            let rt = site.runtime(name).unwrap();
            assert!(
                rt.rebuilds
                    .iter()
                    .all(|r| !r.phase.is_in_flight() && r.phase != Phase::Failed),
                "{point}: {name} {:?}",
                rt.rebuilds
            );
        }
    }
    let took = started.elapsed();
    assert!(
        reached.len() >= 20,
        "crashed at {} points: {reached:?}",
        reached.len()
    );

    // No build reached the registry twice; every release was built exactly once.
    let builds = site.builds();
    let pushed = pushed_once(&builds);
    let platform = site.runtime("platform").unwrap();
    let succeeded: Vec<_> = platform
        .rebuilds
        .iter()
        .filter(|r| r.phase == Phase::Succeeded)
        .collect();
    let mut on_base: BTreeMap<String, usize> = BTreeMap::new();
    for r in &succeeded {
        for b in &r.bases {
            if b.image == "base" {
                *on_base.entry(b.pinned.clone()).or_insert(0) += 1;
            }
        }
    }
    assert!(on_base.values().all(|&n| n == 1), "{on_base:?}");
    assert!(pushed.len() <= 2 * CRASH_POINTS.len(), "{pushed:?}");

    // Git: the remote has exactly the state, and no commit repeats another's change.
    let remote = site.remote_checkout();
    let c = remote.path().join("c");
    assert_eq!(state_files(&c), state_files(&site.work));
    let trees = git(&c, &["log", "--format=%T"]);
    let trees: Vec<&str> = trees.lines().collect();
    for pair in trees.windows(2) {
        assert_ne!(pair[0], pair[1], "an empty (duplicate) commit");
    }
    eprintln!(
        "crash test: {} points reached of {}, {} builds pushed, {:.0?}",
        reached.len(),
        CRASH_POINTS.len(),
        pushed.len(),
        took
    );
}

/// `run --repo`: the factory clones the configuration repository itself (no checkout
/// made for it), records and pushes from that checkout under its own author, and takes
/// in a change merged upstream while it runs (the config check then reloads it); an
/// unreachable `--repo` fails start-up with the URL named and its credentials kept out.
#[test]
fn run_clones_its_configuration_repository_and_takes_in_changes_merged_upstream() {
    let site = Site::new(
        "cfgrepo",
        &Fleet {
            base_rebuild: "{delay: 1h}",
            failing: &[],
            app2: false,
            external_host: None,
        },
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let checkout = elsewhere.path().join("checkout");
    let spawn = |args: &[&str]| {
        let log = std::fs::File::create(elsewhere.path().join("run.log")).unwrap();
        Command::new("setsid")
            .arg(BIN)
            .args(["run", "--config-check", "300ms"])
            .args(args)
            .current_dir(elsewhere.path())
            .env("IMAGE_FACTORY_CACHE", elsewhere.path().join(".cache"))
            .env("RUST_LOG", "info")
            .env_remove(image_factory::crash::ENV)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let run_log = || std::fs::read_to_string(elsewhere.path().join("run.log")).unwrap_or_default();
    let recorded = |name: &str| {
        state::read_runtime(
            &FileStore::read_only(checkout.join("state")),
            &site.reference(name),
        )
        .ok()
        .flatten()
        .is_some_and(|rt| rt.current.is_some())
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\nrun log:\n{}",
                tail(&run_log(), 6000)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    let mut child = spawn(&[
        "--repo",
        &site.remote_url,
        "--checkout",
        "checkout",
        "--git-sync",
        "1s",
        "--git-author",
        "Factory Robot <robot@example.com>",
    ]);
    wait("the baselines in the factory's own checkout", &|| {
        ["base", "helper", "platform", "app1"]
            .iter()
            .all(|n| recorded(n))
    });
    assert!(
        checkout.join("images.yaml").is_file() && checkout.join("platform/Dockerfile").is_file(),
        "the checkout holds the configuration repository"
    );

    // A pull request enrolling another external image is merged upstream.
    push_base(
        registry(),
        &site.scratch,
        &site.repo("extra"),
        "cfgrepo extra release",
    );
    git(&site.work, &["pull", "-q", "--rebase", "origin", "main"]);
    let mut yaml = std::fs::read_to_string(site.work.join("images.yaml")).unwrap();
    yaml.push_str(&format!(
        "  - name: extra\n    image: {}/{}:1\n",
        registry().host,
        site.repo("extra")
    ));
    std::fs::write(site.work.join("images.yaml"), yaml).unwrap();
    git(&site.work, &["commit", "-q", "-am", "enroll extra"]);
    git(&site.work, &["push", "-q", "origin", "main"]);

    wait(
        "the merged enrollment taken in and its baseline recorded",
        &|| recorded("extra"),
    );
    // …and pushed: the remote has the record, committed by the factory's author.
    wait("the new record on the remote", &|| {
        let c = site.remote_checkout();
        state::read_runtime(
            &FileStore::read_only(c.path().join("c/state")),
            &site.reference("extra"),
        )
        .ok()
        .flatten()
        .is_some()
    });
    let c = site.remote_checkout();
    let authors = git(
        &c.path().join("c"),
        &["log", "--format=%an <%ae>", "-n", "20"],
    );
    assert!(
        authors.contains("Factory Robot <robot@example.com>"),
        "the factory's commits carry --git-author:\n{authors}"
    );
    assert!(
        authors
            .lines()
            .next()
            .is_some_and(|a| a.contains("Factory Robot")),
        "the newest commit is the factory's:\n{authors}"
    );
    let status = stop(&mut child);
    assert!(
        status.success(),
        "run --repo exits 0 on SIGTERM:\n{}",
        tail(&run_log(), 4000)
    );

    // An unreachable repository: start-up fails, naming the remote without the secret.
    let mut child = spawn(&[
        "--repo",
        "https://robot:s3cret-token@127.0.0.1:9/cfg.git",
        "--checkout",
        "unreachable",
    ]);
    let status = wait_exit(&mut child, Duration::from_secs(60)).expect("run exits");
    let log = run_log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("127.0.0.1:9"), "names the remote:\n{log}");
    assert!(
        !log.contains("s3cret-token"),
        "never prints the token:\n{log}"
    );
}
