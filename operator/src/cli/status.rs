//! `image-factory status`: what the state folder says now — holds, rebuilds by phase,
//! in flight, failures, blocked digests and stale images — as a table or JSON.
//!
//! Reads only the runtime records (`state/runtime/**.yaml`), never a registry, so it is
//! instant and safe next to a running factory (which writes each file by rename).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use jiff::Timestamp;
use serde::Serialize;

use crate::runtime::{ImageRuntime, Phase};
use crate::workload::{Catalog, KubeSource, ManifestSource, Row, Source, Verdict, Workload};

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The state folder, relative to the working directory.
    #[arg(long, default_value = "state")]
    pub state_dir: PathBuf,
    /// `text` (tables) or `json` (one object; the shape of [`Status`]).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Print again every `--interval` until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Refresh interval of `--watch` (humantime: `2s`, `1m`).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// The time to compute "due in" against (RFC 3339), for tests; default now.
    #[arg(long, hide = true)]
    pub now: Option<Timestamp>,
    /// Report running workloads instead: each container's image mapped onto the state,
    /// with its running and latest digest and whether it is stale. Reads the cluster
    /// (`--kubeconfig`, `--context`, `--namespace`) unless `--manifests` is given.
    #[arg(long)]
    pub workloads: bool,
    /// Where workloads are read from.
    #[command(flatten)]
    pub source: WorkloadSourceArgs,
    /// With `--workloads`: exit 1 when a container is stale (for pull-request checks).
    #[arg(long, requires = "workloads")]
    pub fail_on_stale: bool,
}

/// Where `--workloads` reads workloads from (`status`, `plan`, `graph`): rendered
/// manifests, else a cluster.
#[derive(Debug, Clone, Default, Args)]
pub struct WorkloadSourceArgs {
    /// With `--workloads`: rendered manifests instead of a cluster — files, folders, or
    /// kustomization folders (rendered with `kubectl kustomize`). Repeatable.
    #[arg(long, value_name = "PATH", requires = "workloads")]
    pub manifests: Vec<PathBuf>,
    /// With `--workloads`: the kubeconfig (default: `$KUBECONFIG`, `~/.kube/config`,
    /// in-cluster).
    #[arg(
        long,
        value_name = "PATH",
        requires = "workloads",
        conflicts_with = "manifests"
    )]
    pub kubeconfig: Option<PathBuf>,
    /// With `--workloads`: the kubeconfig context (default: the current one).
    #[arg(long, requires = "workloads", conflicts_with = "manifests")]
    pub context: Option<String>,
    /// With `--workloads`: namespaces to read (repeatable; default: all).
    #[arg(
        long = "namespace",
        short = 'n',
        requires = "workloads",
        conflicts_with = "manifests"
    )]
    pub namespaces: Vec<String>,
}

impl WorkloadSourceArgs {
    /// Reads the workloads: the manifests when given, else the cluster.
    ///
    /// # Errors
    ///
    /// The source's error, as text.
    pub fn workloads(&self) -> Result<Vec<Workload>, String> {
        let objects = if self.manifests.is_empty() {
            let Some(rt) = super::async_runtime() else {
                return Err("no async runtime".to_string());
            };
            rt.block_on(async {
                let client =
                    KubeSource::client(self.kubeconfig.as_deref(), self.context.as_deref()).await?;
                KubeSource::new(client, self.namespaces.clone())
                    .objects()
                    .await
            })
        } else {
            ManifestSource::new(self.manifests.clone()).read()
        }
        .map_err(|e| e.to_string())?;
        Ok(crate::workload::collapse(&objects))
    }
}

/// Output format of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables for people.
    Text,
    /// JSON for scripts.
    Json,
}

/// What `status` reports; every list is sorted by image reference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Rebuilds waiting for their hold (no attempt yet).
    pub holds: Vec<Hold>,
    /// How many rebuilds are in each phase, over every record.
    pub phases: BTreeMap<String, usize>,
    /// Rebuilds Triggered or Running.
    pub in_flight: Vec<Line>,
    /// Failed rebuilds, and Waiting ones retrying after a failed attempt.
    pub failures: Vec<Line>,
    /// Blocked digests.
    pub blocked: Vec<Blocked>,
    /// Managed images whose last successful rebuild pins a base digest that is not the
    /// base's current digest.
    pub stale: Vec<Stale>,
    /// Updates whose signature was not verified under their image's `verify:` policy
    /// (skipped under `enforce`, used under `warn`).
    pub unverified: Vec<Unverified>,
    /// Runtime files that could not be read (path: reason).
    pub problems: Vec<String>,
}

