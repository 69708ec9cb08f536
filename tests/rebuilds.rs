//! Rebuilds end to end with real parts: a real registry, real `buildah` builds started
//! by the `command` trigger, the engine deciding, and completion verified in the
//! registry (base annotation, else layer ancestry). A 3-level chain `base → app → tool`
//! built from Dockerfiles that take their base from an `ARG` (the pins arrive as
//! `IMAGE_FACTORY_BASE_<NAME>`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use image_factory::analyze::{self, NoProgress};
use image_factory::completion::{self, Completed, Wait};
use image_factory::engine::{Decision, Engine, Event, Outcome, Trigger};
use image_factory::enrollment::Image;
use image_factory::reference::Reference;
use image_factory::registry::{ClientSettings, CredentialStore, RegistryClient};
use image_factory::runtime::{Digest, UpdateSource};
use image_factory::trigger::{self, Context, LocalSource, Request, SourceInfo};
use jiff::{SignedDuration, Timestamp};

use crate::support::registry::{Layout, Mode, TestRegistry};

pub(crate) fn registry() -> &'static TestRegistry {
    static REGISTRY: OnceLock<TestRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| TestRegistry::start(Mode::Open))
}

pub(crate) fn client() -> RegistryClient {
    RegistryClient::new(ClientSettings::default(), CredentialStore::new())
}

pub(crate) fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pushes a one-layer umoci image with `content` to `repo:1`; returns its digest.
pub(crate) fn push_base(r: &TestRegistry, scratch: &Path, repo: &str, content: &str) -> Digest {
    let tag = format!(
        "t{}",
        content.len() + content.bytes().map(u32::from).sum::<u32>() as usize
    );
    let layout = Layout::build(
        scratch,
        &tag,
        &[("release.txt", content)],
        "amd64",
        "2026-01-01T00:00:00Z",
        &[],
    );
    r.push_layout(&layout.path, &tag, &format!("{repo}:1"));
    digest_of(r, repo)
}

pub(crate) fn digest_of(r: &TestRegistry, repo: &str) -> Digest {
    let (body, _) = r.manifest(repo, "1");
    Digest::parse(&image_factory::registry::digest::sha256_digest(&body)).unwrap()
}

/// The buildah invocation shared by every build: vfs storage under the registry's
/// scratch dir, chroot isolation, plain HTTP to the registry.
fn buildah(r: &TestRegistry) -> String {
    format!(
        "buildah --root {} --runroot {} --storage-driver vfs",
        r.scratch("buildah-root").display(),
        r.scratch("buildah-runroot").display()
    )
}

/// A `command` trigger that builds the pinned Dockerfile (`$IMAGE_FACTORY_DOCKERFILE`)
/// in `$IMAGE_FACTORY_CONTEXT`, with `BASE` set from `base_var` when given (the `ARG`
/// route), and pushes `$IMAGE_FACTORY_REFERENCE`.
fn build_shell(r: &TestRegistry, base_var: Option<&str>) -> String {
    let b = buildah(r);
    let arg = base_var.map_or_else(String::new, |v| format!("--build-arg BASE=\"${v}\""));
    format!(
        "set -e; {b} bud -q --isolation chroot --tls-verify=false --pull-always {arg} -f \"$IMAGE_FACTORY_DOCKERFILE\" -t \"$IMAGE_FACTORY_REFERENCE\" \"$IMAGE_FACTORY_CONTEXT\"; {b} push -q --tls-verify=false \"$IMAGE_FACTORY_REFERENCE\""
    )
}

/// One fleet on the shared registry under its own namespace.
struct Fleet {
    dir: tempfile::TempDir,
    ns: String,
}