/// A held rebuild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    /// The managed image's reference.
    pub image: String,
    /// Rebuild id.
    pub id: String,
    /// The bases it will be built on (`REF@DIGEST`).
    pub bases: Vec<String>,
    /// When it is due (RFC 3339).
    pub due_at: String,
    /// Seconds until due; 0 when already due (a held-back or approval wait).
    pub due_in_secs: i64,
    /// Why it waits, as recorded.
    pub reason: Option<String>,
}

/// A rebuild named with its phase and reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    /// The managed image's reference.
    pub image: String,
    /// Rebuild id.
    pub id: String,
    /// Its phase.
    pub phase: Phase,
    /// Attempts made.
    pub attempts: usize,
    /// Recorded reason (the last failure's for failures).
    pub reason: Option<String>,
}

/// A blocked digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blocked {
    /// The image's reference.
    pub image: String,
    /// The digest.
    pub digest: String,
    /// Who and why.
    pub by: String,
    /// Why.
    pub reason: String,
}

/// A managed image built on a base digest that is no longer the base's current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stale {
    /// The managed image's reference.
    pub image: String,
    /// The base reference.
    pub base: String,
    /// The digest the last successful rebuild pinned.
    pub built_on: String,
    /// The base's current digest.
    pub current: String,
    /// When the current digest was first seen (RFC 3339).
    pub current_since: String,
}

/// An update whose signature check did not verify it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unverified {
    /// The image's reference.
    pub image: String,
    /// The update's digest.
    pub digest: String,
    /// `unsigned` or `invalid`.
    pub verdict: crate::runtime::SignatureVerdict,
    /// The policy's mode: `enforce` (the update is skipped) or `warn` (used anyway).
    pub mode: crate::runtime::VerifyMode,
    /// Where signatures were looked for, or why none verified.
    pub detail: String,
    /// When the update was discovered (RFC 3339).
    pub discovered_at: String,
}

/// Computes the status of `records` (runtime records by reference) at `now`. Pure.
pub fn status(records: &BTreeMap<String, ImageRuntime>, now: Timestamp) -> Status {
    let mut out = Status::default();
    for (reference, rt) in records {
        for r in &rt.rebuilds {
            *out.phases.entry(phase_name(r.phase)).or_insert(0) += 1;
            let line = || Line {
                image: reference.clone(),
                id: r.id.to_string(),
                phase: r.phase,
                attempts: r.attempts.len(),
                reason: r
                    .attempts
                    .last()
                    .and_then(|a| a.reason.clone())
                    .or_else(|| r.reason.clone()),
            };
            match r.phase {
                Phase::Waiting if r.attempts.is_empty() => out.holds.push(Hold {
                    image: reference.clone(),
                    id: r.id.to_string(),
                    bases: r.bases.iter().map(|b| b.pinned.clone()).collect(),
                    due_at: format!("{:.0}", r.due_at),
                    due_in_secs: r.due_at.duration_since(now).as_secs().max(0),
                    reason: r.reason.clone(),
                }),
                Phase::Waiting => out.failures.push(line()),
                Phase::Triggered | Phase::Running => out.in_flight.push(line()),
                Phase::Failed => out.failures.push(line()),
                _ => {}
            }
        }
        for u in &rt.updates {
            let Some(check) = u
                .signature
                .as_ref()
                .filter(|c| c.verdict != crate::runtime::SignatureVerdict::Verified)
            else {
                continue;
            };
            out.unverified.push(Unverified {
                image: reference.clone(),
                digest: u.digest.to_string(),
                verdict: check.verdict,
                mode: check.mode,
                detail: check.detail.clone(),
                discovered_at: format!("{:.0}", u.discovered_at),
            });
        }
        for b in &rt.blocks {
            out.blocked.push(Blocked {
                image: reference.clone(),
                digest: b.digest.to_string(),
                by: b.by.clone(),
                reason: b.reason.clone(),
            });
        }
        let Some(success) = rt.last_success() else {
            continue;
        };
        for pinned in &success.bases {
            let Some((base_ref, digest)) = pinned.pinned.split_once('@') else {
                continue;
            };
            let Some(current) = records.get(base_ref).and_then(|b| b.current.as_ref()) else {
                continue;
            };
            if current.digest.as_str() != digest {
                out.stale.push(Stale {
                    image: reference.clone(),
                    base: base_ref.to_string(),
                    built_on: digest.to_string(),
                    current: current.digest.to_string(),
                    current_since: format!("{:.0}", current.first_seen),
                });
            }
        }
    }
    out
}