impl Fleet {
    /// `base` (external) → `app` → `tool`, each managed image with a `command` trigger
    /// (`app_trigger`, `tool_trigger`: YAML flow mappings) and optional extra YAML.
    fn new(ns: &str, app_trigger: &str, app_extra: &str) -> Self {
        let r = registry();
        let dir = tempfile::tempdir().unwrap();
        let host = &r.host;
        // app takes its base from an ARG (pins as IMAGE_FACTORY_BASE_BASE); tool names
        // its base literally (the pinned Dockerfile carries the pin).
        let app_dir = dir.path().join("app");
        std::fs::create_dir_all(&app_dir).unwrap();
        std::fs::write(app_dir.join("app.txt"), "app\n").unwrap();
        std::fs::write(
            app_dir.join("Dockerfile"),
            format!("ARG BASE={host}/{ns}/base:1\nFROM ${{BASE}}\nCOPY app.txt /app.txt\n"),
        )
        .unwrap();
        let tool_dir = dir.path().join("tool");
        std::fs::create_dir_all(&tool_dir).unwrap();
        std::fs::write(tool_dir.join("tool.txt"), "tool\n").unwrap();
        std::fs::write(
            tool_dir.join("Dockerfile"),
            format!("# the tool\nFROM  {host}/{ns}/app:1   AS tool\nCOPY tool.txt /tool.txt\n"),
        )
        .unwrap();
        let tool_trigger = format!(
            "{{command: {{shell: '{}', timeout: 5m}}}}",
            build_shell(r, None)
        );
        let yaml = format!(
            "version: 1\nimages:\n  - name: base\n    image: {host}/{ns}/base:1\n    rebuild: {{delay: 7d}}\n  - name: app\n    image: {host}/{ns}/app:1\n    source: {{path: app}}\n    trigger: {app_trigger}\n{app_extra}  - name: tool\n    image: {host}/{ns}/tool:1\n    source: {{path: tool}}\n    trigger: {tool_trigger}\n"
        );
        std::fs::write(dir.path().join("images.yaml"), yaml).unwrap();
        Self {
            dir,
            ns: ns.to_string(),
        }
    }

    fn model(&self) -> analyze::Model {
        analyze::model(
            &self.dir.path().join("images.yaml"),
            &self.dir.path().join("cache"),
            false,
            &NoProgress,
        )
        .unwrap()
    }

    fn repo(&self, name: &str) -> String {
        format!("{}/{name}", self.ns)
    }
}

fn default_app_trigger() -> String {
    format!(
        "{{command: {{shell: '{}', timeout: 5m}}}}",
        build_shell(registry(), Some("IMAGE_FACTORY_BASE_BASE"))
    )
}

/// Builds `repo:1` from `base_repo:1` once, outside the factory (the state before it).
fn initial_build(r: &TestRegistry, fleet: &Fleet, name: &str, base: &str) -> Digest {
    let d = fleet.dir.path().join(name);
    let b = buildah(r);
    let image = format!("{}/{}:1", r.host, fleet.repo(name));
    run(Command::new("sh").arg("-c").arg(format!(
        "set -e; {b} bud -q --isolation chroot --tls-verify=false --pull-always --build-arg BASE={}/{}:1 -t {image} {}; {b} push -q --tls-verify=false {image}",
        r.host,
        fleet.repo(base),
        d.display()
    )));
    digest_of(r, &fleet.repo(name))
}

fn enrolled<'a>(model: &'a analyze::Model, name: &str) -> &'a Image {
    model
        .enrollment
        .images
        .iter()
        .find(|i| i.name == name)
        .unwrap()
}

fn request_for(fleet: &Fleet, model: &analyze::Model, t: &Trigger) -> Request {
    let image = enrolled(model, &t.image);
    let build = image.build.as_ref().unwrap();
    let root = fleet.dir.path().join(&t.image);
    let work = fleet.dir.path().join("work").join(t.id.as_str());
    let local = LocalSource::prepare(&root, build, &t.bases, &work).unwrap();
    Request::new(
        t,
        image,
        SourceInfo {
            git: None,
            reference: None,
            commit: None,
            dockerfile: build.dockerfile.clone(),
            context: build.context.clone(),
        },
        Some(local),
    )
}

async fn attempt(
    fleet: &Fleet,
    model: &analyze::Model,
    t: &Trigger,
    previous: &Digest,
) -> Completed {
    let image = enrolled(model, &t.image);
    let build = image.build.as_ref().unwrap();
    let backend = trigger::backend(build.trigger.as_ref().unwrap(), None)
        .unwrap()
        .unwrap();
    let request = request_for(fleet, model, t);
    completion::attempt(
        backend.as_ref(),
        &request,
        &client(),
        Some(previous),
        build.test.as_ref(),
        Wait::ONCE,
        &Context::detached(),
    )
    .await
}

fn triggers(decisions: &[Decision]) -> Vec<Trigger> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Trigger(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

fn update(image: &str, digest: &Digest, at: Timestamp) -> Event {
    Event::Update {
        image: image.into(),
        tag: "1".into(),
        digest: digest.clone(),
        platforms: BTreeMap::new(),
        discovered_at: at,
        source: UpdateSource::Watcher,
        signature: None,
    }
}

fn observe(image: &str, digest: &Digest) -> Event {
    Event::Observe {
        image: image.into(),
        tag: "1".into(),
        digest: digest.clone(),
        platforms: BTreeMap::new(),
    }
}

struct Scenario {
    fleet: Fleet,
    model: analyze::Model,
    digests: BTreeMap<&'static str, Digest>,
    t0: Timestamp,
}

/// base A → app v0 → tool v0 are in the registry; base B is discovered at `t0`, base C
/// (newer, not matured) at `t0 + 6d`; returns the engine's first trigger after the
/// hold of B ended (at `t0 + 7d + 1m`).
fn scenario(ns: &str, app_trigger: &str, app_extra: &str) -> (Scenario, Engine, Vec<Trigger>) {
    let r = registry();
    let fleet = Fleet::new(ns, app_trigger, app_extra);
    let scratch = r.scratch(&format!("{ns}-layouts"));
    let a = push_base(r, &scratch, &fleet.repo("base"), &format!("{ns} release A"));
    let app0 = initial_build(r, &fleet, "app", "base");
    let tool0 = initial_build(r, &fleet, "tool", "app");
    let model = fleet.model();
    let config = image_factory::cli::decide::engine_config(&model.enrollment);
    let mut engine = Engine::new(&model.graph, BTreeMap::new(), config).unwrap();
    let t0: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
    let seen = t0 - SignedDuration::from_hours(24);
    for (name, d) in [("base", &a), ("app", &app0), ("tool", &tool0)] {
        engine.apply(observe(name, d), seen);
    }
    let b = push_base(r, &scratch, &fleet.repo("base"), &format!("{ns} release B"));
    engine.apply(update("base", &b, t0), t0);
    let t6 = t0 + SignedDuration::from_hours(24 * 6);
    // A newer base is pushed during the hold: the tag now points at C.
    let c = push_base(r, &scratch, &fleet.repo("base"), &format!("{ns} release C"));
    engine.apply(update("base", &c, t6), t6);
    let due = t0 + SignedDuration::from_hours(24 * 7) + SignedDuration::from_mins(1);
    let fired = triggers(&engine.tick(due));
    let digests = [
        ("a", a),
        ("b", b),
        ("c", c),
        ("app0", app0),
        ("tool0", tool0),
    ]
    .into();
    (
        Scenario {
            fleet,
            model,
            digests,
            t0,
        },
        engine,
        fired,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_level_chain_is_rebuilt_on_the_matured_base_and_verified_by_annotation() {
    let (s, mut engine, fired) =
        tokio::task::block_in_place(|| scenario("chain", &default_app_trigger(), ""));
    let d = &s.digests;
    assert_eq!(fired.len(), 1, "{fired:?}");
    let t = &fired[0];
    assert_eq!(t.image, "app");
    assert_eq!(t.bases.len(), 1);
    assert_eq!(
        t.bases[0].digest(),
        Some(d["b"].as_str()),
        "pinned to the matured B, not C"
    );

    let done = attempt(&s.fleet, &s.model, t, &d["app0"]).await;
    let Outcome::Success {
        digest: app1,
        base_digests,
    } = &done.outcome
    else {
        panic!("{:?}\n{:?}", done.outcome, done.log_tail)
    };
    assert_eq!(
        base_digests,
        &vec![d["b"].clone()],
        "built on B although the tag points at C"
    );
    let verified = done.verified.unwrap();
    assert_eq!(
        verified.evidence.values().collect::<Vec<_>>(),
        [&completion::Evidence::BaseDigestAnnotation]
    );
    // The registry agrees: app:1 is the new digest, annotated with B.
    let app_ref =
        Reference::parse(&format!("{}/{}:1", registry().host, s.fleet.repo("app"))).unwrap();
    let inspected = client().inspect(&app_ref, None).await.unwrap();
    assert_eq!(inspected.digest, app1.as_str());
    assert_eq!(inspected.base.digest.as_deref(), Some(d["b"].as_str()));

    let now = s.t0 + SignedDuration::from_hours(24 * 7 + 1);
    engine.apply(
        Event::Running {
            id: t.id.clone(),
            trigger: "test".into(),
        },
        now,
    );
    let decisions = engine.apply(
        Event::Outcome {
            id: t.id.clone(),
            outcome: done.outcome.clone(),
        },
        now,
    );
    let next = triggers(&decisions);
    assert_eq!(next.len(), 1, "cascade to tool: {decisions:?}");
    assert_eq!(next[0].image, "tool");
    assert_eq!(next[0].bases[0].digest(), Some(app1.as_str()));

    // The pinned copy names app@app1, everything else as written.
    let work = s.fleet.dir.path().join("work").join(next[0].id.as_str());
    let request = request_for(&s.fleet, &s.model, &next[0]);
    let pinned =
        std::fs::read_to_string(&request.local.as_ref().unwrap().pinned_dockerfile).unwrap();
    assert_eq!(
        pinned,
        format!(
            "# the tool\nFROM  {}/{}:1@{app1}   AS tool\nCOPY tool.txt /tool.txt\n",
            registry().host,
            s.fleet.repo("app")
        )
    );
    assert!(work.join("Dockerfile").exists());
    // Someone points app:1 elsewhere before tool builds: the pin still holds.
    client()
        .tag_manifest(&app_ref, d["app0"].as_str())
        .await
        .unwrap();
    let done = attempt(&s.fleet, &s.model, &next[0], &d["tool0"]).await;
    let Outcome::Success { base_digests, .. } = &done.outcome else {
        panic!("{:?}\n{:?}", done.outcome, done.log_tail)
    };
    assert_eq!(base_digests, &vec![app1.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_that_ignores_the_pins_is_caught_as_built_on_the_wrong_base() {
    let r = registry();
    // Builds FROM the tag (now release C), not the pinned B.
    let b = buildah(r);
    let wrong = format!(
        "{{command: {{shell: 'set -e; {b} bud -q --isolation chroot --tls-verify=false --pull-always -t \"$IMAGE_FACTORY_REFERENCE\" \"$IMAGE_FACTORY_CONTEXT\"; {b} push -q --tls-verify=false \"$IMAGE_FACTORY_REFERENCE\"'}}}}"
    );
    let (s, _engine, fired) = tokio::task::block_in_place(|| scenario("wrongbase", &wrong, ""));
    let done = attempt(&s.fleet, &s.model, &fired[0], &s.digests["app0"]).await;
    let Outcome::Failure { reason, .. } = &done.outcome else {
        panic!("{:?}", done.outcome)
    };
    assert!(
        reason.contains(&format!("@{}", s.digests["c"])) && reason.contains("not on the pinned"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_assembled_without_annotation_is_verified_by_its_layers() {
    let r = registry();
    // umoci: unpack the pinned base, add a file, repack, push — no base annotation.
    let work = r.scratch("umoci-assembly");
    let script = format!(
        "set -e; W={w}/$IMAGE_FACTORY_ATTEMPT-$$; rm -rf $W; mkdir -p $W; P=$IMAGE_FACTORY_BASE_BASE; RT=${{P%@*}}; D=${{P#*@}}; R=${{RT%:*}}; skopeo copy -q --src-tls-verify=false docker://$R@$D oci:$W/l:b; umoci unpack --rootless --image $W/l:b $W/b; echo app > $W/b/rootfs/app.txt; umoci repack --image $W/l:b $W/b; skopeo copy -q --dest-tls-verify=false oci:$W/l:b docker://$IMAGE_FACTORY_REFERENCE",
        w = work.display()
    );
    let trigger = format!("{{command: {{shell: '{script}'}}}}");
    let (s, _engine, fired) = tokio::task::block_in_place(|| scenario("layers", &trigger, ""));
    let done = attempt(&s.fleet, &s.model, &fired[0], &s.digests["app0"]).await;
    let Outcome::Success { base_digests, .. } = &done.outcome else {
        panic!("{:?}\n{:?}", done.outcome, done.log_tail)
    };
    assert_eq!(base_digests, &vec![s.digests["b"].clone()]);
    assert_eq!(
        done.verified.unwrap().evidence.values().collect::<Vec<_>>(),
        [&completion::Evidence::LayerPrefix]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_fails_the_rebuild_and_stops_the_cascade() {
    let extra = "    test: {shell: 'echo smoke test of $IMAGE_FACTORY_IMAGE_PINNED; exit 4'}\n";
    let (s, mut engine, fired) =
        tokio::task::block_in_place(|| scenario("tested", &default_app_trigger(), extra));
    let t = &fired[0];
    let done = attempt(&s.fleet, &s.model, t, &s.digests["app0"]).await;
    let Outcome::Failure { reason, .. } = &done.outcome else {
        panic!("{:?}", done.outcome)
    };
    assert!(
        reason.starts_with("test command") && reason.contains("status 4"),
        "{reason}"
    );
    let tail = done.log_tail.unwrap();
    let pinned = format!("{}/{}:1@sha256:", registry().host, s.fleet.repo("app"));
    assert!(tail.contains(&format!("smoke test of {pinned}")), "{tail}");
    let now = s.t0 + SignedDuration::from_hours(24 * 8);
    engine.apply(
        Event::Running {
            id: t.id.clone(),
            trigger: "test".into(),
        },
        now,
    );
    let decisions = engine.apply(
        Event::Outcome {
            id: t.id.clone(),
            outcome: done.outcome,
        },
        now,
    );
    assert!(
        triggers(&decisions).iter().all(|t| t.image != "tool"),
        "tool must not be rebuilt on an app that failed its test: {decisions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_without_a_push_is_a_failure() {
    let (s, _engine, fired) =
        tokio::task::block_in_place(|| scenario("nopush", "{command: {args: ['true']}}", ""));
    let done = attempt(&s.fleet, &s.model, &fired[0], &s.digests["app0"]).await;
    let Outcome::Failure { reason, .. } = &done.outcome else {
        panic!("{:?}", done.outcome)
    };
    assert!(
        reason.contains("still points at") && reason.contains(s.digests["app0"].as_str()),
        "{reason}"
    );
}

fn state_dir(fleet: &Fleet) -> PathBuf {
    fleet.dir.path().join("state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_points_the_tag_back_at_the_previous_good_digest_and_records_it() {
    let (s, mut engine, fired) =
        tokio::task::block_in_place(|| scenario("rollback", &default_app_trigger(), ""));
    let t = &fired[0];
    let done = attempt(&s.fleet, &s.model, t, &s.digests["app0"]).await;
    let Outcome::Success { digest: app1, .. } = done.outcome.clone() else {
        panic!("{:?}", done.outcome)
    };
    let now = s.t0 + SignedDuration::from_hours(24 * 7 + 1);
    engine.apply(
        Event::Running {
            id: t.id.clone(),
            trigger: "test".into(),
        },
        now,
    );
    engine.apply(
        Event::Outcome {
            id: t.id.clone(),
            outcome: done.outcome,
        },
        now,
    );
    // Record the runtime as `run` would, with an earlier succeeded rebuild (app0).
    let mut record = engine.runtime("app").unwrap().clone();
    let mut earlier = record.rebuilds[0].clone();
    earlier.digest = Some(s.digests["app0"].clone());
    earlier.id = image_factory::runtime::RebuildId::parse("app-0000000000").unwrap();
    record.rebuilds.insert(0, earlier);
    record.current.as_mut().unwrap().digest = app1.clone();
    let mut changes = image_factory::state::Changes::default();
    image_factory::state::stage_runtime(&mut changes, &record).unwrap();
    std::fs::create_dir_all(state_dir(&s.fleet)).unwrap();
    image_factory::state::journal::commit(&state_dir(&s.fleet), &changes).unwrap();

    let place = image_factory::cli::decide::Place {
        file: s.fleet.dir.path().join("images.yaml"),
        cache_dir: s.fleet.dir.path().join("cache"),
        state_dir: state_dir(&s.fleet),
    };
    let request = image_factory::cli::rollback::Request {
        image: "app".into(),
        to: None,
        by: "alice".into(),
        reason: "500s after the rebuild".into(),
    };
    let line = image_factory::cli::rollback::rollback(&place, &request, &client(), now)
        .await
        .unwrap();
    assert!(
        line.contains(app1.as_str()) && line.contains(s.digests["app0"].as_str()),
        "{line}"
    );
    assert_eq!(
        digest_of(registry(), &s.fleet.repo("app")),
        s.digests["app0"]
    );
    let store = image_factory::state::FileStore::open(state_dir(&s.fleet)).unwrap();
    let records = image_factory::state::load_runtime(&store, &s.model.graph).unwrap();
    let app = &records["app"];
    assert_eq!(app.rollbacks.len(), 1);
    assert_eq!(app.rollbacks[0].from, app1);
    assert_eq!(app.rollbacks[0].to, s.digests["app0"]);
    assert_eq!(app.rollbacks[0].mark.by, "alice");
    assert_eq!(app.current.as_ref().unwrap().digest, s.digests["app0"]);
    // Rolling back to where it already is is refused, and the registry is untouched.
    let again = image_factory::cli::rollback::Request {
        to: Some(s.digests["app0"].to_string()),
        ..request
    };
    let err = image_factory::cli::rollback::rollback(&place, &again, &client(), now)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already points at"), "{err}");
}

/// `umoci unpack` `from` of `layout`, add a file, `umoci repack` as `to`.
fn umoci_on_top(layout: &Path, from: &str, to: &str, file: &str) {
    let bundle = layout.with_file_name(format!("bundle-{to}"));
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{from}", layout.display()))
        .arg(&bundle));
    std::fs::write(bundle.join("rootfs").join(file), to).unwrap();
    run(Command::new("umoci")
        .args(["repack", "--image"])
        .arg(format!("{}:{to}", layout.display()))
        .arg(&bundle));
    std::fs::remove_dir_all(&bundle).unwrap();
}

/// PUTs an OCI index of `repo:<platform tag>` manifests as `repo:1`; returns its digest.
fn push_index(r: &TestRegistry, repo: &str, entries: &[(&str, &str)]) -> Digest {
    let sha = image_factory::registry::digest::sha256_digest;
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(tag, arch)| {
            let (body, media_type) = r.manifest(repo, tag);
            serde_json::json!({"mediaType": media_type, "digest": sha(&body), "size": body.len(),
                "platform": {"os": "linux", "architecture": arch}})
        })
        .collect();
    let index = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    let bytes = serde_json::to_vec(&index).unwrap();
    r.put_manifest(repo, "1", &bytes, "application/vnd.oci.image.index.v1+json");
    Digest::parse(&sha(&bytes)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_platform_image_is_verified_platform_by_platform() {
    let r = registry();
    let (base_index, good, bad) = tokio::task::block_in_place(|| {
        let work = r.scratch("multi-arch");
        for arch in ["amd64", "arm64"] {
            Layout::build(
                &work,
                &format!("base-{arch}"),
                &[("arch", arch)],
                arch,
                "2026-01-01T00:00:00Z",
                &[],
            );
        }
        let layout = work.join("layout");
        for arch in ["amd64", "arm64"] {
            r.push_layout(&layout, &format!("base-{arch}"), &format!("ma/base:{arch}"));
            umoci_on_top(
                &layout,
                &format!("base-{arch}"),
                &format!("app-{arch}"),
                "app.txt",
            );
            r.push_layout(&layout, &format!("app-{arch}"), &format!("ma/app:{arch}"));
        }
        // The arm64 entry of `bad` is built on the amd64 base.
        umoci_on_top(&layout, "base-amd64", "bad-arm64", "app.txt");
        r.push_layout(&layout, "app-amd64", "ma/bad:amd64");
        r.push_layout(&layout, "bad-arm64", "ma/bad:arm64");
        let base = push_index(r, "ma/base", &[("amd64", "amd64"), ("arm64", "arm64")]);
        let good = push_index(r, "ma/app", &[("amd64", "amd64"), ("arm64", "arm64")]);
        let bad = push_index(r, "ma/bad", &[("amd64", "amd64"), ("arm64", "arm64")]);
        (base, good, bad)
    });
    let pins = [image_factory::runtime::PinnedBase::new(
        "base",
        &format!("{}/ma/base:1", r.host),
        Some(&base_index),
    )];
    let app = Reference::parse(&format!("{}/ma/app:1", r.host)).unwrap();
    let expected = completion::Expected {
        reference: &app,
        previous: None,
        bases: &pins,
    };
    let v = completion::verify(&client(), &expected, Wait::ONCE)
        .await
        .unwrap();
    assert_eq!(v.digest, good);
    assert_eq!(v.platforms.len(), 2);
    assert_eq!(v.base_digests, vec![base_index.clone()]);
    assert!(
        v.evidence
            .values()
            .all(|e| *e == completion::Evidence::LayerPrefix),
        "{v:?}"
    );

    let bad_ref = Reference::parse(&format!("{}/ma/bad:1", r.host)).unwrap();
    let expected = completion::Expected {
        reference: &bad_ref,
        previous: None,
        bases: &pins,
    };
    let f = completion::verify(&client(), &expected, Wait::ONCE)
        .await
        .unwrap_err();
    assert!(
        f.reason.contains(&format!("{bad}")) && f.reason.contains("(linux/arm64)"),
        "{f}"
    );
    assert!(f.reason.contains("built on another base"), "{f}");
}