fn phase_name(p: Phase) -> String {
    format!("{p:?}")
}

pub use crate::state::read_all_runtime as read_records;

fn render_text(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(t, "HOLDS ({})", s.holds.len());
    for h in &s.holds {
        let due = humantime::format_duration(Duration::from_secs(
            u64::try_from(h.due_in_secs).unwrap_or(0),
        ));
        let _ = writeln!(
            t,
            "  {}  {}  on {}  due {} (in {due}){}",
            h.image,
            h.id,
            h.bases.join(", "),
            h.due_at,
            h.reason
                .as_deref()
                .map(|r| format!("  {r}"))
                .unwrap_or_default()
        );
    }
    let phases: Vec<String> = s.phases.iter().map(|(p, n)| format!("{p} {n}")).collect();
    let _ = writeln!(
        t,
        "REBUILDS  {}",
        if phases.is_empty() {
            "none".to_string()
        } else {
            phases.join(", ")
        }
    );
    for (title, lines) in [("IN FLIGHT", &s.in_flight), ("FAILURES", &s.failures)] {
        let _ = writeln!(t, "{title} ({})", lines.len());
        for l in lines {
            let _ = writeln!(
                t,
                "  {}  {}  {:?}  attempts {}{}",
                l.image,
                l.id,
                l.phase,
                l.attempts,
                l.reason
                    .as_deref()
                    .map(|r| format!("  {r}"))
                    .unwrap_or_default()
            );
        }
    }
    let _ = writeln!(t, "BLOCKED ({})", s.blocked.len());
    for b in &s.blocked {
        let _ = writeln!(t, "  {}@{}  by {}: {}", b.image, b.digest, b.by, b.reason);
    }
    let _ = writeln!(t, "UNVERIFIED ({})", s.unverified.len());
    for u in &s.unverified {
        let what = match u.mode {
            crate::runtime::VerifyMode::Enforce => "skipped",
            crate::runtime::VerifyMode::Warn => "used (warn)",
        };
        let _ = writeln!(
            t,
            "  {}@{}  {} → {what}  discovered {}  {}",
            u.image, u.digest, u.verdict, u.discovered_at, u.detail
        );
    }
    let _ = writeln!(t, "STALE ({})", s.stale.len());
    for x in &s.stale {
        let _ = writeln!(
            t,
            "  {}  built on {}@{}; current {} since {}",
            x.image, x.base, x.built_on, x.current, x.current_since
        );
    }
    for p in &s.problems {
        let _ = writeln!(t, "problem: {p}");
    }
    t
}

/// The workloads' rows as a table: one line per container and running digest.
pub fn render_workloads(rows: &[Row]) -> String {
    use std::fmt::Write as _;
    let short = |d: &Option<String>| {
        d.as_deref().map_or_else(
            || "-".to_string(),
            |d| {
                let hex = d.split_once(':').map_or(d, |(_, h)| h);
                hex.get(..12).unwrap_or(hex).to_string()
            },
        )
    };
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.namespace.clone(),
                r.workload.clone(),
                r.container.clone(),
                r.image.split('@').next().unwrap_or_default().to_string(),
                short(&r.running),
                short(&r.latest),
                format!("{:?}", r.verdict),
                r.stale_since.clone().unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    let header = [
        "NAMESPACE",
        "WORKLOAD",
        "CONTAINER",
        "IMAGE",
        "RUNNING",
        "LATEST",
        "STATUS",
        "STALE SINCE",
    ];
    let mut t = String::new();
    super::push_aligned(&mut t, header, &table);
    let stale = rows.iter().filter(|r| r.verdict == Verdict::Stale).count();
    let _ = writeln!(t, "{stale} of {} container(s) stale", rows.len());
    t
}

/// Reads the workloads of `args`' source and maps them onto the state at `now`.
///
/// # Errors
///
/// A message naming what could not be read (state, manifests, cluster).
pub fn workload_rows(args: &StatusArgs, now: Timestamp) -> Result<(Vec<Row>, Vec<String>), String> {
    let loaded = crate::state::load_images(&args.state_dir).map_err(|e| e.to_string())?;
    let (records, problems) = read_records(&args.state_dir);
    let workloads = args.source.workloads()?;
    let catalog = Catalog::new(&loaded.images, &records);
    Ok((crate::workload::rows(&workloads, &catalog, now), problems))
}

fn run_workloads(args: &StatusArgs) -> ExitCode {
    let (rows, problems) = match workload_rows(args, args.now.unwrap_or_else(Timestamp::now)) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(super::EXIT_ERROR);
        }
    };
    match args.output {
        Output::Text => print!("{}", render_workloads(&rows)),
        Output::Json => match serde_json::to_string_pretty(&rows) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(super::EXIT_ERROR);
            }
        },
    }
    for p in &problems {
        eprintln!("problem: {p}");
    }
    if !problems.is_empty() {
        ExitCode::from(super::EXIT_ERROR)
    } else if args.fail_on_stale && rows.iter().any(|r| r.verdict == Verdict::Stale) {
        ExitCode::from(super::EXIT_FINDINGS)
    } else {
        ExitCode::from(super::EXIT_OK)
    }
}

/// Runs `status`: 0, or 2 when a runtime file could not be read (still printed) or the
/// JSON could not be written. With `--workloads`, the workload table
/// ([`render_workloads`]); 1 with `--fail-on-stale` when a container is stale.
pub fn run(args: &StatusArgs) -> ExitCode {
    if args.workloads {
        return run_workloads(args);
    }
    loop {
        let (records, problems) = read_records(&args.state_dir);
        let mut s = status(&records, args.now.unwrap_or_else(Timestamp::now));
        s.problems = problems;
        let text = match args.output {
            Output::Text => render_text(&s),
            Output::Json => match serde_json::to_string_pretty(&s) {
                Ok(j) => j + "\n",
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(super::EXIT_ERROR);
                }
            },
        };
        if args.watch {
            // Clear the screen and home the cursor (ANSI), then the fresh report.
            print!("\x1b[2J\x1b[H{text}");
            std::thread::sleep(args.interval);
            continue;
        }
        print!("{text}");
        return if s.problems.is_empty() {
            ExitCode::from(super::EXIT_OK)
        } else {
            ExitCode::from(super::EXIT_ERROR)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Attempt, Block, Cause, Observed, PinnedBase, Rebuild, RebuildId};

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn records() -> BTreeMap<String, ImageRuntime> {
        let base_ref = "docker.io/library/python:3.12".to_string();
        let mut base = ImageRuntime::new(base_ref.clone());
        base.current = Some(Observed {
            tag: "3.12".into(),
            digest: crate::runtime::Digest::parse(D2).unwrap(),
            platforms: BTreeMap::new(),
            first_seen: t("2026-12-01T00:00:00Z"),
        });
        base.blocks.push(Block {
            digest: crate::runtime::Digest::parse(D1).unwrap(),
            by: "bob".into(),
            reason: "breaks TLS".into(),
            at: t("2026-12-01T01:00:00Z"),
        });
        let app_ref = "ghcr.io/acme/app:1".to_string();
        let mut app = ImageRuntime::new(app_ref.clone());
        let mut done = Rebuild {
            id: RebuildId::derive("app", &app_ref, &[format!("{base_ref}@{D1}")]),
            cause: Cause::default(),
            bases: vec![PinnedBase {
                image: "python".into(),
                pinned: format!("{base_ref}@{D1}"),
            }],
            phase: Phase::Waiting,
            reason: None,
            created_at: t("2026-11-01T00:00:00Z"),
            due_at: t("2026-11-08T00:00:00Z"),
            needs_approval: false,
            approved: None,
            retried: Vec::new(),
            attempts: Vec::new(),
            trigger: None,
            digest: None,
        };
        done.phase = Phase::Succeeded;
        done.digest = Some(crate::runtime::Digest::parse(D1).unwrap());
        let mut held = done.clone();
        held.id = RebuildId::derive("app", &app_ref, &[format!("{base_ref}@{D2}")]);
        held.phase = Phase::Waiting;
        held.digest = None;
        held.due_at = t("2026-12-08T00:00:00Z");
        let mut failed = held.clone();
        failed.id = RebuildId::derive("app", &app_ref, &["x".to_string()]);
        failed.phase = Phase::Failed;
        failed.attempts.push(Attempt {
            number: 1,
            triggered_at: t("2026-12-01T00:00:00Z"),
            finished_at: Some(t("2026-12-01T00:01:00Z")),
            outcome: None,
            reason: Some("exit status 1".into()),
            log: None,
        });
        app.rebuilds = vec![done, failed, held];
        BTreeMap::from([(base_ref, base), (app_ref, app)])
    }

    #[test]
    fn holds_failures_blocks_and_stale_images() {
        let s = status(&records(), t("2026-12-07T00:00:00Z"));
        assert_eq!(s.holds.len(), 1);
        assert_eq!(s.holds[0].due_in_secs, 86_400);
        assert_eq!(s.failures.len(), 1);
        assert_eq!(s.failures[0].reason.as_deref(), Some("exit status 1"));
        assert_eq!(s.blocked.len(), 1);
        assert_eq!(s.stale.len(), 1);
        assert_eq!(s.stale[0].built_on, D1);
        assert_eq!(s.stale[0].current, D2);
        assert_eq!(s.phases.get("Succeeded"), Some(&1));
        let text = render_text(&s);
        assert!(text.contains("HOLDS (1)"), "{text}");
        assert!(text.contains("in 1day"), "{text}");
        assert!(text.contains("STALE (1)"), "{text}");
    }

    #[test]
    fn the_workload_table_aligns_columns_and_counts_stale_containers() {
        let row = |workload: &str, verdict, since: Option<&str>| Row {
            workload: workload.into(),
            namespace: "shop".into(),
            container: "web".into(),
            image: format!("ghcr.io/acme/web:1@{D1}"),
            enrolled: Some("web".into()),
            running: Some(D1.into()),
            latest: Some(D2.into()),
            stale_since: since.map(str::to_string),
            verdict,
            pods: 2,
        };
        let text = render_workloads(&[
            row(
                "Deployment/frontend",
                Verdict::Stale,
                Some("2026-12-02T10:00:00Z"),
            ),
            row("CronJob/x", Verdict::Current, None),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("NAMESPACE  WORKLOAD             CONTAINER"),
            "{text}"
        );
        assert_eq!(
            lines[1],
            "shop       Deployment/frontend  web        ghcr.io/acme/web:1  111111111111  222222222222  Stale    2026-12-02T10:00:00Z"
        );
        assert_eq!(lines[3], "1 of 2 container(s) stale");
    }

    #[test]
    fn reads_records_and_reports_unreadable_files() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("runtime/docker.io/library/python");
        std::fs::create_dir_all(&runtime).unwrap();
        for (reference, rt) in records() {
            let name = reference.rsplit('/').next().unwrap().replace(':', "-");
            std::fs::write(runtime.join(format!("{name}.yaml")), rt.render().unwrap()).unwrap();
        }
        std::fs::write(runtime.join("broken.yaml"), "version: 1\nrebuilds: [\n").unwrap();
        let (read, problems) = read_records(dir.path());
        assert_eq!(read.len(), 2);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("broken.yaml"));
    }
}

#[cfg(test)]
mod unverified_tests {
    use super::*;
    use crate::runtime::{
        Digest, SignatureCheck, SignatureVerdict, Update, UpdateSource, VerifyMode,
    };

    #[test]
    fn updates_not_verified_are_listed_with_what_became_of_them() {
        let at: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let update = |c: char, check: Option<SignatureCheck>| Update {
            digest: Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap(),
            tag: "1".into(),
            platforms: BTreeMap::new(),
            discovered_at: at,
            source: UpdateSource::Watcher,
            superseded_by: None,
            expedited: None,
            signature: check,
        };
        let check = |verdict, mode| {
            Some(SignatureCheck {
                verdict,
                mode,
                detail: "no sha256-….sig tag".into(),
            })
        };
        let mut rt = ImageRuntime::new("registry.example/base:1");
        rt.updates = vec![
            update('a', check(SignatureVerdict::Verified, VerifyMode::Enforce)),
            update('b', check(SignatureVerdict::Unsigned, VerifyMode::Enforce)),
            update('c', check(SignatureVerdict::Invalid, VerifyMode::Warn)),
            update('d', None),
        ];
        let records = BTreeMap::from([("registry.example/base:1".to_string(), rt)]);
        let s = status(&records, at);
        let listed: Vec<(char, SignatureVerdict, VerifyMode)> = s
            .unverified
            .iter()
            .map(|u| (u.digest.chars().last().unwrap(), u.verdict, u.mode))
            .collect();
        assert_eq!(
            listed,
            [
                ('b', SignatureVerdict::Unsigned, VerifyMode::Enforce),
                ('c', SignatureVerdict::Invalid, VerifyMode::Warn)
            ]
        );
        let text = render_text(&s);
        assert!(text.contains("UNVERIFIED (2)"), "{text}");
        assert!(text.contains("unsigned → skipped"), "{text}");
        assert!(text.contains("invalid → used (warn)"), "{text}");
    }
}
